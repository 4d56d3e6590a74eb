"""Frame counters across kill -9 of a meter process (companion standard §3.5.4): the meter never
sends an invocation counter twice and never accepts a request it accepted before, whatever it
was doing when the power went; a clean stop and start skips nothing.

The client is our head-end (HLS 7, suite 1, management client) with its counters taken from a
sequence the test controls, over a link that records every APDU both ways; the meter's counters
are read off the wire.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools

import pytest

from meterproc import start_meter
from smartmeter.dlms.apdu import acse
from smartmeter.dlms.apdu.ciphered import CIPHERED_TAGS, decode_ciphered
from smartmeter.dlms.apdu.errors import ExceptionResponse, ServiceError
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.hes.client import MeterClient
from smartmeter.hes.connection import WrapperLink
from smartmeter.hes.credentials import load_credentials

SESSIONS = 4  # associations before the failure; each takes several counters both ways


class RecordingLink(WrapperLink):
    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.requests: list[bytes] = []
        self.answers: list[bytes] = []

    async def exchange(self, apdu: bytes) -> bytes:
        self.requests.append(apdu)
        answer = await super().exchange(apdu)
        self.answers.append(answer)
        return answer


def counter_of(apdu: bytes) -> int | None:
    """The invocation counter of a protected APDU, or of the ciphered initiate inside an AARE/RLRE."""
    if apdu[:1] in (b"\x61", b"\x63"):
        info = acse.decode_acse(apdu).user_information
        return None if not info else decode_ciphered(info).invocation_counter
    if apdu[:1] and apdu[0] in CIPHERED_TAGS:
        return decode_ciphered(apdu).invocation_counter
    return None


class Client:
    def __init__(self, meter, first_counter: int) -> None:
        self.meter = meter
        self.credentials = load_credentials(meter.data_dir / "credentials" / "management.json")
        self.counters = itertools.count(first_counter)
        self.used: list[int] = []
        self.links: list[RecordingLink] = []

    def _next(self) -> int:
        self.used.append(next(self.counters))
        return self.used[-1]

    def link(self) -> RecordingLink:
        c = self.credentials
        self.links.append(RecordingLink("127.0.0.1", self.meter.wrapper_port, c.client_sap, c.server_sap, 10))
        return self.links[-1]

    def session(self) -> int:
        """Associate, read +A, release; the value read."""
        security = dataclasses.replace(self.credentials.security, invocation_counter=self._next)

        async def go():
            async with MeterClient(self.link(), security=security) as client:
                return (await client.get("1-0:1.8.0.255")).value

        return asyncio.run(go())

    def send_in_a_new_association(self, apdu: bytes) -> bytes:
        """A genuine association, then `apdu` exactly as captured earlier; the meter's answer."""
        security = dataclasses.replace(self.credentials.security, invocation_counter=self._next)

        async def go():
            async with MeterClient(self.link(), security=security) as client:
                return await client.link.exchange(apdu)

        return asyncio.run(go())

    def send_alone(self, apdu: bytes) -> bytes:
        async def go():
            link = self.link()
            await link.open()
            try:
                return await link.exchange(apdu)
            finally:
                await link.close()

        return asyncio.run(go())

    def meter_counters(self, links=None) -> list[int]:
        return [c for link in (links or self.links) for a in link.answers if (c := counter_of(a)) is not None]


def _restart(meter, how: str):
    if how == "power failure":
        meter.power_failure()
    else:
        meter.stop()
    return start_meter(meter.data_dir)


@pytest.mark.welmec("P4", "U4")
def test_kill_9_repeats_no_meter_counter_and_lets_no_replay_in(tmp_path):
    meter = start_meter(tmp_path / "meter")
    try:
        client = Client(meter, 1)
        for _ in range(SESSIONS):
            assert client.session() > 0
        before = client.meter_counters()
        assert before == sorted(set(before)) and before[0] >= 1
        first_aarq = client.links[0].requests[0]
        last_get = client.links[-1].requests[-2]  # the protected GET of the last session (then the RLRQ)
        assert last_get[0] == 0xC8  # glo-get-request
        meter = client.meter = _restart(meter, "power failure")

        # a client that lost track of what the meter holds goes far ahead
        client.counters = itertools.count(client.used[-1] + 1_000_000)
        refused = client.send_alone(first_aarq)  # the very first association, replayed
        assert acse.decode_acse(refused).result != acse.AssociationResult.ACCEPTED
        answer = client.send_in_a_new_association(last_get)
        response = decode_xdlms(answer)
        assert isinstance(response, ExceptionResponse)
        assert response.service_error == ServiceError.INVOCATION_COUNTER_ERROR
        assert client.session() > 0  # and the meter serves the client as before
        after = client.meter_counters(client.links[SESSIONS:])
        assert after and min(after) > max(before)  # no IV of the meter used twice
    finally:
        meter.stop()


@pytest.mark.welmec()  # reviewed: a head-end convenience, no WELMEC block
def test_a_clean_stop_skips_no_counter(tmp_path):
    """After Ctrl-C the client simply continues with its next counter (a head-end with a
    durable counter file does exactly that), and the meter's counters follow on."""
    meter = start_meter(tmp_path / "meter")
    try:
        client = Client(meter, 1)
        client.session()
        before = client.meter_counters()
        meter = client.meter = _restart(meter, "clean stop")
        assert client.session() > 0  # accepted with the next counter, no resynchronisation
        after = client.meter_counters(client.links[1:])
        assert min(after) == max(before) + 1
    finally:
        meter.stop()


@pytest.mark.welmec()
def test_after_kill_9_a_head_end_resynchronises_through_the_frame_counter_object(tmp_path):
    """A head-end with a durable counter file (the credentials' sidecar) is refused after the
    meter's power failure while its next counters lie in the block the meter reserved; the
    frame counter readout (Appendix 1, HMAC-checked) moves it above, and it associates again."""
    from smartmeter.dlms.client import AssociationRefused
    from smartmeter.hes.resync import resynchronise

    meter = start_meter(tmp_path / "meter")
    try:
        path = meter.data_dir / "credentials" / "management.json"

        def read():
            credentials = load_credentials(path)  # a fresh head-end process each time

            async def go():
                link = WrapperLink("127.0.0.1", meter.wrapper_port, credentials.client_sap, credentials.server_sap, 10)
                async with MeterClient(link, security=credentials.security) as client:
                    return (await client.get("1-0:1.8.0.255")).value

            return asyncio.run(go())

        for _ in range(3):
            assert read() > 0
        meter.power_failure()
        meter = start_meter(meter.data_dir)
        refused = 0
        try:
            read()
        except AssociationRefused:
            refused = 1
        assert refused  # its next counter is one the meter may have accepted before the failure
        credentials = load_credentials(path)
        used = credentials.security.invocation_counter.last_used
        public = WrapperLink("127.0.0.1", meter.wrapper_port, 16, 1, 10)
        meter_counter = asyncio.run(resynchronise(public, credentials))
        assert meter_counter >= used  # the meter holds at least what the head-end had sent
        assert load_credentials(path).security.invocation_counter.last_used >= meter_counter
        assert read() > 0
    finally:
        meter.stop()

"""The head-end's firmware upgrade driver (smartmeter.hes.firmware) against a stand-in meter that
follows the shared design of the IC 18 image transfer object to the letter: the action results
(type-unmatched, read-write-denied when transfers are disabled, other-reason for everything else
refused), resume of a transfer initiated again with the same identifier and size, the bit-string
of transferred blocks (bit 0 = block 0) and image_first_not_transferred_block_number, status
0..7, image_to_activate_info only after a successful verification.

Every expectation is worked out from the scenario (image size, block size, which blocks the
meter loses), not from the driver."""
from __future__ import annotations

import asyncio
import collections
import datetime as dt
import math
import os
from dataclasses import dataclass, field

import pytest

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CosemDateTime, CosemDate, CosemTime, Data, DataType
from smartmeter.cosem.obis import Obis
from smartmeter.cosem.results import DataAccessResult
from smartmeter.dlms.apdu.common import ActionResult
from smartmeter.dlms.client import AccessDenied
from smartmeter.hes import firmware
from smartmeter.hes.connection import LinkError
from smartmeter.hes.firmware import Status, UpgradeError

IT = Obis.parse("0-0:44.0.0.255")
SCHEDULER = Obis.parse("0-0:15.0.2.255")
CLOCK = Obis.parse("0-0:1.0.0.255")
MAX_IMAGE = 16 * 1024 * 1024
SIGNATURE = bytes(range(64))


@dataclass
class FakeMeter:
    """The meter's side: IC 18 v0 as the design defines it, plus faults a test switches on."""

    block_size: int = 1024
    enabled: bool = True
    status: int = 0
    identifier: bytes = b""
    size: int = 0
    blocks: dict[int, bytes] = field(default_factory=dict)
    verify_ok: bool = True
    install_refused: bool = False
    # faults: block numbers the meter acknowledges but does not keep (n -> how many times; -1 always),
    # as after a kill -9 that lost the last second's blocks
    forget: dict[int, int] = field(default_factory=dict)
    bitmap_readable: bool = True
    before_block: dict[int, object] = field(default_factory=dict)  # n -> callable(meter) run before block n
    link_lost_at_block: int | None = None
    verify_in_background: int = 0  # reads of status 2 before the outcome shows
    clock: CosemDateTime | None = None
    execution_time: Data | None = None
    firmware: dict[str, bytes] = field(default_factory=lambda: {
        "1-0:0.2.0.255": b"KSMW-LR 1.0.0", "1-0:0.2.8.255": b"\x01" * 32,
        "1-1:0.2.0.255": b"app 0.1.0", "1-1:0.2.8.255": b"\x02" * 32})
    # counts
    block_calls: collections.Counter = field(default_factory=collections.Counter)
    requests: list = field(default_factory=list)

    @property
    def block_count(self) -> int:
        return math.ceil(self.size / self.block_size) if self.size else 0

    def image(self) -> bytes:
        return b"".join(self.blocks[n] for n in range(self.block_count))

    # -- attributes
    def read(self, attribute: int) -> Data:
        if attribute == 2:
            return Data.double_long_unsigned(self.block_size)
        if attribute == 3:
            if not self.bitmap_readable:
                raise AccessDenied(DataAccessResult.READ_WRITE_DENIED, "get")
            return Data(DataType.BIT_STRING, "".join("1" if n in self.blocks else "0"
                                                     for n in range(self.block_count)))
        if attribute == 4:
            return Data.double_long_unsigned(next((n for n in range(self.block_count) if n not in self.blocks),
                                                  self.block_count))
        if attribute == 5:
            return Data.boolean(self.enabled)
        if attribute == 6:
            if self.status == Status.VERIFICATION_INITIATED and self.verify_in_background:
                self.verify_in_background -= 1
                if not self.verify_in_background:
                    self.status = Status.VERIFICATION_SUCCESSFUL if self.verify_ok else Status.VERIFICATION_FAILED
                return Data.enum(Status.VERIFICATION_INITIATED)
            return Data.enum(self.status)
        if attribute == 7:
            if self.status not in (3, 5, 6):
                return Data.array([])
            return Data.array([Data.structure([Data.double_long_unsigned(self.size),
                                               Data.octet_string(self.identifier), Data.octet_string(SIGNATURE)])])
        raise AccessDenied(DataAccessResult.OBJECT_UNDEFINED, "get")

    def write(self, attribute: int, value: Data) -> None:
        if attribute == 2:
            if value.type != DataType.DOUBLE_LONG_UNSIGNED:
                raise AccessDenied(DataAccessResult.TYPE_UNMATCHED, "set")
            if 1 <= self.status <= 5 or not 64 <= value.value <= 1024:
                raise AccessDenied(DataAccessResult.OTHER_REASON, "set")
            self.block_size = value.value
        elif attribute == 5:
            if value.type != DataType.BOOLEAN:
                raise AccessDenied(DataAccessResult.TYPE_UNMATCHED, "set")
            self.enabled = value.value
            if not value.value:
                self.status, self.blocks, self.identifier, self.size = 0, {}, b"", 0
        else:
            raise AccessDenied(DataAccessResult.READ_WRITE_DENIED, "set")

    # -- methods
    def invoke(self, method: int, parameters: Data) -> None:
        if not self.enabled:
            raise AccessDenied(ActionResult.READ_WRITE_DENIED, "action")
        if method in (1, 2):
            if parameters.type != DataType.STRUCTURE or len(parameters.value) != 2:
                raise AccessDenied(ActionResult.TYPE_UNMATCHED, "action")
            first, second = parameters.value
            if method == 1 and (first.type, second.type) != (DataType.OCTET_STRING, DataType.DOUBLE_LONG_UNSIGNED):
                raise AccessDenied(ActionResult.TYPE_UNMATCHED, "action")
            if method == 2 and (first.type, second.type) != (DataType.DOUBLE_LONG_UNSIGNED, DataType.OCTET_STRING):
                raise AccessDenied(ActionResult.TYPE_UNMATCHED, "action")
        elif parameters.type != DataType.INTEGER or parameters.value != 0:
            raise AccessDenied(ActionResult.TYPE_UNMATCHED, "action")
        if method == 1:
            identifier, size = first.value, second.value
            if size == 0 or size > MAX_IMAGE or not 1 <= len(identifier) <= 64:
                raise AccessDenied(ActionResult.OTHER_REASON, "action")
            if self.status == 1:
                if (identifier, size) != (self.identifier, self.size):
                    raise AccessDenied(ActionResult.OTHER_REASON, "action")
                return  # resume: blocks kept
            if self.status in (2, 5):
                raise AccessDenied(ActionResult.OTHER_REASON, "action")
            self.status, self.identifier, self.size, self.blocks = 1, identifier, size, {}
        elif method == 2:
            number, value = first.value, second.value
            self.block_calls[number] += 1
            if number in self.before_block:
                self.before_block.pop(number)(self)
                if not self.enabled:
                    raise AccessDenied(ActionResult.READ_WRITE_DENIED, "action")
            if self.link_lost_at_block == number:
                self.link_lost_at_block = None
                raise LinkError("127.0.0.1:4059 closed the connection")
            if self.status != 1 or number >= self.block_count:
                raise AccessDenied(ActionResult.OTHER_REASON, "action")
            expected = self.block_size if number < self.block_count - 1 else \
                self.size - (self.block_count - 1) * self.block_size
            if len(value) != expected:
                raise AccessDenied(ActionResult.OTHER_REASON, "action")
            times = self.forget.get(number, 0)
            if times:
                self.forget[number] = times - 1 if times > 0 else times
                return  # acknowledged, not kept
            self.blocks[number] = bytes(value)
        elif method == 3:
            if self.status != 1 or len(self.blocks) != self.block_count:
                raise AccessDenied(ActionResult.OTHER_REASON, "action")
            if self.verify_in_background:
                self.status = Status.VERIFICATION_INITIATED
                raise AccessDenied(ActionResult.TEMPORARY_FAILURE, "action")
            self.status = 3 if self.verify_ok else 4
            if not self.verify_ok:  # a failed verification answers other-reason, status 4 says why
                raise AccessDenied(ActionResult.OTHER_REASON, "action")
        elif method == 4:
            if self.status in (5, 6):
                return
            if self.status != 3 or self.install_refused:
                raise AccessDenied(ActionResult.OTHER_REASON, "action")
            self.status = 5


class FakeClient:
    """What the driver uses of MeterClient: get/set/action by OBIS with class_id."""

    def __init__(self, meter: FakeMeter) -> None:
        self.meter = meter

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return None

    async def get(self, obis, attribute=2, class_id=None):
        obis = Obis.parse(obis) if isinstance(obis, str) else obis
        self.meter.requests.append(("get", str(obis), attribute))
        if obis == IT and class_id == 18:
            return self.meter.read(attribute)
        if obis == CLOCK and class_id == 8 and attribute == 2:
            return Data.octet_string(axdr.encode_date_time(self.meter.clock))
        if str(obis) in self.meter.firmware and class_id == 1 and attribute == 2:
            return Data.octet_string(self.meter.firmware[str(obis)])
        raise AccessDenied(DataAccessResult.OBJECT_UNDEFINED, "get")

    async def set(self, obis, attribute, value, class_id=None):
        obis = Obis.parse(obis) if isinstance(obis, str) else obis
        self.meter.requests.append(("set", str(obis), attribute))
        if obis == IT and class_id == 18:
            return self.meter.write(attribute, value)
        if obis == SCHEDULER and class_id == 22 and attribute == 4:
            self.meter.execution_time = value
            return None
        raise AccessDenied(DataAccessResult.READ_WRITE_DENIED, "set")

    async def action(self, obis, method, parameters=None, class_id=None):
        obis = Obis.parse(obis) if isinstance(obis, str) else obis
        self.meter.requests.append(("action", str(obis), method))
        if obis == IT and class_id == 18:
            return self.meter.invoke(method, parameters)
        raise AccessDenied(ActionResult.OBJECT_UNDEFINED, "action")


def run(coroutine):
    return asyncio.run(coroutine)


def image_of(size: int) -> bytes:
    return os.urandom(size)


def blocks_as_sent(image: bytes, block_size: int) -> list[bytes]:
    return [image[i:i + block_size] for i in range(0, len(image), block_size)]


# ----------------------------------------------------------------------------- transfer


def test_a_fresh_upgrade_sends_each_block_once_verifies_and_shows_what_the_meter_will_activate():
    meter = FakeMeter()
    image = image_of(5000)  # 1024 * 4 + 904: five blocks
    seen = []
    report = run(firmware.upgrade(FakeClient(meter), image, "SMFW-1.0.1", progress=lambda h, n: seen.append((h, n))))
    assert meter.block_calls == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1}
    assert [len(b) for b in blocks_as_sent(image, 1024)] == [1024, 1024, 1024, 1024, 904]
    assert meter.image() == image and meter.identifier == b"SMFW-1.0.1" and meter.size == 5000
    assert meter.status == Status.VERIFICATION_SUCCESSFUL  # not activated: activate=None
    assert (report.blocks, report.block_size, report.sent, report.resent, report.rounds) == (5, 1024, 5, 0, 0)
    assert report.already_on_meter == 0 and report.status == 3 and report.activation is None
    assert report.to_activate == [firmware.ImageToActivate(5000, b"SMFW-1.0.1", SIGNATURE)]
    assert seen[0] == (0, 5) and seen[-1] == (5, 5) and [h for h, _ in seen] == sorted(h for h, _ in seen)
    # no write of the block size when none was asked for, nothing activated
    assert ("set", str(IT), 2) not in meter.requests and ("action", str(IT), 4) not in meter.requests


def test_a_block_size_is_written_before_initiation_and_cuts_the_image():
    meter = FakeMeter()
    image = image_of(5000)  # 512 * 9 + 392: ten blocks
    report = run(firmware.upgrade(FakeClient(meter), image, "X", block_size=512))
    assert meter.block_size == 512 and report.blocks == 10 and report.block_size == 512
    assert meter.block_calls == {n: 1 for n in range(10)} and len(meter.blocks[9]) == 392
    assert meter.image() == image
    assert meter.requests.index(("set", str(IT), 2)) < meter.requests.index(("action", str(IT), 1))


def test_a_block_size_equal_to_the_meters_is_not_written():
    meter = FakeMeter(block_size=256)
    run(firmware.upgrade(FakeClient(meter), image_of(1000), "X", block_size=256))
    assert ("set", str(IT), 2) not in meter.requests and meter.block_calls == {0: 1, 1: 1, 2: 1, 3: 1}


def test_blocks_the_meter_lost_are_sent_again_and_only_they():
    meter = FakeMeter(forget={1: 1, 3: 1})  # acknowledged, then lost (a kill -9 of the meter)
    image = image_of(4 * 1024 + 10)
    report = run(firmware.upgrade(FakeClient(meter), image, "X"))
    assert meter.block_calls == {0: 1, 1: 2, 2: 1, 3: 2, 4: 1}
    assert (report.sent, report.resent, report.rounds) == (7, 2, 1) and meter.image() == image


def test_an_interrupted_transfer_resumes_with_the_blocks_the_meter_holds():
    image = image_of(5 * 100)
    meter = FakeMeter(block_size=100, status=1, identifier=b"X", size=500,
                      blocks={0: image[0:100], 1: image[100:200], 3: image[300:400]})
    report = run(firmware.upgrade(FakeClient(meter), image, "X"))
    assert meter.block_calls == {2: 1, 4: 1} and report.already_on_meter == 3 and report.sent == 2
    assert meter.image() == image and meter.status == 3


def test_without_the_bitmap_every_block_from_the_first_missing_is_sent():
    image = image_of(500)
    meter = FakeMeter(block_size=100, status=1, identifier=b"X", size=500,
                      blocks={0: image[0:100], 1: image[100:200], 3: image[300:400]}, bitmap_readable=False)
    run(firmware.upgrade(FakeClient(meter), image, "X"))
    assert meter.block_calls == {2: 1, 3: 1, 4: 1} and meter.image() == image


def test_a_block_the_meter_never_keeps_stops_after_the_bounded_rounds():
    meter = FakeMeter(block_size=100, forget={2: -1})
    with pytest.raises(UpgradeError) as caught:
        run(firmware.upgrade(FakeClient(meter), image_of(450), "X", max_rounds=3))
    error = caught.value
    assert (error.step, error.block, error.result) == ("image_block_transfer", 2, None)
    assert str(error) == "image_block_transfer 2: 1 block(s) still missing after 3 resend round(s)"
    assert meter.block_calls == {0: 1, 1: 1, 2: 4, 3: 1, 4: 1}  # the first pass and three rounds
    assert ("action", str(IT), 3) not in meter.requests  # never verified


def test_a_link_lost_mid_transfer_names_the_block_and_the_same_upgrade_resumes():
    image = image_of(500)
    meter = FakeMeter(block_size=100, link_lost_at_block=2)
    with pytest.raises(UpgradeError) as caught:
        run(firmware.upgrade(FakeClient(meter), image, "X"))
    assert (caught.value.step, caught.value.block, caught.value.result) == ("image_block_transfer", 2, None)
    assert "closed the connection" in caught.value.detail and "resumes" in caught.value.hint
    meter.block_calls.clear()
    report = run(firmware.upgrade(FakeClient(meter), image, "X"))
    assert meter.block_calls == {2: 1, 3: 1, 4: 1} and report.already_on_meter == 2 and meter.image() == image


# ----------------------------------------------------------------------------- refusals


def test_a_transfer_aborted_under_way_stops_at_that_block_with_the_meters_answer():
    def abort(m: FakeMeter) -> None:  # another management client writes image_transfer_enabled FALSE
        m.write(5, Data.boolean(False))

    meter = FakeMeter(block_size=100, before_block={3: abort})
    with pytest.raises(UpgradeError) as caught:
        run(firmware.upgrade(FakeClient(meter), image_of(500), "X"))
    error = caught.value
    assert (error.step, error.block, error.result) == ("image_block_transfer", 3, ActionResult.READ_WRITE_DENIED)
    assert str(error).startswith("image_block_transfer 3: read-write-denied (image transfers were disabled")
    assert meter.block_calls == {0: 1, 1: 1, 2: 1, 3: 1}


def test_a_transfer_started_afresh_elsewhere_is_named_by_the_meters_status():
    def restart(m: FakeMeter) -> None:  # aborted and enabled again by another client: status 0
        m.write(5, Data.boolean(False))
        m.write(5, Data.boolean(True))

    meter = FakeMeter(block_size=100, before_block={1: restart})
    with pytest.raises(UpgradeError) as caught:
        run(firmware.upgrade(FakeClient(meter), image_of(500), "X"))
    assert str(caught.value) == ("image_block_transfer 1: other-reason (the transfer is not initiated any more: "
                                 "status 0 not initiated)")


def test_initiate_is_refused_while_another_image_is_under_way_and_nothing_changes():
    held = {0: b"a" * 100}
    meter = FakeMeter(block_size=100, status=1, identifier=b"OTHER", size=300, blocks=dict(held))
    with pytest.raises(UpgradeError) as caught:
        run(firmware.upgrade(FakeClient(meter), image_of(500), "X"))
    error = caught.value
    assert (error.step, error.result) == ("image_transfer_initiate", ActionResult.OTHER_REASON)
    assert "another transfer is under way" in error.detail and "boolean:false" in error.hint
    assert (meter.status, meter.identifier, meter.size, meter.blocks) == (1, b"OTHER", 300, held)
    assert not meter.block_calls


def test_initiate_with_transfers_disabled_says_so():
    meter = FakeMeter(enabled=False)
    with pytest.raises(UpgradeError) as caught:
        run(firmware.upgrade(FakeClient(meter), image_of(500), "X"))
    assert str(caught.value) == ("image_transfer_initiate: read-write-denied (image transfers are disabled on the "
                                 "meter (image_transfer_enabled FALSE))")
    assert "boolean:true" in caught.value.hint


def test_a_block_size_is_refused_while_a_transfer_is_under_way():
    meter = FakeMeter(block_size=1024, status=1, identifier=b"X", size=5000)
    with pytest.raises(UpgradeError) as caught:
        run(firmware.upgrade(FakeClient(meter), image_of(5000), "X", block_size=512))
    error = caught.value
    assert (error.step, error.result) == ("image_block_size", DataAccessResult.OTHER_REASON)
    assert "blocks of 1024 bytes" in error.detail and "without --block-size" in error.hint
    assert meter.block_size == 1024 and not meter.block_calls


def test_a_block_size_the_meter_does_not_take_is_named():
    meter = FakeMeter()
    with pytest.raises(UpgradeError) as caught:
        run(firmware.upgrade(FakeClient(meter), image_of(5000), "X", block_size=2000))
    assert str(caught.value) == "image_block_size: other-reason (the meter does not take a block size of 2000)"


def test_a_failed_verification_stops_before_anything_is_activated():
    meter = FakeMeter(verify_ok=False, block_size=100)
    with pytest.raises(UpgradeError) as caught:
        run(firmware.upgrade(FakeClient(meter), image_of(250), "X", activate="now"))
    error = caught.value
    assert (error.step, error.result) == ("image_verify", ActionResult.OTHER_REASON)
    assert str(error).startswith("image_verify: other-reason (the meter does not accept the image (its log names "
                                 "the check: signature, identifier, size")
    assert str(error).endswith("): status 4 verification failed)")
    assert "fw inspect" in error.hint
    assert ("action", str(IT), 4) not in meter.requests and meter.status == 4


def test_verify_early_is_refused_and_names_the_missing_blocks():
    meter = FakeMeter(block_size=100, status=1, identifier=b"X", size=500, blocks={0: b"a" * 100, 1: b"b" * 100})
    with pytest.raises(UpgradeError) as caught:
        run(firmware.verify(FakeClient(meter)))
    assert str(caught.value) == "image_verify: other-reason (3 block(s) missing, the first 2)"


def test_a_verification_in_the_background_that_fails_is_named():
    meter = FakeMeter(block_size=100, status=1, identifier=b"X", size=200, blocks={0: b"a" * 100, 1: b"b" * 100},
                      verify_in_background=2, verify_ok=False)
    with pytest.raises(UpgradeError) as caught:
        run(firmware.verify(FakeClient(meter), poll=0.001))
    assert caught.value.result is None and caught.value.detail.endswith("status 4 verification failed")


def test_a_verification_in_the_background_is_polled_until_it_ends():
    meter = FakeMeter(block_size=100, status=1, identifier=b"X", size=200, blocks={0: b"a" * 100, 1: b"b" * 100},
                      verify_in_background=3)
    status = run(firmware.verify(FakeClient(meter), poll=0.001))
    assert status == 3 and meter.requests.count(("get", str(IT), 6)) == 4  # three "2", then 3


def test_the_bitmap_of_another_image_stops_the_transfer():
    meter = FakeMeter(block_size=100, status=1, identifier=b"X", size=500)
    with pytest.raises(UpgradeError) as caught:
        run(firmware.missing_blocks(FakeClient(meter), 20))
    assert str(caught.value) == "image_transferred_blocks_status: the meter tracks 5 blocks, this image has 20"


def test_a_bitmap_padded_to_whole_bytes_is_read():
    class Padded(FakeMeter):
        def read(self, attribute):
            value = super().read(attribute)
            return Data(DataType.BIT_STRING, value.value + "000") if attribute == 3 else value

    meter = Padded(block_size=100, status=1, identifier=b"X", size=500, blocks={0: b"a" * 100, 4: b"e" * 100})
    assert run(firmware.missing_blocks(FakeClient(meter), 5)) == [1, 2, 3]


def test_a_block_too_long_for_the_meters_requests_is_refused_before_initiation():
    class Negotiated:
        server_max_receive_pdu_size = 512

    class Association:
        negotiated = Negotiated()
        protection_overhead = 0

    client = FakeClient(FakeMeter(block_size=1024))
    client.association = Association()
    with pytest.raises(UpgradeError) as caught:
        run(firmware.upgrade(client, image_of(5000), "X"))
    # a request carrying a 1024-byte block: 1024 + 24 bytes of action request around it
    assert firmware._block_request_length(1024) == 1048
    assert str(caught.value) == "image_block_size: blocks of 1024 bytes do not fit in a request of the meter's 512 bytes"
    assert "at most 488" in caught.value.hint and client.meter.status == 0


# ----------------------------------------------------------------------------- activation


class Site:
    """A meter that restarts after an activation: `down` associations fail, then it is back
    with the outcome the test chose."""

    def __init__(self, meter: FakeMeter, down: int, outcome: int, new_firmware: dict[str, bytes]) -> None:
        self.meter, self.down, self.outcome, self.new_firmware = meter, down, outcome, new_firmware
        self.attempts = 0

    def connect(self):
        self.attempts += 1
        site = self

        class Connection(FakeClient):
            async def __aenter__(self):
                if site.down:
                    site.down -= 1
                    raise LinkError("cannot connect to 127.0.0.1:4059 (ConnectionRefusedError)")
                if site.meter.status == 5:  # the restart: the new software reports how it went
                    site.meter.status = site.outcome
                    site.meter.firmware.update(site.new_firmware)
                return self

        return Connection(self.meter)


def test_activate_now_waits_for_the_restart_and_reads_the_new_firmware():
    meter = FakeMeter(block_size=100)
    site = Site(meter, down=2, outcome=6, new_firmware={"1-1:0.2.0.255": b"app 0.1.1"})
    report = run(firmware.upgrade(FakeClient(meter), image_of(300), "X", activate="now", reconnect=site.connect,
                                  restart_timeout=10))
    assert report.activation == "now" and report.status == 6 and site.attempts == 3
    assert [(f.part, f.identifier) for f in report.firmware] == [("legal", b"KSMW-LR 1.0.0"),
                                                                 ("application", b"app 0.1.1")]
    assert report.to_dict()["active_firmware"][1] == {"part": "application", "identifier": "app 0.1.1",
                                                      "signature": "02" * 32}


def test_a_failed_activation_after_the_restart_is_an_error():
    meter = FakeMeter(block_size=100)
    site = Site(meter, down=0, outcome=7, new_firmware={})
    with pytest.raises(UpgradeError) as caught:
        run(firmware.upgrade(FakeClient(meter), image_of(300), "X", activate="now", reconnect=site.connect))
    assert (caught.value.step, caught.value.result) == ("image_activate", None)
    assert caught.value.detail.endswith("previous software: status 7 activation failed")


def test_a_meter_that_does_not_come_back_ends_the_wait():
    meter = FakeMeter(status=5)
    site = Site(meter, down=10**6, outcome=6, new_firmware={})
    with pytest.raises(UpgradeError) as caught:
        run(firmware.wait_for_restart(site.connect, timeout=0.05, poll=0.01))
    assert caught.value.step == "restart" and "ConnectionRefusedError" in caught.value.detail


def test_activation_refused_by_the_meter_leaves_the_verified_image():
    meter = FakeMeter(block_size=100, install_refused=True)
    with pytest.raises(UpgradeError) as caught:
        run(firmware.upgrade(FakeClient(meter), image_of(300), "X", activate="now"))
    assert str(caught.value) == ("image_activate: other-reason (the meter refused to install the verified image, "
                                 "status 3 verification successful)")
    assert meter.status == 3


def test_activation_without_a_way_back_reports_it_initiated():
    meter = FakeMeter(block_size=100)
    report = run(firmware.upgrade(FakeClient(meter), image_of(300), "X", activate="now"))
    assert report.status == 5 and meter.status == 5 and report.firmware == []


def meter_clock(local: dt.datetime, utc_offset_minutes: int) -> CosemDateTime:
    return CosemDateTime(CosemDate(local.year, local.month, local.day, local.isoweekday()),
                         CosemTime(local.hour, local.minute, local.second, 0), -utc_offset_minutes, 0)


def scheduled_pair(meter: FakeMeter) -> tuple[bytes, bytes]:
    (entry,) = meter.execution_time.value
    return tuple(bytes(f.value) for f in entry.value)


def test_a_scheduled_activation_writes_the_meter_local_time():
    meter = FakeMeter(block_size=100, clock=meter_clock(dt.datetime(2026, 5, 1, 10, 0), 120))
    report = run(firmware.upgrade(FakeClient(meter), image_of(300), "X", activate=dt.datetime(2026, 5, 2, 3, 0, 30)))
    # time 03:00:30.00, date 2026-05-02 with the weekday not specified
    assert scheduled_pair(meter) == (bytes([3, 0, 30, 0]), bytes([0x07, 0xEA, 5, 2, 0xFF]))
    assert report.activation == "scheduled" and report.scheduled_at == dt.datetime(2026, 5, 2, 3, 0, 30)
    assert meter.status == 3


def test_an_activation_time_with_an_offset_is_turned_into_the_meters_local_time():
    meter = FakeMeter(block_size=100, clock=meter_clock(dt.datetime(2026, 5, 1, 10, 0), 120))
    when = dt.datetime(2026, 5, 1, 23, 15, tzinfo=dt.timezone.utc)  # 01:15 on 2 May at UTC+2
    run(firmware.upgrade(FakeClient(meter), image_of(300), "X", activate=when))
    assert scheduled_pair(meter) == (bytes([1, 15, 0, 0]), bytes([0x07, 0xEA, 5, 2, 0xFF]))


def test_an_activation_time_already_past_on_the_meter_is_refused_and_nothing_written():
    meter = FakeMeter(block_size=100, clock=meter_clock(dt.datetime(2026, 5, 1, 10, 0), 120))
    with pytest.raises(UpgradeError) as caught:
        run(firmware.upgrade(FakeClient(meter), image_of(300), "X", activate=dt.datetime(2026, 5, 1, 9, 59)))
    assert str(caught.value) == ("execution_time: 2026-05-01 09:59:00 is not after the meter's time "
                                 "2026-05-01 10:00:00")
    assert meter.execution_time is None and meter.status == 3


def test_each_step_alone_on_a_meter():
    meter = FakeMeter(block_size=100)
    client = FakeClient(meter)
    image = image_of(250)

    async def steps():
        await firmware.initiate(client, b"ID", 250)
        assert await firmware.missing_blocks(client, 3) == [0, 1, 2]
        assert await firmware.transfer(client, image, 100, [2, 0]) == 2
        assert await firmware.missing_blocks(client, 3) == [1]
        await firmware.transfer(client, image, 100, [1])
        state = await firmware.read_state(client)
        assert (state.block_size, state.transferred, state.first_not_transferred, state.enabled, state.status) == \
            (100, "111", 3, True, 1)
        assert await firmware.verify(client) == 3
        assert await firmware.info(client) == [firmware.ImageToActivate(250, b"ID", SIGNATURE)]
        await firmware.activate(client)
        return await firmware.read_status(client)

    assert run(steps()) == 5 and meter.image() == image


def test_the_same_image_verified_and_waiting_is_activated_without_sending_it_again():
    meter = FakeMeter(block_size=100)
    image = image_of(300)
    first = run(firmware.upgrade(FakeClient(meter), image, "X"))  # transfer and verify only
    assert first.activation is None and meter.status == 3 and sum(meter.block_calls.values()) == 3
    meter.requests.clear()
    report = run(firmware.upgrade(FakeClient(meter), image, "X", signature=SIGNATURE, activate="now"))
    assert report.already_verified and report.sent == 0 and meter.status == 5
    assert [r for r in meter.requests if r[0] == "action"] == [("action", str(IT), 4)]


def test_an_image_of_the_same_identifier_and_size_with_another_signature_is_sent_again():
    meter = FakeMeter(block_size=100)
    run(firmware.upgrade(FakeClient(meter), image_of(300), "X"))
    other = image_of(300)  # e.g. signed with another key: same identifier, same size
    meter.block_calls.clear()
    report = run(firmware.upgrade(FakeClient(meter), other, "X", signature=b"another signature"))
    assert not report.already_verified and meter.block_calls == {0: 1, 1: 1, 2: 1} and meter.image() == other


def test_without_a_signature_a_verified_image_is_sent_again():
    meter = FakeMeter(block_size=100)
    image = image_of(300)
    run(firmware.upgrade(FakeClient(meter), image, "X"))
    meter.block_calls.clear()
    report = run(firmware.upgrade(FakeClient(meter), image, "X"))
    assert not report.already_verified and meter.block_calls == {0: 1, 1: 1, 2: 1}


def test_another_image_verified_and_waiting_is_replaced():
    meter = FakeMeter(block_size=100)
    run(firmware.upgrade(FakeClient(meter), image_of(300), "OLD"))
    image = image_of(300)
    meter.block_calls.clear()
    report = run(firmware.upgrade(FakeClient(meter), image, "NEW"))
    assert not report.already_verified and meter.block_calls == {0: 1, 1: 1, 2: 1}
    assert meter.identifier == b"NEW" and meter.image() == image and meter.status == 3


def test_initiate_during_an_activation_says_to_wait_for_the_restart():
    meter = FakeMeter(block_size=100, status=5, identifier=b"X", size=300)
    with pytest.raises(UpgradeError) as caught:
        run(firmware.upgrade(FakeClient(meter), image_of(300), "Y"))
    assert str(caught.value) == ("image_transfer_initiate: other-reason (an activation is under way, "
                                 "status 5 activation initiated)")
    assert "wait for the meter to restart" in caught.value.hint

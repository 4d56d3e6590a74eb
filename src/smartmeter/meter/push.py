"""What a push is (companion standard §10, catalog §7; IDIS package 2 §7.8): the push service an
IC 40 push setup calls when its method 1 `push` runs, whoever runs it (a push action
scheduler's script, an alarm monitor's script, the runtime at a new network connection, a
client's ACTION).

A push:

1. reads every entry of the setup's push_object_list with the meter's own authority: the
   attribute as the object reads it, attribute 0 as a structure of all the object's
   attributes (Blue Book 4.4.8, as attribute 0 reads with GET), data_index n ≥ 1 the n-th
   element of a structure or the n-th column of every entry of a profile buffer. A clock time
   (class 8 attribute 2) is the meter time the push is for: the instant of the schedule or
   monitor that triggered it, so a push carries the time it stands for even when the meter
   runs behind (a fast clock's tick) (docs/decisions.md "Push");
2. makes that structure the body of a data-notification, protected in the Data Readout
   client's context (suite 1, authenticated and encrypted, general-glo-ciphering with its
   global keys and the meter's sending counter: `DlmsServer.protected_notification`);
3. splits the protected APDU into general-block-transfer blocks when it exceeds the meter's
   PDU size (companion §3.3.1: 1224 octets both ways; the Data Readout client has no
   association during a push, so its size is that one);
4. hands the APDU(s) to the push sender (smartmeter.meter.push_sender) with the setup's
   destination, retries, randomisation, repetition delay and communication windows; the
   sender wraps and delivers them without ever blocking the meter (and reads the windows'
   date-time patterns itself).

A push whose destination is the H1 consumer interface (transport 201, wired M-Bus, §10.5) goes
to the H1 port instead (smartmeter.meter.consumer_port): encrypted for the CIP client, in
M-Bus segments, paced at 2400 Bd.

A push is not sent, and the reason logged once per setup, when its destination is empty
(none configured: the meter's default), when it names the H1 consumer interface and the meter
runs without its H1 port (no --h1), or when no sender runs (a meter without its LAN/WAN interface).
A push that cannot be built (over MAX_PUSH_APDU, no security context) is refused with
other-reason.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import traceback
from typing import Callable

from smartmeter.cosem import axdr
from smartmeter.cosem.classes.base import Binding, CosemAccessError, RequestContext
from smartmeter.cosem.classes.ic40_push_setup import WIRED_MBUS, PushObject, PushSetup
from smartmeter.cosem.data import CLOCK_STATUS_INVALID, Data, DataType
from smartmeter.cosem.results import DataAccessResult
from smartmeter.dlms.apdu.gbt import GeneralBlockTransfer
from smartmeter.dlms.server_security import SecurityRefusal
from smartmeter.errors import SmartmeterError
from smartmeter.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

PUSH_CLIENT = "data_readout"  # companion §10: every push to the head-end runs in its context
CLOCK_CLASS, CLOCK_TIME = 8, 2
PROFILE_CLASS, PROFILE_BUFFER = 7, 2
GBT_HEADER = 9  # tag, block-control, block-number, block-number-ack, length of block-data (≤ 3)
MAX_PUSH_APDU = 64 * 1024  # a protected push beyond this is not built (≈ 55 blocks of 1224 octets)
UNSOLICITED = 0  # long-invoke-id-and-priority: service class unconfirmed, normal priority
# where a wildcard address looks for the meter's own (TEST-NET/documentation addresses: connect() on a
# UDP socket only picks the route, no packet is sent)
_PROBE = {socket.AF_INET: ("192.0.2.1", 9), socket.AF_INET6: ("2001:db8::1", 9)}
METER_CONTEXT = RequestContext("meter", 0)


class PushService:
    """The push of every IC 40 object of one meter (the binding `push.run`)."""

    def __init__(self, clock, now: Callable[[], float],
                 on_pushed: Callable[[PushSetup, RequestContext, float, str], None]
                 = lambda setup, ctx, at, outcome: None,
                 client: str = PUSH_CLIENT, say: RateLimitedLog | None = None) -> None:
        """`now()` is the meter time a push stands for (a running schedule's instant, else the
        clock); `on_pushed(setup, ctx, at, outcome)` is told after every push run: outcome
        "submitted" (the sender took it), "refused" (built, but the sender refused it: it logged
        why), "not configured", "no H1", "no sender" or "failed" (not built); on H1 also
        "skipped" (the push before is still on the line)."""
        self.clock = clock
        self.now = now
        self.on_pushed = on_pushed
        self.client = client
        self.server = None  # the DLMS server (protection, the object directory): attach()
        self.sender = None  # the push sender running on the meter's event loop, while it runs
        self.h1 = None  # the H1 consumer push (meter.consumer_port.ConsumerPush), while the H1 port runs
        self.say = say if say is not None else RateLimitedLog(log)
        self._invoke_id = 0
        self._told: set[tuple[str, bytes]] = set()

    def attach(self, server) -> None:
        self.server = server

    def bindings(self) -> dict:
        return {"push.run": self.run}

    # -- a push -----------------------------------------------------------------------------
    def run(self, setup: PushSetup, ctx: RequestContext) -> None:
        """IC 40 method 1: build the push and hand it to the sender now."""
        at = self.now()
        outcome = "failed"
        try:
            outcome = self._push(setup, at)
        finally:
            try:
                self.on_pushed(setup, ctx, at, outcome)
            except Exception:  # noqa: BLE001 - what follows a push must not undo it
                self.say("push.after_push", "after the push of %s:\n%s", setup.name, traceback.format_exc())

    def _push(self, setup: PushSetup, at: float) -> str:
        target = setup.send_destination()
        if not target.destination:
            self._tell_once("not_configured", setup, "%s: no destination configured, the push is not sent")
            return "not configured"
        if target.transport_service == WIRED_MBUS:
            return self._push_h1(setup, target.destination, at)
        if self.sender is None:
            self._tell_once("no_sender", setup, "%s: no push sender runs (LAN/WAN interface off), the push is not sent")
            return "no sender"
        frames = self.frames(setup, at)
        best_effort = bool(setup.config.get("best_effort", False))
        taken = self.sender.submit(frames, target.transport_service, target.destination,
                                   0 if best_effort else setup.integer("number_of_retries"),
                                   0 if best_effort else setup.integer("randomisation_start_interval"),
                                   setup.integer("repetition_delay"), setup.windows())
        return "submitted" if taken else "refused"

    def _push_h1(self, setup: PushSetup, destination: str, at: float) -> str:
        """The consumer information push (§10.5) on the H1 port, when the meter runs one: protected
        for the CIP client and cut into M-Bus segments there (smartmeter.meter.consumer_port)."""
        if self.h1 is None:
            self._tell_once("h1", setup, "%s: the H1 consumer port is off (meter run --h1 DEVICE|pty), "
                                         "the push is not sent")
            return "no H1"
        self._invoke_id = (self._invoke_id + 1) & 0xFFFFFF
        return self.h1.push(setup.name, destination, self.body(setup, at), UNSOLICITED | self._invoke_id)

    def _tell_once(self, condition: str, setup: PushSetup, message: str) -> None:
        key = (condition, setup.logical_name.to_bytes())
        if key not in self._told:
            self._told.add(key)
            log.info(message, setup.name)

    def frames(self, setup: PushSetup, at: float) -> list[bytes]:
        """The push's APDUs as they go on the link: one protected data-notification, or its
        general-block-transfer blocks."""
        self._invoke_id = (self._invoke_id + 1) & 0xFFFFFF
        try:
            apdu = self.server.protected_notification(self.client, self.body(setup, at), UNSOLICITED | self._invoke_id)
        except (SecurityRefusal, SmartmeterError) as exc:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, f"{setup.name}: {exc}") from None
        if len(apdu) > MAX_PUSH_APDU:
            raise CosemAccessError(DataAccessResult.OTHER_REASON,
                                   f"{setup.name}: a push of {len(apdu)} octets exceeds {MAX_PUSH_APDU}")
        return gbt_blocks(apdu, self.server.max_pdu_size)

    def body(self, setup: PushSetup, at: float) -> Data:
        """The notification body: a structure of one value per push_object_list entry."""
        return Data.structure(self._value(o, at) for o in setup.push_objects())

    def _value(self, o: PushObject, at: float) -> Data:
        found = self.server.directory.find(o.class_id, o.logical_name)
        if found is None:  # gone from the model since the list was written
            return Data.null()
        instance = found[1]
        if o.attribute_index == 0:
            value = Data.structure(self._attribute(instance, i, at) for i in instance.attributes)
        else:
            value = self._attribute(instance, o.attribute_index, at)
        return select(value, o.data_index)

    def _attribute(self, instance, index: int, at: float) -> Data:
        if instance.class_id == CLOCK_CLASS and index == CLOCK_TIME:
            return Data.octet_string(self.stamp(at))
        try:
            return instance.get(index, METER_CONTEXT)
        except CosemAccessError as exc:  # pushed as null-data, as a GET-with-list answers per item
            self.say("push.unreadable", "%s attribute %s is not pushed: %s", instance.name, index, exc)
            return Data.null()

    def stamp(self, at: float) -> bytes:
        """The clock's time attribute as it reads at meter time `at` (with its invalid bit)."""
        encoded = self.clock.cosem(at)
        return encoded[:-1] + bytes([encoded[-1] | CLOCK_STATUS_INVALID]) if self.clock.invalid else encoded


def select(value: Data, data_index: int) -> Data:
    """data_index 0: the whole attribute; n ≥ 1: the n-th element of a structure, or the n-th
    column of every entry of a profile buffer (an array of structures); null-data where there is none."""
    if data_index == 0:
        return value
    if value.value is None and value.encoded is not None:
        value = axdr.decode_all(value.encoded)
    if value.type == DataType.STRUCTURE:
        return value.value[data_index - 1] if data_index <= len(value.value) else Data.null()
    if value.type == DataType.ARRAY and all(row.type == DataType.STRUCTURE for row in value.value):
        return Data.array(select(row, data_index) for row in value.value)
    return Data.null()


def gbt_blocks(apdu: bytes, max_pdu: int) -> list[bytes]:
    """`apdu` as it is when it fits `max_pdu`, else in general-block-transfer blocks of at most
    `max_pdu` octets each (Green Book 9.3.9), numbered from 1, streamed (nothing acknowledges a
    push), the last one flagged."""
    if len(apdu) <= max_pdu:
        return [apdu]
    size = max_pdu - GBT_HEADER
    chunks = [apdu[i:i + size] for i in range(0, len(apdu), size)]
    return [GeneralBlockTransfer(n == len(chunks), n != len(chunks), 1, n, 0, chunk).to_bytes()
            for n, chunk in enumerate(chunks, start=1)]


class NetworkAddresses:
    """The addresses the LAN/WAN interface serves on, for the IP setup objects (IC 42, IC 48)
    the installation and connectivity pushes carry. A wildcard (0.0.0.0, ::) stands for the
    address the host would send from; none found reads as 0 / an empty list."""

    def __init__(self) -> None:
        self.ipv4: int = 0
        self.ipv6: tuple[bytes, ...] = ()

    def serve_on(self, host: str) -> None:
        ipv4, ipv6 = set(), set()
        try:
            infos = socket.getaddrinfo(host or None, None, proto=socket.IPPROTO_TCP)
        except OSError:
            infos = []
        for family, _, _, _, sockaddr in infos:
            address = ipaddress.ip_address(sockaddr[0].split("%")[0])
            if address.is_unspecified:
                address = _own_address(family)
            if address is None:
                continue
            (ipv4 if address.version == 4 else ipv6).add(address)
        self.ipv4 = int(min(ipv4)) if ipv4 else 0
        self.ipv6 = tuple(a.packed for a in sorted(ipv6))

    def bindings(self) -> dict[str, Binding]:
        return {"network.ipv4_address": Binding(lambda: Data.double_long_unsigned(self.ipv4)),
                "network.ipv6_addresses": Binding(lambda: Data.array(Data.octet_string(a) for a in self.ipv6))}


def _own_address(family: int):
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(_PROBE[family])
            return ipaddress.ip_address(probe.getsockname()[0].split("%")[0])
    except OSError:
        return None

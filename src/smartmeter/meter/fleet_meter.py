"""One meter of a simulated fleet: the real sans-io DLMS server (`DlmsServer`) with the small
object model of profile "fleet", the real interface classes and the real security
(`SecurityManager` over an in-memory store), its values from the fleet's formula
(`smartmeter.meter.fleet`), and hooks that tell the fleet's observation what the head-end did.

A meter's server is built on its first connection, so an idle fleet of thousands costs little.
"""
from __future__ import annotations

import time
from typing import Any

from smartmeter.cosem.classes.base import Binding, CosemAccessError, RequestContext
from smartmeter.cosem.classes.ic7_profile_generic import ENTRY_DESCRIPTOR, ProfileGeneric
from smartmeter.cosem.data import Data
from smartmeter.cosem.objectmodel import ObjectDirectory, ObjectModel
from smartmeter.cosem.obis import Obis
from smartmeter.cosem.results import DataAccessResult
from smartmeter.dlms.security.context import ClientPolicy, SecurityManager
from smartmeter.dlms.security.errors import ReplayError, SecurityError
from smartmeter.dlms.security.keys import KeyId, decode_key_transfer, unwrap_key
from smartmeter.dlms.security.frame_counter import FrameCounterWindow, frame_counter_response
from smartmeter.dlms.server import DlmsServer, ServerAssociation
from smartmeter.errors import DecodeError
from smartmeter.meter import fleet
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.fleet_report import MeterRecord
from smartmeter.ratelog import RateLimitedLog

PROFILE = "fleet"
MANAGEMENT = "management"
LOAD_PROFILE_1 = Obis.parse("1-0:99.1.0.255").to_bytes()
STANDARD_EVENT_LOG = Obis.parse("0-0:99.98.0.255").to_bytes()

_model: ObjectModel | None = None


def fleet_model() -> ObjectModel:
    """The object model of profile "fleet", loaded once for all meters."""
    global _model
    if _model is None:
        _model = ObjectModel.load(PROFILE)
    return _model


def fleet_clock(scenario: fleet.FleetScenario, real_time=time.time) -> MeterClock:
    """The clock every meter of the fleet shares: UTC, meter time from the scenario."""
    clock = MeterClock("UTC", source=lambda: scenario.meter_time(real_time()))
    clock.simulated = scenario.speed != 1.0
    return clock


class MemoryStore:
    """The security store protocol (`smartmeter.dlms.security.context.SecurityStore`) in memory:
    a fleet meter starts afresh with every run of the fleet."""

    __slots__ = ("_values", "_counters")

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        self._counters: dict[str, int] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def put(self, key: str, value: Any) -> None:
        self._values[key] = value

    def counter(self, key: str) -> int:
        return self._counters.get(key, 0)

    def set_counter(self, key: str, value: int) -> None:
        self._counters[key] = value


class ObservedWindow(FrameCounterWindow):
    """The management client's receive window, telling the observation of every counter
    accepted under the global key (each protected APDU that authenticated: a counter sent
    under another key was not sent under this one) and of every replay it refuses."""

    def __init__(self, record: MeterRecord) -> None:
        super().__init__(None)
        self.record = record

    def check(self, counter: int):
        try:
            return super().check(counter)
        except ReplayError:
            self.record.counter_received(counter)
            self.record.counter_refused(counter)
            raise

    def commit(self, pending) -> None:
        super().commit(pending)
        self.record.counter_received(pending.value)


class FleetAssociation(ServerAssociation):
    """A server association that also tells the observation the counter inside HLS 5 f(StoC)
    (SC || IC || GMAC tag): it is taken below the window and never checked against it."""

    record: MeterRecord

    def reply_to_hls(self, f_stoc: bytes) -> bytes:
        if self.mechanism == fleet.MECHANISM and self.client_sap == fleet.MANAGEMENT_SAP and len(f_stoc) >= 5:
            self.record.counter_received(int.from_bytes(f_stoc[1:5], "big"))
        return super().reply_to_hls(f_stoc)


class FleetServer(DlmsServer):
    record: MeterRecord

    def association(self, client_sap: int, interface: str, server_sap: int | None = None) -> ServerAssociation:
        association = FleetAssociation(self, client_sap, interface, self.server_sap if server_sap is None else server_sap)
        association.record = self.record
        return association


class ProfileSource:
    """Meter i's load profile 1 as the fleet's formula gives it: rows are computed for the
    selection only, never the whole history."""

    def __init__(self, scenario: fleet.FleetScenario, i: int, clock: MeterClock) -> None:
        self.scenario, self.i, self.clock = scenario, i, clock
        self.import_w, self.export_w = fleet.import_power(i), fleet.export_power(i)

    def row(self, boundary: int) -> tuple:
        start = self.scenario.start
        return (self.clock.cosem(boundary), fleet.row_status(self.i, boundary),
                fleet.energy_wh(self.import_w, start, boundary), fleet.energy_wh(self.export_w, start, boundary))

    def _kept(self) -> range:
        return fleet.kept_boundaries(self.scenario.start, self.clock.now())

    def rows(self, from_time: int | None, to_time: int | None):
        kept = self._kept()
        if from_time is None and to_time is None:
            return LazyRows(self, kept)
        if not kept:
            return []
        low = kept.start if from_time is None else max(kept.start, -(-from_time // fleet.CAPTURE_PERIOD)
                                                       * fleet.CAPTURE_PERIOD)
        high = kept[-1] if to_time is None else min(kept[-1], to_time // fleet.CAPTURE_PERIOD * fleet.CAPTURE_PERIOD)
        return [self.row(b) for b in range(low, high + 1, fleet.CAPTURE_PERIOD)]

    def entries_in_use(self) -> int:
        return len(self._kept())

    def utc_from_cosem(self, value) -> int:
        return self.clock.utc_from_cosem(value)

    def status(self) -> Data:
        """The profile status object: the status of the newest row (0 before the first)."""
        kept = self._kept()
        return Data.unsigned(fleet.row_status(self.i, kept[-1]) if kept else 0)


class EventLogSource:
    """Meter i's standard event log as the fleet's formula gives it (at most 100 entries,
    computed for each request)."""

    def __init__(self, scenario: fleet.FleetScenario, i: int, clock: MeterClock) -> None:
        self.scenario, self.i, self.clock = scenario, i, clock

    def _kept(self) -> list[tuple[int, int]]:
        return fleet.event_entries(self.i, self.scenario.start, self.clock.now())

    def rows(self, from_time: int | None, to_time: int | None) -> list[tuple]:
        return [(self.clock.cosem(t), code) for t, code in self._kept()
                if (from_time is None or t >= from_time) and (to_time is None or t <= to_time)]

    def entries_in_use(self) -> int:
        return len(self._kept())

    def utc_from_cosem(self, value) -> int:
        return self.clock.utc_from_cosem(value)

    def last_code(self) -> Data:
        """The event object: the code of the newest entry (0 before the first)."""
        kept = self._kept()
        return Data.unsigned(kept[-1][1] if kept else 0)


class LazyRows:
    """The kept rows as a sequence whose rows are made when taken: an entry selection (a slice)
    costs only the rows it selects; the whole buffer (iterated, several times by the encoder)
    is made once."""

    def __init__(self, source: ProfileSource, boundaries: range) -> None:
        self.source, self.boundaries = source, boundaries
        self._all: list[tuple] | None = None

    def __len__(self) -> int:
        return len(self.boundaries)

    def __getitem__(self, index):
        if self._all is not None:
            return self._all[index]
        if isinstance(index, slice):
            return [self.source.row(b) for b in self.boundaries[index]]
        return self.source.row(self.boundaries[index])

    def __iter__(self):
        if self._all is None:
            self._all = [self.source.row(b) for b in self.boundaries]
        return iter(self._all)


class ProfileWithoutRange(ProfileGeneric):
    """Capability "no-range": selector 1 refused (scope-of-access-violated), selector 2 served."""

    selective_access = {2: (ENTRY_DESCRIPTOR,)}


class ProfileWithoutSelection(ProfileGeneric):
    """Capability "no-selective": only the whole buffer; both selectors refused."""

    selective_access = {}


class FrameCounterReadout:
    """The binding of the frame counter object (IC 12544, companion standard Appendix 1)."""

    def __init__(self, manager: SecurityManager, server_system_title: bytes) -> None:
        self.manager, self.server_system_title = manager, server_system_title

    def frame_counter_readout(self, client: str, challenge: bytes, ctx: RequestContext) -> tuple[bytes, int]:
        context = self.manager.context(client)
        caller_title = getattr(ctx.association, "calling_system_title", None)
        if context is None or caller_title is None:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "associate with a calling-AP-title first")
        if len(challenge) != 64:
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "the challenge is 64 bytes")
        counter = context.last_received
        return frame_counter_response(context.ak, self.server_system_title, caller_title, challenge, counter), counter


class FleetSecurity(FrameCounterReadout):
    """The security service of a fleet meter (`bindings["security"]`): the frame counter
    readout and what the management client's security setup (IC 64) shows and does.
    key_transfer follows the full meter's (`smartmeter.meter.security.MeterSecurity`): the
    keys unwrap with the master key (AES key wrap), SUCCESS goes out protected with the
    current keys, then the new ones apply; a new EK resets both counters of the key
    (`SecurityContext.set_key`). The store is in memory: a restarted fleet holds its derived
    keys again."""

    def __init__(self, manager: SecurityManager, server_system_title: bytes, record: MeterRecord) -> None:
        super().__init__(manager, server_system_title)
        self.record = record

    def _context(self, client: str):
        context = self.manager.context(client)
        if context is None:
            raise CosemAccessError(DataAccessResult.OBJECT_UNAVAILABLE, f"client {client} has no security context")
        return context

    def policy(self, client: str) -> int:
        return self._context(client).policy

    def suite(self, client: str) -> int:
        return self._context(client).suite

    def client_system_title(self, client: str) -> bytes | None:
        return self._context(client).client_system_title

    def certificates_data(self, client: str) -> Data:
        return Data.array([])  # a fleet meter has no certificates

    def key_transfer(self, client: str, parameters: Data, ctx: RequestContext) -> None:
        context = self._context(client)
        try:
            transfers = decode_key_transfer(parameters)
        except (DecodeError, SecurityError, ValueError, TypeError):
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED,
                                   "key_transfer takes array of {key_id, key_wrapped}") from None
        changes = []
        for transfer in transfers:
            kind = {KeyId.GLOBAL_UNICAST_ENCRYPTION: "ek", KeyId.AUTHENTICATION: "ak"}.get(transfer.key_id)
            if kind is None:  # the fleet's master key is derived; broadcast keys are not used
                raise CosemAccessError(DataAccessResult.OTHER_REASON, "only the EK and the AK are transferred")
            try:
                changes.append((kind, unwrap_key(self.manager.kek(context.suite), transfer.wrapped_key)))
            except SecurityError:
                raise CosemAccessError(DataAccessResult.OTHER_REASON,
                                       "the key does not unwrap with the master key") from None

        def apply() -> None:
            for kind, key in changes:
                context.set_key(kind, key)
            if any(kind == "ek" for kind, _ in changes):
                self.record.key_changed()

        ctx.association.after_response(apply)


def build_server(scenario: fleet.FleetScenario, i: int, clock: MeterClock, record: MeterRecord,
                 say: RateLimitedLog) -> FleetServer:
    """Meter i's DLMS server, as the scenario says it is."""
    ident = fleet.identity_of(scenario.seed, i)
    faults, capabilities = scenario.faults_of(i), scenario.capabilities_of(i)
    ek, ak = fleet.held_keys(scenario.seed, i, "refusing" in faults)
    store = MemoryStore()
    store.put(f"security.{MANAGEMENT}", {"suite": fleet.SUITE, "policy": fleet.POLICY, "client_system_title": None,
                                         "ek": ek.hex(), "ak": ak.hex(), "hls_secret": None})
    store.put("security.master", fleet.master_key(scenario.seed, i).hex())
    manager = SecurityManager(store, ident.system_title,
                              [ClientPolicy(MANAGEMENT, fleet.MANAGEMENT_SAP, fleet.SUITE, fleet.POLICY, fleet.MECHANISM)])
    manager.context(MANAGEMENT).rx = ObservedWindow(record)
    source = ProfileSource(scenario, i, clock)
    import_w, export_w, start = source.import_w, source.export_w, scenario.start
    logical_device_name = Data.octet_string(ident.logical_device_name)
    serial = Data.octet_string(ident.serial.encode("ascii"))
    bindings = {
        "identity.logical_device_name": Binding(lambda: logical_device_name),
        "identity.device_id_1": Binding(lambda: serial),
        "energy.a_plus": Binding(lambda: Data.double_long_unsigned(fleet.energy_wh(import_w, start, clock.now()))),
        "energy.a_minus": Binding(lambda: Data.double_long_unsigned(fleet.energy_wh(export_w, start, clock.now()))),
        "clock": clock,
        "load_profile_1": source,
        "load_profile_1.status": Binding(source.status),
        "events.standard": (events := EventLogSource(scenario, i, clock)),
        "events.standard.last_code": Binding(events.last_code),
        "security": FleetSecurity(manager, ident.system_title, record),
        "security_setups": {o.config["client"]: o.obis for o in fleet_model().objects if o.class_id == 64},
    }
    directory = ObjectDirectory(fleet_model(), bindings)
    replacement = (ProfileWithoutSelection if "no-selective" in capabilities
                   else ProfileWithoutRange if "no-range" in capabilities else None)
    if replacement is not None:
        # the capability is the meter's: its load profile and its event log select alike
        for ln in (LOAD_PROFILE_1, STANDARD_EVENT_LOG):
            definition, _ = directory.by_ln[ln]
            directory.by_ln[ln] = (definition, replacement(definition.obis, definition.name, definition.config,
                                                           directory.bindings))

    def on_event(name: str, fields: dict) -> None:
        if name == "association_opened":
            record.opened()
        elif name == "association_closed":
            record.closed()

    server = FleetServer(directory, system_title=ident.system_title, clock_bytes=clock.cosem_now, on_event=on_event,
                         security=manager, say=say)
    server.record = record
    return server

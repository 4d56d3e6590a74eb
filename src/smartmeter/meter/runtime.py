"""The running meter: wires the legally relevant part, the clock, the object model and the
DLMS server together, and drives registration from the (simulated) measurement input."""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from smartmeter import __version__
from smartmeter.cosem.classes.base import Binding, CosemAccessError, expect
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.results import DataAccessResult
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.dlms.server import DlmsServer
from smartmeter.legal import interface as legal
from smartmeter.legal.interface import DEMAND_PERIOD
from smartmeter.meter.authority import hand_over_certification_secret
from smartmeter.meter.clock import DEFAULT_TIME_ZONE, ClockSetRefused, MeterClock
from smartmeter.meter.identity import MeterIdentity
from smartmeter.meter.simulation import HouseholdLoad
from smartmeter.meter.provisioning import provision_demo
from smartmeter.meter.security import MeterSecurity
from smartmeter.meter.store import MeterStore
from smartmeter.meter.wz_guard import WzGuard

log = logging.getLogger(__name__)

CAPTURE_PERIOD = 900
REGISTERS = ("a_plus", "a_minus", "r_plus", "r_minus")
NOT_SPECIFIED_DATE_TIME = bytes.fromhex("FFFFFFFFFFFFFFFFFF8000FF")
BACKFILL_DAYS = 30


@dataclass
class MeterConfig:
    data_dir: Path = Path("meter-data")
    serial: str = "1KFM0100000001"
    meter_type: int = 100
    comms_module_serial: str = "1KFM0200000001"
    profile: str = "ksmw"
    time_zone: str = DEFAULT_TIME_ZONE
    backfill_days: int = BACKFILL_DAYS
    # real time: the legal part measures continuously on its own; otherwise each tick measures
    # exactly the interval since the last one (simulations and tests on a fake clock)
    realtime: bool = False
    fault_injection: bool = False
    sensor: str = "synthetic"  # or "remote": a paired remote sensor over UDP (WELMEC 7.3 §4.1)
    sensor_port: int | None = None


class LoadProfileSource:
    """Load profile 1 rows, read through the protective interface, in COSEM form."""

    def __init__(self, legal_part, clock: MeterClock) -> None:
        self.legal = legal_part
        self.clock = clock

    def rows(self, from_time: int | None, to_time: int | None) -> list[tuple]:
        cosem = self.clock.cosem
        return [
            (cosem(r.capture_time), r.status, r.a_plus, r.a_minus, r.r_plus, r.r_minus)
            for r in self.legal.execute(legal.ReadLoadProfile(from_time, to_time))
        ]

    def entries_in_use(self) -> int:
        return self.legal.execute(legal.CountLoadProfileEntries())

    def utc_from_cosem(self, value) -> int:
        return self.clock.utc_from_cosem(value)


class DemandSource:
    """Demand of one register through the protective interface (IC 5 binding)."""

    period = DEMAND_PERIOD
    number_of_periods = 1

    def __init__(self, legal_part, clock: MeterClock, register: str) -> None:
        self.legal, self.clock, self.register = legal_part, clock, register

    def value(self):
        return self.legal.execute(legal.ReadDemand(self.register))

    def cosem_time(self, utc: int | None) -> bytes:
        return self.clock.cosem(utc) if utc is not None else NOT_SPECIFIED_DATE_TIME


class MaximumDemandSource(DemandSource):
    """Maximum demand of one register (IC 4 binding), resettable."""

    def value(self):
        maximum = self.legal.execute(legal.ReadMaximumDemand(self.register))
        return maximum.value, maximum.capture_time

    def cumulative(self) -> Data:
        return Data.double_long_unsigned(self.legal.execute(legal.ReadMaximumDemand(self.register)).cumulative)

    def reset(self) -> None:
        self.legal.execute(legal.ResetMaximumDemand(int(self.clock.now()), self.register))


class CertificationLogSource:
    """The certification-protected event log (0-0:99.98.98.255) as profile rows: time, event id,
    client system title, active legally relevant firmware identifier (companion §5.17)."""

    def __init__(self, legal_part, clock: MeterClock) -> None:
        self.legal, self.clock = legal_part, clock

    @staticmethod
    def _octets(value) -> bytes:
        if isinstance(value, dict) and "hex" in value:
            return bytes.fromhex(value["hex"])
        return str(value or "").encode()

    def rows(self, from_time: int | None, to_time: int | None) -> list[tuple]:
        out = []
        for record in self.legal.execute(legal.ReadCertificationLog(from_time, to_time)):
            fields = json.loads(record.fields_json)
            out.append((self.clock.cosem(record.time_utc), record.event_id,
                        self._octets(fields.get("client_system_title")), self._octets(fields.get("active_firmware_id"))))
        return out

    def entries_in_use(self) -> int:
        return len(self.legal.execute(legal.ReadCertificationLog()))

    def utc_from_cosem(self, value) -> int:
        return self.clock.utc_from_cosem(value)


class Meter:
    def __init__(self, config: MeterConfig, clock: MeterClock | None = None) -> None:
        self.config = config
        self.identity = MeterIdentity(config.serial, config.meter_type, config.comms_module_serial)
        self.clock = clock or MeterClock(config.time_zone)
        # the legally relevant part runs in its own process; only declared commands reach it
        self.legal = legal.start_legal_process(config.data_dir, {
            "phases": 1 if config.meter_type == 100 else 3, "realtime": config.realtime,
            "fault_injection": config.fault_injection, "application_version": __version__,
            "sensor": config.sensor, "sensor_port": config.sensor_port,
            "meter_id": self.identity.system_title.hex()})
        # the legal part keeps the time base; this side's clock follows it and asks it for changes
        self.clock.offset = self.legal.execute(legal.ReadTimeBase())
        self.clock.time_base = self._request_time_change
        self.clock.listeners.append(self._on_time_change)
        self.load = HouseholdLoad(config.serial)
        self.model = ObjectModel.load(config.profile)
        self.store = MeterStore(config.data_dir)
        self.wz_guard = WzGuard(self.store)
        self.security = MeterSecurity(self.store, self.model, self.identity.system_title, on_event=self.on_event)
        if provision_demo(self.security, config.data_dir):
            log.info("demo credentials for every client written to %s", config.data_dir / "credentials")
        hand_over_certification_secret(self.security, self.legal)
        self.software = self.legal.execute(legal.ReadSoftwareIdentity())  # fixed while running
        self.directory = self.model.instantiate(self._bindings())
        self.server = DlmsServer(self.directory, system_title=self.identity.system_title,
                                 clock_bytes=self.clock.cosem_now, on_event=self.on_event,
                                 security=self.security.manager, keys=self.security)
        self._last_tick = self.clock.now()
        if self.legal.execute(legal.IsFreshMeter()) and config.backfill_days:
            self.backfill(config.backfill_days)
        self.legal.execute(legal.StartDemandPeriod(int(self._last_tick)))

    def _bindings(self) -> dict:
        energy = lambda name: Binding(lambda: Data.double_long_unsigned(getattr(self.legal.execute(legal.ReadEnergyRegisters()), name)))  # noqa: E731
        ident = self.identity
        return {
            "identity.logical_device_name": Binding(lambda: Data.octet_string(ident.logical_device_name)),
            "identity.device_id_1": Binding(lambda: Data.octet_string(ident.serial.encode("ascii"))),
            "identity.device_id_2": Binding(lambda: Data.octet_string(ident.comms_module_serial.encode("ascii"))),
            "energy.a_plus": energy("a_plus"),
            "energy.a_minus": energy("a_minus"),
            "energy.r_plus": energy("r_plus"),
            "energy.r_minus": energy("r_minus"),
            "clock": self.clock,
            "load_profile_1": LoadProfileSource(self.legal, self.clock),
            "load_profile_1.status": Binding(lambda: Data.unsigned(0)),
            "security": self.security,
            "settings": self.store,
            "security_setups": {o.config["client"]: o.obis for o in self.model.objects
                                if o.class_id == 64 and o.config.get("client") != "current"},
            "wz.countdown": Binding(lambda: Data.long_unsigned(self.wz_guard.remaining()),
                                    lambda v: self.wz_guard.set_countdown(expect(v, DataType.LONG_UNSIGNED))),
            "wz.lockout": Binding(self._wz_lockout, self._set_wz_lockout),
            # the identifier says DEVELOPMENT ("-DEV") when the release manifest is signed by a development key
            "legal.firmware_identifier": Binding(lambda: Data.octet_string(self.software.legal_identifier.encode())),
            "platform.firmware_identifier": Binding(lambda: Data.octet_string(self.software.platform_identifier.encode())),
            "platform.firmware_signature": Binding(
                lambda: Data.octet_string(bytes.fromhex(self.software.platform_digest))),
            "legal.firmware_signature": Binding(lambda: Data.octet_string(bytes.fromhex(self.software.legal_digest))),
            "application.firmware_identifier": Binding(
                lambda: Data.octet_string(self.software.application_version.encode())),
            "application.firmware_signature": Binding(
                lambda: Data.octet_string(bytes.fromhex(self.software.application_digest))),
            "legal.parameter_record_number": Binding(
                lambda: Data.double_long_unsigned(self.legal.execute(legal.ReadParameterRecordNumber()))),
            "legal.fatal_errors": Binding(lambda: Data.double_long_unsigned(self.legal.execute(legal.ReadFatalErrors()))),
            "legal.certification_mode": Binding(self._certification_object, set_with_context=self._set_certification_object),
            "legal.certification_log": CertificationLogSource(self.legal, self.clock),
            **{f"demand.{r}": DemandSource(self.legal, self.clock, r) for r in REGISTERS},
            **{f"maximum_demand.{r}": MaximumDemandSource(self.legal, self.clock, r) for r in REGISTERS},
            **{f"cumulative_maximum_demand.{r}": Binding(MaximumDemandSource(self.legal, self.clock, r).cumulative)
               for r in REGISTERS},
        }

    def _wz_lockout(self) -> Data:
        attempts, period = self.wz_guard.lockout
        return Data.structure([Data.unsigned(attempts), Data.long_unsigned(period)])

    def _set_wz_lockout(self, value: Data) -> None:
        try:
            attempts, period = (expect(v, t) for v, t in zip(expect(value, DataType.STRUCTURE),
                                                             (DataType.UNSIGNED, DataType.LONG_UNSIGNED), strict=True))
        except ValueError:
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "structure {unsigned, long-unsigned}") from None
        self.wz_guard.set_lockout(attempts, period)

    def _certification_object(self) -> Data:
        status, energy, demand, led_source, led_rate = self.legal.execute(legal.ReadCertificationObject())
        return Data.structure([Data.boolean(status), Data.enum(energy), Data.enum(demand), Data.unsigned(led_source),
                               Data.long_unsigned(led_rate)])

    def _set_certification_object(self, value: Data, ctx) -> None:
        types = (DataType.BOOLEAN, DataType.ENUM, DataType.ENUM, DataType.UNSIGNED, DataType.LONG_UNSIGNED)
        try:
            items = [expect(v, t) for v, t in zip(expect(value, DataType.STRUCTURE), types, strict=True)]
        except ValueError:
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "structure {boolean, enum, enum, unsigned, long-unsigned}") from None
        association = ctx.association
        title = association.requester_system_title
        # certification authority (§5.16): the token the legal part itself handed out when it verified
        # the Certification client's HLS 6 exchange; the legal part decides, this side only relays it.
        # The optical port alone admits that client (the model), so the token is only ever won there.
        token = association.security.authority_token if association.security and association.interface == "wz" else ""
        try:
            self.legal.execute(legal.WriteCertificationObject(*items, int(self.clock.now()), title.hex(), token))
        except legal.CommandRefused as exc:
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, str(exc)) from None

    def _request_time_change(self, new_time: float, reference: float, method: str, requester: bytes):
        self.tick()  # what happened up to the old time is registered and captured on the old time base
        try:
            return self.legal.execute(legal.SetTime(float(new_time), float(reference), requester.hex(), method))
        except legal.CommandRefused as exc:
            raise ClockSetRefused(str(exc)) from None

    def _on_time_change(self, change) -> None:
        # An adjustment is not time passing: no energy is registered and no period is captured
        # for the hours skipped, and the next capture is at the next boundary of the new time.
        # A forward synchronisation (< 9 s) counts as time passing, so a boundary it crosses
        # is still captured; a backward one must not register energy twice.
        if change.kind == "adjusted" or change.new_time < change.old_time:
            self._last_tick = change.new_time
        log.info("clock %s from %s to %s", change.kind, self.clock.local(change.old_time).isoformat(),
                 self.clock.local(change.new_time).isoformat())

    def on_event(self, name: str, fields: dict) -> None:
        """Security-relevant happenings reported by the DLMS server."""
        log.info("event %s %s", name, fields)
        if fields.get("interface") == "wz":
            if name == "association_refused":
                self.wz_guard.association_failed()
            elif name == "association_opened":
                self.wz_guard.association_succeeded()

    def hdlc_setup(self):
        """The IEC HDLC setup object (IC 23) of the optical port."""
        return next(inst for o, inst in self.directory.by_ln.values() if o.class_id == 23)

    # -- registration ---------------------------------------------------------------------
    def backfill(self, days: int) -> None:
        """First start: a simulated history of `days` days so the profile has something to read."""
        end = int(self.clock.now() // CAPTURE_PERIOD * CAPTURE_PERIOD)
        start = end - days * 86400
        totals = [0.0, 0.0, 0.0, 0.0]
        rows = []
        for t in range(start + CAPTURE_PERIOD, end + 1, CAPTURE_PERIOD):
            for i, e in enumerate(self.load.energy(t - CAPTURE_PERIOD, t)):
                totals[i] += e
            rows.append(legal.ProfileRow(t, 0, *(int(v) for v in totals)))
        self.legal.execute(legal.BackfillDemoHistory(tuple(rows)))
        self._last_tick = float(end)
        log.info("back-filled %d load-profile entries (%d days)", len(rows), days)

    def tick(self) -> None:
        """Register the energy since the last tick, persist, capture at period boundaries."""
        now = self.clock.now()
        last = self._last_tick
        if now <= last:
            self._last_tick = now
            return
        t = last
        while t < now:
            boundary = (t // CAPTURE_PERIOD + 1) * CAPTURE_PERIOD
            step_end = min(now, boundary)
            if self.config.sensor == "remote":
                pass  # the paired sensor measures the real installation
            elif self.config.realtime:
                # the legal part measures on its own; it learns what the household draws now
                self.legal.execute(legal.SetSimulatedLoad(*self.load.power(now)))
            else:  # the household's load minute by minute, measured sample by sample
                s = t
                while s < step_end:
                    dt = min(60.0, step_end - s)
                    self.legal.execute(legal.RegisterSimulatedPower(*self.load.power(s), dt))
                    s += dt
            if step_end == boundary:
                dst = legal.STATUS_DAYLIGHT_SAVING if self.clock.local(boundary).dst() else 0
                try:
                    self.legal.execute(legal.EndMeasurementPeriod(int(boundary), dst))
                except legal.CommandRefused as exc:  # e.g. this side was held up past the period
                    log.warning("load profile capture at %s refused: %s", self.clock.local(boundary).isoformat(), exc)
            t = step_end
        self._last_tick = now
        if not self.config.realtime:
            self.legal.execute(legal.Persist())

    async def run_registration(self, period: float = 1.0) -> None:
        while True:
            self.tick()
            self.wz_guard.checkpoint()
            self.security.housekeeping()
            await asyncio.sleep(period)

    def close(self) -> None:
        self.tick()
        self.wz_guard.checkpoint()
        self.security.flush_counters()  # exact frame counters: a clean restart skips none
        self.legal.close()
        self.store.close()

"""The running meter: wires the legally relevant part, the clock, the object model and the
DLMS server together, and drives registration from the (simulated) measurement input."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from smartmeter import __version__
from smartmeter.cosem.classes.base import Binding, CosemAccessError, expect
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.results import DataAccessResult
from smartmeter.cosem.obis import Obis
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.dlms.apdu.acse import AcseServiceUserDiagnostic
from smartmeter.dlms.server import LOCAL_CLIENT, DlmsServer
from smartmeter.legal import interface as legal
from smartmeter.legal.interface import DEMAND_PERIOD
from smartmeter.meter.authority import hand_over_certification_secret
from smartmeter.meter.clock import DEFAULT_TIME_ZONE, ClockSetRefused, MeterClock
from smartmeter.meter.alarms import AlarmBitmap, AlarmBoard
from smartmeter.meter.billing import BillingProfile
from smartmeter.meter.calendar_program import CalendarProgram
from smartmeter.meter.events import EventContext, EventLogSource, EventRecorder, EventTable, NO_CLIENT, group_counter
from smartmeter.meter.identity import MeterIdentity
from smartmeter.meter import mbus_m2
from smartmeter.meter import disconnect
from smartmeter.meter.instantaneous import InstantaneousValues, physical as instantaneous_physical
from smartmeter.meter.schedule import Passage
from smartmeter.meter.scheduler import SchedulerEngine
from smartmeter.meter.simulation import HouseholdLoad
from smartmeter.meter.world import PHASES, PhysicalWorld, WorldChange
from smartmeter.meter.display import Display, indicators_from_objects
from smartmeter.meter.image_transfer import ActivationRefused, ImageTransfer, TransferStatus, Verification
from smartmeter.meter.provisioning import demo_firmware_key, provision_demo
from smartmeter.meter.push import NetworkAddresses, PushService
from smartmeter.meter.quality_monitor import PowerQualityMonitor
from smartmeter.meter.security import MeterSecurity
from smartmeter.meter.store import MeterStore
from smartmeter.meter.tariff import TariffActivationLog, TariffEngine
from smartmeter.meter.wz_guard import WzGuard
from smartmeter.ratelog import RateLimitedLog

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
    # the meter's time runs this many times faster than real time (a simulation, never a legal
    # meter); start_time: the simulated time at the first start of a fresh data directory
    speed: float = 1.0
    start_time: float | None = None
    # production: the firmware verification key (PEM public key) imported at the first start
    firmware_key: Path | None = None
    # the M-Bus ports: H1 consumer push (a serial device or "pty"), the M2 wired bus (a serial
    # device or HOST:PORT) and the M2 wireless receiver (HOST:PORT of UDP radio frames)
    h1_device: str | None = None
    mbus_wired: str | None = None
    mbus_wireless: str | None = None

    @property
    def measures_continuously(self) -> bool:
        """The legal part measures on its own in real time; otherwise each tick measures exactly
        the interval since the last one (a faster clock, or a test's clock)."""
        return self.realtime and self.speed == 1.0

    @property
    def phases(self) -> int:
        return 1 if self.meter_type == 100 else 3


# the fatal error register's bits (legal part) and the event each raises once (IDIS codes)
FATAL_EVENTS = {0x01: 12, 0x04: 14, 0x08: 16, 0x10: 15}
EVENT_FIRMWARE_ACTIVATED = 18  # G_EC_02 (the engine logs 17 and 51 of a verification)
EVENT_FIRMWARE_FAILED = 51
# root causes in the physical world: (cause, whether the world has it, event when it starts,
# event when it ends, alarm flag); the events and the alarm follow the world's state
WORLD_CAUSES = (
    ("meter_cover_open", lambda w: w.meter_cover_open, 44, 45, "meter_cover_open"),
    ("terminal_cover_open", lambda w: w.terminal_cover_open, 40, 41, "terminal_cover_open"),
    ("magnet", lambda w: w.magnet, 42, 43, "strong_dc_field"),
    ("battery_exhausted", lambda w: not w.battery_ok, 7, None, "replace_battery"),
)
SCRIPT_TABLE_CLASS = 9
BILLING_SCRIPT = Obis.parse("0-0:10.0.1.255").to_bytes()  # MDI reset / end of billing period, script 1
MONTHLY_BILLING_SCHEDULE = Obis.parse("0-0:15.0.0.255").to_bytes()
DISCONNECTOR = (70, Obis.parse("0-0:96.3.10.255").to_bytes())
RELAY = (70, Obis.parse("0-1:96.3.10.255").to_bytes())
# the switching programs whose switches run scripts (companion §5.8, §5.14): calendar, special days
PROGRAMS = {"disconnect calendar": ("0-0:13.0.1.255", "0-0:11.0.1.255"),
            "load management calendar": ("0-0:13.0.2.255", "0-0:11.0.2.255")}
LIMITERS = ((71, Obis.parse("0-0:17.0.0.255").to_bytes(), "+P"), (71, Obis.parse("0-0:17.0.1.255").to_bytes(), "-P"))
REGISTER_MONITOR_CLASS = 21
# failures in a row of one client before the event is raised, once per streak: authentication
# "n times" (IDIS); a decryption failure or a replay is logged at once
FAILURE_STREAK = {46: 3, 49: 1, 50: 1}
AUTHENTICATION_FAILURE = int(AcseServiceUserDiagnostic.AUTHENTICATION_FAILURE)
SECURITY_STREAK_EVENTS = {"association_refused": 46, "decipher_failed": 49, "signature_failed": 49,
                          "replay_refused": 50}
# the push script table (companion §10) and the scripts the runtime starts itself
PUSH_SCRIPTS = Obis.parse("0-0:10.0.108.255").to_bytes()
PUSH_ON_ALARM_SCRIPT, PUSH_ON_CONNECTIVITY_SCRIPT, PUSH_ON_POWER_DOWN_SCRIPT = 4, 5, 7
PUSH_ON_ALARM = Obis.parse("0-4:25.9.0.255")
PUSH_ON_INSTALLATION = Obis.parse("0-7:25.9.0.255")
COMMISSIONING_EVENT = 246  # §10.3: the On Installation push "sets the commissioning event" (manufacturer code)


class LoadProfileSource:
    """A load profile's rows (1: 15 min, 2: daily), read through the protective interface, in COSEM form."""

    READ = {1: (legal.ReadLoadProfile, legal.CountLoadProfileEntries, legal.LOAD_PROFILE_1),
            2: (legal.ReadDailyProfile, legal.CountDailyProfileEntries, legal.LOAD_PROFILE_2)}

    def __init__(self, legal_part, clock: MeterClock, profile: int = 1) -> None:
        self.legal = legal_part
        self.clock = clock
        self._read, self._count, self._name = self.READ[profile]

    def rows(self, from_time: int | None, to_time: int | None) -> list[tuple]:
        cosem = self.clock.cosem
        return [
            (cosem(r.capture_time), r.status, r.a_plus, r.a_minus, r.r_plus, r.r_minus)
            for r in self.legal.execute(self._read(from_time, to_time))
        ]

    def status(self) -> Data:
        """The profile status object: the status of the latest entry (0 before the first)."""
        latest = self.legal.execute(legal.ReadLatestProfileEntry(self._name))
        return Data.unsigned(0 if latest is None else latest.status)

    def entries_in_use(self) -> int:
        return self.legal.execute(self._count())

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
            "phases": config.phases, "realtime": config.realtime,
            "fault_injection": config.fault_injection, "application_version": __version__,
            "sensor": config.sensor, "sensor_port": config.sensor_port,
            "meter_id": self.identity.system_title.hex(), "meter_type": config.meter_type,
            # a clock of its own at this speed, unless a test drives the time through the commands
            "speed": config.speed if (config.realtime or config.speed != 1.0) else None,
            "start_time": config.start_time, "time_zone": config.time_zone})
        # the legal part keeps the time base; this side's clock follows it and asks it for changes
        self.clock.follow(self.legal.execute(legal.ReadClockState()))
        self.clock.time_base = self._request_time_change
        self.clock.listeners.append(self._on_time_change)
        self.load = HouseholdLoad(config.serial)
        self.model = ObjectModel.load(config.profile).for_phases(config.phases)
        self.store = MeterStore(config.data_dir)
        if self.store.get("phases") is None:  # what this data directory is: `meter run` keeps to it
            self.store.put("phases", config.phases)
        self.world = PhysicalWorld(self.store, config.phases)
        self._timed_engines: list = []  # the scheduler and the programs, once they exist (_meter_time)
        self._ticking = False
        # an event of a script a schedule or a calendar runs carries the instant it runs for
        self.events = EventRecorder(config.data_dir, EventTable.load(), lambda: self._meter_time())
        self.alarms = AlarmBoard(self.store, AlarmBitmap.load(), on_event=self._alarm_event,
                                 on_descriptor_change=self._descriptor_changed)
        self.events.on_alarm = self.alarms.raise_flag
        self._say = RateLimitedLog(log)
        self._failures: dict[tuple[int, int | None], int] = {}  # (event code, client SAP) -> failures in a row
        self.supply_listeners: list = []  # called with True/False when the supply returns/fails (the transports)
        self.wz_guard = WzGuard(self.store)
        self.security = MeterSecurity(self.store, self.model, self.identity.system_title, on_event=self.on_event)
        if provision_demo(self.security, config.data_dir):
            log.info("demo credentials for every client written to %s", config.data_dir / "credentials")
        hand_over_certification_secret(self.security, self.legal)
        self._import_firmware_key(config)
        self.restart_requested = False
        self.on_restart: Callable[[], None] | None = None  # set by whoever runs the meter (cli `meter run`)
        self.software = self.legal.execute(legal.ReadSoftwareIdentity())  # fixed while running
        self.billing = BillingProfile(self.legal, self.clock, self.store, now=self._meter_time)
        self.power_quality = PowerQualityMonitor(self.events, self.store, self.clock, config.phases)
        self._steady_key: tuple | None = None  # (load, voltages) of the values last read for a steady stretch
        self.network = NetworkAddresses()  # the LAN/WAN interface's addresses, once it serves (lan_wan_started)
        # the pushes (§10); its sender is the event loop's, set while the interfaces run (cli `meter run`)
        self.push = PushService(self.clock, self._meter_time, self._pushed)
        # the firmware upgrade (§7): blocks held beside the data, verified and installed by the legal part
        self.image_transfer = ImageTransfer(self.store, config.data_dir / Path(legal.HOLDING_FILE).parent,
                                            self._verify_image, self._activate_image, self._image_event,
                                            legal.MAX_FIRMWARE_IMAGE_SIZE)
        # the display (§5.15): it reads what it shows as the meter itself reads its objects
        self._associations_open = 0  # the "communication" symbol
        read = lambda class_id, ln, attribute: self.server.read_locally(class_id, ln, attribute)  # noqa: E731
        self.display = Display(read, self.store, self.clock.now,
                               indicators_from_objects(read, lambda: self._associations_open > 0),
                               powered=lambda: self.powered,
                               parameters=lambda: dict(self.legal.execute(legal.ReadParameters())))
        # the M2 multi-utility interface (§6): the submeter channels, kept with the events
        self.mbus = mbus_m2.MbusM2(self.events, self._meter_time, alarm=self.alarms.condition,
                                   raise_alarm=self.alarms.raise_flag)
        self.directory = self.model.instantiate(self._bindings())
        self.mbus.valve_states = self._mbus_valve_states
        self.server = DlmsServer(self.directory, system_title=self.identity.system_title,
                                 clock_bytes=self.clock.cosem_now, on_event=self.on_event,
                                 security=self.security.manager, keys=self.security)
        self.push.attach(self.server)
        self.scheduler = SchedulerEngine.for_directory(self.directory, self.store, self.clock.zone, self._run_script)
        found = ((name, CalendarProgram.for_directory(self.directory, *lns, self.store, self.clock.zone,
                                                      self._run_script)) for name, lns in PROGRAMS.items())
        self.programs = {name: program for name, program in found if program is not None}
        self._timed_engines = [self.scheduler, *self.programs.values(), self.mbus]
        self.tariff = TariffEngine(self.directory, self.store, self.clock.zone, self.legal, self.clock, self._run_script,
                                   lambda: self.clock.invalid)
        self.tariff.sync()
        self._output = self._supplied()
        self._last_tick = self.clock.now()
        self.legal.execute(legal.SetBackupBattery(self.world.state.battery_ok))
        self.powered = True
        if self.world.state.supply:
            self._powered_up(self.legal.execute(legal.PowerUp(self.clock.now())))
        else:  # stopped during a simulated outage: it goes on until `sim supply on`
            self.legal.execute(legal.PowerDown(self.clock.now()))
            self.powered = False
        if self.legal.execute(legal.IsFreshMeter()) and config.backfill_days:
            self.backfill(config.backfill_days)
        self._follow_world_causes()
        self._fatal_seen = self.store.get("fatal_errors_seen", 0)
        self._check_fatal()
        for register in (1, 2, 3):  # an alarm pending over a restart is announced again
            self._descriptor_changed(register, self.alarms.descriptor(register))
        self.legal.execute(legal.StartDemandPeriod(int(self._last_tick)))
        self._settle_activation()

    def _import_firmware_key(self, config: MeterConfig) -> None:
        """The key images must be signed with: production imports it (`--firmware-key`), once; a
        meter without one makes a demo key pair beside its demo credentials."""
        if self.legal.execute(legal.ReadFirmwareKey()) is not None:
            if config.firmware_key is not None:
                log.warning("a firmware key was imported at this meter's first start; --firmware-key is ignored")
            return
        if config.firmware_key is not None:
            pem = config.firmware_key.read_bytes()
        else:
            pem = demo_firmware_key(config.data_dir)
        self.legal.execute(legal.ImportFirmwareKey(pem.decode("ascii", "replace")))

    # -- firmware upgrade (companion §7) --------------------------------------------------------------
    @staticmethod
    def _requester(ctx) -> str:
        """The requesting client's system title (hex) as the certification log records it; ff..ff
        for what the meter's scheduler runs (the legal part then records the client who verified)."""
        title = getattr(getattr(ctx, "association", None), "requester_system_title", None)
        if getattr(ctx, "client_sap", None) == LOCAL_CLIENT.sap:  # a script: the legal part names who verified
            title = None
        return (title if isinstance(title, (bytes, bytearray)) and len(title) == 8 else b"\xff" * 8).hex()

    def _verify_image(self, identifier: bytes, size: int, ctx) -> Verification:
        result = self.legal.execute(legal.VerifyFirmwareImage(identifier.hex(), size, self._requester(ctx)))
        return Verification(result.ok, result.reason, result.identifier.encode("ascii", "replace"), result.size,
                            bytes.fromhex(result.signature_hex))

    def _activate_image(self, ctx) -> None:
        try:
            slot = self.legal.execute(legal.ActivateFirmware(self._requester(ctx)))
        except legal.CommandRefused as exc:
            raise ActivationRefused(str(exc)) from None
        log.warning("firmware installed in %s; the meter restarts on it", slot)
        self.request_restart()

    def _image_event(self, code: int, ctx) -> None:
        self.events.record(code, self._context(getattr(ctx, "association", None)))

    def confirm_software(self) -> None:
        """Called once the meter has served for a while (boot.CONFIRM_AFTER): software on probation
        after an activation stays, and its activation is concluded as successful."""
        from smartmeter.meter import boot

        boot.confirm(self.config.data_dir)  # first: a stop between the two only delays the event 18
        self.legal.execute(legal.ConfirmFirmwareActivation())
        self._settle_activation()

    def _settle_activation(self) -> None:
        """After a restart for an activation: did the new software come up? (The legal part decides:
        at its start when other software runs, at the confirmation when the new one has served;
        here the image transfer's status and the standard and security logs learn it.)"""
        outcome = self.legal.execute(legal.ReadFirmwareActivation())
        if outcome.outcome in ("activated", "failed") and outcome.sequence > self.store.get("firmware.reported", 0):
            ok = outcome.outcome == "activated"
            finished = self.image_transfer.activation_finished(ok, outcome.reason)
            if ok:
                self.events.record(EVENT_FIRMWARE_ACTIVATED)
                log.warning("firmware %s activated", outcome.identifier)
            else:
                if not finished:  # the transfer's state did not get to say so: the failure is logged here
                    self.events.record(EVENT_FIRMWARE_FAILED)
                log.warning("firmware %s not activated: %s", outcome.identifier, outcome.reason)
            self.store.put("firmware.reported", outcome.sequence)
        elif outcome.outcome != "pending" and self.image_transfer.status == TransferStatus.ACTIVATION_INITIATED \
                and not self.restart_requested:
            # stopped before the legal part took the activation: nothing was installed
            self.image_transfer.activation_finished(False, "the activation was interrupted before the installation")

    def request_restart(self) -> None:
        """Stop and start again (through the boot code): how activated software comes to run."""
        self.restart_requested = True
        if self.on_restart is not None:
            self.on_restart()

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
            **{f"energy.{name}.rate{rate}": self._rate_binding(name, rate) for name in REGISTERS for rate in legal.RATES},
            **InstantaneousValues(self.legal, self.clock).bindings(self.config.phases),
            "billing": self.billing,
            **self.power_quality.bindings(),
            "billing.counter": Binding(self.billing.counter),
            "tariff.active": Binding(lambda: self.tariff.active_mask()),
            "tariff.default_script": Binding(lambda: self.tariff.default_script_data(),
                                             lambda value: self.tariff.set_default_script(value)),
            "tariff.activation_log": TariffActivationLog(self.store, self.clock),
            "tariff.energy_activation": lambda mask, registers: self.tariff.on_energy_mask(mask, registers),
            "disconnect.changed": self._disconnector_changed,
            "relay.changed": lambda outcome: log.info("load management relay: %s", outcome.new_state.name.lower()),
            "clock": self.clock,
            "load_profile_1": LoadProfileSource(self.legal, self.clock),
            **{f"events.{name}": EventLogSource(self.events, name, self.clock) for name in self.events.table.logs},
            **{f"events.{name}.last_code": self._last_code_binding(name)
               for name, spec in self.events.table.logs.items() if spec.event_object},
            **{f"events.{group_counter(g).lower()}": self._group_counter_binding(g) for g in range(1, 11)},
            "events.power_failures": Binding(lambda: Data.long_unsigned(min(self.events.counter("power_failures"), 0xFFFF))),
            "events.long_power_failures": Binding(
                lambda: Data.long_unsigned(min(self.events.counter("long_power_failures"), 0xFFFF))),
            "events.last_long_power_failure_duration": Binding(
                lambda: Data.double_long_unsigned(self.events.counter("last_long_power_failure_duration"))),
            "events.long_power_failure_threshold": Binding(
                lambda: Data.long_unsigned(self.events.long_failure_threshold()), self._set_long_failure_threshold),
            "events.configuration.last_id_detail": Binding(self._last_id_detail),
            **self.alarms.bindings(),
            "scripts.run": self._run_script,
            **self.push.bindings(),
            **self.network.bindings(),
            "clock.time_shift_limit": Binding(lambda: Data.unsigned(9)),
            "clock.local_time": Binding(lambda: Data.octet_string(self.clock.cosem_now()[5:9])),
            "clock.local_date": Binding(lambda: Data.octet_string(self.clock.cosem_now()[:5])),
            "load_profile_1.status": Binding(LoadProfileSource(self.legal, self.clock, 1).status),
            "load_profile_2": LoadProfileSource(self.legal, self.clock, 2),
            "load_profile_2.status": Binding(LoadProfileSource(self.legal, self.clock, 2).status),
            "load_profile.control": Binding(self._capture_control, self._set_capture_control),
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
            "firmware.image_transfer": self.image_transfer,
            **self.display.bindings(),
            "legal.parameter_record_number": Binding(
                lambda: Data.double_long_unsigned(self.legal.execute(legal.ReadParameterRecordNumber()))),
            "legal.fatal_errors": Binding(lambda: Data.double_long_unsigned(self.legal.execute(legal.ReadFatalErrors()))),
            "legal.certification_mode": Binding(self._certification_object, set_with_context=self._set_certification_object),
            "legal.certification_log": CertificationLogSource(self.legal, self.clock),
            "legal.certification_event_id": Binding(self._certification_event_id),
            **{f"demand.{r}": DemandSource(self.legal, self.clock, r) for r in REGISTERS},
            **{f"maximum_demand.{r}": MaximumDemandSource(self.legal, self.clock, r) for r in REGISTERS},
            **{f"cumulative_maximum_demand.{r}": Binding(MaximumDemandSource(self.legal, self.clock, r).cumulative)
               for r in REGISTERS},
            **mbus_m2.bindings(self.mbus, self.clock),
            # an M-Bus disconnect control's transition is the submeter's valve command
            **{f"mbus.{n}.valve": (lambda outcome, n=n: self._mbus_valve(n, outcome)) for n in mbus_m2.CHANNELS},
        }

    def _mbus_valve(self, channel: int, outcome) -> None:
        """An M-Bus disconnect control's transition is the submeter's valve command."""
        try:
            self.mbus.valve(channel, outcome.new_state == disconnect.ControlState.CONNECTED)
        except mbus_m2.ChannelRefused as exc:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, str(exc)) from None

    def _mbus_valve_states(self) -> dict[int, bool]:
        """Whether each channel's disconnect control (0-x:24.4.0.255) stands connected, as stored:
        the engine sends at its start a valve command a kill -9 kept from going out."""
        states = {}
        for n in mbus_m2.CHANNELS:
            found = self.directory.find(70, Obis.parse(f"0-{n}:24.4.0.255").to_bytes())
            if found is not None:
                states[n] = found[1].state() == disconnect.ControlState.CONNECTED
        return states

    # -- disconnector and limiters (companion §5.8) ------------------------------------------------
    def _disconnector(self):
        found = self.directory.find(*DISCONNECTOR)
        return None if found is None else found[1]

    def _supplied(self) -> bool:
        """Whether the installation is connected: the disconnector's output (no disconnector: yes)."""
        disconnector = self._disconnector()
        return disconnector is None or disconnector.output()

    def _disconnector_changed(self, outcome) -> None:
        """A transition of the disconnector (stored by it): its event; the supply follows at once."""
        self.tick()  # what the installation drew until now, with the output as it was
        self._output = outcome.output
        self.events.record(disconnect.event_for(outcome.transition))
        log.info("disconnector %s (%s): output %s", outcome.new_state.name.lower(), outcome.transition.name,
                 "connected" if outcome.output else "open")

    def _check_limiters(self, now: float) -> None:
        """Each limiter sees its monitored power; an excursion held long enough runs its script."""
        values = None
        for class_id, ln, quantity in LIMITERS:
            found = self.directory.find(class_id, ln)
            if found is None:
                continue
            limiter = found[1]
            if values is None:
                values = self.legal.execute(legal.ReadInstantaneousValues())
            watts = 0 if values is None else int(instantaneous_physical(values, quantity, None))
            for happened in limiter.evaluate(now, watts):
                self.events.record(disconnect.limiter_event_for(happened))
                if happened in ("over", "under"):
                    script_ln, selector = limiter.action(happened)
                    if selector:
                        self._run_script(script_ln, selector)

    def _meter_time(self) -> float:
        """The meter time of what runs now: a schedule's or a calendar switch's instant while it
        runs, else the clock."""
        running = (engine.running_instant for engine in self._timed_engines)
        return next((t for t in running if t is not None), None) or self.clock.now()

    def _rate_binding(self, name: str, rate: int) -> Binding:
        return Binding(lambda: Data.double_long_unsigned(self.legal.execute(legal.ReadRateRegisters()).value(name, rate)))

    def _last_id_detail(self) -> Data:
        entries = self.events.entries("configuration")
        detail = entries[-1].detail if entries else bytes(10)
        return Data.structure([Data.unsigned(detail[0]), Data.long_unsigned(int.from_bytes(detail[1:3], "big")),
                               Data.octet_string(detail[3:9]), Data.integer(int.from_bytes(detail[9:10], "big", signed=True))])

    def _run_script(self, script_ln: bytes, selector: int) -> None:
        """A monitor or a schedule starts a script: through the server's own path, with the meter's authority."""
        if self.directory.find(SCRIPT_TABLE_CLASS, script_ln) is None:
            # e.g. the push script table an alarm monitor names, before the meter has a push function
            self._say("runtime.no_script_table", "script table %s does not exist: script %s not run",
                      Obis.from_bytes(script_ln), selector, level=logging.INFO)
            return
        schedule = self.scheduler.running
        if schedule is None:
            result = self.server.run_script(script_ln, selector)
        else:  # the end of a billing period knows which schedule triggered it (§5.6: the reset lock)
            with self.billing.triggered_by("scheduled" if schedule == MONTHLY_BILLING_SCHEDULE else "ad-hoc"):
                result = self.server.run_script(script_ln, selector)
        if result != DataAccessResult.SUCCESS:
            raise RuntimeError(f"script {selector} of {script_ln.hex()} answered {result.name.lower()}")

    def _push(self, selector: int) -> None:
        """A push the runtime itself starts (script `selector` of the push script table); a push
        that fails is logged and never stops what started it."""
        try:
            self._run_script(PUSH_SCRIPTS, selector)
        except Exception:  # noqa: BLE001
            self._say("runtime.push", "push script %s failed:\n%s", selector, traceback.format_exc())

    def _pushed(self, setup, ctx, at: float, outcome: str) -> None:
        """After a push ran: an alarm push the sender took restarts the alarm repetition's 10
        minutes; one built for nothing (refused, failed) is built again a minute later, not at
        every tick (each build spends an invocation counter); one that found no destination or no
        sender goes out at the first tick that has them. The On Installation push records the
        commissioning event, with who invoked it."""
        if setup.logical_name == PUSH_ON_ALARM:
            if outcome == "submitted":
                self.alarms.alarm_pushed(at)
            elif outcome in ("refused", "failed"):
                self.alarms.alarm_push_refused(at)
        elif setup.logical_name == PUSH_ON_INSTALLATION:
            self.events.record(COMMISSIONING_EVENT, self._context(ctx.association))

    def lan_wan_started(self, host: str) -> None:
        """The LAN/WAN interface started serving on `host`: a new network connection (§10.4).
        The IP setup objects learn its addresses, and the On Connectivity push goes out."""
        self.network.serve_on(host)
        self._push(PUSH_ON_CONNECTIVITY_SCRIPT)

    def _certification_event_id(self) -> Data:
        """The id of the latest entry of the certification protected log (0 before the first)."""
        records = self.legal.execute(legal.ReadCertificationLog())
        return Data.long_unsigned(records[-1].event_id if records else 0)

    def _capture_control(self) -> Data:
        """Load profile control status (0-0:96.5.3.255): bit 0 LP1 capturing, bit 1 LP2 capturing."""
        lp1, lp2 = self.legal.execute(legal.ReadCaptureEnabled())
        return Data.unsigned(int(lp1) | int(lp2) << 1)

    def _set_capture_control(self, value: Data) -> None:
        """Written by the load profile control scripts (§5.7.2): the high nibble says which profiles
        change (bit 4 LP1, bit 5 LP2), the low nibble their new state (bit 0 LP1, bit 1 LP2)."""
        raw = expect(value, DataType.UNSIGNED)
        if not raw & 0x30 or raw & 0xCC:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "bits 4/5 name the profiles that change, 0/1 their state")
        before = self.legal.execute(legal.ReadCaptureEnabled())
        for index, profile in ((0, "lp1"), (1, "lp2")):
            if raw & (0x10 << index):
                enabled = bool(raw & (1 << index))
                if enabled != before[index]:
                    self.legal.execute(legal.SetCaptureEnabled(profile, enabled, int(self.clock.now())))
                    # opt-in/opt-out changes in the standard event log (manufacturer codes 230..233)
                    self.events.record(230 + 2 * index + (0 if enabled else 1))

    def _descriptor_changed(self, register: int, value: int) -> None:
        """An alarm descriptor changed: its alarm monitor (IC 21) runs the action of the crossing."""
        found = self.directory.find(REGISTER_MONITOR_CLASS, Obis.parse(f"0-0:16.1.{register - 1}.255").to_bytes())
        if found is not None:
            try:
                found[1].evaluate(value)
            except Exception:  # noqa: BLE001 - a failing action must not lose the alarm (it is stored)
                self._say("runtime.alarm_monitor", "alarm monitor %s: its action failed:\n%s", register,
                          traceback.format_exc())

    def _last_code_binding(self, log_name: str) -> Binding:
        return Binding(lambda: Data.unsigned(self.events.last_code(log_name)))

    def _group_counter_binding(self, group: int) -> Binding:
        name = group_counter(group)

        def reset(value: Data) -> None:
            # companion §5.12: Management may reset the counters (to 0; nothing else is a reset)
            if expect(value, DataType.DOUBLE_LONG_UNSIGNED) != 0:
                raise CosemAccessError(DataAccessResult.OTHER_REASON, "a group event counter is only reset, to 0")
            self.events.set_counter(name, 0)

        return Binding(lambda: Data.double_long_unsigned(self.events.counter(name)), reset)

    def _set_long_failure_threshold(self, value: Data) -> None:
        seconds = expect(value, DataType.LONG_UNSIGNED)
        if seconds == 0:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "the threshold is at least 1 s")
        self.events.set_counter("long_power_failure_threshold", seconds)

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
            change = self.legal.execute(legal.SetTime(float(new_time), float(reference), requester.hex(), method))
        except legal.CommandRefused as exc:
            raise ClockSetRefused(str(exc)) from None
        if self.clock.invalid:  # a set clock is valid again, even when it did not move
            self.clock.invalid = False
            self.events.end_cause("clock_invalid")
            self.alarms.condition("clock_invalid", False)
        return change

    def _on_time_change(self, change, origin=None) -> None:
        # An adjustment is not time passing: no energy is registered and no period is captured
        # for the hours skipped, and the next capture is at the next boundary of the new time.
        # A forward synchronisation (< 9 s) counts as time passing, so a boundary it crosses
        # is still captured; a backward one must not register energy twice.
        if change.kind == "adjusted" or change.new_time < change.old_time:
            self._last_tick = change.new_time
        if change.kind == "adjusted":  # companion §5.4: from the 9 s limit on, events 4 and 5
            self.power_quality.clock_changed(change.old_time, change.new_time)
            context = self._context(origin)
            self.events.record(4, context, at=change.old_time)
            self.events.record(5, context, at=change.new_time)
        # a schedule's instant the clock jumped over runs once, a backward jump runs nothing (§5.4.1)
        for engine in self._timed_engines:
            engine.advance(change.old_time, change.new_time, Passage.SHIFTED)
        self.mbus.clock_synchronised()  # §6.6: the submeters follow the meter's clock
        self.tariff.at(change.new_time)
        log.info("clock %s from %s to %s", change.kind, self.clock.local(change.old_time).isoformat(),
                 self.clock.local(change.new_time).isoformat())

    @staticmethod
    def _context(association) -> EventContext:
        """Who caused an event, as the security log records it: SAPs and system title of the association."""
        if association is None or getattr(association, "client", None) is None:
            return NO_CLIENT
        return EventContext(association.client_sap, association.server_sap, association.requester_system_title)

    # -- events -----------------------------------------------------------------------------------
    def _alarm_event(self, code: int, who: dict | None = None) -> None:
        """An event the alarm engine raises (10, 11: a register cleared by a client)."""
        who = who or {}
        self.events.record(code, EventContext(who.get("client_sap"), who.get("server_sap"), who.get("system_title")))

    def _check_fatal(self) -> None:
        """A new bit in the legal part's fatal error register: its event, once, and the alarm."""
        bits = self.legal.execute(legal.ReadFatalErrors())
        new = bits & ~self._fatal_seen
        if not new:
            return
        for bit, code in FATAL_EVENTS.items():
            if new & bit:
                self.events.record(code)
        self.alarms.fatal(bits)
        self._fatal_seen = bits
        self.store.put("fatal_errors_seen", bits)

    def _powered_up(self, report) -> None:
        """The supply is back (or the meter started): the events of the outage, the lost clock,
        the schedules that fell due while off."""
        self.clock.follow(self.legal.execute(legal.ReadClockState()))
        now = self.clock.now()
        self._last_tick = now
        self._apply_voltages()
        if report is not None and report.down_time is not None:
            self.events.record_outage(report.down_time, report.up_time, report.time_lost)
            self.power_quality.power_up(report.down_time, report.up_time)
            if report.time_lost:
                self.alarms.condition("clock_invalid", True)
            log.info("power up at %s after a power %s at %s", self.clock.local(report.up_time).isoformat(),
                     "down" if report.clean else "failure", self.clock.local(report.down_time).isoformat())
        self.tariff.at(now)
        for engine in self._timed_engines:
            engine.resume(now)

    def _follow_world_causes(self) -> None:
        """Events and alarms follow the world's root causes: a cause that started is logged once,
        one that ended is closed. Also at start: a kill between storing a world input and
        recording its event gets the event now, late rather than never."""
        for cause, present, start_code, end_code, flag in WORLD_CAUSES:
            active = present(self.world.state)
            if active and not self.events.cause_active(cause):
                self.events.record(start_code, cause=cause)
            elif not active and self.events.end_cause(cause) and end_code is not None:
                self.events.record(end_code)
            self.alarms.condition(flag, active)

    def power_down(self) -> None:
        """The supply fails: registration and communication stop until power_up."""
        if not self.powered:
            return
        self.tick()
        self._push(PUSH_ON_POWER_DOWN_SCRIPT)  # while the interfaces and the metrology still run
        self.legal.execute(legal.PowerDown(self.clock.now()))
        self.powered = False
        for listener in self.supply_listeners:
            listener(False)

    def power_up(self) -> None:
        if self.powered:
            return
        self.powered = True
        self._powered_up(self.legal.execute(legal.PowerUp(self.clock.now())))
        for listener in self.supply_listeners:
            listener(True)

    # -- the control channel (smartmeter sim) -------------------------------------------------------
    def control(self, request: dict) -> dict:
        """One request of the control channel: an input of the physical world, the status, or what
        the display shows."""
        if request.get("status") is True and "input" not in request:
            return {"ok": True, "status": self.status()}
        if request.get("display") is True and "input" not in request:
            return {"ok": True, "display": dataclasses.asdict(self.display.screen(self.clock.now()))}
        name = request.get("input")
        if not isinstance(name, str):
            return {"ok": False, "error": 'a request names an "input" or asks for the "status"'}
        # what happened up to this moment happened in the world as it was (on a fast clock a tick
        # spans many seconds: a new load must not reach back into them)
        self.tick()
        change = self.world.change(name, {k: v for k, v in request.items() if k != "input"})
        self.on_world(change)
        return {"ok": True, "status": self.status()}

    def status(self) -> dict:
        now = self.clock.now()
        out = {"powered": self.powered, "world": self.world.status(),
               "clock": {"local": self.clock.local(now).isoformat(timespec="seconds"), "utc": int(now),
                         "speed": self.config.speed, "invalid": self.clock.invalid},
               "registers": {"error register": f"0x{self.alarms.error_register:08X}",
                             "alarm register 1": f"0x{self.alarms.alarm_register(1):08X}",
                             "power failures": self.events.counter("power_failures")}}
        if self.powered:
            snap = self.legal.execute(legal.ReadEnergyRegisters())
            out["energy"] = {"+A Wh": snap.a_plus, "-A Wh": snap.a_minus, "+R varh": snap.r_plus, "-R varh": snap.r_minus}
        out["tariff"] = self.tariff.active_mask().value.decode("latin-1")
        for key, obj in (("disconnector", DISCONNECTOR), ("load management relay", RELAY)):
            found = self.directory.find(*obj)
            if found is not None:
                out[key] = {"state": found[1].state().name.lower().replace("_", " "), "mode": found[1].mode(),
                            "output": "connected" if found[1].output() else "open"}
        for name, program in self.programs.items():
            upcoming = program.next_switch(now)
            out[name] = {"next switch": None if upcoming is None else {
                "at": self.clock.local(upcoming[0]).isoformat(timespec="seconds"), "script": upcoming[2]}}
        monthly = self.scheduler.describe_one(MONTHLY_BILLING_SCHEDULE)
        lock = self.billing.lock_until()
        out["billing"] = {
            "counter": self.legal.execute(legal.ReadBillingCounter()),
            # §5.6: whether the monthly billing is active must be visible (the display shows it too)
            "monthly schedule": "active" if monthly and monthly["execution_times"] else "inactive",
            "reset lock until": self.clock.local(lock).isoformat(timespec="seconds") if lock > now else None}
        return out

    def on_world(self, change: WorldChange) -> None:
        """A change of the physical world (`smartmeter sim`): what the meter's hardware would sense."""
        after = change.after
        if change.input == "supply":
            (self.power_up if after.supply else self.power_down)()
        elif change.input == "battery":
            self.legal.execute(legal.SetBackupBattery(after.battery_ok))
            self._follow_world_causes()
        elif change.input in ("cover", "terminal-cover", "magnet"):
            self._follow_world_causes()
        elif change.input == "button":
            log.info("button %s pressed%s", change.detail["button"], " long" if change.detail["long"] else "")
            if change.detail["button"] == "R" and self.powered:  # the demand reset button (§5.6)
                with self.billing.triggered_by("button"):
                    self.server.run_script(BILLING_SCRIPT, 1)
            elif change.detail["button"] == "A" and self.powered:
                if not (change.detail["long"] and self._customer_button()):
                    self.display.press("A", change.detail["long"], self.clock.now())
        elif change.input == "voltage":
            self._apply_voltages()
        # the load: read by the registration at every tick (self._installation_power)

    def _customer_button(self) -> bool:
        """A long press of button A is the customer's disconnector button (§5.8) when the
        disconnector can take it: ready for reconnection -> connected (e); connected -> ready (f)
        where the control mode allows manual disconnection. -> whether it took the press (else
        the press is the display's: its menu)."""
        disconnector = self._disconnector()
        if disconnector is None:
            return False
        state, mode = disconnector.state(), disconnector.mode()
        if state == disconnect.ControlState.READY and disconnect.allowed(mode, "e"):
            disconnector.trigger(disconnect.MANUAL_RECONNECT)
            return True
        if state == disconnect.ControlState.CONNECTED and disconnect.allowed(mode, "f"):
            disconnector.trigger(disconnect.MANUAL_DISCONNECT)
            return True
        return False

    def _apply_voltages(self) -> None:
        # a powered-down meter measures nothing; the voltages apply again at power-up
        if self.config.sensor == "synthetic" and self.powered:
            self.legal.execute(legal.SetSimulatedVoltage(tuple(self.world.state.voltages[:self.config.phases])))

    def on_event(self, name: str, fields: dict) -> None:
        """Security-relevant happenings reported by the DLMS server and the meter's guards."""
        log.info("event %s %s", name, fields)
        interface = fields.get("interface")
        if interface == "wz":
            if name == "association_refused":
                self.wz_guard.association_failed()
            elif name == "association_opened":
                self.wz_guard.association_succeeded()
        sap = fields.get("client_sap")
        if sap is None and fields.get("client") in self.model.clients:
            sap = self.model.clients[fields["client"]].sap
        context = EventContext(sap, fields.get("server_sap"), fields.get("system_title"))
        if name in ("association_opened", "association_closed"):
            self._associations_open = max(0, self._associations_open + (1 if name == "association_opened" else -1))
        if name == "association_opened":
            self.events.record(28 if interface == "wz" else 26, context)
            self._streak_ended(fields.get("client_sap"))
            self.events.end_cause(f"policy/{fields.get('client_sap')}")
        elif name == "association_closed":
            self.events.record(29 if interface == "wz" else 27, context)
        elif name in SECURITY_STREAK_EVENTS:
            if name == "association_refused" and fields.get("diagnostic") not in (AUTHENTICATION_FAILURE, None):
                self.events.record(240, context)  # refused for another reason than credentials
                return
            self._failed(SECURITY_STREAK_EVENTS[name], context)
        elif name == "policy_violation":
            self.events.record(241, context, cause=f"policy/{fields.get('client_sap')}")
        elif name == "configuration_changed":
            self.events.record_configuration(fields["service_id"], fields["class_id"], fields["logical_name"],
                                             fields["index"], context)
        elif name == "keys_changed":  # the global encryption, authentication or master key
            self.events.record(48, context)
            if "ek" in fields.get("keys", ()):  # a new encryption key starts its sending counter at 0
                self.events.end_cause(f"frame_counter_exhausted/{fields.get('client')}")
        elif name == "frame_counter_exhausted":  # once per key: a restart or the next push does not repeat it
            self.events.record(247, context, cause=f"frame_counter_exhausted/{fields.get('client')}")
        elif name in ("security_policy_changed", "certificate_imported", "key_pair_generated", "hls_secret_changed",
                      "key_pair_dismissed"):
            self.events.record(245, context)
        elif name == "wz_locked_out":
            self.events.record(242)
        elif name == "wz_disabled":
            self.events.record(243)
        elif name == "wz_enabled":
            self.events.record(244)

    def _failed(self, code: int, context: EventContext) -> None:
        """One more failure of a client: the event once its streak reaches FAILURE_STREAK, then
        not again until the client succeeds (an event is not re-triggered while its cause persists)."""
        key = (code, context.client_sap)
        self._failures[key] = self._failures.get(key, 0) + 1
        if self._failures[key] >= FAILURE_STREAK[code]:
            self.events.record(code, context, cause=f"streak/{code}/{context.client_sap}")

    def _streak_ended(self, client_sap, codes=(46, 49, 50)) -> None:
        for code in codes:
            self._failures.pop((code, client_sap), None)
            self.events.end_cause(f"streak/{code}/{client_sap}")

    def hdlc_setup(self):
        """The IEC HDLC setup object (IC 23) of the optical port."""
        return next(inst for o, inst in self.directory.by_ln.values() if o.class_id == 23)

    # -- registration ---------------------------------------------------------------------
    def backfill(self, days: int) -> None:
        """First start: a simulated history of `days` days so the profile has something to read."""
        end = int(self.clock.now() // CAPTURE_PERIOD * CAPTURE_PERIOD)
        start = end - days * 86400
        totals = [0.0, 0.0, 0.0, 0.0]
        split = {(i, r): 0 for i in range(4) for r in legal.RATES}  # whole Wh per quantity and rate
        rows = []
        for t in range(start + CAPTURE_PERIOD, end + 1, CAPTURE_PERIOD):
            before = [int(v) for v in totals]
            for i, e in enumerate(self.load.energy(t - CAPTURE_PERIOD, t)):
                totals[i] += e
            rates = self.tariff.rates_at(t - CAPTURE_PERIOD)
            for i, v in enumerate(totals):
                if split is not None and rates is not None and rates[i] in legal.RATES:
                    split[(i, rates[i])] += int(v) - before[i]  # the whole Wh of the period, in its rate
                elif int(v) != before[i]:
                    split = None  # a period without a rate: the history goes into rate 0
            rows.append(legal.ProfileRow(t, 0, *(int(v) for v in totals)))
        by_rate = () if split is None else tuple(split[(i, r)] for i in range(4) for r in legal.RATES)
        self.legal.execute(legal.BackfillDemoHistory(tuple(rows), by_rate))
        self._last_tick = float(end)
        log.info("back-filled %d load-profile entries (%d days)", len(rows), days)

    def _installation_power(self, t: float) -> tuple[float, float, int]:
        """What the installation draws at meter time t: (W, var, phase; 0 = spread over every
        phase): the simulated household, or the load a user set with `smartmeter sim load`."""
        if not self._output:  # the disconnector is open: the installation draws nothing
            return 0.0, 0.0, 0
        load = self.world.state.load
        if load is None:
            return (*self.load.power(t), 0)
        return load.power_w, load.reactive_var, 0 if load.phase is None else PHASES.index(load.phase) + 1

    def _steady_values(self, load: tuple) -> legal.InstantaneousValues | None:
        """The values the metrology measured over a steady stretch at `load`: the same load at the
        same voltages gives the same signal, so they are read once, not once a stretch."""
        key = (load, self.world.state.voltages)
        if key != self._steady_key:
            self._steady_key, self._steady = key, self.legal.execute(legal.ReadInstantaneousValues())
        return self._steady

    def tick(self) -> None:
        """Register the energy since the last tick, persist, capture at period boundaries, run
        what the schedules say is due."""
        if not self.powered or self._ticking:
            return  # a script run inside a tick (a disconnection) finds the energy registered up to its instant
        self._ticking = True
        try:
            self._tick()
            self.image_transfer.tick()  # blocks received in the last second, stored
        finally:
            self._ticking = False

    def _tick(self) -> None:
        now = self.clock.now()
        last = self._last_tick
        if now <= last:
            self._last_tick = now
            return
        t = last
        while t < now:
            boundary = (t // CAPTURE_PERIOD + 1) * CAPTURE_PERIOD
            # a tariff change or a schedule's instant ends a step too: what was registered before a
            # tariff change stays in the old rate, and a billing at 00:00 holds what 00:00 held
            change = self.tariff.next_change(t, min(now, boundary))
            step_end = min(now, boundary) if change is None else change
            for engine in self._timed_engines:
                step_end = min(step_end, engine.next_instant(t, step_end) or step_end)
            if self.config.sensor == "remote" or self.config.measures_continuously:
                if self.config.sensor != "remote":
                    # the legal part measures on its own; it learns what the household draws now
                    self.legal.execute(legal.SetSimulatedLoad(*self._installation_power(now)))
                # the latest frame stands for the stretch (a tick a second: the power quality sampling)
                self.power_quality.observe(t, step_end, self.legal.execute(legal.ReadInstantaneousValues()))
            else:  # the household's load minute by minute (a load set by `sim load`: all at once)
                minute = 60.0 if self.world.state.load is None else step_end - t
                s = t
                while s < step_end:
                    dt = min(minute, step_end - s)
                    active, reactive, phase = self._installation_power(s)
                    self.legal.execute(legal.RegisterSimulatedPower(active, reactive, dt, phase))
                    # a steady stretch, measured at once: its values stand for all of it
                    self.power_quality.observe(s, s + dt, self._steady_values((active, reactive, phase)))
                    s += dt
            if change is not None and step_end == change:
                self.tariff.at(step_end)
            if step_end == boundary:
                local = self.clock.local(boundary)
                dst = legal.STATUS_DAYLIGHT_SAVING if local.dst() else 0
                try:
                    self.legal.execute(legal.EndMeasurementPeriod(int(boundary), dst))
                    if local.hour == local.minute == local.second == 0:  # local midnight: the daily profile
                        self.legal.execute(legal.EndDay(int(boundary), dst))
                except legal.CommandRefused as exc:  # e.g. this side was held up past the period
                    log.warning("load profile capture at %s refused: %s", local.isoformat(), exc)
            for engine in self._timed_engines:
                engine.advance(t, step_end, Passage.RUNNING)
            t = step_end
        self._last_tick = now
        if not self.config.measures_continuously:
            self.legal.execute(legal.Persist(now))
        self.power_quality.flush()
        self.tariff.at(now)  # also what changed without a switching time: a new calendar, the clock's validity
        self._check_limiters(now)
        self._check_fatal()
        if self.alarms.due_realarms(now):  # §9.1: again every 10 minutes until the head-end clears it
            self._push(PUSH_ON_ALARM_SCRIPT)

    async def run_registration(self, period: float = 1.0) -> None:
        while True:
            self.tick()
            self.display.tick(self.clock.now())  # once a second of real time (dark in a power failure)
            self.wz_guard.checkpoint()
            self.security.housekeeping()
            await asyncio.sleep(period)

    def close(self) -> None:
        self.tick()
        self.image_transfer.close()
        self.wz_guard.checkpoint()
        self.security.flush_counters()  # exact frame counters: a clean restart skips none
        self.legal.close()
        self.events.close()
        self.store.close()

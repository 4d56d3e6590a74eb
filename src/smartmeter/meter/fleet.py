"""A fleet of simulated meters for load-testing a head-end: the scenario, as pure functions.

Everything a test of a head-end needs to compute its expectations follows from the scenario
(start, speed, real start, seed, number of meters) by the rules below, never from the state
of a running fleet. The serving side is `smartmeter.meter.fleet_serve`, each meter's DLMS
server `smartmeter.meter.fleet_meter`.

Time
    meter time t = start + speed × (real time − real_start), in UTC seconds; real time is the
    wall clock (time.time()). `start` defaults to now (whole seconds), so that at `speed` 1
    (the default) meter time is the real time.
    Every meter of a fleet has the same time. The meters keep UTC: time zone deviation 0,
    no daylight saving; a fleet with speed ≠ 1 sets the clock status bit "different clock
    base" (0x04) in every time stamp, as a meter run faster than real time does.

Powers of meter i (0-based), constant, in W
    P_i = 100 + (i × 37) mod 900        import (100 … 999 W)
    E_i = (i × 53) mod 500              export (0 … 499 W)

Registers at meter time t (t ≥ start), in Wh (scaler 0)
    +A(t) = floor(P_i × (t − start) / 3600)
    −A(t) = floor(E_i × (t − start) / 3600)

Load profile 1 (1-0:99.1.0.255, capture period 900 s)
    one row at every boundary b = a multiple of 900 s (UTC epoch) with start ≤ b ≤ t; only the
    newest 960 rows are kept (10 days; older ones drop off, FIFO). A row holds
    (clock b, status, +A(b), −A(b)) with
    status(b) = 0x20 ("clock adjusted") when (b / 900 + i) mod 97 = 0, else 0,
    so each meter has a flagged row about once a day (every 97 quarter hours), at different
    times for different meters. Range selection (selector 1) takes the rows with
    from ≤ b ≤ to (both inclusive); entry selection (selector 2) counts from the oldest kept row.

Standard event log (0-0:99.98.0.255, event object 0-0:96.11.0.255: the IDIS codes)
    meter time is cut into slots of 21600 s (k = t div 21600, four a day); slot k of meter i
    has one incident at e = 21600 k + (7919 i + 3037 k) mod 21000, of kind (i + k) mod 3:
      0  power down (code 1) at e and power up (code 2) at e + 120 + 60 × (i mod 7)
      1  clock adjusted: old time (code 4) and new time (code 5), both at e
      2  error register cleared (code 10) at e
    An entry exists when start ≤ its time ≤ t; only the newest 100 are kept (FIFO). Entries
    are ordered by time, then as listed (4 before 5). Range selection gives the entries with
    from ≤ time ≤ to; entry selection counts from the oldest kept entry.

Identity and keys of meter i
    serial 1SIM01<seed mod 100000, 5 digits><i, 5 digits> (DIN 43863-5 form, FLAG code SIM),
    system title b"SIM" + the serial's last 10 digits as 5 bytes (as `MeterIdentity`), so
    titles are unique within a fleet (N ≤ 100000) and differ between seeds mod 100000.
    EK, AK (16 bytes each, suite 0) and the meter's master key: HKDF-SHA256 of the seed
    (8 bytes big-endian, signed) with salt b"smartmeter fleet" and info "meter {i} ek" /
    "meter {i} ak" / "meter {i} master". A refusing meter holds keys derived with info
    "meter {i} refused ek" / "... ak" instead of the ones the manifest lists.

Faults and capabilities
    One permutation of the meter indexes, from random.Random(seed), is cut into consecutive
    slices in this order: silent, refusing, slow; each takes round(fraction × N) meters, so
    these faults never overlap. A second permutation, from random.Random(seed + 1), is cut
    likewise into no-selective, then no-range (never overlapping each other; they may overlap
    with the faults). --latency and --loss apply to every meter.
"""
from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from smartmeter.dlms.security.context import (
    AUTHENTICATED_REQUEST, AUTHENTICATED_RESPONSE, ENCRYPTED_REQUEST, ENCRYPTED_RESPONSE,
)
from smartmeter.meter.identity import MeterIdentity

CAPTURE_PERIOD = 900  # s, load profile 1
PROFILE_ENTRIES = 960  # rows kept: 10 days of 15-minute rows
STATUS_CLOCK_ADJUSTED = 0x20
STATUS_PERIOD = 97  # quarter hours between flagged rows of one meter
MANAGEMENT_SAP = 1
PUBLIC_SAP = 16
MECHANISM = 5  # HLS 5 (GMAC)
SUITE = 0
# the idis profile's management client: authenticated and encrypted requests and responses
POLICY = AUTHENTICATED_REQUEST | ENCRYPTED_REQUEST | AUTHENTICATED_RESPONSE | ENCRYPTED_RESPONSE
MAX_METERS = 100_000  # five serial digits for the index
FLAG = "SIM"
FAULTS = ("silent", "refusing", "slow")  # the order the permutation is cut in
CAPABILITIES = ("no-selective", "no-range")
MANIFEST_VERSION = 1
_SALT = b"smartmeter fleet"


def import_power(i: int) -> int:
    """P_i in W."""
    return 100 + (i * 37) % 900


def export_power(i: int) -> int:
    """E_i in W."""
    return (i * 53) % 500


def energy_wh(power_w: int, start: float, t: float) -> int:
    """Energy in Wh registered from `start` to meter time `t` at a constant `power_w` (0 before start)."""
    if t <= start:
        return 0
    return math.floor(power_w * (t - start) / 3600)


def row_status(i: int, boundary: int) -> int:
    """The status byte of meter i's profile row at `boundary`."""
    return STATUS_CLOCK_ADJUSTED if (boundary // CAPTURE_PERIOD + i) % STATUS_PERIOD == 0 else 0


EVENT_SLOT = 21600  # s: one incident per slot, four a day
EVENT_SPREAD = 21000  # s: an incident's offset in its slot, leaving room for the power-up after it
EVENT_LOG_ENTRIES = 100  # entries the standard event log keeps (as the full meter's)
POWER_DOWN, POWER_UP, CLOCK_OLD, CLOCK_NEW, ERROR_REGISTER_CLEARED = 1, 2, 4, 5, 10


def slot_events(i: int, k: int) -> list[tuple[int, int]]:
    """(time, code) of meter i's incident in event slot k, in log order."""
    e = k * EVENT_SLOT + (7919 * i + 3037 * k) % EVENT_SPREAD
    kind = (i + k) % 3
    if kind == 0:
        return [(e, POWER_DOWN), (e + 120 + 60 * (i % 7), POWER_UP)]
    if kind == 1:
        return [(e, CLOCK_OLD), (e, CLOCK_NEW)]
    return [(e, ERROR_REGISTER_CLEARED)]


def event_entries(i: int, start: float, t: float) -> list[tuple[int, int]]:
    """(time, code) of the entries meter i's standard event log keeps at meter time t, oldest
    first: those with start ≤ time ≤ t, the newest EVENT_LOG_ENTRIES of them."""
    newest_first: list[tuple[int, int]] = []
    first_slot = math.floor(start / EVENT_SLOT)
    k = math.floor(t / EVENT_SLOT)
    while k >= first_slot and len(newest_first) < EVENT_LOG_ENTRIES:
        newest_first.extend(e for e in reversed(slot_events(i, k)) if start <= e[0] <= t)
        k -= 1
    return newest_first[:EVENT_LOG_ENTRIES][::-1]


def first_boundary(start: float) -> int:
    """The first capture instant at or after `start`."""
    return math.ceil(start / CAPTURE_PERIOD) * CAPTURE_PERIOD


def kept_boundaries(start: float, t: float) -> range:
    """The capture instants of the rows kept at meter time `t`, oldest first."""
    first = first_boundary(start)
    if t < first:
        return range(first, first, CAPTURE_PERIOD)
    last = math.floor(t / CAPTURE_PERIOD) * CAPTURE_PERIOD
    oldest = max(first, last - (PROFILE_ENTRIES - 1) * CAPTURE_PERIOD)
    return range(oldest, last + 1, CAPTURE_PERIOD)


def serial_of(seed: int, i: int) -> str:
    return f"1{FLAG}01{seed % 100000:05d}{i:05d}"


def identity_of(seed: int, i: int) -> MeterIdentity:
    return MeterIdentity(serial_of(seed, i))


def _derive(seed: int, info: str, length: int = 16) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=_SALT, info=info.encode()).derive(
        seed.to_bytes(8, "big", signed=True))


def listed_keys(seed: int, i: int) -> tuple[bytes, bytes]:
    """(EK, AK) the manifest lists for meter i."""
    return _derive(seed, f"meter {i} ek"), _derive(seed, f"meter {i} ak")


def held_keys(seed: int, i: int, refusing: bool) -> tuple[bytes, bytes]:
    """(EK, AK) meter i holds: the listed ones, or others when it is a refusing meter."""
    if refusing:
        return _derive(seed, f"meter {i} refused ek"), _derive(seed, f"meter {i} refused ak")
    return listed_keys(seed, i)


def master_key(seed: int, i: int) -> bytes:
    return _derive(seed, f"meter {i} master", 32)


def default_start(now: float) -> float:
    # not rounded to a capture boundary: a fleet at speed 1 would then run up to 15 minutes
    # behind real time, and a head-end would rightly see every meter's clock as drifted
    return float(math.floor(now))


def _slices(order: list[int], names: tuple[str, ...], fractions: dict[str, float]) -> dict[str, frozenset[int]]:
    chosen, at = {}, 0
    for name in names:
        count = round(fractions.get(name, 0.0) * len(order))
        chosen[name] = frozenset(order[at:at + count])
        at += count
    return chosen


def assign(n: int, seed: int, fractions: dict[str, float]) -> tuple[dict[str, frozenset[int]], dict[str, frozenset[int]]]:
    """(faults, capabilities): which meters have each, as the module docstring says.
    ValueError if the fractions of one group add up to more than the whole fleet."""
    for group in (FAULTS, CAPABILITIES):
        if sum(round(fractions.get(name, 0.0) * n) for name in group) > n:
            raise ValueError(f"the fractions of {', '.join('--' + g for g in group)} add up to more than the fleet")
    first = list(range(n))
    random.Random(seed).shuffle(first)
    second = list(range(n))
    random.Random(seed + 1).shuffle(second)
    return _slices(first, FAULTS, fractions), _slices(second, CAPABILITIES, fractions)


@dataclass(frozen=True)
class FleetScenario:
    """Everything that decides what the fleet's meters answer."""

    meters: int
    start: float  # meter time at real_start, UTC seconds
    speed: float
    real_start: float  # wall-clock time (time.time()) the fleet's time starts from
    seed: int = 0
    cells: int = 1
    base_port: int = 21000
    host: str = "127.0.0.1"
    fractions: dict[str, float] = field(default_factory=dict)  # fault/capability name -> fraction
    slow_delay: float = 2.0  # s, every answer of a slow meter
    latency: float = 0.0  # s, every answer of every meter
    loss: float = 0.0  # probability per request of a dropped connection
    # meter i's port when some ports from base_port on were taken by others (fleet_serve.allocate_ports)
    ports: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        faults, capabilities = assign(self.meters, self.seed, self.fractions)
        object.__setattr__(self, "_faults", faults)
        object.__setattr__(self, "_capabilities", capabilities)

    def meter_time(self, real_time: float) -> float:
        return self.start + self.speed * (real_time - self.real_start)

    def faults_of(self, i: int) -> list[str]:
        return [name for name in FAULTS if i in self._faults[name]]

    def capabilities_of(self, i: int) -> list[str]:
        return [name for name in CAPABILITIES if i in self._capabilities[name]]

    def meters_with(self, name: str) -> frozenset[int]:
        return (self._faults.get(name) or self._capabilities.get(name) or frozenset())

    def cell_of(self, i: int) -> str:
        return f"cell-{i % self.cells}"

    def port_of(self, i: int) -> int:
        return self.ports[i] if self.ports else self.base_port + i

    def manifest(self) -> dict:
        """The manifest (see docs/fleet.md): every meter with its address, keys, faults."""
        meters = []
        for i in range(self.meters):
            ident = identity_of(self.seed, i)
            ek, ak = listed_keys(self.seed, i)
            meters.append({
                "index": i, "serial": ident.serial, "system_title": ident.system_title.hex().upper(),
                "host": self.host, "port": self.port_of(i), "cell": self.cell_of(i), "client_sap": MANAGEMENT_SAP,
                "public_sap": PUBLIC_SAP, "mechanism": MECHANISM, "suite": SUITE, "policy": POLICY,
                "ek": ek.hex().upper(), "ak": ak.hex().upper(), "master": master_key(self.seed, i).hex().upper(),
                "faults": self.faults_of(i),
                "capabilities": self.capabilities_of(i), "import_power_w": import_power(i),
                "export_power_w": export_power(i),
            })
        return {
            "version": MANIFEST_VERSION, "meters": meters, "start": iso(self.start), "start_epoch": self.start,
            "speed": self.speed, "real_start": self.real_start, "seed": self.seed, "cells": self.cells,
            "latency": self.latency, "loss": self.loss, "slow_delay": self.slow_delay,
            "fractions": dict(sorted(self.fractions.items())),
        }


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat().replace("+00:00", "Z")

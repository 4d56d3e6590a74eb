"""The legal time base: the time that stamps legally relevant data, and the rules for changing it.

The meter's time is its real-time clock plus an offset. The real-time clock is the platform
clock, or, in a simulation that runs faster than real time, the platform clock scaled by a
speed factor from an anchor (`TimeBaseState.rtc`: the one place where the speed applies; a
meter whose clock does not run at real speed says so, it can never pass for a legal meter). The offset is legally relevant: it
lives in the legal store and changes only through the protective interface, which records
every change with the old and the new time. Load profile captures are checked against it,
so a clock change can neither invent entries for periods that did not happen nor suppress
the entries of periods that do (IDIS load-profile rules for time shifts; companion §5.4,
§5.7.3).

Each load profile has its own capture state (`ProfileCapture`): its floor (one entry per
period), the status bits pending for its next entry (CAD after an adjustment, PDN after a
power-up: an event marks the next entry of every profile, and each profile consumes its
own), and whether capturing is enabled (opt-in / opt-out, IDIS §7.5.8). Load profile 2 is
captured at local midnight: `LocalDays` knows the meter's time zone.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from zoneinfo import ZoneInfo

CAPTURE_PERIOD = 900  # load profile 1 (companion §5.7): 15 minutes
NO_CHANGE_BELOW = 2.0  # companion §5.4: a difference under 2 s does not adjust the clock
SYNCHRONISATION_LIMIT = 9.0  # companion §5.4: from 9 s on a change is a "clock adjusted" event

# profile status bits (companion §5.7.3, IDIS)
STATUS_CLOCK_ADJUSTED = 0x20  # CAD
STATUS_DAYLIGHT_SAVING = 0x08  # DST
STATUS_POWER_DOWN = 0x80  # PDN: a complete power outage during the period
STATUS_CLOCK_INVALID = 0x02  # CIV: the clock restarted without a valid time (backup exhausted)
STATUS_DATA_NOT_VALID = 0x04  # DNV: set with CIV and ERR
STATUS_ERROR = 0x01  # ERR: a critical error (the fatal error register is not 0)
STATUS_CAPTURE_DISABLED = 0x10  # CDI: capturing was disabled (opt-out) at some moment of the period

PROFILES = ("lp1", "lp2")  # load profile 1 (15 min) and 2 (daily, local midnight)
MAX_PENDING_CHANGES = 16  # opt-in/opt-out changes kept until an entry takes them (older ones merge)

MAX_SPEED = 100_000.0  # a year in about five minutes

UNCHANGED = "unchanged"
SYNCHRONISED = "synchronised"  # 2 s <= |change| < 9 s: adjusted without further action
ADJUSTED = "adjusted"  # |change| >= 9 s: logged as clock adjusted, CAD on the next entry


@dataclass(frozen=True, slots=True)
class TimeChange:
    """What a request to set the time did: the kind, the time before and after, and the offset."""

    kind: str
    old_time: float
    new_time: float
    offset: float


def rtc_reading(speed: float, anchor_platform: float, anchor_clock: float, platform_time: float) -> float:
    """The real-time clock at a platform instant: the platform clock, or in a simulation faster
    than real time, the platform clock scaled by `speed` from an anchor. The one place where the
    speed applies; the communication side's clock asks this same function."""
    if speed == 1.0:
        return platform_time + (anchor_clock - anchor_platform)
    return anchor_clock + (platform_time - anchor_platform) * speed


class LocalDays:
    """Local calendar days of the meter's time zone: load profile 2 captures at the first
    instant of each local day (00:00:00; where a time zone skips midnight, the first instant
    that exists)."""

    def __init__(self, time_zone: str = "Europe/Berlin") -> None:
        self.zone = ZoneInfo(time_zone)  # ZoneInfoNotFoundError / ValueError for an unknown zone

    def start(self, utc_seconds: float) -> int:
        """The UTC instant at which the local day containing `utc_seconds` began."""
        local = dt.datetime.fromtimestamp(utc_seconds, self.zone)
        # fold=0: in a gap at midnight this is the transition instant, in a fold the first 00:00
        midnight = dt.datetime(local.year, local.month, local.day, tzinfo=self.zone, fold=0)
        return int(midnight.timestamp())

    def is_start(self, utc_seconds: int) -> bool:
        return self.start(utc_seconds) == utc_seconds


def _int_or_none(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise ValueError("a capture floor is a whole number of seconds")
    return value


def _flag(value: object) -> bool:
    if type(value) is not bool:
        raise ValueError("a flag of the time base is true or false")
    return value


@dataclass
class ProfileCapture:
    """One load profile's capture state, kept (and signed) with the time base."""

    floor: int | None = None  # captures at or before this time make no entry
    adjusted_pending: bool = False  # the next entry carries CAD
    outage_pending: bool = False  # the next entry carries PDN
    enabled_base: bool = True  # capturing enabled before the pending changes (at the last evaluated capture)
    # opt-in/opt-out changes no capture has taken yet: [meter time, enabled after], in command order
    changes: list[list] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        """Capturing enabled now (after every change)."""
        return bool(self.changes[-1][1]) if self.changes else self.enabled_base

    @classmethod
    def from_dict(cls, data: dict) -> ProfileCapture:
        changes = data.get("changes", [])
        if not isinstance(changes, list) or len(changes) > MAX_PENDING_CHANGES:
            raise ValueError("capture changes malformed")
        parsed = []
        for change in changes:
            if not (isinstance(change, list) and len(change) == 2):
                raise ValueError("capture change malformed")
            time_utc = _int_or_none(change[0])
            if time_utc is None:
                raise ValueError("capture change without a time")
            parsed.append([time_utc, _flag(change[1])])
        return cls(_int_or_none(data.get("floor")), _flag(data.get("adjusted_pending", False)),
                   _flag(data.get("outage_pending", False)), _flag(data.get("enabled_base", True)), parsed)


def _default_profiles() -> dict[str, ProfileCapture]:
    return {name: ProfileCapture() for name in PROFILES}


@dataclass
class TimeBaseState:
    offset: float = 0.0  # meter time minus platform time, seconds
    speed: float = 1.0  # real-time-clock seconds per platform second; 1 in a legal meter
    anchor_platform: float = 0.0  # the real-time clock read anchor_clock at this platform time
    anchor_clock: float = 0.0
    clock_invalid: bool = False  # CIV (and DNV) until the clock is set
    backup_exhausted: bool = False  # the clock's backup battery: an outage then loses the time
    profiles: dict[str, ProfileCapture] = field(default_factory=_default_profiles)

    @property
    def capture_floor(self) -> int | None:
        """Load profile 1's floor (captures at or before it make no entry)."""
        return self.profiles["lp1"].floor

    @capture_floor.setter
    def capture_floor(self, value: int | None) -> None:
        self.profiles["lp1"].floor = value

    def rtc(self, platform_time: float) -> float:
        """The real-time clock's reading (before the offset) at a platform instant."""
        return rtc_reading(self.speed, self.anchor_platform, self.anchor_clock, platform_time)

    def platform(self, rtc_time: float) -> float:
        """The platform instant at which the real-time clock reads `rtc_time`."""
        return self.anchor_platform + (rtc_time - self.anchor_clock) / self.speed

    def rescale(self, platform_time: float, speed: float) -> None:
        """Run the real-time clock at `speed` from now on, continuing from its present reading."""
        if not (speed == speed and 0 < speed <= MAX_SPEED):
            raise ValueError(f"speed must be above 0 and at most {MAX_SPEED}")
        reading = self.rtc(platform_time)
        self.anchor_platform, self.anchor_clock, self.speed = platform_time, reading, float(speed)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TimeBaseState:
        """The state from its JSON; a time base saved before the per-profile state (load profile 1's
        floor and flags at the top level, no load profile 2) loads as it was, LP2 fresh."""
        data = json.loads(text)
        saved = data.get("profiles")
        if saved is None:
            floor = data.get("capture_floor")
            profiles = _default_profiles()
            profiles["lp1"] = ProfileCapture(None if floor is None else int(floor), bool(data["adjusted_pending"]),
                                             bool(data.get("outage_pending", False)))
        else:
            if not isinstance(saved, dict) or set(saved) != set(PROFILES):
                raise ValueError("time base: a capture state per load profile")
            profiles = {name: ProfileCapture.from_dict(saved[name]) for name in PROFILES}
        state = cls(float(data["offset"]), float(data.get("speed", 1.0)), float(data.get("anchor_platform", 0.0)),
                    float(data.get("anchor_clock", 0.0)), bool(data.get("clock_invalid", False)),
                    bool(data.get("backup_exhausted", False)), profiles)
        for value in (state.offset, state.anchor_platform, state.anchor_clock):
            if value != value or abs(value) > 10 ** 10:
                raise ValueError("time base out of range")
        if not 0 < state.speed <= MAX_SPEED:
            raise ValueError("time base speed out of range")
        return state


class TimeBase:
    """Pure rules over a TimeBaseState; the caller persists the state and logs the changes."""

    def __init__(self, state: TimeBaseState, days: LocalDays | None = None) -> None:
        self.state = state
        self.days = days if days is not None else LocalDays()

    def classify(self, old_time: float, new_time: float) -> str:
        change = abs(new_time - old_time)
        if change < NO_CHANGE_BELOW:
            return UNCHANGED
        return SYNCHRONISED if change < SYNCHRONISATION_LIMIT else ADJUSTED

    def now(self, platform_time: float) -> float:
        return self.state.rtc(platform_time) + self.state.offset

    def set_time(self, platform_time: float, new_time: float) -> TimeChange:
        """Apply a requested new meter time, given the platform clock now. Setting the clock
        makes an invalid time valid again, even when the difference is too small to change it."""
        old_time = self.now(platform_time)
        kind = self.classify(old_time, new_time)
        self.state.clock_invalid = False
        if kind == UNCHANGED:
            return TimeChange(kind, old_time, old_time, self.state.offset)
        self.state.offset = new_time - self.state.rtc(platform_time)
        if kind == ADJUSTED:
            lp1, lp2 = self.state.profiles["lp1"], self.state.profiles["lp2"]
            # LP1: the next entry is at the next boundary of the new time, whatever came before
            # (after a backward adjustment its boundaries are captured again, IDIS)
            lp1.floor = int(new_time // CAPTURE_PERIOD * CAPTURE_PERIOD)
            # LP2: one entry per local day: a forward adjustment skips the midnights it jumps
            # over (and the one it lands on); a backward one never makes a day's entry twice
            day = self.days.start(new_time)
            lp2.floor = day if lp2.floor is None else max(lp2.floor, day)
            for profile in self.state.profiles.values():
                profile.adjusted_pending = True
                # an opt-in/opt-out made before the adjustment belongs to the next entry of the new time
                for change in profile.changes:
                    change[0] = min(change[0], int(new_time) - 1)
        return TimeChange(kind, old_time, new_time, self.state.offset)

    def admit_capture(self, capture_time: int, profile: str = "lp1") -> int | None:
        """-> the status bits to add if a capture at `capture_time` makes an entry in `profile`,
        else None (no entry).

        One entry per period of the current time base: a capture at or before the profile's
        floor makes no entry and changes nothing. Otherwise the floor moves to it and capturing
        control decides (IDIS §7.5.8): an opt-in/opt-out made before `capture_time` and not yet
        taken by an entry puts CDI on this entry (the running interval is not interrupted);
        without one, the period was wholly enabled (an entry) or wholly disabled (no entry, and
        the pending CAD/PDN wait for the next entry that is made)."""
        state = self.state.profiles[profile]
        floor = state.floor
        if floor is not None and capture_time <= floor:
            return None
        state.floor = capture_time
        taken = [i for i, change in enumerate(state.changes) if change[0] < capture_time]
        if taken:
            last = taken[-1]  # changes are in command order: everything up to it is in this period
            state.enabled_base = bool(state.changes[last][1])
            del state.changes[:last + 1]
            bits = STATUS_CAPTURE_DISABLED
        elif state.enabled_base:
            bits = 0
        else:
            return None  # disabled for the whole period
        if state.adjusted_pending:
            bits |= STATUS_CLOCK_ADJUSTED
        if state.outage_pending:
            bits |= STATUS_POWER_DOWN
        if self.state.clock_invalid:
            bits |= STATUS_CLOCK_INVALID | STATUS_DATA_NOT_VALID
        state.adjusted_pending = state.outage_pending = False
        return bits

    def set_capture_enabled(self, profile: str, enabled: bool, time_utc: int) -> bool:
        """Opt-in (True) or opt-out (False) of one profile at meter time `time_utc`; it applies
        from the next capture on. -> whether anything changed (the same state again is no change)."""
        state = self.state.profiles[profile]
        if state.enabled == enabled:
            return False
        state.changes.append([int(time_utc), bool(enabled)])
        if len(state.changes) > MAX_PENDING_CHANGES:
            # a flood of changes within one period: the oldest two become one change at the older
            # time with the newer state, so the period keeps its CDI and the state stays right
            (first, _), (_, after) = state.changes[0], state.changes[1]
            state.changes[:2] = [[first, after]]
        return True

    def power_restored(self, platform_time: float, down_time: float) -> bool:
        """The supply is back: the next entry of every profile carries PDN. With the backup
        exhausted the clock did not run: it restarts at the power-down time + 1 s, invalid
        until set (companion §5.4). -> whether the time was lost."""
        for profile in self.state.profiles.values():
            profile.outage_pending = True
        if not self.state.backup_exhausted:
            return False
        self.state.offset = down_time + 1 - self.state.rtc(platform_time)
        self.state.clock_invalid = True
        return True

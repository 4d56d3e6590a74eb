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
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

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


@dataclass
class TimeBaseState:
    offset: float = 0.0  # meter time minus platform time, seconds
    capture_floor: int | None = None  # captures at or before this time are refused
    adjusted_pending: bool = False  # the next capture carries CAD
    speed: float = 1.0  # real-time-clock seconds per platform second; 1 in a legal meter
    anchor_platform: float = 0.0  # the real-time clock read anchor_clock at this platform time
    anchor_clock: float = 0.0
    outage_pending: bool = False  # the next capture carries PDN
    clock_invalid: bool = False  # CIV (and DNV) until the clock is set
    backup_exhausted: bool = False  # the clock's backup battery: an outage then loses the time

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
        data = json.loads(text)
        floor = data.get("capture_floor")
        state = cls(float(data["offset"]), None if floor is None else int(floor), bool(data["adjusted_pending"]),
                    float(data.get("speed", 1.0)), float(data.get("anchor_platform", 0.0)),
                    float(data.get("anchor_clock", 0.0)), bool(data.get("outage_pending", False)),
                    bool(data.get("clock_invalid", False)), bool(data.get("backup_exhausted", False)))
        for value in (state.offset, state.anchor_platform, state.anchor_clock):
            if value != value or abs(value) > 10 ** 10:
                raise ValueError("time base out of range")
        if not 0 < state.speed <= MAX_SPEED:
            raise ValueError("time base speed out of range")
        return state


class TimeBase:
    """Pure rules over a TimeBaseState; the caller persists the state and logs the changes."""

    def __init__(self, state: TimeBaseState) -> None:
        self.state = state

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
            # the next entry is at the next boundary of the new time, whatever came before
            self.state.capture_floor = int(new_time // CAPTURE_PERIOD * CAPTURE_PERIOD)
            self.state.adjusted_pending = True
        return TimeChange(kind, old_time, new_time, self.state.offset)

    def admit_capture(self, capture_time: int) -> int | None:
        """-> the status bits to add if a capture at `capture_time` makes a new entry, else None.

        One entry per period of the current time base: a capture at or before the last one is
        refused unless the clock was adjusted since (then the floor moved to the new time)."""
        floor = self.state.capture_floor
        if floor is not None and capture_time <= floor:
            return None
        self.state.capture_floor = capture_time
        bits = STATUS_CLOCK_ADJUSTED if self.state.adjusted_pending else 0
        if self.state.outage_pending:
            bits |= STATUS_POWER_DOWN
        if self.state.clock_invalid:
            bits |= STATUS_CLOCK_INVALID | STATUS_DATA_NOT_VALID
        self.state.adjusted_pending = self.state.outage_pending = False
        return bits

    def power_restored(self, platform_time: float, down_time: float) -> bool:
        """The supply is back: the next entry carries PDN. With the backup exhausted the clock
        did not run: it restarts at the power-down time + 1 s, invalid until set (companion
        §5.4). -> whether the time was lost."""
        self.state.outage_pending = True
        if not self.state.backup_exhausted:
            return False
        self.state.offset = down_time + 1 - self.state.rtc(platform_time)
        self.state.clock_invalid = True
        return True

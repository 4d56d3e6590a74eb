"""The legal time base: the time that stamps legally relevant data, and the rules for changing it.

The meter's time is the platform clock plus an offset. The offset is legally relevant: it
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


@dataclass
class TimeBaseState:
    offset: float = 0.0  # meter time minus platform time, seconds
    capture_floor: int | None = None  # captures at or before this time are refused
    adjusted_pending: bool = False  # the next capture carries CAD

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TimeBaseState:
        data = json.loads(text)
        floor = data.get("capture_floor")
        state = cls(float(data["offset"]), None if floor is None else int(floor), bool(data["adjusted_pending"]))
        if state.offset != state.offset or abs(state.offset) > 10 ** 10:
            raise ValueError("time base offset out of range")
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

    def set_time(self, platform_time: float, new_time: float) -> TimeChange:
        """Apply a requested new meter time, given the platform clock now."""
        old_time = platform_time + self.state.offset
        kind = self.classify(old_time, new_time)
        if kind == UNCHANGED:
            return TimeChange(kind, old_time, old_time, self.state.offset)
        self.state.offset = new_time - platform_time
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
        self.state.adjusted_pending = False
        return bits

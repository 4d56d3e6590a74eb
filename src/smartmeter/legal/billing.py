"""The billing profile (companion standard §5.6): one entry per end of a billing period.

An entry holds what a utility bills from: the period counter, every energy register with its
rates, the maximum demands of the period with their times and the cumulative maxima. Closing a
period is one step of the legally relevant part (LegalInterface, EndBillingPeriod) in one
transaction, in the order §5.6 gives: the counter goes up, the maxima are added into the
cumulative maxima, the entry is captured, the maxima restart at zero. A power failure leaves the
period closed with its entry, or not closed at all.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from smartmeter.legal.registers import RATES, REGISTER_NAMES

BILLING_PROFILE = "billing"  # 0-0:98.1.0.255
BILLING_PROFILE_CAPACITY = 15  # companion standard §5.6: at least 15 monthly entries
COUNTER_MODULUS = 100  # the billing period counter runs 00..99 and rolls over
# who closed the period; kept with the entry (not a column of the COSEM profile)
TRIGGERS = ("scheduled", "button", "remote", "ad-hoc")
NO_TIME = -1

_ROW = struct.Struct(">BB" + "Q" * (len(REGISTER_NAMES) * (1 + len(RATES))) + "I" * 4 + "q" * 4 + "I" * 4)


@dataclass(frozen=True, slots=True)
class BillingRow:
    capture_time: int  # UTC seconds
    counter: int  # 0..99
    energy: tuple[int, ...]  # per quantity of REGISTER_NAMES: total, rate 1, rate 2 (whole Wh / varh)
    maximum: tuple[int, ...]  # per quantity: the maximum demand of the period ended (W / var)
    maximum_time: tuple[int, ...]  # per quantity: when it was reached (UTC s), NO_TIME if never
    cumulative: tuple[int, ...]  # per quantity: the cumulative maximum, this period's maximum included
    trigger: str

    def to_payload(self) -> bytes:
        return _ROW.pack(TRIGGERS.index(self.trigger), self.counter, *self.energy, *self.maximum,
                         *self.maximum_time, *self.cumulative)

    @classmethod
    def from_payload(cls, capture_time: int, payload: bytes) -> "BillingRow":
        trigger, counter, *values = _ROW.unpack(payload)
        energy_columns = len(REGISTER_NAMES) * (1 + len(RATES))
        energy, rest = values[:energy_columns], values[energy_columns:]
        return cls(capture_time, counter, tuple(energy), tuple(rest[0:4]), tuple(rest[4:8]), tuple(rest[8:12]),
                   TRIGGERS[trigger])

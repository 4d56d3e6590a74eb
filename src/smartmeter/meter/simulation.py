"""A simulated household: active and reactive power as a deterministic function of time.

Deterministic (seeded by the meter serial) so that the 30-day back-fill and the live meter
describe the same household, and tests can predict what the registers will do.
"""
from __future__ import annotations

import math
import random


class HouseholdLoad:
    def __init__(self, seed: str, pv_peak_w: float = 2500.0) -> None:
        rng = random.Random(seed)
        self.base_w = rng.uniform(120, 250)
        self.pv_peak_w = pv_peak_w
        # appliance runs: (start minute of day, duration minutes, power W), reused every day
        # with a per-day shift so days differ
        self.appliances = [(rng.randrange(0, 1440), rng.randrange(5, 90), rng.uniform(300, 2500)) for _ in range(8)]

    def power(self, utc_seconds: float) -> tuple[float, float]:
        """(active W, reactive var) at an instant: consumption minus PV; negative = export."""
        day = int(utc_seconds // 86400)
        minute = (utc_seconds % 86400) / 60
        p = self.base_w * (1.3 if 17 * 60 <= minute <= 22 * 60 else 1.0)
        for start, length, watts in self.appliances:
            shifted = (start + (day * 37) % 120) % 1440
            if shifted <= minute < shifted + length:
                p += watts
        # PV: a half sine between 06:00 and 18:00 UTC, a little less on odd days
        if 360 <= minute <= 1080:
            p -= self.pv_peak_w * (0.8 if day % 2 else 1.0) * math.sin(math.pi * (minute - 360) / 720)
        q = 0.25 * abs(p) * (1 if p >= 0 else -1) + 40.0  # inductive household, PF ≈ 0.97
        return p, q

    def energy(self, start: float, end: float, step: float = 60.0) -> tuple[float, float, float, float]:
        """(+A Wh, -A Wh, +R varh, -R varh) between two instants, integrated in `step` s."""
        a_plus = a_minus = r_plus = r_minus = 0.0
        t = start
        while t < end:
            dt = min(step, end - t)
            p, q = self.power(t)
            if p >= 0:
                a_plus += p * dt / 3600
            else:
                a_minus -= p * dt / 3600
            if q >= 0:
                r_plus += q * dt / 3600
            else:
                r_minus -= q * dt / 3600
            t += dt
        return a_plus, a_minus, r_plus, r_minus

"""Bounds on what peers can make the transports hold, and a log that cannot be flooded.

`ConnectionTable` holds the connections (TCP) or sessions (UDP peers) of one port: at most
`nb_of_sim_conn` of them (TCP-UDP setup, IC 41; a fixed number for the HDLC-over-TCP port),
each closed after `inactivity_time_out` seconds without a frame for the meter. At the limit
a new connection takes the slot of the one that matters least (no open association before an
unauthenticated one, the longest idle first), so idle or unauthenticated peers cannot lock
a head-end out; authenticated associations are never displaced. It is sans-io: time comes in
as an argument and closing is a callback the transport provides.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Hashable

from smartmeter.ratelog import RateLimitedLog

__all__ = [
    "AUTHENTICATED", "NO_ASSOCIATION", "UNAUTHENTICATED", "ConnectionTable", "RateLimitedLog", "Slot",
    "association_rank",
]

# How much a connection matters when a slot must be freed (higher stays longer).
NO_ASSOCIATION = 0
UNAUTHENTICATED = 1  # open association without authentication (public, pre-established, HLS pending)
AUTHENTICATED = 2  # never displaced: only its own inactivity or release ends it


def association_rank(association) -> int:
    """Rank of one server association (None: none opened)."""
    if association is None or not association.associated:
        return NO_ASSOCIATION
    client = association.client
    if client is None or client.pre_established or association.mechanism == 0 or not association.authenticated:
        return UNAUTHENTICATED
    return AUTHENTICATED


@dataclass(eq=False)
class Slot:
    """One admitted connection: how to close it, how much it matters, when it was last active."""

    key: Hashable
    close: Callable[[], None]
    rank: Callable[[], int]
    last_activity: float
    closed: bool = False


class ConnectionTable:
    """The connections of one port, bounded in number and supervised for inactivity.

    `limits()` gives (maximum connections, inactivity timeout in seconds; 0 = none) and is asked
    at every admission and sweep, so a written setup object takes effect at once.
    """

    def __init__(self, name: str, limits: Callable[[], tuple[int, float]], log: RateLimitedLog) -> None:
        self.name = name
        self.limits = limits
        self.log = log
        self._slots: dict[Hashable, Slot] = {}
        self.refused = 0  # connections turned away: every slot held by an authenticated association
        self.displaced = 0  # connections closed to make room for a new one
        self.expired = 0  # connections closed for inactivity

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._slots

    def get(self, key: Hashable) -> Slot | None:
        return self._slots.get(key)

    def admit(self, key: Hashable, close: Callable[[], None], rank: Callable[[], int], now: float) -> Slot | None:
        """A slot for a new connection, freeing one if the table is full; None if none can be freed."""
        self.expire(now)
        maximum, _ = self.limits()
        while len(self._slots) >= max(1, maximum):
            candidates = [(s.rank(), s.last_activity, s) for s in self._slots.values()]
            candidates = [c for c in candidates if c[0] < AUTHENTICATED]
            if not candidates:
                self.refused += 1
                self.log(f"{self.name}.refused", "%s: all %d connections hold authenticated associations; "
                         "new connection refused", self.name, len(self._slots))
                return None
            victim = min(candidates, key=lambda c: (c[0], c[1]))[2]
            self.displaced += 1
            self.log(f"{self.name}.displaced", "%s: at the limit of %d connections; the longest idle "
                     "connection without an authenticated association was closed for a new one",
                     self.name, maximum)
            self._close(victim)
        slot = Slot(key, close, rank, now)
        self._slots[key] = slot
        return slot

    def touch(self, slot: Slot, now: float) -> None:
        """A frame for the meter arrived on `slot`'s connection."""
        if now > slot.last_activity:
            slot.last_activity = now

    def release(self, slot: Slot) -> None:
        """The connection ended on its own (the peer closed it): forget it without calling close."""
        slot.closed = True
        if self._slots.get(slot.key) is slot:
            del self._slots[slot.key]

    def expire(self, now: float) -> int:
        """Close every connection idle for longer than the inactivity timeout; how many were."""
        _, timeout = self.limits()
        if timeout <= 0:
            return 0
        idle = [s for s in self._slots.values() if now - s.last_activity > timeout]
        for slot in idle:
            self.expired += 1
            self._close(slot)
        if idle:
            self.log(f"{self.name}.expired", "%s: %d connection(s) closed after %g s without a frame",
                     self.name, len(idle), timeout, level=logging.INFO)
        return len(idle)

    def close_all(self) -> None:
        for slot in list(self._slots.values()):
            self._close(slot)

    def _close(self, slot: Slot) -> None:
        self.release(slot)
        slot.close()

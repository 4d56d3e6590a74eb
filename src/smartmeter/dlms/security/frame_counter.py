"""Frame (invocation) counter policy, sans-io — companion standard §3.5.4 and Appendix 1.

Receiving: a message is rejected if its counter is smaller than or equal to the last
accepted one. The order that keeps this safe across power loss is

  1. `window.check(counter)`   — replay check, no state change;
  2. remove the protection     — a forged frame must not move the counter;
  3. persist `pending.value`   — the caller's storage, before anything is released;
  4. `window.commit(pending)`  — the window moves;
  5. release the plaintext.

`open_protected` runs exactly that sequence with a `persist` callback supplied by the
caller (this module never touches storage itself).

Sending: `TxFrameCounter.reserve()` hands out the next counter and must be persisted by
the caller before the message leaves; at 0xFFFFFFFF it refuses (CounterExhaustedError)
without incrementing — the head-end must change the key. The first counter under a key is
`first`: the meter starts at 1, because a receiver whose window starts at "last seen 0"
(dlms-cosem, and any strict head-end) refuses a first message carrying 0.

Appendix 1 (frame counter readout, IC 12544 `get_frame_counter`):
  challenge_response = HMAC-SHA256(key = AK, SysT-S || SysT-C || challenge || FC),
challenge 64 bytes, FC as 4 bytes big-endian (the unsigned32 returned).
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Callable

from smartmeter.dlms.security.errors import (
    AuthenticationError,
    CounterExhaustedError,
    ReplayError,
    SecurityEncodeError,
)
from smartmeter.dlms.security.suites import (
    INVOCATION_COUNTER_MAX,
    SYSTEM_TITLE_LENGTH,
    ProtectedContent,
    _check_bytes,
    unprotect_content,
)

__all__ = [
    "PendingCounter",
    "FrameCounterWindow",
    "TxFrameCounter",
    "open_protected",
    "FRAME_COUNTER_CHALLENGE_LENGTH",
    "frame_counter_response",
    "verify_frame_counter_response",
]


def _counter(value: object, what: str) -> int:
    if type(value) is not int or not 0 <= value <= INVOCATION_COUNTER_MAX:
        raise SecurityEncodeError(f"{what} must be an int in 0..0xFFFFFFFF, got {value!r}")
    return value


@dataclass(frozen=True)
class PendingCounter:
    """A counter that passed the replay check; persist `value`, then commit it."""

    value: int
    # The window state this was checked against, so a stale pending cannot be committed.
    checked_against: int | None


class FrameCounterWindow:
    """Receiving side: accepts only counters above the last accepted one.

    `last_accepted=None` means nothing was received under the current key (after a key
    change the stored value is reset); then any counter, including 0, is accepted.
    """

    __slots__ = ("_last",)

    def __init__(self, last_accepted: int | None) -> None:
        self._last = None if last_accepted is None else _counter(last_accepted, "last accepted counter")

    @property
    def last_accepted(self) -> int | None:
        return self._last

    def check(self, counter: int) -> PendingCounter:
        """ReplayError unless `counter` is above the last accepted; changes nothing."""
        counter = _counter(counter, "received counter")
        if self._last is not None and counter <= self._last:
            raise ReplayError(counter, self._last)
        return PendingCounter(counter, self._last)

    def commit(self, pending: PendingCounter) -> None:
        """Move the window to `pending.value` (after the caller persisted it)."""
        if not isinstance(pending, PendingCounter) or pending.checked_against != self._last:
            raise SecurityEncodeError("commit needs the PendingCounter of the latest check")
        self._last = pending.value

    def reset(self) -> None:
        """A new key was established: nothing received under it yet."""
        self._last = None


class TxFrameCounter:
    """Sending side. `last_used=None` means no message was sent under the current key; the
    first counter handed out is then `first` (0 or 1)."""

    __slots__ = ("_last", "_first")

    def __init__(self, last_used: int | None, first: int = 0) -> None:
        self._last = None if last_used is None else _counter(last_used, "last used counter")
        if first not in (0, 1):
            raise SecurityEncodeError(f"the first sending counter is 0 or 1, got {first!r}")
        self._first = first

    @property
    def last_used(self) -> int | None:
        return self._last

    @property
    def exhausted(self) -> bool:
        return self._last == INVOCATION_COUNTER_MAX

    def reserve(self) -> int:
        """The counter for the next message (persist it before sending).

        CounterExhaustedError, without incrementing, once 0xFFFFFFFF has been used.
        """
        if self._last == INVOCATION_COUNTER_MAX:
            raise CounterExhaustedError("invocation counter reached 0xFFFFFFFF; the key must be changed")
        self._last = self._first if self._last is None else self._last + 1
        return self._last

    def reset(self) -> None:
        self._last = None


def open_protected(
    window: FrameCounterWindow,
    content: bytes | ProtectedContent,
    key_ek: bytes,
    key_ak: bytes | None,
    system_title: bytes,
    persist: Callable[[int], None],
    extra_aad: bytes = b"",
    expected_suite: int | None = None,
    require_authentication: bool = True,
) -> tuple[ProtectedContent, bytes]:
    """Replay check, unprotect, `persist(counter)`, commit — then return (header, plaintext).

    If `persist` raises, the window does not move and no plaintext is returned.
    """
    header = content if isinstance(content, ProtectedContent) else ProtectedContent.from_bytes(content)
    pending = window.check(header.invocation_counter)
    header, plaintext = unprotect_content(
        header, key_ek, key_ak, system_title, extra_aad, expected_suite, require_authentication
    )
    persist(pending.value)
    window.commit(pending)
    return header, plaintext


# ---------------------------------------------------------------------------------------
# Appendix 1: authenticated frame counter readout
# ---------------------------------------------------------------------------------------

FRAME_COUNTER_CHALLENGE_LENGTH = 64


def frame_counter_response(
    key_ak: bytes, server_system_title: bytes, client_system_title: bytes, challenge: bytes, frame_counter: int
) -> bytes:
    """HMAC-SHA256(AK, SysT-S || SysT-C || challenge || FC) — the 32-byte challenge_response."""
    if not isinstance(key_ak, (bytes, bytearray)) or not key_ak:
        raise SecurityEncodeError("authentication key must be non-empty bytes")
    if not isinstance(challenge, (bytes, bytearray)) or len(challenge) != FRAME_COUNTER_CHALLENGE_LENGTH:
        raise SecurityEncodeError(f"frame counter challenge must be {FRAME_COUNTER_CHALLENGE_LENGTH} bytes")
    challenge = bytes(challenge)
    message = (
        _check_bytes(server_system_title, SYSTEM_TITLE_LENGTH, "server system title")
        + _check_bytes(client_system_title, SYSTEM_TITLE_LENGTH, "client system title")
        + challenge
        + _counter(frame_counter, "frame counter").to_bytes(4, "big")
    )
    return hmac.new(bytes(key_ak), message, hashlib.sha256).digest()


def verify_frame_counter_response(
    key_ak: bytes,
    server_system_title: bytes,
    client_system_title: bytes,
    challenge: bytes,
    frame_counter: int,
    challenge_response: bytes,
) -> int:
    """Client side: the frame counter if the meter's HMAC verifies, else AuthenticationError."""
    expected = frame_counter_response(key_ak, server_system_title, client_system_title, challenge, frame_counter)
    if not isinstance(challenge_response, (bytes, bytearray)) or not hmac.compare_digest(
        expected, bytes(challenge_response)
    ):
        raise AuthenticationError("frame counter challenge response does not verify")
    return frame_counter

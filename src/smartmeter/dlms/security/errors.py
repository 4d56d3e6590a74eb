"""Typed errors of the DLMS security layer.

Every failure of a security primitive is a `SecurityError` (a `SmartmeterError`), so the
server can map each kind to the response the Green Book asks for (deciphering-error,
invocation-counter-error, authentication failure, ...). The ones that are really
malformed input are also `DecodeError`s, so generic decoder handling catches them too.
"""
from __future__ import annotations

from smartmeter.errors import DecodeError, EncodeError, SmartmeterError, TruncatedError

__all__ = [
    "SecurityError",
    "AuthenticationError",
    "SecurityControlError",
    "ProtectedTruncatedError",
    "InvalidKeyError",
    "ReplayError",
    "CounterExhaustedError",
    "KeyUnwrapError",
    "SecurityEncodeError",
]


class SecurityError(SmartmeterError):
    """Base of every error raised by `smartmeter.dlms.security`."""


class AuthenticationError(SecurityError):
    """A GCM tag, GMAC, HLS response, HMAC or ECDSA signature did not verify."""


class SecurityControlError(SecurityError, DecodeError):
    """The security control byte is unusable here: unknown suite, compression, no
    protection, or not the suite/policy the receiver expects."""


class ProtectedTruncatedError(SecurityError, TruncatedError):
    """Protected bytes too short for the security header or the authentication tag."""


class InvalidKeyError(SecurityError, ValueError):
    """A key, system title or public key has the wrong size, type or curve."""


class ReplayError(SecurityError):
    """A received invocation counter is not above the last accepted one."""

    def __init__(self, counter: int, last_accepted: int | None) -> None:
        self.counter = counter
        self.last_accepted = last_accepted
        super().__init__(
            f"invocation counter {counter} is not above the last accepted {last_accepted}"
        )


class CounterExhaustedError(SecurityError):
    """The sending invocation counter reached 0xFFFFFFFF: the key must be changed."""


class KeyUnwrapError(SecurityError):
    """AES key unwrap failed its integrity check (wrong KEK or damaged data)."""


class SecurityEncodeError(SecurityError, EncodeError):
    """A value given to a security function cannot be encoded (range, length, type)."""

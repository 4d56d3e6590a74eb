"""DLMS/COSEM security (Green Book security, companion standard §3.1–§3.5), sans-io.

* `suites`        – suites 0/1/2, security control byte, AES-GCM protect/unprotect
* `hls`           – HLS mechanisms 5 (GMAC), 6 (SHA-256), 7 (ECDSA), client and server side
* `signing`       – ECDSA in DLMS form (r || s signatures, x || y public keys)
* `keys`          – AES key wrap, IC 64 key_transfer / key_agreement, SP 800-56A KDF
* `frame_counter` – replay window, sending counter, Appendix 1 HMAC frame-counter readout
* `errors`        – the SecurityError family

Every primitive comes from `cryptography`; randomness from `secrets`/OpenSSL.
"""
from smartmeter.dlms.security.errors import (
    AuthenticationError,
    CounterExhaustedError,
    InvalidKeyError,
    KeyUnwrapError,
    ProtectedTruncatedError,
    ReplayError,
    SecurityControlError,
    SecurityEncodeError,
    SecurityError,
)
from smartmeter.dlms.security.suites import (
    ProtectedContent,
    SecurityControl,
    SecuritySuite,
    protect,
    protect_content,
    suite_parameters,
    unprotect,
    unprotect_content,
)

__all__ = [
    "AuthenticationError",
    "CounterExhaustedError",
    "InvalidKeyError",
    "KeyUnwrapError",
    "ProtectedTruncatedError",
    "ReplayError",
    "SecurityControlError",
    "SecurityEncodeError",
    "SecurityError",
    "ProtectedContent",
    "SecurityControl",
    "SecuritySuite",
    "protect",
    "protect_content",
    "suite_parameters",
    "unprotect",
    "unprotect_content",
]

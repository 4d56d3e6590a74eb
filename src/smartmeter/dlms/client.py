"""The DLMS/COSEM client application layer, sans-io.

Each operation is an `Exchange`: `first()` gives the request APDU; `feed(response)` either
returns the next request APDU (block transfer in progress) or None when `result` is ready.
A driver (see `smartmeter.hes`) moves the bytes; this module never touches a socket.

Security (companion standard §3.3.3, §3.5, §3.6; Green Book 9.2): a `ClientAssociation`
built with a `ClientSecurity` sends the AARQ with the ciphering context, the client system
title and a challenge CtoS, reads the server system title, StoC and the ciphered
InitiateResponse from the AARE, and then offers `hls_exchange()` (pass 3/4, for HLS 5/6/7)
and `secure(exchange)`, which protects every request of an unchanged Get/Set/Action
exchange and checks (replay window, tag, policy) every response before the exchange sees
it. Invocation counters come from a `CounterStore`, which records each counter as used
before it is handed out, so a crash between "counter taken" and "message sent" can only
skip counters, never repeat one.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import IntFlag
from typing import Any, Callable, Union

from cryptography.hazmat.primitives.asymmetric import ec

from smartmeter.cosem import axdr
from smartmeter.cosem.data import Data, DataType
from smartmeter.dlms.apdu import acse, action, get, set as set_
from smartmeter.dlms.apdu import ciphered
from smartmeter.dlms.apdu.common import (
    ActionResult, CosemAttributeDescriptor, CosemMethodDescriptor, DataAccessResult, SelectiveAccessDescriptor,
)
from smartmeter.dlms.apdu.errors import ConfirmedServiceError, ExceptionResponse, ServiceError
from smartmeter.dlms.apdu.gbt import GeneralBlockTransfer
from smartmeter.dlms.apdu.initiate import Conformance, InitiateRequest, InitiateResponse
from smartmeter.dlms.apdu.xdlms import decode_xdlms
from smartmeter.dlms.security import hls, signing
from smartmeter.dlms.security.errors import ReplayError, SecurityError
from smartmeter.dlms.security.frame_counter import FrameCounterWindow, TxFrameCounter
from smartmeter.dlms.security.suites import (
    INVOCATION_COUNTER_MAX, SC_AUTHENTICATION, SC_ENCRYPTION, SC_SUITE_MASK, SYSTEM_TITLE_LENGTH, TAG_LENGTH,
    suite_parameters, unprotect_content,
)
from smartmeter.errors import DecodeError, SmartmeterError

CLIENT_CONFORMANCE = (
    Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ | Conformance.BLOCK_TRANSFER_WITH_SET_OR_WRITE
    | Conformance.BLOCK_TRANSFER_WITH_ACTION | Conformance.MULTIPLE_REFERENCES | Conformance.GET | Conformance.SET
    | Conformance.SELECTIVE_ACCESS | Conformance.ACTION | Conformance.ATTRIBUTE0_SUPPORTED_WITH_GET
    | Conformance.GENERAL_BLOCK_TRANSFER | Conformance.ACCESS | Conformance.DATA_NOTIFICATION
)
INVOKE_ID_AND_PRIORITY = 0xC1  # invoke id 1, confirmed, high priority
MAX_BLOCKS = 100_000  # a server that never says "last block" cannot keep a client forever
MAX_RESPONSE = 16 * 1024 * 1024


class ClientError(SmartmeterError):
    """The meter refused or answered something this client cannot use."""


class AssociationRefused(ClientError):
    """The AARE's result is not accepted: 1 rejected-permanent, 2 rejected-transient."""

    def __init__(self, message: str, result: int | None = None) -> None:
        self.result = result
        super().__init__(message)


class AccessDenied(ClientError):
    """A Data-Access-Result / Action-Result other than success."""

    def __init__(self, result: DataAccessResult | ActionResult, what: str) -> None:
        self.result = result
        super().__init__(f"{what}: the meter answered {result.name.lower().replace('_', '-')}")


class DecipheringError(ClientError):
    """The meter could not remove the protection of our request (exception-response
    deciphering-error): wrong keys, wrong system title or wrong security suite."""


class InvocationCounterError(ClientError):
    """The meter refused our invocation counter as not above the last one it accepted
    (exception-response invocation-counter-error). `meter_counter` is the value it sent."""

    def __init__(self, message: str, meter_counter: int | None) -> None:
        self.meter_counter = meter_counter
        super().__init__(message)


class SecurityConfigurationError(ClientError):
    """A `ClientSecurity` that cannot work: missing key, wrong length, unsupported policy."""


class ClientSecurityError(ClientError):
    """Something the meter sent fails this client's security checks."""


class AuthenticationFailed(ClientSecurityError):
    """HLS failed: the meter refused our f(StoC), or its f(CtoS) does not verify."""


class ProtectionError(ClientSecurityError):
    """A response is not protected as the security policy requires, or its tag does not
    verify (it may have been forged or damaged)."""


class ReplayedResponse(ClientSecurityError):
    """A response's invocation counter is not above the last one accepted from the meter."""


def _unexpected(apdu: Any, what: str) -> ClientError:
    if isinstance(apdu, ExceptionResponse):
        if apdu.service_error == ServiceError.DECIPHERING_ERROR:
            return DecipheringError(
                f"{what}: the meter could not decipher the request (exception-response deciphering-error); "
                "check the keys, system titles and security suite")
        if apdu.service_error == ServiceError.INVOCATION_COUNTER_ERROR:
            return InvocationCounterError(
                f"{what}: the meter refused the invocation counter (exception-response invocation-counter-error, "
                f"meter counter {apdu.invocation_counter}); the client's counter is behind the meter's",
                apdu.invocation_counter)
        return ClientError(f"{what}: exception-response {apdu.state_error.name.lower()} / {apdu.service_error.name.lower()}")
    if isinstance(apdu, ConfirmedServiceError):
        return ClientError(f"{what}: confirmed-service-error {apdu.error_type}/{apdu.error_value}")
    return ClientError(f"{what}: unexpected {type(apdu).__name__}")


class Exchange:
    """One request, possibly several blocks, one result."""

    what = "request"

    def __init__(self) -> None:
        self.result: Any = None
        self.done = False
        self._gbt_parts: list[bytes] = []
        self._gbt_size = 0

    def first(self) -> bytes:
        raise NotImplementedError

    def feed(self, response: bytes) -> bytes | None:
        if response[:1] == b"\xe0":
            return self._gbt(GeneralBlockTransfer.from_bytes(response))
        return self._on(decode_xdlms(response))

    def _gbt(self, block: GeneralBlockTransfer) -> bytes | None:
        self._gbt_parts.append(block.block_data)
        self._gbt_size += len(block.block_data)
        if len(self._gbt_parts) > MAX_BLOCKS or self._gbt_size > MAX_RESPONSE:
            raise ClientError(f"{self.what}: general-block-transfer response too long")
        if not block.last_block:
            return GeneralBlockTransfer(False, False, 1, 0, block.block_number, b"").to_bytes()
        whole = b"".join(self._gbt_parts)
        self._gbt_parts, self._gbt_size = [], 0
        return self.feed(whole)

    def _on(self, apdu: Any) -> bytes | None:
        raise NotImplementedError


class GetExchange(Exchange):
    """One GET. With `rows=True` an array of structures (a profile buffer) comes back as plain
    row tuples through the bulk decoder (`axdr.decode_rows`) instead of a Data tree."""

    def __init__(self, descriptor: CosemAttributeDescriptor, selection: SelectiveAccessDescriptor | None = None,
                 rows: bool = False) -> None:
        super().__init__()
        self.descriptor = descriptor
        self.selection = selection
        self.rows = rows
        self.what = f"GET {descriptor.class_id}/{descriptor.instance_id.hex()}/{descriptor.attribute_id}"
        self._blocks: list[bytes] = []
        self._size = 0

    def first(self) -> bytes:
        return get.GetRequestNormal(INVOKE_ID_AND_PRIORITY, self.descriptor, self.selection).to_bytes()

    def _on(self, apdu: Any) -> bytes | None:
        if isinstance(apdu, get.GetResponseNormal):
            if isinstance(apdu.result, DataAccessResult):
                raise AccessDenied(apdu.result, self.what)
            self.result, self.done = apdu.result, True
            if self.rows:
                self.result = axdr.rows_of(apdu.result)
            return None
        if isinstance(apdu, get.GetResponseWithDataBlock):
            if apdu.error is not None:
                raise AccessDenied(apdu.error, self.what)
            if apdu.block_number != len(self._blocks) + 1:
                raise ClientError(f"{self.what}: block {apdu.block_number} out of order")
            self._blocks.append(apdu.raw_data or b"")
            self._size += len(apdu.raw_data or b"")
            if self._size > MAX_RESPONSE or len(self._blocks) > MAX_BLOCKS:
                raise ClientError(f"{self.what}: response too long")
            if not apdu.last_block:
                return get.GetRequestNext(INVOKE_ID_AND_PRIORITY, apdu.block_number).to_bytes()
            data = b"".join(self._blocks)
            if self.rows:
                rows, end = axdr.decode_rows(data)
                if end != len(data):
                    raise DecodeError("profile buffer", end, "bytes after the array")
                self.result, self.done = rows, True
            else:
                self.result, self.done = axdr.decode_all(data), True
            return None
        raise _unexpected(apdu, self.what)


class SetExchange(Exchange):
    def __init__(self, descriptor: CosemAttributeDescriptor, value: Data, max_pdu: int,
                 selection: SelectiveAccessDescriptor | None = None) -> None:
        super().__init__()
        self.descriptor, self.value, self.selection = descriptor, value, selection
        self.what = f"SET {descriptor.class_id}/{descriptor.instance_id.hex()}/{descriptor.attribute_id}"
        self._encoded = axdr.encode(value)
        self._block_size = max(16, max_pdu - 32)
        self._sent = 0
        self._block = 0

    def first(self) -> bytes:
        normal = set_.SetRequestNormal(INVOKE_ID_AND_PRIORITY, self.descriptor, self.selection, self.value).to_bytes()
        if len(normal) <= self._block_size + 16:
            self._sent = len(self._encoded)
            return normal
        return self._next_block(first=True)

    def _next_block(self, first: bool = False) -> bytes:
        chunk = self._encoded[self._sent:self._sent + self._block_size]
        self._sent += len(chunk)
        self._block += 1
        last = self._sent >= len(self._encoded)
        if first:
            return set_.SetRequestWithFirstDatablock(
                INVOKE_ID_AND_PRIORITY, self.descriptor, self.selection, last, self._block, chunk).to_bytes()
        return set_.SetRequestWithDatablock(INVOKE_ID_AND_PRIORITY, last, self._block, chunk).to_bytes()

    def _on(self, apdu: Any) -> bytes | None:
        if isinstance(apdu, set_.SetResponseDatablock) and self._sent < len(self._encoded):
            return self._next_block()
        if isinstance(apdu, (set_.SetResponseNormal, set_.SetResponseLastDatablock)):
            if apdu.result != DataAccessResult.SUCCESS:
                raise AccessDenied(apdu.result, self.what)
            self.done = True
            return None
        raise _unexpected(apdu, self.what)


class ActionExchange(Exchange):
    def __init__(self, descriptor: CosemMethodDescriptor, parameters: Data | None = None) -> None:
        super().__init__()
        self.descriptor, self.parameters = descriptor, parameters
        self.what = f"ACTION {descriptor.class_id}/{descriptor.instance_id.hex()}/{descriptor.method_id}"
        self._blocks: list[bytes] = []

    def first(self) -> bytes:
        return action.ActionRequestNormal(INVOKE_ID_AND_PRIORITY, self.descriptor, self.parameters).to_bytes()

    def _on(self, apdu: Any) -> bytes | None:
        if isinstance(apdu, action.ActionResponseNormal):
            if apdu.result != ActionResult.SUCCESS:
                raise AccessDenied(apdu.result, self.what)
            if isinstance(apdu.return_data, DataAccessResult):
                raise AccessDenied(apdu.return_data, self.what)
            self.result, self.done = apdu.return_data, True
            return None
        if isinstance(apdu, action.ActionResponseWithPblock):
            self._blocks.append(apdu.raw_data)
            if not apdu.last_block:
                return action.ActionRequestNextPblock(INVOKE_ID_AND_PRIORITY, apdu.block_number).to_bytes()
            # the blocks carry the response's action-result and optional data, re-framed here
            return self._on(action.ActionResponseNormal.from_bytes(b"\xc7\x01" + bytes([INVOKE_ID_AND_PRIORITY]) + b"".join(self._blocks)))
        raise _unexpected(apdu, self.what)


@dataclass
class Negotiated:
    conformance: Conformance
    server_max_receive_pdu_size: int
    dlms_version: int


# ---------------------------------------------------------------------------------------
# Security configuration
# ---------------------------------------------------------------------------------------


class SecurityPolicy(IntFlag):
    """IC 64 version 1 `security_policy` (bits 0 and 1 are unused)."""

    NONE = 0
    AUTHENTICATED_REQUEST = 0x04
    ENCRYPTED_REQUEST = 0x08
    SIGNED_REQUEST = 0x10
    AUTHENTICATED_RESPONSE = 0x20
    ENCRYPTED_RESPONSE = 0x40
    SIGNED_RESPONSE = 0x80


#: "all messages are authenticated and encrypted" (§3.6.2, 3.6.3, 3.6.5, 3.6.7, 3.6.8)
POLICY_ALL_AUTHENTICATED_ENCRYPTED = 0x6C
#: "all messages are authenticated" (§3.6.6 Installation client)
POLICY_ALL_AUTHENTICATED = 0x24

_POLICY_KNOWN = 0xFC
_SIGNED = SecurityPolicy.SIGNED_REQUEST | SecurityPolicy.SIGNED_RESPONSE

MECHANISM_LOWEST = 0
MECHANISM_HLS_GMAC = 5
MECHANISM_HLS_SHA256 = 6
MECHANISM_HLS_ECDSA = 7
SECURED_MECHANISMS = (MECHANISM_LOWEST, MECHANISM_HLS_GMAC, MECHANISM_HLS_SHA256, MECHANISM_HLS_ECDSA)

#: CtoS lengths: 32 bytes for HLS 7 (the ECDSA input), 16 for HLS 5/6.
CTOS_LENGTH = {MECHANISM_HLS_GMAC: 16, MECHANISM_HLS_SHA256: 16, MECHANISM_HLS_ECDSA: 32}

CURRENT_ASSOCIATION_LN = bytes((0, 0, 40, 0, 0, 255))
REPLY_TO_HLS_AUTHENTICATION = CosemMethodDescriptor(15, CURRENT_ASSOCIATION_LN, 1)

#: Bytes a service-specific ciphered request adds to the plain one at most: tag, a 3-byte
#: length, SC, IC and the tag of the GCM authentication.
PROTECTION_OVERHEAD = 1 + 3 + 1 + 4 + TAG_LENGTH


class CounterStore:
    """The client's sending invocation counter for the global key, and the last counter
    accepted from the meter under that key.

    `reserve()` records a counter as used (via `_persist`) *before* returning it; if that
    fails nothing is handed out. Subclasses override `_persist` to make it durable (the
    head-end's sidecar file, `smartmeter.hes.credentials.FileCounterStore`); this base
    keeps the values in memory only.
    """

    def __init__(self, last_used: int | None = None, server_last_seen: int | None = None) -> None:
        self._tx = TxFrameCounter(last_used)
        self._rx = FrameCounterWindow(server_last_seen)

    @property
    def last_used(self) -> int | None:
        return self._tx.last_used

    @property
    def server_last_seen(self) -> int | None:
        return self._rx.last_accepted

    def reserve(self) -> int:
        """The next invocation counter, already recorded as used."""
        probe = TxFrameCounter(self._tx.last_used)
        try:
            counter = probe.reserve()
        except SecurityError as exc:
            raise ClientSecurityError(f"{exc}") from None
        self._persist(counter, self._rx.last_accepted)
        self._tx = probe
        return counter

    def accept_server(self, counter: int) -> None:
        """Record `counter` as the meter's latest (already replay-checked by the caller)."""
        pending = self._rx.check(counter)
        self._persist(self._tx.last_used, counter)
        self._rx.commit(pending)

    def check_server(self, counter: int) -> None:
        """ReplayError unless `counter` is above the last accepted; changes nothing."""
        self._rx.check(counter)

    def reset(self) -> None:
        """A new global unicast key is in use: nothing sent or received under it yet."""
        self._persist(None, None)
        self._tx, self._rx = TxFrameCounter(None), FrameCounterWindow(None)

    def _persist(self, last_used: int | None, server_last_seen: int | None) -> None:
        """Make both values durable before they take effect (in memory: nothing to do)."""


class CallableCounterStore(CounterStore):
    """A `CounterStore` over a caller's function that returns the next counter to use
    (and is responsible for having persisted it)."""

    def __init__(self, next_counter: Callable[[], int]) -> None:
        super().__init__()
        self._next = next_counter

    def reserve(self) -> int:
        counter = self._next()
        if type(counter) is not int or not 0 <= counter <= INVOCATION_COUNTER_MAX:
            raise SecurityConfigurationError(f"the invocation counter source returned {counter!r}")
        if self._tx.last_used is not None and counter <= self._tx.last_used:
            raise ClientSecurityError(f"the invocation counter source repeated counter {counter}")
        self._tx = TxFrameCounter(counter)
        return counter


def _key(value: bytes | None, length: int, what: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, (bytes, bytearray)) or len(value) != length:
        got = len(value) if isinstance(value, (bytes, bytearray)) else type(value).__name__
        raise SecurityConfigurationError(f"{what} must be {length} bytes for this security suite, got {got}")
    return bytes(value)


@dataclass(frozen=True)
class ClientSecurity:
    """Everything one client needs to associate securely.

    * mechanism: 0 (lowest), 5 (HLS GMAC), 6 (HLS SHA-256) or 7 (HLS ECDSA);
    * suite: security suite 0, 1 or 2; policy: IC 64 v1 security_policy bits;
    * client_system_title (8 bytes), server_system_title (8 bytes, or None to learn it
      from the AARE's responding-AP-title);
    * ek, ak: global unicast encryption and authentication keys (suite key length);
    * hls_secret: HLS 6 secret; client_signing_key / server_signing_key: HLS 7 keys;
    * invocation_counter: a `CounterStore` (or a callable returning the next counter);
      None keeps the counters in memory only, for tests and one-shot tools;
    * dedicated_key: a fixed dedicated key, or use_dedicated_key=True for a fresh one per
      association.
    """

    mechanism: int = MECHANISM_LOWEST
    suite: int = 0
    policy: int = 0
    client_system_title: bytes | None = None
    server_system_title: bytes | None = None
    ek: bytes | None = None
    ak: bytes | None = None
    hls_secret: bytes | None = None
    client_signing_key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False)
    server_signing_key: ec.EllipticCurvePublicKey | None = field(default=None, repr=False)
    invocation_counter: Union[CounterStore, Callable[[], int], None] = field(default=None, repr=False, compare=False)
    dedicated_key: bytes | None = field(default=None, repr=False)
    use_dedicated_key: bool = False

    def __post_init__(self) -> None:
        if self.mechanism not in SECURED_MECHANISMS:
            raise SecurityConfigurationError(
                f"authentication mechanism {self.mechanism!r} is not 0, 5, 6 or 7")
        try:
            params = suite_parameters(self.suite)
        except SecurityError:
            raise SecurityConfigurationError(f"security suite {self.suite!r} is not 0, 1 or 2") from None
        if type(self.policy) is not int and not isinstance(self.policy, IntFlag) or not 0 <= int(self.policy) <= 0xFF \
                or int(self.policy) & ~_POLICY_KNOWN:
            raise SecurityConfigurationError(
                f"security policy {self.policy!r} is not an IC 64 v1 policy (bits 2..7)")
        if int(self.policy) & _SIGNED:
            raise SecurityConfigurationError("digitally signed requests/responses (general-signing) are not supported")
        for name in ("client_system_title", "server_system_title"):
            _key(getattr(self, name), SYSTEM_TITLE_LENGTH, name.replace("_", " "))
        for name in ("ek", "ak", "dedicated_key"):
            _key(getattr(self, name), params.key_length, {"ek": "EK", "ak": "AK", "dedicated_key": "dedicated key"}[name])
        if self.ciphered_context:
            if self.client_system_title is None:
                raise SecurityConfigurationError("the client system title is needed with ciphering or HLS")
            if self.ek is None or self.ak is None:
                raise SecurityConfigurationError("EK and AK are needed with ciphering or HLS 5/7")
        if self.mechanism == MECHANISM_HLS_SHA256:
            if not isinstance(self.hls_secret, (bytes, bytearray)) or not self.hls_secret:
                raise SecurityConfigurationError("HLS 6 needs the HLS secret")
            if self.client_system_title is None:
                raise SecurityConfigurationError("HLS 6 needs the client system title")
        if self.mechanism == MECHANISM_HLS_ECDSA:
            if not params.has_public_key:
                raise SecurityConfigurationError("HLS 7 needs security suite 1 or 2")
            for key, kind, what in ((self.client_signing_key, ec.EllipticCurvePrivateKey, "client signing private key"),
                                    (self.server_signing_key, ec.EllipticCurvePublicKey, "server signing public key")):
                if not isinstance(key, kind):
                    raise SecurityConfigurationError(f"HLS 7 needs the {what}")
                if not isinstance(key.curve, params.curve):
                    raise SecurityConfigurationError(f"the {what} is on {key.curve.name}, not the suite's curve")
        if (self.dedicated_key is not None or self.use_dedicated_key) and not self.ciphered_context:
            raise SecurityConfigurationError("a dedicated key needs a ciphering context (policy or HLS 5/7)")

    @property
    def ciphered_context(self) -> bool:
        """Logical_Name_Referencing_With_Ciphering: a policy, or HLS 5/7 (§3.3.3)."""
        return int(self.policy) != 0 or self.mechanism in (MECHANISM_HLS_GMAC, MECHANISM_HLS_ECDSA)

    @property
    def request_sc(self) -> int:
        policy = int(self.policy)
        return (int(self.suite) | (SC_AUTHENTICATION if policy & SecurityPolicy.AUTHENTICATED_REQUEST else 0)
                | (SC_ENCRYPTION if policy & SecurityPolicy.ENCRYPTED_REQUEST else 0))


# ---------------------------------------------------------------------------------------
# The association
# ---------------------------------------------------------------------------------------

_INITIATE_SC = SC_AUTHENTICATION | SC_ENCRYPTION
_PLAIN_ERROR_TAGS = (0xD8, 0x0E)  # exception-response, confirmed-service-error
_INITIATE_RESPONSE_TAGS = {0x28: False, 0x48: True}  # glo-/ded-initiateResponse -> dedicated?


class ClientAssociation:
    """ACSE for a client: the AARQ to send and what the AARE tells; with `security`, also
    HLS pass 3/4 (`hls_exchange`) and the protection of every later request (`secure`).

    Sans-io: randomness comes from `rng` (default `secrets.token_bytes`).
    """

    def __init__(self, *, mechanism: int = 0, conformance: Conformance = CLIENT_CONFORMANCE,
                 max_receive_pdu_size: int = 1224, calling_ap_title: bytes | None = None,
                 authentication_value: bytes | None = None, security: ClientSecurity | None = None,
                 rng: Callable[[int], bytes] = secrets.token_bytes) -> None:
        if security is not None:
            if not isinstance(security, ClientSecurity):
                raise SecurityConfigurationError("security must be a ClientSecurity")
            if mechanism not in (0, security.mechanism):
                raise SecurityConfigurationError(
                    f"mechanism {mechanism} conflicts with the security's mechanism {security.mechanism}")
            mechanism = security.mechanism
            calling_ap_title = security.client_system_title
        self.mechanism = mechanism
        self.conformance = conformance
        self.max_receive_pdu_size = max_receive_pdu_size
        self.calling_ap_title = calling_ap_title
        self.authentication_value = authentication_value
        self.security = security
        self.negotiated: Negotiated | None = None
        self._rng = rng
        # security state
        self.server_system_title: bytes | None = security.server_system_title if security else None
        self.stoc: bytes | None = None
        self.ctos: bytes | None = None
        self.dedicated_key: bytes | None = None
        self.authenticated = security is None or security.mechanism == MECHANISM_LOWEST
        self._ek = security.ek if security else None
        self._ak = security.ak if security else None
        self._counters = self._make_store(security.invocation_counter) if security else CounterStore()
        self._ded_tx = TxFrameCounter(None)
        self._ded_rx = FrameCounterWindow(None)
        self._last_response_counter: int | None = None

    @staticmethod
    def _make_store(source) -> CounterStore:
        if source is None:
            return CounterStore()
        if isinstance(source, CounterStore):
            return source
        if callable(source):
            return CallableCounterStore(source)
        raise SecurityConfigurationError("invocation_counter must be a CounterStore or a callable")

    @property
    def counters(self) -> CounterStore:
        return self._counters

    @property
    def ciphered(self) -> bool:
        return self.security is not None and self.security.ciphered_context

    # -- pass 1/2 ---------------------------------------------------------------------------
    def aarq(self) -> bytes:
        sec = self.security
        if sec is not None and sec.mechanism != MECHANISM_LOWEST:
            self.ctos = hls.new_challenge(CTOS_LENGTH[sec.mechanism], self._rng)
            self.authentication_value = self.ctos
        if sec is not None and self.ciphered:
            self.dedicated_key = sec.dedicated_key
            if self.dedicated_key is None and sec.use_dedicated_key:
                self.dedicated_key = self._rng(suite_parameters(sec.suite).key_length)
            self._ded_tx, self._ded_rx = TxFrameCounter(None), FrameCounterWindow(None)
        initiate = InitiateRequest(
            dedicated_key=self.dedicated_key if self.ciphered else None, response_allowed=True,
            proposed_quality_of_service=None, proposed_dlms_version_number=6, proposed_conformance=self.conformance,
            client_max_receive_pdu_size=self.max_receive_pdu_size,
        )
        user_information = initiate.to_bytes()
        if self.ciphered:
            user_information = self._protect_global(ciphered.GloInitiateRequest, _INITIATE_SC | sec.suite,
                                                    user_information)
        context = acse.ApplicationContextName.LOGICAL_NAME_WITH_CIPHERING if self.ciphered \
            else acse.ApplicationContextName.LOGICAL_NAME
        return acse.AARQ(
            application_context_name=context, calling_ap_title=self.calling_ap_title, calling_ae_qualifier=None,
            called_ap_title=None, called_ae_qualifier=None, sender_acse_requirements=self.mechanism != 0,
            mechanism_name=self.mechanism or None, calling_authentication_value=self.authentication_value,
            user_information=user_information,
        ).to_bytes()

    def on_aare(self, apdu: bytes) -> Negotiated:
        try:
            aare = acse.decode_acse(apdu)
        except DecodeError:
            if apdu[:1] in (b"\xd8", b"\x0e"):
                raise _unexpected(decode_xdlms(apdu), "association") from None
            raise
        if not isinstance(aare, acse.AARE):
            raise ClientError(f"association: expected an AARE, got {type(aare).__name__}")
        if aare.result != 0:
            detail = self._refusal_detail(aare.user_information)
            raise AssociationRefused(
                f"the meter refused the association: result {aare.result}, diagnostic {aare.diagnostic}{detail}",
                aare.result)
        if not aare.user_information:
            raise ClientError("association: the AARE carries no InitiateResponse")
        sec = self.security
        user_information = aare.user_information
        if sec is not None:
            self._learn_server_title(aare.responding_ap_title)
        if self.ciphered:
            user_information = self._open_initiate_response(user_information)
        elif user_information[:1] in (bytes((t,)) for t in _INITIATE_RESPONSE_TAGS):
            raise ProtectionError("association: the meter sent a ciphered InitiateResponse in a plain context")
        if sec is not None and sec.mechanism != MECHANISM_LOWEST:
            if aare.mechanism_name is not None and aare.mechanism_name != sec.mechanism:
                raise AuthenticationFailed(
                    f"association: the meter answered mechanism {int(aare.mechanism_name)}, not {sec.mechanism}")
            stoc = aare.responding_authentication_value
            if stoc is None or not hls.CHALLENGE_MIN <= len(stoc) <= hls.CHALLENGE_MAX:
                raise AuthenticationFailed("association: the AARE carries no usable challenge StoC (8..64 bytes)")
            self.stoc = bytes(stoc)
        try:
            response = InitiateResponse.from_bytes(user_information)
        except DecodeError:
            raise ClientError("association: the InitiateResponse cannot be decoded") from None
        self.negotiated = Negotiated(
            response.negotiated_conformance, response.server_max_receive_pdu_size,
            response.negotiated_dlms_version_number,
        )
        return self.negotiated

    def _refusal_detail(self, user_information: bytes | None) -> str:
        if not user_information:
            return ""
        plain = user_information
        if user_information[:1] in (b"\x2e", b"\x4e") and self.ciphered:
            # best effort: a refusal is reported whether or not its protection verifies
            try:
                apdu = ciphered.decode_ciphered(user_information)
                key = self.dedicated_key if apdu.DEDICATED else self._ek
                plain = unprotect_content(apdu.content, key, self._ak, self.server_system_title or b"\0" * 8)[1]
            except (DecodeError, SecurityError, TypeError):
                return " (ciphered initiate error)"
        try:
            err = decode_xdlms(plain)
        except DecodeError:
            return ""
        return f" (initiate error {err.error_value})" if isinstance(err, ConfirmedServiceError) else ""

    def _learn_server_title(self, responding: bytes | None) -> None:
        if responding is not None and len(responding) != SYSTEM_TITLE_LENGTH:
            raise ProtectionError(f"association: responding-AP-title has {len(responding)} bytes, not 8")
        if self.server_system_title is None:
            self.server_system_title = responding
        elif responding is not None and responding != self.server_system_title:
            raise AuthenticationFailed(
                f"association: the meter's system title {responding.hex().upper()} is not the expected "
                f"{self.server_system_title.hex().upper()}")
        needs_title = self.ciphered or self.security.mechanism in (MECHANISM_HLS_SHA256, MECHANISM_HLS_ECDSA)
        if needs_title and self.server_system_title is None:
            raise ProtectionError("association: the AARE carries no responding-AP-title (server system title)")

    def _open_initiate_response(self, user_information: bytes) -> bytes:
        if user_information[:1] not in (bytes((t,)) for t in _INITIATE_RESPONSE_TAGS):
            raise ProtectionError("association: the InitiateResponse is not ciphered (glo-initiate-response expected)")
        return self.unprotect_response(user_information, expect_initiate=True)

    # -- pass 3/4 ---------------------------------------------------------------------------
    @property
    def needs_hls(self) -> bool:
        """True between an accepted AARE and a verified pass 3/4 (HLS 5/6/7)."""
        return self.negotiated is not None and not self.authenticated

    def hls_exchange(self) -> Exchange:
        """ACTION reply_to_HLS_authentication with f(StoC); verifies f(CtoS) when fed the
        answer (AuthenticationFailed otherwise). Protected with the global key (§3.5.4)."""
        if not self.needs_hls or self.stoc is None or self.ctos is None:
            raise ClientError("HLS pass 3/4 needs an accepted AARE of an HLS association first")
        sec = self.security
        if sec.mechanism == MECHANISM_HLS_GMAC:
            f_stoc = hls.hls5_response(sec.suite, self._ek, self._ak, sec.client_system_title,
                                       self._counters.reserve(), self.stoc)
        elif sec.mechanism == MECHANISM_HLS_SHA256:
            f_stoc = hls.hls6_client_response(sec.hls_secret, sec.client_system_title, self.server_system_title,
                                              self.stoc, self.ctos)
        else:
            f_stoc = hls.hls7_client_response(sec.client_signing_key, sec.client_system_title,
                                              self.server_system_title, self.stoc, self.ctos, sec.suite)
        return SecuredExchange(self, _HlsReplyExchange(self, f_stoc), dedicated=False, before_authentication=True)

    def _verify_f_ctos(self, f_ctos: bytes, outer_counter: int | None, window_before: int | None) -> None:
        sec = self.security
        try:
            if sec.mechanism == MECHANISM_HLS_GMAC:
                counter = hls.verify_hls5_response(sec.suite, self._ek, self._ak, self.server_system_title,
                                                   self.ctos, f_ctos)
                # f(CtoS) consumed a counter of the meter's global sending counter: it must be
                # new, and not the one of the response that carried it.
                if (window_before is not None and counter <= window_before) or counter == outer_counter:
                    raise ReplayedResponse(f"HLS: f(CtoS) reuses the meter's invocation counter {counter}")
                if self._counters.server_last_seen is None or counter > self._counters.server_last_seen:
                    self._counters.accept_server(counter)
            elif sec.mechanism == MECHANISM_HLS_SHA256:
                hls.verify_hls6_server_response(sec.hls_secret, self.server_system_title, sec.client_system_title,
                                                self.ctos, self.stoc, f_ctos)
            else:
                hls.verify_hls7_server_response(sec.server_signing_key, self.server_system_title,
                                                sec.client_system_title, self.ctos, self.stoc, f_ctos, sec.suite)
        except SecurityError as exc:
            raise AuthenticationFailed(f"HLS: the meter's f(CtoS) does not verify ({exc})") from None
        self.authenticated = True

    # -- protection of requests and responses ----------------------------------------------
    def secure(self, exchange: Exchange) -> Exchange:
        """`exchange` with every request protected and every response checked as the
        security says; the exchange itself unchanged. Without ciphering: `exchange`."""
        if not self.ciphered:
            if not self.authenticated:
                raise ClientError("the association is not authenticated yet: run hls_exchange() first")
            return exchange
        return SecuredExchange(self, exchange, dedicated=self.dedicated_key is not None)

    @property
    def protection_overhead(self) -> int:
        return PROTECTION_OVERHEAD if self.ciphered and self.security.request_sc & 0x30 else 0

    def _protect_global(self, cls, sc: int, plain: bytes) -> bytes:
        sec = self.security
        return cls.protect(sc, self._ek, self._ak, sec.client_system_title, self._counters.reserve(), plain).to_bytes()

    def protect_request(self, plain: bytes, *, dedicated: bool = False) -> bytes:
        """The request as the policy wants it on the wire (glo- or ded- service-specific
        ciphering; general-glo/ded-ciphering for services without a specific tag)."""
        sec = self.security
        if sec is None or not self.ciphered:
            return plain
        sc = sec.request_sc
        if not sc & (SC_AUTHENTICATION | SC_ENCRYPTION):
            return plain
        if plain[:1] == b"\xe0":
            return plain  # general-block-transfer acknowledgements carry no content
        if dedicated:
            if self.dedicated_key is None:
                raise ClientError("no dedicated key is in use")
            try:
                counter = self._ded_tx.reserve()
            except SecurityError as exc:
                raise ClientSecurityError(str(exc)) from None
            cls = ciphered.DED_TAG_FOR_PLAIN.get(plain[0], ciphered.GeneralDedCiphering)
            return cls.protect(sc, self.dedicated_key, self._ak, sec.client_system_title, counter, plain).to_bytes()
        cls = ciphered.GLO_TAG_FOR_PLAIN.get(plain[0], ciphered.GeneralGloCiphering)
        return self._protect_global(cls, sc, plain)

    def unprotect_response(self, apdu: bytes, *, expect_initiate: bool = False) -> bytes:
        """The plain response APDU after the replay, tag and policy checks; the meter's
        counter is persisted (global key) before the plaintext is returned."""
        sec = self.security
        if sec is None or not self.ciphered:
            if apdu[:1] and apdu[0] in ciphered.CIPHERED_TAGS:
                raise ProtectionError("the meter sent a ciphered response to a plain association")
            return apdu
        policy = int(sec.policy)
        if not apdu or apdu[0] not in ciphered.CIPHERED_TAGS:
            if apdu[:1] and apdu[0] in _PLAIN_ERROR_TAGS:
                return apdu  # the meter could not protect: let the exchange report the error
            if expect_initiate or policy & (SecurityPolicy.AUTHENTICATED_RESPONSE | SecurityPolicy.ENCRYPTED_RESPONSE):
                raise ProtectionError(
                    f"the response is not protected as security policy 0x{policy:02X} requires")
            return apdu
        try:
            protected = ciphered.decode_ciphered(apdu)
        except DecodeError as exc:
            raise ProtectionError(f"the protected response cannot be decoded ({exc})") from None
        if isinstance(protected, ciphered.ServiceSpecificCiphered):
            dedicated = protected.DEDICATED
            if expect_initiate != (protected.TAG in _INITIATE_RESPONSE_TAGS):
                raise ProtectionError(f"unexpected {type(protected).__name__} in this place")
        elif isinstance(protected, (ciphered.GeneralGloCiphering, ciphered.GeneralDedCiphering)):
            dedicated = isinstance(protected, ciphered.GeneralDedCiphering)
            if protected.system_title != self.server_system_title:
                raise ProtectionError("a general-ciphered response names another system title")
        else:
            raise ProtectionError(f"{type(protected).__name__} responses are not supported by this client")
        content = protected.content
        sc = content.security_control
        if sc & SC_SUITE_MASK != int(sec.suite):
            raise ProtectionError(f"the response uses security suite {sc & SC_SUITE_MASK}, not {int(sec.suite)}")
        wants_auth = bool(policy & SecurityPolicy.AUTHENTICATED_RESPONSE) or expect_initiate
        if wants_auth and not sc & SC_AUTHENTICATION:
            raise ProtectionError(f"the response (SC 0x{sc:02X}) is not authenticated as the policy requires")
        if policy & SecurityPolicy.ENCRYPTED_RESPONSE and not sc & SC_ENCRYPTION:
            raise ProtectionError(f"the response (SC 0x{sc:02X}) is not encrypted as the policy requires")
        if dedicated:
            if self.dedicated_key is None:
                raise ProtectionError("the meter used a dedicated key this association has not set up")
            key, window = self.dedicated_key, self._ded_rx
        else:
            key, window = self._ek, None
        counter = content.invocation_counter
        try:
            if window is not None:
                pending = window.check(counter)
            else:
                self._counters.check_server(counter)
        except ReplayError as exc:
            raise ReplayedResponse(f"replayed response: {exc}") from None
        try:
            _, plain = unprotect_content(content, key, self._ak, self.server_system_title,
                                         require_authentication=wants_auth or bool(sc & SC_AUTHENTICATION))
        except SecurityError as exc:
            raise ProtectionError(f"the response's protection does not verify ({exc})") from None
        if window is not None:
            window.commit(pending)
        else:
            self._counters.accept_server(counter)
        self._last_response_counter = counter
        return plain

    # -- keys changed during the association ------------------------------------------------
    def rekey(self, *, ek: bytes | None = None, ak: bytes | None = None, counters: CounterStore | None = None) -> None:
        """The meter accepted new global keys for this client (key_transfer): use them from
        now on. A new EK resets both global counters (§3.5.4); pass the store that belongs
        to the new credentials as `counters` (else the current one is reset)."""
        sec = self.security
        if sec is None:
            raise ClientError("rekey needs a secured association")
        length = suite_parameters(sec.suite).key_length
        if ak is not None:
            self._ak = _key(ak, length, "AK")
        if ek is not None:
            self._ek = _key(ek, length, "EK")
            if counters is not None:
                self._counters = counters
            else:
                self._counters.reset()

    # -- release ----------------------------------------------------------------------------
    @staticmethod
    def rlrq() -> bytes:
        return acse.RLRQ(reason=0, user_information=None).to_bytes()

    def release_request(self) -> bytes:
        """RLRQ; in a ciphering context it carries a ciphered InitiateRequest (Table 5)."""
        if not self.ciphered:
            return self.rlrq()
        initiate = InitiateRequest(
            dedicated_key=None, response_allowed=True, proposed_quality_of_service=None,
            proposed_dlms_version_number=6, proposed_conformance=self.conformance,
            client_max_receive_pdu_size=self.max_receive_pdu_size,
        ).to_bytes()
        protected = self._protect_global(ciphered.GloInitiateRequest, _INITIATE_SC | self.security.suite, initiate)
        return acse.RLRQ(reason=0, user_information=protected).to_bytes()


class _HlsReplyExchange(ActionExchange):
    """reply_to_HLS_authentication; on success checks f(CtoS) through the association."""

    def __init__(self, association: ClientAssociation, f_stoc: bytes) -> None:
        super().__init__(REPLY_TO_HLS_AUTHENTICATION, Data.octet_string(f_stoc))
        self.what = "HLS pass 3 (reply_to_HLS_authentication)"
        self._association = association
        self.outer_counter: int | None = None
        self.window_before: int | None = None

    def _on(self, apdu: Any) -> bytes | None:
        try:
            more = super()._on(apdu)
        except AccessDenied as exc:
            raise AuthenticationFailed(f"HLS: the meter did not accept f(StoC) ({exc.result.name.lower()})") from None
        if more is not None:
            return more
        result = self.result
        if not isinstance(result, Data) or result.type != DataType.OCTET_STRING:
            raise AuthenticationFailed("HLS: the meter's answer carries no f(CtoS)")
        self._association._verify_f_ctos(result.value, self.outer_counter, self.window_before)
        return None


class SecuredExchange(Exchange):
    """An exchange seen through the association's protection: requests protected on the
    way out, responses checked and unwrapped on the way in (general-block-transfer is
    reassembled first, as protection covers the whole APDU)."""

    def __init__(self, association: ClientAssociation, inner: Exchange, *, dedicated: bool,
                 before_authentication: bool = False) -> None:
        super().__init__()
        if not association.authenticated and not before_authentication:
            raise ClientError("the association is not authenticated yet: run hls_exchange() first")
        self.association, self.inner, self.dedicated = association, inner, dedicated
        self.what = inner.what

    def first(self) -> bytes:
        return self.association.protect_request(self.inner.first(), dedicated=self.dedicated)

    def feed(self, response: bytes) -> bytes | None:
        if response[:1] == b"\xe0":
            return self._gbt(GeneralBlockTransfer.from_bytes(response))
        if isinstance(self.inner, _HlsReplyExchange):
            self.inner.window_before = self.association.counters.server_last_seen
        plain = self.association.unprotect_response(response)
        if isinstance(self.inner, _HlsReplyExchange) and response[:1] != plain[:1]:
            self.inner.outer_counter = self.association._last_response_counter
        following = self.inner.feed(plain)
        self.result, self.done = self.inner.result, self.inner.done
        if following is None:
            return None
        return self.association.protect_request(following, dedicated=self.dedicated)

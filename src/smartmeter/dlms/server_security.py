"""The security of one server association, sans-io (Green Book 9.2, companion standard §3.3.3,
§3.5): the ciphered AARQ/AARE, HLS 5/6/7 pass 3 and 4, unwrapping protected requests with
replay protection, and protecting responses as the client's security policy demands.

The order of operations is the one that keeps secrets safe: check the frame counter, then
authenticate and decrypt, then persist the counter, and only then use the plaintext.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from smartmeter.dlms.apdu import ciphered
from smartmeter.dlms.apdu.errors import EXCEPTION_RESPONSE_TAG
from smartmeter.dlms.security import hls
from smartmeter.dlms.security.context import (
    AUTHENTICATED_REQUEST, AUTHENTICATED_RESPONSE, ENCRYPTED_REQUEST, ENCRYPTED_RESPONSE, SIGNED_REQUEST,
    SecurityContext,
)
from smartmeter.dlms.security.errors import AuthenticationError, ReplayError, SecurityError
from smartmeter.dlms.security.frame_counter import FrameCounterWindow, TxFrameCounter, open_protected
from smartmeter.dlms.security.keys import unwrap_key
from smartmeter.dlms.security.suites import SecurityControl
from smartmeter.errors import DecodeError, SmartmeterError

SYSTEM_TITLE_LENGTH = 8


class SecurityRefusal(SmartmeterError):
    """A protected request or association that must be refused; `kind` selects the response:
    "decipher" (exception operation-not-possible, §3.5.3), "replay" (invocation-counter-error),
    "policy" (the protection the policy demands is missing), "no-dedicated-key" (§3.5.3)."""

    def __init__(self, kind: str, detail: str, counter: int | None = None) -> None:
        self.kind = kind
        self.counter = counter
        super().__init__(detail)


class HlsAuthority(Protocol):
    """Runs an HLS 6 exchange elsewhere (the legal part, for the Certification client): it makes
    StoC and checks f(StoC) with a secret this side never sees. `prove` raises AuthenticationError."""

    def open_challenge(self, client_system_title: bytes, server_system_title: bytes, ctos: bytes) -> tuple[str, bytes]: ...

    def prove(self, challenge_id: str, f_stoc: bytes) -> tuple[str, bytes]: ...

    def end(self, token: str) -> None: ...


class MeterKeys(Protocol):
    """Asymmetric keys the server needs: its own signing key and the clients' certified keys."""

    def server_signing_key(self) -> ec.EllipticCurvePrivateKey | None: ...

    def client_signing_keys(self, client_sap: int, system_title: bytes | None) -> tuple[ec.EllipticCurvePublicKey, ...]: ...


@dataclass
class Wrapping:
    """How a request arrived, hence how its response must go back."""

    kind: str  # "plain", "glo", "ded", "general-glo", "general-ded", "general-ciphering", "general-signing"
    request_control: SecurityControl | None = None
    inner: "Wrapping | None" = None  # general-signing around another protection
    transaction_id: bytes = b""
    date_time: bytes = b""
    key: bytes | None = None  # general-ciphering: the key the request's key-info designated
    key_info: object = None


@dataclass
class AssociationSecurity:
    context: SecurityContext
    server_system_title: bytes
    client_sap: int
    mechanism: int
    keys: MeterKeys | None = None
    on_event: Callable[[str, dict], None] = lambda name, fields: None
    kek: bytes | None = None  # the master key, for wrapped keys in general-ciphering
    clock_bytes: Callable[[], bytes] = lambda: b""
    client_system_title: bytes | None = None
    ctos: bytes = b""
    stoc: bytes = b""
    authenticated: bool = False
    dedicated_key: bytes | None = None
    ded_rx: FrameCounterWindow = field(default_factory=lambda: FrameCounterWindow(None))
    ded_tx: TxFrameCounter = field(default_factory=lambda: TxFrameCounter(None, first=1))
    authority_token: str = ""  # from the HlsAuthority once pass 3 verified; "" = none
    _challenge_id: str = ""

    @property
    def hls_authority(self) -> HlsAuthority | None:
        """The context's delegate for HLS 6 (set by the meter for the Certification client)."""
        return getattr(self.context, "hls_authority", None) if self.mechanism == 6 else None

    def end_authority(self) -> None:
        """The association ends: so does the authority it won."""
        if self.authority_token and self.hls_authority is not None:
            self.hls_authority.end(self.authority_token)
        self.authority_token = ""

    @property
    def suite(self) -> int:
        return self.context.suite

    @property
    def policy(self) -> int:
        return self.context.policy

    # -- association establishment (passes 1 and 2) -------------------------------------------
    def open_aarq(self, calling_ap_title: bytes | None, authentication_value: bytes | None,
                  user_information: bytes) -> bytes:
        """The plain InitiateRequest from a ciphered AARQ; SecurityRefusal if it cannot be."""
        if calling_ap_title is None or len(calling_ap_title) != SYSTEM_TITLE_LENGTH:
            raise SecurityRefusal("title", "a ciphered association needs the client system title (calling-AP-title)")
        self.client_system_title = bytes(calling_ap_title)
        if self.mechanism in (5, 6, 7):
            if authentication_value is None or not hls.CHALLENGE_MIN <= len(authentication_value) <= hls.CHALLENGE_MAX:
                raise SecurityRefusal("authentication", "HLS needs a client challenge (CtoS) of 8..64 bytes")
            self.ctos = bytes(authentication_value)
        plain = self.open_initiate(user_information)
        # §3.6: from now on the meter deciphers this client's APDUs with this title
        self.context.set_client_system_title(self.client_system_title)
        return plain

    def open_initiate(self, user_information: bytes) -> bytes:
        """The plain InitiateRequest of a glo-initiate-request (AARQ or RLRQ user-information)."""
        try:
            initiate = ciphered.decode_ciphered(user_information)
        except DecodeError as exc:
            raise SecurityRefusal("decipher", f"user-information is not a glo-initiate-request: {exc}") from None
        if not isinstance(initiate, ciphered.GloInitiateRequest):
            raise SecurityRefusal("decipher", "user-information must be a glo-initiate-request")
        return self._open_global(initiate.content)

    def new_server_challenge(self) -> bytes:
        authority = self.hls_authority
        if authority is not None:
            try:
                self._challenge_id, self.stoc = authority.open_challenge(self.client_system_title or bytes(8),
                                                                         self.server_system_title, self.ctos)
                return self.stoc
            except SecurityError:  # no challenge to be had: pass 3 cannot succeed, the AARE still goes out
                self._challenge_id = ""
        self.stoc = hls.new_challenge(32 if self.mechanism == 7 else 16)
        return self.stoc

    def protect_initiate_response(self, initiate_response: bytes) -> bytes:
        sc = SecurityControl(self.suite, authentication=True, encryption=True)
        counter = self.context.next_tx()
        return ciphered.GloInitiateResponse.protect(sc, self.context.ek, self.context.ak, self.server_system_title,
                                                    counter, initiate_response).to_bytes()

    def set_dedicated_key(self, key: bytes | None) -> None:
        """A dedicated key from the InitiateRequest lives with the association; its counters start afresh."""
        self.dedicated_key = key
        self.ded_rx = FrameCounterWindow(None)
        self.ded_tx = TxFrameCounter(None, first=1)  # a strict client refuses a first 0

    # -- HLS passes 3 and 4 -------------------------------------------------------------------
    def reply_to_hls(self, f_stoc: bytes) -> bytes:
        """Check the client's f(StoC); return the server's f(CtoS). AuthenticationError if wrong."""
        ctx, title = self.context, self.client_system_title
        if self.mechanism == 5:
            # The IC inside f(StoC) is taken before the one of the glo-action-request carrying it
            # (§3.5.4: "++global FC (challenge); ++global FC (glo-action-request)"), so it is below
            # the window already; replay is impossible anyway: StoC is fresh for every association.
            hls.verify_hls5_response(self.suite, ctx.ek, ctx.ak, title, self.stoc, f_stoc)
            response = hls.hls5_response(self.suite, ctx.ek, ctx.ak, self.server_system_title, ctx.next_tx(), self.ctos)
        elif self.mechanism == 6 and self.hls_authority is not None:
            self.authority_token, response = self.hls_authority.prove(self._challenge_id, bytes(f_stoc))
        elif self.mechanism == 6:
            secret = ctx.hls_secret
            if secret is None:
                raise AuthenticationError("no HLS secret is set for this client")
            hls.verify_hls6_client_response(secret, title, self.server_system_title, self.stoc, self.ctos, f_stoc)
            response = hls.hls6_server_response(secret, self.server_system_title, title, self.ctos, self.stoc)
        elif self.mechanism == 7:
            keys = self.keys.client_signing_keys(self.client_sap, title) if self.keys else ()
            if not keys:
                raise AuthenticationError("no certified signing key for this client system title")
            for key in keys:
                try:
                    hls.verify_hls7_client_response(key, title, self.server_system_title, self.stoc, self.ctos,
                                                    f_stoc, self.suite)
                    break
                except SecurityError:
                    continue
            else:
                raise AuthenticationError("HLS-ECDSA f(StoC) does not verify with the client's certified keys")
            server_key = self.keys.server_signing_key()
            if server_key is None:
                raise AuthenticationError("the meter has no signing key yet")
            response = hls.hls7_server_response(server_key, self.server_system_title, title, self.ctos, self.stoc,
                                                self.suite)
        else:
            raise AuthenticationError(f"mechanism {self.mechanism} has no pass 3")
        self.authenticated = True
        return response

    # -- protected requests and responses -----------------------------------------------------
    def _open_global(self, content) -> bytes:
        ctx = self.context
        try:
            _, plain = open_protected(ctx.rx, content, ctx.ek, ctx.ak, self.client_system_title, ctx.persist_rx,
                                      expected_suite=self.suite, require_authentication=self._authentication_required)
        except SecurityError as exc:
            raise self._refusal(exc) from None
        return plain

    @property
    def _authentication_required(self) -> bool:
        # only a policy that asks for encryption without authentication accepts untagged content
        return not (self.policy & ENCRYPTED_REQUEST and not self.policy & AUTHENTICATED_REQUEST)

    def _refusal(self, exc: SecurityError) -> SecurityRefusal:
        if isinstance(exc, ReplayError):
            self.on_event("replay_refused", {"client_sap": self.client_sap, "counter": exc.counter})
            return SecurityRefusal("replay", str(exc), exc.last_accepted)
        self.on_event("decipher_failed", {"client_sap": self.client_sap, "reason": type(exc).__name__})
        return SecurityRefusal("decipher", str(exc))

    def _check_policy(self, sc: SecurityControl, signed: bool) -> None:
        needed = self.policy
        missing = ((needed & AUTHENTICATED_REQUEST and not sc.authentication)
                   or (needed & ENCRYPTED_REQUEST and not sc.encryption)
                   or (needed & SIGNED_REQUEST and not signed))
        if missing:
            self.on_event("policy_violation", {"client_sap": self.client_sap})
            raise SecurityRefusal("policy", "the request lacks the protection the security policy demands")

    def unwrap(self, apdu: bytes, signed: bool = False) -> tuple[bytes, Wrapping]:
        """The plain request inside a protected APDU, and how to protect the answer."""
        try:
            outer = ciphered.decode_ciphered(apdu)
        except DecodeError as exc:
            # cut short or malformed around the ciphertext: it cannot be deciphered (§3.5.3)
            self.on_event("decipher_failed", {"client_sap": self.client_sap, "reason": type(exc).__name__})
            raise SecurityRefusal("decipher", f"protected APDU cannot be decoded: {exc}") from None
        if isinstance(outer, ciphered.GeneralSigning):
            if signed:
                raise SecurityRefusal("decipher", "general-signing inside general-signing")
            keys = self.keys.client_signing_keys(self.client_sap, self.client_system_title) if self.keys else ()
            for key in keys:
                try:
                    content = outer.verify(key, self.suite)
                    break
                except SecurityError:
                    continue
            else:
                self.on_event("signature_failed", {"client_sap": self.client_sap})
                raise SecurityRefusal("decipher", "general-signing signature does not verify")
            if content[:1] and content[0] in ciphered.CIPHERED_TAGS:
                plain, inner = self.unwrap(content, signed=True)
            else:
                self._check_policy(SecurityControl(self.suite, False, False), True)
                plain, inner = content, Wrapping("plain")
            return plain, Wrapping("general-signing", inner=inner, transaction_id=outer.transaction_id,
                                   date_time=outer.date_time)
        if isinstance(outer, (ciphered.GeneralGloCiphering, ciphered.GeneralDedCiphering)):
            dedicated = isinstance(outer, ciphered.GeneralDedCiphering)
            if outer.system_title != self.client_system_title:
                raise SecurityRefusal("decipher", "general ciphering from another system title")
            kind = "general-ded" if dedicated else "general-glo"
        elif isinstance(outer, ciphered.ServiceSpecificCiphered):
            dedicated = outer.DEDICATED
            kind = "ded" if dedicated else "glo"
        else:
            return self._unwrap_general_ciphering(outer, signed)
        sc = SecurityControl.from_byte(outer.security_control)
        self._check_policy(sc, signed)
        if dedicated:
            if self.dedicated_key is None:
                raise SecurityRefusal("no-dedicated-key", "no dedicated key in this association")
            try:
                _, plain = open_protected(self.ded_rx, outer.content, self.dedicated_key, self.context.ak,
                                          self.client_system_title, lambda counter: None, expected_suite=self.suite,
                                          require_authentication=self._authentication_required)
            except SecurityError as exc:
                raise self._refusal(exc) from None
        else:
            plain = self._open_global(outer.content)
        if isinstance(outer, ciphered.ServiceSpecificCiphered):
            table = ciphered.DED_TAG_FOR_PLAIN if dedicated else ciphered.GLO_TAG_FOR_PLAIN
            if not plain or table.get(plain[0]) is not type(outer):
                raise SecurityRefusal("decipher", "the ciphered APDU does not carry the service its tag names")
        return plain, Wrapping(kind, sc)

    def _unwrap_general_ciphering(self, outer: ciphered.GeneralCiphering, signed: bool) -> tuple[bytes, Wrapping]:
        """§3.3.1: general-ciphering with identified or wrapped keys; agreed keys are refused."""
        if outer.originator_system_title != self.client_system_title:
            raise SecurityRefusal("decipher", "general-ciphering from another system title")
        info = outer.key_info
        if isinstance(info, ciphered.IdentifiedKey) and info.key_id == ciphered.IdentifiedKeyId.GLOBAL_UNICAST_ENCRYPTION_KEY:
            key = self.context.ek
        elif isinstance(info, ciphered.WrappedKey) and self.kek is not None:
            try:
                key = unwrap_key(self.kek, info.key_ciphered_data)
            except SecurityError as exc:
                raise self._refusal(exc) from None
        else:
            raise SecurityRefusal("decipher", "general-ciphering needs an identified global unicast key or a "
                                              "wrapped key; agreed keys are not used (§3.3.1)")
        sc = SecurityControl.from_byte(outer.security_control)
        self._check_policy(sc, signed)
        ctx = self.context
        try:
            _, plain = open_protected(ctx.rx, outer.content, key, ctx.ak, self.client_system_title, ctx.persist_rx,
                                      extra_aad=outer.header_bytes(), expected_suite=self.suite,
                                      require_authentication=self._authentication_required)
        except SecurityError as exc:
            raise self._refusal(exc) from None
        return plain, Wrapping("general-ciphering", sc, transaction_id=outer.transaction_id,
                               date_time=outer.date_time, key=key, key_info=info)

    def response_control(self, wrapping: Wrapping) -> SecurityControl:
        policy = self.policy
        authenticated = bool(policy & AUTHENTICATED_RESPONSE)
        encrypted = bool(policy & ENCRYPTED_RESPONSE)
        if not (authenticated or encrypted) and wrapping.request_control is not None:
            req = wrapping.request_control  # no response policy: answer as asked
            authenticated, encrypted = req.authentication, req.encryption
        return SecurityControl(self.suite, authenticated, encrypted)

    def wrap(self, plain: bytes, wrapping: Wrapping) -> bytes:
        if wrapping.kind == "plain":
            return plain
        if plain[:1] == bytes((EXCEPTION_RESPONSE_TAG,)) and wrapping.kind in ("glo", "ded"):
            # the exception-response has no glo-/ded- form (Green Book xDLMS APDU list): to a
            # service-specific ciphered request it goes back as it is, like the exception-
            # responses to requests that cannot be deciphered (§3.5.3); the general forms
            # carry any APDU, so there it is protected like every other answer
            return plain
        if wrapping.kind == "general-signing":
            content = self.wrap(plain, wrapping.inner)
            key = self.keys.server_signing_key() if self.keys else None
            if key is None:
                raise SecurityRefusal("decipher", "the meter has no signing key")
            return ciphered.GeneralSigning.sign(
                key, content, wrapping.transaction_id, self.server_system_title, self.client_system_title or b"",
                wrapping.date_time, b"", self.suite).to_bytes()
        sc = self.response_control(wrapping)
        if wrapping.kind == "general-ciphering":
            # §3.3.1.1: same transaction-id; a date-time in the request asks for one in the response
            date_time = self.clock_bytes() if wrapping.date_time else b""
            return ciphered.GeneralCiphering.protect(
                sc, wrapping.key, self.context.ak, self.context.next_tx(), plain, wrapping.transaction_id,
                self.server_system_title, self.client_system_title or b"", wrapping.key_info, date_time).to_bytes()
        dedicated = wrapping.kind in ("ded", "general-ded")
        if dedicated:
            key, counter = self.dedicated_key, self.ded_tx.reserve()
        else:
            key, counter = self.context.ek, self.context.next_tx()
        if wrapping.kind in ("glo", "ded"):
            table = ciphered.DED_TAG_FOR_PLAIN if dedicated else ciphered.GLO_TAG_FOR_PLAIN
            if plain[0] not in table:
                raise SecurityRefusal("policy", f"APDU 0x{plain[0]:02X} has no service-specific ciphered form")
            return table[plain[0]].protect(sc, key, self.context.ak, self.server_system_title, counter, plain).to_bytes()
        cls = ciphered.GeneralDedCiphering if dedicated else ciphered.GeneralGloCiphering
        return cls.protect(sc, key, self.context.ak, self.server_system_title, counter, plain).to_bytes()

    @staticmethod
    def overhead(wrapping: Wrapping) -> int:
        """Bytes protection adds around a plain APDU (so block sizes can leave room for it)."""
        if wrapping.kind == "plain":
            return 0
        base = 1 + 3 + 1 + 4 + 12 + (10 if wrapping.kind.startswith("general") else 0)
        if wrapping.kind == "general-signing":
            return base + 2 * SYSTEM_TITLE_LENGTH + 96 + AssociationSecurity.overhead(wrapping.inner)
        return base


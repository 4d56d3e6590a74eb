"""The meter's security service: what the security setup objects (IC 64), the Association
LN method change_HLS_secret and the frame-counter objects (IC 12544) do, on top of the
per-client contexts (`dlms.security.context`) and the certificate store.

Key material lives in the meter's store (`meter.sqlite3`, owner-only) and never appears in
a response or a log line. The meter's signing private key is generated here and never
leaves the meter (companion standard §3.5.2).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from smartmeter.cosem.classes.base import CosemAccessError, RequestContext
from smartmeter.cosem.data import Data, DataType
from smartmeter.cosem.objectmodel import ObjectModel
from smartmeter.cosem.results import DataAccessResult
from smartmeter.dlms.security.certificates import (
    CertificateError, CertificateStore, CertificateType, identification_from_data, make_csr,
)
from smartmeter.dlms.security.context import ClientPolicy, SecurityManager
from smartmeter.dlms.security.errors import SecurityError
from smartmeter.dlms.security.frame_counter import frame_counter_response
from smartmeter.dlms.security.keys import (
    KeyId, decode_key_agreement, decode_key_transfer, encode_key_agreement, server_key_agreement, unwrap_key,
)
from smartmeter.dlms.security.signing import generate_private_key
from smartmeter.errors import DecodeError
from smartmeter.meter.store import MeterStore

log = logging.getLogger(__name__)

CERTIFICATE_STORE_KEY = "security.certificates"
SIGNING_KEY = "keys.signing.current"
PENDING_SIGNING_KEY = "keys.signing.pending"


MASTER_KEY = "security.master"


class _CachingStore:
    """The meter store as the security service (and demo provisioning, through it) uses it.
    The master key is read at every AARQ and the signing key at every HLS 7 pass 3: both are
    kept in memory after the first read, and every write that passes here drops the copy.
    Nothing else writes them (key changes are methods of this service)."""

    _CACHED = frozenset({SIGNING_KEY, MASTER_KEY})

    def __init__(self, store: MeterStore) -> None:
        self._store = store
        self._cache: dict[str, object] = {}

    def get(self, key: str, default=None):
        if key not in self._CACHED:
            return self._store.get(key, default)
        if key not in self._cache:
            self._cache[key] = self._store.get(key)
        value = self._cache[key]
        return default if value is None else value

    def put(self, key: str, value) -> None:
        self._cache.pop(key, None)
        self._store.put(key, value)

    def counter(self, key: str) -> int:
        return self._store.counter(key)

    def set_counter(self, key: str, value: int) -> None:
        self._store.set_counter(key, value)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _load(pem: str | None) -> ec.EllipticCurvePrivateKey | None:
    return None if pem is None else serialization.load_pem_private_key(pem.encode(), None)


class MeterSecurity:
    def __init__(self, store: MeterStore, model: ObjectModel, server_system_title: bytes,
                 now: Callable[[], dt.datetime] = _utcnow, on_event: Callable[[str, dict], None] | None = None) -> None:
        self.store = _CachingStore(store)
        self.now = now
        self.on_event = on_event or (lambda name, fields: None)
        self.server_system_title = server_system_title
        self._signing_pem: str | None = None
        self._signing_key: ec.EllipticCurvePrivateKey | None = None
        self.clients = {c.name: c for c in model.clients.values()}
        policies = [ClientPolicy(c.name, c.sap, c.security_suite or 0, c.security_policy, c.mechanism)
                    for c in model.clients.values() if c.ciphered]
        self.manager = SecurityManager(self.store, server_system_title, policies, self.on_event)
        suite = max((p.suite for p in policies), default=1) or 1
        saved = store.get(CERTIFICATE_STORE_KEY)
        self.certificates = (CertificateStore.from_dict(saved) if saved is not None
                             else CertificateStore(server_system_title, suite=suite))

    # -- MeterKeys (for HLS 7 and general-signing) -----------------------------------------------
    def server_signing_key(self) -> ec.EllipticCurvePrivateKey | None:
        pem = self.store.get(SIGNING_KEY)
        if pem != self._signing_pem:  # parsed once per key, not once per association
            self._signing_pem, self._signing_key = pem, _load(pem)
        return self._signing_key

    def client_signing_keys(self, client_sap: int, system_title: bytes | None):
        return self.certificates.client_signing_keys(client_sap, system_title)

    # -- helpers --------------------------------------------------------------------------------
    def _context(self, client: str):
        context = self.manager.context(client)
        if context is None:
            raise CosemAccessError(DataAccessResult.OBJECT_UNAVAILABLE, f"client {client} has no security context")
        return context

    def _save_certificates(self) -> None:
        self.store.put(CERTIFICATE_STORE_KEY, self.certificates.to_dict())

    # -- attributes ---------------------------------------------------------------------------
    def policy(self, client: str) -> int:
        context = self.manager.context(client)
        return context.policy if context is not None else 0

    def suite(self, client: str) -> int:
        context = self.manager.context(client)
        return context.suite if context is not None else 0

    def client_system_title(self, client: str) -> bytes | None:
        context = self.manager.context(client)
        return context.client_system_title if context is not None else None

    def set_policy(self, client: str, policy: int, ctx: RequestContext) -> None:
        """security_activate: a policy may only be strengthened; it applies after the answer."""
        context = self._context(client)
        if policy & ~0xFC or policy & context.policy != context.policy:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "the security policy can only be strengthened")
        ctx.association.after_response(lambda: context.set_policy(policy))
        self.on_event("security_policy_changed", {"client": client, "policy": policy})

    def certificates_data(self, client: str) -> Data:
        sap = self.clients[client].sap if client in self.clients else None
        return Data.array(info.to_data() for info in self.certificates.certificate_infos(sap))

    # -- methods ------------------------------------------------------------------------------
    def key_transfer(self, client: str, parameters: Data, ctx: RequestContext) -> None:
        """§3.5.3: SUCCESS goes out ciphered with the current key, then the new key is used."""
        context = self._context(client)
        try:
            transfers = decode_key_transfer(parameters)
        except (DecodeError, SecurityError, ValueError, TypeError):
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "key_transfer takes array of {key_id, key_wrapped}") from None
        changes = []
        for transfer in transfers:
            try:
                key = unwrap_key(self.manager.kek(context.suite), transfer.wrapped_key)
            except SecurityError:
                self.on_event("key_transfer_refused", {"client": client, "key_id": int(transfer.key_id)})
                raise CosemAccessError(DataAccessResult.OTHER_REASON, "the key does not unwrap with the master key") from None
            if transfer.key_id == KeyId.GLOBAL_UNICAST_ENCRYPTION:
                changes.append(("ek", key))
            elif transfer.key_id == KeyId.AUTHENTICATION:
                changes.append(("ak", key))
            elif transfer.key_id == KeyId.MASTER:
                changes.append(("master", key))
            else:  # broadcast keys are not used by this meter
                raise CosemAccessError(DataAccessResult.OTHER_REASON, "broadcast keys are not supported")

        def apply() -> None:
            for kind, key in changes:
                if kind == "master":
                    self.store.put(MASTER_KEY, (key + self.manager.master_key[len(key):]).hex())
                else:
                    context.set_key(kind, key)
            self.on_event("keys_changed", {"client": client, "keys": [kind for kind, _ in changes]})

        ctx.association.after_response(apply)

    def key_agreement(self, client: str, parameters: Data, ctx: RequestContext) -> Data:
        """§3.5.3.2: ECDH Ephemeral Unified Model C(2e, 0s), both ephemeral keys signed. The
        answer goes out protected with the current keys; then the agreed keys are used."""
        context = self._context(client)
        try:
            requests = decode_key_agreement(parameters)
        except (DecodeError, SecurityError, ValueError, TypeError):
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "key_agreement takes array of {key_id, key_ciphered_data}") from None
        caller = self.clients.get(ctx.client_name)
        client_keys = self.certificates.client_signing_keys(caller.sap, ctx.association.calling_system_title) if caller else ()
        server_key = self.server_signing_key()
        if not client_keys or server_key is None or ctx.association.calling_system_title is None:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "key agreement needs certified signing keys on both sides")
        responses, changes = [], []
        for request in requests:
            if request.key_id not in (KeyId.GLOBAL_UNICAST_ENCRYPTION, KeyId.AUTHENTICATION, KeyId.MASTER):
                raise CosemAccessError(DataAccessResult.OTHER_REASON, "broadcast keys are not supported")
            for public_key in client_keys:
                try:
                    response, key = server_key_agreement(
                        context.suite, request, public_key, server_key, ctx.association.calling_system_title,
                        self.server_system_title)
                    break
                except SecurityError:
                    continue
            else:
                self.on_event("key_agreement_refused", {"client": client})
                raise CosemAccessError(DataAccessResult.OTHER_REASON, "the client's ephemeral key signature does not verify")
            responses.append(response)
            kind = {KeyId.GLOBAL_UNICAST_ENCRYPTION: "ek", KeyId.AUTHENTICATION: "ak"}.get(request.key_id, "master")
            changes.append((kind, key))

        def apply() -> None:
            for kind, key in changes:
                if kind == "master":
                    self.store.put(MASTER_KEY, (key + self.manager.master_key[len(key):]).hex())
                else:
                    context.set_key(kind, key)
            self.on_event("keys_changed", {"client": client, "keys": [kind for kind, _ in changes], "by": "agreement"})

        ctx.association.after_response(apply)
        return encode_key_agreement(responses)

    def generate_key_pair(self, key_type: int, ctx: RequestContext) -> None:
        if key_type != CertificateType.DIGITAL_SIGNATURE:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "only the digital signature key pair is generated")
        key = generate_private_key(self.certificates.suite)
        self.certificates.begin_key_renewal(key.public_key(), self.now())
        self.store.put(PENDING_SIGNING_KEY, _pem(key))
        self._save_certificates()
        self.on_event("key_pair_generated", {"type": key_type})

    def generate_certificate_request(self, key_type: int, ctx: RequestContext) -> bytes:
        if key_type != CertificateType.DIGITAL_SIGNATURE:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "only the digital signature key pair has a CSR")
        key = _load(self.store.get(PENDING_SIGNING_KEY)) or self.server_signing_key()
        if key is None:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "generate a key pair first")
        return make_csr(key, self.server_system_title, self.certificates.suite)

    def import_certificate(self, client: str, der: bytes, ctx: RequestContext) -> None:
        sap = self.clients[client].sap if client in self.clients else None
        try:
            result = self.certificates.import_certificate(der, self.now(), client=sap)
        except CertificateError as exc:
            self.on_event("certificate_refused", {"client": client, "reason": type(exc).__name__})
            raise CosemAccessError(DataAccessResult.OTHER_REASON, str(exc)) from None
        if result.key_pair_activated:
            self.store.put(SIGNING_KEY, self.store.get(PENDING_SIGNING_KEY))
            self.store.put(PENDING_SIGNING_KEY, None)
        self._save_certificates()
        self.on_event("certificate_imported", {"client": client, "entity": int(result.entity)})

    def export_certificate(self, client: str, parameters: Data) -> bytes:
        sap = self.clients[client].sap if client in self.clients else None
        try:
            return self.certificates.export_certificate(identification_from_data(parameters), client=sap)
        except (CertificateError, DecodeError) as exc:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, str(exc)) from None

    def remove_certificate(self, client: str, parameters: Data, ctx: RequestContext) -> None:
        sap = self.clients[client].sap if client in self.clients else None
        try:
            self.certificates.remove_certificate(identification_from_data(parameters), client=sap)
        except (CertificateError, DecodeError) as exc:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, str(exc)) from None
        self._save_certificates()

    def change_hls_secret(self, client: str, wrapped: bytes, authority_token: str = "") -> None:
        """§3.6: the new secret (16..32 bytes) key-wrapped with the master key. For the
        Certification client the legal part holds the secret: it takes the new one only with the
        token it issued to this association."""
        context = self._context(client)
        if context.mechanism != 6:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "this client does not use HLS 6")
        try:
            secret = unwrap_key(self.manager.kek(context.suite), wrapped)
        except SecurityError:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "the secret does not unwrap with the master key") from None
        if not 16 <= len(secret) <= 32:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "the HLS secret must be 16..32 bytes")
        authority = getattr(context, "hls_authority", None)
        if authority is not None and not authority.change_secret(secret, authority_token):
            raise CosemAccessError(DataAccessResult.READ_WRITE_DENIED, "the legal part refused the new secret")
        context.set_key("hls_secret", secret)
        self.on_event("hls_secret_changed", {"client": client})

    def frame_counter_readout(self, client: str, challenge: bytes, ctx: RequestContext) -> tuple[bytes, int]:
        """Appendix 1: the caller needs its system title known (calling-AP-title in the AARQ)."""
        context = self._context(client)
        caller_title = ctx.association.calling_system_title
        if caller_title is None:
            raise CosemAccessError(DataAccessResult.OTHER_REASON, "associate with a calling-AP-title first")
        if len(challenge) != 64:
            raise CosemAccessError(DataAccessResult.TYPE_UNMATCHED, "the challenge is 64 bytes")
        counter = context.last_received
        return (frame_counter_response(context.ak, self.server_system_title, caller_title, challenge, counter), counter)

    def flush_counters(self) -> None:
        """At a clean stop: the exact frame counters instead of the reserved high-water marks."""
        self.manager.flush()

    # -- periodic ---------------------------------------------------------------------------------
    def housekeeping(self) -> None:
        """§3.5.2: a new key pair whose certificate was not imported within 24 h is dismissed."""
        dismissed = self.certificates.dismiss_expired_key_pairs(self.now())
        if dismissed:
            self.store.put(PENDING_SIGNING_KEY, None)
            self._save_certificates()
            self.on_event("key_pair_dismissed", {"count": len(dismissed)})


def write_credentials(path: Path, fields: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)

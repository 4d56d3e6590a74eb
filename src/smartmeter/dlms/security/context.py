"""Server-side security contexts: one per client (companion standard §3.5, §3.6 table 7).

A context holds the client's security suite and policy, its system title (learnt from the
AARQ), the global unicast and authentication keys, the HLS secret (mechanism 6), and the
frame counters. It persists through a small store protocol (`get`/`put`/`counter`/
`set_counter`, see `smartmeter.meter.store.MeterStore`), and follows §3.5.4:

- a received counter is persisted before the plaintext it protects is used, and must be
  above the last accepted one;
- the server's own sending counter is reserved in blocks: the persisted high-water mark is
  always at or above every counter used, so after a power failure the meter continues
  above it and never reuses an IV;
- changing the global unicast key resets both counters of that key; changing the
  authentication or master key resets none.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from smartmeter.dlms.security.errors import CounterExhaustedError
from smartmeter.dlms.security.frame_counter import FrameCounterWindow, TxFrameCounter

# IC 64 v1 security_policy bits (Blue Book 4.4.7)
AUTHENTICATED_REQUEST = 0x04
ENCRYPTED_REQUEST = 0x08
SIGNED_REQUEST = 0x10
AUTHENTICATED_RESPONSE = 0x20
ENCRYPTED_RESPONSE = 0x40
SIGNED_RESPONSE = 0x80
POLICY_BITS = {
    "authenticated_request": AUTHENTICATED_REQUEST, "encrypted_request": ENCRYPTED_REQUEST,
    "signed_request": SIGNED_REQUEST, "authenticated_response": AUTHENTICATED_RESPONSE,
    "encrypted_response": ENCRYPTED_RESPONSE, "signed_response": SIGNED_RESPONSE,
}
REQUEST_BITS = AUTHENTICATED_REQUEST | ENCRYPTED_REQUEST | SIGNED_REQUEST

TX_RESERVATION_BLOCK = 256  # counters used between two durable high-water marks


class SecurityStore(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...
    def put(self, key: str, value: Any) -> None: ...
    def counter(self, key: str) -> int: ...
    def set_counter(self, key: str, value: int) -> None: ...


def key_length(suite: int) -> int:
    return 32 if suite == 2 else 16


@dataclass
class ClientPolicy:
    """What the model says about a client's security (fixed per profile)."""

    name: str
    sap: int
    suite: int
    policy: int
    mechanism: int


class SecurityContext:
    def __init__(self, policy: ClientPolicy, store: SecurityStore) -> None:
        self.name = policy.name
        self.sap = policy.sap
        self.mechanism = policy.mechanism
        self._store = store
        key = f"security.{self.name}"
        saved = store.get(key)
        if saved is None:
            length = key_length(policy.suite)
            saved = {
                "suite": policy.suite, "policy": policy.policy, "client_system_title": None,
                "ek": secrets.token_hex(length), "ak": secrets.token_hex(length),
                "hls_secret": secrets.token_hex(16) if policy.mechanism == 6 else None,
            }
            store.put(key, saved)
        self._saved = saved
        rx = store.counter(f"fc.rx.{self.name}")
        self.rx = FrameCounterWindow(rx - 1 if rx else None)  # stored as last accepted + 1; 0 = none yet
        self._tx_mark = store.counter(f"fc.tx.{self.name}")
        self.tx = TxFrameCounter(self._tx_mark - 1 if self._tx_mark else None)

    # -- settings -----------------------------------------------------------------------------
    def _save(self) -> None:
        self._store.put(f"security.{self.name}", self._saved)

    @property
    def suite(self) -> int:
        return self._saved["suite"]

    @property
    def policy(self) -> int:
        return self._saved["policy"]

    def set_policy(self, policy: int) -> None:
        self._saved["policy"] = policy
        self._save()

    @property
    def client_system_title(self) -> bytes | None:
        title = self._saved["client_system_title"]
        return None if title is None else bytes.fromhex(title)

    def set_client_system_title(self, title: bytes) -> None:
        """§3.6: the title from the AARQ is copied into the client's security setup."""
        if self.client_system_title != title:
            self._saved["client_system_title"] = title.hex()
            self._save()

    @property
    def ek(self) -> bytes:
        return bytes.fromhex(self._saved["ek"])

    @property
    def ak(self) -> bytes:
        return bytes.fromhex(self._saved["ak"])

    @property
    def hls_secret(self) -> bytes | None:
        secret = self._saved["hls_secret"]
        return None if secret is None else bytes.fromhex(secret)

    def set_key(self, kind: str, value: bytes) -> None:
        """kind: "ek" (resets both counters of the key), "ak" or "hls_secret" (reset nothing)."""
        self._saved[kind] = value.hex()
        self._save()
        if kind == "ek":
            self._store.set_counter(f"fc.rx.{self.name}", 0)
            self._store.set_counter(f"fc.tx.{self.name}", 0)
            self.rx.reset()
            self.tx.reset()
            self._tx_mark = 0

    def credentials(self) -> dict:
        """What a head-end needs to talk to this context (demo provisioning only)."""
        return dict(self._saved)

    # -- frame counters -----------------------------------------------------------------------
    def persist_rx(self, counter: int) -> None:
        self._store.set_counter(f"fc.rx.{self.name}", counter + 1)

    def next_tx(self) -> int:
        """The server's next sending counter, durable before it is returned."""
        counter = self.tx.reserve()  # CounterExhaustedError at 0xFFFFFFFF, without incrementing
        if counter + 1 > self._tx_mark:
            self._tx_mark = min(counter + TX_RESERVATION_BLOCK, 0x1_0000_0000)
            self._store.set_counter(f"fc.tx.{self.name}", self._tx_mark)
        return counter

    @property
    def last_received(self) -> int:
        """The frame counter readout of Appendix 1: the last accepted counter (0 if none)."""
        return self.rx.last_accepted or 0


class SecurityManager:
    """All security contexts of the logical device, the master key, the server system title."""

    def __init__(self, store: SecurityStore, server_system_title: bytes, clients: list[ClientPolicy],
                 on_change: Callable[[str, dict], None] | None = None) -> None:
        self.store = store
        self.server_system_title = server_system_title
        self.contexts = {c.name: SecurityContext(c, store) for c in clients}
        if store.get("security.master") is None:
            store.put("security.master", secrets.token_hex(32))
        self.on_change = on_change or (lambda name, fields: None)

    @property
    def master_key(self) -> bytes:
        """The key-encryption key (KEK) of key_transfer and change_HLS_secret: one per device.
        Suites 0/1 use its first 16 bytes, suite 2 all 32."""
        return bytes.fromhex(self.store.get("security.master"))

    def kek(self, suite: int) -> bytes:
        return self.master_key[: key_length(suite)]

    def context(self, client: str) -> SecurityContext | None:
        return self.contexts.get(client)


__all__ = [
    "AUTHENTICATED_REQUEST", "ENCRYPTED_REQUEST", "SIGNED_REQUEST", "AUTHENTICATED_RESPONSE",
    "ENCRYPTED_RESPONSE", "SIGNED_RESPONSE", "POLICY_BITS", "REQUEST_BITS", "ClientPolicy",
    "SecurityContext", "SecurityManager", "SecurityStore", "CounterExhaustedError",
]

"""Server-side security contexts: one per client (companion standard §3.5, §3.6 table 7).

A context holds the client's security suite and policy, its system title (learnt from the
AARQ), the global unicast and authentication keys, the HLS secret (mechanism 6), and the
frame counters. It persists through a small store protocol (`get`/`put`/`counter`/
`set_counter`, see `smartmeter.meter.store.MeterStore`), and follows §3.5.4:

- a received counter must be above the last accepted one, and is covered by a durable
  record before the plaintext it protects is used;
- the server's own sending counter is covered by a durable record before it is used, and
  starts at 1 (a strict receiver refuses a first counter 0);
- both are reserved in blocks: the durable record is a high-water mark at or above every
  counter accepted or used, written only when a counter passes it, so most messages need
  no commit. After a power failure the meter continues above the mark: it never reuses an
  IV, never accepts a replay, and refuses at most a block of counters the client never sent
  (the client continues above them; the frame counter readout tells it where). A clean
  stop writes the exact values (`flush`), so a restart skips nothing;
- changing the global unicast key resets both counters of that key; changing the
  authentication or master key resets none.
"""
from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from smartmeter.dlms.security.errors import CounterExhaustedError
from smartmeter.dlms.security.frame_counter import FrameCounterWindow, TxFrameCounter
from smartmeter.dlms.security.suites import INVOCATION_COUNTER_MAX

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

# Counters accepted (RX) or used (TX) between two durable high-water marks. A set-up takes
# three of each (AARQ/AARE, pass 3/4, RLRQ/RLRE), so one commit covers about 85 set-ups;
# a power failure makes the meter skip at most this many.
TX_RESERVATION_BLOCK = 256
RX_RESERVATION_BLOCK = 256
FIRST_SENDING_COUNTER = 1


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
        self._rx_key, self._tx_key = f"fc.rx.{self.name}", f"fc.tx.{self.name}"
        # The serial WZ port is served by a thread of its own: reservations are taken under a lock.
        self._counter_lock = threading.Lock()
        # Both stored as "highest covered + 1"; 0 = nothing under this key yet. After a power
        # failure everything up to the stored mark counts as accepted (RX) or used (TX).
        self._rx_mark = store.counter(self._rx_key) - 1  # highest counter the durable record covers; -1: none
        self.rx = FrameCounterWindow(self._rx_mark if self._rx_mark >= 0 else None)
        self._rx_highest = self._rx_mark  # highest counter passed to persist_rx (or restored)
        self._tx_mark = store.counter(self._tx_key)  # counters below it may have been used
        self.tx = TxFrameCounter(self._tx_mark - 1 if self._tx_mark else None, first=FIRST_SENDING_COUNTER)

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
            with self._counter_lock:
                self._store.set_counter(self._rx_key, 0)
                self._store.set_counter(self._tx_key, 0)
                self.rx.reset()
                self.tx.reset()
                self._rx_mark = self._rx_highest = -1
                self._tx_mark = 0

    def credentials(self) -> dict:
        """What a head-end needs to talk to this context (demo provisioning only)."""
        return dict(self._saved)

    # -- frame counters -----------------------------------------------------------------------
    def persist_rx(self, counter: int) -> None:
        """Cover an authenticated received counter durably before its plaintext is used
        (`open_protected` calls this between unprotecting and committing the window)."""
        with self._counter_lock:
            if counter > self._rx_highest:
                self._rx_highest = counter
            if counter > self._rx_mark:
                mark = min(counter + RX_RESERVATION_BLOCK - 1, INVOCATION_COUNTER_MAX)
                self._store.set_counter(self._rx_key, mark + 1)  # raises: nothing is released
                self._rx_mark = mark

    def next_tx(self) -> int:
        """The server's next sending counter, durable before it is returned."""
        with self._counter_lock:
            counter = self.tx.reserve()  # CounterExhaustedError at 0xFFFFFFFF, without incrementing
            if counter + 1 > self._tx_mark:
                mark = min(counter + TX_RESERVATION_BLOCK, INVOCATION_COUNTER_MAX + 1)
                # if this raises, `counter` is skipped (never used), which is safe
                self._store.set_counter(self._tx_key, mark)
                self._tx_mark = mark
            return counter

    def flush(self) -> None:
        """A clean stop: write the exact counters instead of the reserved marks, so the next
        start skips nothing. Only ever lowers a mark to a value that still covers every
        counter accepted or used."""
        with self._counter_lock:
            if self._rx_mark > self._rx_highest:
                self._store.set_counter(self._rx_key, self._rx_highest + 1)
                self._rx_mark = self._rx_highest
            used = self.tx.last_used
            exact = 0 if used is None else used + 1
            if self._tx_mark > exact:
                self._store.set_counter(self._tx_key, exact)
                self._tx_mark = exact

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

    def flush(self) -> None:
        """A clean stop: exact frame counters instead of the reserved marks (see SecurityContext)."""
        for context in self.contexts.values():
            context.flush()


__all__ = [
    "AUTHENTICATED_REQUEST", "ENCRYPTED_REQUEST", "SIGNED_REQUEST", "AUTHENTICATED_RESPONSE",
    "ENCRYPTED_RESPONSE", "SIGNED_RESPONSE", "POLICY_BITS", "REQUEST_BITS", "ClientPolicy",
    "SecurityContext", "SecurityManager", "SecurityStore", "CounterExhaustedError", "TX_RESERVATION_BLOCK",
    "RX_RESERVATION_BLOCK", "FIRST_SENDING_COUNTER",
]

"""Changing a meter's global unicast keys (EK and AK) from the head-end, crash-safe.

One key change, under the meter's lease (`smartmeter.hes.fleet.worker` runs it as the job of
a campaign of kind "key_change"):

1. fresh EK and AK (`secrets`) are written to the store as the next generation, state NEW,
   wrapped under the key-encryption key, with a first block of that generation's invocation
   counters reserved: all committed before the meter hears of them;
2. `transfer_keys`: an association under the ACTIVE keys (counters from the session's
   reserved block), key_transfer (IC 64 method 2 of the client's security setup,
   0-0:43.0.<client SAP>.255) with both keys AES-key-wrapped (RFC 3394) under the meter's
   master key; the meter answers under the old keys and uses the new ones from then on, with
   their counters starting afresh, so the association goes on under the new keys and the
   new generation's counters: a read of the clock confirms the meter uses them, and the
   release is sent under them too;
3. the store promotes: NEW → ACTIVE, the old keys → EXPIRED, and the job's outcome, in one
   transaction.

Before 1, key_transfer's parameter is made (`key_transfer_data`): a meter whose master key
the store lacks or cannot unwrap fails its change with nothing written. A meter that answers
key_transfer with temporary-failure keeps its keys: the NEW ones are discarded and the change
is tried again.

A crash (or a lost connection) anywhere between 1 and 3 leaves a NEW generation in the
store. Whoever holds the meter next settles it first: an association under the ACTIVE keys
that the meter accepts means it never took the new ones (they are discarded); one it refuses
for good, or leaves unanswered (some meters hang up on a request they cannot decipher), may
mean it did, and an association under the NEW keys, with a fresh block of their counters,
confirms it before they are promoted (when the meter refuses that one and its frame counter
object verifies under the NEW AK, their generation's counter is moved above it first:
`resync`). A meter that takes neither keeps both in the store: access is never given up on a
guess.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Awaitable, Callable

from smartmeter.cosem.data import Data
from smartmeter.cosem.results import DataAccessResult
from smartmeter.dlms.client import AccessDenied, AssociationRefused, AuthenticationFailed, ClientError, DecipheringError
from smartmeter.dlms.security.keys import KeyId, KeyTransfer, encode_key_transfer
from smartmeter.dlms.security.suites import suite_parameters
from smartmeter.errors import SmartmeterError
from smartmeter.hes.fleet.session import BlockCounters, Timeouts, _within, meter_client
from smartmeter.hes.store.pg import SessionGrant

__all__ = ["KeyTransferDeferred", "KeyTransferImpossible", "KeyTransferRefused", "KeyTransferUncertain",
           "key_transfer_data", "refuses_keys", "new_key_pair", "probe", "transfer_keys"]

SECURITY_SETUP_CLASS = 64
KEY_TRANSFER = 2  # IC 64 method 2
CLOCK = "0-0:1.0.0.255"

Refill = Callable[[int], Awaitable[tuple[int, int]]]


class KeyTransferRefused(ClientError):
    """The meter answered key_transfer with a refusal: it keeps the keys it has."""


class KeyTransferDeferred(ClientError):
    """The meter answered key_transfer with temporary-failure: it keeps the keys it has, and
    may take new ones later."""


class KeyTransferImpossible(SmartmeterError):
    """key_transfer cannot be made for the meter (no usable master key in the store): found
    before any new key is written."""


class KeyTransferUncertain(ClientError):
    """key_transfer was sent and then the session failed: whether the meter holds the new
    keys is not known until the next session settles it."""


def refuses_keys(exc: BaseException) -> bool:
    """Whether `exc` says the meter does not hold the keys the association used: refused
    for good (a transient refusal is not an answer), HLS failed, or the request not
    decipherable."""
    if isinstance(exc, AssociationRefused):
        return exc.result != 2
    return isinstance(exc, (AuthenticationFailed, DecipheringError))


def new_key_pair(suite: int) -> dict[str, bytes]:
    length = suite_parameters(suite).key_length
    return {"ek": secrets.token_bytes(length), "ak": secrets.token_bytes(length)}


def security_setup(client_sap: int) -> str:
    """The client's security setup object, numbered as IDIS numbers it: 0-0:43.0.<SAP>.255."""
    return f"0-0:43.0.{client_sap}.255"


@dataclass
class _Counters:
    """A counter block and where more come from."""

    counters: BlockCounters
    refill: Refill
    block: int

    async def ensure(self, n: int = 1) -> None:
        if self.counters.remaining() < n:
            self.counters.add_block(await self.refill(max(n, self.block)))


async def probe(grant: SessionGrant, keys: dict[str, bytes], block: tuple[int, int], rx_last: int | None,
                refill: Refill, timeouts: Timeouts, client_system_title: bytes, link_factory=None) -> int | None:
    """Associate under `keys` with counters from `block`, read the clock, release: the
    highest counter the meter sent (its answers verified under `keys`). Raises what the
    association raised: `refuses_keys` tells a meter that holds other keys."""
    pool = _Counters(BlockCounters(block, rx_last), refill, block[1] - block[0] + 1)
    client = meter_client(grant, keys, pool.counters, client_system_title, timeouts, link_factory)
    client.before_request = pool.ensure
    await _within("the association", timeouts.association, client.connect())
    client.link.timeout = timeouts.request
    try:
        await client.get(CLOCK, 2, class_id=8)
    finally:
        await client.close()
    return pool.counters.server_last_seen


def key_transfer_data(grant: SessionGrant, new_keys: dict[str, bytes]) -> Data:
    """key_transfer's parameter: `new_keys` wrapped under the meter's master key. Made before
    the new keys are written, so that a meter whose master key the store lacks (or cannot
    unwrap) fails its change with nothing left behind: KeyTransferImpossible."""
    master = grant.keys.get("master")
    if master is None:
        why = ("does not unwrap with this key-encryption key" if "master" in grant.unusable_keys
               else "is not in the store")
        raise KeyTransferImpossible(f"meter {grant.serial}: its master key {why}; key_transfer needs it to wrap "
                                    "the new keys (import it with `hes db import-fleet`)")
    length = suite_parameters(grant.suite).key_length
    if len(master) < length:
        raise KeyTransferImpossible(f"meter {grant.serial}: its master key has {len(master)} bytes, suite "
                                    f"{grant.suite} wraps under {length}")
    kek = master[:length]  # the meter's KEK: its master key's first bytes for suites 0 and 1
    return encode_key_transfer([KeyTransfer.wrap(kek, KeyId.GLOBAL_UNICAST_ENCRYPTION, new_keys["ek"]),
                                KeyTransfer.wrap(kek, KeyId.AUTHENTICATION, new_keys["ak"])])


async def transfer_keys(grant: SessionGrant, new_keys: dict[str, bytes], transfer: Data, new_block: tuple[int, int],
                        refill_active: Refill, refill_new: Refill, timeouts: Timeouts, client_system_title: bytes,
                        link_factory=None) -> int | None:
    """Step 2 of the module's description, `transfer` being `key_transfer_data(grant,
    new_keys)`: the highest counter the meter sent under the new keys. Before key_transfer
    went out, what the association raised (the meter has not heard of the new keys);
    KeyTransferRefused when the meter refused it, KeyTransferDeferred when it answered
    temporary-failure (it keeps its keys either way); KeyTransferUncertain when anything
    failed after it went out."""
    active = _Counters(BlockCounters(grant.counter_block, grant.rx_last), refill_active,
                       grant.counter_block[1] - grant.counter_block[0] + 1)
    client = meter_client(grant, grant.keys, active.counters, client_system_title, timeouts, link_factory)
    client.before_request = active.ensure
    await _within("the association", timeouts.association, client.connect())
    client.link.timeout = timeouts.request
    sent = False
    try:
        # the request takes its counter before it goes out: one more counter, so that the
        # top-up (a store call) never falls between sending and the answer
        await active.ensure(2)
        client.before_request = None
        sent = True
        try:
            await client.action(security_setup(grant.client_sap), KEY_TRANSFER, transfer, class_id=SECURITY_SETUP_CLASS)
        except AccessDenied as exc:
            if exc.result == DataAccessResult.TEMPORARY_FAILURE:
                raise KeyTransferDeferred(f"meter {grant.serial}: key_transfer answered temporary-failure ({exc}); "
                                          "it keeps its keys") from None
            raise KeyTransferRefused(f"meter {grant.serial}: key_transfer refused ({exc})") from None
        # the meter answered under the old keys and holds the new ones from now on
        fresh = _Counters(BlockCounters(new_block, None), refill_new, new_block[1] - new_block[0] + 1)
        client.association.rekey(ek=new_keys["ek"], ak=new_keys["ak"], counters=fresh.counters)
        client.before_request = fresh.ensure
        await client.get(CLOCK, 2, class_id=8)
        return fresh.counters.server_last_seen
    except (KeyTransferRefused, KeyTransferDeferred):
        raise
    except Exception as exc:
        if sent:
            raise KeyTransferUncertain(f"meter {grant.serial}: the session failed after key_transfer went out "
                                       f"({type(exc).__name__}: {exc})") from exc
        raise
    finally:
        await client.close()

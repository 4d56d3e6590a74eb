"""The fleet store on PostgreSQL (schema: `sql/*.sql`, applied by `migrate`).

A worker's read session is two calls, each sent with those of the worker's other sessions
made meanwhile (`batching.Coalescer`: one round trip for many sessions):

* `claim` (SQL function hes_begin): the job still open, the meter's lease (with a fencing
  token, so two sessions never read one meter at once), a session slot of the meter's cell
  and a new-connection token (the cell's limits, across all workers), and a block of
  invocation counters committed before the first is used (a crash leaves a gap, never a
  reuse); a claim granted answers with the meter's keys, counters, capabilities and marks.
* `finish_session` (SQL function hes_finish): the readings into the partitioned table without
  duplicates, the marks and the meter's counter moved up, the capabilities learnt, the job's
  one outcome, lease and slot given back; refused as a whole if the lease was lost meanwhile.

`migrate` applies the migrations not yet applied, one process at a time; `KeyVault` wraps the
meters' keys at rest under the key-encryption key.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator, Iterable, Sequence

import asyncpg
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from smartmeter.errors import SmartmeterError
from smartmeter.hes.store.batching import CONNECTION_LOST, Coalescer

__all__ = ["Event", "FleetStore", "KeyVault", "LeaseLost", "MeterBusy", "MeterRecord", "SessionGrant", "StoreError",
           "StoreUnavailable", "UnknownMeter", "migrations"]

log = logging.getLogger(__name__)

COUNTER_MAX = 0xFFFFFFFF
# how long after a key change pushes under the keys it replaced are still taken (pushes made
# before it, on their way); the store's setting 'expired_key_grace' (seconds) overrides it
EXPIRED_KEY_GRACE = 24 * 3600.0
# what a connection to the store may take before the caller is told it is unreachable
CONNECT_TIMEOUT = 10.0


class StoreError(SmartmeterError):
    """The store refused or failed an operation."""


class StoreUnavailable(StoreError):
    """PostgreSQL cannot be reached (down, restarting, wrong address)."""


class UnknownMeter(StoreError):
    """No meter of that serial or system title is in the store."""


class MeterBusy(StoreError):
    """Another session holds the meter's lease."""


class LeaseLost(StoreError):
    """The session's lease expired and another holder took the meter: its results are refused."""


# Exceptions that mean "the database is not there right now" rather than "the request is wrong".
UNAVAILABLE = (OSError, asyncio.TimeoutError, asyncpg.exceptions.CannotConnectNowError,
               asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.exceptions.ConnectionFailureError,
               asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CrashShutdownError,
               asyncpg.exceptions.InterfaceError, asyncpg.exceptions.TooManyConnectionsError)


def describe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    try:
        from urllib.parse import urlsplit
        parts = urlsplit(dsn)
        if parts.password:
            return dsn.replace(f":{parts.password}@", ":***@")
    except ValueError:
        pass
    return dsn


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped, in order."""
    found = []
    for entry in resources.files("smartmeter.hes.store").joinpath("sql").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name[:-4], entry.read_text(encoding="utf-8")))
    return sorted(found)


class KeyVault:
    """Wraps keys at rest under a 256-bit key-encryption key (AES key wrap, RFC 3394)."""

    def __init__(self, kek: bytes) -> None:
        if len(kek) != 32:
            raise StoreError(f"the key-encryption key has {len(kek)} bytes; it must have 32")
        self._kek = kek

    @classmethod
    def from_file(cls, path: Path, create: bool = False) -> "KeyVault":
        """The KEK in `path` (32 bytes, or 64 hex digits); with `create`, a new one is written
        there (owner-only) when the file does not exist."""
        if not path.exists():
            if not create:
                raise StoreError(f"no key-encryption key at {path}; `smartmeter hes db import-fleet` creates one")
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "x", opener=lambda p, f: __import__("os").open(p, f, 0o600)) as out:
                out.write(secrets.token_hex(32) + "\n")
        raw = path.read_bytes().strip()
        try:
            kek = bytes.fromhex(raw.decode("ascii")) if len(raw) == 64 else raw
        except (UnicodeDecodeError, ValueError):
            raise StoreError(f"{path} is not a key-encryption key (64 hex digits)") from None
        return cls(kek)

    def wrap(self, key: bytes) -> bytes:
        return aes_key_wrap(self._kek, key)

    def unwrap(self, wrapped: bytes) -> bytes:
        try:
            return aes_key_unwrap(self._kek, wrapped)
        except InvalidUnwrap:
            raise StoreError("a stored key does not unwrap with this key-encryption key (wrong --kek file?)") from None


@dataclass(frozen=True)
class MeterRecord:
    """A meter as the head-end knows it (what `hes meters import` takes)."""

    serial: str
    system_title: bytes
    host: str
    port: int
    cell: str = "default"
    client_sap: int = 1
    server_sap: int = 1
    mechanism: int = 5
    suite: int = 0
    policy: int = 0
    keys: dict[str, bytes] = field(default_factory=dict, repr=False)  # kind → key


@dataclass
class SessionGrant:
    """What `begin_session` hands a worker for one session with one meter."""

    meter_id: int
    serial: str
    system_title: bytes
    host: str
    port: int
    cell: str
    client_sap: int
    server_sap: int
    mechanism: int
    suite: int
    policy: int
    capabilities: dict[str, Any]
    keys: dict[str, bytes] = field(repr=False)
    new_keys: dict[str, bytes] = field(repr=False)  # written, not yet confirmed by the meter
    key_generation: int
    lease_token: int
    counter_block: tuple[int, int]  # first, last (inclusive), reserved for this session
    rx_last: int | None
    marks: dict[str, dt.datetime]  # profile OBIS → last capture time stored
    slot: tuple[int, int] | None = None  # the cell's session slot held and its token, if any
    new_generation: int | None = None  # the generation of new_keys
    # kinds stored that do not unwrap with this KEK and that a read does not need (the master
    # key): left out of keys, so that only a key change fails on them
    unusable_keys: tuple[str, ...] = ()
    lease_deadline: float | None = None  # time.monotonic() at which the lease runs out


@dataclass
class Claim:
    """What `FleetStore.claim` got: status 'granted' (with grant), 'closed' (the job has its
    outcome: job_state, None if there is no such job), 'busy' (another lease), 'cell_full',
    'throttled' (retry after wait seconds, passing slot back), 'exhausted' (counters used up)
    or 'poison' (begun too often, never ended: failed now)."""

    status: str
    job_state: str | None
    cell: str | None
    slot: tuple[int, int] | None  # (slot, its token)
    wait: float | None
    grant: SessionGrant | None = None


@dataclass(frozen=True)
class Reading:
    source: str  # '' for a value as read, else the profile's OBIS
    obis: str
    attribute: int
    time: dt.datetime
    raw: int
    quality: int = 0


@dataclass(frozen=True)
class Event:
    """One entry of a meter's event log: the log's OBIS, the entry's time and event code."""

    log: str
    time: dt.datetime
    code: int


@dataclass
class SessionResult:
    """What a finished session stores, in `finish_session`'s one transaction."""

    readings: list[Reading]
    scalers: dict[tuple[str, str, int], tuple[int, int]]  # (source, obis, attribute) → (scaler, unit)
    marks: dict[str, dt.datetime]  # profile or event log → last capture time now stored
    rx_last: int | None
    tx_used: int | None
    capabilities: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)  # stored once: (meter, log, time, code) is the key


def _month(t: dt.datetime) -> dt.date:
    t = t.astimezone(dt.timezone.utc)
    return dt.date(t.year, t.month, 1)


def _next_month(d: dt.date) -> dt.date:
    return dt.date(d.year + (d.month == 12), d.month % 12 + 1, 1)


class FleetStore:
    """A pool of connections to the fleet store and the operations the head-end needs."""

    def __init__(self, pool: asyncpg.Pool, vault: KeyVault | None, dsn: str) -> None:
        self.pool = pool
        self.vault = vault
        self.dsn = dsn
        self._partitions: set[dt.date] = set()
        self._store_id: str | None = None
        # a call goes at once, or with the others made while the previous batch was out
        self._claims = Coalescer(self._claim_batch, window=None, orphaned=self._release_claimed)
        self._finishes = Coalescer(self._finish_batch, window=None)
        self._held: dict[str, asyncpg.Connection] = {}  # a connection for each kind of batch
        self._past_grace_said: set[tuple[bytes, int]] = set()  # (meter, generation) of keys said past their grace

    @classmethod
    async def open(cls, dsn: str, vault: KeyVault | None = None, *, min_size: int = 1, max_size: int = 10,
                   migrate: bool = False, check: bool = True) -> "FleetStore":
        try:
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, timeout=CONNECT_TIMEOUT,
                                             command_timeout=60, reset=_keep_session)
        except UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL at {describe_dsn(dsn)} ({exc.__class__.__name__}: "
                                   f"{exc}); is the server running and the address right?") from None
        except asyncpg.PostgresError as exc:
            raise StoreUnavailable(f"PostgreSQL at {describe_dsn(dsn)} refused the connection: {exc}") from None
        store = cls(pool, vault, dsn)
        try:
            if migrate:
                await store.migrate()
            elif check:
                await store.check_schema()
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        for coalescer in (self._claims, self._finishes):
            await coalescer.close()
        for purpose in list(self._held):
            await self.pool.release(self._held.pop(purpose))
        await self.pool.close()

    async def _batch_call(self, purpose: str, method: str, query: str, *args):
        """A batch's statement on the connection kept for that kind of batch (its coalescer has
        one batch out at a time): a round trip without the pool's acquire and release, which
        cost the worker as much CPU as the round trip itself. A connection that failed goes
        back to the pool, which replaces it."""
        conn = self._held.get(purpose)
        if conn is None:
            conn = self._held[purpose] = await self.pool.acquire()
        try:
            return await getattr(conn, method)(query, *args)
        except asyncpg.PostgresError as exc:
            if isinstance(exc, CONNECTION_LOST):
                await self._drop_held(purpose, conn)
            raise
        except BaseException:  # a lost connection, a time-out or a cancellation mid-statement
            await self._drop_held(purpose, conn)
            raise

    async def _drop_held(self, purpose: str, conn) -> None:
        if self._held.get(purpose) is conn:
            del self._held[purpose]
        conn.terminate()
        await self.pool.release(conn)

    # -- schema ------------------------------------------------------------------------------
    async def migrate(self) -> list[str]:
        """Apply the migrations not yet applied, in order; one at a time across processes."""
        applied = []
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('smartmeter.migrate'))")
                await conn.execute("CREATE TABLE IF NOT EXISTS schema_migration (version integer PRIMARY KEY, "
                                   "name text NOT NULL, applied timestamptz NOT NULL DEFAULT now())")
                done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migration")}
                for version, name, sql in migrations():
                    if version in done:
                        continue
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migration (version, name) VALUES ($1, $2)", version, name)
                    applied.append(name)
        return applied

    async def store_id(self) -> str:
        """This store's own name (made by its first migration)."""
        if self._store_id is None:
            raw = await self.pool.fetchval("SELECT value FROM setting WHERE name = 'store_id'")
            self._store_id = bytes(raw).decode()
        return self._store_id

    async def check_schema(self) -> None:
        wanted = max(v for v, _, _ in migrations())
        try:
            have = await self.pool.fetchval("SELECT max(version) FROM schema_migration")
        except asyncpg.UndefinedTableError:
            have = None
        if have is None or have < wanted:
            raise StoreError(f"the store at {describe_dsn(self.dsn)} is at schema version {have or 0}, this head-end "
                             f"needs {wanted}: run `smartmeter hes db migrate --db DSN`")

    # -- meters and keys ---------------------------------------------------------------------
    KEK_CHECK = b"smartmeter.kek.check.v1"[:16].ljust(16, b"\0")

    async def check_kek(self) -> None:
        """StoreError unless this process's KEK is the one the store's keys are wrapped under
        (the first import records a check value)."""
        vault = self._vault()
        wrapped = await self.pool.fetchval("SELECT value FROM setting WHERE name = 'kek_check'")
        if wrapped is None:
            await self.pool.execute("INSERT INTO setting (name, value) VALUES ('kek_check', $1) ON CONFLICT DO NOTHING",
                                    vault.wrap(self.KEK_CHECK))
            wrapped = await self.pool.fetchval("SELECT value FROM setting WHERE name = 'kek_check'")
        try:
            ok = vault.unwrap(bytes(wrapped)) == self.KEK_CHECK
        except StoreError:
            ok = False
        if not ok:
            raise StoreError(f"the key-encryption key given is not the one the keys in {describe_dsn(self.dsn)} are "
                             "wrapped under: give the --kek file of the first `hes db import-fleet`")

    async def add_meters(self, meters: Iterable[MeterRecord], cell_limits: tuple[int, float, float] | None = None) -> int:
        """Insert or update meters (by serial) and their keys as ACTIVE generation 1 when they
        have none; returns how many were added or changed."""
        vault = self._vault()
        await self.check_kek()
        count = 0
        async with self.pool.acquire() as conn, conn.transaction():
            cells = set()
            for m in meters:
                meter_id = await conn.fetchval(
                    """INSERT INTO meter (serial, system_title, host, port, cell, client_sap, server_sap,
                                          mechanism, suite, policy)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                       ON CONFLICT (serial) DO UPDATE SET system_title = excluded.system_title,
                           host = excluded.host, port = excluded.port, cell = excluded.cell,
                           client_sap = excluded.client_sap, server_sap = excluded.server_sap,
                           mechanism = excluded.mechanism, suite = excluded.suite, policy = excluded.policy
                       RETURNING id""",
                    m.serial, m.system_title, m.host, m.port, m.cell, m.client_sap, m.server_sap, m.mechanism,
                    m.suite, m.policy)
                for kind, key in m.keys.items():
                    await conn.execute(
                        """INSERT INTO meter_key (meter_id, kind, generation, state, wrapped)
                           SELECT $1, $2, 1, 'ACTIVE', $3
                           WHERE NOT EXISTS (SELECT 1 FROM meter_key WHERE meter_id = $1 AND kind = $2)""",
                        meter_id, kind, vault.wrap(key))
                await conn.execute("INSERT INTO frame_counter (meter_id, key_generation) VALUES ($1, 1) "
                                   "ON CONFLICT DO NOTHING", meter_id)
                cells.add(m.cell)
                count += 1
            for name in cells:
                await self._ensure_cell(conn, name, cell_limits)
        await self._analyze_slots()
        return count

    async def set_cell_limits(self, name: str, max_sessions: int, connects_per_s: float,
                              burst: float | None = None) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._ensure_cell(conn, name, (max_sessions, connects_per_s, burst or max(1.0, connects_per_s)),
                                    replace=True)
        await self._analyze_slots()

    async def _analyze_slots(self) -> None:
        """Statistics of the cells' slots, once they were made or changed. A claim takes its
        cell's lowest free slot; without statistics the planner expects a few rows per cell,
        reads and sorts all of them (180 µs a claim with 1,000 slots) instead of walking the
        index to the first free one (20 µs), until autovacuum analyses the table, which a
        campaign of minutes never waits for."""
        await self.pool.execute("ANALYZE cell, cell_slot")

    @staticmethod
    async def _ensure_cell(conn, name: str, limits: tuple[int, float, float] | None, replace: bool = False) -> None:
        max_sessions, rate, burst = limits or (16, 50.0, 50.0)
        if replace:
            await conn.execute("""INSERT INTO cell (name, max_sessions, connects_per_s, burst, tokens)
                                  VALUES ($1, $2, $3, $4, $4) ON CONFLICT (name) DO UPDATE SET
                                  max_sessions = excluded.max_sessions, connects_per_s = excluded.connects_per_s,
                                  burst = excluded.burst, tokens = LEAST(cell.tokens, excluded.burst)""",
                               name, max_sessions, rate, burst)
        else:
            await conn.execute("INSERT INTO cell (name, max_sessions, connects_per_s, burst, tokens) "
                               "VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING", name, max_sessions, rate, burst)
        max_sessions = await conn.fetchval("SELECT max_sessions FROM cell WHERE name = $1", name)
        await conn.execute("INSERT INTO cell_slot (cell, slot) SELECT $1, s FROM generate_series(1, $2) s "
                           "ON CONFLICT DO NOTHING", name, max_sessions)
        # slots above a lowered limit go; a session holding one finishes, none new starts there
        await conn.execute("DELETE FROM cell_slot WHERE cell = $1 AND slot > $2", name, max_sessions)

    def _vault(self) -> KeyVault:
        if self.vault is None:
            raise StoreError("this operation needs the key-encryption key (--kek FILE)")
        return self.vault

    async def meter_ids(self, *, cell: str | None = None, serials: Sequence[str] | None = None) -> list[tuple[int, str, str]]:
        """(id, serial, cell) of the meters selected, in id order."""
        query = "SELECT id, serial, cell FROM meter"
        args: list[Any] = []
        where = []
        if cell is not None:
            args.append(cell)
            where.append(f"cell = ${len(args)}")
        if serials:
            args.append(list(serials))
            where.append(f"serial = ANY(${len(args)})")
        if where:
            query += " WHERE " + " AND ".join(where)
        return [tuple(r) for r in await self.pool.fetch(query + " ORDER BY id", *args)]

    async def push_key_rows(self, titles: Sequence[bytes]) -> list:
        """The unicast key rows (system_title, suite, kind, generation, state, wrapped) the pushes
        of the meters `titles` may be made under, per meter the ACTIVE first, then the newest:
        NEW and ACTIVE keys, and EXPIRED ones for a grace after they expired (the setting
        'expired_key_grace', seconds, else EXPIRED_KEY_GRACE): pushes made before a key change
        and still on their way. Past it an EXPIRED key is left out, so pushes under it are
        refused as under wrong keys; said once per meter and generation."""
        rows = await self.pool.fetch(
            """SELECT m.system_title, m.suite, k.kind, k.generation, k.state, k.wrapped, k.changed,
                      k.state = 'EXPIRED' AND k.changed <= now() - make_interval(secs => coalesce(
                          (SELECT convert_from(value, 'UTF8')::float8 FROM setting WHERE name = 'expired_key_grace'),
                          $2)) AS past_grace
               FROM meter m JOIN meter_key k ON k.meter_id = m.id AND k.kind IN ('ek', 'ak')
               WHERE m.system_title = ANY($1::bytea[])
               ORDER BY m.id, k.state = 'ACTIVE' DESC, k.generation DESC""", list(titles), EXPIRED_KEY_GRACE)
        for r in rows:
            said = (bytes(r["system_title"]), r["generation"])
            if r["past_grace"] and said not in self._past_grace_said:
                if len(self._past_grace_said) >= 100_000:
                    self._past_grace_said.clear()
                self._past_grace_said.add(said)
                log.warning("meter %s: its keys of generation %d expired at %s, longer ago than the grace for pushes "
                            "on their way: pushes under them are refused", said[0].hex().upper(), said[1],
                            r["changed"].isoformat(timespec="seconds"))
        return [r for r in rows if not r["past_grace"]]

    # -- sessions ----------------------------------------------------------------------------
    async def claim(self, meter_id: int, holder: str, lease_s: float, block: int, *, campaign: int | None = None,
                    throttle: bool = False, slot: tuple[int, int] | None = None,
                    max_claims: int | None = None, urgent: bool = False) -> "Claim":
        """Claim the meter for a session (SQL function hes_begin): the job still open, with
        `throttle` a session slot of its cell and a connection token, the meter's lease, a
        block of `block` invocation counters. A `Claim` that is not granted says why; a granted
        one carries the SessionGrant with the meter's data (address, marks, keys). The claims
        made at about the same time go in one round trip (hes_begin_batch, each claim still a
        transaction of its own: claims held together would wait on each other's cells across
        workers), each granted one with its meter's data; an `urgent` claim goes first in its batch,
        so an on-demand read takes a cell's free slot ahead of a campaign."""
        item = (campaign, meter_id, holder, lease_s, block, throttle, *(slot if slot is not None else (None, None)),
                max_claims, urgent)
        row = await self._claims.submit(item)
        held = (row["slot"], row["slot_token"]) if row["slot"] is not None else None
        claim = Claim(row["status"], row["job_state"], row["cell"], held, row["wait"])
        if claim.status == "granted":
            try:
                if row["grant"] is None:  # a meter deleted meanwhile
                    raise UnknownMeter(f"meter {meter_id} is gone")
                claim.grant = _grant(self._vault(), json.loads(row["grant"]), row, block)
            except BaseException:  # keys that do not unwrap: what the claim took goes back now
                await self._release_claimed(item, row)
                raise
            claim.grant.slot = held
        return claim

    async def _claim_batch(self, items: Sequence[tuple]) -> list[dict[str, Any] | Exception]:
        """hes_begin for each of `items` (its arguments and whether it is urgent), each in its
        own transaction, the urgent ones first; a granted claim with its meter's data."""
        order = sorted(range(len(items)), key=lambda n: not items[n][9])
        out = await self._batch_call(
            "claims", "fetchrow", "CALL hes_begin_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, "
            "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
            *([items[n][k] for n in order] for k in range(9)))
        answers = zip(*(out["o_" + c] for c in _CLAIM_COLUMNS), out["o_error"])
        rows: list[dict[str, Any] | Exception] = [None] * len(items)  # type: ignore[list-item]
        for n, (*values, error) in zip(order, answers):
            if error is None:
                rows[n] = dict(zip(_CLAIM_COLUMNS, values))
            else:  # the claim raised in the server: the exception asyncpg would have raised
                sqlstate, _, message = error.partition(" ")
                rows[n] = _postgres_error(sqlstate, message)
        return rows

    async def _release_claimed(self, item: tuple, row: dict[str, Any]) -> None:
        """Give back what a granted claim of `item` took, when its caller cannot use it."""
        if row["status"] == "granted":
            await self.pool.execute("SELECT hes_release($1, $2, $3, $4, $5)", item[1], row["token"], row["cell"],
                                    row["slot"], row["slot_token"])

    async def release(self, grant: "SessionGrant") -> None:
        """Give back a session's lease and slot without storing anything."""
        slot, slot_token = grant.slot or (None, None)
        await self.pool.execute("SELECT hes_release($1, $2, $3, $4, $5)", grant.meter_id, grant.lease_token,
                                grant.cell, slot, slot_token)

    async def begin_session(self, meter_id: int, holder: str, lease_s: float, block: int) -> SessionGrant:
        """Claim the meter and reserve `block` invocation counters, outside any campaign and
        cell limit; MeterBusy if another holds it."""
        claim = await self.claim(meter_id, holder, lease_s, block)
        if claim.status == "busy":
            raise MeterBusy(f"meter {meter_id} is being read by another session")
        if claim.status == "exhausted":
            raise StoreError(f"meter {meter_id}: its invocation counters are used up; change its unicast key")
        if claim.grant is None:
            raise UnknownMeter(f"no meter with id {meter_id}")
        return claim.grant

    async def reserve_counters(self, meter_id: int, generation: int, block: int,
                               lease_token: int | None = None) -> tuple[int, int]:
        """Another block of invocation counters for a session that used up its first. With
        `lease_token`, only while that lease of the meter is valid (LeaseLost else): a session
        whose lease ran out (a worker paused) gets no more counters to talk to the meter with."""
        top = await self.pool.fetchval(
            """UPDATE frame_counter SET tx_reserved = tx_reserved + $3
               WHERE meter_id = $1 AND key_generation = $2 AND tx_reserved + $3 <= 4294967295
                 AND ($4::bigint IS NULL OR EXISTS (SELECT 1 FROM meter_lease l WHERE l.meter_id = $1
                                                    AND l.token = $4 AND l.expires > clock_timestamp()))
               RETURNING tx_reserved""", meter_id, generation, block, lease_token)
        if top is None:
            if lease_token is not None and not await self.pool.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM meter_lease WHERE meter_id = $1 AND token = $2 "
                    "AND expires > clock_timestamp())", meter_id, lease_token):
                raise LeaseLost(f"meter {meter_id}: the session's lease ran out; no more counters for it")
            raise StoreError("the meter's invocation counters are used up; change its unicast key")
        return top - block + 1, top

    async def finish_session(self, grant: SessionGrant, result: SessionResult, job: tuple[int, str] | None,
                             holder: str | None = None) -> int:
        """Store what the session read and the job's outcome in one transaction (SQL function
        hes_finish), and give back the lease and the slot; LeaseLost if another holder took
        the meter meanwhile (nothing is stored then). Returns the readings newly stored (0
        when the job already had its outcome). The sessions finished at about the same time
        go in one round trip and one transaction (hes_finish_batch); a batch that one
        session's data breaks is run again one session at a time."""
        await self._ensure_partitions({_month(r.time) for r in result.readings})
        campaign, job_holder = job if job is not None else (None, holder or "")
        stored = await self._finishes.submit((grant, result, campaign, job_holder, dt.datetime.now(dt.timezone.utc)))
        if stored == -1:
            raise LeaseLost(f"meter {grant.serial}: the session's lease was taken over; its results are dropped")
        return max(stored, 0)

    async def _finish_batch(self, items: Sequence[tuple]) -> list[int]:
        sessions = []
        for grant, result, campaign, holder, received in items:
            keys = sorted({(r.source, r.obis, r.attribute) for r in result.readings})
            index = {k: i + 1 for i, k in enumerate(keys)}
            scalers = [result.scalers.get(k) for k in keys]
            slot, slot_token = grant.slot or (None, None)
            sessions.append({
                "meter": grant.meter_id, "token": grant.lease_token, "campaign": campaign, "holder": holder,
                "cell": grant.cell, "slot": slot, "slot_token": slot_token, "received": _epoch_us(received),
                "rx_last": result.rx_last, "key_generation": grant.key_generation,
                "capabilities": result.capabilities or None,
                "series": [[*k, *(s if s else (None, None)), s is not None] for k, s in zip(keys, scalers)],
                "readings": [[index[(r.source, r.obis, r.attribute)], _epoch_us(r.time), r.raw, r.quality]
                             for r in result.readings],
                "marks": [[profile, _epoch_us(t)] for profile, t in result.marks.items()],
                "events": [[e.log, _epoch_us(e.time), e.code] for e in result.events]})
        return await self._batch_call("finishes", "fetchval", "SELECT hes_finish_batch($1::text::jsonb)",
                                      json.dumps(sessions))

    # -- key changes (SQL functions hes_key_*, sql/0003_key_change.sql) ----------------------
    async def new_keys(self, grant: SessionGrant, keys: dict[str, bytes], block: int) -> tuple[int, tuple[int, int]]:
        """Write `keys` (kind → key) wrapped as the meter's next generation, state NEW, with
        its first `block` invocation counters reserved, in one transaction, under the session's
        lease: (generation, counter block). LeaseLost if the lease was taken over; StoreError
        if a NEW generation is there already (settle that one first)."""
        vault = self._vault()
        kinds = sorted(keys)
        row = await self.pool.fetchrow("SELECT * FROM hes_key_new($1, $2, $3, $4, $5)", grant.meter_id,
                                       grant.lease_token, kinds, [vault.wrap(keys[k]) for k in kinds], block)
        if row is None:
            if not await self._holds_lease(grant):
                raise LeaseLost(f"meter {grant.serial}: the session's lease was taken over; no new keys written")
            raise StoreError(f"meter {grant.serial}: new keys are waiting for confirmation already")
        return row["generation"], (row["tx_top"] - block + 1, row["tx_top"])

    async def promote_keys(self, grant: SessionGrant, generation: int, rx_last: int | None,
                           job: tuple[int, str] | None = None) -> bool:
        """The meter uses generation `generation`: NEW → ACTIVE and the keys it replaces →
        EXPIRED in one transaction; with `job` (campaign, holder), the job's outcome 'done' and
        the lease and slot given back in that same transaction. False when the generation was
        discarded meanwhile; LeaseLost when the lease was taken over (nothing changes)."""
        async with self.pool.acquire() as conn, conn.transaction():
            promoted = await conn.fetchval("SELECT hes_key_promote($1, $2, $3, $4)", grant.meter_id,
                                           grant.lease_token, generation, rx_last)
            if promoted == -1:
                raise LeaseLost(f"meter {grant.serial}: the session's lease was taken over; keys not promoted")
            if promoted == -3:
                return False
            if job is not None:
                slot, slot_token = grant.slot or (None, None)
                await conn.fetchval(
                    "SELECT hes_finish($1, $2, $3, $4, $5, $6, $7, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', "
                    "'{}', '{}', $8, '{}', '{}', NULL, $9, NULL)",
                    grant.meter_id, grant.lease_token, job[0], job[1], grant.cell, slot, slot_token,
                    dt.datetime.now(dt.timezone.utc), generation)
        return True

    async def discard_new_keys(self, grant: SessionGrant, generation: int) -> bool:
        """The meter holds the ACTIVE keys: generation `generation` NEW → EXPIRED (never used)."""
        return await self.pool.fetchval("SELECT hes_key_discard($1, $2, $3)", grant.meter_id, grant.lease_token,
                                        generation)

    async def _holds_lease(self, grant: SessionGrant) -> bool:
        return await self.pool.fetchval("SELECT EXISTS (SELECT 1 FROM meter_lease WHERE meter_id = $1 AND token = $2)",
                                        grant.meter_id, grant.lease_token)

    async def _ensure_partitions(self, months: set[dt.date]) -> None:
        missing = months - self._partitions
        if not missing:
            return
        async with self.pool.acquire() as conn:
            for month in sorted(missing):
                await self.ensure_partition(conn, month)
                self._partitions.add(month)

    @staticmethod
    async def ensure_partition(conn, month: dt.date) -> None:
        """The month's partition of `reading` (UTC month bounds), created once across processes."""
        name = f"reading_y{month.year:04d}m{month.month:02d}"
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('smartmeter.reading_partition'))")
            exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
            if not exists:
                await conn.execute(f"CREATE TABLE {name} PARTITION OF reading FOR VALUES FROM "
                                   f"('{month.isoformat()} 00:00+00') TO ('{_next_month(month).isoformat()} 00:00+00')")

    # -- campaigns and jobs -------------------------------------------------------------------
    async def create_campaign(self, name: str, kind: str, params: dict, meter_ids: Sequence[int]) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            campaign_id = await conn.fetchval("INSERT INTO campaign (name, kind, params) VALUES ($1, $2, $3::jsonb) "
                                              "RETURNING id", name, kind, json.dumps(params))
            await conn.execute("INSERT INTO job (campaign_id, meter_id) SELECT $1, unnest($2::bigint[])",
                               campaign_id, list(meter_ids))
        return campaign_id

    async def campaign_of(self, campaign_id: int) -> tuple[str, str] | None:
        """(kind, store id it was created under) of a campaign; None when there is none. The
        store's campaign decides what its jobs do, not their messages."""
        row = await self.pool.fetchrow("SELECT kind, store_id FROM campaign WHERE id = $1", campaign_id)
        return (row["kind"], row["store_id"]) if row is not None else None

    async def fail_job(self, campaign_id: int, meter_id: int, error: str, worker: str, counted: bool = False) -> bool:
        """Record a job's failure (its final outcome); False if it already had one. `counted`:
        the attempt that failed was already counted."""
        status = await self.pool.execute(
            """UPDATE job SET state = 'failed', error = $3, worker = $4, finished = now(),
                              attempts = attempts + $5
               WHERE campaign_id = $1 AND meter_id = $2 AND state = 'queued'""",
            campaign_id, meter_id, error[:500], worker, 0 if counted else 1)
        return status.endswith(" 1")

    async def count_attempt(self, campaign_id: int, meter_id: int, error: str) -> int:
        """Count a failed attempt of a job that is tried again; returns its attempts so far."""
        attempts = await self.pool.fetchval(
            "UPDATE job SET attempts = attempts + 1, error = $3 WHERE campaign_id = $1 AND meter_id = $2 "
            "AND state = 'queued' RETURNING attempts", campaign_id, meter_id, error[:500])
        return attempts or 0

    async def advance_counter(self, meter_id: int, generation: int, at_least: int) -> None:
        """Move the meter's sending counter up to `at_least` (a resync); it never moves down."""
        await self.pool.execute("UPDATE frame_counter SET tx_reserved = GREATEST(tx_reserved, $3) "
                                "WHERE meter_id = $1 AND key_generation = $2", meter_id, generation,
                                min(at_least, COUNTER_MAX))

    async def campaign_status(self, campaign_id: int) -> dict[str, Any]:
        row = await self.pool.fetchrow("SELECT id, name, kind, params, created FROM campaign WHERE id = $1", campaign_id)
        if row is None:
            raise StoreError(f"no campaign {campaign_id}")
        counts = {r["state"]: r["n"] for r in await self.pool.fetch(
            "SELECT state, count(*) AS n FROM job WHERE campaign_id = $1 GROUP BY state", campaign_id)}
        failed = [dict(r) for r in await self.pool.fetch(
            """SELECT m.serial, j.error, j.attempts FROM job j JOIN meter m ON m.id = j.meter_id
               WHERE j.campaign_id = $1 AND j.state = 'failed' ORDER BY m.serial LIMIT 1000""", campaign_id)]
        rows = await self.pool.fetchval("SELECT coalesce(sum(rows), 0) FROM job WHERE campaign_id = $1", campaign_id)
        return {"campaign": row["id"], "name": row["name"], "kind": row["kind"], "params": json.loads(row["params"]),
                "created": row["created"].isoformat(), "queued": counts.get("queued", 0),
                "done": counts.get("done", 0), "failed": counts.get("failed", 0), "rows": int(rows), "failures": failed}

    async def reopen_failed(self, campaign_id: int) -> list[int]:
        """Failed jobs back to queued (for retry-failed): their meter ids."""
        rows = await self.pool.fetch("UPDATE job SET state = 'queued', finished = NULL, attempts = 0 "
                                     "WHERE campaign_id = $1 AND state = 'failed' RETURNING meter_id", campaign_id)
        return [r["meter_id"] for r in rows]

    # -- pushes ------------------------------------------------------------------------------
    async def store_pushes(self, pushes: Sequence["IngestedPush"]) -> tuple[set[tuple[bytes, str, int]], int]:
        """Store pushes in one transaction: each one's raw_push row and, for a push whose row is
        new, its values (series made as needed, integers into reading, other values into
        reading_data). A push already stored (delivered again) changes nothing, so a batch may
        come as often as it likes. Returns the (system title, key id, invocation counter) newly
        stored and how many values were."""
        if not pushes:
            return set(), 0
        await self._ensure_partitions({_month(p.time) for p in pushes
                                       if p.time is not None and any(v.raw is not None for v in p.values)})
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """INSERT INTO raw_push (system_title, invocation_counter, received, source, apdu, undecoded, key_id)
                   SELECT * FROM unnest($1::bytea[], $2::bigint[], $3::timestamptz[], $4::text[], $5::bytea[],
                                        $6::text[], $7::text[])
                   ON CONFLICT DO NOTHING RETURNING system_title, key_id, invocation_counter""",
                [p.system_title for p in pushes], [p.invocation_counter for p in pushes],
                [p.received for p in pushes], [p.source for p in pushes], [p.apdu for p in pushes],
                [p.undecoded for p in pushes], [p.key_id for p in pushes])
            fresh = {(bytes(r["system_title"]), r["key_id"], r["invocation_counter"]) for r in rows}
            new = [p for p in pushes if (p.system_title, p.key_id, p.invocation_counter) in fresh and p.values]
            if not new:
                return fresh, 0
            # the meters' ids first: joined by system title in the statements below, the planner
            # matched the values on OBIS before the meter (hundreds of times the rows)
            meter_ids = {bytes(r["system_title"]): r["id"] for r in await conn.fetch(
                "SELECT id, system_title FROM meter WHERE system_title = ANY($1::bytea[])",
                list({p.system_title for p in new}))}
            new = [p for p in new if p.system_title in meter_ids]  # (a meter deleted meanwhile: kept raw)
            # one row per series (ON CONFLICT DO UPDATE may touch a row once a statement); a
            # later push's scaler_unit wins
            series: dict[tuple[int, str, int], tuple[int | None, tuple[int, int] | None]] = {}
            for p in sorted(new, key=lambda p: (p.time, p.invocation_counter)):
                for v in p.values:
                    key = (meter_ids[p.system_title], v.obis, v.attribute)
                    known = series.get(key, (None, None))
                    series[key] = (v.class_id if v.class_id is not None else known[0],
                                   p.scalers.get((v.obis, v.attribute), known[1]))
            keys = list(series)
            columns = [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]]
            await conn.execute(
                """INSERT INTO series (meter_id, source, obis, attribute, class_id)
                   SELECT x.m, '', x.o, x.a, x.c FROM unnest($1::bigint[], $2::text[], $3::smallint[], $4::smallint[])
                                                      AS x(m, o, a, c)
                   ON CONFLICT (meter_id, source, obis, attribute) DO UPDATE SET class_id = excluded.class_id
                    WHERE series.class_id IS NULL AND excluded.class_id IS NOT NULL""",
                *columns, [series[k][0] for k in keys])
            scaled = [k for k in keys if series[k][1] is not None]
            if scaled:
                await conn.execute(
                    """UPDATE series s SET scaler = x.sc, unit = x.u
                         FROM unnest($1::bigint[], $2::text[], $3::smallint[], $4::smallint[], $5::smallint[])
                              AS x(m, o, a, sc, u)
                        WHERE s.meter_id = x.m AND s.source = '' AND s.obis = x.o AND s.attribute = x.a
                          AND (s.scaler, s.unit) <> (x.sc, x.u)""",
                    [k[0] for k in scaled], [k[1] for k in scaled], [k[2] for k in scaled],
                    [series[k][1][0] for k in scaled], [series[k][1][1] for k in scaled])
            # the series' ids once per key, then the values by id (no join per value)
            ids = {(r["m"], r["o"], r["a"]): r["id"] for r in await conn.fetch(
                """SELECT x.m, x.o, x.a, s.id FROM unnest($1::bigint[], $2::text[], $3::smallint[]) AS x(m, o, a)
                   JOIN series s ON s.meter_id = x.m AND s.source = '' AND s.obis = x.o AND s.attribute = x.a""",
                *columns)}
            integers = [(p, v) for p in new for v in p.values if v.raw is not None]
            others = [(p, v) for p in new for v in p.values if v.raw is None]
            stored = 0
            for table, column, chosen, value in (
                    ("reading", "raw, quality", integers, lambda v: v.raw),
                    ("reading_data", "data", others, lambda v: json.dumps(v.data, separators=(",", ":")))):
                if not chosen:
                    continue
                # quality: a push carries no status of its values, 0
                values = "x.v, 0" if table == "reading" else "x.v::jsonb"
                status = await conn.execute(
                    f"""INSERT INTO {table} (series_id, time, {column}, received)
                        SELECT x.s, x.tm, {values}, x.rc
                          FROM unnest($1::integer[], $2::timestamptz[],
                                      $3::{"bigint" if table == "reading" else "text"}[], $4::timestamptz[])
                               AS x(s, tm, v, rc)
                        ON CONFLICT DO NOTHING""",
                    [ids[(meter_ids[p.system_title], v.obis, v.attribute)] for p, v in chosen],
                    [p.time for p, _ in chosen],
                    [value(v) for _, v in chosen], [p.received for p, _ in chosen])
                stored += int(status.rsplit(" ", 1)[1])
            return fresh, stored


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICROSECOND = dt.timedelta(microseconds=1)


def _epoch_us(t: dt.datetime) -> int:
    """Microseconds since the Unix epoch, exactly (hes_finish_batch's time)."""
    return (t - _EPOCH) // _MICROSECOND


# what hes_begin answers for a claim, as hes_begin_batch's o_<column> arrays
_CLAIM_COLUMNS = ("status", "job_state", "cell", "slot", "slot_token", "wait", "token", "key_generation", "tx_top",
                  "rx_last", "grant")


def _postgres_error(sqlstate: str, message: str) -> asyncpg.PostgresError:
    """The exception asyncpg raises for an error of `sqlstate`, for an error a batch caught in the server."""
    try:
        cls = asyncpg.exceptions._base.PostgresMessage.get_message_class_for_sqlstate(sqlstate)
    except (AttributeError, LookupError):
        cls = asyncpg.PostgresError
    return cls(message)


async def events_of(pool, *, serials: Sequence[str] = (), cell: str | None = None, logs: Sequence[str] = (),
                    start: dt.datetime | None = None, end: dt.datetime | None = None,
                    batch: int = 10_000) -> AsyncIterator[dict[str, Any]]:
    """The stored events of the meters selected (all without serials or cell), start ≤ time <
    end, oldest first (then by meter, log and code), streamed from a cursor `batch` at a time."""
    query = ["SELECT m.serial, e.log, e.time, e.code, e.received FROM event e JOIN meter m ON m.id = e.meter_id"]
    args: list[Any] = []
    where = []
    for column, value, test in (("m.serial", list(serials), "= ANY({})"), ("m.cell", cell, "= {}"),
                                ("e.log", list(logs), "= ANY({})"), ("e.time", start, ">= {}"),
                                ("e.time", end, "< {}")):
        if value:
            args.append(value)
            where.append(f"{column} {test.format(f'${len(args)}')}")
    if where:
        query.append("WHERE " + " AND ".join(where))
    query.append("ORDER BY e.time, m.serial, e.log, e.code")
    async with pool.acquire() as conn, conn.transaction():
        async for row in conn.cursor(" ".join(query), *args, prefetch=batch):
            yield dict(row)


def _grant(vault: KeyVault, data: dict[str, Any], claimed, block: int) -> SessionGrant:
    """The SessionGrant of a claim granted, from hes_grant_data's object."""
    keys, new_keys = {}, {}
    new_generation = None
    unusable = []
    for kind, state, wrapped, generation in data["keys"]:
        # the unicast keys are those of the generation whose counters were reserved, even
        # if a key change made another one ACTIVE in between
        try:
            (new_keys if state == "NEW" else keys)[kind] = vault.unwrap(bytes.fromhex(wrapped))
        except StoreError:
            if kind != "master":
                raise
            unusable.append(kind)  # only key_transfer needs it: the key change says so
        if state == "NEW":
            new_generation = generation
    top = claimed["tx_top"]
    lease_left = data["lease_left"]
    return SessionGrant(
        meter_id=data["id"], serial=data["serial"], system_title=bytes.fromhex(data["system_title"]),
        host=data["host"], port=data["port"], cell=data["cell"], client_sap=data["client_sap"],
        server_sap=data["server_sap"], mechanism=data["mechanism"], suite=data["suite"], policy=data["policy"],
        capabilities=data["capabilities"], keys=keys, new_keys=new_keys, new_generation=new_generation,
        key_generation=claimed["key_generation"], lease_token=claimed["token"],
        counter_block=(top - block + 1, top), rx_last=claimed["rx_last"],
        marks={p: dt.datetime.fromisoformat(t) for p, t in data["marks"].items()},
        unusable_keys=tuple(unusable),
        lease_deadline=time.monotonic() + lease_left if lease_left is not None else None)


async def _keep_session(conn) -> None:
    """A connection goes back to the pool as it is: the store keeps no session state (its locks
    are transaction-scoped), so the reset query asyncpg would send is a round trip saved."""


@dataclass(frozen=True)
class PushValue:
    """One value of a decoded push: `raw` when it is an integer of 64 bits (into reading), else
    `data`, its JSON form (into reading_data)."""

    obis: str
    attribute: int
    class_id: int | None
    raw: int | None
    data: Any = None


@dataclass(frozen=True)
class IngestedPush:
    """A push as the store keeps it: the ciphered APDU with its key, and what it decoded to
    (`values` at capture time `time`, the scaler_units it carried), or why it did not."""

    system_title: bytes
    invocation_counter: int
    received: dt.datetime
    source: str
    apdu: bytes
    time: dt.datetime | None = None
    values: tuple[PushValue, ...] = ()
    scalers: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)  # (obis, attribute) → (scaler, unit)
    undecoded: str | None = None  # why there are no values; None when decoded
    key_id: str = ""  # the fingerprint of the key its tag verified with (a new key starts counters again)

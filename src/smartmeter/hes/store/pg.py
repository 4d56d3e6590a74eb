"""The fleet store on PostgreSQL (schema: `sql/*.sql`, applied by `migrate`).

What a worker's read session needs of it, each a single round trip where it matters:

* `begin_session` claims the meter (a lease with a fencing token, so two workers never read
  one meter at once), reserves a block of invocation counters (committed before the first
  is used: a crash leaves a gap, never a reuse) and returns the meter's keys, counters,
  capabilities and profile high-water marks.
* `claim_cell_slot` / `take_connect_token` throttle a network cell across all workers.
* `finish_session` stores the readings (COPY into a staging table, then into the
  partitioned table without duplicates), moves the high-water marks and the meter's counter
  up, records the job's outcome and releases the lease, all in one transaction that is
  refused if the lease was lost meanwhile.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import asyncpg
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from smartmeter.errors import SmartmeterError

__all__ = ["FleetStore", "KeyVault", "LeaseLost", "MeterBusy", "MeterRecord", "SessionGrant", "StoreError",
           "StoreUnavailable", "UnknownMeter", "migrations"]

COUNTER_MAX = 0xFFFFFFFF
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
                raise StoreError(f"no key-encryption key at {path}; `smartmeter hes db init` creates one")
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


@dataclass(frozen=True)
class Reading:
    source: str  # '' for a value as read, else the profile's OBIS
    obis: str
    attribute: int
    time: dt.datetime
    raw: int
    quality: int = 0


@dataclass
class SessionResult:
    """What a finished session stores, in `finish_session`'s one transaction."""

    readings: list[Reading]
    scalers: dict[tuple[str, str, int], tuple[int, int]]  # (source, obis, attribute) → (scaler, unit)
    marks: dict[str, dt.datetime]  # profile → last capture time now stored
    rx_last: int | None
    tx_used: int | None
    capabilities: dict[str, Any] | None = None


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

    @classmethod
    async def open(cls, dsn: str, vault: KeyVault | None = None, *, min_size: int = 1, max_size: int = 10,
                   migrate: bool = False, check: bool = True) -> "FleetStore":
        try:
            pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, timeout=CONNECT_TIMEOUT,
                                             command_timeout=60, init=_init_connection)
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
        await self.pool.close()

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
    async def add_meters(self, meters: Iterable[MeterRecord], cell_limits: tuple[int, float, float] | None = None) -> int:
        """Insert or update meters (by serial) and their keys as ACTIVE generation 1 when they
        have none; returns how many were added or changed."""
        vault = self._vault()
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
        return count

    async def set_cell_limits(self, name: str, max_sessions: int, connects_per_s: float,
                              burst: float | None = None) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._ensure_cell(conn, name, (max_sessions, connects_per_s, burst or max(1.0, connects_per_s)),
                                    replace=True)

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

    # -- sessions ----------------------------------------------------------------------------
    async def begin_session(self, meter_id: int, holder: str, lease_s: float, block: int) -> SessionGrant:
        """Claim the meter and reserve `block` invocation counters; MeterBusy if another holds it."""
        vault = self._vault()
        async with self.pool.acquire() as conn, conn.transaction():
            meter = await conn.fetchrow("SELECT * FROM meter WHERE id = $1", meter_id)
            if meter is None:
                raise UnknownMeter(f"no meter with id {meter_id}")
            token = await conn.fetchval(
                """INSERT INTO meter_lease (meter_id, holder, token, expires)
                   VALUES ($1, $2, nextval('lease_token'), clock_timestamp() + make_interval(secs => $3))
                   ON CONFLICT (meter_id) DO UPDATE SET holder = excluded.holder, token = excluded.token,
                       expires = excluded.expires
                   WHERE meter_lease.expires < clock_timestamp() OR meter_lease.holder = excluded.holder
                   RETURNING token""", meter_id, holder, lease_s)
            if token is None:
                raise MeterBusy(f"meter {meter['serial']} is being read by another session")
            keys, new_keys, generation = {}, {}, 1
            for row in await conn.fetch("SELECT kind, generation, state, wrapped FROM meter_key "
                                        "WHERE meter_id = $1 AND state IN ('ACTIVE', 'NEW')", meter_id):
                (keys if row["state"] == "ACTIVE" else new_keys)[row["kind"]] = vault.unwrap(row["wrapped"])
                if row["kind"] == "ek" and row["state"] == "ACTIVE":
                    generation = row["generation"]
            counters = await conn.fetchrow(
                """INSERT INTO frame_counter (meter_id, key_generation, tx_reserved) VALUES ($1, $2, $3)
                   ON CONFLICT (meter_id, key_generation) DO UPDATE
                   SET tx_reserved = frame_counter.tx_reserved + $3
                   WHERE frame_counter.tx_reserved + $3 <= 4294967295
                   RETURNING tx_reserved, rx_last""", meter_id, generation, block)
            if counters is None:
                raise StoreError(f"meter {meter['serial']}: its invocation counters are used up; "
                                 "change its unicast key")
            marks = {r["profile"]: r["last_time"] for r in
                     await conn.fetch("SELECT profile, last_time FROM profile_mark WHERE meter_id = $1", meter_id)}
        top = counters["tx_reserved"]
        return SessionGrant(
            meter_id=meter_id, serial=meter["serial"], system_title=bytes(meter["system_title"]), host=meter["host"],
            port=meter["port"], cell=meter["cell"], client_sap=meter["client_sap"], server_sap=meter["server_sap"],
            mechanism=meter["mechanism"], suite=meter["suite"], policy=meter["policy"],
            capabilities=json.loads(meter["capabilities"]), keys=keys, new_keys=new_keys,
            key_generation=generation, lease_token=token, counter_block=(top - block + 1, top),
            rx_last=counters["rx_last"], marks=marks)

    async def reserve_counters(self, meter_id: int, generation: int, block: int) -> tuple[int, int]:
        """Another block of invocation counters for a session that used up its first."""
        top = await self.pool.fetchval(
            """UPDATE frame_counter SET tx_reserved = tx_reserved + $3
               WHERE meter_id = $1 AND key_generation = $2 AND tx_reserved + $3 <= 4294967295
               RETURNING tx_reserved""", meter_id, generation, block)
        if top is None:
            raise StoreError("the meter's invocation counters are used up; change its unicast key")
        return top - block + 1, top

    async def claim_cell_slot(self, cell: str, holder: str, lease_s: float) -> int | None:
        """A session slot of `cell` (its number), or None when all are taken."""
        return await self.pool.fetchval(
            """UPDATE cell_slot SET holder = $2, token = nextval('lease_token'),
                      expires = clock_timestamp() + make_interval(secs => $3)
               WHERE (cell, slot) = (SELECT cell, slot FROM cell_slot
                                     WHERE cell = $1 AND (holder IS NULL OR expires < clock_timestamp())
                                     ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED)
               RETURNING slot""", cell, holder, lease_s)

    async def release_cell_slot(self, cell: str, slot: int, holder: str) -> None:
        await self.pool.execute("UPDATE cell_slot SET holder = NULL, token = NULL, expires = NULL "
                                "WHERE cell = $1 AND slot = $2 AND holder = $3", cell, slot, holder)

    async def take_connect_token(self, cell: str) -> float:
        """Take one new-connection token of `cell`: 0 when taken, else the seconds to wait first."""
        row = await self.pool.fetchrow(
            """WITH now_ AS (SELECT clock_timestamp() AS t),
                    c AS (SELECT name, LEAST(burst, tokens + extract(epoch FROM (now_.t - refilled)) * connects_per_s)
                                 AS available, connects_per_s, now_.t AS t
                          FROM cell, now_ WHERE name = $1 FOR UPDATE)
               UPDATE cell SET tokens = CASE WHEN c.available >= 1 THEN c.available - 1 ELSE c.available END,
                               refilled = c.t
               FROM c WHERE cell.name = c.name
               RETURNING c.available, c.connects_per_s""", cell)
        if row is None:
            return 0.0
        available, rate = row
        return 0.0 if available >= 1 else (1 - available) / rate

    async def release_lease(self, meter_id: int, token: int) -> None:
        await self.pool.execute("DELETE FROM meter_lease WHERE meter_id = $1 AND token = $2", meter_id, token)

    async def finish_session(self, grant: SessionGrant, result: SessionResult, job: tuple[int, str] | None) -> int:
        """Store what the session read and the job's outcome; LeaseLost if another holder took
        the meter meanwhile (nothing is stored then). Returns the readings newly stored."""
        await self._ensure_partitions({_month(r.time) for r in result.readings})
        received = dt.datetime.now(dt.timezone.utc)
        async with self.pool.acquire() as conn, conn.transaction():
            current = await conn.fetchval("SELECT token FROM meter_lease WHERE meter_id = $1 FOR UPDATE", grant.meter_id)
            if current != grant.lease_token:
                raise LeaseLost(f"meter {grant.serial}: the session's lease was taken over; its results are dropped")
            stored = 0
            if result.readings:
                series = await self._series(conn, grant.meter_id, result)
                await conn.copy_records_to_table(
                    "reading_in", columns=("series_id", "time", "raw", "quality", "received"),
                    records=[(series[(r.source, r.obis, r.attribute)], r.time, r.raw, r.quality, received)
                             for r in result.readings])
                status = await conn.execute("INSERT INTO reading SELECT series_id, time, raw, quality, received "
                                            "FROM reading_in ON CONFLICT DO NOTHING")
                stored = int(status.rsplit(" ", 1)[1])
                await conn.execute("TRUNCATE reading_in")
            for profile, last in result.marks.items():
                await conn.execute(
                    """INSERT INTO profile_mark (meter_id, profile, last_time) VALUES ($1, $2, $3)
                       ON CONFLICT (meter_id, profile) DO UPDATE
                       SET last_time = GREATEST(profile_mark.last_time, excluded.last_time)""",
                    grant.meter_id, profile, last)
            if result.rx_last is not None:
                await conn.execute("UPDATE frame_counter SET rx_last = GREATEST(coalesce(rx_last, 0), $3) "
                                   "WHERE meter_id = $1 AND key_generation = $2",
                                   grant.meter_id, grant.key_generation, result.rx_last)
            if result.capabilities is not None:
                await conn.execute("UPDATE meter SET capabilities = capabilities || $2::jsonb WHERE id = $1",
                                   grant.meter_id, json.dumps(result.capabilities))
            if job is not None:
                campaign_id, worker = job
                await conn.execute(
                    """UPDATE job SET state = 'done', rows = $3, error = NULL, worker = $4, finished = now(),
                       attempts = attempts + 1 WHERE campaign_id = $1 AND meter_id = $2 AND state = 'queued'""",
                    campaign_id, grant.meter_id, stored, worker)
            await conn.execute("DELETE FROM meter_lease WHERE meter_id = $1 AND token = $2",
                               grant.meter_id, grant.lease_token)
        return stored

    async def _series(self, conn, meter_id: int, result: SessionResult) -> dict[tuple[str, str, int], int]:
        """The series ids of the readings' (source, OBIS, attribute), created as needed; a
        scaler_unit read in this session replaces the one stored, none read leaves it."""
        wanted = sorted({(r.source, r.obis, r.attribute) for r in result.readings})
        await conn.execute(
            """INSERT INTO series (meter_id, source, obis, attribute)
               SELECT $1, s, o, a FROM unnest($2::text[], $3::text[], $4::smallint[]) AS x(s, o, a)
               ON CONFLICT DO NOTHING""", meter_id, *map(list, zip(*wanted)))
        known = [(s, o, a, *result.scalers[(s, o, a)]) for s, o, a in wanted if (s, o, a) in result.scalers]
        if known:
            await conn.execute(
                """UPDATE series SET scaler = x.sc, unit = x.u
                   FROM unnest($2::text[], $3::text[], $4::smallint[], $5::smallint[], $6::smallint[])
                        AS x(s, o, a, sc, u)
                   WHERE series.meter_id = $1 AND series.source = x.s AND series.obis = x.o
                         AND series.attribute = x.a AND (series.scaler, series.unit) <> (x.sc, x.u)""",
                meter_id, *map(list, zip(*known)))
        rows = await conn.fetch("SELECT id, source, obis, attribute FROM series WHERE meter_id = $1", meter_id)
        return {(r["source"], r["obis"], r["attribute"]): r["id"] for r in rows}

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

    async def job_state(self, campaign_id: int, meter_id: int) -> str | None:
        return await self.pool.fetchval("SELECT state FROM job WHERE campaign_id = $1 AND meter_id = $2",
                                        campaign_id, meter_id)

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


async def _init_connection(conn) -> None:
    # the staging table of finish_session: per connection, emptied after each use
    await conn.execute("CREATE TEMP TABLE IF NOT EXISTS reading_in (series_id integer, time timestamptz, "
                       "raw bigint, quality smallint, received timestamptz)")

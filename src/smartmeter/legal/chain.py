"""Hash-linked, signed, append-only tables in SQLite: the one mechanism behind every audit
trail of the legally relevant part (event logs, and the FIFO load profile / billing logs).

Storage (four tables shared by all chained tables, keyed by the table's name):

    chain_table       the signed declaration of a table: capacity, on_full, checkpoint_every
    chain_entry       (tbl, seq, time_utc, kind, payload, prev_hash, hash)
    chain_checkpoint  (tbl, seq, hash, signature): the meter's signature over an entry's hash
    chain_horizon     (tbl, seq, hash, signature): FIFO tables only, the last removed entry

Encodings (all integers big-endian; ``lp(x)`` = 4-byte length + bytes; names UTF-8):

    genesis   = SHA-256("smartmeter/chain/genesis/v1\\0" ‖ lp(name))
    hash      = SHA-256("smartmeter/chain/entry/v1\\0" ‖ lp(name) ‖ seq:u64 ‖ time_utc:i64 ‖
                        kind:u32 ‖ lp(payload) ‖ prev_hash:32)
    checkpoint message  = "smartmeter/chain/checkpoint/v1\\0" ‖ lp(name) ‖ seq:u64 ‖ hash:32
    horizon message     = "smartmeter/chain/horizon/v1\\0" ‖ lp(name) ‖ seq:u64 ‖ hash:32
    declaration message = "smartmeter/chain/table/v1\\0" ‖ lp(name) ‖ capacity:u64 ‖
                          lp(on_full) ‖ checkpoint_every:u64

The name is inside every hash and every signed message, so rows cannot be moved between
tables; each message starts with its own domain tag, so a signature of one kind can never
be passed off as another. Signatures are DER ECDSA P-256 / SHA-256 (`signing.py`).

Sequence numbers start at 1 and never repeat, not even in a FIFO table: the sequence
number of the newest entry is the number of entries ever appended (a P7(b)-style event
counter that survives FIFO removal).

What `verify_table` detects, given the genuine public key:
  * any changed value in any field of any entry up to the last checkpoint (time, kind,
    payload, seq, prev_hash, hash): the recomputed hash, the next entry's link, or the
    covering checkpoint no longer matches;
  * a deleted entry anywhere up to the last checkpoint: a gap in seq; at the start: the
    first entry does not follow the genesis value or the signed horizon;
  * an inserted entry, or entries renumbered/re-hashed to make room for one, or reordered
    or swapped entries: seq/link/hash mismatch, and at the latest the next checkpoint;
  * a forged or altered checkpoint, horizon or declaration (signature invalid), a removed
    checkpoint (every seq that is a multiple of checkpoint_every must have one), a removed
    or replayed horizon (the first entry no longer follows the anchor), a checkpoint for an
    entry that is no longer there (tail truncated back over a checkpoint);
  * a replaced public key (no signature verifies), more entries than the capacity;
  * in a FIFO table that has overflowed (it has a horizon): ANY removal, at the start, in
    the middle, at the end (even after the last checkpoint) or of all entries, because such
    a table only ever removes an entry to make room for a new one, so it always holds
    exactly `capacity` entries.

What it cannot detect, and why:
  * Entries after the last checkpoint are only hash-linked, not signed: anyone who can write
    the store can change, append or remove them consistently (L2-level protection only, no
    L3). The report says how many there are (`unsigned_tail`). With checkpoint_every=1 there
    is no such tail: every entry is signed in its own transaction (cheap next to the fsync
    of synchronous=FULL; the event logs use it).
  * Roll-back of a table that has never been full: deleting the newest entries together with
    all checkpoints after them, back to an earlier checkpoint, gives a store that looks exactly like the earlier genuine store.
    A power failure cannot cause this (every append is one durable transaction), but nothing
    inside the store can tell the difference either. Only a monotonic counter outside the
    attacker's reach (secure element/TPM, or the last seq a head-end has read and recorded)
    can; `verify_table(..., expect_at_least=seq)` checks against such a value.
  * Replacing the whole store with an older genuine copy: the same roll-back.
  * Deleting a table entirely (declaration, entries, checkpoints, horizon): the store no
    longer mentions it; the verifier must know which tables must exist (`verify.py` takes
    the expected names).
  * Someone who holds the private key file can re-sign anything; someone who replaces the
    key pair AND every signature AND the exported public key passes verification against
    that new public key: the public key must be established by direct trust (fingerprint).
"""
from __future__ import annotations

import hashlib
import itertools
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal, Sequence

from smartmeter.legal import signing
from smartmeter.legal.signing import MeterSigner

HASH_SIZE = 32
MAX_PAYLOAD = 65536
MAX_NAME = 64
U32 = 1 << 32
U63 = 1 << 63
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1

OnFull = Literal["refuse", "fifo"]

_TAG_GENESIS = b"smartmeter/chain/genesis/v1\0"
_TAG_ENTRY = b"smartmeter/chain/entry/v1\0"
_TAG_CHECKPOINT = b"smartmeter/chain/checkpoint/v1\0"
_TAG_HORIZON = b"smartmeter/chain/horizon/v1\0"
_TAG_DECLARATION = b"smartmeter/chain/table/v1\0"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS chain_table (
        name TEXT PRIMARY KEY,
        capacity INTEGER NOT NULL,
        on_full TEXT NOT NULL,
        checkpoint_every INTEGER NOT NULL,
        signature BLOB NOT NULL
    ) STRICT""",
    """CREATE TABLE IF NOT EXISTS chain_entry (
        tbl TEXT NOT NULL,
        seq INTEGER NOT NULL,
        time_utc INTEGER NOT NULL,      -- UTC seconds since the epoch
        kind INTEGER NOT NULL,          -- event id / record type, 0 .. 2**32-1
        payload BLOB NOT NULL,
        prev_hash BLOB NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (tbl, seq)
    ) STRICT, WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS chain_entry_time ON chain_entry(tbl, time_utc)",
    """CREATE TABLE IF NOT EXISTS chain_checkpoint (
        tbl TEXT NOT NULL,
        seq INTEGER NOT NULL,
        hash BLOB NOT NULL,
        signature BLOB NOT NULL,
        PRIMARY KEY (tbl, seq)
    ) STRICT, WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS chain_horizon (
        tbl TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        hash BLOB NOT NULL,
        signature BLOB NOT NULL
    ) STRICT""",
)


class ChainError(Exception):
    """A chained table cannot be used as asked (configuration mismatch, store inconsistent)."""


class LogFull(ChainError):
    """A table with on_full="refuse" is at capacity: the entry was NOT written and nothing was
    overwritten. Legally relevant logs stop rather than destroy evidence (WELMEC 7.2 L8, D4)."""


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    time_utc: int
    kind: int
    payload: bytes
    prev_hash: bytes
    hash: bytes


@dataclass(frozen=True, slots=True)
class Checkpoint:
    table: str
    seq: int
    hash: bytes
    signature: bytes

    def message(self) -> bytes:
        """The exact bytes the signature is over (for an external verifier, e.g. openssl)."""
        return checkpoint_message(self.table, self.seq, self.hash)


@dataclass(frozen=True, slots=True)
class Horizon:
    table: str
    seq: int
    hash: bytes
    signature: bytes

    def message(self) -> bytes:
        return horizon_message(self.table, self.seq, self.hash)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Result of verifying one chained table. `problem` names the first problem found
    ("" when ok); `first_bad_seq` is where it is (None when ok or not tied to one entry).
    `checked` counts entries whose hash and link were verified before the first problem.
    `signed_through` is the newest seq covered by a valid signature (checkpoint or horizon);
    `unsigned_tail` entries after it are only hash-linked (see the module documentation)."""

    ok: bool
    checked: int
    first_bad_seq: int | None
    problem: str
    last_seq: int = 0
    signed_through: int = 0
    unsigned_tail: int = 0


# -- canonical encodings -----------------------------------------------------------------------


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _name_bytes(name: str) -> bytes:
    return _lp(name.encode("utf-8"))


def genesis_hash(name: str) -> bytes:
    """The value the first entry of table `name` links to."""
    return hashlib.sha256(_TAG_GENESIS + _name_bytes(name)).digest()


def entry_hash(name: str, seq: int, time_utc: int, kind: int, payload: bytes, prev_hash: bytes) -> bytes:
    return hashlib.sha256(
        _TAG_ENTRY
        + _name_bytes(name)
        + seq.to_bytes(8, "big")
        + time_utc.to_bytes(8, "big", signed=True)
        + kind.to_bytes(4, "big")
        + _lp(payload)
        + prev_hash
    ).digest()


def checkpoint_message(name: str, seq: int, hash_: bytes) -> bytes:
    return _TAG_CHECKPOINT + _name_bytes(name) + seq.to_bytes(8, "big") + hash_


def horizon_message(name: str, seq: int, hash_: bytes) -> bytes:
    return _TAG_HORIZON + _name_bytes(name) + seq.to_bytes(8, "big") + hash_


def declaration_message(name: str, capacity: int, on_full: str, checkpoint_every: int) -> bytes:
    return (
        _TAG_DECLARATION
        + _name_bytes(name)
        + capacity.to_bytes(8, "big")
        + _lp(on_full.encode("utf-8"))
        + checkpoint_every.to_bytes(8, "big")
    )


def _valid_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME
        and all(c.isascii() and (c.isalnum() or c in "._:-") for c in name)
    )


# -- transactions ------------------------------------------------------------------------------

_savepoints = itertools.count(1)


@contextmanager
def atomic(db: sqlite3.Connection, write: bool = True) -> Iterator[None]:
    """One transaction around the block: BEGIN IMMEDIATE (or BEGIN for reads) … COMMIT, or a
    SAVEPOINT when the caller already has a transaction open, so that e.g. an event entry and
    the counter that counts it are committed together or not at all. On any exception
    everything done inside the block is rolled back.

    (Why not `with db:`: with isolation_level=None, which storage.open_store uses, Python's
    connection context manager commits but never begins, so it is not a transaction.)"""
    if db.in_transaction:
        name = f"chain_sp_{next(_savepoints)}"
        db.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            db.execute(f"ROLLBACK TO {name}")
            db.execute(f"RELEASE {name}")
            raise
        db.execute(f"RELEASE {name}")
    else:
        db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def ensure_schema(db: sqlite3.Connection) -> None:
    # Statement by statement: executescript() would COMMIT a caller's open transaction.
    for statement in SCHEMA:
        db.execute(statement)


# -- the table ---------------------------------------------------------------------------------


class ChainedTable:
    """An append-only, hash-linked, checkpoint-signed table named `name` in `db`.

    Every append is one transaction (or one savepoint of the caller's transaction). The
    connection should be in WAL mode with synchronous=FULL (storage.open_store); callers
    serialise access to one connection (the protective interface holds a lock)."""

    def __init__(
        self,
        db: sqlite3.Connection,
        name: str,
        capacity: int,
        on_full: OnFull,
        signer: MeterSigner,
        checkpoint_every: int = 32,
    ) -> None:
        if not _valid_name(name):
            raise ValueError(f"table name must be 1..{MAX_NAME} characters of [A-Za-z0-9._:-]")
        if type(capacity) is not int or not 1 <= capacity < U63:
            raise ValueError("capacity must be a positive integer")
        if on_full not in ("refuse", "fifo"):
            raise ValueError('on_full must be "refuse" or "fifo"')
        if type(checkpoint_every) is not int or not 1 <= checkpoint_every < U63:
            raise ValueError("checkpoint_every must be a positive integer")
        self.db = db
        self.name = name
        self.capacity = capacity
        self.on_full: OnFull = on_full
        self.checkpoint_every = checkpoint_every
        self._signer = signer
        self.genesis = genesis_hash(name)
        with atomic(db):
            ensure_schema(db)
            self._declare()

    def _declare(self) -> None:
        row = self.db.execute(
            "SELECT capacity, on_full, checkpoint_every FROM chain_table WHERE name = ?", (self.name,)
        ).fetchone()
        if row is None:
            # Never re-create the declaration of a table that has data: that would hide
            # the removal of the declaration instead of letting verification report it.
            for table in ("chain_entry", "chain_checkpoint", "chain_horizon"):
                if self.db.execute(f"SELECT 1 FROM {table} WHERE tbl = ? LIMIT 1", (self.name,)).fetchone():
                    raise ChainError(f"chained table {self.name!r} has data but no declaration: store tampered")
            message = declaration_message(self.name, self.capacity, self.on_full, self.checkpoint_every)
            self.db.execute(
                "INSERT INTO chain_table(name, capacity, on_full, checkpoint_every, signature) VALUES (?, ?, ?, ?, ?)",
                (self.name, self.capacity, self.on_full, self.checkpoint_every, self._signer.sign(message)),
            )
        elif tuple(row) != (self.capacity, self.on_full, self.checkpoint_every):
            raise ChainError(
                f"chained table {self.name!r} was declared with capacity={row[0]}, on_full={row[1]}, "
                f"checkpoint_every={row[2]}; it cannot be reopened with other parameters"
            )

    # -- writing ------------------------------------------------------------------------------

    def append(self, time_utc: int, kind: int, payload: bytes) -> Entry:
        """Append one entry (and a checkpoint when seq is a multiple of checkpoint_every) in
        one transaction. Raises LogFull (refuse tables at capacity; nothing written)."""
        if type(time_utc) is not int or not I64_MIN <= time_utc <= I64_MAX:
            raise ValueError("time_utc must be an integer in the signed 64-bit range")
        if type(kind) is not int or not 0 <= kind < U32:
            raise ValueError("kind must be an integer in 0 .. 2**32-1")
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise TypeError("payload must be bytes")
        payload = bytes(payload)
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"payload longer than {MAX_PAYLOAD} bytes")
        with atomic(self.db):
            last_seq, last_hash = self._tail()
            first_seq = self._first_seq()
            in_use = 0 if first_seq is None else last_seq - first_seq + 1
            if in_use >= self.capacity:
                if self.on_full == "refuse":
                    raise LogFull(f"{self.name} is full ({self.capacity} entries); entry refused")
                self._drop_oldest(in_use - self.capacity + 1)
            seq = last_seq + 1
            digest = entry_hash(self.name, seq, time_utc, kind, payload, last_hash)
            self.db.execute(
                "INSERT INTO chain_entry(tbl, seq, time_utc, kind, payload, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (self.name, seq, time_utc, kind, payload, last_hash, digest),
            )
            if seq % self.checkpoint_every == 0:
                self._write_checkpoint(seq, digest)
        return Entry(seq, time_utc, kind, payload, last_hash, digest)

    def checkpoint(self) -> Checkpoint | None:
        """Sign the newest entry now (e.g. at clean shutdown) unless it is signed already.
        Returns the checkpoint covering the newest entry, or None for an empty table."""
        with atomic(self.db):
            row = self.db.execute(
                "SELECT seq, hash FROM chain_entry WHERE tbl = ? ORDER BY seq DESC LIMIT 1", (self.name,)
            ).fetchone()
            if row is None:
                return None
            existing = self.db.execute(
                "SELECT seq, hash, signature FROM chain_checkpoint WHERE tbl = ? AND seq = ?", (self.name, row[0])
            ).fetchone()
            if existing is not None:
                return Checkpoint(self.name, *existing)
            return self._write_checkpoint(row[0], row[1])

    def _write_checkpoint(self, seq: int, digest: bytes) -> Checkpoint:
        signature = self._signer.sign(checkpoint_message(self.name, seq, digest))
        self.db.execute(
            "INSERT INTO chain_checkpoint(tbl, seq, hash, signature) VALUES (?, ?, ?, ?)",
            (self.name, seq, digest, signature),
        )
        return Checkpoint(self.name, seq, digest, signature)

    def _tail(self) -> tuple[int, bytes]:
        row = self.db.execute(
            "SELECT seq, hash FROM chain_entry WHERE tbl = ? ORDER BY seq DESC LIMIT 1", (self.name,)
        ).fetchone()
        if row is not None:
            return row[0], row[1]
        horizon = self.horizon()
        if horizon is not None:
            return horizon.seq, horizon.hash
        return 0, self.genesis

    def _first_seq(self) -> int | None:
        row = self.db.execute(
            "SELECT seq FROM chain_entry WHERE tbl = ? ORDER BY seq ASC LIMIT 1", (self.name,)
        ).fetchone()
        return None if row is None else row[0]

    def _drop_oldest(self, how_many: int) -> None:
        """FIFO: remove the oldest entries and move the signed horizon to the last one removed,
        so that verification still starts from a signed anchor."""
        rows = self.db.execute(
            "SELECT seq, hash FROM chain_entry WHERE tbl = ? ORDER BY seq ASC LIMIT ?", (self.name, how_many)
        ).fetchall()
        if not rows:
            return
        seq, digest = rows[-1]
        self.db.execute("DELETE FROM chain_entry WHERE tbl = ? AND seq <= ?", (self.name, seq))
        self.db.execute("DELETE FROM chain_checkpoint WHERE tbl = ? AND seq <= ?", (self.name, seq))
        signature = self._signer.sign(horizon_message(self.name, seq, digest))
        self.db.execute(
            "INSERT INTO chain_horizon(tbl, seq, hash, signature) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(tbl) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, signature = excluded.signature",
            (self.name, seq, digest, signature),
        )

    # -- reading ------------------------------------------------------------------------------

    _COLUMNS = "seq, time_utc, kind, payload, prev_hash, hash"

    def entries(self, first_seq: int | None = None, last_seq: int | None = None) -> list[Entry]:
        query = f"SELECT {self._COLUMNS} FROM chain_entry WHERE tbl = ?"
        args: list = [self.name]
        if first_seq is not None:
            query += " AND seq >= ?"
            args.append(first_seq)
        if last_seq is not None:
            query += " AND seq <= ?"
            args.append(last_seq)
        return [Entry(*row) for row in self.db.execute(query + " ORDER BY seq", args)]

    def between(self, time_from: int | None, time_to: int | None) -> list[Entry]:
        """Entries with time_from <= time_utc <= time_to (either bound optional), in seq order."""
        query = f"SELECT {self._COLUMNS} FROM chain_entry WHERE tbl = ?"
        args: list = [self.name]
        if time_from is not None:
            query += " AND time_utc >= ?"
            args.append(time_from)
        if time_to is not None:
            query += " AND time_utc <= ?"
            args.append(time_to)
        return [Entry(*row) for row in self.db.execute(query + " ORDER BY seq", args)]

    def count(self) -> int:
        (n,) = self.db.execute("SELECT COUNT(*) FROM chain_entry WHERE tbl = ?", (self.name,)).fetchone()
        return n

    def last(self) -> Entry | None:
        row = self.db.execute(
            f"SELECT {self._COLUMNS} FROM chain_entry WHERE tbl = ? ORDER BY seq DESC LIMIT 1", (self.name,)
        ).fetchone()
        return None if row is None else Entry(*row)

    def checkpoints(self) -> list[Checkpoint]:
        return [
            Checkpoint(self.name, *row)
            for row in self.db.execute(
                "SELECT seq, hash, signature FROM chain_checkpoint WHERE tbl = ? ORDER BY seq", (self.name,)
            )
        ]

    def latest_checkpoint(self) -> Checkpoint | None:
        row = self.db.execute(
            "SELECT seq, hash, signature FROM chain_checkpoint WHERE tbl = ? ORDER BY seq DESC LIMIT 1", (self.name,)
        ).fetchone()
        return None if row is None else Checkpoint(self.name, *row)

    def horizon(self) -> Horizon | None:
        row = self.db.execute("SELECT seq, hash, signature FROM chain_horizon WHERE tbl = ?", (self.name,)).fetchone()
        return None if row is None else Horizon(self.name, *row)

    def verify(self, public_key_pem: bytes, expect_at_least: int | None = None) -> VerifyReport:
        return verify_table(self.db, self.name, public_key_pem, expect_at_least)


# -- verification ------------------------------------------------------------------------------


def table_names(db: sqlite3.Connection) -> list[str]:
    """Every table name the store mentions anywhere (declared or not), sorted."""
    names: set = set()
    for query in (
        "SELECT name FROM chain_table",
        "SELECT DISTINCT tbl FROM chain_entry",
        "SELECT DISTINCT tbl FROM chain_checkpoint",
        "SELECT tbl FROM chain_horizon",
    ):
        try:
            names.update(row[0] for row in db.execute(query))
        except sqlite3.Error:
            continue
    return sorted(names, key=lambda n: (type(n).__name__, str(n)))


def verify_table(
    db: sqlite3.Connection, name: str, public_key_pem: bytes, expect_at_least: int | None = None
) -> VerifyReport:
    """Read table `name` in one read transaction and verify it. Never raises for anything
    found in the store: an unreadable or malformed store is reported as a problem."""
    try:
        with atomic(db, write=False):
            declaration = db.execute(
                "SELECT capacity, on_full, checkpoint_every, signature FROM chain_table WHERE name = ?", (name,)
            ).fetchall()
            entries = db.execute(
                "SELECT seq, time_utc, kind, payload, prev_hash, hash FROM chain_entry WHERE tbl = ? ORDER BY seq",
                (name,),
            ).fetchall()
            checkpoints = db.execute(
                "SELECT seq, hash, signature FROM chain_checkpoint WHERE tbl = ? ORDER BY seq", (name,)
            ).fetchall()
            horizons = db.execute("SELECT seq, hash, signature FROM chain_horizon WHERE tbl = ?", (name,)).fetchall()
    except (sqlite3.Error, ValueError, OverflowError, MemoryError) as exc:
        return VerifyReport(False, 0, None, f"store unreadable: {type(exc).__name__}: {exc}")
    if len(declaration) > 1:
        return VerifyReport(False, 0, None, "table declared more than once")
    if len(horizons) > 1:
        return VerifyReport(False, 0, None, "more than one horizon record")
    return verify_rows(
        name,
        public_key_pem,
        declaration[0] if declaration else None,
        entries,
        checkpoints,
        horizons[0] if horizons else None,
        expect_at_least,
    )


def _is_int(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _fields(row: object, n: int) -> tuple | None:
    """`row` as a tuple of n values, or None if it is not a row of n values."""
    if isinstance(row, (tuple, list, sqlite3.Row)) and len(row) == n:
        return tuple(row)
    return None


def _is_hash(value: object) -> bool:
    return type(value) is bytes and len(value) == HASH_SIZE


def verify_rows(
    name: str,
    public_key_pem: bytes,
    declaration: Sequence | None,
    entries: Sequence[Sequence],
    checkpoints: Sequence[Sequence],
    horizon: Sequence | None,
    expect_at_least: int | None = None,
) -> VerifyReport:
    """Verify the rows of one table as read from the store:
    declaration (capacity, on_full, checkpoint_every, signature) or None; entries
    (seq, time_utc, kind, payload, prev_hash, hash) in stored seq order; checkpoints
    (seq, hash, signature) in seq order; horizon (seq, hash, signature) or None.
    Pure: no I/O. Total: any values of any type give a report, never an exception."""
    try:
        return _verify_rows(name, public_key_pem, declaration, entries, checkpoints, horizon, expect_at_least)
    except (RecursionError, MemoryError) as exc:  # pragma: no cover - defensive, never seen
        return VerifyReport(False, 0, None, f"verification aborted: {type(exc).__name__}")


def _verify_rows(name, public_key_pem, declaration, entries, checkpoints, horizon, expect_at_least) -> VerifyReport:
    def bad(problem: str, seq: int | None = None, checked: int = 0) -> VerifyReport:
        return VerifyReport(False, checked, seq, problem)

    if not _valid_name(name):
        return bad("invalid table name")
    if type(public_key_pem) is not bytes or signing.load_public_key(public_key_pem) is None:
        return bad("public key missing or not an ECDSA P-256 public key")
    has_data = bool(entries) or bool(checkpoints) or horizon is not None

    # 1. The signed declaration: capacity, behaviour when full, checkpoint interval.
    if declaration is None:
        if has_data:
            return bad("table declaration missing (removed)")
        return VerifyReport(True, 0, None, "")
    declaration = _fields(declaration, 4)
    if declaration is None:
        return bad("table declaration malformed")
    capacity, on_full, every, signature = declaration
    if not (_is_int(capacity, 1, U63 - 1) and on_full in ("refuse", "fifo") and type(on_full) is str
            and _is_int(every, 1, U63 - 1) and type(signature) is bytes):
        return bad("table declaration malformed")
    if not signing.verify(public_key_pem, declaration_message(name, capacity, on_full, every), signature):
        return bad("table declaration signature invalid (altered or forged)")

    # 2. The anchor: the signed horizon of a FIFO table, or the genesis value.
    anchor_seq, anchor_hash = 0, genesis_hash(name)
    if horizon is not None:
        horizon = _fields(horizon, 3)
        if horizon is None:
            return bad("horizon record malformed")
        h_seq, h_hash, h_signature = horizon
        if not (_is_int(h_seq, 1, U63 - 1) and _is_hash(h_hash) and type(h_signature) is bytes):
            return bad("horizon record malformed")
        if on_full != "fifo":
            return bad("horizon record in a table that never removes entries")
        if not signing.verify(public_key_pem, horizon_message(name, h_seq, h_hash), h_signature):
            return bad("horizon signature invalid (altered or forged)", h_seq)
        anchor_seq, anchor_hash = h_seq, h_hash

    # 3. The entries: consecutive seq, each linked to the previous, each hash recomputed.
    expected_seq, previous = anchor_seq + 1, anchor_hash
    hashes: dict[int, bytes] = {}
    checked = 0
    for row in entries:
        row = _fields(row, 6)
        if row is None:
            return bad("entry row malformed", expected_seq, checked)
        seq, time_utc, kind, payload, prev_hash, digest = row
        if not (_is_int(seq, 1, U63 - 1) and _is_int(time_utc, I64_MIN, I64_MAX) and _is_int(kind, 0, U32 - 1)
                and type(payload) is bytes and _is_hash(prev_hash) and _is_hash(digest)):
            return bad(f"entry {seq if type(seq) is int else '?'}: malformed field", expected_seq, checked)
        if seq != expected_seq:
            if seq < expected_seq:
                return bad(f"entry {seq}: duplicated or out of order", seq, checked)
            if expected_seq == anchor_seq + 1:
                where = f"after the horizon (seq {anchor_seq})" if horizon is not None else "at the start"
                return bad(f"entries {expected_seq}..{seq - 1} missing {where} (removed)", expected_seq, checked)
            return bad(f"entries {expected_seq}..{seq - 1} missing (removed)", expected_seq, checked)
        if prev_hash != previous:
            return bad(f"entry {seq}: link to the previous entry broken (changed, inserted, removed or reordered)",
                       seq, checked)
        if entry_hash(name, seq, time_utc, kind, payload, prev_hash) != digest:
            return bad(f"entry {seq}: content changed (hash mismatch)", seq, checked)
        hashes[seq] = digest
        previous = digest
        expected_seq += 1
        checked += 1
    last_seq = expected_seq - 1
    if checked > capacity:
        return bad(f"{checked} entries in a table of capacity {capacity}", None, checked)
    if horizon is not None and checked != capacity:
        # A FIFO table removes an entry only to make room for a new one, so once it has a
        # horizon it is always exactly full: fewer entries means some were removed.
        return bad(f"entries removed: only {checked} of {capacity} present in a FIFO table that has been full",
                   last_seq + 1, checked)

    # 4. The checkpoints: each signed, each matching the entry it covers.
    signed_through = anchor_seq
    seen: set[int] = set()
    previous_checkpoint = 0  # checkpoints arrive in increasing seq order, as the query sorts them
    for row in checkpoints:
        row = _fields(row, 3)
        if row is None:
            return bad("checkpoint row malformed", None, checked)
        c_seq, c_hash, c_signature = row
        if not (_is_int(c_seq, 1, U63 - 1) and _is_hash(c_hash) and type(c_signature) is bytes):
            return bad("checkpoint row malformed", None, checked)
        if c_seq <= previous_checkpoint:
            return bad(f"checkpoint {c_seq} stored twice or out of order", c_seq, checked)
        seen.add(c_seq)
        previous_checkpoint = c_seq
        if not signing.verify(public_key_pem, checkpoint_message(name, c_seq, c_hash), c_signature):
            return bad(f"checkpoint {c_seq}: signature invalid (altered or forged)", c_seq, checked)
        if c_seq <= anchor_seq:
            return bad(f"checkpoint {c_seq} lies at or before the horizon (seq {anchor_seq})", c_seq, checked)
        if c_seq > last_seq:
            return bad(f"entries {last_seq + 1}..{c_seq} missing: the tail was removed behind checkpoint {c_seq}",
                       last_seq + 1, checked)
        if hashes[c_seq] != c_hash:
            return bad(f"checkpoint {c_seq} does not match entry {c_seq} (entries changed, inserted or reordered)",
                       c_seq, checked)
        signed_through = max(signed_through, c_seq)

    # 5. Every multiple of checkpoint_every must have its checkpoint (written with the entry).
    first_required = (anchor_seq // every + 1) * every
    for required in range(first_required, last_seq + 1, every):
        if required not in seen:
            return bad(f"checkpoint {required} missing (removed)", required, checked)

    # 6. A seq known from outside the store (secure counter, head-end read-out).
    if expect_at_least is not None and type(expect_at_least) is int and last_seq < expect_at_least:
        return bad(f"the table ends at seq {last_seq} but seq {expect_at_least} is known to exist (rolled back)",
                   last_seq + 1, checked)

    return VerifyReport(True, checked, None, "", last_seq, signed_through, last_seq - signed_through)

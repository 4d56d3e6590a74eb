"""Non-volatile store of the legally relevant part: SQLite, WAL, synchronous=FULL.

Every legally relevant write is one transaction, so a power failure (kill -9) leaves
either the old or the new state, never a mix.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS energy_register (
    name TEXT PRIMARY KEY,
    milli_units INTEGER NOT NULL      -- mWh or mvarh: exact integers, no float drift
);
CREATE TABLE IF NOT EXISTS load_profile (
    profile TEXT NOT NULL,
    capture_time INTEGER NOT NULL,    -- UTC seconds since the epoch
    status INTEGER NOT NULL,
    a_plus INTEGER NOT NULL, a_minus INTEGER NOT NULL,
    r_plus INTEGER NOT NULL, r_minus INTEGER NOT NULL,   -- Wh / varh
    PRIMARY KEY (profile, capture_time)
);
CREATE TABLE IF NOT EXISTS rate_register (
    name TEXT NOT NULL,
    rate INTEGER NOT NULL,            -- 0: registered while no rate was active; 1, 2: 1-0:x.8.1 / x.8.2
    units INTEGER NOT NULL,           -- whole Wh or varh
    PRIMARY KEY (name, rate)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def open_store(data_dir: Path) -> sqlite3.Connection:
    # The meter's state is its owner's alone, whatever the umask: the directory 0700, the
    # store 0600 before SQLite opens it (SQLite gives -wal and -shm the store's mode).
    if not data_dir.is_dir():
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
    path = data_dir / "legal.sqlite3"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(fd, 0o600)
        os.close(fd)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)
    return db

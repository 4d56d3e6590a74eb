"""Non-volatile store of the legally relevant part: SQLite, WAL, synchronous=FULL.

Every legally relevant write is one transaction, so a power failure (kill -9) leaves
either the old or the new state, never a mix.
"""
from __future__ import annotations

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
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def open_store(data_dir: Path) -> sqlite3.Connection:
    data_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(data_dir / "legal.sqlite3", isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)
    return db

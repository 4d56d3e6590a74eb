"""The meter's own non-volatile store for what is not legally relevant but must survive a
power failure: security contexts, frame counters, keys, certificates, port protection.

SQLite in WAL mode with synchronous=FULL, one transaction per change; the file is created
readable by its owner only, since it holds key material.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS setting (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counter (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def open_private_store(path: Path, schema: str) -> sqlite3.Connection:
    """An SQLite file only its owner can read (WAL, synchronous=FULL: a commit is on the disk
    when it returns), in autocommit mode: callers make their own transactions."""
    if not path.exists():
        # SQLite gives its -wal/-shm files the same permissions
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.fchmod(fd, 0o600)
        os.close(fd)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


class MeterStore:
    def __init__(self, data_dir: Path) -> None:
        if not data_dir.is_dir():
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(data_dir, 0o700)  # exact, whatever the umask
        self._db = open_private_store(data_dir / "meter.sqlite3", SCHEMA)
        self._lock = threading.Lock()

    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM setting WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT INTO setting(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                             "SET value = excluded.value", (key, json.dumps(value, sort_keys=True)))

    def counter(self, key: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counter WHERE key = ?", (key,)).fetchone()
        return 0 if row is None else row[0]

    def set_counter(self, key: str, value: int) -> None:
        """Durably store a counter value (committed with a full sync before this returns)."""
        with self._lock, self._db:
            self._db.execute("INSERT INTO counter(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                             "SET value = excluded.value", (key, value))

    def close(self) -> None:
        with self._lock:
            self._db.close()


"""What a fleet observes of its head-end, and the report file it writes (docs/fleet.md).

Per meter: the sessions (associations opened), every invocation counter the management
client sent under the global unicast key (the ciphered requests and the AARQ/RLRQ
initiate requests that authenticated under it, as the meter's receive window accepts them,
and the counter inside an HLS 5 f(StoC)), the counters received more than once under one
key ("reused") and those the meter refused as replays ("refused"), the key changes and the
counters seen under the current key, the associations open now and the most ever at once.
Per cell: associations open now and the most ever at once. Memory is bounded: a meter keeps
at most COUNTER_LIST_CAP counters (and REFUSAL_LIST_CAP reused/refused ones); beyond that they
are counted only, and reuse is recognised among the kept counters.
"""
from __future__ import annotations

import json
import os
import tempfile
from array import array
from pathlib import Path

COUNTER_LIST_CAP = 2048
REFUSAL_LIST_CAP = 256
REPORT_VERSION = 1


class CellRecord:
    __slots__ = ("name", "current", "max_concurrent")

    def __init__(self, name: str) -> None:
        self.name = name
        self.current = 0
        self.max_concurrent = 0


class MeterRecord:
    """The observation of one meter."""

    __slots__ = ("index", "serial", "cell", "sessions", "counters", "counters_seen", "first_counter", "last_counter",
                 "reused", "reused_count", "refused", "refused_count", "current", "max_concurrent", "connections",
                 "dropped", "highest", "changes", "key_changes", "key_counters_seen")

    def __init__(self, index: int, serial: str, cell: CellRecord, changes: list[int] | None = None) -> None:
        self.changes = changes if changes is not None else [0]  # shared by a process's records: bumped on change
        self.index = index
        self.serial = serial
        self.cell = cell
        self.sessions = 0
        self.counters = array("L")  # in the order received, at most COUNTER_LIST_CAP
        self.counters_seen = 0
        self.first_counter: int | None = None
        self.last_counter: int | None = None
        self.highest: int | None = None
        self.reused: list[int] = []
        self.reused_count = 0
        self.refused: list[int] = []
        self.refused_count = 0
        self.current = 0
        self.max_concurrent = 0
        self.connections = 0  # TCP connections accepted
        self.dropped = 0  # connections dropped by --loss
        self.key_changes = 0  # new global unicast keys the head-end transferred
        self.key_counters_seen = 0  # counters received under the current key

    def changed(self) -> None:
        self.changes[0] += 1

    def counter_received(self, counter: int) -> None:
        self.changes[0] += 1
        # most counters arrive above every earlier one: only the others need the search
        if self.highest is not None and counter <= self.highest and counter in self.counters:
            self.reused_count += 1
            if len(self.reused) < REFUSAL_LIST_CAP:
                self.reused.append(counter)
        self.counters_seen += 1
        self.key_counters_seen += 1
        if self.first_counter is None:
            self.first_counter = counter
        self.last_counter = counter
        if self.highest is None or counter > self.highest:
            self.highest = counter
        if len(self.counters) < COUNTER_LIST_CAP:
            self.counters.append(counter)

    def key_changed(self) -> None:
        """A new global unicast key is in use: its counters start afresh, so reuse is
        recognised among the counters of the current key only (`counters` holds those)."""
        self.changes[0] += 1
        self.key_changes += 1
        self.key_counters_seen = 0
        self.counters = array("L")
        self.highest = None

    def counter_refused(self, counter: int) -> None:
        self.changes[0] += 1
        self.refused_count += 1
        if len(self.refused) < REFUSAL_LIST_CAP:
            self.refused.append(counter)

    def opened(self) -> None:
        self.changes[0] += 1
        self.sessions += 1
        self.current += 1
        self.max_concurrent = max(self.max_concurrent, self.current)
        cell = self.cell
        cell.current += 1
        cell.max_concurrent = max(cell.max_concurrent, cell.current)

    def closed(self) -> None:
        self.changes[0] += 1
        if self.current > 0:
            self.current -= 1
            self.cell.current -= 1

    def as_dict(self, with_counters: bool) -> dict:
        entry = {
            "index": self.index, "serial": self.serial, "cell": self.cell.name, "sessions": self.sessions,
            "counters_seen": self.counters_seen, "first_counter": self.first_counter,
            "last_counter": self.last_counter, "reused": list(self.reused), "reused_count": self.reused_count,
            "refused": list(self.refused), "refused_count": self.refused_count, "current": self.current,
            "max_concurrent": self.max_concurrent, "connections": self.connections, "dropped": self.dropped,
            "key_changes": self.key_changes, "key_counters_seen": self.key_counters_seen,
        }
        if with_counters:
            entry["counters"] = list(self.counters)
            entry["counters_truncated"] = self.counters_seen > len(self.counters)
        return entry


def report(records: list[MeterRecord], cells: dict[str, CellRecord], *, with_counters: bool, part: str = "all",
           final: bool = False) -> dict:
    """The report document: per meter, per cell, totals."""
    meters = [r.as_dict(with_counters) for r in records]
    return {
        "version": REPORT_VERSION, "part": part, "final": final,
        "meters": meters,
        "cells": {name: {"current": c.current, "max_concurrent": c.max_concurrent} for name, c in sorted(cells.items())},
        "totals": totals(meters),
    }


def totals(meters: list[dict]) -> dict:
    return {
        "meters": len(meters),
        "sessions": sum(m["sessions"] for m in meters),
        "counters_seen": sum(m["counters_seen"] for m in meters),
        "reused": sum(m["reused_count"] for m in meters),
        "refused": sum(m["refused_count"] for m in meters),
        "current": sum(m["current"] for m in meters),
        "connections": sum(m["connections"] for m in meters),
        "dropped": sum(m["dropped"] for m in meters),
    }


def merge(parts: list[dict], final: bool) -> dict:
    """One report from the reports of the fleet's processes (meters by index; cells added:
    a cell's meters are spread over the processes, so its maximum is the sum of the parts'
    maxima, an upper bound of the true maximum at one instant)."""
    meters = sorted((m for p in parts for m in p.get("meters", [])), key=lambda m: m["index"])
    cells: dict[str, dict] = {}
    for p in parts:
        for name, c in p.get("cells", {}).items():
            into = cells.setdefault(name, {"current": 0, "max_concurrent": 0})
            into["current"] += c["current"]
            into["max_concurrent"] += c["max_concurrent"]
    return {"version": REPORT_VERSION, "part": "all", "final": final, "meters": meters,
            "cells": dict(sorted(cells.items())), "totals": totals(meters)}


def encode(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def write_atomically(path: Path, document: dict | bytes, mode: int = 0o644) -> None:
    """`document` (or its JSON bytes) at `path`: a temporary file in the same directory, then a rename."""
    path = Path(path)
    data = document if isinstance(document, bytes) else encode(document)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

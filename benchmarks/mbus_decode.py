"""Decode wired M-Bus telegrams with smartmeter and with pymbusparser, on the same frames.

The frames: every RSP_UD our simulated submeters send (gas, water, heat, BCD and binary,
kWh and MJ, the heat meter's two telegrams; 12 frames) and the real devices' frames of
libmbus's test set (tests/vectors/libmbus/test-frames/*.hex) that both decoders accept.
Frames one decoder refuses are left out of both timings and listed.

Ours: `smartmeter.mbus.link.decode_frame` (frame checks) + `application.parse_telegram`
(header and records), then each record's scaled value (`Record.scaled()`, the number
times 10^exponent), so that both sides end with decoded numbers.
pymbusparser 0.5.3 (Rust m-bus-parser, MIT): `parse(frame, include_enrichment=False)`, which
returns the frame, header and records with scaled values as Python dicts. A peer only.

On the simulators' frames the two must agree on every numeric value (checked before timing);
on libmbus's frames the agreement is counted and printed, not required (the peers differ in
how they read some manufacturer-specific and unusual records).

Each figure is the best CPU time (`time.process_time`) of --runs passes over the whole set
(--repeat times each), after one untimed pass. Prints one JSON object.

    .venv/bin/python benchmarks/mbus_decode.py [--runs N] [--repeat N]
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import platform
import sys
import time
from decimal import Decimal
from pathlib import Path

from pymbusparser import MbusParserError, parse

from smartmeter.errors import DecodeError
from smartmeter.mbus.application import parse_telegram
from smartmeter.mbus.link import LongFrame, decode_frame
from smartmeter.mbus.simulated import KINDS, SimulatedBus, SimulatedSubmeter

LIBMBUS_FRAMES = Path(__file__).resolve().parents[1] / "tests" / "vectors" / "libmbus" / "test-frames"
NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.timezone.utc).timestamp()


def simulator_frames() -> list[tuple[str, bytes]]:
    frames = []
    for coding in ("bcd", "binary"):
        for unit in ("kWh", "MJ"):
            meters = [SimulatedSubmeter(kind, seed=1, primary_address=i + 1, coding=coding, energy_unit=unit)
                      for i, kind in enumerate(KINDS)]
            bus = SimulatedBus(meters)
            for address, meter in enumerate(meters, start=1):
                if meter.kind != "heat" and unit == "MJ":
                    continue  # the same frames as with kWh
                for n, c in enumerate((0x7B, 0x5B)[:meter.telegram_count]):
                    raw = bus.receive(bytes((0x10, c, address, (c + address) & 0xFF, 0x16)), NOW)
                    frames.append((f"simulated {meter.kind} {coding} {unit} telegram {n + 1}", raw))
    return frames


def libmbus_frames() -> list[tuple[str, bytes]]:
    frames = []
    for path in sorted(LIBMBUS_FRAMES.glob("*.hex")):
        try:
            frames.append((f"libmbus {path.stem}", bytes.fromhex(path.read_text())))
        except ValueError:
            continue
    return frames


def decode_ours(raw: bytes) -> list:
    frame = decode_frame(raw)
    if not isinstance(frame, LongFrame):
        raise DecodeError("M-Bus telegram", 0, "not a long frame")
    telegram = parse_telegram(frame.ci, frame.data)
    values = []
    for record in telegram.records:
        try:
            values.append(record.scaled())
        except DecodeError:
            values.append(None)  # a record whose value is invalid keeps its bytes
    return values


def decode_peer(raw: bytes) -> dict:
    return parse(raw, include_enrichment=False)


def numbers_ours(values: list) -> list[Decimal]:
    return [Decimal(v) for v in values if isinstance(v, Decimal)]


def numbers_peer(decoded: dict) -> list[Decimal]:
    out = []
    for record in decoded.get("records", []):
        value = record.get("value", {})
        if value.get("kind") == "decimal" and record.get("data_coding") != "32-bit real":
            try:
                out.append(Decimal(value["value"]))
            except (ArithmeticError, ValueError):
                pass
    return out


def best_cpu(runs: int, repeat: int, fn, frames: list[bytes]) -> float:
    for raw in frames:
        fn(raw)
    best = float("inf")
    for _ in range(runs):
        gc.collect()
        t0 = time.process_time()
        for _ in range(repeat):
            for raw in frames:
                fn(raw)
        best = min(best, time.process_time() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed passes; the best is reported (default 5)")
    parser.add_argument("--repeat", type=int, default=50, help="decodes of the whole set in one pass (default 50)")
    args = parser.parse_args(argv)

    candidates = simulator_frames() + libmbus_frames()
    accepted, left_out = [], []
    agreeing, differing = 0, []
    for name, raw in candidates:
        try:
            ours = decode_ours(raw)
        except DecodeError as exc:
            left_out.append({"frame": name, "refused_by": "smartmeter", "error": str(exc)})
            continue
        try:
            theirs = decode_peer(raw)
        except MbusParserError as exc:
            left_out.append({"frame": name, "refused_by": "pymbusparser", "error": str(exc)})
            continue
        same = sorted(numbers_ours(ours)) == sorted(numbers_peer(theirs))
        if name.startswith("simulated") and not same:
            raise SystemExit(f"benchmark check failed: the decoders disagree on {name}")
        agreeing += same
        if not same:
            differing.append(name)
        accepted.append((name, raw))
    frames = [raw for _, raw in accepted]
    gc.collect()
    gc.freeze()

    ours_s = best_cpu(args.runs, args.repeat, decode_ours, frames)
    peer_s = best_cpu(args.runs, args.repeat, decode_peer, frames)
    decoded = len(frames) * args.repeat
    summary = {
        "benchmark": "M-Bus telegram decoding (wired long frames: frame checks, header, records, scaled values)",
        "compares": "smartmeter decode_frame + parse_telegram + Record.scaled() against pymbusparser 0.5.3 "
                    "parse(frame, include_enrichment=False), on the same frames in the same run",
        "frames": len(frames),
        "simulator_frames": sum(name.startswith("simulated") for name, _ in accepted),
        "libmbus_frames": sum(name.startswith("libmbus") for name, _ in accepted),
        "bytes": sum(len(f) for f in frames),
        "frames_with_equal_numbers": agreeing,
        "frames_with_different_numbers": differing,
        "left_out": left_out,
        "runs": args.runs,
        "repeat": args.repeat,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "timing": "best CPU time (time.process_time) of the runs",
        "smartmeter_telegrams_per_s": decoded / ours_s,
        "pymbusparser_telegrams_per_s": decoded / peer_s,
        "ratio_smartmeter_over_pymbusparser": (decoded / ours_s) / (decoded / peer_s),
    }
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Decode a year of 15-minute load-profile rows with smartmeter, gurux-dlms and dlms-cosem.

The buffer is what a meter returns for a profile generic (IC 7) attribute 2 read:
an A-XDR array of 35,040 structures {octet-string(12) clock, unsigned status,
4x double-long-unsigned (+A, -A, +R, -R)}, about 1.33 MB. Every decoder gets the same
bytes; the script checks that all of them yield the same numbers, then prints the best
CPU time of N runs for each. gurux-dlms and dlms-cosem are only black-box peers here.

A second input has no repeating layout: an association's object list (IC 15 attribute 2)
of 5,000 entries, nested structures and arrays of varied length with null-data, enum and
boolean leaves. It measures the generic decoder value by value; every decoder turns it
into the same nested lists of plain values.

    .venv/bin/python benchmarks/profile_decode.py [--runs N] [--rows N] [--objects N] [--json]
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import platform
import sys
import time
from collections.abc import Callable

from smartmeter.cosem.axdr import decode_all, decode_rows, encode, encode_date_time, encode_rows, rows_of, rows_to_data
from smartmeter.cosem.data import CLOCK_STATUS_DST_ACTIVE, CosemDateTime, Data, DataType

ROWS_PER_YEAR = 365 * 96
COLUMN_TYPES = [DataType.OCTET_STRING, DataType.UNSIGNED] + [DataType.DOUBLE_LONG_UNSIGNED] * 4


def build_rows(count: int) -> list[tuple]:
    """Plausible quarter-hour rows: CET/CEST clock stamps and monotonically rising energy registers."""
    cet, cest = dt.timezone(dt.timedelta(hours=1)), dt.timezone(dt.timedelta(hours=2))
    start = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    rows = []
    import_wh = export_wh = q_import = q_export = 0
    for i in range(count):
        utc = start + dt.timedelta(minutes=15 * i)
        # EU rule: CEST from the last Sunday of March to the last Sunday of October, 01:00 UTC.
        summer = dt.datetime(2024, 3, 31, 1, tzinfo=dt.timezone.utc) <= utc < dt.datetime(2024, 10, 27, 1, tzinfo=dt.timezone.utc)
        local = utc.astimezone(cest if summer else cet)
        stamp = CosemDateTime.from_datetime(local, CLOCK_STATUS_DST_ACTIVE if summer else 0)
        import_wh += 40 + (i * 7919) % 400
        export_wh += (i * 104729) % 90 if 28 <= i % 96 <= 68 else 0
        q_import += (i * 31) % 50
        q_export += (i * 17) % 20
        status = 0x08 if i % 2880 == 0 else 0  # a power-up flag now and then
        rows.append((encode_date_time(stamp), status, import_wh, export_wh, q_import, q_export))
    return rows


def build_object_list(count: int) -> Data:
    """An IC 15 object_list: {class_id, version, logical_name, access_rights{attribute
    access items {id, access mode, null-data or array of selectors}, method access items
    {id, access mode}}}, with 1..18 attributes and 0..6 methods an object."""
    objects = []
    for i in range(count):
        class_id = (1, 3, 4, 5, 7, 8, 15, 64, 70, 72)[i % 10]
        attributes = [
            Data.structure([
                Data.integer(a), Data.enum((a + i) % 4),
                Data.array([Data.integer(s) for s in range(1, 1 + a % 3)]) if a % 5 == 0 else Data.null(),
            ])
            for a in range(1, 2 + (i * 7) % 18)
        ]
        methods = [Data.structure([Data.integer(m), Data.boolean((m + i) % 2 == 0)]) for m in range(1, 1 + i % 7)]
        objects.append(Data.structure([
            Data.long_unsigned(class_id), Data.unsigned(i % 3),
            Data.octet_string(bytes((i % 2, 0, (i >> 8) % 256, i % 256, 0, 255))),
            Data.structure([Data.array(attributes), Data.array(methods)]),
        ]))
    return Data.array(objects)


def decode_smartmeter(raw: bytes) -> list[tuple]:
    rows, end = decode_rows(raw)
    _check(end == len(raw), "decode_rows stopped before the end")
    return rows


def decode_smartmeter_generic(raw: bytes) -> list[tuple]:
    return rows_of(decode_all(raw))  # the Data tree, then each row's field values


def decode_smartmeter_generic_plain(raw: bytes) -> list:
    return decode_all(raw).to_python()


def decode_gurux(raw: bytes):
    from gurux_dlms import GXByteBuffer, GXDLMSClient

    buffer = GXByteBuffer(raw)
    value = GXDLMSClient.getValue(buffer, False)
    _check(buffer.position == len(raw), "gurux stopped before the end")
    return value


def decode_dlms_cosem(raw: bytes):
    from dlms_cosem.dlms_data import DlmsDataParser

    parsed = DlmsDataParser().parse(raw)
    _check(len(parsed) == 1, "dlms-cosem found more than one value")
    return parsed[0].to_python()


def _check(condition: bool, message: str) -> None:
    # Not assert: the comparison must also hold under python -O.
    if not condition:
        raise SystemExit(f"benchmark check failed: {message}")


def normalise(rows) -> list[tuple]:
    """Peers return bytearray and int subclasses: plain bytes and int for comparison."""
    return [tuple(bytes(v) if isinstance(v, (bytes, bytearray)) else int(v) for v in row) for row in rows]


def plain(value):
    """Nested lists of None, bool, int and bytes (peers' bytearray and int subclasses made plain)."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or type(value) is bool:
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return int(value)


def best_of(runs: int, fn: Callable[[bytes], object], raw: bytes) -> tuple[float, object]:
    """Best CPU time (this process, `time.process_time`) of `runs` calls after one untimed
    warm-up call (imports, caches). CPU time rather than wall time: on a shared machine the
    wall time of the same work varies severalfold with the other load, its CPU time hardly.

    Before each call the previous result is freed and a full garbage collection runs, both
    outside the clock: every decoder starts from the same clean heap and pays only for the
    collections its own objects cause.
    """
    result = fn(raw)
    best = float("inf")
    for _ in range(runs):
        result = None
        gc.collect()
        t0 = time.process_time()
        result = fn(raw)
        best = min(best, time.process_time() - t0)
    return best, result


def time_decoders(runs: int, raw: bytes, decoders, expected, compare) -> list[dict]:
    results = []
    for name, fn in decoders:
        seconds, value = best_of(runs, fn, raw)
        _check(compare(value) == expected, f"{name} decoded different values")
        results.append({"decoder": name, "seconds": seconds, "mb_per_s": len(raw) / 1e6 / seconds})
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per decoder; the best is reported (default 5)")
    parser.add_argument("--rows", type=int, default=ROWS_PER_YEAR, help=f"profile rows (default {ROWS_PER_YEAR})")
    parser.add_argument("--objects", type=int, default=5000, help="object list entries (default 5000)")
    parser.add_argument("--no-gc", action="store_true",
                        help="disable Python's cyclic garbage collector while timing (decoding work only)")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args(argv)

    rows = build_rows(args.rows)
    raw = encode_rows(rows, COLUMN_TYPES)
    _check(raw == encode(rows_to_data(rows, COLUMN_TYPES)), "encode_rows differs from the generic encoder")
    object_list = build_object_list(args.objects)
    object_raw = encode(object_list)
    object_expected = plain(object_list.to_python())
    # The inputs and expected values live through every run: keep them out of the collector's
    # passes, so a collection costs what the decoder under test allocated, not what we built.
    gc.collect()
    gc.freeze()
    if args.no_gc:
        gc.disable()

    results = time_decoders(args.runs, raw, [
        ("smartmeter decode_rows", decode_smartmeter),
        ("smartmeter generic decode", decode_smartmeter_generic),
        ("gurux-dlms 1.0.203", decode_gurux),
        ("dlms-cosem 25.1.0", decode_dlms_cosem),
    ], rows, normalise)
    fast = results[0]["seconds"]
    generic = results[1]["seconds"]
    for r in results:
        r["slower_than_decode_rows"] = r["seconds"] / fast
        r["slower_than_generic"] = r["seconds"] / generic

    object_results = time_decoders(args.runs, object_raw, [
        ("smartmeter generic decode", decode_smartmeter_generic_plain),
        ("gurux-dlms 1.0.203", decode_gurux),
        ("dlms-cosem 25.1.0", decode_dlms_cosem),
    ], object_expected, plain)
    for r in object_results:
        r["slower_than_generic"] = r["seconds"] / object_results[0]["seconds"]

    encode_seconds, _ = best_of(args.runs, lambda _: encode_rows(rows, COLUMN_TYPES), raw)
    generic_encode_seconds, _ = best_of(args.runs, lambda _: encode(rows_to_data(rows, COLUMN_TYPES)), raw)

    summary = {
        "rows": args.rows,
        "bytes": len(raw),
        "runs": args.runs,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "garbage_collector": "disabled" if args.no_gc else "enabled",
        "all_decoders_agree": True,  # checked above; a mismatch exits before this point
        "decode": results,
        "object_list": {"objects": args.objects, "bytes": len(object_raw), "decode": object_results},
        "encode": {"encode_rows_seconds": encode_seconds, "generic_encode_seconds": generic_encode_seconds},
    }
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
        return 0

    print(f"profile buffer: {args.rows} rows x 6 columns, {len(raw):,} bytes; best of {args.runs} runs; "
          f"Python {summary['python']} on {summary['machine']}; garbage collector {summary['garbage_collector']}")
    print("all decoders yield the same values: yes (checked)")
    print(f"{'decoder':<28}{'seconds':>10}{'MB/s':>10}{'x decode_rows':>15}{'x generic':>11}")
    for r in results:
        print(f"{r['decoder']:<28}{r['seconds']:>10.4f}{r['mb_per_s']:>10.1f}{r['slower_than_decode_rows']:>15.1f}"
              f"{r['slower_than_generic']:>11.1f}")
    print(f"\nobject list: {args.objects} entries, {len(object_raw):,} bytes, decoded to nested lists of plain values")
    print(f"{'decoder':<28}{'seconds':>10}{'MB/s':>10}{'x generic':>11}")
    for r in object_results:
        print(f"{r['decoder']:<28}{r['seconds']:>10.4f}{r['mb_per_s']:>10.1f}{r['slower_than_generic']:>11.1f}")
    print(f"\nencode_rows {encode_seconds:.4f} s, generic encode {generic_encode_seconds:.4f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

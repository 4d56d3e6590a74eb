"""Push listener benchmark: pushes decoded and stored per second by the head-end, against
decoding the same pushes with dlms-cosem in the same run.

The pushes: `--meters` simulated meters (own system title and Data Readout keys), each sending
`--pushes` Interval 1 pushes with the contents of the model's push object list (clock, +A, -A,
+R, -R, the eight rate registers, the load profile status: 14 values), protected as the meter
protects them (general-glo-ciphering, suite 1, authenticated and encrypted), each in its wrapper
message. Three timings of the same messages:

1. listener: `PushReceiver.datagram` for every message, as `smartmeter hes listen` runs it
   (wrapper, keys by system title, replay check, AES-GCM, data-notification, mapping to the
   push object list, each push with its readings in a savepoint, WAL, synchronous=NORMAL, a commit
   every 256 pushes as when a burst arrives in one turn of the listener's event loop);
2. our decode: the same decryption and parsing alone, down to the body's plain values
   (`GeneralGloCiphering.from_bytes` + `unprotect` + `DataNotification.from_bytes` +
   `Data.to_python`);
3. dlms-cosem 25.1.0: `GeneralGlobalCipher.from_bytes` + `to_plain_apdu` +
   `DataNotification.from_bytes` + `AXdrDecoder.decode` of the body, to its plain values.

2 and 3 give like output (the run checks that every push's values are equal: bytes for
octet-strings, ints for the rest), so their ratio compares library with library. 1 does more
(the replay check, the mapping, the storage): its ratio to 3 says what a stored push costs
against a bare decode. Each figure is the best CPU time (`time.process_time`) of `--runs` runs;
the listener gets a fresh database each run. dlms-cosem is only a black-box peer here; the
product never imports it.

    .venv/bin/python benchmarks/push_listener.py [--meters N] [--pushes N] [--runs N] [--json]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from dlms_cosem import a_xdr
from dlms_cosem.protocol.xdlms import DataNotification as PeerDataNotification
from dlms_cosem.protocol.xdlms.general_global_cipher import GeneralGlobalCipher

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CosemDateTime, Data
from smartmeter.dlms.apdu.ciphered import GeneralGloCiphering
from smartmeter.dlms.apdu.notification import DataNotification
from smartmeter.dlms.security.suites import SecurityControl
from smartmeter.hes.push_listener import Keyring, MeterKeys, ObjectLists, PushReceiver, model_object_lists
from smartmeter.hes.push_store import PushStore
from smartmeter.transport.wrapper import HEADER_LENGTH, WrapperFrame

INTERVAL_1 = "0-1:25.9.0.255"
START = 1773144000.0


def make_pushes(meters: int, pushes: int, entries: list) -> tuple[list[MeterKeys], list[bytes]]:
    """Keys and wrapper messages, interleaved as meters push at the same quarter-hour."""
    keys = [MeterKeys(b"BEN" + n.to_bytes(5, "big"), 1, os.urandom(16), os.urandom(16), Path("-"))
            for n in range(meters)]
    messages = []
    for k in range(1, pushes + 1):
        t = dt.datetime.fromtimestamp(START + 900 * k, dt.timezone.utc)
        stamp = axdr.encode_date_time(CosemDateTime.from_datetime(t))
        for n, meter in enumerate(keys):
            values = [Data.octet_string(stamp)] + [
                Data.unsigned(k % 256) if cls == 1 else Data.double_long_unsigned(1_000_000 * n + 1000 * k + i)
                for i, (cls, _, _, _) in enumerate(entries[1:])]
            plain = DataNotification(k, stamp, Data.structure(values)).to_bytes()
            apdu = GeneralGloCiphering.protect(SecurityControl(1, True, True), meter.ek, meter.ak, meter.system_title,
                                               k, plain).to_bytes()
            messages.append(WrapperFrame(1, 2, apdu).to_bytes())
    return keys, messages


def listener_run(keys: list[MeterKeys], messages: list[bytes], lists) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = PushStore(Path(tmp) / "bench.sqlite", deferred=True)  # as `hes listen` runs it
        receiver = PushReceiver(Keyring(keys), store, ObjectLists(store, None, [lists]))
        start = time.process_time()
        for message in messages:
            receiver.datagram(message, ("127.0.0.1", 4059))
        store.flush()
        elapsed = time.process_time() - start
        assert receiver.counts["stored"] == len(messages), receiver.counts
        store.close()
    return elapsed


def ours_decode(by_title: dict[bytes, MeterKeys], messages: list[bytes]) -> list:
    out = []
    for message in messages:
        ciphered = GeneralGloCiphering.from_bytes(message[HEADER_LENGTH:])
        meter = by_title[ciphered.system_title]
        plain = ciphered.unprotect(meter.ek, meter.ak, expected_suite=1)
        out.append(DataNotification.from_bytes(plain).body.to_python())
    return out


def peer_decode(by_title: dict[bytes, MeterKeys], messages: list[bytes]) -> list:
    decoder = a_xdr.AXdrDecoder(encoding_conf=a_xdr.EncodingConf(attributes=[a_xdr.Sequence(attribute_name="data")]))
    out = []
    for message in messages:
        ciphered = GeneralGlobalCipher.from_bytes(message[HEADER_LENGTH:])
        meter = by_title[bytes(ciphered.system_title)]
        notification = PeerDataNotification.from_bytes(ciphered.to_plain_apdu(meter.ek, meter.ak))
        out.append(decoder.decode(notification.body)["data"])
    return out


def best(runs: int, fn, *args) -> tuple[float, object]:
    fn(*args)  # warm-up, untimed
    times, result = [], None
    for _ in range(runs):
        start = time.process_time()
        result = fn(*args)
        times.append(time.process_time() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--pushes", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    lists = next(v for v in model_object_lists() if INTERVAL_1 in v)
    entries = lists[INTERVAL_1]
    keys, messages = make_pushes(args.meters, args.pushes, entries)
    by_title = {k.system_title: k for k in keys}
    n = len(messages)

    listener_run(keys, messages, lists)  # warm-up
    listener = min(listener_run(keys, messages, lists) for _ in range(args.runs))
    ours, our_values = best(args.runs, ours_decode, by_title, messages)
    peer, peer_values = best(args.runs, peer_decode, by_title, messages)
    assert our_values == peer_values, "dlms-cosem and our decoder disagree"

    result = {
        "pushes": n, "values_per_push": len(entries), "message_bytes": len(messages[0]),
        "listener_decoded_and_stored_per_s": n / listener, "our_decode_per_s": n / ours,
        "dlms_cosem_decode_per_s": n / peer,
        "ratio_our_decode_to_dlms_cosem": peer / ours, "ratio_listener_to_dlms_cosem": peer / listener,
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{n} pushes ({args.meters} meters x {args.pushes}), {len(entries)} values each, "
          f"{len(messages[0])} bytes a message; best CPU time of {args.runs} runs")
    print(f"  listener (decrypt, parse, map, store in SQLite) {n / listener:10,.0f} pushes/s")
    print(f"  our decode (decrypt + parse to plain values)    {n / ours:10,.0f} pushes/s")
    print(f"  dlms-cosem decode (same output, checked equal)  {n / peer:10,.0f} pushes/s")
    print(f"  ratio our decode / dlms-cosem: {peer / ours:.1f}x   listener incl. storage / dlms-cosem decode: "
          f"{peer / listener:.1f}x")


if __name__ == "__main__":
    sys.exit(main())

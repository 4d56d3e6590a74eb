"""Consumer push benchmark (H1, companion §10.5): what one push costs the meter to build, and how
long it is on the line, computed against measured on a pseudo-terminal.

The push: the model's Consumer Information push setup (0-6:25.9.0.255) of an in-process meter
(single-phase: 12 entries; `--phases 3`: 16), built as the meter builds it for its H1 port:
the entries read with the meter's authority, the data-notification, general-glo-ciphering for
the CIP client (suite 1, encryption only, its sending counter made durable as the meter does),
the M-Bus segments (smartmeter.meter.consumer_port.ConsumerPush with a port that takes all).

1. encode: the best CPU time (`time.process_time`) of `--runs` runs of `--pushes` pushes, per push;
2. line: `--sends` pushes written through a real `ConsumerPort("pty")`, one after the other, while
   a reader on the pty's slave notes when each frame arrives. The pty delivers a frame at once, at
   the moment the port writes it, so the time a push takes on the line is measured as the first
   frame's arrival to the last frame's arrival plus the last frame's own airtime. The computed
   figure is the airtime (octets x 11 bits / 2400 Bd) plus the gaps between frames (33 bit times
   each, IEC 60870-5-1); the pure airtime is given too.

    .venv/bin/python benchmarks/consumer_push.py [--phases 1|3] [--pushes N] [--runs N] [--sends N] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import select
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from smartmeter.cosem.obis import Obis
from smartmeter.mbus.consumer_port import ConsumerPushReader
from smartmeter.meter.clock import MeterClock
from smartmeter.meter.consumer_port import (
    BAUD, BITS_PER_OCTET, INTER_FRAME_GAP_BITS, ConsumerPort, ConsumerPush, airtime,
)
from smartmeter.meter.runtime import Meter, MeterConfig

CIP_SETUP = Obis.parse("0-6:25.9.0.255").to_bytes()
START = 1773144000.0


class TakeAll:
    """The H1 line for the encode timing: every push taken, none written."""

    def __init__(self) -> None:
        self.pushes: list[list[bytes]] = []

    def busy(self) -> bool:
        return False

    def submit(self, frames) -> bool:
        self.pushes.append(list(frames))
        return True

    def skip(self) -> None:
        raise AssertionError("the benchmark's line is never busy")


def build(meter: Meter, port, pushes: int) -> float:
    setup = meter.directory.by_ln[CIP_SETUP][1]
    destination = setup.send_destination().destination
    consumer = ConsumerPush(meter.server, port)
    start = time.process_time()
    for n in range(pushes):
        outcome = consumer.push(setup.name, destination, meter.push.body(setup, START), n + 1)
        assert outcome == "submitted", outcome
    return time.process_time() - start


def on_the_line(frame_sets: list[list[bytes]]) -> list[float]:
    """Each push written through a pty port; the measured seconds it took on the line."""
    port = ConsumerPort("pty")
    path = port.open()
    reader_fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    arrivals: list[tuple[float, bytes]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            if select.select([reader_fd], [], [], 0.05)[0]:
                arrivals.append((time.monotonic(), os.read(reader_fd, 4096)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    measured = []
    try:
        for frames in frame_sets:
            arrivals.clear()
            assert port.submit(frames)
            total = sum(len(f) for f in frames)
            while sum(len(chunk) for _, chunk in arrivals) < total or port.busy():
                time.sleep(0.005)
            # the time each frame began to arrive: the chunk holding its first octet
            starts, seen, boundaries = [], 0, []
            for f in frames:
                boundaries.append(seen)
                seen += len(f)
            got = 0
            for at, chunk in list(arrivals):
                while boundaries and boundaries[0] < got + len(chunk):
                    boundaries.pop(0)
                    starts.append(at)
                got += len(chunk)
            stream = b"".join(chunk for _, chunk in arrivals)
            check = ConsumerPushReader()
            check.feed(stream)
            assert len(check.take()) == 1 and stream == b"".join(frames)
            measured.append(starts[-1] - starts[0] + airtime(len(frames[-1])))
    finally:
        stop.set()
        reader.join()
        os.close(reader_fd)
        port.close()
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=int, choices=(1, 3), default=1)
    parser.add_argument("--pushes", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sends", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        meter = Meter(MeterConfig(data_dir=Path(tmp), backfill_days=0, meter_type=100 if args.phases == 1 else 300),
                      clock=MeterClock(source=lambda: START))
        try:
            build(meter, TakeAll(), 5)  # warm-up, untimed
            encode = min(build(meter, TakeAll(), args.pushes) for _ in range(args.runs)) / args.pushes
            port = TakeAll()
            build(meter, port, args.sends)
            frame_sets = port.pushes
        finally:
            meter.close()
    octets = sum(len(f) for f in frame_sets[0])
    frames = len(frame_sets[0])
    computed = airtime(octets) + (frames - 1) * INTER_FRAME_GAP_BITS / BAUD
    measured = on_the_line(frame_sets)
    result = {
        "phases": args.phases, "frames_per_push": frames, "octets_per_push": octets,
        "encode_ms_per_push": encode * 1000,
        "airtime_s": airtime(octets), "computed_line_time_s": computed,
        "measured_line_time_s_median": statistics.median(measured),
        "measured_line_time_s_max": max(measured),
        "measured_minus_computed_ms_max": (max(measured) - computed) * 1000,
        "bits_per_octet": BITS_PER_OCTET, "baud": BAUD, "inter_frame_gap_bits": INTER_FRAME_GAP_BITS,
        "shortest_push_interval_s": computed + INTER_FRAME_GAP_BITS / BAUD,
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"consumer push, {args.phases}-phase: {frames} frames, {octets} octets on the line")
    print(f"  encode (read, protect, segment)  {encode * 1000:8.3f} ms a push (best CPU time of {args.runs} runs)")
    print(f"  airtime (octets x 11 / 2400)     {airtime(octets):8.3f} s")
    print(f"  computed line time (+ gaps)      {computed:8.3f} s")
    print(f"  measured on the pty (median/max) {statistics.median(measured):8.3f} / {max(measured):.3f} s "
          f"({args.sends} pushes)")


if __name__ == "__main__":
    sys.exit(main())

"""Real-time factor of the metrology: seconds of 3-phase, 8 kHz signal processed per second of CPU.

The signal (3 phases, 230 V, 10/20/5 A, PF 0.8 lagging, 3rd/5th/7th harmonics, noise) is
generated first and not timed; then `Metrology.process` runs over it frame by frame, and,
separately, the whole remote-sensor path (`RemoteSensorLink.receive`: decode, HMAC check,
sequence check, i32 → float) followed by `Metrology.process`. CPU time is
`time.process_time()` of this process, pinned to one BLAS thread, best of N runs. The
registered energy is checked against the analytic energy so a fast but wrong metrology
cannot report a figure.

A third figure adds the meter's power quality tracking at its most demanding: every frame's
RMS voltages and currents go to the sag/swell/cut detector (`VoltageQuality`) and the power
quality profile's 10-minute period values (`PeriodAccumulator`), as if the meter sampled each
frame (it samples once a second). Its periods' average voltage is checked against the signal's.

    .venv/bin/python benchmarks/metrology.py [--seconds S] [--runs N] [--frame-ms 20,100,1000] [--json]
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core: before numpy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from smartmeter.legal.metrology import ENERGY_UNITS_PER_WH, EnergyDelta, Metrology  # noqa: E402
from smartmeter.legal.sensor import RemoteSensor, RemoteSensorLink, SyntheticSource  # noqa: E402
from smartmeter.meter.power_quality import PeriodAccumulator, VoltageQuality  # noqa: E402

SAMPLE_RATE = 8000
PHASES = 3


def make_source() -> SyntheticSource:
    return SyntheticSource(
        phases=PHASES, sample_rate=SAMPLE_RATE, current_rms=(10.0, 20.0, 5.0), power_factor=0.8,
        harmonics={3: (0.04, 0.3, 30.0), 5: (0.03, 0.2, -60.0), 7: (0.02, 0.1, 100.0)},
        voltage_noise_rms=1.0, current_noise_rms=0.05, seed=1,
    )


def pair() -> tuple[RemoteSensorLink, RemoteSensor]:
    link = RemoteSensorLink(b"METER001")
    sensor = RemoteSensor(b"SENSOR01")
    link.open_pairing()
    (response,) = link.receive(sensor.pair_request())
    link.receive(sensor.receive_pair_response(response.data))
    return link, sensor


def check(total: EnergyDelta, source: SyntheticSource, n_samples: int) -> float:
    truth = sum(a for a, _ in source.analytic_energy(n_samples))
    error = (total.a_plus / ENERGY_UNITS_PER_WH - truth) / truth
    if abs(error) > 1e-3:
        sys.exit(f"registered +A is off by {error:.3%}: the benchmark is void")
    return error


def bench(frame_ms: int, seconds: float, runs: int) -> dict:
    n = SAMPLE_RATE * frame_ms // 1000
    count = max(1, int(seconds * 1000 // frame_ms))
    source = make_source()
    frames = [source.frame(k, k * n, n) for k in range(count)]
    signal_seconds = count * n / SAMPLE_RATE

    best = float("inf")
    for _ in range(runs):
        metrology = Metrology(PHASES, SAMPLE_RATE)
        total = EnergyDelta()
        t0 = time.process_time()
        for frame in frames:
            total = total + metrology.process(frame).energy_delta
        best = min(best, time.process_time() - t0)
    error = check(total, source, count * n)

    link, sensor = pair()
    wire = [sensor.encode(frame) for frame in frames]
    best_link = float("inf")
    for _ in range(runs):
        link, sensor = pair()
        wire = [sensor.encode(frame) for frame in frames]  # fresh keys and sequence numbers each run
        metrology = Metrology(PHASES, SAMPLE_RATE)
        total = EnergyDelta()
        t0 = time.process_time()
        for data in wire:
            (event,) = link.receive(data)
            total = total + metrology.process(event.frame).energy_delta
        best_link = min(best_link, time.process_time() - t0)
    link_error = check(total, source, count * n)

    frame_seconds = n / SAMPLE_RATE
    best_quality = float("inf")
    for _ in range(runs):
        metrology = Metrology(PHASES, SAMPLE_RATE)
        quality, periods = VoltageQuality(PHASES), PeriodAccumulator(PHASES, 600)
        entries = []
        t0 = time.process_time()
        for k, frame in enumerate(frames):
            m = metrology.process(frame)
            volts = [p.voltage_rms for p in m.phases]
            start = k * frame_seconds
            quality.observe(start, start + frame_seconds, volts)
            entries += periods.observe(start, start + frame_seconds, volts, [p.current_rms for p in m.phases])
        best_quality = min(best_quality, time.process_time() - t0)
    if len(entries) != int(signal_seconds // 600) or any(abs(v - 230.0) > 1.0 for e in entries for v in e.average_volts):
        sys.exit("the power quality periods do not match the signal: the benchmark is void")
    return {
        "frame_ms": frame_ms,
        "samples_per_frame": n,
        "frames": count,
        "signal_seconds": signal_seconds,
        "metrology_cpu_seconds": best,
        "metrology_real_time_factor": signal_seconds / best,
        "metrology_us_per_frame": best / count * 1e6,
        "link_and_metrology_cpu_seconds": best_link,
        "link_and_metrology_real_time_factor": signal_seconds / best_link,
        "with_power_quality_cpu_seconds": best_quality,
        "with_power_quality_real_time_factor": signal_seconds / best_quality,
        "power_quality_us_per_frame": (best_quality - best) / count * 1e6,
        "a_plus_error": error,
        "a_plus_error_via_link": link_error,
        "message_bytes": len(wire[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="seconds of signal per run (default 600)")
    parser.add_argument("--runs", type=int, default=3, help="best of N runs (default 3)")
    parser.add_argument("--frame-ms", default="20,100,1000", help="frame lengths in ms, comma-separated")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    results = [bench(int(ms), args.seconds, args.runs) for ms in args.frame_ms.split(",")]
    report = {
        "phases": PHASES,
        "sample_rate": SAMPLE_RATE,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"Metrology, {PHASES} phases x {SAMPLE_RATE} Hz, one core (CPU time, best of {args.runs}), "
          f"{args.seconds:g} s of signal per run")
    print(f"{'frame':>7} {'us/frame':>9} {'x real time':>12} {'with link':>10} {'with PQ':>8} {'PQ us/frame':>12} "
          f"{'+A error':>10}")
    for r in results:
        print(f"{r['frame_ms']:>5}ms {r['metrology_us_per_frame']:>9.1f} {r['metrology_real_time_factor']:>12.0f} "
              f"{r['link_and_metrology_real_time_factor']:>10.0f} {r['with_power_quality_real_time_factor']:>8.0f} "
              f"{r['power_quality_us_per_frame']:>12.1f} {r['a_plus_error']:>10.2e}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Remote-sensor demo and real-time lag measurement for the metering unit (legal/metering.py).

  remote_sensor_demo.py meter  [--host 127.0.0.1] [--port 4059] [--phases 3]
      A metering unit with a remote sensor input, its UDP listener, and - for the demo
      only; a real meter opens pairing on an authorised command in certification mode - an
      open pairing window. Prints the instantaneous values and the energy once a second.

  remote_sensor_demo.py sensor [--meter 127.0.0.1:4059] [--phases 3] [--current 5] [--angle 30]
      A remote sensor: pairs with the meter, then sends 100 ms frames of a synthetic signal
      in real time.

  remote_sensor_demo.py lag [--seconds 10] [--neighbour none|python|gil|numpy]
      Runs the real-time loop (3 phases, 8 kHz, 100 ms frames) for a while next to a
      CPU-heavy thread in the same process and prints the largest lateness of a frame:
      python = a pure-Python busy loop (the interpreter switches threads every 5 ms),
      gil = long C calls that hold the GIL (sum over a big range), numpy = large matrix
      products (they release the GIL). The energy is checked against P·t either way.
"""
from __future__ import annotations

import argparse
import socket
import sys
import threading
import time

from smartmeter.legal.metering import MeteringUnit
from smartmeter.legal.metrology import ENERGY_UNITS_PER_WH, EnergyDelta
from smartmeter.legal.sensor import RemoteSensor, RemoteSensorLink, SyntheticSource

FS = 8000
FRAME = 800
METER_ID = bytes.fromhex("4b464d0100000001")
SENSOR_ID = bytes.fromhex("5345000000000042")


def run_meter(args: argparse.Namespace) -> None:
    total = [EnergyDelta()]
    lock = threading.RLock()

    def on_measurement(m) -> None:
        total[0] = total[0] + m.energy_delta

    def on_event(name: str, details: dict) -> None:
        print(f"event {name} {details}", flush=True)

    unit = MeteringUnit(args.phases, FS, 100, on_measurement, on_event, remote=RemoteSensorLink(METER_ID), lock=lock)
    unit.open_pairing()  # demo only: a real meter needs an authorised command in certification mode
    unit.start()
    with unit.serve_udp(args.host, args.port) as listener:
        print(f"meter listening on {listener.address}, pairing open", flush=True)
        try:
            while True:
                time.sleep(1.0)
                m = unit.latest()
                with lock:
                    e = total[0]
                if m is not None:
                    print(f"P={m.active_power:9.1f} W  Q={m.reactive_power:9.1f} var  f={m.frequency:6.3f} Hz  "
                          f"+A={e.a_plus / ENERGY_UNITS_PER_WH:.6f} Wh  +R={e.r_plus / ENERGY_UNITS_PER_WH:.6f} varh",
                          flush=True)
        except KeyboardInterrupt:
            pass
    unit.stop()


def run_sensor(args: argparse.Namespace) -> None:
    host, port = args.meter.rsplit(":", 1)
    address = (host, int(port))
    sensor = RemoteSensor(SENSOR_ID)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.sendto(sensor.pair_request(), address)
        response, _ = sock.recvfrom(4096)
        sock.sendto(sensor.receive_pair_response(response), address)
        print("paired", flush=True)
        source = SyntheticSource(args.phases, FS, current_rms=args.current, angle_deg=args.angle)
        start = time.monotonic()
        try:
            for k, frame in enumerate(source.frames(FRAME)):
                delay = start + (k + 1) * FRAME / FS - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sock.sendto(sensor.encode(frame), address)
        except KeyboardInterrupt:
            pass


def run_lag(args: argparse.Namespace) -> None:
    total = [EnergyDelta()]
    stop = threading.Event()

    def on_measurement(m) -> None:
        total[0] = total[0] + m.energy_delta

    def neighbour() -> None:
        if args.neighbour == "python":
            x = 0
            while not stop.is_set():
                for i in range(10_000):
                    x += i * i
        elif args.neighbour == "gil":
            while not stop.is_set():
                sum(range(20_000_000))  # one C call holding the GIL for a long while
        elif args.neighbour == "numpy":
            import numpy as np

            a = np.random.default_rng(0).standard_normal((600, 600))
            while not stop.is_set():
                a = np.tanh(a @ a)

    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    unit = MeteringUnit(3, FS, 100, on_measurement, lambda n, d: print("event", n, d), stall_timeout=5.0)
    unit.set_load(6900.0, 2300.0)
    threads = [threading.Thread(target=neighbour, daemon=True) for _ in range(args.threads)]
    if args.neighbour != "none":
        for t in threads:
            t.start()
    unit.start()
    samples = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.seconds:
        time.sleep(0.05)
        samples.append(unit.lag_seconds())
    unit.stop()
    stop.set()
    seconds = unit.position / FS
    expected = 6900.0 * seconds / 3600 * ENERGY_UNITS_PER_WH
    print(f"neighbour={args.neighbour} threads={args.threads} switch={sys.getswitchinterval()}: {seconds:.1f} s measured, "
          f"max frame lateness {unit.max_lag_seconds() * 1000:.1f} ms, "
          f"mean sampled lag {1000 * sum(samples) / max(1, len(samples)):.1f} ms, "
          f"+A {total[0].a_plus} µWh vs P·t {expected:.0f} µWh, restarts {unit.restarts}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    meter = sub.add_parser("meter")
    meter.add_argument("--host", default="127.0.0.1")
    meter.add_argument("--port", type=int, default=4059)
    meter.add_argument("--phases", type=int, default=3, choices=(1, 3))
    sensor = sub.add_parser("sensor")
    sensor.add_argument("--meter", default="127.0.0.1:4059")
    sensor.add_argument("--phases", type=int, default=3, choices=(1, 3))
    sensor.add_argument("--current", type=float, default=5.0)
    sensor.add_argument("--angle", type=float, default=30.0)
    lag = sub.add_parser("lag")
    lag.add_argument("--seconds", type=float, default=10.0)
    lag.add_argument("--neighbour", default="python", choices=("none", "python", "gil", "numpy"))
    lag.add_argument("--threads", type=int, default=1)
    lag.add_argument("--switch-interval", type=float, default=None,
                     help="sys.setswitchinterval for the run, seconds (CPython default 0.005)")
    args = parser.parse_args(argv)
    {"meter": run_meter, "sensor": run_sensor, "lag": run_lag}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

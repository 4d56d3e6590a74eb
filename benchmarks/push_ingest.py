"""Push ingest benchmark: pushes per second a worker's ingester takes off JetStream, decodes and
stores in the fleet store as raw_push rows plus series and readings, against storing the same
pushes raw only (no push object list fits: each is decrypted, found unmapped and kept raw).

Private PostgreSQL and NATS servers are started for the run (tests/services.py). `--meters`
meters (own system title and keys, imported into the store) each publish `--pushes` Interval 1
pushes with the contents of the model's push object list (clock, +A, −A, +R, −R, the eight rate
registers, the load profile status: 14 values, 13 of them integers), protected as the meter
protects them, as `hes listen --nats` publishes them. Then one `PushIngester` (batches of 500,
as `hes worker` runs it) stores them all; the figure is pushes stored per second of wall time
and the ingesting process's CPU seconds (PostgreSQL's and NATS's own CPU not included).

    .venv/bin/python benchmarks/push_ingest.py [--meters N] [--pushes N] [--json]
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import secrets
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import services  # noqa: E402  (private PostgreSQL and NATS)

from smartmeter.cosem import axdr  # noqa: E402
from smartmeter.cosem.data import CosemDateTime, Data  # noqa: E402
from smartmeter.dlms.apdu.ciphered import GeneralGloCiphering  # noqa: E402
from smartmeter.dlms.apdu.notification import DataNotification  # noqa: E402
from smartmeter.dlms.security.suites import SecurityControl  # noqa: E402
from smartmeter.hes.fleet.broker import Broker  # noqa: E402
from smartmeter.hes.fleet.pushes import PushIngester  # noqa: E402
from smartmeter.hes.push_listener import ObjectLists, model_object_lists  # noqa: E402
from smartmeter.hes.store.pg import FleetStore, KeyVault, MeterRecord  # noqa: E402

START = dt.datetime(2026, 3, 10, tzinfo=dt.timezone.utc)


def interval_push(title: bytes, ek: bytes, ak: bytes, counter: int, k: int, suite: int = 1) -> bytes:
    when = START + dt.timedelta(minutes=15 * k)
    values = [Data.octet_string(axdr.encode_date_time(CosemDateTime.from_datetime(when)))]
    values += [Data.double_long_unsigned(1000 * k + i) for i in range(12)]
    values.append(Data.unsigned(0))
    plain = DataNotification(counter, b"", Data.structure(values)).to_bytes()
    return GeneralGloCiphering.protect(SecurityControl(suite, True, True), ek, ak, title, counter, plain).to_bytes()


async def one_run(pg, nats, meters: int, per_meter: int, decode: bool) -> dict:
    dsn = services.create_database(pg)
    services.delete_all_streams(nats.url)
    store = await FleetStore.open(dsn, KeyVault(bytes(32)), migrate=True, max_size=4)
    broker = await Broker.connect(nats.url)
    try:
        await broker.ensure_streams()
        fleet = [(f"P{i:05d}", (0x5055534800000000 + i).to_bytes(8, "big"), secrets.token_bytes(16),
                  secrets.token_bytes(16)) for i in range(meters)]
        await store.add_meters([MeterRecord(serial, title, "127.0.0.1", 9, suite=1, keys={"ek": ek, "ak": ak})
                                for serial, title, ek, ak in fleet])
        pushes = [(title.hex().upper(), k, interval_push(title, ek, ak, k, k))
                  for k in range(1, per_meter + 1) for _, title, ek, ak in fleet]
        for start in range(0, len(pushes), 500):
            await asyncio.gather(*(broker.publish_push(t, c, apdu, time.time(), "bench")
                                   for t, c, apdu in pushes[start:start + 500]))
        lists = ObjectLists(None, None, model_object_lists() if decode else ())
        ingester = PushIngester(store, broker, object_lists=lists)
        stop = asyncio.Event()
        cpu, wall = time.process_time(), time.monotonic()
        task = asyncio.create_task(ingester.run(stop))
        while ingester.counts["stored"] + ingester.counts["duplicate"] < len(pushes):
            if task.done():
                raise RuntimeError(f"the ingester stopped: {task.exception()}")
            await asyncio.sleep(0.01)
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        stop.set()
        await task
        readings = await store.pool.fetchval("SELECT count(*) FROM reading")
        return {"pushes": len(pushes), "stored": ingester.counts["stored"], "undecoded": ingester.counts["undecoded"],
                "readings": readings, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                "pushes_per_s": round(len(pushes) / wall, 1), "pushes_per_cpu_s": round(len(pushes) / cpu, 1)}
    finally:
        await broker.close()
        await store.close()
        services.drop_database(pg, dsn.rsplit("/", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=500)
    parser.add_argument("--pushes", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    pg, nats = services.start_postgres(), services.start_nats()
    try:
        decoded = asyncio.run(one_run(pg, nats, args.meters, args.pushes, decode=True))
        raw_only = asyncio.run(one_run(pg, nats, args.meters, args.pushes, decode=False))
    finally:
        nats.close()
        pg.close()
    result = {"decoded": decoded, "raw_only": raw_only, "cpus": os.cpu_count(), "python": platform.python_version()}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{decoded['pushes']} pushes ({args.meters} meters x {args.pushes}), 14 values each, one ingester, "
          f"batches of 500, {os.cpu_count()} CPUs")
    for name, r in (("decoded into readings", decoded), ("raw only (unmapped)", raw_only)):
        print(f"  {name:24} {r['pushes_per_s']:>9,.0f} pushes/s  {r['pushes_per_cpu_s']:>9,.0f} pushes/CPU s  "
              f"readings {r['readings']:,}  undecoded {r['undecoded']:,}")


if __name__ == "__main__":
    main()

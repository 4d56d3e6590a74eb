"""Pushes into readings in the fleet store: an in-process meter's pushes, published to JetStream
as `hes listen --nats` publishes them, are decoded by the worker's ingester and stored once as
series and integer readings (scaler and unit where the push carries them, quality 0, the
listener's receive time) in the same transaction as their raw_push row; values that are no
integer go to reading_data; a push that does not decode is kept raw with its reason and
counted; a push delivered twice, and a worker that dies inside the transaction, store nothing
twice and lose nothing."""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets


from interval_pushes import CLOCK, INTERVAL, LISTS, START, interval_push, meter  # noqa: F401 (meter: the fixture)
from smartmeter.cosem import axdr
from smartmeter.cosem.data import CosemDateTime, Data
from smartmeter.dlms.apdu.ciphered import GeneralGloCiphering
from smartmeter.dlms.apdu.notification import DataNotification
from smartmeter.dlms.security.suites import SecurityControl
from smartmeter.hes.fleet.broker import PUSH_SUBJECT, RECEIVED_HEADER, SOURCE_HEADER, Broker
from smartmeter.hes.fleet.pushes import PushIngester, push_key_id
from smartmeter.hes.push_listener import Keyring, ObjectLists, model_object_lists
from smartmeter.hes.store.pg import FleetStore, KeyVault, MeterRecord

KEK = bytes(range(32))




def counter_of(apdu: bytes) -> int:
    return GeneralGloCiphering.from_bytes(apdu).invocation_counter


def utc(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc)



async def open_store(dsn: str, meter) -> FleetStore:
    store = await FleetStore.open(dsn, KeyVault(KEK), migrate=True)
    keys = Keyring.load([meter.config.data_dir / "credentials"]).get(meter.identity.system_title)
    await store.add_meters([MeterRecord("KFM1", meter.identity.system_title, "127.0.0.1", 4059, suite=keys.suite,
                                        keys={"ek": keys.ek, "ak": keys.ak})])
    return store


async def publish(broker: Broker, apdu: bytes, received: float, message_id: str | None = None) -> None:
    """As a listener publishes an authentic push (NatsPushGate); `message_id` other than the
    listener's makes JetStream keep a second copy (a replay after its duplicate window)."""
    ciphered = GeneralGloCiphering.from_bytes(apdu)
    title = ciphered.system_title.hex().upper()
    await broker.publish(f"{PUSH_SUBJECT}.{title}", apdu, message_id or f"{title}:{ciphered.invocation_counter}",
                         headers={RECEIVED_HEADER: f"{received:.6f}", SOURCE_HEADER: "test 10.1.1.1:4059"})


async def ingest_until(ingester: PushIngester, done, timeout: float = 60.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(ingester.run(stop))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            assert loop.time() < deadline, dict(ingester.counts)
            assert not task.done(), task
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


READINGS = """SELECT s.obis, s.attribute, s.scaler, s.unit, s.class_id, r.time, r.raw, r.quality, r.received
              FROM reading r JOIN series s ON s.id = r.series_id JOIN meter m ON m.id = s.meter_id
              WHERE m.serial = 'KFM1' ORDER BY s.obis, s.attribute, r.time"""
DATA = """SELECT s.obis, s.attribute, r.time, r.data, r.received FROM reading_data r JOIN series s ON s.id = r.series_id
          ORDER BY s.obis, s.attribute, r.time"""


def expected_readings(pushes: list[tuple[float, int, int, int, int, float]]) -> list[tuple]:
    """The reading rows of interval pushes (t, import, reactive, scaler, unit, received): the
    reactive register's series has the last scaler_unit pushed; the energy register's is not
    known (0, 255)."""
    last = max(pushes)
    rows = [("1-0:1.8.0.255", 2, 0, 255, 3, utc(t), wh, 0, utc(rx)) for t, wh, _, _, _, rx in pushes]
    rows += [("1-0:3.8.0.255", 2, last[3], last[4], 3, utc(t), var, 0, utc(rx)) for t, _, var, _, _, rx in pushes]
    return sorted(rows, key=lambda r: (r[0], r[1], r[5]))


def test_pushes_become_readings_once_and_undecodable_ones_are_kept_raw(meter, pg_dsn, nats_url):
    async def scenario():
        store = await open_store(pg_dsn, meter)
        broker = await Broker.connect(nats_url)
        await broker.ensure_streams()
        try:
            pushes, apdus = [], []
            for k in range(1, 4):
                t = START + 900 * k
                pushes.append((t, 1000 + 11 * k, 40 * k, -k, 29 + k, t + 1.5))
                apdus.append(interval_push(meter, t, *pushes[-1][1:5]))
                await publish(broker, apdus[-1], t + 1.5)
            # the second push again, after JetStream's duplicate window: the store has it already
            await publish(broker, apdus[1], START + 9999, message_id="replay:" + apdus[1][2:10].hex().upper() + ":"
                          + str(GeneralGloCiphering.from_bytes(apdus[1]).invocation_counter))
            unmapped = meter.server.protected_notification("data_readout", Data.structure([Data.unsigned(7)]))
            await publish(broker, unmapped, START + 5000)
            forged = bytearray(interval_push(meter, START + 5400, 1, 2, 0, 30))
            forged[-1] ^= 1
            await publish(broker, bytes(forged), START + 5401)
            stranger = GeneralGloCiphering.protect(
                SecurityControl(0, True, True), secrets.token_bytes(16), secrets.token_bytes(16),
                b"XYZ\x00\x00\x00\x00\x09", 77,
                DataNotification(77, b"", Data.structure([Data.unsigned(1)])).to_bytes()).to_bytes()
            await publish(broker, stranger, START + 5500)
            # a meter clock twenty years behind: the push is kept raw, its values make no partition
            stale_t = START - 20 * 365.25 * 86400
            stale = interval_push(meter, stale_t, 5, 6, 0, 30)
            await publish(broker, stale, START + 6000)

            ingester = PushIngester(store, broker, batch=3, object_lists=ObjectLists(None, LISTS, model_object_lists()))
            await ingest_until(ingester, lambda: ingester.counts["stored"] + ingester.counts["duplicate"] >= 8)
            assert dict(ingester.counts) == {"stored": 7, "duplicate": 1, "undecoded": 4,
                                             "values": 3 * 2 + 3 * 3}  # per push 2 integers, 3 other values

            async with store.pool.acquire() as conn:
                rows = [tuple(r) for r in await conn.fetch(READINGS)]
                assert rows == expected_readings(pushes)
                data = [(r["obis"], r["attribute"], r["time"], json.loads(r["data"]), r["received"])
                        for r in await conn.fetch(DATA)]
                expected = [(CLOCK, 2, utc(t), utc(t).isoformat(), utc(rx)) for t, *_, rx in pushes]
                expected += [("0-0:96.1.0.255", 2, utc(t), b"KFM1".hex(), utc(rx)) for t, *_, rx in pushes]
                expected += [("1-0:3.8.0.255", 3, utc(t), [sc, u], utc(rx)) for t, _, _, sc, u, rx in pushes]
                assert data == expected
                raw = {(r["invocation_counter"], r["undecoded"] is None): (bytes(r["apdu"]), r["received"])
                       for r in await conn.fetch("SELECT * FROM raw_push")}
                counters = [GeneralGloCiphering.from_bytes(a).invocation_counter for a in apdus]
                assert {c: v for (c, ok), v in raw.items() if ok} == {
                    c: (a, utc(p[5])) for c, a, p in zip(counters, apdus, pushes)}
                reasons = {r["invocation_counter"]: r["undecoded"] for r in await conn.fetch(
                    "SELECT invocation_counter, undecoded FROM raw_push WHERE undecoded IS NOT NULL")}
                assert len(reasons) == 4
                assert "years from when it was received" in reasons[counter_of(stale)]
                months = await conn.fetchval(
                    "SELECT count(*) FROM pg_class WHERE relname LIKE 'reading_y%' AND relkind = 'r'")
                assert months == 1  # March 2026 only
                assert "fit no known push object list" in reasons[counter_of(unmapped)]
                assert "authentication tag" in reasons[counter_of(bytes(forged))]
                assert "no keys" in reasons[77]
        finally:
            await broker.close()
            await store.close()

    asyncio.run(scenario())


STALL = """
CREATE TABLE test_stall (on_ boolean);
CREATE FUNCTION test_stall() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM test_stall) THEN PERFORM pg_sleep(60); END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER test_stall BEFORE INSERT ON reading_data FOR EACH STATEMENT EXECUTE FUNCTION test_stall();
INSERT INTO test_stall VALUES (true);
"""


def test_a_worker_that_dies_inside_the_transaction_stores_nothing_then_everything_once(meter, pg_dsn, nats_url):
    async def scenario():
        store = await open_store(pg_dsn, meter)
        broker = await Broker.connect(nats_url)
        await broker.ensure_streams()
        # the test's own hold on the store: the last statement of the push transaction waits
        # while this table has a row, so the worker can be killed inside it
        await store.pool.execute(STALL)
        try:
            pushes = []
            for k in range(1, 6):
                t = START + 86400 + 900 * k
                pushes.append((t, 5000 + k, 7 * k, -2, 32, t + 0.25))
                await publish(broker, interval_push(meter, t, *pushes[-1][1:5]), t + 0.25)
            lists = ObjectLists(None, LISTS, model_object_lists())
            doomed = PushIngester(store, broker, batch=100, ack_wait=2.0, object_lists=lists)
            stop = asyncio.Event()
            task = asyncio.create_task(doomed.run(stop))
            while not await store.pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                                                "AND datname = current_database()"):
                assert not task.done(), task
                await asyncio.sleep(0.05)
            # the worker dies: its task ends where it is, its connections are cut
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await store.pool.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                     "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            await store.close()
            store = await FleetStore.open(pg_dsn, KeyVault(KEK))
            assert await store.pool.fetchval("SELECT count(*) FROM raw_push") == 0
            assert await store.pool.fetchval("SELECT count(*) FROM reading") == 0
            await store.pool.execute("DELETE FROM test_stall")

            survivor = PushIngester(store, broker, batch=100, ack_wait=2.0, object_lists=lists)
            await ingest_until(survivor, lambda: survivor.counts["stored"] >= len(pushes))
            assert survivor.counts["stored"] == len(pushes) and not survivor.counts["undecoded"]
            rows = [tuple(r) for r in await store.pool.fetch(READINGS)]
            assert rows == expected_readings(pushes)
            assert await store.pool.fetchval("SELECT count(*) FROM reading_data") == 3 * len(pushes)
            assert await store.pool.fetchval("SELECT count(*) FROM raw_push WHERE undecoded IS NULL") == len(pushes)
        finally:
            await broker.close()
            await store.close()

    asyncio.run(scenario())


def test_hes_export_writes_the_same_csv_from_the_sqlite_file_as_from_the_fleet_store(meter, pg_dsn, nats_url, tmp_path):
    import csv
    from decimal import Decimal

    from click.testing import CliRunner

    from smartmeter.cli.main import main
    from smartmeter.hes.push_listener import PushReceiver
    from smartmeter.hes.push_store import PushStore
    from smartmeter.transport.wrapper import WrapperFrame

    pushes, apdus = [], []
    for k in range(1, 5):
        t = START + 2 * 86400 + 900 * k
        pushes.append((t, 900 + 13 * k, 3 * k + 1, -k, 29 + k, t + 0.5))
        apdus.append(interval_push(meter, t, *pushes[-1][1:5]))
    # the SQLite listener takes them
    sqlite_path = tmp_path / "pushes.sqlite"
    store = PushStore(sqlite_path)
    received = [0.0]
    receiver = PushReceiver(Keyring.load([meter.config.data_dir / "credentials"]), store, ObjectLists(store, LISTS),
                            clock=lambda: received[0])
    for p, apdu in zip(pushes, apdus):
        received[0] = p[5]
        assert receiver.datagram(WrapperFrame(1, 2, apdu).to_bytes(), ("10.1.1.1", 4059)) == "stored"
    store.close()

    async def to_the_fleet_store():  # and the listeners on NATS with the workers
        fleet = await open_store(pg_dsn, meter)
        broker = await Broker.connect(nats_url)
        await broker.ensure_streams()
        try:
            for p, apdu in zip(pushes, apdus):
                await publish(broker, apdu, p[5])
            ingester = PushIngester(fleet, broker, object_lists=ObjectLists(None, LISTS))
            await ingest_until(ingester, lambda: ingester.counts["stored"] >= len(pushes))
        finally:
            await broker.close()
            await fleet.close()

    asyncio.run(to_the_fleet_store())
    span = ["--from", utc(pushes[0][0]).isoformat(), "--to", utc(pushes[-1][0]).isoformat()]  # the last left out
    outputs = []
    for db in (str(sqlite_path), pg_dsn):
        out = tmp_path / f"export-{len(outputs)}.csv"
        result = CliRunner().invoke(main, ["hes", "export", "--db", db, "--format", "csv", "--out", str(out), *span],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"{2 * (len(pushes) - 1)} rows of 1 meters"), result.output
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1]
    rows = list(csv.DictReader(outputs[0].splitlines()))
    last_scaler = pushes[-1][3]  # the series' scaler_unit is the last one pushed (the fourth, outside the span)
    assert {(r["meter"], r["obis"], r["time"], r["value"]) for r in rows} == (
        {("KFM1", "1-0:1.8.0.255", utc(t).strftime("%Y-%m-%dT%H:%M:%SZ"), str(wh)) for t, wh, *_ in pushes[:-1]}
        | {("KFM1", "1-0:3.8.0.255", utc(t).strftime("%Y-%m-%dT%H:%M:%SZ"),
            format(Decimal(var).scaleb(last_scaler), "f")) for t, _, var, *_ in pushes[:-1]})


def test_hes_worker_decodes_pushes_with_the_lists_of_its_objects_file(tmp_path, pg_dsn, nats_url):
    """Pushes of meters whose push setup is not the model's: `hes worker --objects FILE` decodes
    them into readings (the model's lists alone would keep them raw)."""
    import time

    from fleet_support import HeadEnd

    h = HeadEnd(tmp_path, pg_dsn, nats_url)
    try:
        meters = [{"serial": f"OBJ{i}", "system_title": f"{0x4F424A0000000000 + i:016X}", "host": "127.0.0.1",
                   "port": 9, "ek": secrets.token_hex(16), "ak": secrets.token_hex(16)} for i in range(3)]
        (tmp_path / "fleet.json").write_text(json.dumps({"meters": meters}))
        h.import_fleet()
        objects = tmp_path / "objects.toml"
        objects.write_text(f'"{INTERVAL}" = [[8, "{CLOCK}", 2, 0], [3, "1-0:1.8.0.255", 2, 0]]\n')
        h.start_worker("--objects", str(objects), "--concurrency", "1")
        expected = set()

        async def send() -> None:
            broker = await Broker.connect(nats_url)
            try:
                await broker.ensure_streams()
                for i, m in enumerate(meters):
                    title, ek, ak = bytes.fromhex(m["system_title"]), bytes.fromhex(m["ek"]), bytes.fromhex(m["ak"])
                    for k in range(1, 4):
                        t = START + 900 * k
                        wh = 100 * i + k
                        when = axdr.encode_date_time(CosemDateTime.from_datetime(utc(t)))
                        body = Data.structure([Data.octet_string(when), Data.double_long_unsigned(wh)])
                        plain = DataNotification(k, b"", body).to_bytes()
                        # suite 0: the fleet file's meters have the default suite
                        apdu = GeneralGloCiphering.protect(SecurityControl(0, True, True), ek, ak, title, k,
                                                           plain).to_bytes()
                        await publish(broker, apdu, t + 1)
                        expected.add((m["serial"], utc(t), wh))
            finally:
                await broker.close()

        asyncio.run(send())
        query = """SELECT m.serial, r.time, r.raw FROM reading r JOIN series s ON s.id = r.series_id
                   JOIN meter m ON m.id = s.meter_id WHERE s.obis = '1-0:1.8.0.255' AND s.attribute = 2"""
        deadline = time.monotonic() + 60
        while len(h.query(query)) < len(expected):
            assert time.monotonic() < deadline, h.log("worker")
            assert h.workers[0].poll() is None, h.log("worker")
            time.sleep(0.2)
        assert {(r["serial"], r["time"], r["raw"]) for r in h.query(query)} == expected
        assert h.query("SELECT count(*) AS n FROM raw_push WHERE undecoded IS NOT NULL")[0]["n"] == 0
    finally:
        h.close()


def test_pushes_of_a_meter_imported_later_and_across_a_key_change_are_decoded(pg_dsn, nats_url):
    """The ingester reads a meter's keys again when none it knows fits: a meter imported after
    it started, and a change of the EK alone (the push made before the change, arriving after
    it, still decodes with the EXPIRED generation; the one after with the new EK and the AK kept,
    its counter started again at 1 and stored beside the old key's counter 1)."""
    lists = ObjectLists(None, {INTERVAL: [(8, CLOCK, 2, 0), (3, "1-0:1.8.0.255", 2, 0)]})
    keys = {name: (secrets.token_bytes(16), secrets.token_bytes(16)) for name in ("A", "B")}
    titles = {"A": bytes.fromhex("4B45590000000001"), "B": bytes.fromhex("4B45590000000002")}
    new_ek = secrets.token_bytes(16)

    def push(name: str, counter: int, ek: bytes, ak: bytes, wh: int, slot: int | None = None) -> bytes:
        when = axdr.encode_date_time(CosemDateTime.from_datetime(utc(START + 900 * (slot or counter))))
        plain = DataNotification(counter, b"", Data.structure([Data.octet_string(when),
                                                               Data.double_long_unsigned(wh)])).to_bytes()
        return GeneralGloCiphering.protect(SecurityControl(0, True, True), ek, ak, titles[name], counter,
                                           plain).to_bytes()

    async def scenario():
        store = await FleetStore.open(pg_dsn, KeyVault(KEK), migrate=True)
        broker = await Broker.connect(nats_url)
        await broker.ensure_streams()

        async def add(name: str) -> None:
            await store.add_meters([MeterRecord(name, titles[name], "127.0.0.1", 9,
                                                keys={"ek": keys[name][0], "ak": keys[name][1]})])

        ingester = PushIngester(store, broker, batch=10, object_lists=lists)
        stop = asyncio.Event()
        task = asyncio.create_task(ingester.run(stop))

        async def stored(n: int) -> None:
            deadline = asyncio.get_running_loop().time() + 60
            while ingester.counts["stored"] < n:
                assert asyncio.get_running_loop().time() < deadline and not task.done(), dict(ingester.counts)
                await asyncio.sleep(0.05)

        try:
            await add("A")
            await publish(broker, push("A", 1, *keys["A"], 101), START + 1)
            await stored(1)  # the ingester has read the keys: A's only
            await add("B")
            await publish(broker, push("B", 1, *keys["B"], 201), START + 2)
            await stored(2)
            meter_a = (await store.meter_ids(serials=["A"]))[0][0]
            grant = await store.begin_session(meter_a, "test", 30.0, 10)
            generation, _ = await store.new_keys(grant, {"ek": new_ek}, 10)
            assert await store.promote_keys(grant, generation, None)
            await store.release(grant)
            # the meter starts its counter again under the new key: counter 1 is a new push
            title_a = titles["A"].hex().upper()
            await publish(broker, push("A", 1, new_ek, keys["A"][1], 103, slot=3), START + 3,
                          f"{title_a}:{push_key_id(new_ek)}:1")
            await publish(broker, push("A", 2, *keys["A"], 102), START + 4)  # made before the change
            await stored(4)
            assert ingester.counts["duplicate"] == 0
            ids = {(r["invocation_counter"], r["key_id"]) for r in await store.pool.fetch(
                "SELECT invocation_counter, key_id FROM raw_push WHERE system_title = $1", titles["A"])}
            assert ids == {(1, push_key_id(keys["A"][0])), (2, push_key_id(keys["A"][0])), (1, push_key_id(new_ek))}
            assert not ingester.counts["undecoded"]
            rows = await store.pool.fetch("""SELECT m.serial, r.raw FROM reading r JOIN series s ON s.id = r.series_id
                                             JOIN meter m ON m.id = s.meter_id ORDER BY m.serial, r.time""")
            assert [(r["serial"], r["raw"]) for r in rows] == [("A", 101), ("A", 102), ("A", 103), ("B", 201)]
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await broker.close()
            await store.close()

    asyncio.run(scenario())

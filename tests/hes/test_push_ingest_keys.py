"""The push ingester reads the keys of the meters whose pushes it takes, not the fleet's: a
worker's first batch unwraps the keys of that batch's meters only (reading and unwrapping every
meter's keys at once stopped the event loop for seconds on a large fleet), and it holds the keys
of at most KEY_CACHE meters, reading a forgotten meter's keys again when it pushes. The keys
are the store's push keys: an EXPIRED one only for its grace."""
from __future__ import annotations

import asyncio
import datetime as dt
import secrets

from interval_pushes import CLOCK, INTERVAL, START
from smartmeter.cosem import axdr
from smartmeter.cosem.data import CosemDateTime, Data
from smartmeter.dlms.apdu.ciphered import GeneralGloCiphering
from smartmeter.dlms.apdu.notification import DataNotification
from smartmeter.dlms.security.suites import SecurityControl
from smartmeter.hes.fleet import pushes
from smartmeter.hes.fleet.broker import PUSH_SUBJECT, RECEIVED_HEADER, SOURCE_HEADER, Broker
from smartmeter.hes.fleet.pushes import PushIngester, push_key_id
from smartmeter.hes.push_listener import ObjectLists
from smartmeter.hes.store.pg import FleetStore, KeyVault, MeterRecord

KEK = bytes(range(32))
METERS = 300
LISTS = ObjectLists(None, {INTERVAL: [(8, CLOCK, 2, 0), (3, "1-0:1.8.0.255", 2, 0)]})


class CountingVault(KeyVault):
    """The store's vault, counting the keys it unwraps."""

    unwrapped = 0

    def unwrap(self, wrapped: bytes) -> bytes:
        CountingVault.unwrapped += 1
        return super().unwrap(wrapped)


def title(m: int) -> bytes:
    return bytes.fromhex(f"4B45590000{m:06X}")


def push(keys: tuple[bytes, bytes], m: int, counter: int) -> bytes:
    """Meter m's push with invocation counter `counter`, of slot `counter`, reading 1000 m + counter."""
    when = axdr.encode_date_time(CosemDateTime.from_datetime(dt.datetime.fromtimestamp(START + 900 * counter,
                                                                                       dt.timezone.utc)))
    plain = DataNotification(counter, b"", Data.structure([Data.octet_string(when),
                                                           Data.double_long_unsigned(1000 * m + counter)])).to_bytes()
    return GeneralGloCiphering.protect(SecurityControl(0, True, True), *keys, title(m), counter, plain).to_bytes()


def test_the_ingester_reads_the_keys_of_its_pushes_meters_only_and_holds_a_bounded_number(pg_dsn, nats_url,
                                                                                            monkeypatch):
    keys = {m: (secrets.token_bytes(16), secrets.token_bytes(16)) for m in range(METERS)}

    async def scenario():
        store = await FleetStore.open(pg_dsn, CountingVault(KEK), migrate=True)
        broker = await Broker.connect(nats_url)
        await broker.ensure_streams()
        await store.add_meters([MeterRecord(f"K{m}", title(m), "127.0.0.1", 9, keys={"ek": ek, "ak": ak})
                                for m, (ek, ak) in keys.items()])
        ingester = PushIngester(store, broker, batch=10, object_lists=LISTS)
        stop = asyncio.Event()
        task = asyncio.create_task(ingester.run(stop))

        sent = []

        async def send(meters, counter: int) -> None:
            for m in meters:
                t = title(m).hex().upper()
                await broker.publish(f"{PUSH_SUBJECT}.{t}", push(keys[m], m, counter),
                                     f"{t}:{push_key_id(keys[m][0])}:{counter}",
                                     headers={RECEIVED_HEADER: f"{START + 900 * counter + 5:.6f}",
                                              SOURCE_HEADER: "test"})
                sent.append((f"K{m}", 1000 * m + counter))
            deadline = asyncio.get_running_loop().time() + 60
            while ingester.counts["stored"] < len(sent):
                assert asyncio.get_running_loop().time() < deadline and not task.done(), dict(ingester.counts)
                await asyncio.sleep(0.05)

        try:
            CountingVault.unwrapped = 0
            await send(range(6), 1)
            # the EK and AK of the six meters that pushed, not the fleet's
            assert CountingVault.unwrapped == 6 * 2
            await send(range(6), 2)  # their next pushes: their keys are held
            assert CountingVault.unwrapped == 6 * 2
            monkeypatch.setattr(pushes, "KEY_CACHE", 4)
            await send(range(100, 110), 1)
            await send(range(100, 110), 2)  # the meters forgotten are read again
            assert len(ingester._keys) <= 4
            assert not ingester.counts["undecoded"], dict(ingester.counts)
            rows = await store.pool.fetch("""SELECT m.serial, r.raw FROM reading r JOIN series s ON s.id = r.series_id
                                             JOIN meter m ON m.id = s.meter_id""")
            assert sorted((r["serial"], r["raw"]) for r in rows) == sorted(sent)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await broker.close()
            await store.close()

    asyncio.run(scenario())


def test_pushes_under_keys_expired_longer_ago_than_the_grace_are_kept_undecoded(pg_dsn):
    """A push made before a key change and still on its way decodes under the EXPIRED key; past
    the store's grace for pushes (a day) that key is no longer tried."""
    old, new = (secrets.token_bytes(16), secrets.token_bytes(16)), (secrets.token_bytes(16), secrets.token_bytes(16))

    async def scenario():
        store = await FleetStore.open(pg_dsn, KeyVault(KEK), migrate=True)
        try:
            await store.add_meters([MeterRecord("K0", title(0), "127.0.0.1", 9, keys={"ek": old[0], "ak": old[1]})])
            (meter_id, _, _), = await store.meter_ids()
            grant = await store.begin_session(meter_id, "test", 30.0, 8)
            generation, _ = await store.new_keys(grant, {"ek": new[0], "ak": new[1]}, 8)
            assert await store.promote_keys(grant, generation, None)
            await store.release(grant)
            received = dt.datetime.fromtimestamp(START + 900 * 3, dt.timezone.utc)
            on_its_way = await PushIngester(store, None, object_lists=LISTS).decode(
                title(0), 2, received, "test", push(old, 0, 2))
            await store.pool.execute("UPDATE meter_key SET changed = now() - interval '25 hours' "
                                     "WHERE state = 'EXPIRED'")
            ingester = PushIngester(store, None, object_lists=LISTS)
            late = await ingester.decode(title(0), 3, received, "test", push(old, 0, 3))
            current = await ingester.decode(title(0), 1, received, "test", push(new, 0, 1))
            return on_its_way, late, current
        finally:
            await store.close()

    on_its_way, late, current = asyncio.run(scenario())
    assert on_its_way.undecoded is None and on_its_way.key_id == push_key_id(old[0])
    assert late.undecoded == "its authentication tag fits none of its meter's keys in the store" and not late.key_id
    assert current.undecoded is None and current.key_id == push_key_id(new[0])


def test_keys_held_by_an_ingester_are_read_again_after_keys_fresh(pg_dsn):
    """An ingester that read the meter's keys before a key change goes on decoding under them
    (a push on its way) until KEYS_FRESH has passed since; then it reads the store's push keys
    again, and keys past their grace no longer decode."""
    old, new = (secrets.token_bytes(16), secrets.token_bytes(16)), (secrets.token_bytes(16), secrets.token_bytes(16))
    clock = [1000.0]

    async def scenario():
        store = await FleetStore.open(pg_dsn, KeyVault(KEK), migrate=True)
        try:
            await store.add_meters([MeterRecord("K0", title(0), "127.0.0.1", 9, keys={"ek": old[0], "ak": old[1]})])
            (meter_id, _, _), = await store.meter_ids()
            ingester = PushIngester(store, None, object_lists=LISTS, monotonic=lambda: clock[0])
            received = dt.datetime.fromtimestamp(START + 900 * 3, dt.timezone.utc)
            before = await ingester.decode(title(0), 1, received, "test", push(old, 0, 1))
            grant = await store.begin_session(meter_id, "test", 30.0, 8)
            generation, _ = await store.new_keys(grant, {"ek": new[0], "ak": new[1]}, 8)
            assert await store.promote_keys(grant, generation, None)
            await store.release(grant)
            await store.pool.execute("UPDATE meter_key SET changed = now() - interval '25 hours' "
                                     "WHERE state = 'EXPIRED'")
            clock[0] += pushes.KEYS_FRESH - 1
            held = await ingester.decode(title(0), 2, received, "test", push(old, 0, 2))
            clock[0] += 2
            read_again = await ingester.decode(title(0), 3, received, "test", push(old, 0, 3))
            current = await ingester.decode(title(0), 1, received, "test", push(new, 0, 1))
            return before, held, read_again, current
        finally:
            await store.close()

    before, held, read_again, current = asyncio.run(scenario())
    assert before.undecoded is None and held.undecoded is None  # the keys held, read less than KEYS_FRESH ago
    assert read_again.undecoded == "its authentication tag fits none of its meter's keys in the store"
    assert current.undecoded is None and current.key_id == push_key_id(new[0])

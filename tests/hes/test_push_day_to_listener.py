"""A simulated day of interval pushes from an in-process meter to the head-end's listener, over
real loopback sockets (issue 12: "an interval push every 15 minutes for a simulated day arrives
complete at a listener").

The meter runs on a clock the test moves (MeterSite) with its real PushSender on the test's event
loop (the sender's time is the meter clock); the listener is the real one (`serve_tcp` /
`serve_udp`, a temporary SQLite store, the meter's credentials directory as its keys, the model's
push object lists as `hes listen` has them). Interval 1 is configured as the head-end does it: the
Management client writes the destination, no retries, no randomisation, and the push action
scheduler's execution times every 15 minutes (the times `smartmeter client push-schedule --every
15m` writes). A load is set; the clock moves through a day in 5-minute ticks, the loop running
between ticks so each push is delivered before the clock moves on.

Expected: the 96 quarter hours of the day and the +A each of them held: read from the legal part
at that instant, and the load times the time elapsed (P × 15 min a quarter hour)."""
from __future__ import annotations

import asyncio
import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from meter_sessions import SUCCESS, Sessions
from meter_site import MeterSite
from push_support import SETUPS
from smartmeter.cli.push import every_times, execution_time_value
from smartmeter.cosem.data import Data
from smartmeter.hes.push_listener import Keyring, ObjectLists, PushReceiver, model_object_lists, serve_tcp, serve_udp
from smartmeter.hes.push_store import PushStore, format_time
from smartmeter.meter.push_sender import TCP, UDP, PushSender

START = dt.datetime(2026, 6, 9, 0, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()  # local midnight
DAY, QUARTER, TICK = 86400, 900, 300  # s; the tick divides the quarter hour: every instant is a tick's end
QUARTER_HOURS = [START + QUARTER * k for k in range(1, DAY // QUARTER + 1)]
LOAD_W = 2000
WH_PER_QUARTER = LOAD_W * QUARTER // 3600  # 500 Wh
INTERVAL_1 = SETUPS[1]
SCHEDULER_1 = "0-1:15.0.4.255"
A_PLUS = "1-0:1.8.0.255"
# IC 40 v0 attributes the head-end writes
DESTINATION, RANDOMISATION, RETRIES = 3, 5, 6
EXECUTION_TIME = 4  # IC 22
DELIVERY_GUARD_S = 10.0  # real seconds a push may take to reach the listener before the test moves on


async def delivered(sender: PushSender, receiver: PushReceiver) -> None:
    """Let the loop run until the sender has ended its pushes and the listener has handled a
    message for each attempt (a guard bounds the wait: a lost push shows in the assertions)."""
    def settled() -> bool:
        return sender.stats()["pending"] == 0 and sum(receiver.counts.values()) >= sender.stats()["attempts"]

    try:
        async with asyncio.timeout(DELIVERY_GUARD_S):
            while not settled():
                await asyncio.sleep(0.001)
    except TimeoutError:
        pass


@pytest.mark.parametrize("transport, host", [(TCP, "127.0.0.1"), (UDP, "::1")], ids=["tcp-ipv4", "udp-ipv6"])
def test_a_day_of_quarter_hour_pushes_arrives_complete_at_the_listener(tmp_path, transport, host):
    site = MeterSite(tmp_path / "meter", START)
    store = PushStore(tmp_path / "pushes.sqlite", deferred=True)
    receiver = PushReceiver(Keyring.load([site.data_dir / "credentials"]), store,
                            ObjectLists(store, None, model_object_lists()))
    held: dict[float, int] = {}  # +A the legal part held at each quarter hour

    async def day() -> dict:
        if transport == TCP:
            server = await serve_tcp(receiver, host, 0)
            port, close = server.sockets[0].getsockname()[1], server.close
        else:
            endpoint = await serve_udp(receiver, host, 0)
            port, close = endpoint.get_extra_info("sockname")[1], endpoint.close
        sender = PushSender(asyncio.get_running_loop(), now=site.meter.clock.now)
        site.meter.push.sender = sender
        try:
            management = Sessions(site.meter)("management")
            address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            assert management.set(40, INTERVAL_1, RETRIES, Data.unsigned(0)) == SUCCESS
            assert management.set(40, INTERVAL_1, RANDOMISATION, Data.long_unsigned(0)) == SUCCESS
            assert management.set(40, INTERVAL_1, DESTINATION, Data.structure(
                [Data.enum(transport), Data.octet_string(address.encode()), Data.enum(0)])) == SUCCESS
            assert management.set(22, SCHEDULER_1, EXECUTION_TIME, execution_time_value(every_times("15m"))) == SUCCESS
            site.sim("load", power=LOAD_W)
            held[START] = site.a_plus()
            while site.platform[0] < START + DAY:
                site.run(TICK, step=TICK)
                if site.platform[0] in QUARTER_HOURS:
                    held[site.platform[0]] = site.a_plus()
                await delivered(sender, receiver)
            return sender.stats()
        finally:
            await sender.close()
            close()

    try:
        sent = asyncio.run(day())
        store.flush()
        assert sent["submitted"] == sent["attempts"] == sent["sent"] == len(QUARTER_HOURS)
        assert (sent["refused"], sent["failed"], sent["dropped"]) == (0, 0, 0)
        assert dict(receiver.counts) == {"stored": len(QUARTER_HOURS)}  # no refusal, no retry
        title = site.meter.identity.system_title.hex().upper()
        pushes = store.db.execute("SELECT capture_time, invocation_counter, kind FROM push WHERE meter = ? "
                                  "ORDER BY capture_time", (title,)).fetchall()
        quarter_hours = [format_time(dt.datetime.fromtimestamp(t, dt.timezone.utc)) for t in QUARTER_HOURS]
        assert [p[0] for p in pushes] == quarter_hours  # one each, at its quarter hour
        assert {p[2] for p in pushes} == {"interval-1"}
        counters = [p[1] for p in pushes]
        assert all(a < b for a, b in zip(counters, counters[1:]))
        # +A: what the legal part held at each instant, which grew by the load's energy each quarter
        # hour (within the unit the register truncates to)
        for k, t in enumerate(QUARTER_HOURS, start=1):
            assert abs(held[t] - held[START] - WH_PER_QUARTER * k) <= 1, (k, held[t], held[START])
        stored_a_plus = [(r[4], r[6]) for r in store.readings(meter=title, obis=[A_PLUS]) if r[2] == 2]
        assert stored_a_plus == list(zip(quarter_hours, (held[t] for t in QUARTER_HOURS)))
    finally:
        store.close()
        site.meter.close()

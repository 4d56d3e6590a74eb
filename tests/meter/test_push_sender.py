"""The push sender (IC 40 delivery, companion §10.6/§10.7) against listeners on the loopback.

Meter time is a fake clock: `FakeMeterTime.sleep` advances it by exactly what the sender asks,
so delays and windows are checked to the second without waiting. Network timeouts run in real time.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import random
import socket
import threading
from zoneinfo import ZoneInfo

import pytest

from smartmeter.cosem import axdr
from smartmeter.cosem.data import CosemDate, CosemDateTime, CosemTime
from smartmeter.meter.push_sender import TCP, UDP, WIRED_MBUS, PushSender, window_spans
from smartmeter.meter.schedule import ExecutionTime
from smartmeter.transport.wrapper import WrapperDecoder, decode_datagram

T0 = 1_800_000_000.0  # meter time at the first submit
APDU = bytes.fromhex("0f00000001") + bytes(range(40))  # stands in for a protected data-notification
BLOCKS = [b"\xe0\xc0" + bytes([n]) * 30 for n in range(3)]  # stands in for general-block-transfer blocks


BERLIN = ZoneInfo("Europe/Berlin")


def local(*fields) -> float:
    return dt.datetime(*fields, tzinfo=BERLIN).timestamp()


class FakeMeterTime:
    """The meter clock for the sender: now() and sleep(s), which moves the clock by s.

    sleep yields to the loop a few times first, so what was sent before it is received
    (and stamped) before the clock moves on."""

    def __init__(self, t: float = T0) -> None:
        self.t = t
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await asyncio.sleep(0.005)
        self.t += seconds


class SteppedMeterTime:
    """A meter clock that only the test moves (`move_to`); sleep(s) ends once it has moved s on.
    For many pushes waiting at once, which FakeMeterTime's shared sleeps would push along."""

    def __init__(self, t: float) -> None:
        self.t = t
        self._moved = asyncio.Event()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        end = self.t + seconds
        while self.t < end:
            await self._moved.wait()

    async def move_to(self, t: float) -> None:
        moved, self._moved = self._moved, asyncio.Event()
        self.t = t
        moved.set()
        await asyncio.sleep(0.01)  # the sleepers look at the clock, and send what is due


class Said:
    """A `say` that records conditions (the sender's rate-limited log)."""

    def __init__(self) -> None:
        self.conditions: list[str] = []

    def __call__(self, condition, message, *args, level=None) -> bool:
        self.conditions.append(condition)
        return True


class UdpListener(asyncio.DatagramProtocol):
    def __init__(self, clock: FakeMeterTime) -> None:
        self.clock = clock
        self.received: list[tuple[float, bytes]] = []

    def datagram_received(self, data, addr) -> None:
        self.received.append((self.clock.now(), data))


async def udp_listener(clock: FakeMeterTime, host: str = "::1"):
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(lambda: UdpListener(clock), local_addr=(host, 0))
    port = transport.get_extra_info("sockname")[1]
    return transport, protocol, (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


async def tcp_listener(clock: FakeMeterTime):
    """A wrapper listener on 127.0.0.1: one (meter time, frames) per connection."""
    connections: list[tuple[float, list]] = []

    async def on_connection(reader, writer):
        at = clock.now()
        decoder = WrapperDecoder()
        frames = []
        while data := await reader.read(65536):
            frames += decoder.feed(data)
        connections.append((at, frames))
        writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    return server, connections, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


def every_day_at(hour: int, minute: int) -> bytes:
    """An IC 40 window end as the attribute holds it: a date-time with a wildcard date."""
    return axdr.encode_date_time(CosemDateTime(CosemDate(None, None, None, None), CosemTime(hour, minute, 0, 0)))


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        probe.bind(("::1", 0))
        return probe.getsockname()[1]


def closed_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def settled(sender: PushSender) -> dict:
    await until(lambda: sender.stats()["pending"] == 0)
    return sender.stats()


def sender_for(clock: FakeMeterTime, **options) -> PushSender:
    return PushSender(asyncio.get_running_loop(), now=clock.now, sleep=clock.sleep, **options)


def test_udp_sends_every_attempt_repetition_delay_apart():
    retries, delay = 3, 25

    async def scenario():
        clock = FakeMeterTime()
        transport, listener, destination = await udp_listener(clock)
        sender = sender_for(clock, rng=random.Random(7))
        assert sender.submit(BLOCKS, UDP, destination, retries, 0, delay)
        stats = await settled(sender)
        await until(lambda: len(listener.received) == (1 + retries) * len(BLOCKS))
        await asyncio.sleep(0.05)  # nothing more comes
        transport.close()
        return listener.received, stats

    received, stats = asyncio.run(scenario())
    assert len(received) == (1 + retries) * len(BLOCKS)
    times = sorted({at for at, _ in received})
    assert times == [T0 + k * delay for k in range(1 + retries)]
    for at in times:  # each attempt: every block, in order, in wrapper messages 1 -> 2
        frames = [decode_datagram(data) for t, data in received if t == at]
        assert [f.payload for f in frames] == BLOCKS
        assert {(f.source_wport, f.destination_wport) for f in frames} == {(1, 2)}
    assert stats["attempts"] == 1 + retries
    assert (stats["sent"], stats["succeeded"], stats["failed"]) == (1, 0, 0)


def test_udp_to_a_port_nobody_listens_on_still_sends_every_attempt():
    """An ICMP port-unreachable must not make later datagrams of the push fail."""
    retries = 4

    async def scenario():
        clock = FakeMeterTime()
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
        sender = sender_for(clock)
        assert sender.submit([APDU], UDP, f"[::1]:{port}", retries, 0, 10)
        return await settled(sender), clock.sleeps

    stats, sleeps = asyncio.run(scenario())
    assert stats["attempts"] == 1 + retries and stats["sent"] == 1
    assert sleeps == [10] * retries


def test_randomisation_waits_within_the_interval_before_the_first_attempt():
    randomisation, seed = 600, 12345

    async def scenario():
        clock = FakeMeterTime()
        transport, listener, destination = await udp_listener(clock, "127.0.0.1")
        sender = sender_for(clock, rng=random.Random(seed))
        firsts = []
        for _ in range(5):
            start = clock.now()
            listener.received.clear()
            assert sender.submit([APDU], UDP, destination, 0, randomisation, 0)
            await settled(sender)
            await until(lambda: listener.received)
            firsts.append(listener.received[0][0] - start)
        transport.close()
        return firsts

    waits = asyncio.run(scenario())
    reference = random.Random(seed)
    assert waits == pytest.approx([reference.uniform(0, randomisation) for _ in waits])
    assert all(0 <= w <= randomisation for w in waits) and len(set(waits)) == len(waits)


def test_tcp_stops_after_the_first_acknowledged_attempt():
    async def scenario():
        clock = FakeMeterTime()
        server, connections, destination = await tcp_listener(clock)
        sender = sender_for(clock)
        assert sender.submit(BLOCKS, TCP, destination, 3, 0, 30)
        stats = await settled(sender)
        await until(lambda: connections)
        await asyncio.sleep(0.05)
        server.close()
        return connections, stats, clock.sleeps

    connections, stats, sleeps = asyncio.run(scenario())
    assert len(connections) == 1 and sleeps == []
    at, frames = connections[0]
    assert at == T0 and [f.payload for f in frames] == BLOCKS
    assert {(f.source_wport, f.destination_wport) for f in frames} == {(1, 2)}
    assert (stats["attempts"], stats["sent"], stats["succeeded"], stats["failed"]) == (1, 1, 1, 0)


def test_tcp_to_a_closed_port_makes_every_attempt_then_gives_up():
    retries, delay = 2, 60

    async def scenario():
        clock = FakeMeterTime()
        sender = sender_for(clock)
        assert sender.submit([APDU], TCP, f"127.0.0.1:{closed_tcp_port()}", retries, 0, delay)
        return await settled(sender), clock.sleeps

    stats, sleeps = asyncio.run(scenario())
    assert stats["attempts"] == 1 + retries and sleeps == [delay] * retries
    assert (stats["sent"], stats["succeeded"], stats["failed"]) == (0, 0, 1)


def test_tcp_retries_until_the_head_end_listens():
    """Closed for the first two attempts, then open: the third attempt delivers, and only once."""
    delay = 45

    async def scenario():
        clock = FakeMeterTime()
        port = closed_tcp_port()
        connections = []
        opened = clock.now() + 2 * delay  # the listener comes up at the third attempt's time

        async def on_connection(reader, writer):
            decoder = WrapperDecoder()
            frames = []
            while data := await reader.read(65536):
                frames += decoder.feed(data)
            connections.append((clock.now(), frames))

        servers = []

        async def open_when_due():
            await until(lambda: clock.now() >= opened)
            servers.append(await asyncio.start_server(on_connection, "127.0.0.1", port))

        opener = asyncio.create_task(open_when_due())
        original_sleep = clock.sleep

        async def sleep_then_open(seconds):  # the listener is up before the attempt at `opened`
            await original_sleep(seconds)
            if clock.now() >= opened:
                await opener

        sender = PushSender(asyncio.get_running_loop(), now=clock.now, sleep=sleep_then_open)
        assert sender.submit([APDU], TCP, f"127.0.0.1:{port}", 5, 0, delay)
        stats = await settled(sender)
        await until(lambda: connections)
        servers[0].close()
        return connections, stats

    connections, stats = asyncio.run(scenario())
    assert [at for at, _ in connections] == [T0 + 2 * delay]
    assert [f.payload for f in connections[0][1]] == [APDU]
    assert (stats["attempts"], stats["succeeded"]) == (3, 1)


def test_a_destination_that_does_not_answer_blocks_no_other_push():
    """A listener whose accept queue is full drops the SYNs: the connection neither opens nor fails."""
    timeout = 2.0

    async def scenario():
        clock = FakeMeterTime()
        blackhole = socket.socket()
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        filler = socket.create_connection(blackhole.getsockname())  # fills the queue; never accepted
        dead = "127.0.0.1:%d" % blackhole.getsockname()[1]
        transport, udp, udp_destination = await udp_listener(clock)
        server, connections, tcp_destination = await tcp_listener(clock)
        sender = sender_for(clock, connect_timeout=timeout, max_connections=2)
        loop = asyncio.get_running_loop()
        assert sender.submit([APDU], TCP, dead, 1, 0, 0)
        await asyncio.sleep(0.05)
        started = loop.time()
        assert sender.submit([APDU], UDP, udp_destination, 0, 0, 0)
        assert sender.submit([APDU], TCP, tcp_destination, 0, 0, 0)
        await until(lambda: udp.received and connections)
        others_took = loop.time() - started
        waiting = sender.stats()["pending"]
        stats = await settled(sender)
        all_took = loop.time() - started
        filler.close()
        blackhole.close()
        transport.close()
        server.close()
        return others_took, waiting, stats, all_took

    others_took, waiting, stats, all_took = asyncio.run(scenario())
    assert others_took < timeout / 2 and waiting == 1
    assert all_took >= 2 * timeout - 0.1  # two attempts, each given up after the timeout
    assert (stats["sent"], stats["failed"], stats["attempts"]) == (2, 1, 4)


def test_the_push_waits_for_its_communication_window():
    async def scenario():
        clock = FakeMeterTime()
        transport, listener, destination = await udp_listener(clock)
        sender = sender_for(clock)
        window = ((T0 - 7200, T0 - 3600), (T0 + 5000, T0 + 6000))  # one past, one 5000 s ahead
        assert sender.submit([APDU], UDP, destination, 1, 0, 10, window)
        stats = await settled(sender)
        await until(lambda: len(listener.received) == 2)
        transport.close()
        return [at for at, _ in listener.received], stats

    times, stats = asyncio.run(scenario())
    assert times == [T0 + 5000, T0 + 5010]
    assert stats["attempts"] == 2 and stats["skipped"] == 0


def test_attempts_outside_the_window_are_skipped_and_count_as_retries():
    async def scenario():
        clock = FakeMeterTime()
        transport, listener, destination = await udp_listener(clock)
        sender = sender_for(clock)
        assert sender.submit([APDU], UDP, destination, 4, 0, 10, [(T0 - 1, T0 + 25)])
        stats = await settled(sender)
        await asyncio.sleep(0.05)
        transport.close()
        return [at for at, _ in listener.received], stats, clock.sleeps

    times, stats, sleeps = asyncio.run(scenario())
    assert times == [T0, T0 + 10, T0 + 20]  # T0+30 and T0+40 fall after the window's end
    assert (stats["attempts"], stats["skipped"]) == (3, 2) and sleeps == [10] * 4


def test_a_push_without_a_window_in_reach_is_dropped():
    async def scenario():
        clock = FakeMeterTime()
        said = Said()
        sender = sender_for(clock, say=said, max_window_wait=86400)
        assert sender.submit([APDU], UDP, "[::1]:4059", 0, 0, 0, [(T0 + 2 * 86400, T0 + 2 * 86400 + 60)])
        assert sender.submit([APDU], UDP, "[::1]:4059", 0, 0, 0, [(T0 - 60, T0 - 1)])  # all in the past
        return await settled(sender), said.conditions, clock.sleeps

    stats, conditions, sleeps = asyncio.run(scenario())
    assert (stats["dropped"], stats["attempts"]) == (2, 0) and sleeps == []
    assert conditions == ["push.no_window", "push.no_window"]


def test_a_full_queue_refuses_without_growing():
    async def scenario():
        clock = SteppedMeterTime(T0)  # never moves: the pushes stay in their randomisation delay
        said = Said()
        sender = sender_for(clock, say=said, max_pending=3)
        accepted = [sender.submit([APDU], UDP, "[::1]:4059", 0, 60, 0) for _ in range(10)]
        await asyncio.sleep(0.02)
        stats = sender.stats()
        await sender.close()
        return accepted, stats, said.conditions, sender.stats()

    accepted, stats, conditions, closed = asyncio.run(scenario())
    assert accepted == [True] * 3 + [False] * 7
    assert (stats["pending"], stats["submitted"], stats["refused"]) == (3, 3, 7)
    assert set(conditions) == {"push.queue_full"}
    assert (closed["pending"], closed["dropped"]) == (0, 3)


def test_the_bytes_on_their_way_are_bounded_too():
    async def scenario():
        clock = SteppedMeterTime(T0)
        sender = sender_for(clock, max_pending_bytes=3 * (8 + len(APDU)))
        accepted = [sender.submit([APDU], UDP, "[::1]:4059", 0, 60, 0) for _ in range(5)]
        await sender.close()
        return accepted

    assert asyncio.run(scenario()) == [True] * 3 + [False] * 2


def labelled(n: int) -> bytes:
    """An APDU that says which push it is."""
    return APDU + n.to_bytes(2, "big")


def label(datagram: bytes) -> int:
    return int.from_bytes(decode_datagram(datagram).payload[-2:], "big")


NIGHT = (ExecutionTime(0, 0), ExecutionTime(6, 0))  # every night 00:00-06:00
EVENING = (ExecutionTime(22, 0), ExecutionTime(23, 0))


def test_pushes_waiting_for_their_window_never_refuse_a_push_without_one():
    """The day of a quarter-hourly push with a nightly window: 72 pushes from 06:00 to 23:45 wait
    (more than the 64 pushes the queue takes), and the alarm push at 23:50 still goes out at once."""
    quarter = 900

    async def scenario():
        clock = SteppedMeterTime(local(2026, 5, 6, 6, 0))
        transport, listener, destination = await udp_listener(clock)
        said = Said()
        sender = sender_for(clock, zone=BERLIN, say=said)
        interval_pushes = 18 * 3600 // quarter
        accepted = []
        for n in range(interval_pushes):
            await clock.move_to(local(2026, 5, 6, 6, 0) + n * quarter)
            accepted.append(sender.submit([labelled(n)], UDP, destination, 0, 0, 0, [NIGHT]))
        await clock.move_to(local(2026, 5, 6, 23, 50))
        alarm_accepted = sender.submit([labelled(9999)], UDP, destination, 0, 0, 0)
        await until(lambda: listener.received)
        alarm = [(at, label(data)) for at, data in listener.received]
        await clock.move_to(local(2026, 5, 7, 0, 0))
        stats = await settled(sender)
        await until(lambda: len(listener.received) == 1 + interval_pushes)
        transport.close()
        night = [(at, label(data)) for at, data in listener.received[1:]]
        return interval_pushes, accepted, alarm_accepted, alarm, night, stats, said.conditions

    interval_pushes, accepted, alarm_accepted, alarm, night, stats, conditions = asyncio.run(scenario())
    assert accepted == [True] * interval_pushes and alarm_accepted
    assert alarm == [(local(2026, 5, 6, 23, 50), 9999)]
    assert sorted(night) == [(local(2026, 5, 7, 0, 0), n) for n in range(interval_pushes)]
    assert (stats["refused"], stats["dropped"], stats["sent"]) == (0, 0, 1 + interval_pushes)
    assert conditions == []


def test_beyond_the_bound_of_its_group_the_oldest_waiting_push_of_the_group_is_dropped():
    async def scenario():
        clock = SteppedMeterTime(local(2026, 5, 6, 12, 0))
        transport, listener, destination = await udp_listener(clock)
        said = Said()
        sender = sender_for(clock, zone=BERLIN, say=said, max_waiting_per_window=3)
        accepted = []
        for n in range(5):  # 0..4 wait for the night
            accepted.append(sender.submit([labelled(n)], UDP, destination, 0, 0, 0, [NIGHT]))
            await asyncio.sleep(0.01)
        for n in (10, 11):  # the same destination, another window: another group
            accepted.append(sender.submit([labelled(n)], UDP, destination, 0, 0, 0, [EVENING]))
            await asyncio.sleep(0.01)
        dropped_before_any_window = sender.stats()["dropped"]
        await clock.move_to(local(2026, 5, 6, 22, 0))
        await until(lambda: len(listener.received) >= 2)  # the evening's two, sent as the window opened
        evening = sorted(label(data) for _, data in listener.received)
        await clock.move_to(local(2026, 5, 7, 0, 0))
        stats = await settled(sender)
        await until(lambda: len(listener.received) == 5)
        transport.close()
        night = sorted(label(data) for _, data in listener.received[len(evening):])
        return accepted, dropped_before_any_window, evening, night, stats, said.conditions

    accepted, dropped_early, evening, night, stats, conditions = asyncio.run(scenario())
    assert accepted == [True] * 7
    assert dropped_early == 2 and conditions == ["push.window_group_full"] * 2
    assert evening == [10, 11] and night == [2, 3, 4]  # 0 and 1, the oldest of the night's, were dropped
    assert (stats["dropped"], stats["sent"], stats["pending"]) == (2, 5, 0)


@pytest.mark.parametrize("bound", [{"max_waiting": 3}, {"max_waiting_bytes": 3 * (8 + len(labelled(0)))}],
                         ids=["count", "bytes"])
def test_beyond_the_overall_bounds_the_oldest_waiting_push_is_dropped(bound):
    """Pushes of three groups (three destinations): four held pushes exceed a bound of three."""
    async def scenario():
        clock = SteppedMeterTime(local(2026, 5, 6, 12, 0))
        transport, listener, destination = await udp_listener(clock)
        said = Said()
        sender = sender_for(clock, zone=BERLIN, say=said, **bound)
        others = ["[::1]:%d" % closed_udp_port(), "[::1]:%d" % closed_udp_port()]
        targets = [destination, *others, destination]
        for n, target in enumerate(targets):
            assert sender.submit([labelled(n)], UDP, target, 0, 0, 0, [NIGHT])
            await asyncio.sleep(0.01)
        await clock.move_to(local(2026, 5, 7, 0, 0))
        stats = await settled(sender)
        await until(lambda: listener.received)  # sent already; the loop delivers it
        transport.close()
        return sorted(label(data) for _, data in listener.received), stats, said.conditions

    received, stats, conditions = asyncio.run(scenario())
    assert received == [3]  # push 0, the oldest of all, was dropped for push 3
    assert (stats["dropped"], stats["sent"]) == (1, 3) and conditions == ["push.window_held_full"]


@pytest.mark.parametrize("destination", [
    "", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:80x", "127.0.0.1: 80",
    "256.0.0.1:4059", "127.0.0.01:4059", "1.2.3:4059", "localhost:4059", "hes.example.com:4059", "::1:4059",
    "[::1:4059", "[::1]", "[::1]:", "[::1]:99999", "[::g]:4059", "[127.0.0.1]:4059", " 127.0.0.1:4059",
    "127.0.0.1:4059\n", b"\xff\xfe:1", "0-2:24.6.0.255:FF:00",
])
def test_malformed_destinations_are_refused(destination):
    async def scenario():
        said = Said()
        sender = PushSender(asyncio.get_running_loop(), say=said)
        accepted = sender.submit([APDU], UDP, destination, 0, 0, 0)
        return accepted, said.conditions, sender.stats()

    accepted, conditions, stats = asyncio.run(scenario())
    assert not accepted and conditions == ["push.bad_destination"]
    assert (stats["submitted"], stats["refused"], stats["pending"]) == (0, 1, 0)


@pytest.mark.parametrize("arguments, condition", [
    (([APDU], WIRED_MBUS, "0-2:24.6.0.255:FF:00", 0, 0, 0), "push.unsupported_transport"),
    (([APDU], 2, "127.0.0.1:4059", 0, 0, 0), "push.unsupported_transport"),
    (([APDU], UDP, "127.0.0.1:4059", -1, 0, 0), "push.bad_parameters"),
    (([APDU], UDP, "127.0.0.1:4059", 256, 0, 0), "push.bad_parameters"),
    (([APDU], UDP, "127.0.0.1:4059", 0, 65536, 0), "push.bad_parameters"),
    (([APDU], UDP, "127.0.0.1:4059", 0, 0, 1.5), "push.bad_parameters"),
    (([], UDP, "127.0.0.1:4059", 0, 0, 0), "push.bad_frames"),
    (([bytes(65536)], UDP, "127.0.0.1:4059", 0, 0, 0), "push.bad_frames"),
    (([APDU], UDP, "127.0.0.1:4059", 0, 0, 0, [(T0 + 10, T0)]), "push.bad_window"),
    (([APDU], UDP, "127.0.0.1:4059", 0, 0, 0, [("start", "end")]), "push.bad_window"),
    (([APDU], UDP, "127.0.0.1:4059", 0, 0, 0, [(every_day_at(6, 0)[:11], every_day_at(7, 0))]), "push.bad_window"),
    (([APDU], UDP, "127.0.0.1:4059", 0, 0, 0, [(b"\xff\xff\xfd" + every_day_at(6, 0)[3:], every_day_at(7, 0))]),
     "push.bad_window"),  # month 0xFD: DST begin
    (([APDU], UDP, "127.0.0.1:4059", 0, 0, 0, [(every_day_at(6, 0)[:5] + b"\x19" + every_day_at(6, 0)[6:],
                                               every_day_at(7, 0))]), "push.bad_window"),  # hour 25
])
def test_unusable_pushes_are_refused(arguments, condition):
    async def scenario():
        said = Said()
        sender = PushSender(asyncio.get_running_loop(), say=said)
        return sender.submit(*arguments), said.conditions

    assert asyncio.run(scenario()) == (False, [condition])


def test_close_cancels_waiting_and_connecting_pushes():
    async def scenario():
        clock = FakeMeterTime()
        blackhole = socket.socket()
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        filler = socket.create_connection(blackhole.getsockname())
        sender = sender_for(clock, connect_timeout=30)
        assert sender.submit([APDU], UDP, "[::1]:4059", 0, 0, 0, [(T0 + 3600, T0 + 7200)])  # waits for its window
        assert sender.submit([APDU], TCP, "127.0.0.1:%d" % blackhole.getsockname()[1], 0, 0, 0)  # connecting
        await asyncio.sleep(0.05)
        before = sender.stats()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await sender.close()
        took = loop.time() - started
        refused_after = sender.submit([APDU], UDP, "[::1]:4059", 0, 0, 0)
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        filler.close()
        blackhole.close()
        return before, sender.stats(), took, refused_after, leftover

    before, after, took, refused_after, leftover = asyncio.run(scenario())
    assert before["pending"] == 2 and took < 30 / 3  # the connection attempt was not waited for
    assert (after["pending"], after["dropped"], after["submitted"]) == (0, 2, 2)
    assert refused_after is False and leftover == []


def test_pushes_cancelled_by_close_before_their_first_step_count_as_dropped():
    async def scenario():
        clock = FakeMeterTime()
        sender = sender_for(clock)
        accepted = [sender.submit([APDU], UDP, "[::1]:4059", 0, 0, 0) for _ in range(3)]
        await sender.close()  # the pushes' tasks never ran a step
        return accepted, sender.stats()

    accepted, stats = asyncio.run(scenario())
    assert accepted == [True] * 3
    assert (stats["pending"], stats["dropped"], stats["submitted"], stats["attempts"]) == (0, 3, 3, 0)


def test_a_push_from_a_thread_after_the_loop_closed_is_refused():
    said = Said()
    loop = asyncio.new_event_loop()
    sender = PushSender(loop, say=said)
    loop.close()
    results = []
    thread = threading.Thread(target=lambda: results.append(sender.submit([APDU], UDP, "[::1]:4059", 0, 0, 0)))
    thread.start()
    thread.join()
    stats = sender.stats()
    assert results == [False] and said.conditions == ["push.no_loop"]
    assert (stats["pending"], stats["submitted"], stats["refused"]) == (0, 0, 1)


def test_a_loop_that_closes_while_a_push_is_handed_over_refuses_it():
    """The loop closes between the check and the hand-over (another thread closed it)."""
    said = Said()
    loop = asyncio.new_event_loop()
    sender = PushSender(loop, say=said)
    hand_over = loop.call_soon_threadsafe

    def closing_first(*args):
        loop.close()
        return hand_over(*args)

    loop.call_soon_threadsafe = closing_first
    assert sender.submit([APDU], UDP, "[::1]:4059", 0, 0, 0) is False
    stats = sender.stats()
    assert said.conditions == ["push.no_loop"]
    assert (stats["pending"], stats["submitted"], stats["refused"]) == (0, 0, 1)


def test_submit_from_another_thread_runs_on_the_loop():
    async def scenario():
        clock = FakeMeterTime()
        transport, listener, destination = await udp_listener(clock)
        sender = sender_for(clock)
        results = []
        thread = threading.Thread(target=lambda: results.append(sender.submit([APDU], UDP, destination, 1, 0, 5)))
        thread.start()
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        await until(lambda: len(listener.received) == 2)
        transport.close()
        return results, await settled(sender)

    results, stats = asyncio.run(scenario())
    assert results == [True] and stats["attempts"] == 2


def test_without_a_loop_a_push_is_refused():
    said = Said()
    sender = PushSender(say=said)
    assert not sender.submit([APDU], UDP, "[::1]:4059", 0, 0, 0)
    assert said.conditions == ["push.no_loop"]


def test_a_nightly_window_is_open_at_night_and_recurs_for_the_horizon():
    now = local(2026, 5, 6, 3, 0)  # inside the night from the 5th to the 6th
    spans = window_spans([(ExecutionTime(22, 0), ExecutionTime(6, 0))], BERLIN, now, horizon=7 * 86400)
    assert spans == tuple((local(2026, 5, day, 22, 0), local(2026, 5, day + 1, 6, 0)) for day in range(5, 13))


def test_a_window_of_fixed_dates_is_one_window_however_long():
    now = local(2026, 5, 6, 3, 0)
    years = (ExecutionTime(2, 0, 0, 2020, 1, 1), ExecutionTime(0, 0, 0, 2099, 12, 31))
    assert window_spans([years], BERLIN, now) == ((local(2020, 1, 1, 2, 0), local(2099, 12, 31, 0, 0)),)
    over = (ExecutionTime(0, 0, 0, 2020, 1, 1), ExecutionTime(0, 0, 0, 2021, 1, 1))
    assert window_spans([over], BERLIN, now) == ()


def test_a_weekly_window_and_wildcard_seconds():
    now = local(2026, 5, 6, 12, 0)  # a Wednesday
    sunday = (ExecutionTime(0, 0, 0, weekday=7), ExecutionTime(0, 0, 0, weekday=1))
    assert window_spans([sunday], BERLIN, now) == ((local(2026, 5, 10, 0, 0), local(2026, 5, 11, 0, 0)),)
    quarter = (ExecutionTime(12, 15, None), ExecutionTime(12, 30, None))  # any second: on the minute
    assert window_spans([quarter], BERLIN, now, horizon=86400) == (
        (local(2026, 5, 6, 12, 15), local(2026, 5, 6, 12, 30)),)


def test_an_end_that_never_comes_makes_no_window():
    now = local(2026, 5, 6, 12, 0)
    assert window_spans([(ExecutionTime(22, 0), ExecutionTime(0, 0, 0, 2020, 1, 1))], BERLIN, now) == ()
    assert window_spans([], BERLIN, now) == ()


@pytest.mark.parametrize("night", [
    (ExecutionTime(22, 0), ExecutionTime(22, 1)),
    (every_day_at(22, 0), every_day_at(22, 1)),
], ids=["patterns", "date-times"])
def test_a_push_with_a_nightly_window_pattern_goes_out_at_night(night):
    async def scenario():
        clock = FakeMeterTime(local(2026, 5, 6, 12, 0))
        transport, listener, destination = await udp_listener(clock)
        sender = sender_for(clock, zone=BERLIN)
        assert sender.submit([APDU], UDP, destination, 3, 0, 45, [night])
        stats = await settled(sender)
        await asyncio.sleep(0.05)
        transport.close()
        return [at for at, _ in listener.received], stats

    times, stats = asyncio.run(scenario())
    assert times == [local(2026, 5, 6, 22, 0, 0), local(2026, 5, 6, 22, 0, 45)]  # 22:01:30 and 22:02:15 are past it
    assert (stats["attempts"], stats["skipped"], stats["sent"]) == (2, 2, 1)


def test_a_configured_window_that_never_opens_is_not_always_open():
    async def scenario():
        clock = FakeMeterTime(local(2026, 5, 6, 12, 0))
        sender = sender_for(clock, zone=BERLIN, say=Said())
        gone = (ExecutionTime(0, 0, 0, 2020, 1, 1), ExecutionTime(0, 0, 0, 2021, 1, 1))
        assert sender.submit([APDU], UDP, "[::1]:4059", 0, 0, 0, [gone])
        return await settled(sender)

    stats = asyncio.run(scenario())
    assert (stats["dropped"], stats["attempts"]) == (1, 0)

"""broker.PullFeed, the way a worker takes jobs from JetStream: never more at a time than its
capacity, every job exactly once, none while held, and those that arrive after a stop handed
back for another worker."""
from __future__ import annotations

import asyncio

import pytest

from smartmeter.hes.fleet.broker import BULK, Broker, Job

pytestmark = pytest.mark.timeout(120)


async def _broker(nats_url: str, jobs: int) -> Broker:
    broker = await Broker.connect(nats_url)
    await broker.ensure_streams()
    await broker.consumer("bulk", "feed-test", ack_wait=30.0, max_deliver=-1, max_ack_pending=1000)
    for meter in range(jobs):
        await broker.publish(BULK, Job(1, meter).to_bytes(), f"job:1:{meter}")
    return broker


class Taker:
    """Works on each job taken for `work` seconds, then acknowledges it; counts what it holds."""

    def __init__(self, work: float = 0.01) -> None:
        self.work = work
        self.feed = None
        self.held = 0
        self.most_held = 0
        self.taken: list[int] = []
        self.tasks: set[asyncio.Task] = set()

    def take(self, msg) -> None:
        self.held += 1
        self.most_held = max(self.most_held, self.held)
        self.taken.append(Job.from_bytes(msg.data).meter_id)
        task = asyncio.get_running_loop().create_task(self._work(msg))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _work(self, msg) -> None:
        await asyncio.sleep(self.work)
        await msg.ack()
        self.held -= 1
        self.feed.done()

    async def until(self, count: int, timeout: float = 20.0) -> None:
        async def enough():
            while len(self.taken) < count:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(enough(), timeout)


def test_a_feed_takes_every_job_once_and_never_more_than_its_capacity_at_a_time(nats_url):
    async def scenario():
        broker = await _broker(nats_url, 200)
        taker = Taker()
        taker.feed = await broker.feed("bulk", "feed-test", 8, taker.take)
        await taker.until(200)
        await asyncio.sleep(0.3)  # anything more would come now
        await taker.feed.close()
        await broker.close()
        return taker

    taker = asyncio.run(scenario())
    assert sorted(taker.taken) == list(range(200))
    assert taker.most_held == 8


def test_a_held_feed_asks_for_nothing_until_it_resumes(nats_url):
    async def scenario():
        broker = await _broker(nats_url, 30)
        taker = Taker(work=0.2)
        taker.feed = await broker.feed("bulk", "feed-test", 4, taker.take)
        await taker.until(4)
        taker.feed.hold()  # what was asked for still comes: at most one request's worth
        await asyncio.sleep(1.5)
        while_held = len(taker.taken)
        await asyncio.sleep(1.5)
        still_held = len(taker.taken)
        taker.feed.resume()
        await taker.until(30)
        await taker.feed.close()
        await broker.close()
        return while_held, still_held, sorted(taker.taken)

    while_held, still_held, taken = asyncio.run(scenario())
    assert while_held <= 8 and still_held == while_held
    assert taken == list(range(30))


def test_jobs_arriving_after_a_stop_are_handed_back_for_another_worker(nats_url):
    async def scenario():
        broker = await _broker(nats_url, 0)
        first = Taker()
        first.feed = await broker.feed("bulk", "feed-test", 4, first.take)
        await asyncio.sleep(0.2)  # its request waits in JetStream for jobs
        first.feed.stop()
        for meter in range(4):
            await broker.publish(BULK, Job(1, meter).to_bytes(), f"job:1:{meter}")
        await asyncio.sleep(0.3)  # they went to the waiting request
        second = Taker()
        second.feed = await broker.feed("bulk", "feed-test", 4, second.take)
        await second.until(4, timeout=10.0)  # long before the ack wait (30 s) would bring them back
        for taker in (first, second):
            await taker.feed.close()
        await broker.close()
        return first.taken, second.taken

    first, second = asyncio.run(scenario())
    assert first == []
    assert sorted(second) == list(range(4))

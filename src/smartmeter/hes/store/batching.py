"""Calls of one kind that tasks make at about the same time, sent to PostgreSQL as one batch.

A worker runs dozens of sessions at once, and each begins with a claim and ends with its
results: one round trip each costs the worker a send, a receive and several turns of its
event loop, more than the call's own work. A `Coalescer` runs the calls made meanwhile as one
statement; each caller gets its own result. It sends either after a short window, or (with
`window=None`) at once when no batch of it is under way and otherwise as soon as the one under
way has its answer: calls made while a batch is out wait for it and then go together, so a
batch grows with the load and a call made alone waits for nothing.

A statement that takes locks belongs here only when its batch cannot hold one call's locks
while waiting for another's (see the SQL of each batch: claims run each in a transaction of
its own; finishes are of different meters under their own leases).

A batch that one call's data breaks is run again one call at a time, so the others go
through; a lost connection or a server shutting down reaches every caller of the batch.
"""
from __future__ import annotations

import asyncio
import copy
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

import asyncpg

__all__ = ["CONNECTION_LOST", "Coalescer"]

Item = TypeVar("Item")
Result = TypeVar("Result")

# errors of the connection or the server, not of one call's data: running the calls again one
# by one would only repeat them, and the connection is not used again
CONNECTION_LOST = (asyncpg.exceptions.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError)
# what one call's data can raise: from the server, or while its arguments are encoded
_THE_DATA = (asyncpg.PostgresError, ValueError, OverflowError, TypeError)


class Coalescer(Generic[Item, Result]):
    """`await submit(item)` → its result, from `run_batch(items)` over the items of a window;
    `run_batch` returns one result (or exception) per item, in order.

    `orphaned(item, result)` is called for a result whose caller was cancelled after the
    batch had answered it (to give back what the result holds); a caller cancelled before its
    batch was sent is left out of the batch."""

    def __init__(self, run_batch: Callable[[Sequence[Item]], Awaitable[Sequence]], *,
                 window: float | None = 0.005, max_batch: int = 64,
                 orphaned: Callable[[Item, Result], Awaitable[None]] | None = None) -> None:
        self.run_batch = run_batch
        self.window = window
        self.max_batch = max_batch
        self.orphaned = orphaned
        self._pending: list[tuple[Item, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._running: set[asyncio.Task] = set()
        self._out = 0  # batches sent and not yet answered
        self.batches = 0
        self.items = 0

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((item, future))
        if self.window is None:
            if not self._out and self._timer is None:
                # at the end of this turn of the loop: the calls its other tasks make go too
                self._timer = loop.call_soon(self._flush)
        elif len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.window, self._flush)
        try:
            return await future
        except asyncio.CancelledError:
            # cancelled after the batch had answered: the result was set but not taken
            if future.done() and not future.cancelled() and future.exception() is None:
                self._orphan(item, future.result())
            raise

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        live = [(item, future) for item, future in self._pending if not future.done()]
        # without a window one batch is out at a time (its statement may keep a connection of
        # its own): what does not fit goes when it has its answer
        batch, self._pending = (live[:self.max_batch], live[self.max_batch:]) if self.window is None else (live, [])
        if batch:
            self._out += 1  # now, not when the task starts: a call made meanwhile must wait for it
            self._spawn(self._run(batch))

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    def _orphan(self, item: Item, result) -> None:
        if self.orphaned is not None:
            self._spawn(self._give_back(item, result))

    async def _give_back(self, item: Item, result) -> None:
        try:
            await self.orphaned(item, result)
        except Exception:  # what it held expires on its own (a lease, a slot)
            pass

    async def _run(self, batch: list[tuple[Item, asyncio.Future]]) -> None:
        try:
            await self._answer(batch)
        finally:
            self._out -= 1
            if self.window is None and self._pending and self._timer is None:
                self._timer = asyncio.get_running_loop().call_soon(self._flush)

    async def _answer(self, batch: list[tuple[Item, asyncio.Future]]) -> None:
        self.batches += 1
        self.items += len(batch)
        items = [item for item, _ in batch]
        try:
            results = list(await self.run_batch(items))
            if len(results) != len(items):
                raise RuntimeError(f"a batch of {len(items)} calls gave {len(results)} results")
        except _THE_DATA as exc:
            if len(batch) == 1 or isinstance(exc, CONNECTION_LOST):
                results = [exc] * len(batch)
            else:  # one call's data broke the statement: each alone, so the others go through
                results = [await self._alone(item) for item in items]
        except Exception as exc:
            results = [exc] * len(batch)
        except BaseException:  # the loop is shutting down: the callers are cancelled with it
            for _, future in batch:
                future.cancel()
            raise
        for (item, future), result in zip(batch, results):
            if future.done():  # its caller gave up while the batch ran
                if not isinstance(result, BaseException):
                    self._orphan(item, result)
            elif isinstance(result, BaseException):
                future.set_exception(_own_copy(result))
            else:
                future.set_result(result)

    async def _alone(self, item: Item):
        try:
            return (await self.run_batch([item]))[0]
        except Exception as exc:
            return exc

    async def close(self) -> None:
        """Run what is pending and wait for the batches under way."""
        while self._pending or self._running:
            if self._pending and (self.window is not None or not self._out or not self._running):
                self._flush()
            if self._running:
                await asyncio.gather(*self._running, return_exceptions=True)


def _own_copy(exc: BaseException) -> BaseException:
    """An exception of its own for each caller, so that the tracebacks of the tasks raising
    it do not pile up on one object."""
    try:
        own = copy.copy(exc)
    except Exception:
        return exc
    own.__cause__ = exc.__cause__
    own.__traceback__ = None
    return own

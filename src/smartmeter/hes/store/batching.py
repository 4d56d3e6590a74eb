"""Calls of one kind that tasks make at about the same time, sent to PostgreSQL as one batch.

A worker runs dozens of sessions at once, and each begins with a claim: one round trip each
costs the worker a send, a receive and several turns of its event loop, more than the claim's
own work. A `Coalescer` collects the calls made within a short window (or until `max_batch`)
and runs them as one statement; each caller gets its own result. The window is short against
a session (milliseconds against a second), so a call waits little.

A batch that fails with a database error is run again one call at a time, so that one bad
call does not fail the others; a lost connection fails them all (each caller decides).
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Generic, Sequence, TypeVar

import asyncpg

__all__ = ["Coalescer"]

Item = TypeVar("Item")
Result = TypeVar("Result")


class Coalescer(Generic[Item, Result]):
    """`await submit(item)` → its result, from `run_batch(items)` over the items of a window.

    `orphaned(item, result)` is called for a result whose caller was cancelled meanwhile (a
    claim nobody will use is given back there)."""

    def __init__(self, run_batch: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]], *,
                 window: float = 0.005, max_batch: int = 64,
                 orphaned: Callable[[Item, Result], Awaitable[None]] | None = None) -> None:
        self.run_batch = run_batch
        self.window = window
        self.max_batch = max_batch
        self.orphaned = orphaned
        self._pending: list[tuple[Item, asyncio.Future]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Task] = set()
        self.batches = 0
        self.items = 0

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((item, future))
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.window, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[Item, asyncio.Future]]) -> None:
        self.batches += 1
        self.items += len(batch)
        items = [item for item, _ in batch]
        try:
            results: Sequence[Any] = await self.run_batch(items)
        except asyncpg.PostgresError as exc:
            if len(batch) == 1:
                results = [exc]
            else:  # one call's data broke the statement: each alone, so the others go through
                results = []
                for item in items:
                    try:
                        results.append((await self.run_batch([item]))[0])
                    except Exception as single:
                        results.append(single)
        except BaseException as exc:  # the connection, a cancellation: every caller hears it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            if not isinstance(exc, Exception):
                raise
            return
        for (item, future), result in zip(batch, results):
            if future.done():  # its caller gave up (cancelled) while the batch ran
                if self.orphaned is not None and not isinstance(result, BaseException):
                    try:
                        await self.orphaned(item, result)
                    except Exception:  # what it held expires on its own (a lease, a slot)
                        pass
            elif isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Run what is pending and wait for the batches under way."""
        self._flush()
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

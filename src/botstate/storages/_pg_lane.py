"""Request coalescing: one statement in flight per lane, everything that arrives meanwhile in the next.

A lone request is sent at once by its own task, exactly as a plain client call would be. While it is
in flight, further requests queue; when it returns, one background task sends the whole queue as ONE
statement (``WHERE id = ANY($1)``, a multi-row upsert) and hands each waiter its own result or error.
Under load this turns N round trips and N statement executions into one, which is where the
throughput gain over a plain connection pool comes from; without load nothing waits.

Ordering: a request is executed after it was issued and before its waiter resumes, so anything a
coroutine wrote (awaited) is visible to what it reads next. Batches of one lane run one after the
other in queue order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Lane"]

R = TypeVar("R")
T = TypeVar("T")


class Lane(Generic[R, T]):
    """Coalesces requests ``R`` into batches; ``run_batch`` returns one ``T`` per request, in order."""

    __slots__ = ("_drainer", "_pending", "_run_batch", "busy")

    def __init__(self, run_batch: Callable[[Sequence[R]], Awaitable[Sequence[T]]]) -> None:
        self._run_batch = run_batch
        self._pending: list[tuple[R, asyncio.Future[T]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self.busy = False
        """True while a statement of this lane is in flight: callers then :meth:`join` instead."""

    def join(self, request: R) -> asyncio.Future[T]:
        """Queue ``request`` for the next batch (only while :attr:`busy`)."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        return future

    def done(self) -> None:
        """Called by a direct sender when its statement returned: flush what queued meanwhile."""
        if self._pending:
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        else:
            self.busy = False

    async def _drain(self) -> None:
        live: list[tuple[R, asyncio.Future[T]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                live = [(request, future) for request, future in batch if not future.cancelled()]
                if not live:
                    continue
                try:
                    results = await self._run_batch([request for request, _ in live])
                except Exception as exc:  # every waiter gets the failure, wrapped with its own key
                    for _, future in live:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(live, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self.busy = False
            self._drainer = None
            # Left over only when the drainer itself was cancelled (the loop is shutting down):
            # no waiter may hang on a batch that will never run.
            for _, future in (*live, *self._pending):
                future.cancel()
            self._pending = []

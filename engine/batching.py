"""Dynamic batching for the HTTP service (asyncio; torch-free).

Requests put their items on one queue; a single collector task takes up to ``max_batch_size``
items, waiting at most ``max_wait_ms`` after the oldest one arrived, and runs the batch in a
worker thread so the event loop keeps accepting requests. Each item carries its own future, so
results go back to the request that sent them whatever batch they landed in. While a batch
runs, the next one forms: under load batches fill up without any waiting.

An item whose caller gave up (timeout, disconnect) is dropped when the batch is formed, or its
result is discarded if its batch was already running.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Generic, Sequence, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")  # one item's payload
R = TypeVar("R")  # one item's result

#: ``run(payloads, names) -> results`` (one result per payload, in order); runs in the worker thread.
BatchFn = Callable[[Sequence[Any], Sequence[str]], Sequence[Any]]


class BatcherClosed(RuntimeError):
    """The batcher was stopped before the item was scored."""


@dataclass
class _Item(Generic[T]):
    payload: T
    name: str
    future: asyncio.Future
    enqueued: float  # loop.time()


class DynamicBatcher(Generic[T, R]):
    """Collects items from concurrent callers into batches for one ``run`` function.

    ``on_batch(size, seconds)`` is called (in the event loop) after every batch, for metrics.
    """

    def __init__(self, run: BatchFn, *, max_batch_size: int = 8, max_wait_ms: float = 5.0,
                 on_batch: Callable[[int, float], None] | None = None):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0")
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self._on_batch = on_batch
        self._pending: collections.deque[_Item] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.batches = 0
        self.max_batch_seen = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the collector task on the running event loop."""
        if self._task is not None:
            return
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semgir-batch")
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="semgir-batcher")

    async def stop(self) -> None:
        """Stop collecting; items still queued fail with :class:`BatcherClosed`."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._pending:
            item = self._pending.popleft()
            if not item.future.done():
                item.future.set_exception(BatcherClosed("the service is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def live_depth(self) -> int:
        """Items queued whose callers still wait (withdrawn ones excluded)."""
        return self._live_pending()

    # -- submitting ------------------------------------------------------------------------------
    async def submit(self, payloads: Sequence[T], names: Sequence[str]) -> list[R]:
        """Queue ``payloads`` and wait for their results (in order).

        Cancelling the caller (e.g. ``asyncio.wait_for`` timing out) withdraws its items.
        """
        if self._task is None or self._wakeup is None:
            raise BatcherClosed("the batcher is not running")
        loop = asyncio.get_running_loop()
        now = loop.time()
        items = [_Item(p, n, loop.create_future(), now) for p, n in zip(payloads, names)]
        self._pending.extend(items)
        self._wakeup.set()
        try:
            return list(await asyncio.gather(*(it.future for it in items)))
        finally:
            for it in items:  # withdrawn (cancelled) or a sibling failed: drop what is still queued
                if not it.future.done():
                    it.future.cancel()

    # -- collecting ------------------------------------------------------------------------------
    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        while self._pending and len(batch) < self.max_batch_size:
            item = self._pending.popleft()
            if not item.future.done():  # skip items whose caller gave up
                batch.append(item)
        return batch

    def _live_pending(self) -> int:
        return sum(1 for it in self._pending if not it.future.done())

    async def _collect(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._live_pending():
                self._pending.clear()  # only withdrawn items left
                self._wakeup.clear()
                await self._wakeup.wait()
            oldest = next(it for it in self._pending if not it.future.done())
            deadline = oldest.enqueued + self.max_wait_s
            while self._live_pending() < self.max_batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = self._take()
            if batch:
                await self._run_batch(loop, batch)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        t0 = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self._run, [it.payload for it in batch],
                                                 [it.name for it in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
        except asyncio.CancelledError:
            for it in batch:
                if not it.future.done():
                    it.future.set_exception(BatcherClosed("the service is shutting down"))
            raise
        except Exception as exc:  # noqa: BLE001 - the failure goes to the callers; the collector lives on
            log.exception("batch of %d failed", len(batch))
            for it in batch:
                if not it.future.done():
                    it.future.set_exception(exc)
        else:
            for it, r in zip(batch, results):
                if not it.future.done():
                    it.future.set_result(r)
        seconds = time.perf_counter() - t0
        self.batches += 1
        self.max_batch_seen = max(self.max_batch_seen, len(batch))
        if self._on_batch is not None:
            self._on_batch(len(batch), seconds)

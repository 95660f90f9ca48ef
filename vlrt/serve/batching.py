"""Dynamic batching across requests: one queue per kind of work (texts, videos).

Requests wait in a bounded queue; a batch leaves when it holds `max_batch` items or when its
oldest item has waited `max_wait_s`, and runs on the queue's own encoder thread, so a one-line
text query never waits behind a batch of videos. While a batch encodes, the next one gathers.
A full queue refuses new work at once (`Overloaded`, answered 429 with Retry-After); work whose
caller has gone (a cancelled future) is dropped before it reaches the encoder.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures as cf
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any


class Overloaded(Exception):
    """The queue is full; `retry_after` seconds is a fair time to wait."""

    def __init__(self, queue: str, depth: int, retry_after: float) -> None:
        super().__init__(f"the {queue} queue is full ({depth} waiting); retry after {retry_after:.0f} s")
        self.queue, self.retry_after = queue, retry_after


@dataclasses.dataclass
class Done:
    """What a batched item returns: its result, and where its time went."""

    result: Any
    queued_s: float  # from submit to the start of its batch
    encode_s: float  # the batch's encode time
    batch: int  # the size of the batch it ran in


@dataclasses.dataclass
class _Item:
    payload: Any
    future: asyncio.Future
    queued_at: float


class Batcher:
    """`fn(payloads) -> results` (one per payload, in order) runs on a dedicated thread, one batch
    at a time. `observe(batch_size, encode_s)` is called after each batch (metrics)."""

    def __init__(self, name: str, fn: Callable[[list[Any]], Sequence[Any]], *, max_batch: int, max_wait_s: float,
                 max_queue: int, observe: Callable[[int, float], None] | None = None) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError(f"{name} queue: max_batch and max_queue must be >= 1, max_wait_s >= 0")
        self.name, self.fn = name, fn
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.observe = observe
        self._items: collections.deque[_Item] = collections.deque()
        self._wake = asyncio.Event()
        self._thread = cf.ThreadPoolExecutor(1, thread_name_prefix=f"vlrt-{name}")
        self._task: asyncio.Task | None = None
        self._closing = False
        self._batch_s = collections.deque(maxlen=20)  # recent batch times, for Retry-After

    @property
    def depth(self) -> int:
        return len(self._items)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"vlrt-{self.name}-batcher")

    async def submit(self, payload: Any) -> Done:
        if self._closing:
            raise Overloaded(self.name, self.depth, 1.0)
        if len(self._items) >= self.max_queue:
            raise Overloaded(self.name, len(self._items), self.retry_after())
        future = asyncio.get_running_loop().create_future()
        self._items.append(_Item(payload, future, time.perf_counter()))
        self._wake.set()
        return await future

    def retry_after(self) -> float:
        """Seconds until the queue as it is now has drained, from recent batch times (at least 1)."""
        per_batch = sum(self._batch_s) / len(self._batch_s) if self._batch_s else 1.0
        return max(1.0, per_batch * (len(self._items) / self.max_batch + 1))

    async def stop(self) -> None:
        """Finish what is queued, then stop (graceful shutdown)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._thread.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._items:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            deadline = self._items[0].queued_at + self.max_wait_s
            while len(self._items) < self.max_batch and not self._closing:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except asyncio.TimeoutError:
                    break
            batch = []
            while self._items and len(batch) < self.max_batch:
                item = self._items.popleft()
                if not item.future.done():  # a caller that went away takes nothing from the encoder
                    batch.append(item)
            if batch:
                await self._encode(loop, batch)

    async def _encode(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._thread, self.fn, [i.payload for i in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name} batch: {len(results)} results for {len(batch)} items")
        except Exception as exc:  # noqa: BLE001 - every caller of the batch gets the error
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        took = time.perf_counter() - start
        self._batch_s.append(took)
        if self.observe is not None:
            self.observe(len(batch), took)
        for item, result in zip(batch, results):
            if not item.future.done():
                item.future.set_result(Done(result, start - item.queued_at, took, len(batch)))

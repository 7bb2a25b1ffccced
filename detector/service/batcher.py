"""Micro-batching: concurrent requests' images go through the model in one call.

Requests arrive one by one on the event loop; the model is much cheaper per image in a batch.
A single collector task gathers queued requests until the batch is full or the oldest request
has waited ``max_wait_s``, runs the batch function in a worker thread (never on the event loop)
and hands every caller its own slice of the results. At most one batch is in flight: while the
model runs, new requests queue up and form the next batch, so under load batches grow by
themselves and the wait bound only matters when traffic is light.

Waiting is adaptive by default: a caller may submit an *awaitable* of its items (e.g. the decoding
of its upload), which announces it before its items exist; an idle model waits (at most
``max_wait_s``) only while announced requests are still being prepared. A lone request is never
held back for company that is not coming.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class BatcherClosedError(RuntimeError):
    """The batcher was closed before (or while) the request could be served."""


class BatcherOverloadedError(RuntimeError):
    """Too many images are already queued; the caller should retry later (HTTP 503)."""


@dataclass
class _Entry(Generic[T, R]):
    items: list[T]
    future: asyncio.Future[list[R]]
    enqueued: float = field(default_factory=time.monotonic)


class MicroBatcher(Generic[T, R]):
    """Runs ``fn`` on batches made of the items of many concurrent :meth:`submit` calls.

    Args:
        fn: Called in ``executor`` with a list of items; must return one result per item,
            in order. Runs for one batch at a time.
        executor: Where ``fn`` runs (a single worker thread keeps the model off the event loop
            and serialises it with other model work such as adding references).
        max_batch: Most items per call. A request with more items than this runs alone.
            ``max_batch=1`` disables batching (one request per call).
        max_wait_s: Longest time the oldest queued request waits for company before its batch
            starts (only when the model is idle; a busy model batches whatever queued meanwhile).
        max_queue: Most items waiting; beyond it :meth:`submit` raises BatcherOverloadedError.
        on_batch: Called after each call with (number of items, seconds), e.g. for metrics.
        adaptive_wait: Wait only while announced requests (awaitables given to :meth:`submit`)
            are still being prepared; False: always wait up to ``max_wait_s``.

    Example:
        >>> batcher = MicroBatcher(lambda xs: [x * 2 for x in xs], executor=pool)  # doctest: +SKIP
        >>> await batcher.submit([1, 2])                                            # doctest: +SKIP
        [2, 4]
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        *,
        executor: Executor,
        max_batch: int = 32,
        max_wait_s: float = 0.005,
        max_queue: int = 1024,
        on_batch: Callable[[int, float], None] | None = None,
        adaptive_wait: bool = True,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self._fn = fn
        self._executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._on_batch = on_batch
        self.adaptive_wait = adaptive_wait
        self._incoming = 0  # announced requests still preparing their items
        self._pending: deque[_Entry[T, R]] = deque()
        self._queued_items = 0
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def queued_items(self) -> int:
        """Items waiting for a batch (not counting the batch in flight)."""
        return self._queued_items

    async def submit(self, items: Sequence[T] | Awaitable[Sequence[T]]) -> list[R]:
        """Queue ``items`` and wait for their results (one per item, same order).

        Args:
            items: The items, or an awaitable giving them: the request is then announced while
                it is awaited, so that an idle model waits for it rather than running alone.

        Raises:
            BatcherOverloadedError: The queue is full.
            BatcherClosedError: The batcher is closed.
            Exception: Whatever ``fn`` raised for the batch holding these items.
        """
        if self._closed:
            raise BatcherClosedError("the scoring queue is closed")
        if inspect.isawaitable(items):
            self._ensure_started()
            self._incoming += 1
            try:
                items = await items
            finally:
                self._incoming -= 1
                assert self._wakeup is not None
                self._wakeup.set()  # the collector may stop waiting for this one
            if self._closed:
                raise BatcherClosedError("the scoring queue is closed")
        items = list(items)
        if not items:
            return []
        if self._queued_items + len(items) > self.max_queue:
            raise BatcherOverloadedError(
                f"{self._queued_items} images already queued (limit {self.max_queue}); retry later"
            )
        self._ensure_started()
        assert self._wakeup is not None
        entry: _Entry[T, R] = _Entry(items, asyncio.get_running_loop().create_future())
        self._pending.append(entry)
        self._queued_items += len(items)
        self._wakeup.set()
        # Cancelling this await (request timeout, client gone) cancels the future; the collector
        # then drops the entry if its batch has not started yet.
        return await entry.future

    async def close(self) -> None:
        """Serve nothing new, finish the batch in flight, fail whatever is still queued."""
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        while self._pending:
            entry = self._pending.popleft()
            if not entry.future.done():
                entry.future.set_exception(BatcherClosedError("the service is shutting down"))
        self._queued_items = 0

    # ------------------------------------------------------------------ internals
    def _ensure_started(self) -> None:
        if self._task is None:
            self._wakeup = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def _run(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while not self._closed:
            self._drop_cancelled()
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # Wait for company until the oldest request's deadline or a full batch.
            deadline = self._pending[0].enqueued + self.max_wait_s
            while self._queued_items < self.max_batch and not self._closed:
                if self.adaptive_wait and self._incoming == 0:
                    break  # nobody announced: waiting would only add latency
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take_batch()
            if batch:
                await self._dispatch(loop, batch)

    def _drop_cancelled(self) -> None:
        kept = [e for e in self._pending if not e.future.done()]
        if len(kept) != len(self._pending):
            self._pending = deque(kept)
            self._queued_items = sum(len(e.items) for e in kept)

    def _take_batch(self) -> list[_Entry[T, R]]:
        batch: list[_Entry[T, R]] = []
        size = 0
        while self._pending:
            entry = self._pending[0]
            if entry.future.done():  # cancelled while queued
                self._pending.popleft()
                self._queued_items -= len(entry.items)
                continue
            if batch and size + len(entry.items) > self.max_batch:
                break
            self._pending.popleft()
            self._queued_items -= len(entry.items)
            batch.append(entry)
            size += len(entry.items)
        return batch

    async def _dispatch(self, loop: asyncio.AbstractEventLoop, batch: list[_Entry[T, R]]) -> None:
        try:
            results = await self._call(loop, [item for e in batch for item in e.items])
        except Exception as exc:  # noqa: BLE001 - handed to the callers, who decide
            if len(batch) == 1:
                _fail(batch[0], exc)
                return
            # One request's items may have broken the whole batch: retry each request alone so
            # only the culprit fails.
            log.warning(
                "batch of %d requests failed (%s); retrying them one by one", len(batch), exc
            )
            for entry in batch:
                if entry.future.done():
                    continue
                try:
                    _deliver(entry, await self._call(loop, entry.items))
                except Exception as single_exc:  # noqa: BLE001 - handed to this caller
                    _fail(entry, single_exc)
            return
        start = 0
        for entry in batch:
            stop = start + len(entry.items)
            _deliver(entry, results[start:stop])
            start = stop

    async def _call(self, loop: asyncio.AbstractEventLoop, items: list[T]) -> list[R]:
        started = time.perf_counter()
        results = list(await loop.run_in_executor(self._executor, self._fn, items))
        if len(results) != len(items):
            raise RuntimeError(
                f"batch function returned {len(results)} results for {len(items)} items"
            )
        if self._on_batch is not None:
            self._on_batch(len(items), time.perf_counter() - started)
        return results


def _deliver(entry: _Entry[T, R], results: list[R]) -> None:
    if not entry.future.done():
        entry.future.set_result(results)


def _fail(entry: _Entry[T, R], exc: BaseException) -> None:
    if not entry.future.done():
        entry.future.set_exception(exc)

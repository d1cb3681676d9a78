"""Adaptive batching behind a bounded queue.

Requests that arrive while a batch runs (or within ``max_wait`` of the first) are stacked along the
first axis and run as one call, up to ``max_batch_size`` rows. With ``max_wait`` 0 (the default) nothing
ever waits on purpose: a lone request runs at once, and batches form only from what queued while the
model was busy, which is the batching that costs no latency. When the queue holds ``max_queue``
requests, a new one is refused at once (:class:`Overloaded`, 503) rather than queued without bound.

Small models run on the event loop itself (a thread hand-off costs more than their inference); slow
ones in a worker thread so the loop keeps answering health checks. ``inline="auto"`` chooses from a
moving average of batch time.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .errors import ModelNotReady, Overloaded

RunBatch = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
BatchObserver = Callable[[dict[str, np.ndarray], dict[str, np.ndarray]], None]

# Above this average batch time the loop would stall too long: run in the worker thread instead.
INLINE_LIMIT_SECONDS = 0.002


@dataclass(slots=True)
class _Pending:
    feeds: dict[str, np.ndarray]
    rows: int
    key: object
    future: asyncio.Future
    solo: bool = False


def batch_key(feeds: dict[str, np.ndarray]) -> tuple:
    """Requests with equal keys can be stacked: same input names, dtypes and per-row shapes."""
    return tuple((name, array.dtype.str, array.shape[1:]) for name, array in feeds.items())


def split_rows(outputs: dict[str, np.ndarray], sizes: list[int]) -> list[dict[str, np.ndarray]]:
    """Cut batched outputs back into one dict per request (views, no copies). Pure."""
    pieces: list[dict[str, np.ndarray]] = [{} for _ in sizes]
    for name, array in outputs.items():
        start = 0
        for index, size in enumerate(sizes):
            pieces[index][name] = array[start:start + size]
            start += size
    return pieces


class AdaptiveBatcher:
    def __init__(
        self,
        run_batch: RunBatch,
        *,
        batchable: bool,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        inline: str = "auto",
        on_queue_depth: Callable[[int], None] | None = None,
        on_batch: Callable[[int, float], None] | None = None,
        observer: BatchObserver | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._run_batch = run_batch
        self._batchable = batchable
        self._max_batch = max_batch_size
        self._max_wait = max_wait_s
        self._max_queue = max_queue
        self._inline = inline
        self._on_queue_depth = on_queue_depth or (lambda depth: None)
        self._on_batch = on_batch or (lambda size, seconds: None)
        self._observer = observer
        self._clock = clock
        self._queue: deque[_Pending] = deque()
        self._scheduled = False
        self._running = False
        self._closed = False
        self._average_seconds = 0.0
        self._executor: ThreadPoolExecutor | None = None
        self._wait_handle: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def submit(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Queue one request's inputs and wait for its outputs."""
        if self._closed:
            raise ModelNotReady("the server is shutting down")
        if len(self._queue) >= self._max_queue:
            raise Overloaded(f"the request queue is full ({self._max_queue} waiting); retry later")
        loop = asyncio.get_running_loop()
        rows = next(iter(feeds.values())).shape[0] if self._batchable else 1
        key = batch_key(feeds) if self._batchable else object()
        pending = _Pending(feeds, rows, key, loop.create_future())
        self._queue.append(pending)
        self._idle.clear()
        self._on_queue_depth(len(self._queue))
        self._schedule(loop)
        return await pending.future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._scheduled or self._running:
            return
        self._scheduled = True
        # call_soon, not a direct call: requests parsed in the same loop iteration queue up first.
        if self._max_wait > 0 and self._queued_rows() < self._max_batch:
            self._wait_handle = loop.call_later(self._max_wait, self._flush)
        else:
            loop.call_soon(self._flush)

    def _queued_rows(self) -> int:
        return sum(p.rows for p in self._queue)

    def _take_batch(self) -> list[_Pending]:
        first = self._queue.popleft()
        batch = [first]
        if not self._batchable or first.solo:
            return batch
        rows = first.rows
        # Take compatible requests in arrival order; an incompatible one stays for a later batch.
        skipped: list[_Pending] = []
        while self._queue and rows < self._max_batch:
            candidate = self._queue.popleft()
            if candidate.key == first.key and not candidate.solo and rows + candidate.rows <= self._max_batch:
                batch.append(candidate)
                rows += candidate.rows
            else:
                skipped.append(candidate)
                if len(skipped) >= 64:
                    break
        self._queue.extendleft(reversed(skipped))
        return batch

    def _flush(self) -> None:
        self._scheduled = False
        self._wait_handle = None
        if self._running or not self._queue:
            return
        batch = self._take_batch()
        self._on_queue_depth(len(self._queue))
        batch = [p for p in batch if not p.future.cancelled()]
        if not batch:
            self._after_batch()
            return
        if len(batch) == 1:
            feeds = batch[0].feeds
        else:
            names = batch[0].feeds.keys()
            feeds = {name: np.concatenate([p.feeds[name] for p in batch]) for name in names}
        self._running = True
        if self._run_inline():
            started = self._clock()
            try:
                outputs = self._run_batch(feeds)
            except Exception as error:  # noqa: BLE001 - handed to each waiting request
                self._finish(batch, feeds, None, error, started)
            else:
                self._finish(batch, feeds, outputs, None, started)
        else:
            loop = asyncio.get_running_loop()
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
            started = self._clock()
            task = loop.run_in_executor(self._executor, self._run_batch, feeds)
            task.add_done_callback(
                lambda done: self._finish(
                    batch, feeds, None if done.exception() else done.result(), done.exception(), started
                )
            )

    def _run_inline(self) -> bool:
        if self._inline == "always":
            return True
        if self._inline == "never":
            return False
        return self._average_seconds < INLINE_LIMIT_SECONDS

    def _finish(
        self,
        batch: list[_Pending],
        feeds: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray] | None,
        error: BaseException | None,
        started: float,
    ) -> None:
        seconds = self._clock() - started
        self._average_seconds = 0.8 * self._average_seconds + 0.2 * seconds if self._average_seconds else seconds
        self._running = False
        if error is not None and len(batch) > 1:
            # One request's bad values must not fail the others it was stacked with: rerun each alone.
            for pending in reversed(batch):
                pending.solo = True
                self._queue.appendleft(pending)
        elif error is not None or outputs is None:
            failure = error if error is not None else RuntimeError("inference returned nothing")
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(failure)
        else:
            pieces = [outputs] if len(batch) == 1 else split_rows(outputs, [p.rows for p in batch])
            for pending, piece in zip(batch, pieces):
                if not pending.future.done():
                    pending.future.set_result(piece)
            self._on_batch(len(batch), seconds)
            if self._observer is not None:
                self._observer(feeds, outputs)
        self._after_batch()

    def _after_batch(self) -> None:
        if self._queue:
            self._schedule(asyncio.get_running_loop())
        elif not self._running:
            self._idle.set()

    async def close(self, drain_timeout_s: float = 10.0) -> None:
        """Refuse new requests, let queued ones finish (up to the timeout), then fail what is left."""
        self._closed = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=drain_timeout_s)
        except asyncio.TimeoutError:
            pass
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(ModelNotReady("the server shut down before this request ran"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

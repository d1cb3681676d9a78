"""Adaptive batching: concurrent requests are stacked into one call and cut back apart, a bad request
does not fail the ones it was stacked with, and a full queue is refused at once."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from optimodel_server.batching import AdaptiveBatcher, split_rows
from optimodel_server.errors import InvalidInput, ModelNotReady, Overloaded


def _doubling(calls: list[int]):  # noqa: ANN202
    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds["x"]
        calls.append(x.shape[0])
        if (x < 0).any():
            raise InvalidInput("negative values")
        return {"y": x * 2}
    return run


def _batcher(calls: list[int], **overrides) -> AdaptiveBatcher:
    options = dict(batchable=True, max_batch_size=8, max_wait_s=0.0, max_queue=100, inline="always")
    options.update(overrides)
    return AdaptiveBatcher(_doubling(calls), **options)


def test_split_rows_cuts_views_in_order() -> None:
    outputs = {"y": np.arange(6).reshape(6, 1)}
    pieces = split_rows(outputs, [1, 3, 2])
    assert [p["y"].ravel().tolist() for p in pieces] == [[0], [1, 2, 3], [4, 5]]


def test_concurrent_requests_are_batched_and_answered_with_their_own_rows() -> None:
    calls: list[int] = []
    sizes: list[int] = []

    async def scenario() -> list[dict[str, np.ndarray]]:
        batcher = _batcher(calls, on_batch=lambda size, seconds: sizes.append(size))
        inputs = [{"x": np.full((1, 2), i, dtype=np.float32)} for i in range(5)]
        return await asyncio.gather(*(batcher.submit(feeds) for feeds in inputs))

    results = asyncio.run(scenario())
    assert [r["y"].ravel().tolist() for r in results] == [[2 * i, 2 * i] for i in range(5)]
    assert calls == [5] and sizes == [5]


def test_batches_respect_max_batch_size_and_compatible_shapes() -> None:
    calls: list[int] = []

    async def scenario() -> None:
        batcher = _batcher(calls, max_batch_size=4)
        wide = [batcher.submit({"x": np.ones((1, 3), np.float32)}) for _ in range(6)]
        narrow = [batcher.submit({"x": np.ones((2, 2), np.float32)})]
        await asyncio.gather(*wide, *narrow)

    asyncio.run(scenario())
    assert sorted(calls) == [2, 2, 4]


def test_a_bad_request_does_not_fail_its_batch_neighbours() -> None:
    calls: list[int] = []

    async def scenario() -> list:
        batcher = _batcher(calls)
        good = [batcher.submit({"x": np.ones((1, 2), np.float32)}) for _ in range(3)]
        bad = batcher.submit({"x": -np.ones((1, 2), np.float32)})
        return await asyncio.gather(*good, bad, return_exceptions=True)

    results = asyncio.run(scenario())
    assert all(isinstance(r, dict) for r in results[:3])
    assert isinstance(results[3], InvalidInput)
    assert calls[0] == 4 and sorted(calls[1:]) == [1, 1, 1, 1]


def test_full_queue_is_refused_at_once() -> None:
    calls: list[int] = []

    async def scenario() -> list:
        batcher = _batcher(calls, max_queue=3)
        return await asyncio.gather(
            *(batcher.submit({"x": np.ones((1, 2), np.float32)}) for _ in range(5)), return_exceptions=True
        )

    results = asyncio.run(scenario())
    assert sum(isinstance(r, dict) for r in results) == 3
    assert sum(isinstance(r, Overloaded) for r in results) == 2
    assert Overloaded("x").status_code == 503


def test_worker_thread_mode_and_max_wait_batch_requests_arriving_apart() -> None:
    calls: list[int] = []

    async def scenario() -> None:
        batcher = _batcher(calls, inline="never", max_wait_s=0.05)
        first = asyncio.ensure_future(batcher.submit({"x": np.ones((1, 2), np.float32)}))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(batcher.submit({"x": np.ones((1, 2), np.float32)}))
        await asyncio.gather(first, second)
        await batcher.close()

    asyncio.run(scenario())
    assert calls == [2]


def test_closed_batcher_refuses_new_requests() -> None:
    async def scenario() -> None:
        batcher = _batcher([])
        await batcher.close()
        with pytest.raises(ModelNotReady):
            await batcher.submit({"x": np.ones((1, 2), np.float32)})

    asyncio.run(scenario())


def test_unbatchable_models_run_one_request_per_call() -> None:
    calls: list[int] = []

    async def scenario() -> None:
        batcher = _batcher(calls, batchable=False)
        await asyncio.gather(*(batcher.submit({"x": np.ones((1, 2), np.float32)}) for _ in range(3)))

    asyncio.run(scenario())
    assert calls == [1, 1, 1]

"""MicroBatcher: concurrent submits share model calls, and each caller gets its own results."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from detector.service.batcher import BatcherClosedError, BatcherOverloadedError, MicroBatcher


class FakeModel:
    """Records every call's batch and the thread it ran on; answers item -> (item, call number)."""

    def __init__(self, delay: float = 0.0, poison: object = None) -> None:
        self.delay = delay
        self.poison = poison
        self.batches: list[list[object]] = []
        self.threads: set[int] = set()
        self.lock = threading.Lock()

    def __call__(self, items: list[object]) -> list[tuple[object, int]]:
        with self.lock:
            self.batches.append(list(items))
            self.threads.add(threading.get_ident())
            call = len(self.batches)
        if self.poison is not None and self.poison in items:
            raise ValueError("poisoned batch")
        if self.delay:
            time.sleep(self.delay)
        return [(item, call) for item in items]


@pytest.fixture()
def pool():
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="model") as executor:
        yield executor


def test_concurrent_requests_share_one_call_and_get_their_own_results(pool):
    model = FakeModel()

    async def main():
        batcher = MicroBatcher(
            model, executor=pool, max_batch=32, max_wait_s=0.2, adaptive_wait=False
        )
        requests = [[f"r{r}-i{i}" for i in range(1 + r % 3)] for r in range(10)]
        results = await asyncio.gather(*(batcher.submit(items) for items in requests))
        await batcher.close()
        return requests, results

    requests, results = asyncio.run(main())
    for items, result in zip(requests, results):
        assert [item for item, _ in result] == items  # own items, own order
    assert len(model.batches) == 1  # 20 images, one model call
    assert sorted(x for b in model.batches for x in b) == sorted(x for r in requests for x in r)
    assert threading.main_thread().ident not in model.threads  # never on the event loop thread


def test_batches_are_bounded_and_requests_never_split(pool):
    model = FakeModel()

    async def main():
        batcher = MicroBatcher(
            model, executor=pool, max_batch=5, max_wait_s=0.2, adaptive_wait=False
        )
        requests = [[(r, i) for i in range(2)] for r in range(7)]  # 14 items in pairs
        results = await asyncio.gather(*(batcher.submit(items) for items in requests))
        await batcher.close()
        return requests, results

    requests, results = asyncio.run(main())
    assert all(len(b) <= 5 for b in model.batches)
    assert [len(b) for b in model.batches] == [4, 4, 4, 2]
    for items, result in zip(requests, results):
        assert [item for item, _ in result] == items
        assert len({call for _, call in result}) == 1  # a request's items stay in one call


def test_oversized_request_runs_alone(pool):
    model = FakeModel()

    async def main():
        batcher = MicroBatcher(model, executor=pool, max_batch=2, max_wait_s=0.05)
        out = await asyncio.gather(batcher.submit(list(range(5))), batcher.submit(["x"]))
        await batcher.close()
        return out

    big, small = asyncio.run(main())
    assert [item for item, _ in big] == list(range(5))
    assert [item for item, _ in small] == ["x"]
    assert sorted(len(b) for b in model.batches) == [1, 5]


def test_max_batch_one_disables_batching(pool):
    model = FakeModel()

    async def main():
        batcher = MicroBatcher(model, executor=pool, max_batch=1, max_wait_s=0.05)
        out = await asyncio.gather(*(batcher.submit([i]) for i in range(6)))
        await batcher.close()
        return out

    out = asyncio.run(main())
    assert [r[0][0] for r in out] == list(range(6))
    assert [len(b) for b in model.batches] == [1] * 6


def test_busy_model_batches_what_queued_meanwhile(pool):
    # With max_wait 0 the first request goes alone; the rest queue during its call and then
    # share the next one instead of running one by one.
    model = FakeModel(delay=0.2)

    async def main():
        batcher = MicroBatcher(model, executor=pool, max_batch=32, max_wait_s=0.0)
        first = asyncio.ensure_future(batcher.submit(["first"]))
        await asyncio.sleep(0.05)  # first batch is now running
        rest = await asyncio.gather(*(batcher.submit([i]) for i in range(8)))
        await first
        await batcher.close()
        return rest

    rest = asyncio.run(main())
    assert [len(b) for b in model.batches] == [1, 8]
    assert [r[0][0] for r in rest] == list(range(8))


def test_failing_batch_only_fails_the_culprit(pool):
    model = FakeModel(poison="bad")

    async def main():
        batcher = MicroBatcher(
            model, executor=pool, max_batch=32, max_wait_s=0.1, adaptive_wait=False
        )
        out = await asyncio.gather(
            batcher.submit(["a"]),
            batcher.submit(["bad", "b"]),
            batcher.submit(["c"]),
            return_exceptions=True,
        )
        await batcher.close()
        return out

    a, bad, c = asyncio.run(main())
    assert model.batches == [["a", "bad", "b", "c"], ["a"], ["bad", "b"], ["c"]]
    assert [x for x, _ in a] == ["a"]
    assert isinstance(bad, ValueError)
    assert [x for x, _ in c] == ["c"]


def test_wrong_result_count_is_an_error(pool):
    async def main():
        batcher = MicroBatcher(lambda xs: xs[:-1], executor=pool, max_batch=4, max_wait_s=0.0)
        try:
            with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
                await batcher.submit([1, 2])
        finally:
            await batcher.close()

    asyncio.run(main())


def test_cancelled_request_is_dropped_before_its_batch(pool):
    model = FakeModel(delay=0.2)

    async def main():
        batcher = MicroBatcher(model, executor=pool, max_batch=32, max_wait_s=0.0)
        first = asyncio.ensure_future(batcher.submit(["first"]))
        await asyncio.sleep(0.05)
        doomed = asyncio.ensure_future(batcher.submit(["doomed"]))
        kept = asyncio.ensure_future(batcher.submit(["kept"]))
        await asyncio.sleep(0.01)
        doomed.cancel()
        assert [x for x, _ in await kept] == ["kept"]
        await first
        await batcher.close()

    asyncio.run(main())
    assert ["doomed"] not in model.batches and all("doomed" not in b for b in model.batches)


def test_queue_limit_and_close(pool):
    model = FakeModel(delay=0.2)

    async def main():
        batcher = MicroBatcher(model, executor=pool, max_batch=2, max_wait_s=0.0, max_queue=3)
        running = asyncio.ensure_future(batcher.submit([0]))
        await asyncio.sleep(0.05)  # in flight: no longer counted as queued
        queued = asyncio.ensure_future(batcher.submit([1, 2, 3]))
        await asyncio.sleep(0)
        with pytest.raises(BatcherOverloadedError):
            await batcher.submit([4])
        await batcher.close()
        assert [x for x, _ in await running] == [0]
        with pytest.raises(BatcherClosedError):
            await queued
        with pytest.raises(BatcherClosedError):
            await batcher.submit([5])

    asyncio.run(main())


def test_on_batch_reports_sizes(pool):
    seen: list[int] = []

    async def main():
        batcher = MicroBatcher(
            lambda xs: xs,
            executor=pool,
            max_batch=8,
            max_wait_s=0.1,
            on_batch=lambda n, s: seen.append(n),
            adaptive_wait=False,
        )
        await asyncio.gather(*(batcher.submit([i, i]) for i in range(3)))
        await batcher.close()

    asyncio.run(main())
    assert seen == [6]


def test_rejects_bad_settings(pool):
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(lambda xs: xs, executor=pool, max_batch=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        MicroBatcher(lambda xs: xs, executor=pool, max_wait_s=-1)


def test_adaptive_wait_does_not_hold_a_lone_request(pool):
    model = FakeModel()

    async def main():
        batcher = MicroBatcher(model, executor=pool, max_batch=32, max_wait_s=2.0)
        t0 = time.perf_counter()
        result = await batcher.submit(["alone"])
        elapsed = time.perf_counter() - t0
        await batcher.close()
        return result, elapsed

    result, elapsed = asyncio.run(main())
    assert [x for x, _ in result] == ["alone"]
    assert elapsed < 1.0  # not the 2 s wait bound


def test_adaptive_wait_waits_for_announced_requests(pool):
    model = FakeModel()

    async def prepared(items, delay):
        await asyncio.sleep(delay)  # e.g. decoding an upload
        return items

    async def main():
        batcher = MicroBatcher(model, executor=pool, max_batch=32, max_wait_s=2.0)
        out = await asyncio.gather(
            batcher.submit(prepared(["fast"], 0.0)),
            batcher.submit(prepared(["slow", "slow2"], 0.2)),
            batcher.submit(prepared([], 0.1)),  # announced, then nothing to score
        )
        await batcher.close()
        return out

    _, slow, empty = asyncio.run(main())
    assert model.batches == [["fast", "slow", "slow2"]]  # waited for the announced one
    assert [x for x, _ in slow] == ["slow", "slow2"] and empty == []


def test_wait_bound_caps_waiting_for_announced_requests(pool):
    model = FakeModel()

    async def prepared(items, delay):
        await asyncio.sleep(delay)
        return items

    async def main():
        batcher = MicroBatcher(model, executor=pool, max_batch=32, max_wait_s=0.05)
        out = await asyncio.gather(batcher.submit(["now"]), batcher.submit(prepared(["late"], 0.5)))
        await batcher.close()
        return out

    asyncio.run(main())
    assert model.batches == [["now"], ["late"]]

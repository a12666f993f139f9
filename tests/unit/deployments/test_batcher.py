"""deployments/batching.py without a replica: continuous batching, budget, cancellation, failures.

`@serve.batch` runs as-is on a plain event loop; only its start-up check, which reads the replica context
(absent outside a replica), is switched off.
"""

from __future__ import annotations

import asyncio

import pytest
import ray.serve.batching as serve_batching

from deployments.batcher import BatchItem, TokenBudgetBatcher


@pytest.fixture(autouse=True)
def _no_replica_context(monkeypatch):
    monkeypatch.setattr(
        serve_batching._BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None
    )


class SlowModel:
    """Records each batch it computes; every forward takes `seconds`; payload 'boom' fails alone."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds
        self.batches: list[list] = []

    async def __call__(self, payloads: list) -> list:
        self.batches.append(list(payloads))
        await asyncio.sleep(self.seconds)
        return [ValueError("bad item") if p == "boom" else f"v:{p}" for p in payloads]


def _batcher(model: SlowModel, **kw) -> TokenBudgetBatcher:
    settings = {"max_batch_tokens": 64 * 16, "max_batch_size": 64, "batch_wait_timeout_s": 0.0, **kw}
    return TokenBudgetBatcher(model, **settings)


def test_arrivals_during_a_forward_share_the_next_one():
    async def run():
        model = SlowModel(0.1)
        batcher = _batcher(model)
        first = asyncio.create_task(batcher.submit("a", tokens=8))
        await asyncio.sleep(0.02)  # the model is busy with "a" now
        rest = [asyncio.create_task(batcher.submit(f"r{i}", tokens=8)) for i in range(20)]
        for i, task in enumerate(rest):
            assert await task == f"v:r{i}"
        assert await first == "v:a"
        return model.batches

    batches = asyncio.run(run())
    assert batches[0] == ["a"]  # an idle model starts at once
    assert sorted(batches[1]) == sorted(f"r{i}" for i in range(20)) and len(batches) == 2


def test_a_turn_keeps_to_the_budget():
    async def run():
        model = SlowModel(0.05)
        batcher = _batcher(model, max_batch_size=8, max_batch_tokens=8 * 16)
        blocker = asyncio.create_task(batcher.submit("x", tokens=8))
        await asyncio.sleep(0.01)
        results = await asyncio.gather(*(batcher.submit(f"p{i}", tokens=16) for i in range(20)))
        await blocker
        return model.batches, results

    batches, results = asyncio.run(run())
    assert results == [f"v:p{i}" for i in range(20)]
    assert all(len(b) <= 8 for b in batches) and sum(len(b) for b in batches) == 21


def test_cancelled_callers_are_not_computed():
    async def run():
        model = SlowModel(0.1)
        batcher = _batcher(model)
        busy = asyncio.create_task(batcher.submit("busy", tokens=8))
        await asyncio.sleep(0.02)
        doomed = asyncio.create_task(batcher.submit_all([f"d{i}" for i in range(10)], [8] * 10))
        kept = asyncio.create_task(batcher.submit("kept", tokens=8))
        await asyncio.sleep(0.02)  # everything is handed over and waits for the model
        doomed.cancel()
        assert await kept == "v:kept"
        await busy
        with pytest.raises(asyncio.CancelledError):
            await doomed
        return model.batches, batcher.computed_items

    batches, computed = asyncio.run(run())
    assert batches == [["busy"], ["kept"]] and computed == 2


def test_one_failing_item_fails_alone():
    async def run():
        batcher = _batcher(SlowModel(0.01))
        return await asyncio.gather(
            batcher.submit("ok1", 8), batcher.submit("boom", 8), batcher.submit("ok2", 8), return_exceptions=True
        )

    ok1, boom, ok2 = asyncio.run(run())
    assert (ok1, ok2) == ("v:ok1", "v:ok2") and isinstance(boom, ValueError)


def test_a_broken_model_fails_its_callers_instead_of_hanging():
    async def broken(payloads):
        raise RuntimeError("device lost")

    async def run():
        batcher = TokenBudgetBatcher(broken, max_batch_tokens=1024, max_batch_size=64, batch_wait_timeout_s=0.0)
        return await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(i, 8) for i in range(5)), return_exceptions=True), timeout=5
        )

    assert all(isinstance(r, RuntimeError) for r in asyncio.run(run()))


class CountingModel(SlowModel):
    """Also records how many passes ran at once at most."""

    def __init__(self, seconds: float = 0.05) -> None:
        super().__init__(seconds)
        self.running = 0
        self.most = 0

    async def __call__(self, payloads: list) -> list:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            return await super().__call__(payloads)
        finally:
            self.running -= 1


def test_parallel_passes_compute_side_by_side_and_each_caller_gets_its_own():
    async def run(passes: int):
        model = CountingModel(0.05)
        batcher = _batcher(model, max_batch_size=4, max_batch_tokens=4 * 16, parallel_passes=passes)
        results = await asyncio.gather(*(batcher.submit(f"x{i}", tokens=16) for i in range(16)))
        assert results == [f"v:x{i}" for i in range(16)]
        assert sorted(p for b in model.batches for p in b) == sorted(f"x{i}" for i in range(16))
        return model.most

    assert asyncio.run(run(1)) == 1
    assert asyncio.run(run(2)) == 2
    assert asyncio.run(run(3)) == 3


def test_one_big_group_still_spreads_over_parallel_passes():
    async def run():
        model = CountingModel(0.05)
        batcher = _batcher(model, max_batch_size=4, max_batch_tokens=4 * 16, parallel_passes=2)
        out = await batcher.submit_group([([f"g{i}" for i in range(12)], [16] * 12, None)])
        assert out == [[f"v:g{i}" for i in range(12)]]
        return model.most

    assert asyncio.run(run()) == 2


def test_items_arriving_as_the_drainer_finishes_are_still_computed():
    """The drain task that just emptied the queue is done but not yet removed (its done-callback runs a loop step
    later): an item enqueued in that gap must start a new drainer, not wait for its deadline."""

    async def run():
        model = SlowModel(0.0)
        batcher = _batcher(model)
        first = await batcher.submit("a", tokens=8)
        (drainer,) = batcher._drainers or [None]
        assert drainer is None or drainer.done()
        # enqueue directly, before the done-callback could run: no await between
        futures = batcher._enqueue([BatchItem("b", 1)])
        return first, await asyncio.wait_for(futures[0], timeout=2)

    assert asyncio.run(run()) == ("v:a", "v:b")

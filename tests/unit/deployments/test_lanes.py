"""The batcher's two priority lanes (deployments/batcher.py): interactive items ahead of queued bulk ones, bulk
keeping its share of every turn, a huge bulk request spread over turns, cancellation and deadlines per lane.

`@serve.batch` runs as-is on a plain event loop; only its start-up check, which reads the replica context
(absent outside a replica), is switched off.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import ray.serve.batching as serve_batching

from deployments.batcher import TokenBudgetBatcher
from deployments.calls import BULK, INTERACTIVE
from deployments.errors import DeadlineExceeded


@pytest.fixture(autouse=True)
def _no_replica_context(monkeypatch):
    monkeypatch.setattr(
        serve_batching._BatchQueue, "_warn_if_max_batch_size_exceeds_max_ongoing_requests", lambda self: None
    )


class Model:
    """Records each batch it computes; every forward takes `seconds`."""

    def __init__(self, seconds: float = 0.02) -> None:
        self.seconds = seconds
        self.batches: list[list] = []

    async def __call__(self, payloads: list) -> list:
        self.batches.append(list(payloads))
        await asyncio.sleep(self.seconds)
        return [f"v:{p}" for p in payloads]

    def batch_of(self, payload) -> int:
        return next(i for i, b in enumerate(self.batches) if payload in b)


def _batcher(model: Model, size: int = 8, **kw) -> TokenBudgetBatcher:
    """A budget of `size` slots of 16 tokens: an item of 16 tokens costs one slot."""
    return TokenBudgetBatcher(model, max_batch_tokens=size * 16, max_batch_size=size, batch_wait_timeout_s=0.0, **kw)


async def _busy(batcher: TokenBudgetBatcher) -> asyncio.Task:
    """A pass in flight (the model is busy), so what is submitted next waits for the next turn."""
    task = asyncio.create_task(batcher.submit("busy", 16))
    await asyncio.sleep(0.005)
    return task


def test_interactive_items_go_ahead_of_queued_bulk_ones():
    async def run():
        model = Model(0.02)
        batcher = _batcher(model)
        busy = await _busy(batcher)
        bulk = asyncio.create_task(batcher.submit_all([f"b{i}" for i in range(40)], [16] * 40, priority=BULK))
        await asyncio.sleep(0)
        queries = [asyncio.create_task(batcher.submit(f"q{i}", 16, priority=INTERACTIVE)) for i in range(3)]
        assert [await q for q in queries] == ["v:q0", "v:q1", "v:q2"]
        assert await bulk == [f"v:b{i}" for i in range(40)]
        await busy
        return model.batches

    batches = asyncio.run(run())
    assert batches[0] == ["busy"]
    # the very next turn: the queries, and no bulk work yet (bulk has earned no credit: a short pass)
    assert batches[1] == ["q0", "q1", "q2"]
    # with no query waiting, bulk turns take the whole budget, in arrival order
    assert batches[2] == [f"b{i}" for i in range(8)]
    assert [p for b in batches[1:] for p in b if p.startswith("b")] == [f"b{i}" for i in range(40)]


def test_one_lane_behaves_as_one_fifo_queue():
    """Everything interactive (no client names a lane) is today's single queue: arrival order, full turns."""

    async def run():
        model = Model(0.02)
        batcher = _batcher(model)
        busy = await _busy(batcher)
        big = asyncio.create_task(batcher.submit_all([f"b{i}" for i in range(40)], [16] * 40))
        await asyncio.sleep(0.005)
        query = asyncio.create_task(batcher.submit("q", 16))
        await asyncio.gather(big, query, busy)
        return model.batches

    batches = asyncio.run(run())
    assert all(len(b) <= 8 for b in batches)
    assert batches[-1][-1] == "q"  # behind the whole big request: what the bulk lane is for


def test_a_query_arriving_behind_a_huge_bulk_request_is_in_the_next_pass():
    async def run():
        model = Model(0.005)
        batcher = _batcher(model, size=64)
        n = 10_000
        bulk = asyncio.create_task(batcher.submit_all(list(range(n)), [16] * n, priority=BULK))
        await asyncio.sleep(0.012)  # a pass or two of it ran; ~9,900 inputs still queued
        passes_before = len(model.batches)
        assert passes_before >= 1 and batcher.waiting()[BULK] > n - 64 * 4
        start = time.monotonic()
        assert await batcher.submit("query", 16) == "v:query"
        took = time.monotonic() - start
        where = model.batch_of("query")
        bulk.cancel()
        with pytest.raises(asyncio.CancelledError):
            await bulk
        await asyncio.sleep(0.02)
        return model.batches, where, passes_before, took, batcher

    batches, where, passes_before, took, batcher = asyncio.run(run())
    # in the pass right after the one running when it arrived (at most one more pass started meanwhile)
    assert where <= passes_before + 1 and batches[where][0] == "query"
    assert took < 0.2  # ~150 passes of the bulk request were still to come
    assert all(len(b) <= 64 for b in batches)  # the huge request is spread over budget-sized turns
    # its callers left: the rest of it is never computed
    assert sum(len(b) for b in batches) < 10_000 and batcher.waiting()[BULK] == 0


def test_bulk_keeps_its_share_under_a_continuous_interactive_stream():
    async def run():
        model = Model(0.01)
        batcher = _batcher(model)  # 8 slots; bulk's share: 2
        stop = asyncio.Event()

        async def stream(k: int) -> int:
            """A client that always has a query waiting: the interactive lane is never empty."""
            done = 0
            while not stop.is_set():
                await batcher.submit(f"q{k}-{done}", 16)
                done += 1
            return done

        streams = [asyncio.create_task(stream(k)) for k in range(12)]
        await asyncio.sleep(0.03)
        bulk = await asyncio.wait_for(
            batcher.submit_all([f"b{i}" for i in range(20)], [16] * 20, priority=BULK), timeout=5
        )
        stop.set()
        answered = await asyncio.gather(*streams)
        return model.batches, bulk, answered

    batches, bulk, answered = asyncio.run(run())
    assert bulk == [f"v:b{i}" for i in range(20)]  # finished while queries kept coming
    assert sum(answered) > 60
    has_bulk = [any(p.startswith("b") for p in b) for b in batches]
    first, last = has_bulk.index(True), len(has_bulk) - 1 - has_bulk[::-1].index(True)
    window = batches[first : last + 1]  # the turns while bulk waited (and queries too)
    assert all(any(p.startswith("q") for p in b) for b in window)  # queries kept flowing all along
    # bulk's guaranteed share: a quarter of the slots, turn after turn (never two turns without it)
    share = sum(p.startswith("b") for b in window for p in b) / sum(len(b) for b in window)
    assert 0.2 <= share <= 0.35, share
    assert all(has_bulk[first : last + 1][i] or has_bulk[first : last + 1][i + 1] for i in range(len(window) - 1))


def test_a_whole_budget_bulk_item_still_progresses_under_queries():
    """A bulk item bigger than a turn's share waits until bulk's credit pays for it, then goes first."""

    async def run():
        model = Model(0.01)
        batcher = _batcher(model)
        stop = asyncio.Event()

        async def stream(k: int) -> None:
            i = 0
            while not stop.is_set():
                await batcher.submit(f"q{k}-{i}", 16)
                i += 1

        streams = [asyncio.create_task(stream(k)) for k in range(12)]
        await asyncio.sleep(0.03)
        big = await asyncio.wait_for(batcher.submit_all(["big0", "big1"], [8 * 16, 8 * 16], priority=BULK), timeout=5)
        stop.set()
        await asyncio.gather(*streams)
        return model.batches, big

    batches, big = asyncio.run(run())
    assert big == ["v:big0", "v:big1"]
    assert ["big0"] in batches and ["big1"] in batches  # each a whole budget: a pass of its own


def test_a_cancelled_bulk_request_is_not_computed_and_queries_are():
    async def run():
        model = Model(0.02)
        batcher = _batcher(model)
        busy = await _busy(batcher)
        doomed = asyncio.create_task(batcher.submit_all([f"d{i}" for i in range(30)], [16] * 30, priority=BULK))
        kept = asyncio.create_task(batcher.submit_all(["k0", "k1"], [16, 16], priority=BULK))
        query = asyncio.create_task(batcher.submit("q", 16))
        await asyncio.sleep(0.005)
        doomed.cancel()
        assert await query == "v:q" and await kept == ["v:k0", "v:k1"]
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await busy
        return model.batches, batcher.computed_by_lane

    batches, computed = asyncio.run(run())
    assert batches == [["busy"], ["q"], ["k0", "k1"]]
    assert computed == {INTERACTIVE: 2, BULK: 2}


def test_deadlines_hold_in_each_lane():
    async def run():
        model = Model(0.05)
        batcher = _batcher(model)
        busy = await _busy(batcher)
        soon = time.time() + 0.01  # passes while "busy" computes
        late_bulk = asyncio.create_task(batcher.submit_all(["lb0", "lb1"], [16, 16], soon, priority=BULK))
        late_query = asyncio.create_task(batcher.submit("lq", 16, soon))
        fine = asyncio.create_task(batcher.submit_all(["fb"], [16], time.time() + 5, priority=BULK))
        results = await asyncio.gather(late_bulk, late_query, fine, busy, return_exceptions=True)
        return model.batches, results

    batches, (late_bulk, late_query, fine, _) = asyncio.run(run())
    assert isinstance(late_bulk, DeadlineExceeded) and isinstance(late_query, DeadlineExceeded)
    assert fine == ["v:fb"]
    assert batches == [["busy"], ["fb"]]  # expired items take no room and are never computed


def test_a_coalesced_group_puts_each_call_in_its_lane():
    async def run():
        model = Model(0.02)
        batcher = _batcher(model)
        busy = await _busy(batcher)
        out = await batcher.submit_group(
            [
                ([f"b{i}" for i in range(10)], [16] * 10, None, BULK),
                (["q0", "q1"], [16, 16], None, INTERACTIVE),
                (["old"], [16], None),  # a call without a lane: interactive
            ]
        )
        await busy
        return model.batches, out

    batches, out = asyncio.run(run())
    assert out == [[f"v:b{i}" for i in range(10)], ["v:q0", "v:q1"], ["v:old"]]
    assert batches[1] == ["q0", "q1", "old"] and batches[2] == [f"b{i}" for i in range(8)]


def test_a_share_outside_zero_and_one_is_refused():
    for share in (0.0, 1.0):
        with pytest.raises(ValueError):
            _batcher(Model(), bulk_share=share)


def test_lanes_reach_the_metrics():
    class Recorder:
        def __init__(self) -> None:
            self.lanes: list[str] = []

        def batch(self, lengths, enqueued, padded, seconds, lanes=None) -> None:
            self.lanes += list(lanes or [])

        def call(self, outcome: str) -> None: ...

    async def run():
        recorder = Recorder()
        batcher = _batcher(Model(0.0), metrics=recorder)
        await asyncio.gather(batcher.submit("q", 16), batcher.submit_all(["b"], [16], priority=BULK))
        return recorder.lanes

    assert sorted(asyncio.run(run())) == [BULK, INTERACTIVE]


class Overlap(Model):
    """Also records, for each batch, how many other passes were running when it started."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.running: list[list] = []
        self.beside: list[list[list]] = []

    async def __call__(self, payloads: list) -> list:
        self.beside.append([list(b) for b in self.running])
        self.running.append(payloads)
        try:
            return await super().__call__(payloads)
        finally:
            self.running.remove(payloads)


def test_with_recent_queries_one_of_two_passes_stays_free_for_them():
    async def run():
        model = Overlap(0.03)
        batcher = _batcher(model, parallel_passes=2)
        await batcher.submit("warm", 16)  # a query: queries are recent from now on
        bulk = asyncio.create_task(batcher.submit_all([f"b{i}" for i in range(40)], [16] * 40, priority=BULK))
        await asyncio.sleep(0.045)  # inside a bulk pass
        assert await batcher.submit("q", 16) == "v:q"
        await bulk
        return model

    model = asyncio.run(run())
    bulk_batches = [i for i, b in enumerate(model.batches) if all(p.startswith("b") for p in b)]
    # bulk never ran two passes at once: the second pass was kept for queries...
    assert all(not any(p.startswith("b") for other in model.beside[i] for p in other) for i in bulk_batches)
    # ...and the query took it at once, beside the running bulk pass, instead of waiting for it to end
    q = model.batch_of("q")
    assert model.batches[q] == ["q"] and any(p.startswith("b") for other in model.beside[q] for p in other)


def test_without_recent_queries_bulk_takes_every_pass(monkeypatch):
    import deployments.batcher as batcher_module

    monkeypatch.setattr(batcher_module, "QUERIES_RECENT_S", 0.01)

    async def run():
        model = Overlap(0.03)
        batcher = _batcher(model, parallel_passes=2)
        await batcher.submit("warm", 16)
        await asyncio.sleep(0.02)  # the query is no longer recent
        assert await batcher.submit_all([f"b{i}" for i in range(40)], [16] * 40, priority=BULK)
        return model

    model = asyncio.run(run())
    assert any(any(p.startswith("b") for other in beside for p in other) for beside in model.beside[1:])

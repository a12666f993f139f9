"""The token-budget dynamic batcher shared by every model deployment (one home for batching).

Each input of a request becomes its own batch item, so items of different requests share a batch.
`@serve.batch` forms batches and hands them over at once; the model's next turn merges every batch waiting
by then (within the budget) into one, skipping items whose caller was cancelled meanwhile (continuous
batching: the batch grows with the load, an idle model starts at once). An
item's cost is its token count in "slots" of `max_batch_tokens / max_batch_size` tokens (at least one
slot, at most a whole batch), so a batch holds at most `max_batch_size` items and about
`max_batch_tokens` tokens, and a lone over-budget item still runs by itself.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ray import serve

from deployments.engines.micro_batches import plan_micro_batches
from deployments.errors import DeadlineExceeded
from deployments.metrics import ModelMetrics

log = logging.getLogger("ray.serve")


@dataclass(slots=True)
class BatchItem:
    payload: Any
    cost: int
    tokens: int = 0
    enqueued: float = 0.0
    cancelled: bool = False  # its caller went away (deadline, disconnect): skip it, do not compute it
    deadline: float | None = None  # time.time() after which nobody waits for it: skip it, answer DeadlineExceeded


def _settle(futures: Sequence[asyncio.Future], failure: BaseException) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(failure)


def batch_cost(items: Sequence[BatchItem]) -> int:
    """`batch_size_fn`: must never raise (a raise kills Serve's batch loop and the replica hangs)."""
    try:
        return sum(item.cost for item in items)
    except Exception:  # pragma: no cover - defensive: fall back to counting items
        return len(items)


class TokenBudgetBatcher:
    """Wraps `run_batch(payloads) -> results` (results may hold Exception objects, one per failed item)."""

    def __init__(
        self,
        run_batch: Callable[[list[Any]], Awaitable[list[Any]]],
        *,
        max_batch_tokens: int,
        max_batch_size: int,
        batch_wait_timeout_s: float,
        max_concurrent_batches: int = 1,
        parallel_passes: int = 1,
        worth_a_pass: Callable[[int], bool] | None = None,
        metrics: ModelMetrics | None = None,
    ) -> None:
        self.metrics = metrics
        self._run_batch = run_batch
        # Serve's batch function only hands items over: it queues them here and returns one future per item
        # at once, so Serve's batch slot is free again immediately. One drain task computes the waiting
        # items turn by turn, each turn taking everything waiting up to the budget: single-input requests
        # that arrive during a forward pass share the next one (continuous batching). A CPU replica runs
        # up to `parallel_passes` drain tasks, so that many passes compute side by side; a second one starts
        # only for work `worth_a_pass(tokens)` (for a near-free model the extra pass costs more than it computes).
        self._waiting: deque[tuple[list[BatchItem], list[asyncio.Future]]] = deque()
        self._drainers: set[asyncio.Task] = set()
        self.parallel_passes = max(1, parallel_passes)
        self._worth_a_pass = worth_a_pass or (lambda tokens: True)

        async def _hand_over(items: list[BatchItem]) -> list[asyncio.Future]:
            # Serve drops items whose caller was cancelled (timeout, disconnect) before calling us.
            return self._enqueue(items)

        self._batched = serve.batch(
            max_batch_size=max_batch_size,
            batch_wait_timeout_s=batch_wait_timeout_s,
            max_concurrent_batches=max_concurrent_batches,
            batch_size_fn=batch_cost,
        )(_hand_over)
        self.max_concurrent_batches = max_concurrent_batches
        self.computed_items = 0
        self.configure(max_batch_tokens, max_batch_size, batch_wait_timeout_s)

    def _enqueue(self, items: list[BatchItem]) -> list[asyncio.Future]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        start, cost = 0, 0
        for end, item in enumerate(items):  # entries of at most one budget each: a big group spreads over turns
            if end > start and cost + item.cost > self.max_batch_size:
                self._waiting.append((items[start:end], futures[start:end]))
                start, cost = end, 0
            cost += item.cost
        self._waiting.append((items[start:], futures[start:]))
        self._start_drainers(loop)
        return futures

    def _live_drainers(self) -> int:
        """Drain tasks still running. A finished one leaves `_drainers` only when its done-callback runs, a loop
        step later: counting it would leave items that arrive in between without a drainer (they would wait
        until their deadline)."""
        return sum(1 for d in self._drainers if not d.done())

    def _start_drainers(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._waiting and self._live_drainers() < self.parallel_passes:
            if self._live_drainers() and not self._worth_a_pass(self._waiting_tokens()):
                return
            drainer = loop.create_task(self._drain())
            self._drainers.add(drainer)
            drainer.add_done_callback(self._drainers.discard)

    def _waiting_tokens(self) -> int:
        return sum(item.tokens for items, _ in self._waiting for item in items)

    @property
    def pass_beside(self) -> bool:
        """Another pass runs, or is about to start, beside the one starting now."""
        if self._live_drainers() > 1:
            return True
        return bool(self._waiting) and self.parallel_passes > 1 and self._worth_a_pass(self._waiting_tokens())

    async def _drain(self) -> None:
        try:
            while self._waiting:
                turn = self._take_waiting()
                self._start_drainers(asyncio.get_running_loop())  # more waiting: a pass beside this one
                await self._compute(turn)
        finally:  # cancelled (replica shutting down): nobody may wait forever
            for _, futures in self._waiting:
                _settle(futures, RuntimeError("the model deployment is shutting down"))

    def _take_waiting(self) -> list[tuple[list[BatchItem], list[asyncio.Future]]]:
        """Waiting batches in arrival order, as many as fit the token budget (the first always)."""
        taken, cost = [], 0
        while self._waiting:
            items, _ = self._waiting[0]
            added = sum(item.cost for item in items if not item.cancelled)
            if taken and cost + added > self.max_batch_size:
                break
            taken.append(self._waiting.popleft())
            cost += added
        return taken

    async def _compute(self, group: list[tuple[list[BatchItem], list[asyncio.Future]]]) -> None:
        pairs = [(item, future) for items, futures in group for item, future in zip(items, futures, strict=True)]
        now = time.time()
        for item, future in pairs:
            if item.deadline is not None and now > item.deadline and not future.done():
                future.set_exception(DeadlineExceeded("The request ran past its deadline before its turn."))
        live = [(item, future) for item, future in pairs if not item.cancelled and not future.done()]
        self.computed_items += len(live)
        if not live:
            return
        start = time.monotonic()
        try:
            results = await self._run_batch([item.payload for item, _ in live])
        except BaseException as exc:  # run_batch isolates per item; this only guards against hangs
            _settle([f for _, f in live], exc if isinstance(exc, Exception) else RuntimeError("batch interrupted"))
            if not isinstance(exc, Exception):
                raise
            return
        if self.metrics is not None:
            lengths = [item.tokens for item, _ in live]
            groups = plan_micro_batches(lengths, self.max_batch_tokens)
            padded = sum(max(lengths[i] for i in g) * len(g) for g in groups)
            self.metrics.batch(lengths, [item.enqueued for item, _ in live], padded, time.monotonic() - start)
        for (_, future), result in zip(live, results, strict=True):
            if not future.done():  # its caller may have gone meanwhile
                future.set_result(result)

    def configure(self, max_batch_tokens: int, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        """Live update (from `reconfigure`); affects batches formed from now on."""
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self._slot_tokens = max(1.0, max_batch_tokens / max_batch_size)
        self._batched.set_max_batch_size(max_batch_size)
        self._batched.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def settings(self) -> dict[str, Any]:
        return {
            "max_batch_tokens": self.max_batch_tokens,
            "max_batch_size": self.max_batch_size,
            "batch_wait_timeout_s": self.batch_wait_timeout_s,
            "max_concurrent_batches": self.max_concurrent_batches,
        }

    def cost(self, tokens: int) -> int:
        return min(self.max_batch_size, max(1, math.ceil(tokens / self._slot_tokens)))

    async def submit(self, payload: Any, tokens: int, deadline: float | None = None) -> Any:
        item = BatchItem(
            payload=payload, cost=self.cost(tokens), tokens=tokens, enqueued=time.monotonic(), deadline=deadline
        )
        try:
            result = await (await self._batched(item))
        except asyncio.CancelledError:
            item.cancelled = True  # it may already be handed over, past Serve's own cancellation check
            raise
        if isinstance(result, BaseException):
            raise result
        return result

    async def submit_all(
        self, payloads: Sequence[Any], tokens: Sequence[int], deadline: float | None = None
    ) -> list[Any]:
        try:
            results = await asyncio.gather(
                *(self.submit(p, n, deadline) for p, n in zip(payloads, tokens, strict=True))
            )
        except asyncio.CancelledError:
            self._count("cancelled")
            raise
        except Exception:
            self._count("error")
            raise
        self._count("ok")
        return list(results)

    async def submit_group(self, calls: Sequence[tuple[Sequence[Any], Sequence[int], float | None]]) -> list[Any]:
        """Several calls' items that arrive together (the router coalesced them): handed to the model's queue as
        one group, without a pass through `@serve.batch` per item. `calls`: (payloads, tokens, deadline) each;
        -> per call, the list of its results in order, or the first failure among its items."""
        now = time.monotonic()
        items = [
            BatchItem(payload=p, cost=self.cost(n), tokens=n, enqueued=now, deadline=deadline)
            for payloads, tokens, deadline in calls
            for p, n in zip(payloads, tokens, strict=True)
        ]
        futures = self._enqueue(items)
        try:
            results = await asyncio.gather(*futures, return_exceptions=True)
        except asyncio.CancelledError:
            for item in items:
                item.cancelled = True
            self._count("cancelled")
            raise
        out: list[Any] = []
        start = 0
        for payloads, _, _ in calls:
            mine = results[start : start + len(payloads)]
            start += len(payloads)
            failure = next((r for r in mine if isinstance(r, BaseException)), None)
            self._count("ok" if failure is None else "error")
            out.append(failure if failure is not None else list(mine))
        return out

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.call(outcome)


def run_isolated(forward: Callable[[list[Any]], list[Any]], payloads: list[Any]) -> list[Any]:
    """Run a batch; if it fails, retry item by item so only the culprit fails (as an Exception result)."""
    try:
        return forward(payloads)
    except Exception as exc:
        if len(payloads) == 1:
            log.exception("inference failed for one item")
            return [exc]
    results: list[Any] = []
    for payload in payloads:
        try:
            results.extend(forward([payload]))
        except Exception as exc:
            log.exception("inference failed for one item")
            results.append(exc)
    return results

"""The token-budget dynamic batcher shared by every model deployment (one home for batching).

Each input of a request becomes its own batch item, so items of different requests share a batch.
`@serve.batch` forms batches and hands them over at once; the model's next turn merges every item waiting
by then (within the budget) into one, skipping items whose caller was cancelled or whose deadline passed
meanwhile (continuous batching: the batch grows with the load, an idle model starts at once). An
item's cost is its token count in "slots" of `max_batch_tokens / max_batch_size` tokens (at least one
slot, at most a whole batch), so a batch holds at most `max_batch_size` items and about
`max_batch_tokens` tokens, and a lone over-budget item still runs by itself.

Two lanes (issue #17: re-indexing and users' queries share the models). Every item waits in its call's lane,
`interactive` or `bulk`, first in first out within a lane, one item at a time, so a 10,000-input request is
never one unit: a turn takes as much of it as fits, and the turn after that is formed afresh.

- Only one lane waits: the turn takes it up to the whole budget.
- Both wait: the turn is the interactive items (up to the whole budget) plus the bulk items bulk has earned.
  So an interactive item that arrives while any amount of bulk work is queued goes into the very next turn
  (passes already running are not interrupted), and a lone query's turn is just the query: its latency is
  the pass running when it came plus its own short pass, not a batch of bulk work.
- No starvation, by a guaranteed share: while bulk waits, every slot the interactive lane takes earns bulk
  `bulk_share / (1 - bulk_share)` of a slot (with the default share, a quarter: a third), and the next turn starts with
  the bulk items that credit pays for, then fills up with queries. Under a stream of queries that never lets
  the interactive lane empty, bulk still gets a quarter of every slot computed; an item bigger than a turn's
  credit waits until enough has built up, then goes first, so even a whole-budget item gets its pass. Bulk
  gets every turn in which no query waits, and the credit starts from zero after such a turn.
  A share rather than an aging rule: aging promotes old bulk work into the interactive order, so a large
  backlog delays queries exactly when it is largest; a share bounds both sides at every moment (bulk >= a
  quarter of the model, a query <= the passes running + one turn).

A replica that runs several passes side by side (a CPU replica, one per thread) keeps one of them free of
bulk work while queries have arrived within the last second (`QUERIES_RECENT_S`): bulk then runs one pass fewer
(with the threads of the passes it does not run), and a query finds a pass free instead of waiting for a bulk
pass to end. With no recent queries bulk takes every pass.

Choose the budget for the lanes you need: on a replica with one pass (a GPU) a query may wait for the bulk
pass running when it arrives, a full budget, so there `max_batch_tokens` bounds how long a query can wait
behind bulk work (`python -m bench.lanes` measures both cases).
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

from deployments.calls import BULK, INTERACTIVE
from deployments.engines.micro_batches import plan_micro_batches
from deployments.errors import DeadlineExceeded
from deployments.metrics import ModelMetrics

log = logging.getLogger("ray.serve")

BULK_SHARE = 0.25  # of each turn's budget, kept for bulk items while interactive ones wait too
QUERIES_RECENT_S = 1.0  # interactive items seen this recently: keep one of several passes free for them


@dataclass(slots=True)
class BatchItem:
    payload: Any
    cost: int
    tokens: int = 0
    enqueued: float = 0.0
    cancelled: bool = False  # its caller went away (deadline, disconnect): skip it, do not compute it
    deadline: float | None = None  # time.time() after which nobody waits for it: skip it, answer DeadlineExceeded
    priority: str = INTERACTIVE  # its lane: interactive or bulk


Pair = tuple[BatchItem, asyncio.Future]


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


class _Lane:
    """One lane's waiting items, oldest first, and their token count (for `worth_a_pass`)."""

    __slots__ = ("queue", "tokens")

    def __init__(self) -> None:
        self.queue: deque[Pair] = deque()
        self.tokens = 0

    def push(self, pair: Pair) -> None:
        self.queue.append(pair)
        self.tokens += pair[0].tokens

    def pop(self) -> Pair:
        pair = self.queue.popleft()
        self.tokens -= pair[0].tokens
        return pair

    def head(self, now: float) -> BatchItem | None:
        """The oldest item still worth computing; those whose caller left or whose deadline passed are dropped
        (the latter answered DeadlineExceeded), so they take no room in a turn."""
        while self.queue:
            item, future = self.queue[0]
            if item.deadline is not None and now > item.deadline and not future.done():
                future.set_exception(DeadlineExceeded("The request ran past its deadline before its turn."))
            if not item.cancelled and not future.done():
                return item
            self.pop()
        return None

    def fill(self, turn: list[Pair], cost: int, limit: int, now: float) -> int:
        """Move items into `turn` while its cost stays within `limit` (an empty turn takes one item whatever
        its cost: a lone over-budget item still runs); -> the turn's cost."""
        while (item := self.head(now)) is not None:
            if turn and cost + item.cost > limit:
                break
            turn.append(self.pop())
            cost += item.cost
        return cost

    def settle(self, failure: BaseException) -> None:
        while self.queue:
            _settle([self.pop()[1]], failure)


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
        bulk_share: float = BULK_SHARE,
    ) -> None:
        self.metrics = metrics
        self._run_batch = run_batch
        # Serve's batch function only hands items over: it queues them here and returns one future per item
        # at once, so Serve's batch slot is free again immediately. One drain task computes the waiting
        # items turn by turn, each turn taking what is waiting up to the budget (see the module's lanes):
        # single-input requests that arrive during a forward pass share the next one (continuous batching).
        # A CPU replica runs up to `parallel_passes` drain tasks, so that many passes compute side by side; a
        # second one starts only for work `worth_a_pass(tokens)` (for a near-free model the extra pass costs
        # more than it computes).
        self._interactive = _Lane()
        self._bulk = _Lane()
        if not 0.0 < bulk_share < 1.0:
            raise ValueError("bulk_share must be between 0 and 1 (0: bulk could starve; 1: queries could)")
        self._bulk_credit = 0.0  # slots bulk has earned while queries took turns (see the module's lanes)
        self.bulk_share = bulk_share
        self._drainers: set[asyncio.Task] = set()
        self.parallel_passes = max(1, parallel_passes)
        self._bulk_passes = 0  # passes running that hold no interactive item
        self._queries_seen = -math.inf  # time.monotonic() of the last interactive item enqueued
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
        self.computed_by_lane = {INTERACTIVE: 0, BULK: 0}
        self.configure(max_batch_tokens, max_batch_size, batch_wait_timeout_s)

    def _enqueue(self, items: list[BatchItem]) -> list[asyncio.Future]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        for pair in zip(items, futures, strict=True):
            if pair[0].priority == BULK:
                self._bulk.push(pair)
            else:
                self._interactive.push(pair)
                self._queries_seen = pair[0].enqueued or time.monotonic()
        self._start_drainers(loop)
        return futures

    def _bulk_may_not_start(self) -> bool:
        """A pass about to start would hold only bulk work, and it would take the pass kept free for queries."""
        return (
            not self._interactive.queue
            and self.parallel_passes > 1
            and self._bulk_passes >= self.parallel_passes - 1
            and time.monotonic() - self._queries_seen < QUERIES_RECENT_S
        )

    def _has_waiting(self) -> bool:
        return bool(self._interactive.queue or self._bulk.queue)

    def _live_drainers(self) -> int:
        """Drain tasks still running. A finished one leaves `_drainers` only when its done-callback runs, a loop
        step later: counting it would leave items that arrive in between without a drainer (they would wait
        until their deadline)."""
        return sum(1 for d in self._drainers if not d.done())

    def _start_drainers(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._has_waiting() and self._live_drainers() < self.parallel_passes:
            if self._live_drainers() and not self._worth_a_pass(self._waiting_tokens()):
                return
            if self._bulk_may_not_start():
                return
            drainer = loop.create_task(self._drain())
            self._drainers.add(drainer)
            drainer.add_done_callback(self._drainers.discard)

    def _waiting_tokens(self) -> int:
        return self._interactive.tokens + self._bulk.tokens

    def waiting(self) -> dict[str, int]:
        """Items waiting per lane (those already cancelled included until their turn drops them)."""
        return {INTERACTIVE: len(self._interactive.queue), BULK: len(self._bulk.queue)}

    @property
    def pass_beside(self) -> bool:
        """Another pass runs, or is about to start, beside the one starting now."""
        if self._live_drainers() > 1:
            return True
        return self._has_waiting() and self.parallel_passes > 1 and self._worth_a_pass(self._waiting_tokens())

    async def _drain(self) -> None:
        try:
            while self._has_waiting():
                if self._bulk_may_not_start():
                    return  # the bulk passes running go on with bulk's lane; this pass stays free for queries
                turn = self._take_turn()
                bulk_only = all(item.priority == BULK for item, _ in turn)
                self._bulk_passes += bulk_only
                try:
                    self._start_drainers(asyncio.get_running_loop())  # more waiting: a pass beside this one
                    await self._compute(turn)
                finally:
                    self._bulk_passes -= bulk_only
        except BaseException:  # cancelled (replica shutting down): nobody may wait forever
            failure = RuntimeError("the model deployment is shutting down")
            self._interactive.settle(failure)
            self._bulk.settle(failure)
            raise

    def _take_turn(self) -> list[Pair]:
        """The next turn's items, within the budget: interactive ahead of bulk, bulk keeping its share."""
        budget, now = self.max_batch_size, time.time()
        interactive, bulk = self._interactive, self._bulk
        turn: list[Pair] = []
        if interactive.head(now) is None:  # bulk alone (or nothing): the whole budget; its credit starts over
            bulk.fill(turn, 0, budget, now)
            self._bulk_credit = 0.0
            return turn
        if bulk.head(now) is None:
            interactive.fill(turn, 0, budget, now)
            self._bulk_credit = 0.0
            return turn
        # Both wait. Credit and spending in one unit: a slot to bulk costs (1 - share), a slot to queries earns
        # share, so over a stream of such turns bulk's part of the slots is `share`.
        share = self.bulk_share
        cost = 0
        while (item := bulk.head(now)) is not None and cost + item.cost <= budget:
            price = item.cost * (1.0 - share)
            if price > self._bulk_credit + 1e-9:
                break
            turn.append(bulk.pop())
            cost += item.cost
            self._bulk_credit -= price
        queries = interactive.fill(turn, cost, budget, now) - cost
        self._bulk_credit += queries * share
        return turn

    async def _compute(self, pairs: list[Pair]) -> None:
        live = [(item, future) for item, future in pairs if not item.cancelled and not future.done()]
        self.computed_items += len(live)
        if not live:
            return
        for item, _ in live:
            self.computed_by_lane[BULK if item.priority == BULK else INTERACTIVE] += 1
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
            self.metrics.batch(
                lengths,
                [item.enqueued for item, _ in live],
                padded,
                time.monotonic() - start,
                lanes=[item.priority for item, _ in live],
            )
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
            "bulk_share": self.bulk_share,
        }

    def cost(self, tokens: int) -> int:
        return min(self.max_batch_size, max(1, math.ceil(tokens / self._slot_tokens)))

    def _item(self, payload: Any, tokens: int, deadline: float | None, priority: str, now: float) -> BatchItem:
        return BatchItem(
            payload=payload,
            cost=self.cost(tokens),
            tokens=tokens,
            enqueued=now,
            deadline=deadline,
            priority=BULK if priority == BULK else INTERACTIVE,
        )

    async def submit(
        self, payload: Any, tokens: int, deadline: float | None = None, priority: str = INTERACTIVE
    ) -> Any:
        item = self._item(payload, tokens, deadline, priority, time.monotonic())
        try:
            result = await (await self._batched(item))
        except asyncio.CancelledError:
            item.cancelled = True  # it may already be handed over, past Serve's own cancellation check
            raise
        if isinstance(result, BaseException):
            raise result
        return result

    async def submit_all(
        self,
        payloads: Sequence[Any],
        tokens: Sequence[int],
        deadline: float | None = None,
        priority: str = INTERACTIVE,
    ) -> list[Any]:
        """One call's items -> their results in order, or the first failure among them. Bulk items go straight
        to their lane (Serve's batch queue knows no lanes: a big bulk call there would hold queries behind it
        until all of it was handed over)."""
        if priority == BULK:
            (outcome,) = await self.submit_group([(payloads, tokens, deadline, BULK)])
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        try:
            results = await asyncio.gather(
                *(self.submit(p, n, deadline, priority) for p, n in zip(payloads, tokens, strict=True))
            )
        except asyncio.CancelledError:
            self._count("cancelled")
            raise
        except Exception:
            self._count("error")
            raise
        self._count("ok")
        return list(results)

    async def submit_group(self, calls: Sequence[tuple]) -> list[Any]:
        """Several calls' items that arrive together (the router coalesced them): handed to the model's queue as
        one group, without a pass through `@serve.batch` per item. `calls`: (payloads, tokens, deadline[,
        priority]) each; -> per call, the list of its results in order, or the first failure among its items."""
        now = time.monotonic()
        items = [
            self._item(p, n, call[2], call[3] if len(call) > 3 else INTERACTIVE, now)
            for call in calls
            for p, n in zip(call[0], call[1], strict=True)
        ]
        futures = self._enqueue(items)
        try:
            results = await asyncio.gather(*futures, return_exceptions=True)
        except asyncio.CancelledError:
            for item in items:
                item.cancelled = True
            self._count("cancelled", len(calls))
            raise
        out: list[Any] = []
        start = 0
        for call in calls:
            mine = results[start : start + len(call[0])]
            start += len(call[0])
            failure = next((r for r in mine if isinstance(r, BaseException)), None)
            self._count("ok" if failure is None else "error")
            out.append(failure if failure is not None else list(mine))
        return out

    def _count(self, outcome: str, calls: int = 1) -> None:
        if self.metrics is not None:
            for _ in range(calls):
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

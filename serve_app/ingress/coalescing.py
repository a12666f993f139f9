"""Concurrent calls for one model share one downstream call: the router's side of continuous batching.

A handle call costs both replicas far more CPU than a short query's model time, so under load the router
sends the calls that arrive while a model already has `max_in_flight` calls outstanding as ONE call
(`embed_many`), and the model replica answers each call on its own: every caller gets its own reply or its
own error, as if it had been sent alone. An idle model gets each call at once (no waiting to fill).

Cancellation and deadlines stay per caller: a caller that gives up (timeout, disconnect) stops waiting at
once; its inputs carry their deadline to the model replica, whose batcher skips inputs past it; a downstream
call whose callers have all gone is cancelled.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deployments.errors import ServiceError

MAX_IN_FLIGHT = 2  # downstream calls per model: the replica prepares the next group while the model computes
MAX_CALLS_PER_GROUP = 256


@dataclass(slots=True)
class _Group:
    waiters: list[tuple[Any, asyncio.Future]]
    response: Any = None
    live: int = 0
    done: bool = field(default=False)


class CallCoalescer:
    """`send(calls) -> DeploymentResponse` of a list with one result (or ServiceError) per call."""

    def __init__(
        self,
        send: Callable[[list], Any],
        map_failure: Callable[[BaseException], ServiceError],
        *,
        max_in_flight: int = MAX_IN_FLIGHT,
        max_calls: int = MAX_CALLS_PER_GROUP,
    ) -> None:
        self._send = send
        self._map_failure = map_failure
        self.max_in_flight = max_in_flight
        self.max_calls = max_calls
        self._waiting: deque[tuple[Any, asyncio.Future]] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task] = set()
        self.groups_sent = 0
        self.calls_sent = 0

    def submit(self, call: Any) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((call, future))
        if self._in_flight < self.max_in_flight:
            self._launch()
        return future

    def _launch(self) -> None:
        waiters: list[tuple[Any, asyncio.Future]] = []
        while self._waiting and len(waiters) < self.max_calls:
            call, future = self._waiting.popleft()
            if not future.done():  # its caller left while it waited: nothing to send
                waiters.append((call, future))
        if not waiters:
            return
        group = _Group(waiters=waiters, live=len(waiters))
        self._in_flight += 1
        self.groups_sent += 1
        self.calls_sent += len(waiters)
        for _, future in waiters:
            future.add_done_callback(lambda f, g=group: self._caller_done(g, f))
        task = asyncio.get_running_loop().create_task(self._run(group))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _caller_done(self, group: _Group, future: asyncio.Future) -> None:
        if future.cancelled():
            group.live -= 1
            if group.live == 0 and not group.done and group.response is not None:
                group.response.cancel()  # nobody waits for this call any more: free the model's queue

    async def _run(self, group: _Group) -> None:
        try:
            if group.live == 0:
                return  # every caller left before the call went out
            group.response = self._send([call for call, _ in group.waiters])
            results = await group.response
        except asyncio.CancelledError:
            self._settle(group, None, asyncio.CancelledError())
        except BaseException as exc:  # the whole call failed (replica gone, overload): every caller hears it
            self._settle(group, None, self._map_failure(exc))
        else:
            self._settle(group, results, None)
        finally:
            group.done = True
            self._in_flight -= 1
            if self._waiting and self._in_flight < self.max_in_flight:
                self._launch()

    @staticmethod
    def _settle(group: _Group, results: list | None, failure: BaseException | None) -> None:
        for i, (_, future) in enumerate(group.waiters):
            if future.done():
                continue
            outcome = failure if results is None else results[i]
            if isinstance(outcome, asyncio.CancelledError):
                future.cancel()
            elif isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

"""The router's coalescer on a plain event loop: grouping, per-caller results and errors, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from deployments.errors import InvalidRequest, Unavailable
from serve_app.ingress.coalescing import CallCoalescer


class FakeModel:
    """Stands in for a handle: `send(calls)` returns an awaitable 'response' the test releases by hand."""

    def __init__(self) -> None:
        self.sent: list[list] = []
        self.responses: list[FakeResponse] = []

    def send(self, calls: list) -> FakeResponse:
        self.sent.append(list(calls))
        response = FakeResponse(calls)
        self.responses.append(response)
        return response


class FakeResponse:
    def __init__(self, calls: list) -> None:
        self.calls = calls
        self.cancelled = False
        self._done = asyncio.get_running_loop().create_future()

    def answer(self, fail_on: set | None = None) -> None:
        """Each call's own answer (the call doubled), or an InvalidRequest for the calls in `fail_on`."""
        self._done.set_result(
            [InvalidRequest(f"bad {c}", param="input") if c in (fail_on or set()) else c * 2 for c in self.calls]
        )

    def fail(self, exc: BaseException) -> None:
        self._done.set_exception(exc)

    def cancel(self) -> None:
        self.cancelled = True

    def __await__(self):
        return self._done.__await__()


def _coalescer(model: FakeModel, **kw) -> CallCoalescer:
    return CallCoalescer(model.send, lambda exc: Unavailable(f"mapped: {exc}"), **kw)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_an_idle_model_gets_each_call_at_once_and_later_calls_share_one():
    async def main():
        model = FakeModel()
        co = _coalescer(model, max_in_flight=1)
        first = co.submit(1)
        await _settle()
        assert model.sent == [[1]]  # nothing waits to fill a group
        later = [co.submit(n) for n in (2, 3, 4)]
        await _settle()
        assert model.sent == [[1]]  # one call in flight: the others wait
        model.responses[0].answer()
        assert await first == 2
        await _settle()
        assert model.sent == [[1], [2, 3, 4]]  # the waiting calls go as one
        model.responses[1].answer()
        assert [await f for f in later] == [4, 6, 8]  # every caller gets its own answer
        assert (co.groups_sent, co.calls_sent) == (2, 4)

    asyncio.run(main())


def test_an_error_stays_with_its_call():
    async def main():
        model = FakeModel()
        co = _coalescer(model, max_in_flight=1)
        blocker = co.submit(0)
        futures = [co.submit(n) for n in (1, 2, 3)]
        await _settle()
        model.responses[0].answer()
        await blocker
        await _settle()
        model.responses[1].answer(fail_on={2})
        assert await futures[0] == 2 and await futures[2] == 6
        with pytest.raises(InvalidRequest, match="bad 2"):
            await futures[1]

    asyncio.run(main())


def test_a_failed_group_call_reaches_every_caller_as_a_domain_error():
    async def main():
        model = FakeModel()
        co = _coalescer(model, max_in_flight=1)
        futures = [co.submit(n) for n in (1, 2)]
        await _settle()
        model.responses[0].fail(RuntimeError("replica died"))
        with pytest.raises(Unavailable, match="mapped: replica died"):
            await futures[0]
        await _settle()
        model.responses[1].answer()  # the next group still goes out and is answered
        assert await futures[1] == 4

    asyncio.run(main())


def test_a_caller_that_left_is_not_sent_and_a_group_nobody_waits_for_is_cancelled():
    async def main():
        model = FakeModel()
        co = _coalescer(model, max_in_flight=1)
        blocker = co.submit(0)
        leaving = co.submit(1)
        staying = co.submit(2)
        await _settle()
        leaving.cancel()  # its caller timed out or disconnected while it waited
        model.responses[0].answer()
        await blocker
        await _settle()
        assert model.sent[1] == [2]  # the cancelled call never left the router
        staying.cancel()
        await _settle()
        assert model.responses[1].cancelled  # nobody waits for that group any more: the model may drop it
        model.responses[1].answer()
        await _settle()

    asyncio.run(main())


def test_groups_are_bounded():
    async def main():
        model = FakeModel()
        co = _coalescer(model, max_in_flight=1, max_calls=3)
        futures = [co.submit(n) for n in range(8)]
        await _settle()
        for _ in range(4):
            model.responses[-1].answer()
            await _settle()
        assert [len(g) for g in model.sent] == [1, 3, 3, 1]
        assert [await f for f in futures] == [2 * n for n in range(8)]

    asyncio.run(main())


@pytest.mark.parametrize(
    "deployment,coalesces",
    [
        ({}, True),
        ({"num_replicas": 3}, True),
        ({"num_replicas": "auto"}, False),
        ({"autoscaling_config": {"min_replicas": 1, "max_replicas": 4}}, False),
        ({"autoscaling_config": {"min_replicas": 1, "max_replicas": 1}}, True),
        ({"autoscaling_config": {"min_replicas": 1, "max_replicas": 4}, "coalesce_calls": True}, True),
        ({"coalesce_calls": False}, False),
    ],
)
def test_coalescing_stays_off_where_serve_autoscales_on_ongoing_calls(deployment, coalesces):
    from deployments.spec import DeploymentConfig

    assert DeploymentConfig.model_validate(deployment).coalesces() is coalesces

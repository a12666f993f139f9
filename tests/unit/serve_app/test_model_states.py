"""Model states from Serve's status: which requests are refused at once (503 + Retry-After) and why."""

from __future__ import annotations

import asyncio

import pytest

from deployments.errors import Unavailable
from serve_app.ingress.model_states import ModelStates, state_of

WAITING = (
    "Deployment 'big' in application 'embedserve' has 1 replicas that have taken more than 30s to be scheduled. "
    'Resources required for each replica: {"CPU": 1.0}, total resources available: {"CPU": 0.0}.'
)


@pytest.mark.parametrize(
    ("status", "replicas", "message", "state"),
    [
        ("HEALTHY", {"RUNNING": 2}, "", "running"),
        ("UPDATING", {"RUNNING": 1, "STARTING": 1}, "", "running"),
        ("UPDATING", {"STARTING": 1}, "", "starting"),
        ("UPDATING", {"PENDING_ALLOCATION": 1}, WAITING, "waiting_for_resources"),
        ("DEPLOY_FAILED", {}, "ValueError: no such model folder", "failed"),
        ("UNHEALTHY", {"STOPPING": 1}, "health check failed", "unhealthy"),
        ("HEALTHY", {}, "", "scaled_to_zero"),
    ],
)
def test_state_of(status, replicas, message, state):
    assert state_of(status, replicas, message).state == state


def test_only_models_without_an_answering_replica_are_refused():
    states = ModelStates(["up", "zero", "big", "broken", "new", "loading"])
    states.update(
        {
            "up": state_of("HEALTHY", {"RUNNING": 1}, ""),
            "zero": state_of("HEALTHY", {}, ""),
            "loading": state_of("UPDATING", {"STARTING": 1}, ""),
            "big": state_of("UPDATING", {"PENDING_ALLOCATION": 1}, WAITING),
            "broken": state_of("DEPLOY_FAILED", {}, "ValueError: no such model folder"),
        }
    )
    check = lambda name: asyncio.run(states.check(name))  # noqa: E731
    check("up")
    check("zero")  # Serve scales it up on this request
    check("new")  # not known yet: let Serve decide
    check("loading")  # a redeploy passes through this: its requests wait for the new replica
    with pytest.raises(Unavailable) as waiting:
        check("big")
    assert waiting.value.retry_after_s == 30 and "waiting for resources" in str(waiting.value)
    assert '"CPU": 1.0' in str(waiting.value)
    with pytest.raises(Unavailable) as failed:
        check("broken")
    assert "failed to start" in str(failed.value) and "no such model folder" in str(failed.value)
    public = states.public()
    assert public == {
        "up": "running",
        "zero": "scaled_to_zero",
        "big": "waiting_for_resources",
        "broken": "failed",
        "new": "unknown",
        "loading": "starting",
    }

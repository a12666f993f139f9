"""Whether each model has a replica to answer, known without calling it.

Without this, a request for a model that cannot answer (waiting for CPUs or a GPU the cluster does not have,
failed to start, unhealthy) waits in Serve's handle queue until the request deadline and answers 504 with no
word about why. Every router replica reads Serve's own status for its application in the background (about
once a second, off the request path) and the dispatcher refuses such requests at once: 503, `Retry-After`, and
the reason. A model that has running replicas, that Serve scaled to zero on purpose, or that is starting (its
requests wait for it, as during a redeploy) is not refused. Serve says a replica is waiting for resources
once it has waited 30 s to be scheduled; `embedserve serve` checks placement before it deploys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from deployments.errors import Unavailable

log = logging.getLogger("ray.serve")

REFRESH_S = 1.0
FIRST_READ_WAIT_S = 1.0

# state -> seconds a client should wait before retrying
RETRY_AFTER_S = {"starting": 5, "waiting_for_resources": 30, "failed": 60, "unhealthy": 10}


@dataclass(frozen=True, slots=True)
class ModelState:
    state: str  # running | starting | waiting_for_resources | unhealthy | failed | scaled_to_zero
    running: int = 0
    detail: str = ""  # Serve's own words (resources asked for and free, the last error): for authenticated callers

    @property
    def answers(self) -> bool:
        """Requests go on to Serve. A starting model is not refused: a redeploy passes through "starting" (Serve
        stops old replicas before it starts their replacements) and its requests must wait, not fail."""
        return self.state in ("running", "scaled_to_zero", "starting")


def state_of(status: str, replica_states: dict[str, int], message: str) -> ModelState:
    """One deployment's Serve status -> our state. `status`: Serve's DeploymentStatus value; replica_states:
    ReplicaState value -> count; message: Serve's status message."""
    running = int(replica_states.get("RUNNING", 0))
    if running > 0:
        return ModelState("running", running)
    if status == "DEPLOY_FAILED":
        return ModelState("failed", 0, message)
    if status == "UNHEALTHY":
        return ModelState("unhealthy", 0, message)
    if status in ("HEALTHY", "DOWNSCALING") and not any(replica_states.values()):
        return ModelState("scaled_to_zero", 0)
    if "to be scheduled" in message or "Resources required" in message:
        return ModelState("waiting_for_resources", 0, message)
    return ModelState("starting", 0, message)


def refusal(name: str, state: ModelState) -> Unavailable:
    words = {
        "starting": f"Model {name} is starting (no replica is running yet).",
        "waiting_for_resources": f"Model {name} cannot start: its replica is waiting for resources the cluster "
        "does not have free (CPUs, GPUs or memory).",
        "unhealthy": f"Model {name} has no healthy replica; it is being restarted.",
        "failed": f"Model {name} failed to start.",
    }[state.state]
    if state.detail:
        words += f" Serve says: {state.detail[:600]}"
    return Unavailable(words, retry_after_s=RETRY_AFTER_S[state.state])


ANSWERING = frozenset({"HEALTHY", "UPSCALING", "DOWNSCALING"})  # Serve's statuses with the target running


def _read_status(app_name: str) -> dict[str, ModelState]:
    """Serve's status of this application's deployments (controller calls: run in a thread).

    In steady state one light call (the application's status overview: a small protobuf) says every deployment
    is healthy. Only when one is not does the full status (per-replica counts, which tell a rolling update
    with old replicas still answering from a first start with none) get read: it is a much bigger message.
    """
    from ray.serve.context import _get_global_client

    overview = _get_global_client().get_serve_status(app_name)
    light = {d.name: (str(getattr(d.status, "value", d.status)), d.message or "") for d in overview.deployment_statuses}
    if all(status in ANSWERING for status, _ in light.values()):
        return {name: ModelState("running") for name in light}
    return _read_full_status(app_name)


def _read_full_status(app_name: str) -> dict[str, ModelState]:
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None:
        return {}
    return {
        name: state_of(
            str(getattr(d.status, "value", d.status)),
            {str(getattr(k, "value", k)): v for k, v in d.replica_states.items()},
            d.message or "",
        )
        for name, d in app.deployments.items()
    }


class ModelStates:
    """This application's model states, refreshed in the background; `check` costs a dict lookup."""

    def __init__(self, names: list[str], app_name: str | None = None, refresh_s: float = REFRESH_S) -> None:
        self.names = list(names)
        self.app_name = app_name
        self.refresh_s = refresh_s
        self._states: dict[str, ModelState] = {}
        self._task: asyncio.Task | None = None
        self._loaded: asyncio.Event | None = None

    def start(self) -> None:
        """Begin refreshing (inside a replica, on its event loop). Outside Serve it stays empty: all allowed."""
        if self._task is None and self.app_name:
            self._loaded = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def _first_read(self) -> None:
        """The first requests of a new router replica wait (at most a second) for the first status read."""
        if self._task is None:
            self.start()
        if self._loaded is not None and not self._loaded.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._loaded.wait(), FIRST_READ_WAIT_S)

    async def known(self, name: str) -> ModelState | None:
        await self._first_read()
        return self._states.get(name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _refresh_forever(self) -> None:
        while True:
            try:
                states = await asyncio.to_thread(_read_status, self.app_name)
                self._states = {n: states[n] for n in self.names if n in states}
            except Exception as exc:  # the controller restarting: keep the last known states
                log.debug("model states not refreshed: %r", exc)
            if self._loaded is not None:
                self._loaded.set()
            await asyncio.sleep(self.refresh_s)

    def update(self, states: dict[str, ModelState]) -> None:
        self._states = dict(states)

    async def check(self, name: str) -> None:
        """Raise 503's Unavailable when `name` has no replica to answer; unknown state: let it through."""
        if self._loaded is None or not self._loaded.is_set():
            await self._first_read()
        state = self._states.get(name)
        if state is not None and not state.answers:
            raise refusal(name, state)

    def public(self) -> dict[str, str]:
        """Per model, one word (for /ready and /v1/models, which need no key): no errors, no resources."""
        return {n: self._states[n].state if n in self._states else "unknown" for n in self.names}

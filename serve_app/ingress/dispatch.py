"""Dispatch by model name: the served specs and one cached handle per (model, method), calls under a deadline.

Built once per router replica (Ray Serve LLM's ingress does the same: `handle.options(...)` makes a new handle
each time, so the options are applied once at start-up). Embedding calls go through a per-model coalescer
(ingress/coalescing.py) and carry their deadline to the model. Every call carries its request's priority lane
(ingress/priority.py): bulk calls never join a coalesced group, whose callers all wait for its slowest call, so
a query never waits for a re-indexing request's reply. Every failure leaves as a domain error.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ray.serve.handle import DeploymentHandle

from deployments.calls import BULK, EmbedCall, EmbedReply, RerankCall, RerankReply
from deployments.errors import DeadlineExceeded, NotFound
from deployments.spec import ModelSpec
from serve_app.ingress.coalescing import CallCoalescer
from serve_app.ingress.errors import from_ray
from serve_app.ingress.model_states import ModelStates
from serve_app.ingress.priority import resolve

METHODS = ("embed", "embed_many", "rerank", "tokenize", "describe")


def unknown_model(name: str, available: list[str]) -> NotFound:
    return NotFound(
        f"The model '{name}' does not exist. Available models: {', '.join(sorted(available))}.", param="model"
    )


async def _awaited(response) -> Any:
    return await response


class Dispatcher:
    def __init__(
        self,
        specs: dict[str, ModelSpec],
        handles: dict[str, DeploymentHandle],
        timeout_s: float,
        app_name: str | None = None,
    ) -> None:
        self.specs = specs
        self.timeout_s = timeout_s
        self.states = ModelStates(list(specs), app_name)  # a model with no replica to answer: 503 at once
        self._handles = {
            method: {name: h.options(method_name=method) for name, h in handles.items()} for method in METHODS
        }
        # Only models with a fixed replica count: Serve's autoscaler counts ongoing calls, and coalesced calls
        # would hide the load from it.
        self._coalescers = {
            name: CallCoalescer(handle.remote, from_ray)
            for name, handle in self._handles["embed_many"].items()
            if specs[name].deployment.coalesces()
        }

    def spec(self, name: str) -> ModelSpec:
        spec = self.specs.get(name)
        if spec is None:
            raise unknown_model(name, list(self.specs))
        return spec

    async def embed(self, name: str, call: EmbedCall, priority: str | None = None) -> EmbedReply:
        """`priority`: the request body's field, as sent (None: the header, the key's default, interactive)."""
        call.priority = resolve(priority)
        await self.states.check(name)
        call.deadline = time.time() + self.timeout_s  # the model skips this call's inputs once it has passed
        coalescer = self._coalescers.get(name)
        if coalescer is None or call.priority == BULK:
            return await self._call(self._handles["embed"][name].remote(call))
        future = coalescer.submit(call)
        try:
            return await asyncio.wait_for(future, timeout=self.timeout_s)
        except TimeoutError:
            raise self._deadline_exceeded() from None

    def _deadline_exceeded(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"The request took longer than {self.timeout_s:g} s.")

    async def rerank(self, name: str, call: RerankCall, priority: str | None = None) -> RerankReply:
        call.priority = resolve(priority)
        await self.states.check(name)
        return await self._call(self._handles["rerank"][name].remote(call))

    async def tokenize(self, name: str, texts: list[str]) -> list[list[int]]:
        await self.states.check(name)
        return await self._call(self._handles["tokenize"][name].remote(texts))

    async def describe(self, name: str, timeout_s: float) -> dict:
        return await asyncio.wait_for(_awaited(self._handles["describe"][name].remote()), timeout=timeout_s)

    async def _call(self, response) -> Any:
        """Await a deployment's answer within the request deadline; map every failure to a domain error."""
        try:
            return await asyncio.wait_for(_awaited(response), timeout=self.timeout_s)
        except TimeoutError:
            response.cancel()  # frees the model's queue slots for this request
            raise self._deadline_exceeded() from None
        except asyncio.CancelledError:
            response.cancel()  # the client went away: drop its queued items too
            raise
        except Exception as exc:
            raise from_ray(exc) from None

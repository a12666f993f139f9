"""GET /v1/models (each model's kind, limits, dimensions, tasks, modalities, outputs), /health and /ready."""

from __future__ import annotations

import asyncio
import time

from fastapi import FastAPI
from fastapi.responses import Response

from deployments.spec import ModelSpec
from serve_app.config import Limits
from serve_app.ingress.dispatch import Dispatcher
from serve_app.ingress.encoding import dumps
from serve_app.ingress.endpoints.common import FastRoutes, json_response
from serve_app.schemas import Health, ModelCard, ModelList

READY_PROBE_TIMEOUT_S = 5.0


def model_card(spec: ModelSpec, created: int) -> ModelCard:
    rng = spec.dimension_range()
    return ModelCard(
        id=spec.name,
        created=created,
        kind=spec.kind or "embedding",
        family=spec.family,
        max_tokens=spec.max_tokens,
        dimensions=spec.dimensions,
        dimension_range=list(rng) if rng else None,
        default_dimensions=spec.default_dimensions,
        tasks=spec.tasks or [],
        instruction_aware=bool(spec.instruction_aware),
        late_chunking=bool(spec.late_chunking),
        modalities=list(spec.modalities or ()),
        outputs=list(spec.outputs or ()),
        rerank=spec.recipe.rerank_rule,
        fallback=spec.fallback,
    )


def register(app: FastAPI, dispatcher: Dispatcher, limits: Limits) -> FastRoutes:
    created = int(time.time())
    cards = [model_card(s, created) for s in dispatcher.specs.values()]
    bodies: dict[tuple, bytes] = {}  # per combination of model states: the list changes only with them

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> Response:
        states = dispatcher.states.public()
        key = tuple(states.values())
        body = bodies.get(key)
        if body is None:
            listed = [card.model_copy(update={"state": states.get(card.id)}) for card in cards]
            body = bodies[key] = dumps(ModelList(data=listed).model_dump(mode="json"))
        return Response(body, media_type="application/json")

    @app.get("/health", response_model=Health)
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/ready", response_model=Health, responses={503: {"model": Health}})
    async def ready() -> Response:
        """Public (no key): one word per model, nothing about errors or resources (those go to callers)."""
        names = list(dispatcher.specs)

        async def probe(name: str) -> str:
            state = await dispatcher.states.known(name)
            if state is not None:
                return "ready" if state.answers else state.state
            try:  # Serve's status not read yet: ask the model itself
                await dispatcher.describe(name, READY_PROBE_TIMEOUT_S)
                return "ready"
            except Exception:  # not ready is an answer, not an error
                return "unavailable"

        states = dict(zip(names, await asyncio.gather(*(probe(n) for n in names)), strict=True))
        ok = all(v == "ready" for v in states.values())
        return json_response({"status": "ready" if ok else "not_ready", "models": states}, 200 if ok else 503)

    return {}  # GET routes: nothing to parse

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
    models_body = dumps(
        ModelList(data=[model_card(s, created) for s in dispatcher.specs.values()]).model_dump(mode="json")
    )

    @app.get("/v1/models", response_model=ModelList)
    async def models() -> Response:
        return Response(models_body, media_type="application/json")

    @app.get("/health", response_model=Health)
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/ready", response_model=Health, responses={503: {"model": Health}})
    async def ready() -> Response:
        names = list(dispatcher.specs)

        async def probe(name: str) -> str:
            try:
                await dispatcher.describe(name, READY_PROBE_TIMEOUT_S)
                return "ready"
            except Exception as exc:  # not ready is an answer, not an error
                return f"unavailable: {type(exc).__name__}"

        states = dict(zip(names, await asyncio.gather(*(probe(n) for n in names)), strict=True))
        ok = all(v == "ready" for v in states.values())
        return json_response({"status": "ready" if ok else "not_ready", "models": states}, 200 if ok else 503)

    return {}  # GET routes: nothing to parse

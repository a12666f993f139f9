"""POST /v1/embeddings (OpenAI shape plus the seed's fields): policy -> model -> text fallback -> bytes."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.responses import Response

from deployments.errors import ServiceError
from serve_app.config import Limits
from serve_app.ingress.dispatch import Dispatcher
from serve_app.ingress.encoding import embeddings_response
from serve_app.ingress.endpoints.common import ERROR_RESPONSES, FastRoutes
from serve_app.policy import fallback_for, plan_embedding
from serve_app.schemas import EmbeddingRequest, EmbeddingResponse

log = logging.getLogger("ray.serve")


def register(app: FastAPI, dispatcher: Dispatcher, limits: Limits) -> FastRoutes:
    @app.post("/v1/embeddings", response_model=EmbeddingResponse, responses=ERROR_RESPONSES)
    async def embeddings(body: EmbeddingRequest) -> Response:
        spec = dispatcher.spec(body.model)
        plan = plan_embedding(spec, body, limits)
        try:
            reply = await dispatcher.embed(spec.name, plan.call, body.priority)
        except ServiceError as failure:
            fallback = fallback_for(spec, dispatcher.specs, plan.call, failure)
            if fallback is None:
                raise
            log.warning("%s failed (%s); text-only request served by %s", spec.name, failure.code, fallback[0].name)
            reply = await dispatcher.embed(fallback[0].name, fallback[1], body.priority)
        payload = embeddings_response(
            reply.vectors,
            plan.output_type,
            reply.model or spec.name,
            reply.total_tokens,
            dense="dense" in plan.call.outputs,
            sparse=reply.sparse,
            colbert=reply.colbert,
        )
        return Response(payload, media_type="application/json")

    return {"/v1/embeddings": (EmbeddingRequest, embeddings)}

"""The HTTP ingress deployment: validate, apply policy, dispatch by model name, encode the answer.

It never imports torch: everything model-specific happens in the model deployments behind the
handles it is given at build time (one cached handle per model and method).
"""

import asyncio
import time
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app import http_errors
from serve_app.body_limit import BodySizeLimit
from serve_app.config import Limits, ModelSpec
from serve_app.encoding import dumps, embeddings_response
from serve_app.errors import ServiceError, unknown_model
from serve_app.policy import plan_embedding
from serve_app.schemas import EmbeddingRequest, EmbeddingResponse, ErrorResponse, Health, ModelCard, ModelList

app = FastAPI(
    title="embedserve",
    version="0.1.0",
    description="Embeddings and reranking for many models behind one OpenAI/Jina/Cohere-compatible endpoint.",
)
_settings: dict[str, Any] = {"limits": Limits()}
app.add_middleware(BodySizeLimit, limit=lambda: _settings["limits"].max_body_bytes)
http_errors.install(app)

_ERRORS = {
    400: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(dumps(payload), status_code=status, media_type="application/json")


def model_card(spec: ModelSpec, created: int) -> ModelCard:
    rng = spec.dimension_range()
    rerank = None
    if spec.kind == "rerank":
        rerank = "cross-encoder score"
    elif spec.kind == "embedding":
        rerank = "cosine similarity of embeddings"
    return ModelCard(
        id=spec.name,
        created=created,
        kind=spec.kind or "embedding",
        family=spec.family,
        max_tokens=spec.max_tokens,
        dimensions=spec.dimensions,
        dimension_range=list(rng) if rng else None,
        default_dimensions=spec.default_dimensions,
        tasks=spec.tasks,
        instruction_aware=spec.instruction_aware,
        late_chunking=spec.late_chunking,
        modalities=list(spec.modalities),
        rerank=rerank,
        fallback=spec.fallback,
    )


@serve.deployment
@serve.ingress(app)
class Router:
    def __init__(self, specs: list[dict], handles: dict[str, DeploymentHandle], limits: dict | None = None) -> None:
        self.specs = {s["name"]: ModelSpec.model_validate(s) for s in specs}
        self.limits = Limits.model_validate(limits or {})
        _settings["limits"] = self.limits
        self.handles = handles
        self._embed = {name: h.options(method_name="embed") for name, h in handles.items()}
        self._describe = {name: h.options(method_name="describe") for name, h in handles.items()}
        created = int(time.time())
        self._models_body = dumps(
            ModelList(data=[model_card(s, created) for s in self.specs.values()]).model_dump(mode="json")
        )

    def _spec(self, name: str) -> ModelSpec:
        spec = self.specs.get(name)
        if spec is None:
            raise unknown_model(name, list(self.specs))
        return spec

    @staticmethod
    async def _call(response) -> Any:
        try:
            return await response
        except ServiceError as exc:
            raise http_errors.from_ray(exc) from None
        except Exception as exc:
            raise http_errors.from_ray(exc) from None

    @app.post("/v1/embeddings", response_model=EmbeddingResponse, responses=_ERRORS)
    async def embeddings(self, body: EmbeddingRequest) -> Response:
        spec = self._spec(body.model)
        plan = plan_embedding(spec, body, self.limits)
        reply = await self._call(self._embed[spec.name].remote(plan.call))
        payload = embeddings_response(reply.vectors, plan.output_type, reply.model or spec.name, reply.total_tokens)
        return Response(payload, media_type="application/json")

    @app.get("/v1/models", response_model=ModelList)
    async def models(self) -> Response:
        return Response(self._models_body, media_type="application/json")

    @app.get("/health", response_model=Health)
    async def health(self) -> Response:
        return _json({"status": "ok"})

    @app.get("/ready", response_model=Health, responses={503: {"model": Health}})
    async def ready(self) -> Response:
        names = list(self._describe)

        async def probe(name: str) -> str:
            try:
                await asyncio.wait_for(self._describe[name].remote(), timeout=5)
                return "ready"
            except Exception as exc:  # not ready is an answer, not an error
                return f"unavailable: {type(exc).__name__}"

        states = dict(zip(names, await asyncio.gather(*(probe(n) for n in names)), strict=True))
        ok = all(v == "ready" for v in states.values())
        return _json({"status": "ready" if ok else "not_ready", "models": states}, 200 if ok else 503)

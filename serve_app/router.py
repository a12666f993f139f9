"""The HTTP ingress deployment: validate, apply policy, dispatch by model name, encode the answer.

It never imports torch: everything model-specific happens in the model deployments behind the
handles it is given at build time (one cached handle per model and method).
"""

import asyncio
import logging
import time
import uuid
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.responses import Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app import http_errors
from serve_app.auth import BearerAuth, load_keys
from serve_app.body_limit import BodySizeLimit
from serve_app.chunking import plan_chunks, split_sentences
from serve_app.config import AuthConfig, Limits, ModelSpec
from serve_app.encoding import dumps, embeddings_response
from serve_app.errors import ServiceError, bad_request, too_large, unknown_model
from serve_app.http_metrics import HTTPMetrics
from serve_app.policy import (
    VL_FAMILIES,
    RerankPlan,
    check_texts,
    fallback_for,
    late_chunking_refusal,
    plan_embedding,
    plan_rerank,
)
from serve_app.protocol import EmbedCall
from serve_app.schemas import (
    ChunkRequest,
    ChunkResponse,
    CohereRerankRequest,
    CohereRerankResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    Health,
    ModelCard,
    ModelList,
    RerankRequest,
    RerankResponse,
    TokenizeRequest,
    TokenizeResponse,
)

app = FastAPI(
    title="embedserve",
    version="0.1.0",
    description="Embeddings and reranking for many models behind one OpenAI/Jina/Cohere-compatible endpoint.",
)
log = logging.getLogger("ray.serve")
_settings: dict[str, Any] = {"limits": Limits(), "api_keys": []}
app.add_middleware(BodySizeLimit, limit=lambda: _settings["limits"].max_body_bytes)
app.add_middleware(BearerAuth, keys=lambda: _settings["api_keys"])
app.add_middleware(HTTPMetrics)  # added last: runs first, so 401s and 413s are counted too
http_errors.install(app)


_ERRORS = {
    400: {"model": ErrorResponse},
    404: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}


def _usage(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": tokens, "total_tokens": tokens}


def _json(payload: Any, status: int = 200) -> Response:
    return Response(dumps(payload), status_code=status, media_type="application/json")


def model_card(spec: ModelSpec, created: int) -> ModelCard:
    rng = spec.dimension_range()
    rerank = None
    if spec.family == "cross-encoder":
        rerank = "cross-encoder: sigmoid of the relevance logit"
    elif spec.family == "qwen3-vl-reranker":
        rerank = "reranker: sigmoid of the yes - no logits at the last position"
    elif spec.kind == "rerank":
        rerank = "reranker: probability of 'yes' from the judge template"
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
        outputs=list(spec.outputs),
        rerank=rerank,
        fallback=spec.fallback,
    )


async def _awaited(response) -> Any:
    return await response


@serve.deployment
@serve.ingress(app)
class Router:
    def __init__(
        self,
        specs: list[dict],
        handles: dict[str, DeploymentHandle],
        limits: dict | None = None,
        auth: dict | None = None,
        request_timeout_s: float = 60.0,
    ) -> None:
        self.specs = {s["name"]: ModelSpec.model_validate(s) for s in specs}
        self.limits = Limits.model_validate(limits or {})
        self.timeout_s = request_timeout_s
        auth_cfg = AuthConfig.model_validate(auth or {})
        _settings["limits"] = self.limits
        _settings["api_keys"] = load_keys(auth_cfg.api_keys, auth_cfg.api_keys_env)
        self.handles = handles
        self._embed = {name: h.options(method_name="embed") for name, h in handles.items()}
        self._rerank = {name: h.options(method_name="rerank") for name, h in handles.items()}
        self._describe = {name: h.options(method_name="describe") for name, h in handles.items()}
        self._tokenize = {name: h.options(method_name="tokenize") for name, h in handles.items()}
        created = int(time.time())
        self._models_body = dumps(
            ModelList(data=[model_card(s, created) for s in self.specs.values()]).model_dump(mode="json")
        )

    def _spec(self, name: str) -> ModelSpec:
        spec = self.specs.get(name)
        if spec is None:
            raise unknown_model(name, list(self.specs))
        return spec

    async def _call(self, response) -> Any:
        """Await a deployment's answer within the request deadline; map every failure to a ServiceError."""
        try:
            return await asyncio.wait_for(_awaited(response), timeout=self.timeout_s)
        except TimeoutError:
            response.cancel()  # frees the model's queue slots for this request
            raise ServiceError(
                f"The request took longer than {self.timeout_s:g} s.", status=504, type="timeout_error", code="timeout"
            ) from None
        except asyncio.CancelledError:
            response.cancel()  # the client went away: drop its queued items too
            raise
        except Exception as exc:
            raise http_errors.from_ray(exc) from None

    @app.post("/v1/embeddings", response_model=EmbeddingResponse, responses=_ERRORS)
    async def embeddings(self, body: EmbeddingRequest) -> Response:
        spec = self._spec(body.model)
        plan = plan_embedding(spec, body, self.limits)
        try:
            reply = await self._call(self._embed[spec.name].remote(plan.call))
        except ServiceError as failure:
            fallback = fallback_for(spec, self.specs, plan.call, failure)
            if fallback is None:
                raise
            log.warning("%s failed (%s); text-only request served by %s", spec.name, failure.status, fallback[0].name)
            reply = await self._call(self._embed[fallback[0].name].remote(fallback[1]))
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

    async def _ranked(self, plan: RerankPlan, spec: ModelSpec) -> tuple[np.ndarray, np.ndarray, int, str]:
        """-> (order of documents best first, cut to top_n; scores in document order; tokens; model)."""
        if plan.rerank is not None:
            reply = await self._call(self._rerank[spec.name].remote(plan.rerank))
            scores, tokens, model = reply.scores, reply.total_tokens, reply.model
        else:
            reply = await self._call(self._embed[spec.name].remote(plan.embed))
            scores = reply.vectors[1:] @ reply.vectors[0]  # unit vectors: dot product = cosine
            tokens, model = reply.total_tokens, reply.model
        order = np.argsort(-scores, kind="stable")[: plan.top_n]
        return order, scores, tokens, model or spec.name

    @app.post("/v1/rerank", response_model=RerankResponse, responses=_ERRORS)
    async def rerank(self, body: RerankRequest) -> Response:
        spec = self._spec(body.model)
        plan = plan_rerank(
            spec,
            query=body.query,
            documents=body.documents,
            top_n=body.top_n,
            limits=self.limits,
            instruction=body.instruction,
            max_tokens_per_doc=body.max_tokens_per_doc,
            raw_scores=body.raw_scores,
        )
        order, scores, tokens, model = await self._ranked(plan, spec)
        results = []
        for i in order.tolist():
            item: dict[str, Any] = {"index": i, "relevance_score": float(scores[i])}
            if body.return_documents:
                item["document"] = plan.documents[i]
            results.append(item)
        return _json(
            {
                "id": uuid.uuid4().hex,
                "model": model,
                "results": results,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "meta": {"billed_units": {"input_tokens": tokens, "search_units": 1}},
            }
        )

    @app.post("/v2/rerank", response_model=CohereRerankResponse, responses=_ERRORS)
    async def rerank_cohere_v2(self, body: CohereRerankRequest) -> Response:
        spec = self._spec(body.model)
        plan = plan_rerank(
            spec,
            query=body.query,
            documents=body.documents,
            top_n=body.top_n,
            limits=self.limits,
            max_tokens_per_doc=body.max_tokens_per_doc,
        )
        order, scores, tokens, _ = await self._ranked(plan, spec)
        results = [{"index": i, "relevance_score": float(scores[i])} for i in order.tolist()]
        meta = {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens, "search_units": 1}}
        return _json({"id": uuid.uuid4().hex, "results": results, "meta": meta})

    @app.post("/v1/chunk", response_model=ChunkResponse, responses=_ERRORS)
    async def chunk(self, body: ChunkRequest) -> Response:
        """Semantic chunking: sentences -> boundary-model embeddings -> breaks where similarity drops."""
        spec = self._spec(body.model)
        embed_spec = self._spec(body.embedding_model or body.model)
        for s in (spec, embed_spec):
            if s.kind != "embedding" or s.family in VL_FAMILIES:
                raise bad_request(f"Model {s.name} cannot chunk text: use a text embedding model.", param="model")
        if not body.input.strip():
            raise bad_request("`input` must not be empty.", param="input", code="empty_input")
        if len(body.input) > self.limits.max_chars_per_input:
            raise too_large(
                f"input has {len(body.input)} characters; the limit is {self.limits.max_chars_per_input} "
                "(max_chars_per_input).",
                param="input",
            )
        if body.late_chunking and not body.return_embeddings:
            raise bad_request("late_chunking needs return_embeddings=true.", param="late_chunking")
        if body.late_chunking and late_chunking_refusal(embed_spec):
            raise bad_request(late_chunking_refusal(embed_spec), param="late_chunking")
        sentences = split_sentences(body.input)
        if len(sentences) > self.limits.max_inputs_per_request:
            raise too_large(
                f"input has {len(sentences)} sentences; the limit is {self.limits.max_inputs_per_request} "
                "(max_inputs_per_request).",
                param="input",
            )
        texts = [x.text for x in sentences]
        reply = await self._call(self._embed[spec.name].remote(EmbedCall(texts=texts, truncate=True)))
        tokens = reply.total_tokens
        max_chunk = body.max_chunk_tokens or embed_spec.max_tokens
        chunks = plan_chunks(
            sentences,
            reply.vectors,
            reply.token_counts,
            text=body.input,
            method=body.method,
            threshold=body.threshold,
            percentile=body.percentile,
            max_chunk_tokens=max_chunk,
        )
        out = [
            {
                "object": "chunk",
                "index": c.index,
                "text": c.text,
                "start": c.start,
                "end": c.end,
                "tokens": c.tokens,
                "oversized": c.oversized,
            }
            for c in chunks
        ]
        if body.return_embeddings:
            call = EmbedCall(texts=[c.text for c in chunks], truncate=True, late_chunking=body.late_chunking)
            vectors = await self._call(self._embed[embed_spec.name].remote(call))
            tokens += vectors.total_tokens
            for item, vector in zip(out, vectors.vectors, strict=True):
                item["embedding"] = vector
        return _json({"object": "list", "model": spec.name, "chunks": out, "usage": _usage(tokens)})

    @app.post("/tokenize", response_model=TokenizeResponse, responses=_ERRORS)
    @app.post("/v1/tokenize", response_model=TokenizeResponse, responses=_ERRORS, include_in_schema=False)
    async def tokenize(self, body: TokenizeRequest) -> Response:
        """Token ids and counts per input, exactly as the model will see them (instructions included)."""
        spec = self._spec(body.model)
        if spec.family in VL_FAMILIES:
            raise bad_request(f"Model {spec.name}: /tokenize covers text models only.", param="model")
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if spec.kind == "embedding":
            request = EmbeddingRequest(model=spec.name, input=texts, task=body.task, prompt_name=body.prompt_name)
            texts = plan_embedding(spec, request, self.limits).call.texts
        else:
            check_texts(texts, self.limits)
            if body.task or body.prompt_name:
                raise bad_request(f"Model {spec.name} takes no task here.", param="task")
        ids = await self._call(self._tokenize[spec.name].remote(texts))
        data = [{"index": i, "count": len(x), **({"ids": x} if body.return_ids else {})} for i, x in enumerate(ids)]
        total = sum(len(x) for x in ids)
        return _json(
            {"object": "list", "model": spec.name, "max_tokens": spec.max_tokens, "data": data, "usage": _usage(total)}
        )

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

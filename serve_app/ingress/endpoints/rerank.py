"""POST /v1/rerank (Jina / Cohere v1) and /v2/rerank (Cohere v2): a reranker scores the pairs, an embedding
model ranks by cosine similarity; results best first, cut to top_n."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.responses import Response

from deployments.spec import ModelSpec
from serve_app.config import Limits
from serve_app.ingress.dispatch import Dispatcher
from serve_app.ingress.endpoints.common import ERROR_RESPONSES, FastRoutes, json_response
from serve_app.policy import RerankPlan, plan_rerank
from serve_app.schemas import CohereRerankRequest, CohereRerankResponse, RerankRequest, RerankResponse


async def ranked(
    dispatcher: Dispatcher, plan: RerankPlan, spec: ModelSpec, priority: str | None = None
) -> tuple[np.ndarray, np.ndarray, int, str]:
    """-> (order of documents best first, cut to top_n; scores in document order; tokens; model).
    `priority`: the body's field, as sent (None: the header, the key's default, interactive)."""
    if plan.rerank is not None:
        reply = await dispatcher.rerank(spec.name, plan.rerank, priority)
        scores, tokens, model = reply.scores, reply.total_tokens, reply.model
    elif plan.query_embed is not None:  # adapter models: the query with its task, the documents with theirs
        query, reply = await asyncio.gather(
            dispatcher.embed(spec.name, plan.query_embed, priority), dispatcher.embed(spec.name, plan.embed, priority)
        )
        scores = reply.vectors @ query.vectors[0]  # unit vectors: dot product = cosine
        tokens, model = query.total_tokens + reply.total_tokens, reply.model
    else:
        reply = await dispatcher.embed(spec.name, plan.embed, priority)
        scores = reply.vectors[1:] @ reply.vectors[0]
        tokens, model = reply.total_tokens, reply.model
    order = np.argsort(-scores, kind="stable")[: plan.top_n]
    return order, scores, tokens, model or spec.name


def register(app: FastAPI, dispatcher: Dispatcher, limits: Limits) -> FastRoutes:
    @app.post("/v1/rerank", response_model=RerankResponse, responses=ERROR_RESPONSES)
    async def rerank(body: RerankRequest) -> Response:
        spec = dispatcher.spec(body.model)
        plan = plan_rerank(
            spec,
            query=body.query,
            documents=body.documents,
            top_n=body.top_n,
            limits=limits,
            instruction=body.instruction,
            max_tokens_per_doc=body.max_tokens_per_doc,
            raw_scores=body.raw_scores,
        )
        order, scores, tokens, model = await ranked(dispatcher, plan, spec, body.priority)
        results = []
        for i in order.tolist():
            item: dict[str, Any] = {"index": i, "relevance_score": float(scores[i])}
            if body.return_documents:
                item["document"] = plan.documents[i]
            results.append(item)
        return json_response(
            {
                "id": uuid.uuid4().hex,
                "model": model,
                "results": results,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "meta": {"billed_units": {"input_tokens": tokens, "search_units": 1}},
            }
        )

    @app.post("/v2/rerank", response_model=CohereRerankResponse, responses=ERROR_RESPONSES)
    async def rerank_cohere_v2(body: CohereRerankRequest) -> Response:
        spec = dispatcher.spec(body.model)
        plan = plan_rerank(
            spec,
            query=body.query,
            documents=body.documents,
            top_n=body.top_n,
            limits=limits,
            max_tokens_per_doc=body.max_tokens_per_doc,
        )
        order, scores, tokens, _ = await ranked(dispatcher, plan, spec)
        results = [{"index": i, "relevance_score": float(scores[i])} for i in order.tolist()]
        meta = {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens, "search_units": 1}}
        return json_response({"id": uuid.uuid4().hex, "results": results, "meta": meta})

    return {"/v1/rerank": (RerankRequest, rerank), "/v2/rerank": (CohereRerankRequest, rerank_cohere_v2)}

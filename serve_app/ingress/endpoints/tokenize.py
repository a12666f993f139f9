"""POST /tokenize (and /v1/tokenize): token ids and counts per input, exactly as the model will see them."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response

from serve_app.config import Limits
from serve_app.ingress.dispatch import Dispatcher
from serve_app.ingress.endpoints.common import ERROR_RESPONSES, FastRoutes, json_response, usage
from serve_app.policy import bad_request, check_texts, plan_embedding
from serve_app.schemas import EmbeddingRequest, TokenizeRequest, TokenizeResponse


def register(app: FastAPI, dispatcher: Dispatcher, limits: Limits) -> FastRoutes:
    @app.post("/tokenize", response_model=TokenizeResponse, responses=ERROR_RESPONSES)
    @app.post("/v1/tokenize", response_model=TokenizeResponse, responses=ERROR_RESPONSES, include_in_schema=False)
    async def tokenize(body: TokenizeRequest) -> Response:
        """Instructions included: the texts go through the same policy as /v1/embeddings."""
        spec = dispatcher.spec(body.model)
        if not spec.recipe.local_tokenizer:
            raise bad_request(
                spec.recipe.tokenize_refusal.format(model=spec.name), param="model", code="unsupported_parameter"
            )
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if spec.kind == "embedding":
            request = EmbeddingRequest(model=spec.name, input=texts, task=body.task, prompt_name=body.prompt_name)
            texts = plan_embedding(spec, request, limits).call.texts
        else:
            check_texts(texts, limits)
            if body.task or body.prompt_name:
                raise bad_request(f"Model {spec.name} takes no task here.", param="task")
        ids = await dispatcher.tokenize(spec.name, texts)
        data = [{"index": i, "count": len(x), **({"ids": x} if body.return_ids else {})} for i, x in enumerate(ids)]
        total = sum(len(x) for x in ids)
        return json_response(
            {"object": "list", "model": spec.name, "max_tokens": spec.max_tokens, "data": data, "usage": usage(total)}
        )

    return {"/tokenize": (TokenizeRequest, tokenize), "/v1/tokenize": (TokenizeRequest, tokenize)}

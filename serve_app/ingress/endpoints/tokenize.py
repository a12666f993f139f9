"""POST /tokenize (and /v1/tokenize): token ids and counts per input, exactly as the model will see them.

Bare /tokenize is also TEI's route: a body with TEI's `inputs` (and neither `model` nor `input`) is TEI's
/tokenize of the default model (endpoints/tei.py); /v1/tokenize takes our shape only.
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from serve_app.config import Limits
from serve_app.ingress.dispatch import Dispatcher
from serve_app.ingress.endpoints.common import ERROR_RESPONSES, FastRoutes, json_response, usage
from serve_app.ingress.endpoints.tei import TeiDialect, serve_raw
from serve_app.policy import bad_request, check_texts, plan_embedding
from serve_app.schemas import EmbeddingRequest, TokenizeRequest, TokenizeResponse


def is_tei_body(payload) -> bool:
    """TEI's /tokenize body: `inputs`, and none of our `model` / `input`."""
    return isinstance(payload, dict) and "inputs" in payload and "model" not in payload and "input" not in payload


def register(app: FastAPI, dispatcher: Dispatcher, limits: Limits) -> FastRoutes:
    tei = TeiDialect(dispatcher, limits)

    @app.post("/v1/tokenize", response_model=TokenizeResponse, responses=ERROR_RESPONSES)
    async def tokenize(body: TokenizeRequest) -> Response:
        """Instructions included: the texts go through the same policy as /v1/embeddings. Also `POST /tokenize`."""
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

    @app.post("/tokenize", include_in_schema=False)
    async def tokenize_either(request: Request) -> Response:
        """Our shape (the middleware's fast path takes valid ones straight to `tokenize`) or TEI's."""
        raw = await request.body()
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            error = {
                "type": "json_invalid",
                "loc": ("body", exc.pos),
                "msg": "JSON decode error",
                "ctx": {"error": exc.msg},
            }
            raise RequestValidationError([error]) from None
        if is_tei_body(payload) and tei.defaults:
            return await serve_raw(tei, "tokenize", tei.defaults["tokenize"], raw)
        try:
            body = TokenizeRequest.model_validate(payload)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None
        return await tokenize(body)

    return {"/tokenize": (TokenizeRequest, tokenize), "/v1/tokenize": (TokenizeRequest, tokenize)}

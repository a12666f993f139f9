"""The TEI dialect (Hugging Face text-embeddings-inference): its routes, request and response shapes and its
error body, so TEI's clients (huggingface_hub's InferenceClient, LangChain's HuggingFaceEndpointEmbeddings,
Chroma's HuggingFaceEmbeddingServer, plain curl) work unchanged.

TEI serves one model and its clients send no model name, so every model answers under a base path of its own,
`/tei/<model>` (`POST /tei/<model>` is TEI's `POST /`, then `/embed`, `/embed_sparse`, `/embed_all`, `/rerank`,
`/tokenize`, `/decode`, `GET /info`), and the bare routes (`/embed`, ...) serve a default model per route
(`default_models`). Bare `/tokenize` is shared with our own /tokenize shape (endpoints/tokenize.py tells them
apart by TEI's `inputs` field).

Every request goes through the same policy as /v1/embeddings and /v1/rerank (limits, instructions,
dimensions, token ids); only the wire shapes differ. Errors are TEI's `{"error", "error_type"}` with the
service's own status codes (ingress/errors.py): error_type Empty for an empty input, Overloaded for 503,
Backend for server-side failures, Validation for the rest. Auth, body-size and content-type answers come from
the ingress middleware before any route, in the service's envelope. The routes are left out of /openapi.json:
their error body is TEI's, not the one the API documents.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from deployments.calls import TokenCall
from deployments.errors import ServiceError
from deployments.spec import ModelSpec
from serve_app.config import Limits
from serve_app.ingress.dispatch import Dispatcher, unknown_model
from serve_app.ingress.encoding import dumps
from serve_app.ingress.endpoints.common import FastRoutes
from serve_app.ingress.endpoints.rerank import ranked
from serve_app.ingress.errors import _location, status_of
from serve_app.policy import bad_request, plan_embedding, plan_rerank, token_id_inputs, too_large
from serve_app.schemas import (
    EmbeddingRequest,
    TeiDecodeRequest,
    TeiEmbedAllRequest,
    TeiEmbedRequest,
    TeiEmbedSparseRequest,
    TeiRerankRequest,
    TeiTokenizeRequest,
)

TEI_PREFIX = "/tei"
VERSION = "embedserve-0.1.0"


# ---- errors -------------------------------------------------------------------------------------------------
def tei_error_type(status: int, code: str | None) -> str:
    if code == "empty_input":
        return "Empty"
    if status in (429, 503):
        return "Overloaded"
    if status >= 499:
        return "Backend"
    return "Validation"


def tei_plain_error(status: int, message: str, code: str | None = None, headers: dict | None = None) -> Response:
    body = dumps({"error": message, "error_type": tei_error_type(status, code)})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def tei_error(exc: ServiceError) -> Response:
    """A domain error in TEI's body, with the status the service gives it everywhere (ingress/errors.py)."""
    status, _ = status_of(exc)
    headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else None
    return tei_plain_error(status, exc.message, exc.code, headers)


def validation_error(exc: ValidationError) -> Response:
    """pydantic's complaint about a TEI body, worded as the service words it (400 JSON / text, 422 shape)."""
    errors = exc.errors(include_url=False)
    broken = [e for e in errors if e.get("type") == "json_invalid"]
    if broken:
        reason = (broken[0].get("ctx") or {}).get("error", "invalid JSON")
        return tei_plain_error(400, f"The body is not valid JSON ({reason}).", "invalid_json")
    text = [e for e in errors if e.get("type") == "invalid_text"]
    if text:
        where = _location(tuple(text[0].get("loc", ())))
        return tei_plain_error(400, f"Invalid request: {where} {text[0].get('msg')}", "invalid_text")
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    message = f"Invalid request: {_location(tuple(first.get('loc', ())))}: {first.get('msg')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return tei_plain_error(422, message, "invalid_schema")


def _guarded(handler: Callable[[Any], Awaitable[Response]]) -> Callable[[Any], Awaitable[Response]]:
    """Every domain error of a TEI route leaves in TEI's body (the middleware's fast path would word it ours)."""

    @functools.wraps(handler)
    async def guarded(body: Any) -> Response:
        try:
            return await handler(body)
        except ServiceError as exc:
            return tei_error(exc)

    return guarded


def _json(payload: Any, tokens: int | None = None) -> Response:
    headers = {"x-compute-tokens": str(tokens)} if tokens is not None else None
    return Response(dumps(payload), media_type="application/json", headers=headers)


# ---- which model a bare route serves ------------------------------------------------------------------------
def default_models(specs: dict[str, ModelSpec]) -> dict[str, str]:
    """The model each bare TEI route serves, from the config's order of models:

    - `POST /` and `GET /info`: the first model of the config (TEI's one served model); `/` answers by its kind.
    - `/embed`, `/embed_all`: the first embedding model.
    - `/embed_sparse`: the first model with a sparse output (bge-m3), else the first embedding model.
    - `/rerank`: the first rerank model (cross-encoder, Qwen3-Reranker), else the first embedding model.
    - `/tokenize` (TEI's body), `/decode`: the first text embedding model with a local tokenizer.
    """
    names = list(specs)
    first = names[0]
    embedders = [n for n in names if specs[n].kind == "embedding"]
    embed = embedders[0] if embedders else first
    sparse = next((n for n in embedders if "sparse" in (specs[n].outputs or ())), embed)
    rerank = next((n for n in names if specs[n].kind == "rerank"), embed)
    textual = next((n for n in embedders if tokenizes(specs[n])), embed)
    return {
        "": first,
        "info": first,
        "embed": embed,
        "embed_all": embed,
        "embed_sparse": sparse,
        "rerank": rerank,
        "tokenize": textual,
        "decode": textual,
    }


def tokenizes(spec: ModelSpec) -> bool:
    """TEI's /tokenize and /decode: text embedding models with a local tokenizer."""
    return spec.kind == "embedding" and spec.recipe.local_tokenizer and not spec.recipe.multimodal


def _direction(value: str) -> str:
    return value.lower()


# ---- the dialect's handlers -------------------------------------------------------------------------------
class TeiDialect:
    """TEI's handlers for one application (its dispatcher and limits); each takes the model's name and the body."""

    def __init__(self, dispatcher: Dispatcher, limits: Limits) -> None:
        self.dispatcher = dispatcher
        self.limits = limits
        self.defaults = default_models(dispatcher.specs) if dispatcher.specs else {}

    def _embedding_request(self, name: str, body, **extra) -> EmbeddingRequest:
        return EmbeddingRequest(
            model=name,
            input=body.inputs,
            prompt_name=body.prompt_name,
            truncate=bool(body.truncate),
            truncation_direction=_direction(body.truncation_direction),
            **extra,
        )

    async def embed(self, name: str, body: TeiEmbedRequest) -> Response:
        spec = self.dispatcher.spec(name)
        request = self._embedding_request(name, body, normalized=body.normalize, dimensions=body.dimensions)
        plan = plan_embedding(spec, request, self.limits)
        reply = await self.dispatcher.embed(spec.name, plan.call)
        return _json(reply.vectors.astype(np.float32, copy=False), reply.total_tokens)

    async def embed_sparse(self, name: str, body: TeiEmbedSparseRequest) -> Response:
        spec = self.dispatcher.spec(name)
        plan = plan_embedding(spec, self._embedding_request(name, body, output=["sparse"]), self.limits)
        reply = await self.dispatcher.embed(spec.name, plan.call)
        out = [
            [{"index": i, "value": v} for i, v in zip(vec["indices"].tolist(), vec["values"].tolist(), strict=True)]
            for vec in reply.sparse or []
        ]
        return _json(out, reply.total_tokens)

    async def embed_all(self, name: str, body: TeiEmbedAllRequest) -> Response:
        """Every token's final hidden state (special and instruction tokens included), un-normalized."""
        spec = self._text_model(name, "/embed_all")
        plan = plan_embedding(spec, self._embedding_request(name, body), self.limits)
        plan.call.outputs = ("tokens",)
        reply = await self.dispatcher.embed(spec.name, plan.call)
        return _json(reply.token_states or [], reply.total_tokens)

    async def rerank(self, name: str, body: TeiRerankRequest) -> Response:
        spec = self.dispatcher.spec(name)
        plan = plan_rerank(
            spec,
            query=body.query,
            documents=list(body.texts),
            top_n=None,
            limits=self.limits,
            raw_scores=body.raw_scores,
        )
        order, scores, tokens, _ = await ranked(self.dispatcher, plan, spec)
        out = []
        for i in order.tolist():
            rank: dict[str, Any] = {"index": i, "score": float(scores[i])}
            if body.return_text:
                rank["text"] = body.texts[i]
            out.append(rank)
        return _json(out, tokens)

    def _text_model(self, name: str, route: str) -> ModelSpec:
        spec = self.dispatcher.spec(name)
        if not tokenizes(spec):
            hint = (
                ' (to count a reranker\'s tokens: POST /tokenize with {"model", "input"})'
                if spec.kind == "rerank"
                else ""
            )
            raise bad_request(
                f"TEI's {route} covers text embedding models with a local tokenizer; {spec.name} is not one{hint}.",
                param="model",
                code="unsupported_parameter",
            )
        return spec

    async def tokenize(self, name: str, body: TeiTokenizeRequest) -> Response:
        spec = self._text_model(name, "/tokenize")
        texts = [body.inputs] if isinstance(body.inputs, str) else list(body.inputs)
        request = EmbeddingRequest(model=spec.name, input=texts, prompt_name=body.prompt_name)
        texts = plan_embedding(spec, request, self.limits).call.texts  # the instruction, as /embed sends it
        call = TokenCall(texts=texts, add_special_tokens=body.add_special_tokens)
        tokens = await self.dispatcher.tokenize(spec.name, call)  # type: ignore[arg-type]
        return _json(tokens, sum(len(t) for t in tokens))

    async def decode(self, name: str, body: TeiDecodeRequest) -> Response:
        spec = self._text_model(name, "/decode")
        ids = token_id_inputs(body.ids)
        if ids is None:
            raise bad_request("`ids` cannot be empty.", param="ids", code="empty_input")
        if len(ids) > self.limits.max_inputs_per_request:
            raise too_large(
                f"{len(ids)} id lists in one request; the limit is {self.limits.max_inputs_per_request} "
                "(max_inputs_per_request).",
                param="ids",
            )
        for i, seq in enumerate(ids):
            if len(seq) > self.limits.max_chars_per_input:
                limit = self.limits.max_chars_per_input
                raise too_large(
                    f"ids[{i}] has {len(seq)} ids; the limit is {limit} (max_chars_per_input).", f"ids[{i}]"
                )
        call = TokenCall(decode=ids, skip_special_tokens=body.skip_special_tokens)
        return _json(await self.dispatcher.tokenize(spec.name, call))  # type: ignore[arg-type]

    def info(self, name: str) -> dict[str, Any]:
        spec = self.dispatcher.spec(name)
        if spec.kind == "rerank":
            model_type: dict[str, Any] = {"reranker": {"id2label": {"0": "LABEL"}, "label2id": {"LABEL": 0}}}
        else:
            model_type = {"embedding": {"pooling": spec.pooling or "auto"}}  # auto: read from the model's files
        return {
            "model_id": spec.source if spec.recipe.shell != "remote" else spec.name,
            "model_sha": None,
            "model_dtype": spec.dtype or "auto",
            "served_model_name": spec.name,
            "model_type": model_type,
            "max_concurrent_requests": spec.deployment.max_ongoing_requests
            or max(4 * spec.batching.max_batch_size, 16),
            "max_input_length": spec.max_tokens or 0,
            "max_batch_tokens": spec.batching.max_batch_tokens,
            "max_batch_requests": spec.batching.max_batch_size,
            "max_client_batch_size": self.limits.max_inputs_per_request,
            "auto_truncate": False,
            "tokenization_workers": 1,
            "version": VERSION,
            "sha": None,
            "docker_label": None,
        }

    def route(self, suffix: str, name: str) -> tuple[type[BaseModel], Callable[[Any], Awaitable[Response]]]:
        """(request shape, handler) of one TEI route of one model; suffix "" is TEI's `POST /` (by kind)."""
        if suffix == "":
            kind = self.dispatcher.specs[name].kind if name in self.dispatcher.specs else "embedding"
            suffix = "rerank" if kind == "rerank" else "embed"
        shape, method = POST_ROUTES[suffix]
        return shape, _guarded(functools.partial(getattr(self, method), name))


POST_ROUTES: dict[str, tuple[type[BaseModel], str]] = {
    "embed": (TeiEmbedRequest, "embed"),
    "embed_sparse": (TeiEmbedSparseRequest, "embed_sparse"),
    "embed_all": (TeiEmbedAllRequest, "embed_all"),
    "rerank": (TeiRerankRequest, "rerank"),
    "tokenize": (TeiTokenizeRequest, "tokenize"),
    "decode": (TeiDecodeRequest, "decode"),
}


async def serve_raw(tei: TeiDialect, suffix: str, name: str, raw: bytes) -> Response:
    """A TEI body that did not come through the middleware's fast path: parse it here, TEI's errors."""
    shape, handler = tei.route(suffix, name)
    try:
        body = shape.model_validate_json(raw)
    except ValidationError as exc:
        return validation_error(exc)
    return await handler(body)


def register(app: FastAPI, dispatcher: Dispatcher, limits: Limits) -> FastRoutes:
    tei = TeiDialect(dispatcher, limits)
    fast: FastRoutes = {}
    for name in dispatcher.specs:
        base = f"{TEI_PREFIX}/{name}"
        for suffix in ("", *POST_ROUTES):
            paths = (base, f"{base}/") if suffix == "" else (f"{base}/{suffix}",)
            for path in paths:
                fast[path] = tei.route(suffix, name)
        app.add_api_route(f"{base}/info", _info_route(tei, name), methods=["GET"], include_in_schema=False)
    for suffix, name in tei.defaults.items():
        if suffix in ("info", "tokenize"):  # bare /tokenize: endpoints/tokenize.py (shared with our shape)
            continue
        fast[f"/{suffix}"] = tei.route(suffix, name)
    if tei.defaults:
        app.add_api_route("/info", _info_route(tei, tei.defaults["info"]), methods=["GET"], include_in_schema=False)

    # The same routes for bodies the fast path did not take (no JSON content type, or a body that does not
    # validate): the model from the path, the body parsed here.
    def model_route(suffix: str):
        async def handler(model: str, request: Request) -> Response:
            if model not in dispatcher.specs:
                return tei_error(unknown_model(model, list(dispatcher.specs)))
            return await serve_raw(tei, suffix, model, await request.body())

        return handler

    def bare_route(suffix: str):
        async def handler(request: Request) -> Response:
            return await serve_raw(tei, suffix, tei.defaults[suffix], await request.body())

        return handler

    for suffix in ("", *POST_ROUTES):
        paths = (
            (f"{TEI_PREFIX}/{{model}}", f"{TEI_PREFIX}/{{model}}/")
            if suffix == ""
            else (f"{TEI_PREFIX}/{{model}}/{suffix}",)
        )
        for path in paths:
            app.add_api_route(path, model_route(suffix), methods=["POST"], include_in_schema=False)
        if suffix != "tokenize" and tei.defaults:
            app.add_api_route(f"/{suffix}", bare_route(suffix), methods=["POST"], include_in_schema=False)
    return fast


def _info_route(tei: TeiDialect, name: str):
    async def info() -> Response:
        return _json(tei.info(name))

    return info

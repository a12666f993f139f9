"""POST /v2/embed (Cohere embed v2): texts, images or mixed inputs -> vectors in one or more embedding types.

`cohere.ClientV2(base_url=..., api_key=...).embed(...)` works unchanged. The request goes through the same policy
as /v1/embeddings: `input_type` becomes a task (policy.cohere_task), `output_dimension` the matryoshka size,
`truncate` NONE / START / END the truncation, images go to multimodal (Qwen3-VL) models only. Cohere's `priority`
(lower is earlier) picks the lane: 0 interactive, above 0 bulk; without it, the X-Priority header or the key decides.
"""

from __future__ import annotations

import base64
import uuid

import numpy as np
from fastapi import FastAPI
from fastapi.responses import Response

from serve_app.config import Limits
from serve_app.ingress.dispatch import Dispatcher
from serve_app.ingress.encoding import dumps
from serve_app.ingress.endpoints.common import ERROR_RESPONSES, FastRoutes
from serve_app.ingress.priority import cohere_lane
from serve_app.policy import COHERE_TRUNCATE, bad_request, cohere_task, plan_embedding
from serve_app.schemas import CohereEmbedRequest, CohereEmbedResponse, CohereInput, ContentItem, EmbeddingRequest


def cohere_values(vectors: np.ndarray, kind: str):
    """One Cohere embedding type from float vectors (normalized unless asked otherwise).

    int8: round(v * 127) clipped to [-128, 127]; uint8: the same shifted by 128 (0..255); ubinary: one bit per
    dimension (1 where v > 0), 8 per byte, most significant bit first; binary: those bytes minus 128 (signed);
    base64: the little-endian float32 bytes of each vector. The same rules as /v1/embeddings' embedding_type.
    """
    if kind == "float":
        return vectors.astype(np.float32, copy=False)
    if kind in ("int8", "uint8"):
        quantized = np.clip(np.rint(vectors * 127.0), -128, 127).astype(np.int16)
        return quantized.astype(np.int8) if kind == "int8" else (quantized + 128).astype(np.uint8)
    if kind in ("binary", "ubinary"):
        packed = np.packbits(vectors > 0, axis=1)
        return (packed.astype(np.int16) - 128).astype(np.int8) if kind == "binary" else packed
    if kind == "base64":
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors.astype("<f4", copy=False)]
    raise ValueError(f"unknown embedding type {kind}")


def content_item(index: int, given: CohereInput) -> ContentItem:
    """One mixed Cohere input -> our content item: its text parts joined by newlines, at most one image."""
    where = f"inputs[{index}].content"
    texts = [part.text for part in given.content if part.type == "text" and part.text]
    images = []
    for part in given.content:
        if part.type == "image_url":
            url = part.image_url if isinstance(part.image_url, str) else part.image_url.url if part.image_url else None
            if not url:
                raise bad_request(f"{where}: an image_url part needs a url.", param=where)
            images.append(url)
    if len(images) > 1:
        raise bad_request(f"{where} has {len(images)} images; one input takes at most one.", param=where)
    if not texts and not images:
        raise bad_request(f"{where} is empty: give a text or an image_url part.", param=where, code="empty_input")
    return ContentItem(text="\n".join(texts) if texts else None, image=images[0] if images else None)


def register(app: FastAPI, dispatcher: Dispatcher, limits: Limits) -> FastRoutes:
    @app.post("/v2/embed", response_model=CohereEmbedResponse, responses=ERROR_RESPONSES)
    async def embed_v2(body: CohereEmbedRequest) -> Response:
        spec = dispatcher.spec(body.model)
        given = [name for name in ("texts", "images", "inputs") if getattr(body, name) is not None]
        if len(given) != 1:
            raise bad_request("Give exactly one of `texts`, `images` and `inputs`.", param="texts")
        items: list[str | ContentItem]
        if body.texts is not None:
            items = list(body.texts)
        elif body.images is not None:
            items = [ContentItem(image=url) for url in body.images]
        else:
            items = [content_item(i, x) for i, x in enumerate(body.inputs or [])]
        if not items:
            raise bad_request(f"`{given[0]}` must not be empty.", param=given[0], code="empty_input")
        types = list(dict.fromkeys(body.embedding_types or ["float"]))
        if body.max_tokens is not None and (body.max_tokens < 1 or (spec.max_tokens or 0) > body.max_tokens):
            raise bad_request(
                f"max_tokens={body.max_tokens}: inputs are cut at the model's own limit ({spec.max_tokens} tokens) "
                "only; leave max_tokens out or give at least that.",
                param="max_tokens",
                code="unsupported_parameter",
            )
        truncate, direction = COHERE_TRUNCATE[body.truncate or "END"]
        request = EmbeddingRequest(
            model=spec.name,
            input=items,
            task=cohere_task(spec, body.input_type),
            truncate=truncate,
            truncation_direction=direction,
            dimensions=body.output_dimension,
        )
        plan = plan_embedding(spec, request, limits)
        reply = await dispatcher.embed(spec.name, plan.call, cohere_lane(body.priority))
        tokens = reply.total_tokens
        images = sum(1 for x in items if not isinstance(x, str) and x.image is not None)
        billed = {"input_tokens": tokens, **({"images": images} if images else {})}
        payload = {
            "id": uuid.uuid4().hex,
            "response_type": "embeddings_by_type",
            "embeddings": {kind: cohere_values(reply.vectors, kind) for kind in types},
            "texts": [x if isinstance(x, str) else (x.text or "") for x in items],
            "meta": {"api_version": {"version": "2"}, "billed_units": billed, "tokens": {"input_tokens": tokens}},
        }
        return Response(dumps(payload), media_type="application/json")

    return {"/v2/embed": (CohereEmbedRequest, embed_v2)}

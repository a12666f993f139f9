"""POST /v1/chunk: semantic chunking. Sentences -> boundary-model embeddings -> breaks where similarity drops
(serve_app/chunking.py) -> optionally each chunk's embedding, separately or by late chunking."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response

from deployments.calls import EmbedCall
from serve_app.chunking import plan_chunks, split_sentences
from serve_app.config import Limits
from serve_app.ingress.dispatch import Dispatcher
from serve_app.ingress.endpoints.common import ERROR_RESPONSES, FastRoutes, json_response, usage
from serve_app.policy import bad_request, too_large
from serve_app.schemas import ChunkRequest, ChunkResponse


def register(app: FastAPI, dispatcher: Dispatcher, limits: Limits) -> FastRoutes:
    @app.post("/v1/chunk", response_model=ChunkResponse, responses=ERROR_RESPONSES)
    async def chunk(body: ChunkRequest) -> Response:
        spec = dispatcher.spec(body.model)
        embed_spec = dispatcher.spec(body.embedding_model or body.model)
        for s in (spec, embed_spec):
            if s.kind != "embedding" or s.recipe.multimodal:
                raise bad_request(f"Model {s.name} cannot chunk text: use a text embedding model.", param="model")
        if not body.input.strip():
            raise bad_request("`input` must not be empty.", param="input", code="empty_input")
        if len(body.input) > limits.max_chars_per_input:
            raise too_large(
                f"input has {len(body.input)} characters; the limit is {limits.max_chars_per_input} "
                "(max_chars_per_input).",
                param="input",
            )
        if body.late_chunking and not body.return_embeddings:
            raise bad_request("late_chunking needs return_embeddings=true.", param="late_chunking")
        refusal = embed_spec.late_chunking_refusal() if body.late_chunking else None
        if refusal:
            raise bad_request(refusal, param="late_chunking")
        sentences = split_sentences(body.input)
        if len(sentences) > limits.max_inputs_per_request:
            raise too_large(
                f"input has {len(sentences)} sentences; the limit is {limits.max_inputs_per_request} "
                "(max_inputs_per_request).",
                param="input",
            )
        reply = await dispatcher.embed(spec.name, EmbedCall(texts=[x.text for x in sentences], truncate=True))
        tokens = reply.total_tokens
        chunks = plan_chunks(
            sentences,
            reply.vectors,
            reply.token_counts,
            text=body.input,
            method=body.method,
            threshold=body.threshold,
            percentile=body.percentile,
            max_chunk_tokens=body.max_chunk_tokens or embed_spec.max_tokens,
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
            vectors = await dispatcher.embed(embed_spec.name, call)
            tokens += vectors.total_tokens
            for item, vector in zip(out, vectors.vectors, strict=True):
                item["embedding"] = vector
        return json_response({"object": "list", "model": spec.name, "chunks": out, "usage": usage(tokens)})

    return {"/v1/chunk": (ChunkRequest, chunk)}

"""Ray Serve deployment for text embedding models: a thin shell around TextEmbeddingEngine.

Path of a call: tokenize (prep thread) -> refuse over-long inputs -> one batch item per input ->
token-budget batch -> forward + pool (model thread) -> cut / normalize -> EmbedReply.
"""

from __future__ import annotations

import logging

import numpy as np
from ray import serve

from deployments.common import BatchedModel, engine_runtime
from serve_app.config import ModelSpec
from serve_app.errors import ServiceError, bad_request
from serve_app.protocol import EmbedCall, EmbedReply

log = logging.getLogger("ray.serve")

# Requests up to this many characters are tokenized on the event loop: for a sentence or two the hop to a
# prep thread costs more than the tokenizer; longer ones go to the thread so the loop keeps accepting.
INLINE_TOKENIZE_CHARS = 2048


def build_text_engine(spec: ModelSpec):
    from deployments.engines.text_embedding import ENCODER, QWEN3_EMBEDDING, TextEmbeddingEngine, TextEmbeddingRecipe

    if spec.family == "encoder" and set(spec.outputs) - {"dense"}:
        from deployments.engines.bge_m3 import BGEM3Engine

        return BGEM3Engine(
            spec.source,
            sparse="sparse" in spec.outputs,
            colbert="colbert" in spec.outputs,
            runtime=engine_runtime(spec),
            max_tokens=spec.max_tokens,
            max_batch_tokens=spec.batching.max_batch_tokens,
            trust_remote_code=spec.trust_remote_code,
        )
    if spec.family == "qwen3-embedding":
        recipe = QWEN3_EMBEDDING
    elif spec.family == "encoder":
        recipe = TextEmbeddingRecipe(pooling=spec.pooling) if spec.pooling else ENCODER
    else:
        raise ValueError(f"family {spec.family} is not a text embedding family")
    return TextEmbeddingEngine(
        spec.source,
        recipe,
        runtime=engine_runtime(spec),
        max_tokens=spec.max_tokens,
        max_batch_tokens=spec.batching.max_batch_tokens,
        trust_remote_code=spec.trust_remote_code,
    )


def finalize_rows(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """Matryoshka cut, then L2-normalize each row (vectorized)."""
    out = np.ascontiguousarray(vectors[:, :dimensions] if dimensions else vectors, dtype=np.float32)
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
    return out


def too_long_error(index: int, tokens: int, limit: int, param: str = "input") -> ServiceError:
    return bad_request(
        f"{param}[{index}] has {tokens} tokens, more than the model's limit of {limit}. "
        "Shorten it or set truncate=true to cut it.",
        param=f"{param}[{index}]",
        code="context_length_exceeded",
    )


@serve.deployment
class TextEmbeddingDeployment(BatchedModel):
    def __init__(self, spec: dict) -> None:
        super().__init__(spec)
        self.multi_output = hasattr(self.engine, "encode")  # BGE-M3 heads loaded

    def build_engine(self, spec: ModelSpec):
        return build_text_engine(spec)

    def _forward(self, items: list) -> list:
        if self.multi_output:  # BGE-M3: every loaded head from the one forward; requests pick theirs
            outs = set(self.spec.outputs)
            return self.engine.encode(
                items, dense=True, sparse="sparse" in outs, colbert="colbert" in outs, normalize_dense=False
            )
        return list(self.engine.embed(items))

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [t.ids for t in self.engine.tokenize(texts)]

    async def embed(self, call: EmbedCall) -> EmbedReply:
        if call.late_chunking:
            return await self._late_chunk(call)
        args = (call.texts, call.truncate, call.truncation_direction)
        if sum(len(t) for t in call.texts) <= INLINE_TOKENIZE_CHARS:
            tokens = self.engine.tokenize(*args)
        else:
            tokens = await self.executors.run_prep(self.engine.tokenize, *args)
        for i, t in enumerate(tokens):
            if len(t) > self.engine.max_tokens:
                raise too_long_error(i, t.full_length, self.engine.max_tokens)
        rows = await self.batcher.submit_all(tokens, [len(t) for t in tokens])
        reply = EmbedReply(vectors=np.empty((len(rows), 0), np.float32), token_counts=[len(t) for t in tokens])
        reply.model = self.spec.name
        if self.multi_output:
            if "sparse" in call.outputs:
                reply.sparse = [self._sparse(r.sparse, call.sparse_tokens) for r in rows]
            if "colbert" in call.outputs:
                reply.colbert = [r.colbert for r in rows]
            rows = [r.dense for r in rows]
        if "dense" in call.outputs:
            reply.vectors = finalize_rows(np.stack(rows), call.dimensions, call.normalize)
        return reply

    def _sparse(self, vec, with_tokens: bool) -> dict:
        out = {"indices": vec.indices, "values": vec.values}
        if with_tokens:
            out["tokens"] = self.engine.token_strings(vec)
        return out

    async def _late_chunk(self, call: EmbedCall) -> EmbedReply:
        from deployments.engines.late_chunking import late_chunk

        vectors, counts = await self.executors.run_model(late_chunk, self.engine, call.texts, self.engine.max_tokens)
        return EmbedReply(
            vectors=finalize_rows(vectors, call.dimensions, call.normalize), token_counts=counts, model=self.spec.name
        )

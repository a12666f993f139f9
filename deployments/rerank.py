"""Ray Serve deployment for reranker models (cross-encoder, Qwen3-Reranker): a thin shell around an engine.

Path of a call: clip documents (max_tokens_per_doc) -> tokenize pairs (prep thread) -> one batch item per
(query, document) pair -> token-budget batch shared with other requests -> raw logits (model thread) ->
probabilities unless raw scores were asked -> RerankReply in document order.
"""

from __future__ import annotations

import logging

import numpy as np
from ray import serve

from deployments.common import BatchedModel, engine_runtime
from serve_app.config import ModelSpec
from serve_app.errors import bad_request
from serve_app.protocol import RerankCall, RerankReply

log = logging.getLogger("ray.serve")


def build_rerank_engine(spec: ModelSpec):
    from deployments.engines.rerank import CrossEncoderEngine, Qwen3RerankerEngine

    common = {
        "runtime": engine_runtime(spec),
        "max_tokens": spec.max_tokens,
        "max_batch_tokens": spec.batching.max_batch_tokens,
    }
    if spec.family == "cross-encoder":
        return CrossEncoderEngine(spec.source, **common)
    if spec.family == "qwen3-reranker":
        return Qwen3RerankerEngine(spec.source, default_instruction=spec.default_instruction, **common)
    raise ValueError(f"family {spec.family} is not a reranker family")


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


@serve.deployment
class RerankDeployment(BatchedModel):
    def build_engine(self, spec: ModelSpec):
        return build_rerank_engine(spec)

    def _forward(self, items: list) -> list:
        return list(self.engine.score(items, raw=True))

    def _tokenize(self, call: RerankCall) -> list:
        from deployments.engines.rerank import QueryTooLong

        docs = self.engine.clip(call.documents, call.max_tokens_per_doc)
        try:
            if self.spec.family == "qwen3-reranker":
                return self.engine.tokenize_pairs(call.query, docs, call.instruction)
            return self.engine.tokenize_pairs(call.query, docs)
        except QueryTooLong as exc:
            raise bad_request(f"The query is too long for {self.spec.name}: {exc}.", param="query") from None

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.engine._backend.encode_batch(list(texts), add_special_tokens=True)]

    async def rerank(self, call: RerankCall) -> RerankReply:
        items = await self.executors.run_prep(self._tokenize, call)
        logits = np.asarray(await self.batcher.submit_all(items, [len(t) for t in items]), dtype=np.float32)
        scores = logits if call.raw_scores else sigmoid(logits)
        return RerankReply(scores=scores, token_counts=[len(t) for t in items], model=self.spec.name)

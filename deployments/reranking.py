"""The rerank deployment: one Ray Serve shell for every reranker family (cross-encoder, Qwen3, Qwen3-VL).

Path of a call: decode media (multimodal families) -> engine.prepare_pairs (clip documents to
max_tokens_per_doc, build each (query, document) prompt; prep thread) -> one batch item per pair, shared with
other requests under the token budget -> engine.forward: relevance logits (model thread) -> sigmoid unless raw
scores were asked -> RerankReply in document order.
"""

from __future__ import annotations

import threading

import numpy as np
from ray import serve

from deployments.calls import RerankCall, RerankReply
from deployments.engines.postprocess import relevance
from deployments.engines.protocol import InputError
from deployments.errors import InvalidRequest
from deployments.media_inputs import decode_contents
from deployments.shell import BatchedModel, input_error


@serve.deployment
class RerankDeployment(BatchedModel):
    async def rerank(self, call: RerankCall) -> RerankReply:
        gone = threading.Event()  # set when this call ends: the media work stops between items
        try:
            items = await self.executors.run_prep(self._prepare, call, gone)
        finally:
            gone.set()
        rows = await self.batcher.submit_all(items, [p.cost for p in items], priority=call.priority)
        logits = np.asarray(rows, dtype=np.float32)
        return RerankReply(
            scores=relevance(logits, call.raw_scores), token_counts=[len(p) for p in items], model=self.spec.name
        )

    def _prepare(self, call: RerankCall, gone: threading.Event | None = None) -> list:
        query, documents = call.query, call.documents
        if self.spec.recipe.multimodal:  # one media budget (time, items, bytes) for the query and all documents
            sides = [("query", _content(query))] + [(f"documents[{i}]", _content(d)) for i, d in enumerate(documents)]
            decoded = decode_contents(sides, self.engine.video_sampling(), cancelled=gone)
            query, documents = decoded[0], decoded[1:]
        try:
            return self.engine.prepare_pairs(query, documents, call.instruction, call.max_tokens_per_doc)
        except InputError as exc:
            if exc.index is None and exc.too_long:
                raise InvalidRequest(
                    f"The query is too long for {self.spec.name}: {exc}.", param="query", code="context_length_exceeded"
                ) from None
            raise input_error(exc, "query" if exc.index is None else "documents") from None


def _content(side) -> dict:
    return side if isinstance(side, dict) else {"text": side}

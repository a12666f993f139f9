"""The embedding deployment: one Ray Serve shell for every embedding family, text or multimodal.

Path of a call: decode media (prep thread; only for multimodal items) -> engine.prepare (tokenize and build the
prompt; short texts on the loop) -> refuse over-long inputs -> one batch item per input -> token-budget batch
shared with other requests -> engine.forward (model thread) -> matryoshka cut + normalize -> EmbedReply.
"""

from __future__ import annotations

import threading

import numpy as np
from ray import serve

from deployments.calls import EmbedCall, EmbedReply
from deployments.engines.postprocess import finalize_rows
from deployments.engines.protocol import InputError
from deployments.errors import InvalidRequest, ServiceError
from deployments.media_inputs import decode_items
from deployments.shell import BatchedModel, answer_each, as_service_error, input_error, past_deadline, too_long_error

# Requests up to this many characters are tokenized on the event loop: for a sentence or two the hop to a
# prep thread costs more than the tokenizer; longer ones go to the thread so the loop keeps accepting.
INLINE_TOKENIZE_CHARS = 2048


@serve.deployment
class EmbeddingDeployment(BatchedModel):
    async def embed_many(self, calls: list[EmbedCall]) -> list[EmbedReply | ServiceError]:
        """Calls the router coalesced: each prepared and answered on its own, their inputs queued as one group."""
        if len(calls) == 1 or any(c.late_chunking or c.items is not None for c in calls):
            return await answer_each(self.embed, calls)
        if sum(len(t) for c in calls for t in c.texts) > INLINE_TOKENIZE_CHARS:
            prepared = await self.executors.run_prep(self._prepare_each, calls)
        else:
            prepared = self._prepare_each(calls)
        ready = [i for i, p in enumerate(prepared) if not isinstance(p, ServiceError)]
        outcomes = await self.batcher.submit_group(
            [(prepared[i], [p.cost for p in prepared[i]], calls[i].deadline) for i in ready]
        )
        results: list[EmbedReply | ServiceError] = list(prepared)
        for i, outcome in zip(ready, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                results[i] = as_service_error(outcome)
            else:
                results[i] = self._reply(calls[i], prepared[i], outcome)
        return results

    def _prepare_each(self, calls: list[EmbedCall]) -> list:
        out = []
        for call in calls:
            try:
                past_deadline(call.deadline)
                out.append(self._prepare(call))
            except ServiceError as exc:
                out.append(exc)
        return out

    async def embed(self, call: EmbedCall) -> EmbedReply:
        past_deadline(call.deadline)
        if call.late_chunking:
            return await self._late_chunk(call)
        if call.items is not None or sum(len(t) for t in call.texts) > INLINE_TOKENIZE_CHARS:
            gone = threading.Event()  # set when this call ends: the media work stops between items
            try:
                prepared = await self.executors.run_prep(self._prepare, call, gone)
            finally:
                gone.set()
        else:
            prepared = self._prepare(call)
        rows = await self.batcher.submit_all(prepared, [p.cost for p in prepared], call.deadline)
        return self._reply(call, prepared, rows)

    def _prepare(self, call: EmbedCall, gone: threading.Event | None = None) -> list:
        inputs = call.texts
        if call.items is not None:  # one media budget (time, items, bytes) for the whole call
            inputs = decode_items(
                call.items, call.instruction, self.engine, param="input", cancelled=gone, deadline=call.deadline
            )
        try:
            prepared = self.engine.prepare(inputs, call.truncate, call.truncation_direction)
        except InputError as exc:
            raise input_error(exc, "input") from None
        limit = self.capabilities.max_tokens
        for i, p in enumerate(prepared):
            if len(p) > limit:
                raise too_long_error(i, p.full_length, limit)
        return prepared

    def _reply(self, call: EmbedCall, prepared: list, rows: list) -> EmbedReply:
        reply = EmbedReply(
            vectors=np.empty((len(rows), 0), np.float32),
            token_counts=[len(p) for p in prepared],
            model=self.spec.name,
        )
        if "dense" in call.outputs:
            reply.vectors = finalize_rows(np.stack([r.dense for r in rows]), call.dimensions, call.normalize)
        if "sparse" in call.outputs:
            reply.sparse = [self._sparse(r.sparse, call.sparse_tokens) for r in rows]
        if "colbert" in call.outputs:
            reply.colbert = [r.colbert for r in rows]
        return reply

    def _sparse(self, vec, with_tokens: bool) -> dict:
        out = {"indices": vec.indices, "values": vec.values}
        if with_tokens:
            out["tokens"] = self.engine.token_strings(vec)
        return out

    async def _late_chunk(self, call: EmbedCall) -> EmbedReply:
        if not self.capabilities.late_chunking:
            raise InvalidRequest(self.spec.late_chunking_refusal() or "late_chunking is not supported.")
        vectors, counts = await self.executors.run_model(self.engine.late_chunk, call.texts)
        return EmbedReply(
            vectors=finalize_rows(vectors, call.dimensions, call.normalize), token_counts=counts, model=self.spec.name
        )

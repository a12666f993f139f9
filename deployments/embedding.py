"""The embedding deployment: one Ray Serve shell for every embedding family, text or multimodal.

Path of a call: decode media (prep thread; only for multimodal items) -> engine.prepare (tokenize and build the
prompt; short texts on the loop) -> refuse over-long inputs -> one batch item per input -> token-budget batch
shared with other requests -> engine.forward (model thread) -> matryoshka cut + normalize -> EmbedReply.
"""

from __future__ import annotations

import threading

from ray import serve

from deployments.calls import EmbedCall, EmbedReply, TokenCall
from deployments.engines.postprocess import finalize_rows, finish_embeddings
from deployments.engines.protocol import InputError
from deployments.errors import InvalidRequest, ServiceError
from deployments.media_inputs import decode_items
from deployments.shell import BatchedModel, answer_each, as_service_error, input_error, past_deadline, too_long_error

# Requests up to this many characters are tokenized on the event loop: for a sentence or two the hop to a
# prep thread costs more than the tokenizer; longer ones go to the thread so the loop keeps accepting.
INLINE_TOKENIZE_CHARS = 2048


def _input_size(call: EmbedCall) -> int:
    """Characters to tokenize, or token ids to check and frame: what decides between the loop and a prep thread."""
    return sum(len(t) for t in call.texts) + sum(len(ids) for ids in call.token_ids or ())


@serve.deployment
class EmbeddingDeployment(BatchedModel):
    async def embed_many(self, calls: list[EmbedCall]) -> list[EmbedReply | ServiceError]:
        """Calls the router coalesced: each prepared and answered on its own, their inputs queued as one group."""
        if len(calls) == 1 or any(c.late_chunking or c.items is not None for c in calls):
            return await answer_each(self.embed, calls)
        if sum(_input_size(c) for c in calls) > INLINE_TOKENIZE_CHARS:
            prepared = await self.executors.run_prep(self._prepare_each, calls)
        else:
            prepared = self._prepare_each(calls)
        ready = [i for i, p in enumerate(prepared) if not isinstance(p, ServiceError)]
        outcomes = await self.batcher.submit_group(
            [(prepared[i], [p.cost for p in prepared[i]], calls[i].deadline, calls[i].priority) for i in ready]
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
        if call.items is not None or _input_size(call) > INLINE_TOKENIZE_CHARS:
            gone = threading.Event()  # set when this call ends: the media work stops between items
            try:
                prepared = await self.executors.run_prep(self._prepare, call, gone)
            finally:
                gone.set()
        else:
            prepared = self._prepare(call)
        rows = await self.batcher.submit_all(prepared, [p.cost for p in prepared], call.deadline, call.priority)
        return self._reply(call, prepared, rows)

    def _prepare(self, call: EmbedCall, gone: threading.Event | None = None) -> list:
        inputs = call.texts
        if call.items is not None:  # one media budget (time, items, bytes) for the whole call
            inputs = decode_items(
                call.items, call.instruction, self.engine, param="input", cancelled=gone, deadline=call.deadline
            )
        try:
            if call.token_ids is not None:
                self._needs_token_ids()
                adapter = {"task": call.task} if call.task is not None else {}  # task-adapter families
                prepared = self.engine.prepare_ids(
                    call.token_ids, call.token_prefix, call.truncate, call.truncation_direction, **adapter
                )
            elif call.task is not None:  # a task-adapter family: the task picks the adapter of every input
                prepared = self.engine.prepare(inputs, call.truncate, call.truncation_direction, task=call.task)
            else:
                prepared = self.engine.prepare(inputs, call.truncate, call.truncation_direction)
        except InputError as exc:
            raise input_error(exc, "input") from None
        limit = self.capabilities.max_tokens
        for i, p in enumerate(prepared):
            if len(p) > limit:
                raise too_long_error(i, p.full_length, limit)
        if "tokens" in call.outputs:
            self._needs_token_ids("gives no per-token states")
            for p in prepared:
                p.keep_states = True
        return prepared

    def _needs_token_ids(self, what: str = "takes text, not token ids") -> None:
        """Token-level work (token-id inputs, token details, per-token states) needs an engine that offers it."""
        if not self.capabilities.token_id_inputs:
            raise InvalidRequest(f"Model {self.spec.name} {what}.", param="input", code="unsupported_parameter")

    def tokenize(self, texts: list[str] | TokenCall) -> list:
        """Plain texts: their ids (/tokenize). A TokenCall: token details (TEI's /tokenize) or decoded texts."""
        if not isinstance(texts, TokenCall):
            return super().tokenize(texts)
        self._needs_token_ids("has no token details or decoding here")
        try:
            if texts.decode is not None:
                return self.engine.decode_ids(texts.decode, texts.skip_special_tokens)
            return self.engine.token_details(texts.texts, texts.add_special_tokens)
        except InputError as exc:
            raise input_error(exc, "ids" if texts.decode is not None else "inputs") from None

    def _reply(self, call: EmbedCall, prepared: list, rows: list) -> EmbedReply:
        done = finish_embeddings(
            rows,
            call.outputs,
            call.dimensions,
            call.normalize,
            call.sparse_tokens,
            getattr(self.engine, "token_strings", None),
        )
        return EmbedReply(
            vectors=done.vectors,
            token_counts=[len(p) for p in prepared],
            model=self.spec.name,
            sparse=done.sparse,
            colbert=done.colbert,
            token_states=done.token_states,
        )

    async def _late_chunk(self, call: EmbedCall) -> EmbedReply:
        if not self.capabilities.late_chunking:
            raise InvalidRequest(self.spec.late_chunking_refusal() or "late_chunking is not supported.")
        if call.task is not None:  # the adapter of the request's task
            vectors, counts = await self.executors.run_model(self.engine.late_chunk, call.texts, call.task)
        else:
            vectors, counts = await self.executors.run_model(self.engine.late_chunk, call.texts)
        return EmbedReply(
            vectors=finalize_rows(vectors, call.dimensions, call.normalize), token_counts=counts, model=self.spec.name
        )

"""Ray Serve deployments for Qwen3-VL embedding and reranking: thin shells around the engines.

Path of a call: decode media (prep thread: fetch with the media module's address policy, byte and pixel
caps) -> build the official prompt and resize (prep thread) -> one batch item per input or pair, costed
by its sequence length -> token-budget batch -> vision tower + decoder (model thread) -> reply.
Client strings never reach a library that would fetch or open them: only decoded images and frames do.
"""

from __future__ import annotations

import logging

import numpy as np
from ray import serve

from deployments.common import BatchedModel, engine_runtime
from deployments.embedding import finalize_rows
from serve_app.config import ModelSpec
from serve_app.errors import bad_request
from serve_app.protocol import EmbedCall, EmbedReply, RerankCall, RerankReply

log = logging.getLogger("ray.serve")


def build_vl_engine(spec: ModelSpec):
    from deployments.engines.qwen3_vl import (
        EMBEDDING_INSTRUCTION,
        RERANKER_INSTRUCTION,
        Qwen3VLEmbeddingEngine,
        Qwen3VLRerankerEngine,
    )
    from deployments.engines.vl_vision import VisionLimits

    v = spec.vision
    common = {
        "runtime": engine_runtime(spec),
        "limits": VisionLimits(
            min_pixels=v.min_pixels,
            max_pixels=v.max_pixels,
            total_pixels=v.total_pixels,
            fps=v.fps,
            max_frames=v.max_frames,
        ),
        "max_tokens": spec.max_tokens,
        "max_batch_tokens": spec.batching.max_batch_tokens,
        "max_batch_patches": v.max_batch_patches,
        "trust_remote_code": spec.trust_remote_code,
    }
    if spec.family == "qwen3-vl-embedding":
        return Qwen3VLEmbeddingEngine(
            spec.source, default_instruction=spec.default_instruction or EMBEDDING_INSTRUCTION, **common
        )
    if spec.family == "qwen3-vl-reranker":
        return Qwen3VLRerankerEngine(
            spec.source, default_instruction=spec.default_instruction or RERANKER_INSTRUCTION, **common
        )
    raise ValueError(f"family {spec.family} is not a Qwen3-VL family")


class _VLBase(BatchedModel):
    prep_threads = 4  # media decoding is I/O and CPU bound

    def __init__(self, spec: dict) -> None:
        from deployments import media

        self.media = media
        super().__init__(spec)

    def build_engine(self, spec: ModelSpec):
        return build_vl_engine(spec)

    def _item(self, content: dict, where: str, instruction: str | None = None):
        """Decode one {text?, image?, video?, instruction?} into a VLItem; every failure is a 400 naming it."""
        from deployments.engines.qwen3_vl import VLItem

        images, videos = (), ()
        try:
            if content.get("image") is not None:
                images = (self.media.load_image(content["image"]),)
        except self.media.MediaError as exc:
            raise bad_request(f"{where}.image: {exc}", param=f"{where}.image", code="invalid_media") from None
        try:
            if content.get("video") is not None:
                videos = (self.media.load_video(content["video"], sampling=self.engine.video_sampling()),)
        except self.media.MediaError as exc:
            raise bad_request(f"{where}.video: {exc}", param=f"{where}.video", code="invalid_media") from None
        return VLItem(
            text=content.get("text"),
            images=images,
            videos=videos,
            instruction=content.get("instruction") or instruction,
        )

    def _prepare(self, fn, where: str, *args, **kwargs):
        from deployments.engines.qwen3_vl import VLInputError

        try:
            return fn(*args, **kwargs)
        except VLInputError as exc:
            code = "context_length_exceeded" if "token" in str(exc) else "invalid_input"
            raise bad_request(f"{where}: {exc}", param=where, code=code) from None


@serve.deployment
class VLEmbeddingDeployment(_VLBase):
    def _forward(self, items: list) -> list:
        return list(self.engine.embed(items))

    def _prepare_all(self, call: EmbedCall) -> list:
        out = []
        for i, content in enumerate(call.items or [{"text": t} for t in call.texts]):
            item = self._item(content, f"input[{i}]", call.instruction)
            out.append(self._prepare(self.engine.prepare, f"input[{i}]", item, call.truncate))
        return out

    async def embed(self, call: EmbedCall) -> EmbedReply:
        prepared = await self.executors.run_prep(self._prepare_all, call)
        rows = await self.batcher.submit_all(prepared, [p.cost for p in prepared])
        vectors = finalize_rows(np.stack(rows), call.dimensions, call.normalize)
        return EmbedReply(vectors=vectors, token_counts=[p.num_tokens for p in prepared], model=self.spec.name)


@serve.deployment
class VLRerankDeployment(_VLBase):
    def _forward(self, items: list) -> list:
        return list(self.engine.score(items))

    def _prepare_all(self, call: RerankCall) -> list:
        query = call.query if isinstance(call.query, dict) else {"text": call.query}
        side = self._prepare(self.engine.prepare_side, "query", self._item(query, "query"))
        out = []
        for i, doc in enumerate(call.documents):
            content = doc if isinstance(doc, dict) else {"text": doc}
            item = self._item(content, f"documents[{i}]")
            out.append(self._prepare(self.engine.prepare, f"documents[{i}]", side, item, call.instruction, True))
        return out

    async def rerank(self, call: RerankCall) -> RerankReply:
        prepared = await self.executors.run_prep(self._prepare_all, call)
        scores = np.asarray(await self.batcher.submit_all(prepared, [p.cost for p in prepared]), dtype=np.float32)
        if call.raw_scores:  # the yes-vs-no log-odds
            clipped = np.clip(scores.astype(np.float64), 1e-12, 1 - 1e-12)
            scores = np.log(clipped / (1 - clipped)).astype(np.float32)
        return RerankReply(scores=scores, token_counts=[p.num_tokens for p in prepared], model=self.spec.name)

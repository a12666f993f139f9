"""Qwen3-VL-Embedding: the last attended token's hidden state of the instruction-conditioned prompt.

The recipe L2-normalizes the vector, and matryoshka sizes cut then re-normalize: both are done by the caller
(`postprocess.finalize_rows`), so `embed` returns the raw vectors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from deployments.engines.protocol import Capabilities, EmbeddingOutput
from deployments.engines.qwen3_vl.base import Qwen3VLEngineBase, input_errors
from deployments.engines.qwen3_vl.inputs import TokenCount, VLPrepared
from deployments.engines.qwen3_vl.templates import (
    EMBEDDING_INSTRUCTION,
    EMBEDDING_PROBE,
    Piece,
    embedding_prompt,
    normalize_instruction,
)
from deployments.engines.visual_inputs import VLItem
from deployments.engines.vl_vision import VisualInput

log = logging.getLogger(__name__)


class Qwen3VLEmbeddingEngine(Qwen3VLEngineBase):
    """Qwen3-VL-Embedding (2B / 8B): last attended token of the instruction-conditioned prompt."""

    default_max_tokens = 8192
    template_probe = EMBEDDING_PROBE

    default_instruction = EMBEDDING_INSTRUCTION

    def __init__(self, source: str, *, default_instruction: str = EMBEDDING_INSTRUCTION, **kwargs) -> None:
        self.default_instruction = default_instruction
        super().__init__(source, **kwargs)
        self.dimensions = int(self.model.config.text_config.hidden_size)
        log.info(
            "loaded %s: qwen3-vl embedding dims=%d max_tokens=%d device=%s dtype=%s attn=%s",
            source,
            self.dimensions,
            self.max_tokens,
            self.runtime.device,
            self.runtime.dtype,
            self.runtime.attn_implementation,
        )

    def _load_model(self, path: str, trust_remote_code: bool) -> None:
        from transformers import Qwen3VLModel

        self.model = Qwen3VLModel.from_pretrained(
            path,
            dtype=self.runtime.dtype,
            attn_implementation=self.runtime.attn_implementation,
            trust_remote_code=trust_remote_code,
        )
        self.model.to(self.runtime.device).eval()
        self.backbone = self.model

    def _pieces(self, item: VLItem, pixels: bool) -> tuple[list[Piece], list[VisualInput]]:
        side = self._side(item, pixels)
        system = normalize_instruction(item.instruction) or self.default_instruction
        return embedding_prompt(side, system), side.visuals

    def count_tokens(self, item: VLItem) -> TokenCount:
        """Exact sequence length and visual cost from the media sizes alone (no pixel work)."""
        return self._count(*self._pieces(item, pixels=False))

    def prepare_item(self, item: VLItem, truncate: bool = False) -> VLPrepared:
        """Resize the media and tokenize the prompt; raises VLInputError for an unusable item."""
        return self._finish(*self._pieces(item, pixels=True), truncate)

    def prepare(
        self, inputs: Sequence[VLItem | str], truncate: bool = False, direction: str = "right"
    ) -> list[VLPrepared]:
        """The protocol's batch form: every input prepared, the first unusable one refused by its index.

        The recipe truncates from the right only (media and the template's tail are kept whole).
        """
        out = []
        for i, x in enumerate(inputs):
            with input_errors(i):
                out.append(self.prepare_item(x if isinstance(x, VLItem) else VLItem(text=x), truncate))
        return out

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(max_tokens=self.max_tokens, dimensions=self.dimensions)

    def forward(self, items: Sequence[VLPrepared]) -> list[EmbeddingOutput]:
        return [EmbeddingOutput(dense=row) for row in self.embed(items)]

    @torch.inference_mode()
    def embed(self, items: Sequence[VLPrepared]) -> np.ndarray:
        """Pooled vectors [n, dims] float32 (not normalized: `postprocess.finalize_rows` cuts, then normalizes)."""
        out = np.empty((len(items), self.dimensions), dtype=np.float32)
        for group, states in self._last_states(items):
            out[group] = states.cpu().numpy()
        return out

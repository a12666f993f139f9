"""Qwen3-VL-Reranker: how much the model leans to "yes" over "no" after the judge prompt, as a raw logit.

Score = logit("yes") - logit("no") at the last position, i.e. h . (w_yes - w_no) with the lm_head rows of
the single tokens "yes" and "no" (looked up at load; the rest of the lm_head is dropped). The recipe's
relevance is sigmoid(score) = P(yes); applying it is the caller's job (`postprocess.relevance`), so raw
scores stay available.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from deployments.engines.protocol import Capabilities
from deployments.engines.qwen3_vl.base import Qwen3VLEngineBase, input_errors
from deployments.engines.qwen3_vl.inputs import PreparedSide, TokenCount, VLPrepared
from deployments.engines.qwen3_vl.templates import RERANKER_INSTRUCTION, RERANKER_PROBE, Piece, reranker_prompt
from deployments.engines.visual_inputs import VLItem
from deployments.engines.vl_vision import VisualInput

log = logging.getLogger(__name__)


class Qwen3VLRerankerEngine(Qwen3VLEngineBase):
    """Qwen3-VL-Reranker (2B / 8B): logit(yes) - logit(no) for a (query, document) pair."""

    default_max_tokens = 10240
    template_probe = RERANKER_PROBE

    default_instruction = RERANKER_INSTRUCTION

    def __init__(self, source: str, *, default_instruction: str = RERANKER_INSTRUCTION, **kwargs) -> None:
        self.default_instruction = default_instruction
        super().__init__(source, **kwargs)
        log.info(
            "loaded %s: qwen3-vl reranker max_tokens=%d device=%s dtype=%s attn=%s",
            source,
            self.max_tokens,
            self.runtime.device,
            self.runtime.dtype,
            self.runtime.attn_implementation,
        )

    def _load_model(self, path: str, trust_remote_code: bool) -> None:
        from transformers import Qwen3VLForConditionalGeneration

        full = Qwen3VLForConditionalGeneration.from_pretrained(
            path,
            dtype=self.runtime.dtype,
            attn_implementation=self.runtime.attn_implementation,
            trust_remote_code=trust_remote_code,
        )
        vocab = self.tokenizer.get_vocab()
        if "yes" not in vocab or "no" not in vocab:
            raise ValueError(f"{self.source}: tokenizer has no single 'yes' / 'no' tokens")
        self.yes_id, self.no_id = vocab["yes"], vocab["no"]
        weight = full.lm_head.weight.detach()
        self.score_vector = (weight[self.yes_id].float() - weight[self.no_id].float()).to(self.runtime.device)
        self.model = full
        self.backbone = full.model
        self.backbone.to(self.runtime.device).eval()
        full.lm_head = torch.nn.Identity()  # only the yes/no rows are used; let the rest go

    def _pieces(
        self, query: VLItem | PreparedSide, document: VLItem | PreparedSide, instruction: str | None, pixels: bool
    ) -> tuple[list[Piece], list[VisualInput]]:
        q, d = self._side(query, pixels), self._side(document, pixels)
        return reranker_prompt(q, d, instruction or self.default_instruction), [*q.visuals, *d.visuals]

    def prepare_side(self, item: VLItem | PreparedSide) -> PreparedSide:
        """Resize one side's media once (e.g. the query, shared by every document of a request)."""
        return self._side(item, pixels=True)

    def count_tokens(
        self, query: VLItem | PreparedSide, document: VLItem | PreparedSide, instruction: str | None = None
    ) -> TokenCount:
        """Exact sequence length and visual cost of a pair from the media sizes alone."""
        return self._count(*self._pieces(query, document, instruction, pixels=False))

    def prepare_pair(
        self,
        query: VLItem | PreparedSide,
        document: VLItem | PreparedSide,
        instruction: str | None = None,
        truncate: bool = False,
    ) -> VLPrepared:
        """Resize (unless already prepared) and tokenize one pair; raises VLInputError when unusable."""
        return self._finish(*self._pieces(query, document, instruction, pixels=True), truncate)

    def prepare_pairs(
        self,
        query: VLItem | str,
        documents: Sequence[VLItem | str],
        instruction: str | None = None,
        max_tokens_per_doc: int | None = None,
    ) -> list[VLPrepared]:
        """The protocol's form: the query's media resized once, each pair cut to the model's limit.

        `max_tokens_per_doc` is not applied to multimodal documents (the pair is cut to the model's limit).
        """
        with input_errors(None):
            side = self.prepare_side(query if isinstance(query, VLItem) else VLItem(text=query))
        out = []
        for i, doc in enumerate(documents):
            with input_errors(i):
                out.append(
                    self.prepare_pair(side, doc if isinstance(doc, VLItem) else VLItem(text=doc), instruction, True)
                )
        return out

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(max_tokens=self.max_tokens, outputs=())

    def forward(self, items: Sequence[VLPrepared]) -> np.ndarray:
        return self.score(items)

    @torch.inference_mode()
    def score(self, items: Sequence[VLPrepared]) -> np.ndarray:
        """logit(yes) - logit(no) per prepared pair, float32, in the order given (sigmoid -> P(yes))."""
        out = np.empty(len(items), dtype=np.float32)
        for group, states in self._last_states(items):
            out[group] = (states @ self.score_vector).cpu().numpy()
        return out

"""Prompt pieces -> token ids: client text never becomes a control token, and over-long prompts are cut safely.

Tokenization: the rendered prompt is split at the template's special tokens and each text run
(template text, client text and timestamps together, exactly as in the rendered string) is encoded
with special-token matching off, so client text can never inject <|image_pad|> or <|im_end|>; for
ordinary text this gives the same ids as tokenizing the whole rendered string.

Length: over `max_tokens` an item is refused (VLInputError) unless `truncate=True`; then, like the
official reranker, non-special tokens are dropped from the end of the prompt (before the fixed
"<|im_end|>\\n<|im_start|>assistant\\n" suffix) while every special and visual token is kept.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from deployments.engines.qwen3_vl.inputs import TokenCount, VLPrepared
from deployments.engines.qwen3_vl.templates import (
    IMAGE_PAD,
    SPECIAL_TOKENS,
    SUFFIX,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    Piece,
    Special,
    VisualSlot,
)
from deployments.engines.vl_vision import VisualInput, VLInputError


class PromptEncoder:
    """Encodes prompt pieces with a checkpoint's tokenizer; visual slots become their pad-token runs."""

    def __init__(self, tokenizer: Any, config: Any, source: str, merge_size: int) -> None:
        """`config`: the model config, whose image / video token ids must match the tokenizer's."""
        vocab = tokenizer.get_vocab()
        ids = {}
        for token in SPECIAL_TOKENS:
            if token not in vocab:
                raise ValueError(f"{source}: tokenizer has no {token!r} token")
            ids[token] = vocab[token]
        if ids[IMAGE_PAD] != config.image_token_id or ids[VIDEO_PAD] != config.video_token_id:
            raise ValueError(f"{source}: tokenizer and config disagree on the image / video token ids")
        self.special_ids = ids
        self.image_token_id = ids[IMAGE_PAD]
        self.video_token_id = ids[VIDEO_PAD]
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else tokenizer.eos_token_id or 0)
        self.protected_ids = frozenset(tokenizer.all_special_ids) | frozenset(ids.values())
        self.merge_size = merge_size
        backend = copy.deepcopy(tokenizer.backend_tokenizer)
        backend.no_truncation()
        backend.no_padding()
        backend.encode_special_tokens = True  # client text never becomes a control token
        self._backend = backend
        self.suffix_len = len(self.encode(SUFFIX, [])[0])

    def encode(self, pieces: Sequence[Piece], visuals: Sequence[VisualInput]) -> tuple[list[int], list[bool]]:
        """Pieces -> (ids, protected flags). Text runs between special tokens are encoded together."""
        merge = self.merge_size
        expanded: list = []
        for piece in pieces:
            if isinstance(piece, VisualSlot):
                visual = visuals[piece.index]
                if visual.kind == "image":
                    expanded += [Special(VISION_START), ("pad", IMAGE_PAD, visual.num_tokens(merge))]
                    expanded.append(Special(VISION_END))
                else:
                    t, h, w = visual.grid
                    per_frame = h * w // (merge * merge)
                    for seconds in visual.timestamps or [0.0] * t:
                        expanded += [f"<{seconds:.1f} seconds>", Special(VISION_START)]
                        expanded += [("pad", VIDEO_PAD, per_frame), Special(VISION_END)]
            else:
                expanded.append(piece)
        runs: list[str] = []
        layout: list = []
        buffer: list[str] = []
        for piece in [*expanded, None]:
            if isinstance(piece, str):
                buffer.append(piece)
                continue
            if buffer:
                layout.append(("text", len(runs)))
                runs.append("".join(buffer))
                buffer = []
            if piece is not None:
                layout.append(piece)
        encoded = self._backend.encode_batch(runs, add_special_tokens=False) if runs else []
        ids: list[int] = []
        protected: list[bool] = []
        for entry in layout:
            if isinstance(entry, Special):
                ids.append(self.special_ids[entry.token])
                protected.append(True)
            elif entry[0] == "pad":
                token_id = self.special_ids[entry[1]]
                ids += [token_id] * entry[2]
                protected += [True] * entry[2]
            else:
                run = encoded[entry[1]].ids
                ids += run
                protected += [i in self.protected_ids for i in run]
        return ids, protected

    def count(self, pieces: Sequence[Piece], visuals: Sequence[VisualInput]) -> TokenCount:
        """Exact sequence length and visual cost (works on size-only plans: no pixels needed)."""
        ids, _ = self.encode(pieces, visuals)
        visual_tokens, patches = self._visual_cost(visuals)
        return TokenCount(total=len(ids), visual=visual_tokens, patches=patches)

    def prepare(
        self, pieces: Sequence[Piece], visuals: Sequence[VisualInput], max_tokens: int, truncate: bool
    ) -> VLPrepared:
        """Encode, then refuse (or, with `truncate`, cut) a prompt over `max_tokens`."""
        ids, protected = self.encode(pieces, visuals)
        full = len(ids)
        if full > max_tokens:
            if not truncate:
                raise VLInputError(f"input has {full} tokens, more than the model's limit of {max_tokens}")
            ids = truncate_body(ids, protected, max_tokens, self.suffix_len)
        visual_tokens, patches = self._visual_cost(visuals)
        return VLPrepared(
            ids=ids, visuals=list(visuals), full_length=full, visual_tokens=visual_tokens, patches=patches
        )

    def _visual_cost(self, visuals: Sequence[VisualInput]) -> tuple[int, int]:
        """(visual tokens, vision-tower patches) of the visual inputs."""
        merge2 = self.merge_size**2
        return sum(v.num_patches // merge2 for v in visuals), sum(v.num_patches for v in visuals)


def truncate_body(ids: list[int], protected: list[bool], limit: int, suffix_len: int) -> list[int]:
    """Keep every protected token and the suffix; drop unprotected tokens from the end of the body."""
    body, body_flags = ids[: len(ids) - suffix_len], protected[: len(ids) - suffix_len]
    suffix = ids[len(ids) - suffix_len :]
    keep_budget = limit - suffix_len - sum(body_flags)
    if keep_budget < 0:
        raise VLInputError(
            f"input has {len(ids)} tokens and its images / videos alone exceed the model's limit of {limit}"
        )
    out = []
    for token, flag in zip(body, body_flags, strict=True):
        if flag:
            out.append(token)
        elif keep_budget > 0:
            out.append(token)
            keep_budget -= 1
    return out + suffix

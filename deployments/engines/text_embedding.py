"""Text embedding engine: encoder (BERT / XLM-R) and decoder (Qwen3-Embedding) recipes.

Plain torch + transformers, no Ray: the same object is used by the Ray deployment, the tests and the
benchmarks. `prepare` (tokenize) and `forward` are separate so a server can tokenize one batch while the
model computes the previous one. Speaks engines/protocol.py.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from deployments.engines.facts import ModelFacts, read_facts
from deployments.engines.late_chunking import late_chunk
from deployments.engines.micro_batches import MIN_FILL, pad_batch, plan_micro_batches
from deployments.engines.packed_encoder import PackedEncoder, packing_refusal
from deployments.engines.pooling import pool
from deployments.engines.protocol import Capabilities, EmbeddingOutput, EngineOptions
from deployments.engines.runtime import Runtime, choose_runtime
from deployments.engines.source import resolve_source
from deployments.engines.tokenization import TextTokenizer, Tokens

log = logging.getLogger(__name__)

PACKED_MAX_TOKENS = 128  # inputs up to this long run packed when the model allows it (see `_passes`)


@dataclass(frozen=True)
class TextEmbeddingRecipe:
    """How a family turns token states into one vector."""

    pooling: str | None = None  # None: read from the model's files (sentence-transformers pooling config)
    padding_side: str = "right"
    required_suffix_token: str | None = None  # e.g. "<|endoftext|>" for Qwen3-Embedding


ENCODER = TextEmbeddingRecipe()
QWEN3_EMBEDDING = TextEmbeddingRecipe(pooling="last", padding_side="left", required_suffix_token="<|endoftext|>")


class TextEmbeddingEngine:
    def __init__(
        self,
        source: str,
        recipe: TextEmbeddingRecipe = ENCODER,
        *,
        runtime: Runtime | None = None,
        max_tokens: int | None = None,
        max_batch_tokens: int = 16384,
        trust_remote_code: bool = False,
    ) -> None:
        path = resolve_source(source)
        self.runtime = runtime or choose_runtime()
        facts = read_facts(path) if _is_dir(path) else ModelFacts()
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.model = AutoModel.from_pretrained(
            path,
            dtype=self.runtime.dtype,
            attn_implementation=self.runtime.attn_implementation,
            trust_remote_code=trust_remote_code,
        )
        self.model.to(self.runtime.device).eval()
        self.packed: PackedEncoder | None = None
        refusal = "left padding" if recipe.padding_side != "right" else None
        refusal = refusal or packing_refusal(self.model, self.runtime.attn_implementation)
        if refusal is None:
            self.packed = PackedEncoder(self.model)
        else:
            log.info("%s runs padded batches: %s", source, refusal)

        self.pooling = recipe.pooling or facts.pooling or "cls"
        self.padding_side = recipe.padding_side
        self.dimensions = int(self.model.config.hidden_size)
        self.max_tokens = int(max_tokens or facts.max_tokens or _tokenizer_limit(self.tokenizer) or 512)
        self.max_batch_tokens = max_batch_tokens
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad_id)

        suffix_id = None
        if recipe.required_suffix_token:
            suffix_id = self.tokenizer.convert_tokens_to_ids(recipe.required_suffix_token)
            if suffix_id is None or suffix_id == self.tokenizer.unk_token_id:
                raise ValueError(f"{source}: tokenizer has no {recipe.required_suffix_token!r} token")
        self.text_tokenizer = TextTokenizer(self.tokenizer, self.max_tokens, required_suffix_id=suffix_id)
        log.info(
            "loaded %s: pooling=%s dims=%d max_tokens=%d device=%s dtype=%s attn=%s",
            source,
            self.pooling,
            self.dimensions,
            self.max_tokens,
            self.runtime.device,
            self.runtime.dtype,
            self.runtime.attn_implementation,
        )

    @classmethod
    def load(cls, source: str, options: EngineOptions) -> TextEmbeddingEngine:
        recipe = TextEmbeddingRecipe(pooling=options.pooling, **options.recipe)
        return cls(
            source,
            recipe,
            runtime=options.runtime,
            max_tokens=options.max_tokens,
            max_batch_tokens=options.max_batch_tokens,
            trust_remote_code=options.trust_remote_code,
        )

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            max_tokens=self.max_tokens,
            dimensions=self.dimensions,
            token_ids=True,
            token_id_inputs=True,
            late_chunking=self.pooling == "mean",
        )

    # -- tokenize ---------------------------------------------------------------------------------
    def prepare(self, inputs: Sequence[str], truncate: bool = False, direction: str = "right") -> list[Tokens]:
        """Token ids per text; over-long ones are cut only when `truncate` (the caller refuses the rest)."""
        return self.text_tokenizer.encode(inputs, truncate=truncate, direction=direction)

    def prepare_ids(
        self,
        sequences: Sequence[Sequence[int]],
        prefix: str | None = None,
        truncate: bool = False,
        direction: str = "right",
    ) -> list[Tokens]:
        """Token-id inputs as prepared items: the same framing as `prepare` gives a text's ids (special tokens,
        required suffix; the instruction `prefix` tokenized and put first). Ids past the tokenizer's vocabulary
        or the model's embedding table raise InputError naming the input."""
        return self.text_tokenizer.encode_ids(
            sequences, prefix, truncate=truncate, direction=direction, vocab_size=self.vocab_size
        )

    @property
    def vocab_size(self) -> int:
        """Ids the model can look up: the smaller of the tokenizer's vocabulary and the embedding table."""
        table = getattr(self.model.config, "vocab_size", None)
        return min(self.text_tokenizer.vocab_size, int(table)) if table else self.text_tokenizer.vocab_size

    def token_details(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[dict]]:
        return self.text_tokenizer.token_details(texts, add_special_tokens)

    def decode_ids(self, sequences: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        return self.text_tokenizer.decode_ids(sequences, skip_special_tokens)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [t.ids for t in self.prepare(texts)]

    def late_chunk(self, chunks: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """Chunks of one document, encoded together: (raw vectors [n, dims], tokens per chunk)."""
        return late_chunk(self, chunks, self.max_tokens)

    # -- forward ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def token_states(self, items: Sequence[Tokens]) -> list[torch.Tensor]:
        """Last hidden states per input ([len, H], float32 on CPU), for pooling done elsewhere."""
        out: list[torch.Tensor | None] = [None] * len(items)
        for group, hidden, mask in self._passes(items):
            for row, i in enumerate(group):
                out[i] = hidden[row][mask[row].bool()].float().cpu()
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def pooled(self, items: Sequence[Tokens]) -> np.ndarray:
        """Pooled, un-normalized vectors [n, dims] float32, in the order given."""
        out = np.empty((len(items), self.dimensions), dtype=np.float32)
        for group, hidden, mask in self._passes(items):
            pooled = pool(hidden, mask, self.pooling).float().cpu().numpy()
            out[group] = pooled
        return out

    @torch.inference_mode()
    def forward(self, items: Sequence[Tokens]) -> list[EmbeddingOutput]:
        """The protocol's raw outputs: one un-normalized dense vector per item, plus every token's final state
        ([len, hidden] float32) for items prepared with `keep_states`."""
        if not any(t.keep_states for t in items):
            return [EmbeddingOutput(dense=row) for row in self.pooled(items)]
        out = [EmbeddingOutput() for _ in items]
        for group, hidden, mask in self._passes(items):
            pooled = pool(hidden, mask, self.pooling).float().cpu().numpy()
            for row, i in enumerate(group):
                out[i].dense = pooled[row]
                if items[i].keep_states:
                    out[i].tokens = hidden[row][mask[row].bool()].float().cpu().numpy()
        return out

    def _passes(self, items: Sequence[Tokens]) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
        """(indices, hidden [rows, longest, H], mask) per forward pass, each pass under the token budget.

        Packed (packed_encoder.py), inputs up to PACKED_MAX_TOKENS share passes whatever their lengths (attention
        is bucketed by length inside); longer ones run padded, cut where rows would be mostly padding: at those
        lengths attention dominates and scattering into buckets cost more than padding did
        (`python -m bench.packed_encoder`)."""
        lengths = [len(t) for t in items]
        short = [i for i, n in enumerate(lengths) if self.packed is not None and n <= PACKED_MAX_TOKENS]
        long = [i for i, n in enumerate(lengths) if self.packed is None or n > PACKED_MAX_TOKENS]
        for subset, packed in ((long, False), (short, True)):
            plan = plan_micro_batches(
                [lengths[i] for i in subset], self.max_batch_tokens, min_fill=0.0 if packed else MIN_FILL
            )
            for group in plan:
                indices = [subset[j] for j in group]
                hidden, mask = self._forward([items[i].ids for i in indices], packed)
                yield indices, hidden, mask

    def _forward(self, sequences: Sequence[Sequence[int]], packed: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if packed and self.packed is not None:
            return self.packed(sequences, self.runtime.device)
        ids, mask = pad_batch(sequences, self.pad_id, self.padding_side)
        ids = ids.to(self.runtime.device, non_blocking=True)
        mask = mask.to(self.runtime.device, non_blocking=True)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return hidden, mask


def _is_dir(path: str) -> bool:
    return os.path.isdir(path)


def _tokenizer_limit(tokenizer) -> int | None:
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < 1_000_000 else None

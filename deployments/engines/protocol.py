"""The one protocol every engine speaks, so one deployment shell can serve any family.

An engine turns request inputs into prepared items (`prepare` for embedding inputs, `prepare_pairs` for
rerank pairs), runs a list of prepared items through the model (`forward`, raw outputs: un-normalized vectors
or relevance logits) and states what it can do (`capabilities`). Everything after the raw outputs (matryoshka
cut, normalization, sigmoid) is engines/postprocess.py, the same for every family.

Prepared items have a length (tokens the model will see), `full_length` (tokens before any cut) and `cost`
(tokens a batch pays for them: the sequence length, vision patches included), so one batcher handles them all.
An input the engine cannot take raises `InputError` naming its position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # the contract stays torch-free: deployment shells import it in processes that run no model
    from deployments.engines.runtime import Runtime


class InputError(ValueError):
    """One input cannot be prepared (too long, bad media geometry, ...). `index` None means the query."""

    def __init__(self, message: str, index: int | None = None, *, too_long: bool = False) -> None:
        super().__init__(message)
        self.index = index
        self.too_long = too_long


@dataclass(slots=True)
class EmbeddingOutput:
    """An embedding engine's raw answer for one input: the dense vector before any cut or normalization, and
    the multi-vector outputs of engines that have them (BGE-M3: a sparse vector and ColBERT rows)."""

    dense: np.ndarray | None = None
    sparse: Any = None
    colbert: np.ndarray | None = None
    tokens: np.ndarray | None = None  # [tokens, hidden] final states, for items prepared with keep_states


@dataclass(frozen=True)
class Capabilities:
    """What a loaded engine can give; the deployment reports it and checks calls against it."""

    max_tokens: int
    dimensions: int | None = None  # embedding engines: native vector size
    outputs: tuple[str, ...] = ("dense",)
    token_ids: bool = False  # plain text -> the model's token ids (/tokenize, chunking)
    # Token-level work beyond that: token-id inputs (`prepare_ids`), token details and decoding (`token_details`,
    # `decode_ids`) and every token's final state for items prepared with `keep_states` (TEI's /embed_all).
    token_id_inputs: bool = False
    late_chunking: bool = False  # token states of a long text (mean-pooling encoders)


@dataclass
class EngineOptions:
    """How to load an engine: the runtime, limits, and the family's recipe settings."""

    runtime: Runtime | None = None
    max_tokens: int | None = None
    max_batch_tokens: int = 16384
    trust_remote_code: bool = False
    pooling: str | None = None
    default_instruction: str | None = None
    outputs: tuple[str, ...] = ("dense",)
    vision: dict[str, Any] = field(default_factory=dict)  # VL engines: pixel and frame budgets
    recipe: dict[str, Any] = field(default_factory=dict)  # the family's fixed engine settings


@runtime_checkable
class EmbeddingEngine(Protocol):
    max_batch_tokens: int

    @classmethod
    def load(cls, source: str, options: EngineOptions) -> EmbeddingEngine: ...

    @property
    def capabilities(self) -> Capabilities: ...

    def prepare(self, inputs: Sequence[Any], truncate: bool = False, direction: str = "right") -> list[Any]: ...

    def forward(self, items: Sequence[Any]) -> list[EmbeddingOutput]: ...


@runtime_checkable
class RerankEngine(Protocol):
    max_batch_tokens: int

    @classmethod
    def load(cls, source: str, options: EngineOptions) -> RerankEngine: ...

    @property
    def capabilities(self) -> Capabilities: ...

    def prepare_pairs(
        self,
        query: Any,
        documents: Sequence[Any],
        instruction: str | None = None,
        max_tokens_per_doc: int | None = None,
    ) -> list[Any]: ...

    def forward(self, items: Sequence[Any]) -> np.ndarray: ...

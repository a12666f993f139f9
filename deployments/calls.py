"""The calls a model deployment answers and its replies: the contract between the router and the models.

Python objects sent over Ray handles, not HTTP: the router builds a call from a validated request and its
policy, a deployment answers it. Every deployment shell takes these and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Priority lanes of a model's queue (deployments/batcher.py): a user's query goes ahead of re-indexing traffic.
INTERACTIVE = "interactive"
BULK = "bulk"
PRIORITIES = (INTERACTIVE, BULK)


@dataclass(slots=True)
class EmbedCall:
    """texts for text models; for Qwen3-VL models `items` ({text?, image?, video?, instruction?} dicts with
    raw media references, decoded by the deployment) and the request-wide `instruction`."""

    texts: list[str]
    truncate: bool = False
    truncation_direction: str = "right"
    dimensions: int | None = None
    normalize: bool = True
    late_chunking: bool = False
    items: list[dict] | None = None
    instruction: str | None = None
    outputs: tuple[str, ...] = ("dense",)  # any of dense, sparse, colbert; "tokens": every token's final state
    sparse_tokens: bool = False
    deadline: float | None = None  # time.time() after which nobody waits for the answer: skip its inputs
    # Token-id inputs (OpenAI's `input` as ids): the model's own ids, one list per input, used instead of
    # `texts` (then empty). `token_prefix` is the instruction text of the family's template before the input
    # (e.g. "Instruct: ...\nQuery:"): tokenized and put before each input's ids, special tokens around both.
    token_ids: list[list[int]] | None = None
    token_prefix: str | None = None
    # Task-adapter families (jina-embeddings-v3): the task picks the model's adapter (and its own prompt).
    task: str | None = None
    priority: str = INTERACTIVE  # the lane of its inputs in the model's queue; set by the router


@dataclass(slots=True)
class EmbedReply:
    vectors: np.ndarray  # [n, dims] float32 (dense; empty [n, 0] when dense was not asked for)
    token_counts: list[int] = field(default_factory=list)
    model: str = ""
    sparse: list[dict] | None = None  # BGE-M3: {"indices", "values"[, "tokens"]} per input
    colbert: list[np.ndarray] | None = None  # BGE-M3: [tokens - 1, dim] per input
    token_states: list[np.ndarray] | None = None  # outputs "tokens": [tokens, hidden] final states per input

    @property
    def total_tokens(self) -> int:
        return int(sum(self.token_counts))


@dataclass(slots=True)
class TokenCall:
    """A text model's tokenizer at work, through its deployment's `tokenize` method (which still takes a plain
    list of texts for ids only): token details of `texts` (TEI's /tokenize), or `decode` each id list back
    to text (TEI's /decode).

    Tokenize answers one list per text of {"id", "text", "special", "start", "stop"} (start / stop: UTF-8 byte
    offsets in the text, None for special tokens); decode answers one string per id list."""

    texts: list[str] = field(default_factory=list)
    add_special_tokens: bool = True
    decode: list[list[int]] | None = None
    skip_special_tokens: bool = True


@dataclass(slots=True)
class RerankCall:
    """Plain strings for text rerankers; {text?, image?, video?} dicts for Qwen3-VL rerankers."""

    query: str | dict
    documents: list
    instruction: str | None = None
    max_tokens_per_doc: int | None = None
    raw_scores: bool = False
    priority: str = INTERACTIVE  # the lane of its pairs in the model's queue; set by the router


@dataclass(slots=True)
class RerankReply:
    scores: np.ndarray  # [n_documents] float32, in document order
    token_counts: list[int] = field(default_factory=list)
    model: str = ""

    @property
    def total_tokens(self) -> int:
        return int(sum(self.token_counts))

"""What happens to raw engine outputs, once, for every family: matryoshka cut, normalization, sigmoid, and the
embedding outputs a caller asked for (dense, sparse, ColBERT, token states) taken from the engine's raw rows.

Used by the embedding deployment (deployments/embedding.py) and the corpus job (serve_app/corpus/), so a vector
written by a batch job is the vector the API answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def finalize_rows(vectors: np.ndarray, dimensions: int | None, normalize: bool) -> np.ndarray:
    """Matryoshka cut first, then L2-normalize each kept prefix (a cut unit vector is no longer unit)."""
    out = np.array(vectors[:, :dimensions] if dimensions else vectors, dtype=np.float32, copy=True, ndmin=2)
    if normalize:
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
    return out


def relevance(logits: np.ndarray, raw: bool = False) -> np.ndarray:
    """Rerank scores from relevance logits: the logits themselves when `raw`, else sigmoid -> [0, 1].

    For Qwen3-style judges the logit is yes - no, and softmax([no, yes]) at yes equals its sigmoid.
    """
    x = np.asarray(logits, dtype=np.float64)
    if raw:
        return x.astype(np.float32)
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


@dataclass(slots=True)
class FinishedEmbeddings:
    """The outputs asked for, for a list of inputs in order (None: not asked for)."""

    vectors: np.ndarray  # [n, dims] float32 dense vectors, cut and normalized; [n, 0] when dense was not asked for
    sparse: list[dict] | None = None  # {"indices", "values"[, "tokens"]} per input
    colbert: list[np.ndarray] | None = None  # [tokens - 1, dim] per input
    token_states: list[np.ndarray] | None = None  # [tokens, hidden] per input


def finish_embeddings(
    rows: Sequence[Any],
    outputs: Sequence[str],
    dimensions: int | None,
    normalize: bool,
    sparse_tokens: bool = False,
    token_strings: Callable[[Any], list[str]] | None = None,
) -> FinishedEmbeddings:
    """Raw engine rows (protocol.EmbeddingOutput) -> the outputs asked for: dense cut then normalized
    (finalize_rows), sparse vectors as {"indices", "values"} (plus "tokens" from `token_strings` when
    `sparse_tokens`), ColBERT matrices and token states as the engine gave them."""
    out = FinishedEmbeddings(vectors=np.empty((len(rows), 0), np.float32))
    if "dense" in outputs:
        out.vectors = finalize_rows(np.stack([r.dense for r in rows]), dimensions, normalize)
    if "sparse" in outputs:
        out.sparse = []
        for r in rows:
            entry = {"indices": r.sparse.indices, "values": r.sparse.values}
            if sparse_tokens and token_strings is not None:
                entry["tokens"] = token_strings(r.sparse)
            out.sparse.append(entry)
    if "colbert" in outputs:
        out.colbert = [r.colbert for r in rows]
    if "tokens" in outputs:
        out.token_states = [r.tokens for r in rows]
    return out

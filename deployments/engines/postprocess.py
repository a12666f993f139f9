"""What happens to raw engine outputs, once, for every family: matryoshka cut, normalization, sigmoid."""

from __future__ import annotations

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

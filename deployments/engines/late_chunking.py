"""Late chunking: encode a document once, then mean-pool each chunk's own token span.

The request's inputs are consecutive chunks of one document. Their tokens are concatenated between
the model's special tokens and run through the encoder together, so every chunk's tokens see the
whole context; each chunk's vector is the mean of its tokens' final states. Past the model's limit the
document is covered by windows that overlap by a quarter: tokens of a later window's overlap are
taken from the earlier window, so every token keeps left context.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from deployments.engines.tokenization import Tokens


def _special_frame(engine) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a single text (e.g. [CLS] ... [SEP])."""
    backend = engine.text_tokenizer.backend
    marker = backend.encode("x", add_special_tokens=False).ids
    framed = backend.post_process(backend.encode("x", add_special_tokens=False)).ids
    for start in range(len(framed) - len(marker) + 1):
        if framed[start : start + len(marker)] == marker:
            return framed[:start], framed[start + len(marker) :]
    return [], []


def late_chunk(engine, chunks: Sequence[str], max_tokens: int) -> tuple[np.ndarray, list[int]]:
    """-> (vectors [n_chunks, dims] un-normalized, tokens per chunk)."""
    backend = engine.text_tokenizer.backend
    pieces = [enc.ids for enc in backend.encode_batch(list(chunks), add_special_tokens=False)]
    prefix, suffix = _special_frame(engine)
    content = [tok for piece in pieces for tok in piece]
    window = max_tokens - len(prefix) - len(suffix)
    if window < 2:
        raise ValueError("model limit too small for late chunking")
    overlap = window // 4 if len(content) > window else 0
    step = window - overlap

    states = torch.empty((len(content), engine.dimensions), dtype=torch.float32)
    starts = list(range(0, max(len(content) - overlap, 1), step)) if content else []
    windows = [Tokens(ids=prefix + content[s : s + window] + suffix, full_length=0) for s in starts]
    for k, (start, hidden) in enumerate(zip(starts, engine.token_states(windows), strict=True)):
        body = hidden[len(prefix) : len(hidden) - len(suffix)]
        skip = overlap if k > 0 else 0
        states[start + skip : start + len(body)] = body[skip:]

    vectors = np.empty((len(pieces), engine.dimensions), dtype=np.float32)
    offset = 0
    for i, piece in enumerate(pieces):
        span = states[offset : offset + len(piece)]
        vectors[i] = span.mean(dim=0).numpy() if len(piece) else 0.0
        offset += len(piece)
    # Usage: every token the model processed, special tokens of each window included.
    total = sum(len(w.ids) for w in windows)
    counts = [len(p) for p in pieces]
    if counts:
        counts[0] += total - sum(counts)
    return vectors, counts

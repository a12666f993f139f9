"""Late chunking against a reference pooled by hand from the model's token states (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from deployments.engines.late_chunking import late_chunk
from deployments.engines.text_embedding import ENCODER, TextEmbeddingEngine

# Byte-level tiny tokenizer: about one token per character, and the tiny model takes 128 tokens.
CHUNKS = ["Berlin is big.", "It has 3.8M people.", "It is also a state."]


@pytest.fixture(scope="module")
def engine(tiny_xlmr_mean):
    return TextEmbeddingEngine(str(tiny_xlmr_mean), ENCODER)


def _hand_pooled(path, chunks, first_window_tokens=None):
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32, add_pooling_layer=False).eval()
    pieces = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in chunks]
    content = [t for p in pieces for t in p]
    if first_window_tokens is not None:
        content = content[:first_window_tokens]
    ids = torch.tensor([[tokenizer.cls_token_id, *content, tokenizer.sep_token_id]])
    with torch.no_grad():
        states = model(input_ids=ids).last_hidden_state[0, 1:-1]
    out, start = [], 0
    for p in pieces:
        span = states[start : start + len(p)]
        if len(span) == len(p):
            out.append(span.mean(0).numpy())
        start += len(p)
    return np.stack(out), pieces


def test_equals_hand_pooled_reference(engine, tiny_xlmr_mean):
    vectors, counts = late_chunk(engine, CHUNKS, engine.max_tokens)
    reference, pieces = _hand_pooled(tiny_xlmr_mean, CHUNKS)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)
    assert sum(counts) == sum(len(p) for p in pieces) + 2  # one <s> and one </s>


def test_differs_from_independent_chunks(engine):
    vectors, _ = late_chunk(engine, CHUNKS, engine.max_tokens)
    independent = engine.pooled(engine.prepare(CHUNKS))
    for late, alone in zip(vectors, independent, strict=True):
        cos = late @ alone / (np.linalg.norm(late) * np.linalg.norm(alone))
        assert cos < 0.9999


def test_long_document_uses_overlapping_windows(engine, tiny_xlmr_mean):
    doc = [f"Sentence number {i} talks about topic {i % 7} in some detail." for i in range(12)]
    max_tokens = 64
    vectors, counts = late_chunk(engine, doc, max_tokens)
    assert vectors.shape == (12, engine.dimensions) and np.isfinite(vectors).all()
    # Chunks lying wholly inside the first window equal a single pass over that window.
    reference, pieces = _hand_pooled(tiny_xlmr_mean, doc, first_window_tokens=max_tokens - 2)
    assert len(reference) >= 1
    np.testing.assert_allclose(vectors[: len(reference)], reference, atol=1e-5)
    assert sum(counts) > sum(len(p) for p in pieces)  # overlap and per-window specials are counted

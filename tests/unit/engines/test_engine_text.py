"""Text embedding engines without Ray, against references written from the official recipes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from deployments.engines.postprocess import finalize_rows
from deployments.engines.text_embedding import ENCODER, QWEN3_EMBEDDING, TextEmbeddingEngine

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Ray Serve batches requests dynamically.",
    "short",
    "Embeddings map text to vectors; similar meaning, nearby vectors, even across a much longer sentence.",
]


def _embed(engine: TextEmbeddingEngine, texts, dims=None, normalize=True) -> np.ndarray:
    raw = np.stack([out.dense for out in engine.forward(engine.prepare(texts))])
    return finalize_rows(raw, dims, normalize)


# ---- real weights: all-MiniLM-L6-v2 against sentence-transformers ------------------------------
@pytest.fixture(scope="module")
def minilm(minilm_path):
    return TextEmbeddingEngine(minilm_path, ENCODER)


def test_minilm_matches_sentence_transformers(minilm, minilm_path):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(minilm_path, device="cpu").encode(SENTENCES, normalize_embeddings=True)
    ours = _embed(minilm, SENTENCES)
    cosine = (ours * reference).sum(axis=1)
    assert cosine.min() >= 0.9999, cosine
    assert minilm.pooling == "mean" and minilm.max_tokens == 256 and minilm.dimensions == 384


def test_minilm_token_counts_are_real(minilm, minilm_path):
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    for text, tokens in zip(SENTENCES, minilm.prepare(SENTENCES), strict=True):
        assert tokens.ids == tokenizer(text)["input_ids"]


def test_batch_equals_alone(minilm):
    together = _embed(minilm, SENTENCES)
    alone = np.stack([_embed(minilm, [s])[0] for s in SENTENCES])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_truncation_is_explicit_and_directional(minilm):
    long_text = " ".join(f"word{i}" for i in range(600))
    whole = minilm.prepare([long_text])[0]
    assert whole.full_length > 256 and len(whole) == whole.full_length  # never cut unless asked
    right = minilm.prepare([long_text], truncate=True)[0]
    left = minilm.prepare([long_text], truncate=True, direction="left")[0]
    assert len(right) == len(left) == 256 and right.truncated and left.truncated
    assert right.ids[0] == left.ids[0] == 101 and right.ids[-1] == left.ids[-1] == 102  # [CLS] .. [SEP] kept
    assert right.ids[1:5] == whole.ids[1:5] and left.ids[-5:-1] == whole.ids[-5:-1]


# ---- tiny Qwen3: last-token pooling, left padding, <|endoftext|> -------------------------------
def _qwen3_reference(path, texts, append_eos: bool) -> np.ndarray:
    """The official Qwen3-Embedding recipe: left padding, last token, L2 normalize."""
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    ids = [tokenizer(t)["input_ids"] for t in texts]
    if append_eos:
        ids = [[*x, tokenizer.convert_tokens_to_ids("<|endoftext|>")] for x in ids]
    batch = tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    assert bool((batch["attention_mask"][:, -1] == 1).all())  # left padded: the last column is real
    return F.normalize(hidden[:, -1], p=2, dim=1).numpy()


def test_qwen3_last_token_left_padding(tiny_qwen3):
    engine = TextEmbeddingEngine(str(tiny_qwen3), QWEN3_EMBEDDING)
    eos = engine.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    tokens = engine.prepare(SENTENCES)
    assert all(t.ids[-1] == eos and t.ids.count(eos) == 1 for t in tokens)
    np.testing.assert_allclose(_embed(engine, SENTENCES), _qwen3_reference(tiny_qwen3, SENTENCES, False), atol=1e-5)


def test_qwen3_eos_appended_when_tokenizer_lacks_it(tiny_qwen3_no_eos):
    engine = TextEmbeddingEngine(str(tiny_qwen3_no_eos), QWEN3_EMBEDDING)
    eos = engine.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert engine.tokenizer("hello")["input_ids"][-1] != eos  # the tokenizer itself does not add it
    assert all(t.ids[-1] == eos for t in engine.prepare(SENTENCES))
    reference = _qwen3_reference(tiny_qwen3_no_eos, SENTENCES, append_eos=True)
    np.testing.assert_allclose(_embed(engine, SENTENCES), reference, atol=1e-5)


def test_qwen3_truncation_keeps_eos(tiny_qwen3):
    engine = TextEmbeddingEngine(str(tiny_qwen3), QWEN3_EMBEDDING, max_tokens=20)
    eos = engine.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    t = engine.prepare(["a fairly long sentence that certainly needs more than twenty tokens"], truncate=True)[0]
    assert len(t) == 20 and t.ids[-1] == eos and t.truncated


def test_matryoshka_cut_then_renormalize(tiny_qwen3):
    engine = TextEmbeddingEngine(str(tiny_qwen3), QWEN3_EMBEDDING)
    full = _embed(engine, SENTENCES)
    cut = _embed(engine, SENTENCES, dims=16)
    expected = full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-6)


# ---- tiny XLM-R: CLS / mean pooling from the sentence-transformers config ----------------------
def _xlmr_reference(path, texts, mode: str) -> np.ndarray:
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32, add_pooling_layer=False).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    if mode == "cls":
        pooled = hidden[:, 0]
    else:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
    return F.normalize(pooled, p=2, dim=1).numpy()


@pytest.mark.parametrize("fixture,mode", [("tiny_xlmr", "cls"), ("tiny_xlmr_mean", "mean")])
def test_xlmr_pooling_from_config(request, fixture, mode):
    path = request.getfixturevalue(fixture)
    engine = TextEmbeddingEngine(str(path), ENCODER)
    assert engine.pooling == mode
    assert engine.max_tokens == 128  # 130 positions minus RoBERTa's offset of 2
    np.testing.assert_allclose(_embed(engine, SENTENCES), _xlmr_reference(path, SENTENCES, mode), atol=1e-5)


def test_unnormalized_output_keeps_norm(tiny_xlmr):
    engine = TextEmbeddingEngine(str(tiny_xlmr), ENCODER)
    raw = _embed(engine, SENTENCES, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)

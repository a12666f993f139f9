"""Packed encoder passes give the model's own padded results: BERT (MiniLM) and XLM-R (positions from
padding_idx + 1), every length mix, token states too; configurations it does not reproduce run padded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModel

from deployments.engines import text_embedding
from deployments.engines.packed_encoder import PackedEncoder, packing_refusal
from deployments.engines.text_embedding import ENCODER, TextEmbeddingEngine

TEXTS = [
    "short",
    "The quick brown fox jumps over the lazy dog.",
    "Ray Serve batches requests dynamically, and a batch of queries is mostly short sentences.",
    "Ünïcödé, 日本語のテキスト, emoji 🙂 and a longer tail " + "word " * 40,
    "x",
    "long " * 300,  # past the packed length (truncated to the model's limit): runs padded beside packed ones
]


def _reference(path: str, engine: TextEmbeddingEngine, items) -> list[torch.Tensor]:
    """The model's own forward, one input at a time (no padding at all)."""
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    with torch.inference_mode():
        return [model(input_ids=torch.tensor([t.ids])).last_hidden_state[0] for t in items]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.mark.parametrize("which", ["minilm", "xlmr"])
def test_packed_states_equal_the_models_own(which, minilm_path, tiny_xlmr_mean, monkeypatch):
    monkeypatch.setattr(text_embedding, "PACKED_MAX_TOKENS", 64)  # the tiny XLM-R takes 128 tokens at most
    path = minilm_path if which == "minilm" else str(tiny_xlmr_mean)
    engine = TextEmbeddingEngine(path, ENCODER)
    assert engine.packed is not None
    items = engine.prepare(TEXTS, truncate=True)
    lengths = [len(t) for t in items]
    assert min(lengths) <= 64 < max(lengths)
    states = engine.token_states(items)
    for ours, ref in zip(states, _reference(path, engine, items), strict=True):
        assert ours.shape == ref.shape
        assert _cosines(ours.numpy(), ref.numpy()).min() > 0.99999
    # pooled vectors through the protocol: the same as padded passes of the same engine
    packed = np.stack([o.dense for o in engine.forward(items)])
    engine.packed, keep = None, engine.packed
    padded = np.stack([o.dense for o in engine.forward(items)])
    engine.packed = keep
    assert _cosines(packed, padded).min() > 0.99999


def test_position_offset_follows_the_model_type(minilm_path, tiny_xlmr_mean):
    bert = PackedEncoder(AutoModel.from_pretrained(minilm_path))
    xlmr_model = AutoModel.from_pretrained(str(tiny_xlmr_mean))
    xlmr = PackedEncoder(xlmr_model)
    assert bert.position_offset == 0
    assert xlmr.position_offset == xlmr_model.config.pad_token_id + 1


def test_fused_qkv_leaves_the_models_own_forward_unchanged(minilm_path):
    model = AutoModel.from_pretrained(minilm_path).eval()
    ids = torch.tensor([[101, 7592, 2088, 102]])
    with torch.inference_mode():
        before = model(input_ids=ids).last_hidden_state.clone()
        PackedEncoder(model)
        after = model(input_ids=ids).last_hidden_state
    assert torch.allclose(before, after, atol=1e-6)
    query = model.encoder.layer[0].attention.self.query.weight
    assert (
        query.untyped_storage().data_ptr()
        == model.encoder.layer[0].attention.self.key.weight.untyped_storage().data_ptr()
    )


def test_unsupported_configurations_run_padded(minilm_path):
    model = AutoModel.from_pretrained(minilm_path)
    assert packing_refusal(model, "sdpa") is None
    assert "flash_attention_2" in packing_refusal(model, "flash_attention_2")
    model.config.position_embedding_type = "relative_key"
    assert "relative_key" in packing_refusal(model, "sdpa")
    model.config.position_embedding_type = "absolute"
    model.config.is_decoder = True
    assert "decoder" in packing_refusal(model, "sdpa")


def test_decoder_models_are_not_packed(tiny_qwen3):
    from deployments.engines.text_embedding import QWEN3_EMBEDDING

    engine = TextEmbeddingEngine(str(tiny_qwen3), QWEN3_EMBEDDING)
    assert engine.packed is None

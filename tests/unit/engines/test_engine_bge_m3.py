"""BGE-M3 engine (dense + sparse + ColBERT) on a tiny XLM-R, against an independent official-recipe reference.

The reference runs the plain transformers model on a padded batch and applies the two heads by hand,
as FlagEmbedding's M3 model does: relu(sparse_linear(h)) max-aggregated per token id without the cls,
eos, pad and unk ids; colbert_linear(h[:, 1:]) masked, L2-normalized, cut to n - 1 rows; CLS dense.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers.tiny_models import build_tiny_xlmr
from transformers import AutoModel, AutoTokenizer

from deployments.engines.bge_m3 import (
    COLBERT_HEAD_FILE,
    SPARSE_HEAD_FILE,
    BGEM3Engine,
    MissingHeadError,
    SparseVector,
)

HIDDEN = 32  # build_tiny_xlmr's hidden size; its byte-level tokenizer gives about one token per character
TEXTS = [
    "the the the cat sat on the mat, the end",
    "BGE-M3 gives dense, sparse and multi-vector outputs.",
    "x",
    "",
    "A longer passage, so padding matters in a batch: weights per token, vectors per token, one vector.",
]


@pytest.fixture(scope="module")
def m3_dir(tmp_path_factory):
    directory = build_tiny_xlmr(tmp_path_factory.mktemp("bge-m3") / "model", pooling="mean", seed=3)
    torch.manual_seed(7)
    sparse = torch.nn.Linear(HIDDEN, 1)
    colbert = torch.nn.Linear(HIDDEN, HIDDEN)
    with torch.no_grad():
        sparse.bias.fill_(0.2)  # most tokens get a weight > 0, some do not
    torch.save(sparse.state_dict(), directory / SPARSE_HEAD_FILE)
    torch.save(colbert.state_dict(), directory / COLBERT_HEAD_FILE)
    return directory


@pytest.fixture(scope="module")
def engine(m3_dir):
    return BGEM3Engine(str(m3_dir))


def _reference(path, texts):
    """Plain forward on a right-padded batch, then the official heads by hand."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32, add_pooling_layer=False).eval()
    sparse_sd = torch.load(path / SPARSE_HEAD_FILE, weights_only=True)
    colbert_sd = torch.load(path / COLBERT_HEAD_FILE, weights_only=True)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**batch).last_hidden_state  # [B, T, H]
        dense = F.normalize(h[:, 0], dim=-1)
        token_weights = torch.relu(h @ sparse_sd["weight"].T + sparse_sd["bias"]).squeeze(-1)  # [B, T]
        colbert = h[:, 1:] @ colbert_sd["weight"].T + colbert_sd["bias"]
        colbert = colbert * batch["attention_mask"][:, 1:, None].float()
        colbert = F.normalize(colbert, dim=-1)
    unused = {tokenizer.cls_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id}
    lexical, multi = [], []
    for row in range(len(texts)):
        weights: dict[int, float] = {}
        for token_id, w in zip(batch["input_ids"][row].tolist(), token_weights[row].tolist(), strict=True):
            if token_id not in unused and w > 0 and w > weights.get(token_id, 0.0):
                weights[token_id] = w
        lexical.append(weights)
        n = int(batch["attention_mask"][row].sum())
        multi.append(colbert[row, : n - 1].numpy())
    return dense.numpy(), lexical, multi, batch


def _assert_sparse_equal(ours: SparseVector, reference: dict[int, float]) -> None:
    assert set(ours.as_dict()) == set(reference)
    for token_id, weight in ours.as_dict().items():
        assert weight == pytest.approx(reference[token_id], abs=1e-5)


def test_three_outputs_match_official_recipe(engine, m3_dir):
    ref_dense, ref_sparse, ref_colbert, batch = _reference(m3_dir, TEXTS)
    tokens = engine.prepare(TEXTS)
    for text_tokens, row in zip(tokens, batch["input_ids"], strict=True):
        assert text_tokens.ids == [i for i in row.tolist() if i != engine.pad_id]  # the same tokens
    outs = engine.encode(tokens, dense=True, sparse=True, colbert=True)
    assert len(outs) == len(TEXTS)
    for i, out in enumerate(outs):
        np.testing.assert_allclose(out.dense, ref_dense[i], atol=1e-5)
        assert out.dense.dtype == np.float32 and out.dense.shape == (HIDDEN,)
        _assert_sparse_equal(out.sparse, ref_sparse[i])
        assert out.colbert.dtype == np.float32 and out.colbert.shape == (len(tokens[i]) - 1, HIDDEN)
        np.testing.assert_allclose(out.colbert, ref_colbert[i], atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(out.colbert, axis=1), 1.0, atol=1e-5)
    assert any(len(o.sparse) for o in outs)


def test_sparse_drops_specials_and_keeps_max_of_repeats(engine):
    tokens = engine.prepare([TEXTS[0]])[0]
    out = engine.encode([tokens], dense=False, sparse=True)[0]
    assert out.dense is None and out.colbert is None
    ids = np.asarray(tokens.ids)
    assert len(set(tokens.ids)) < len(tokens.ids)  # the text repeats tokens
    specials = {engine.tokenizer.cls_token_id, engine.tokenizer.eos_token_id}
    assert specials <= set(tokens.ids) and not specials & set(out.sparse.indices.tolist())
    assert np.all(np.diff(out.sparse.indices) > 0) and np.all(out.sparse.values > 0)
    # Each kept id's weight is the largest over its occurrences.
    hidden = engine.token_states([tokens])[0]
    per_token = torch.relu(engine.sparse_head(hidden)).squeeze(-1).detach().numpy()
    for token_id, weight in out.sparse.as_dict().items():
        assert weight == pytest.approx(float(per_token[ids == token_id].max()), abs=1e-6)


def test_sparse_token_view(engine):
    out = engine.encode(engine.prepare([TEXTS[1]]), dense=False, sparse=True)[0]
    view = engine.sparse_tokens(out.sparse)
    expected: dict[str, float] = {}
    for token_id, weight in out.sparse.as_dict().items():
        token = engine.tokenizer.decode([token_id])
        expected[token] = max(expected.get(token, 0.0), weight)
    assert view == expected and len(view) > 0
    strings = engine.token_strings(out.sparse)
    assert strings == [engine.tokenizer.decode([i]) for i in out.sparse.indices.tolist()]


def test_batch_equals_alone_across_micro_batches(m3_dir):
    engine = BGEM3Engine(str(m3_dir), max_batch_tokens=64)  # several micro-batches, padded rows
    tokens = engine.prepare(TEXTS)
    together = engine.encode(tokens, sparse=True, colbert=True)
    for item, out in zip(tokens, together, strict=True):
        alone = engine.encode([item], sparse=True, colbert=True)[0]
        np.testing.assert_allclose(out.dense, alone.dense, atol=1e-5)
        np.testing.assert_array_equal(out.sparse.indices, alone.sparse.indices)
        np.testing.assert_allclose(out.sparse.values, alone.sparse.values, atol=1e-5)
        np.testing.assert_allclose(out.colbert, alone.colbert, atol=1e-5)


def test_dense_is_cls_and_matches_embed(engine):
    tokens = engine.prepare(TEXTS)
    raw = engine.pooled(tokens)  # the inherited dense path: raw CLS states (the dir's pooling config says mean)
    outs = engine.encode(tokens, normalize_dense=False)
    np.testing.assert_allclose(np.stack([o.dense for o in outs]), raw, atol=1e-5)
    assert engine.pooling == "cls" and engine.outputs == ("dense", "sparse", "colbert")
    assert engine.colbert_dimensions == HIDDEN


def test_truncated_input_gives_one_colbert_row_per_kept_token(engine):
    long_text = " ".join(["word"] * 400)
    item = engine.prepare([long_text], truncate=True)[0]
    assert item.truncated and len(item) == engine.max_tokens
    out = engine.encode([item], colbert=True)[0]
    assert out.colbert.shape == (engine.max_tokens - 1, HIDDEN)


@pytest.mark.parametrize("missing", [SPARSE_HEAD_FILE, COLBERT_HEAD_FILE])
def test_missing_head_refuses_to_start(m3_dir, tmp_path, missing):
    model_dir = tmp_path / "m3"
    shutil.copytree(m3_dir, model_dir)
    (model_dir / missing).unlink()
    with pytest.raises(MissingHeadError) as err:
        BGEM3Engine(str(model_dir))
    assert missing in str(err.value) and str(model_dir) in str(err.value)
    # Not asking for that head starts fine, and asking it for that output later is refused.
    wants_sparse = missing != SPARSE_HEAD_FILE
    engine = BGEM3Engine(str(model_dir), sparse=wants_sparse, colbert=not wants_sparse)
    assert engine.outputs == ("dense", "sparse" if wants_sparse else "colbert")
    with pytest.raises(ValueError, match=re.escape(missing)):
        engine.encode(engine.prepare(["hello"]), sparse=not wants_sparse, colbert=wants_sparse)


def test_wrong_head_shape_is_refused(m3_dir, tmp_path):
    model_dir = tmp_path / "m3"
    shutil.copytree(m3_dir, model_dir)
    torch.save(torch.nn.Linear(HIDDEN, 2).state_dict(), model_dir / SPARSE_HEAD_FILE)
    with pytest.raises(ValueError, match=r"shape \[2, 32\]"):
        BGEM3Engine(str(model_dir))


def test_missing_head_for_hub_id_is_refused():  # conftest sets HF_HUB_OFFLINE: nothing is fetched
    with pytest.raises(MissingHeadError, match=re.escape(SPARSE_HEAD_FILE)):
        BGEM3Engine("no-such-org/no-such-bge-m3-model")


def test_nothing_asked_is_an_error(engine):
    with pytest.raises(ValueError, match="at least one"):
        engine.encode(engine.prepare(["x"]), dense=False)

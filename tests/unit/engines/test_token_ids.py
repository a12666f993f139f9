"""Token-id inputs, token details and decoding in the text engines (no Ray): ids are taken as they are and
framed exactly as the model's recipe frames a text's ids."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.engines.bge_m3 import BGEM3Engine
from deployments.engines.protocol import InputError
from deployments.engines.text_embedding import ENCODER, QWEN3_EMBEDDING, TextEmbeddingEngine
from deployments.families import QWEN3_QUERY_TEMPLATE

TEXTS = ["The quick brown fox.", "héllo wörld 🌍", "x"]


@pytest.fixture(scope="module", params=["minilm", "qwen3", "qwen3-no-eos", "xlmr", "bge-m3"])
def engine(request):
    if request.param == "minilm":
        return TextEmbeddingEngine(request.getfixturevalue("minilm_path"), ENCODER)
    if request.param == "qwen3":
        return TextEmbeddingEngine(str(request.getfixturevalue("tiny_qwen3")), QWEN3_EMBEDDING)
    if request.param == "qwen3-no-eos":
        return TextEmbeddingEngine(str(request.getfixturevalue("tiny_qwen3_no_eos")), QWEN3_EMBEDDING)
    if request.param == "xlmr":
        return TextEmbeddingEngine(str(request.getfixturevalue("tiny_xlmr")), ENCODER)
    return BGEM3Engine(str(request.getfixturevalue("tiny_bge_m3")))


def _plain_ids(engine, texts):
    backend = engine.text_tokenizer.backend
    return [enc.ids for enc in backend.encode_batch(list(texts), add_special_tokens=False)]


def test_ids_are_framed_like_text(engine):
    assert engine.capabilities.token_id_inputs and engine.capabilities.token_ids
    from_text = engine.prepare(TEXTS)
    from_ids = engine.prepare_ids(_plain_ids(engine, TEXTS))
    assert [t.ids for t in from_ids] == [t.ids for t in from_text]
    assert [t.full_length for t in from_ids] == [t.full_length for t in from_text]


def test_ids_embed_like_text(engine):
    a = np.stack([o.dense for o in engine.forward(engine.prepare(TEXTS))])
    b = np.stack([o.dense for o in engine.forward(engine.prepare_ids(_plain_ids(engine, TEXTS)))])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_instruction_prefix_is_tokenized_and_prepended(tiny_qwen3):
    engine = TextEmbeddingEngine(str(tiny_qwen3), QWEN3_EMBEDDING)
    prefix = QWEN3_QUERY_TEMPLATE.format(instruction="Find the answer", text="")
    ids = _plain_ids(engine, ["what is up"])
    got = engine.prepare_ids(ids, prefix)[0]
    backend = engine.text_tokenizer.backend
    eos = engine.text_tokenizer.required_suffix_id
    expected = [*backend.encode(prefix, add_special_tokens=False).ids, *ids[0], eos]
    assert got.ids == expected
    # the tiny tokenizer is byte-level without merges across ':': the same as the text with its instruction
    assert got.ids == engine.prepare([prefix + "what is up"])[0].ids


def test_ids_outside_the_vocabulary_name_the_input_and_position(engine):
    vocab = engine.vocab_size
    with pytest.raises(InputError) as err:
        engine.prepare_ids([[5, 6], [7, vocab]])
    assert err.value.index == 1 and "position 1" in str(err.value) and str(vocab) in str(err.value)
    with pytest.raises(InputError) as err:
        engine.prepare_ids([[-1]])
    assert err.value.index == 0


def test_truncation_of_ids_keeps_the_special_tokens(engine):
    long_ids = [_plain_ids(engine, ["word " * 600])[0]]
    whole = engine.prepare_ids(long_ids)[0]
    assert whole.full_length > engine.max_tokens and len(whole) == whole.full_length  # never cut unless asked
    right = engine.prepare_ids(long_ids, truncate=True)[0]
    left = engine.prepare_ids(long_ids, truncate=True, direction="left")[0]
    text_right = engine.prepare(["word " * 600], truncate=True)[0]
    text_left = engine.prepare(["word " * 600], truncate=True, direction="left")[0]
    assert right.ids == text_right.ids and left.ids == text_left.ids
    assert len(right) == len(left) == engine.max_tokens


def test_token_details_and_decode(engine):
    details = engine.token_details(TEXTS)
    assert [[t["id"] for t in d] for d in details] == [t.ids for t in engine.prepare(TEXTS)]
    for text, tokens in zip(TEXTS, details, strict=True):
        raw = text.encode("utf-8")
        for t in tokens:
            if t["special"]:
                assert t["start"] is None and t["stop"] is None
            else:
                assert raw[t["start"] : t["stop"]].decode("utf-8") == t["text"]
    bare = engine.token_details(TEXTS, add_special_tokens=False)
    assert [[t["id"] for t in d] for d in bare] == _plain_ids(engine, TEXTS)
    assert not any(t["special"] for d in bare for t in d)
    decoded = engine.decode_ids(_plain_ids(engine, TEXTS))
    assert decoded[0].strip().lower().startswith("the quick brown fox")
    with pytest.raises(InputError) as err:
        engine.decode_ids([[1], [engine.text_tokenizer.vocab_size + 3]])
    assert err.value.index == 1


def test_kept_token_states_beside_the_pooled_vector(engine):
    """TEI's /embed_all: items prepared with keep_states also give every token's final state."""
    plain = engine.forward(engine.prepare(TEXTS))
    items = engine.prepare(TEXTS)
    items[1].keep_states = True
    outs = engine.forward(items)
    for a, b in zip(plain, outs, strict=True):
        np.testing.assert_allclose(a.dense, b.dense, atol=1e-6)
    assert outs[0].tokens is None and outs[2].tokens is None
    want = engine.token_states([engine.prepare([TEXTS[1]])[0]])[0].numpy()
    assert outs[1].tokens.shape == (len(items[1]), engine.dimensions)
    np.testing.assert_allclose(outs[1].tokens, want, atol=1e-5)

"""Reranking engines against references written from the official recipes (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.tiny_models import build_tiny_cross_encoder, build_tiny_qwen3_reranker
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from deployments.engines.postprocess import relevance
from deployments.engines.rerankers import CrossEncoderEngine, QueryTooLong, Qwen3RerankerEngine

QUERY = "what is the capital of france"
DOCS = [
    "Paris is the capital of France.",
    "The weather is nice today.",
    "Berlin is the capital of Germany and its largest city by far.",
    "no",
]


@pytest.fixture(scope="module")
def cross_path(tiny_dir):
    return build_tiny_cross_encoder(tiny_dir / "cross-encoder")


@pytest.fixture(scope="module")
def qwen_path(tiny_dir):
    return build_tiny_qwen3_reranker(tiny_dir / "qwen3-reranker")


def test_cross_encoder_matches_reference(cross_path):
    engine = CrossEncoderEngine(str(cross_path), max_tokens=128)
    tokenizer = AutoTokenizer.from_pretrained(cross_path)
    model = AutoModelForSequenceClassification.from_pretrained(cross_path, dtype=torch.float32).eval()
    batch = tokenizer([QUERY] * len(DOCS), DOCS, padding=True, truncation="only_second", max_length=128,
                      return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        logits = model(**batch).logits[:, 0]
    items = engine.prepare_pairs(QUERY, DOCS)
    for i, t in enumerate(items):  # <s> q </s></s> d </s>, token for token
        assert t.ids == batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist()
    np.testing.assert_allclose(engine.forward(items), logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(relevance(engine.forward(items)), torch.sigmoid(logits).numpy(), atol=1e-6)


def test_cross_encoder_cuts_only_the_document(cross_path):
    engine = CrossEncoderEngine(str(cross_path), max_tokens=64)
    tokenizer = AutoTokenizer.from_pretrained(cross_path)
    long_doc = "the document goes on and on " * 20
    item = engine.prepare_pairs(QUERY, [long_doc])[0]
    ref = tokenizer(QUERY, long_doc, truncation="only_second", max_length=64)["input_ids"]
    assert item.ids == ref and len(item) == 64 and item.truncated
    with pytest.raises(QueryTooLong):
        engine.prepare_pairs("q " * 100, ["d"])


def _qwen3_reference(path, query, docs, instruction, max_length=512):
    """The official Qwen3-Reranker recipe, written out."""
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prefix = (
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
        'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
    )
    suffix = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    prefix_tokens = tokenizer.encode(prefix, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(suffix, add_special_tokens=False)
    pairs = [f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {d}" for d in docs]
    inputs = tokenizer(pairs, padding=False, truncation="longest_first", return_attention_mask=False,
                       max_length=max_length - len(prefix_tokens) - len(suffix_tokens))  # fmt: skip
    ids = [prefix_tokens + x + suffix_tokens for x in inputs["input_ids"]]
    batch = tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
    with torch.no_grad():
        last = model(**batch).logits[:, -1, :]
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    scores = torch.log_softmax(torch.stack([last[:, no], last[:, yes]], dim=1), dim=1)[:, 1].exp()
    return ids, scores.numpy()


def test_qwen3_reranker_matches_reference(qwen_path):
    engine = Qwen3RerankerEngine(str(qwen_path), max_tokens=512)
    instruction = "Given a web search query, retrieve relevant passages that answer the query"
    ref_ids, ref_scores = _qwen3_reference(qwen_path, QUERY, DOCS, instruction)
    items = engine.prepare_pairs(QUERY, DOCS)  # default instruction
    assert [t.ids for t in items] == ref_ids  # the template, token for token
    scores = relevance(engine.forward(items))
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert len(set(np.round(scores, 4))) > 1


def test_qwen3_reranker_custom_instruction_and_truncation(qwen_path):
    engine = Qwen3RerankerEngine(str(qwen_path), max_tokens=400)
    long_doc = "a long passage about many things " * 30
    ref_ids, ref_scores = _qwen3_reference(qwen_path, QUERY, [long_doc, DOCS[0]], "Find code", max_length=400)
    items = engine.prepare_pairs(QUERY, [long_doc, DOCS[0]], instruction="Find code")
    assert [t.ids for t in items] == ref_ids and len(items[0]) == 400 and items[0].truncated
    np.testing.assert_allclose(relevance(engine.forward(items)), ref_scores, atol=1e-5)


def test_clip_to_max_tokens_per_doc(cross_path):
    engine = CrossEncoderEngine(str(cross_path), max_tokens=128)
    clipped = engine.clip(["hello world, a document", "hi"], 5)
    assert clipped == ["hello", "hi"]

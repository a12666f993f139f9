"""Semantic chunking core: exact sentence offsets, breakpoints, token budgets, over-long sentences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from serve_app.chunking import (
    Sentence,
    adjacent_similarities,
    plan_chunks,
    semantic_breaks,
    split_by_tokens,
    split_sentences,
)
from serve_app.schemas import ChunkObject, ChunkRequest, ChunkResponse


def texts(text: str) -> list[str]:
    return [s.text for s in split_sentences(text)]


def assert_exact_cover(text: str, sentences: list[Sentence]) -> None:
    """In order, non-overlapping, within bounds, exact, stripped, and only whitespace left out."""
    previous_end = 0
    for s in sentences:
        assert 0 <= previous_end <= s.start < s.end <= len(text)
        assert text[s.start : s.end] == s.text
        assert s.text == s.text.strip() and s.text
        assert text[previous_end : s.start].strip() == ""
        previous_end = s.end
    assert text[previous_end:].strip() == ""


# ---- sentences ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,expected",
    [
        (
            "Dr. Smith paid $3.50 for it. Then he left! Did he? Yes...  He did.",
            ["Dr. Smith paid $3.50 for it.", "Then he left!", "Did he?", "Yes...", "He did."],
        ),
        (
            "We use e.g. apples, i.e. fruit. See Fig. 3 for details. The U.S. Army won. Next one.",
            ["We use e.g. apples, i.e. fruit.", "See Fig. 3 for details.", "The U.S. Army won.", "Next one."],
        ),
        ("Wait... what? No. I said no. Then we went.", ["Wait... what?", "No.", "I said no.", "Then we went."]),
        ("J. R. R. Tolkien wrote it. It was long.", ["J. R. R. Tolkien wrote it.", "It was long."]),
        ("Pi is 3.14159. Version 2.0.1 shipped.", ["Pi is 3.14159.", "Version 2.0.1 shipped."]),
        ("Visit www.example.com. It is good.", ["Visit www.example.com.", "It is good."]),
        (
            'He said "Stop." Then he ran. (See the note.) Fine.',
            ['He said "Stop."', "Then he ran.", "(See the note.)", "Fine."],
        ),
        ('She asked "why?" and left.', ['She asked "why?" and left.']),
        (
            "Call No. 5 now. I said no. Pages pp. 12-15 matter.",
            ["Call No. 5 now.", "I said no.", "Pages pp. 12-15 matter."],
        ),
        ("Really?! Yes. Done…  Next.", ["Really?!", "Yes.", "Done…", "Next."]),
        ("你好。我是学生！你呢？好的", ["你好。", "我是学生！", "你呢？", "好的"]),
        ("他说：“好。”然后走了。", ["他说：“好。”", "然后走了。"]),
        ("日本語の文です。English follows. 次の文！", ["日本語の文です。", "English follows.", "次の文！"]),
        (
            "# Title\n\nFirst line of a paragraph\ncontinues here. Second sentence.\n- item one\n- item two\n"
            "1. First\n2. Second",
            [
                "# Title",
                "First line of a paragraph\ncontinues here.",
                "Second sentence.",
                "- item one",
                "- item two",
                "1. First",
                "2. Second",
            ],
        ),
        ("Para one\n\n\npara two starts lowercase", ["Para one", "para two starts lowercase"]),
        ("line one\r\nLine two", ["line one", "Line two"]),
        ("  padded sentence.   ", ["padded sentence."]),
        ("no punctuation at all", ["no punctuation at all"]),
        ("", []),
        (" \n\t\n ", []),
    ],
)
def test_sentence_splits(text, expected):
    sentences = split_sentences(text)
    assert [s.text for s in sentences] == expected
    assert_exact_cover(text, sentences)


def test_offsets_point_into_the_original():
    text = "  First one.\n\nSecond   one!  Third?"
    assert [(s.start, s.end) for s in split_sentences(text)] == [(2, 12), (14, 27), (29, 35)]


_ALPHABET = st.sampled_from(
    [*"abcXYZ019 .!?…。！？\n\t\"')(", "e.g.", "Dr.", "3.5", "...", "\n\n", "U.S.", " 1. ", "“", "”", "é", "😀"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ALPHABET, max_size=60).map("".join))
def test_split_never_loses_or_reorders_characters(text):
    assert_exact_cover(text, split_sentences(text))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_split_any_unicode_text(text):
    assert_exact_cover(text, split_sentences(text))


# ---- breakpoints ----------------------------------------------------------------------------------
def _topic_embeddings(topics: list[int], dims: int = 16, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """Unit vectors near one random direction per topic."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(topics) + 1, dims))
    vectors = centers[topics] + noise * rng.normal(size=(len(topics), dims))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _document(n: int) -> tuple[str, list[Sentence]]:
    text = " ".join(f"Sentence number {i} is here." for i in range(n))
    return text, split_sentences(text)


@pytest.mark.parametrize("method", ["percentile", "threshold"])
def test_two_topics_break_once_at_the_shift(method):
    text, sentences = _document(10)
    embeddings = _topic_embeddings([0] * 6 + [1] * 4)
    chunks = plan_chunks(sentences, embeddings, [7] * 10, text=text, method=method, threshold=0.5, percentile=5)
    assert [c.sentence_indices for c in chunks] == [list(range(6)), list(range(6, 10))]
    assert [c.tokens for c in chunks] == [42, 28]
    for index, chunk in enumerate(chunks):
        assert chunk.index == index and text[chunk.start : chunk.end] == chunk.text
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    assert chunks[0].text.endswith("5 is here.") and chunks[1].text.startswith("Sentence number 6")


def test_percentile_adapts_threshold_does_not():
    # Three topics; similarities inside a topic ~0.99, across topics lower. A threshold of -0.99 finds no
    # break (every similarity is above it); percentile 25 takes the document's two sharpest drops.
    sims = np.array([0.99, 0.98, 0.2, 0.97, 0.99, 0.3, 0.98, 0.99])
    assert not semantic_breaks(sims, method="threshold", threshold=-0.99).any()
    assert np.flatnonzero(semantic_breaks(sims, method="percentile", percentile=25)).tolist() == [2, 5]
    assert np.flatnonzero(semantic_breaks(sims, method="threshold", threshold=0.25)).tolist() == [2]
    assert not semantic_breaks(sims, method="percentile", percentile=0).any()
    assert semantic_breaks(np.array([0.5]), method="percentile", percentile=50).tolist() == [False]
    with pytest.raises(ValueError, match="method"):
        semantic_breaks(sims, method="nope")


def test_adjacent_similarities_are_cosines():
    vectors = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 0.0]])
    np.testing.assert_allclose(adjacent_similarities(vectors), [1.0, 0.0, 0.0])  # zero vector: dissimilar
    assert adjacent_similarities(vectors[:1]).shape == (0,)


def test_max_chunk_tokens_splits_at_the_weakest_link():
    text, sentences = _document(8)
    # One topic (no semantic break), but the link 4|5 is the weakest inside it.
    embeddings = _topic_embeddings([0] * 8, noise=0.01)
    embeddings[5:] = 0.9 * embeddings[5:] + 0.1 * _topic_embeddings([1] * 3, seed=3)
    counts = [10] * 8
    whole = plan_chunks(sentences, embeddings, counts, text=text, method="threshold", threshold=-1.0)
    assert len(whole) == 1 and whole[0].tokens == 80
    chunks = plan_chunks(
        sentences, embeddings, counts, text=text, method="threshold", threshold=-1.0, max_chunk_tokens=50
    )
    assert [c.sentence_indices for c in chunks] == [[0, 1, 2, 3, 4], [5, 6, 7]]
    assert all(c.tokens <= 50 for c in chunks)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 40), min_size=1, max_size=30),
    st.integers(1, 60),
    st.integers(0, 2**16),
    st.sampled_from(["percentile", "threshold"]),
)
def test_budget_always_respected_and_order_kept(counts, budget, seed, method):
    text, sentences = _document(len(counts))
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(len(counts), 8))
    chunks = plan_chunks(
        sentences, embeddings, counts, text=text, method=method, threshold=0.0, percentile=30, max_chunk_tokens=budget
    )
    assert [i for c in chunks for i in c.sentence_indices] == list(range(len(counts)))  # each once, in order
    for chunk in chunks:
        assert chunk.tokens == sum(counts[i] for i in chunk.sentence_indices)
        assert text[chunk.start : chunk.end] == chunk.text
        if len(chunk.sentence_indices) > 1:
            assert chunk.tokens <= budget and not chunk.oversized
        else:
            assert chunk.oversized == (chunk.tokens > budget)


def test_long_sentence_kept_alone_and_flagged():
    text, sentences = _document(5)
    embeddings = _topic_embeddings([0] * 5)
    counts = [5, 5, 100, 5, 5]
    chunks = plan_chunks(sentences, embeddings, counts, text=text, max_chunk_tokens=20, percentile=0)
    assert [c.sentence_indices for c in chunks] == [[0, 1], [2], [3, 4]]
    assert [c.oversized for c in chunks] == [False, True, False]
    assert chunks[1].text == sentences[2].text and chunks[1].tokens == 100


def test_long_sentence_split_by_windows_with_a_counter():
    words = [f"W{i:02d}" for i in range(40)]
    long_sentence = " ".join(words) + "."
    text = f"Short one. {long_sentence} Short two."
    sentences = split_sentences(text)
    assert len(sentences) == 3

    def count(s: str) -> int:
        return len(s.split())

    counts = [count(s.text) for s in sentences]
    embeddings = _topic_embeddings([0, 0, 0])
    chunks = plan_chunks(
        sentences, embeddings, counts, text=text, max_chunk_tokens=15, percentile=0, token_counter=count
    )
    pieces = [c for c in chunks if c.sentence_split]
    assert [len(p.text.split()) for p in pieces] == [15, 15, 10]
    assert " ".join(p.text for p in pieces) == long_sentence  # windows cut at whitespace, nothing lost
    assert all(p.sentence_indices == [1] and p.tokens <= 15 for p in pieces)
    assert [c.text for c in chunks if not c.sentence_split] == ["Short one.", "Short two."]
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert text[c.start : c.end] == c.text


def test_split_by_tokens_falls_back_to_characters():
    text = "x" * 25 + " tail"

    def count(s: str) -> int:
        return (len(s) + 4) // 5  # 5 characters a token

    windows = split_by_tokens(text, 0, len(text), 2, count)
    assert [text[a:b] for a, b, _ in windows] == ["x" * 10, "x" * 10, "xxxxx tail"]
    assert all(t <= 2 for _, _, t in windows)


def test_plan_rejects_mismatched_inputs():
    text, sentences = _document(3)
    with pytest.raises(ValueError, match="one row per sentence"):
        plan_chunks(sentences, np.zeros((2, 4)), [1, 1, 1], text=text)
    with pytest.raises(ValueError, match="one count per sentence"):
        plan_chunks(sentences, np.zeros((3, 4)), [1, 1], text=text)
    assert plan_chunks([], np.zeros((0, 4)), [], text="") == []


def test_single_sentence_document():
    text, sentences = _document(1)
    chunks = plan_chunks(sentences, _topic_embeddings([0]), [6], text=text, max_chunk_tokens=10)
    assert len(chunks) == 1 and chunks[0].text == text and not chunks[0].oversized


# ---- wire shapes ----------------------------------------------------------------------------------
def test_chunk_request_defaults_and_validation():
    request = ChunkRequest(model="m", input="Some text.")
    assert request.method == "percentile" and request.percentile == 5.0 and request.threshold == 0.5
    assert request.max_chunk_tokens is None and not request.return_embeddings and not request.late_chunking
    assert request.embedding_model is None
    for bad in ({"method": "kmeans"}, {"percentile": 101}, {"threshold": 2}, {"max_chunk_tokens": 0}, {"x": 1}):
        with pytest.raises(ValidationError):
            ChunkRequest(model="m", input="t", **bad)


def test_chunk_response_shape():
    response = ChunkResponse(
        model="m",
        chunks=[ChunkObject(index=0, text="Hi.", start=0, end=3, tokens=2, embedding=[0.6, 0.8])],
        usage={"prompt_tokens": 2, "total_tokens": 2},
    )
    dumped = response.model_dump(exclude_none=True)
    assert dumped["chunks"][0] == {
        "object": "chunk",
        "index": 0,
        "text": "Hi.",
        "start": 0,
        "end": 3,
        "tokens": 2,
        "oversized": False,
        "embedding": [0.6, 0.8],
    }

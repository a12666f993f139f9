"""/tokenize and /v1/chunk on the real service (BGE-M3 sparse / ColBERT outputs: test_embeddings.py)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from transformers import AutoTokenizer

pytestmark = pytest.mark.integration


def _post(base, path, payload):
    return httpx.post(base + path, json=payload, timeout=120)


def test_tokenize(serve_app, minilm_path):
    tok = AutoTokenizer.from_pretrained(minilm_path)
    texts = ["Hello world", "A second, longer input for counting tokens."]
    body = _post(serve_app["base_url"], "/tokenize", {"model": "all-minilm-l6-v2", "input": texts}).json()
    assert [d["ids"] for d in body["data"]] == [tok(t)["input_ids"] for t in texts]
    assert body["usage"]["total_tokens"] == sum(d["count"] for d in body["data"]) and body["max_tokens"] == 256
    plain = _post(serve_app["base_url"], "/tokenize", {"model": "tiny-qwen3-embedding", "input": "hi"}).json()
    query = _post(
        serve_app["base_url"], "/tokenize", {"model": "tiny-qwen3-embedding", "input": "hi", "task": "qa.query"}
    )
    assert query.status_code == 400  # tiny-qwen3-embedding lists only some tasks
    query = _post(
        serve_app["base_url"],
        "/v1/tokenize",
        {"model": "tiny-qwen3-embedding", "input": "hi", "task": "retrieval.query", "return_ids": False},
    ).json()
    assert query["data"][0]["count"] > plain["data"][0]["count"] and "ids" not in query["data"][0]
    pair = _post(serve_app["base_url"], "/tokenize", {"model": "tiny-cross-encoder", "input": ["abc"]}).json()
    assert pair["data"][0]["count"] == 5  # <s> a b c </s> (byte-level tiny tokenizer)
    vl = _post(serve_app["base_url"], "/tokenize", {"model": "tiny-vl-embedding", "input": "x"})
    assert vl.status_code == 400


DOC = (
    "The cat sat on the mat. Cats like to sleep in the sun. A kitten plays with yarn all day. "
    "Stock markets fell sharply on Monday. Investors worried about interest rates and inflation. "
    "Bond yields rose to a ten-year high."
)


def test_semantic_chunking(serve_app):
    body = _post(
        serve_app["base_url"],
        "/v1/chunk",
        {
            "model": "all-minilm-l6-v2",
            "input": DOC,
            "method": "percentile",
            "percentile": 30,
            "return_embeddings": True,
        },
    ).json()
    chunks = body["chunks"]
    assert len(chunks) >= 2
    for c in chunks:
        assert DOC[c["start"] : c["end"]] == c["text"] and len(c["embedding"]) == 384
    starts = [c["start"] for c in chunks]
    assert DOC.index("Stock markets") in starts  # the topic shift is a boundary
    late = _post(
        serve_app["base_url"],
        "/v1/chunk",
        {"model": "all-minilm-l6-v2", "input": DOC, "percentile": 30, "return_embeddings": True, "late_chunking": True},
    ).json()["chunks"]
    assert [c["text"] for c in late] == [c["text"] for c in chunks]
    assert not np.allclose(late[0]["embedding"], chunks[0]["embedding"], atol=1e-4)
    small = _post(
        serve_app["base_url"], "/v1/chunk", {"model": "all-minilm-l6-v2", "input": DOC, "max_chunk_tokens": 16}
    ).json()["chunks"]
    assert all(c["tokens"] <= 16 or c["oversized"] for c in small)


@pytest.mark.parametrize(
    "payload,needle",
    [
        ({"model": "tiny-vl-embedding", "input": DOC}, "cannot chunk"),
        ({"model": "tiny-cross-encoder", "input": DOC}, "cannot chunk"),
        ({"model": "all-minilm-l6-v2", "input": "  "}, "must not be empty"),
        (
            {"model": "tiny-qwen3-embedding", "input": DOC, "return_embeddings": True, "late_chunking": True},
            "last-token pooling",
        ),
        ({"model": "all-minilm-l6-v2", "input": DOC, "late_chunking": True}, "return_embeddings"),
    ],
)
def test_chunk_errors(serve_app, payload, needle):
    resp = _post(serve_app["base_url"], "/v1/chunk", payload)
    assert resp.status_code == 400 and needle in resp.json()["error"]["message"], resp.text[:300]

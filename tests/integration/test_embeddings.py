"""The real service: Ray Serve on 127.0.0.1, called over HTTP (openai client and httpx)."""

from __future__ import annotations

import asyncio
import base64
import random

import httpx
import numpy as np
import pytest

from deployments.engines.bge_m3 import BGEM3Engine

pytestmark = pytest.mark.integration

WORDS = (
    "retrieval augmented generation needs fast accurate embeddings for every passage query and document "
    "so we batch tokens by budget and keep padding low while many clients send mixed traffic"
).split()


def _post(base, payload, **kw):
    return httpx.post(f"{base}/v1/embeddings", json=payload, timeout=60, **kw)


def test_openai_client_matches_sentence_transformers(serve_app, minilm_path):
    import openai
    from sentence_transformers import SentenceTransformer

    texts = ["The cat sits on the mat.", "Ray Serve scales Python services.", "Bonjour le monde"]
    client = openai.OpenAI(base_url=serve_app["base_url"] + "/v1", api_key="x")
    result = client.embeddings.create(model="all-minilm-l6-v2", input=texts)  # the client asks for base64
    ours = np.array([d.embedding for d in result.data])
    reference = SentenceTransformer(minilm_path, device="cpu").encode(texts, normalize_embeddings=True)
    assert ((ours * reference).sum(axis=1) >= 0.9999).all()
    assert [d.index for d in result.data] == [0, 1, 2]
    assert result.model == "all-minilm-l6-v2"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    assert result.usage.prompt_tokens == sum(len(tok(t)["input_ids"]) for t in texts)

    floats = client.embeddings.create(model="all-minilm-l6-v2", input=texts[0], encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, ours[0], atol=1e-6)


def test_models_health_ready(serve_app):
    base = serve_app["base_url"]
    models = httpx.get(f"{base}/v1/models").json()
    ids = {m["id"]: m for m in models["data"]}
    assert {"all-minilm-l6-v2", "tiny-qwen3-embedding", "tiny-xlmr"} <= ids.keys()
    assert ids["all-minilm-l6-v2"]["dimensions"] == 384 and ids["all-minilm-l6-v2"]["max_tokens"] == 256
    assert ids["tiny-qwen3-embedding"]["dimension_range"] == [8, 64]
    assert "retrieval.query" in ids["tiny-qwen3-embedding"]["tasks"]
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{base}/ready")
    assert ready.status_code == 200 and set(ready.json()["models"].values()) == {"ready"}


def test_service_listens_on_loopback_only(serve_app):
    assert serve_app["new_wildcard_listeners"] == set()


def _error(resp, status):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    "payload,status,needle",
    [
        ({"model": "nope", "input": "x"}, 404, "does not exist"),
        ({"model": "all-minilm-l6-v2"}, 422, "input"),
        ({"model": "all-minilm-l6-v2", "input": 5}, 422, "input"),
        ({"model": "all-minilm-l6-v2", "input": []}, 400, "must not be empty"),
        ({"model": "all-minilm-l6-v2", "input": ["ok", ""]}, 400, "input[1] is empty"),
        ({"model": "all-minilm-l6-v2", "input": "x", "dimensions": 100}, 400, "384"),
        ({"model": "all-minilm-l6-v2", "input": "x", "task": "retrieval.query"}, 400, "does not support task"),
        ({"model": "all-minilm-l6-v2", "input": "x", "encoding_format": "hex"}, 422, "encoding_format"),
        ({"model": "all-minilm-l6-v2", "input": ["x"] * 65}, 413, "limit is 64"),
        ({"model": "all-minilm-l6-v2", "input": "w " * 3000}, 413, "characters"),
        ({"model": "all-minilm-l6-v2", "input": "word " * 400}, 400, "more than the model's limit of 256"),
        ({"model": "tiny-qwen3-embedding", "input": "x", "late_chunking": True}, 400, "last-token pooling"),
    ],
)
def test_bad_requests_get_json_errors(serve_app, payload, status, needle):
    err = _error(_post(serve_app["base_url"], payload), status)
    assert needle in err["message"]


def test_malformed_json_and_oversized_body(serve_app):
    base = serve_app["base_url"]
    bad = httpx.post(f"{base}/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"})
    error = _error(bad, 400)
    assert error["code"] == "invalid_json" and error["type"] == "invalid_request_error"
    assert "not valid JSON" in error["message"]
    big = httpx.post(f"{base}/v1/embeddings", content=b"x" * 250_000, headers={"content-type": "application/json"})
    assert "max_body_bytes" in _error(big, 413)["message"]
    _error(httpx.get(f"{base}/no/such/route"), 404)


def test_truncate_dimensions_and_output_types(serve_app):
    base = serve_app["base_url"]
    long_text = "word " * 400
    cut = _post(base, {"model": "all-minilm-l6-v2", "input": long_text, "truncate": True}).json()
    assert cut["usage"]["prompt_tokens"] == 256
    q = {"model": "tiny-qwen3-embedding", "input": ["alpha beta", "gamma"]}
    full = np.array([d["embedding"] for d in _post(base, q).json()["data"]])
    small = np.array([d["embedding"] for d in _post(base, {**q, "dimensions": 16}).json()["data"]])
    assert small.shape == (2, 16)
    np.testing.assert_allclose(small, full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True), atol=1e-5)
    b64 = _post(base, {**q, "encoding_format": "base64"}).json()["data"][0]["embedding"]
    np.testing.assert_allclose(np.frombuffer(base64.b64decode(b64), "<f4"), full[0], atol=1e-6)
    raw = _post(base, {**q, "normalized": False}).json()["data"]
    assert abs(np.linalg.norm(raw[0]["embedding"]) - 1) > 1e-3
    ubin = _post(base, {**q, "embedding_type": "ubinary"}).json()["data"][0]["embedding"]
    assert ubin == np.packbits(full[0] > 0).tolist()


def test_instruction_tokens_count_in_usage(serve_app):
    base = serve_app["base_url"]
    plain = _post(base, {"model": "tiny-qwen3-embedding", "input": "hello"}).json()
    query = _post(base, {"model": "tiny-qwen3-embedding", "input": "hello", "task": "retrieval.query"}).json()
    assert query["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 50
    assert query["data"][0]["embedding"] != plain["data"][0]["embedding"]


def test_late_chunking_over_http(serve_app):
    base = serve_app["base_url"]
    chunks = ["Berlin is the capital of Germany.", "Its population is about 3.8 million.", "It is large."]
    late = _post(base, {"model": "tiny-xlmr-mean", "input": chunks, "late_chunking": True}).json()["data"]
    alone = _post(base, {"model": "tiny-xlmr-mean", "input": chunks}).json()["data"]
    assert len(late) == 3
    for a, b in zip(late, alone, strict=True):
        assert not np.allclose(a["embedding"], b["embedding"], atol=1e-4)
    assert (
        "late_chunking"
        in _error(_post(base, {"model": "tiny-xlmr", "input": chunks, "late_chunking": True}), 400)["message"]
    )


def test_concurrent_mixed_requests_are_never_swapped(serve_app):
    """200 requests, 1-8 inputs each, up to 40 in flight: each vector equals its input embedded alone."""
    base = serve_app["base_url"]
    rng = random.Random(7)
    pool = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 120))) + f" #{i}" for i in range(80)]
    alone = {}
    for text in pool:
        alone[text] = np.array(_post(base, {"model": "all-minilm-l6-v2", "input": text}).json()["data"][0]["embedding"])
    requests = [rng.sample(pool, rng.randint(1, 8)) for _ in range(200)]

    async def run():
        limit = asyncio.Semaphore(40)
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:

            async def one(texts):
                async with limit:
                    r = await client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": texts})
                    return texts, r

            return await asyncio.gather(*(one(t) for t in requests))

    results = asyncio.run(run())
    assert len(results) == 200
    for texts, resp in results:
        assert resp.status_code == 200, resp.text
        data = resp.json()["data"]
        assert [d["index"] for d in data] == list(range(len(texts)))
        for text, item in zip(texts, data, strict=True):
            np.testing.assert_allclose(item["embedding"], alone[text], atol=1e-5)


# ---- BGE-M3: dense, sparse and ColBERT outputs ----------------------------------------------------------
def _post_path(base, path, payload):
    return httpx.post(base + path, json=payload, timeout=120)


def test_bge_m3_dense_sparse_colbert(serve_app, tiny_bge_m3):
    texts = ["hello hello world", "sparse and colbert"]
    engine = BGEM3Engine(str(tiny_bge_m3))
    expected = engine.encode(engine.prepare(texts), dense=True, sparse=True, colbert=True)
    body = _post_path(
        serve_app["base_url"],
        "/v1/embeddings",
        {
            "model": "tiny-bge-m3",
            "input": texts,
            "output": ["dense", "sparse", "colbert"],
            "return_sparse_tokens": True,
        },
    ).json()
    for item, want in zip(body["data"], expected, strict=True):
        np.testing.assert_allclose(item["embedding"], want.dense, atol=1e-5)
        assert item["sparse"]["indices"] == want.sparse.indices.tolist()
        np.testing.assert_allclose(item["sparse"]["values"], want.sparse.values, atol=1e-5)
        assert item["sparse"]["tokens"] == engine.token_strings(want.sparse)
        np.testing.assert_allclose(np.array(item["colbert"]), want.colbert, atol=1e-5)
    only_sparse = _post_path(
        serve_app["base_url"], "/v1/embeddings", {"model": "tiny-bge-m3", "input": texts, "output": ["sparse"]}
    ).json()["data"][0]
    assert "embedding" not in only_sparse and "colbert" not in only_sparse
    b64 = _post_path(
        serve_app["base_url"],
        "/v1/embeddings",
        {"model": "tiny-bge-m3", "input": texts[:1], "output": ["colbert"], "encoding_format": "base64"},
    ).json()["data"][0]["colbert"]
    matrix = np.frombuffer(base64.b64decode(b64), "<f4").reshape(-1, expected[0].colbert.shape[1])
    np.testing.assert_allclose(matrix, expected[0].colbert, atol=1e-5)
    refused = _post_path(
        serve_app["base_url"], "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": "x", "output": ["sparse"]}
    )
    assert refused.status_code == 400 and "gives only: dense" in refused.json()["error"]["message"]
    models = {m["id"]: m for m in httpx.get(serve_app["base_url"] + "/v1/models").json()["data"]}
    assert models["tiny-bge-m3"]["outputs"] == ["dense", "sparse", "colbert"]

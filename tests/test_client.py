"""serve_app.client: EmbedServeClient / AsyncEmbedServeClient against the real service (session app), plus
header, retry and error-shape checks on httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import numpy as np
import pytest

from serve_app.client import (
    AsyncEmbedServeClient,
    Embeddings,
    EmbedServeClient,
    EmbedServeConnectionError,
    EmbedServeError,
)

TEXTS = [f"sentence number {i} about {w}" for i, w in enumerate("cats dogs ray serve vectors rerank tokens".split())]
DOCS = [
    "Paris is the capital of France.",
    "The weather is nice today.",
    "Berlin is the capital of Germany.",
    "France borders Spain, Italy and Germany.",
    "Cats sleep a lot.",
    "The Eiffel tower is in Paris.",
    "Bread is baked in ovens.",
]


# ---- unit: headers, retries, error shape -------------------------------------------------------------------
def _mock(handler) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


def test_api_key_header_from_argument_and_env(monkeypatch):
    seen = []

    def handler(request):
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"status": "ok"})

    EmbedServeClient("http://x.test", api_key="sk-1", transport=_mock(handler)).health()
    monkeypatch.setenv("EMBEDSERVE_API_KEY", "sk-env")
    EmbedServeClient("http://x.test/v1/", transport=_mock(handler)).health()
    monkeypatch.delenv("EMBEDSERVE_API_KEY")
    EmbedServeClient("http://x.test", transport=_mock(handler)).health()
    assert seen == ["Bearer sk-1", "Bearer sk-env", None]


def test_retries_503_with_retry_after_then_raises_typed_error():
    calls = []

    def handler(request):
        calls.append(request.url.path)
        body = {"error": {"message": "busy", "type": "server_overloaded", "param": None, "code": "overloaded"}}
        return httpx.Response(503, json=body, headers={"Retry-After": "0"})

    client = EmbedServeClient("http://x.test", max_retries=2, transport=_mock(handler))
    with pytest.raises(EmbedServeError) as info:
        client.embed("m", ["a"])
    err = info.value
    assert len(calls) == 3 and calls[0] == "/v1/embeddings"
    assert (err.status, err.type, err.code, err.message, err.retry_after) == (
        503,
        "server_overloaded",
        "overloaded",
        "busy",
        0.0,
    )
    assert str(err) == "HTTP 503 server_overloaded/overloaded: busy"


def test_413_for_the_whole_request_halves_the_chunk():
    sizes = []

    def handler(request):
        texts = json.loads(request.content)["input"]
        sizes.append(len(texts))
        if len(texts) > 3:
            err = {
                "message": "too many",
                "type": "invalid_request_error",
                "param": "input",
                "code": "payload_too_large",
            }
            return httpx.Response(413, json={"error": err})
        data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0]} for i, t in enumerate(texts)]
        return httpx.Response(200, json={"data": data, "model": "m", "usage": {"prompt_tokens": 2, "total_tokens": 2}})

    texts = ["a" * n for n in range(1, 11)]
    result = EmbedServeClient("http://x.test", chunk_size=10, transport=_mock(handler)).embed("m", texts)
    assert result.vectors[:, 0].tolist() == [float(n) for n in range(1, 11)]
    assert sizes == [10, 5, 2, 3, 5, 2, 3] and result.requests == 4
    assert result.usage.prompt_tokens == 2 * result.requests


# ---- against the real service ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(serve_app):
    with EmbedServeClient(serve_app["base_url"], timeout=120) as c:
        yield c


@pytest.mark.integration
def test_models_health_ready(client, serve_app):
    ids = {m["id"]: m for m in client.models()}
    names = {"all-minilm-l6-v2", "tiny-qwen3-embedding", "tiny-xlmr", "tiny-cross-encoder", "tiny-qwen3-reranker"}
    assert names <= ids.keys() and ids["all-minilm-l6-v2"]["dimensions"] == 384
    assert client.health() == {"status": "ok"}
    assert client.ready()["status"] == "ready"
    polls = []
    assert client.wait_ready(timeout=60, on_poll=polls.append)["status"] == "ready" and polls


@pytest.mark.integration
def test_embed_chunks_reassemble_in_order(client, serve_app):
    whole = client.embed("all-minilm-l6-v2", TEXTS)
    assert isinstance(whole, Embeddings) and whole.requests == 1 and whole.model == "all-minilm-l6-v2"
    assert whole.vectors.shape == (len(TEXTS), 384) and whole.vectors.dtype == np.float32
    direct = httpx.post(
        serve_app["base_url"] + "/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": TEXTS}, timeout=60
    ).json()
    np.testing.assert_allclose(whole.vectors, np.array([d["embedding"] for d in direct["data"]]), atol=1e-6)
    assert whole.usage.prompt_tokens == direct["usage"]["prompt_tokens"]

    split = client.embed("all-minilm-l6-v2", TEXTS, chunk_size=3)
    assert split.requests == 3
    np.testing.assert_allclose(split.vectors, whole.vectors, atol=1e-6)
    vectors, usage = split
    assert usage == whole.usage and vectors is split.vectors

    one = client.embed("all-minilm-l6-v2", TEXTS[0])
    np.testing.assert_allclose(one.vectors[0], whole.vectors[0], atol=1e-6)


@pytest.mark.integration
def test_embed_options_and_output_types(client):
    cut = client.embed("tiny-qwen3-embedding", TEXTS[:2], dimensions=16, task="retrieval.query")
    assert cut.vectors.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(cut.vectors, axis=1), 1.0, atol=1e-5)
    ub = client.embed("all-minilm-l6-v2", TEXTS[:2], embedding_type="ubinary")
    assert ub.vectors.dtype == np.uint8 and ub.vectors.shape == (2, 48)
    i8 = client.embed("all-minilm-l6-v2", TEXTS[:2], embedding_type="int8")
    assert i8.vectors.dtype == np.int8 and i8.vectors.shape == (2, 384)


@pytest.mark.integration
def test_over_the_server_limit_is_split_automatically(client):
    texts = [f"input {i}" for i in range(100)]  # the session app allows 64 inputs per request
    result = client.embed("tiny-xlmr", texts, chunk_size=100)
    assert result.vectors.shape[0] == 100 and result.requests == 2
    reference = client.embed("tiny-xlmr", texts, chunk_size=25)
    np.testing.assert_allclose(result.vectors, reference.vectors, atol=1e-5)


@pytest.mark.integration
def test_errors_are_typed(client):
    with pytest.raises(EmbedServeError) as info:
        client.embed("no-such-model", ["x"])
    err = info.value
    assert (err.status, err.code, err.param) == (404, "model_not_found", "model") and "does not exist" in err.message
    with pytest.raises(EmbedServeError) as info:
        client.embed("all-minilm-l6-v2", ["ok", ""])
    assert (info.value.status, info.value.param, info.value.code) == (400, "input[1]", "empty_input")
    with pytest.raises(EmbedServeError) as info:
        client.rerank("tiny-cross-encoder", "q", DOCS, top_n=0)
    assert info.value.status == 400 and info.value.param == "top_n"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EmbedServeConnectionError) as info:
        EmbedServeClient(f"http://127.0.0.1:{port}", max_retries=0).health()
    assert info.value.status == 0


@pytest.mark.integration
def test_rerank_chunks_merge_like_one_request(client):
    whole = client.rerank("tiny-cross-encoder", "what is the capital of france", DOCS)
    assert whole.requests == 1 and len(whole) == len(DOCS) and whole.model == "tiny-cross-encoder"
    assert whole.scores == sorted(whole.scores, reverse=True)
    assert [h.document for h in whole] == [DOCS[i] for i in whole.indices]

    split = client.rerank("tiny-cross-encoder", "what is the capital of france", DOCS, top_n=3, chunk_size=2)
    assert split.requests == 4 and split.indices == whole.indices[:3]
    np.testing.assert_allclose(split.scores, whole.scores[:3], atol=1e-5)
    assert split.usage.total_tokens == whole.usage.total_tokens

    bare = client.rerank("tiny-qwen3-reranker", "capital of france", DOCS[:3], top_n=1, return_documents=False)
    assert len(bare) == 1 and bare.results[0].document is None


@pytest.mark.integration
def test_async_client(serve_app, client):
    sync_embed = client.embed("all-minilm-l6-v2", TEXTS)
    sync_rank = client.rerank("tiny-cross-encoder", "capital of france", DOCS)

    async def go():
        async with AsyncEmbedServeClient(serve_app["base_url"], timeout=120, max_concurrency=3) as ac:
            assert (await ac.wait_ready(timeout=60))["status"] == "ready"
            models = await ac.models()
            embedded = await ac.embed("all-minilm-l6-v2", TEXTS, chunk_size=2)
            ranked = await ac.rerank("tiny-cross-encoder", "capital of france", DOCS, chunk_size=3, top_n=5)
            with pytest.raises(EmbedServeError) as info:
                await ac.embed("nope", ["x"])
            return models, embedded, ranked, info.value, await ac.health()

    models, embedded, ranked, err, health = asyncio.run(go())
    assert "tiny-xlmr" in {m["id"] for m in models} and health == {"status": "ok"}
    assert embedded.requests == 4 and embedded.usage == sync_embed.usage
    np.testing.assert_allclose(embedded.vectors, sync_embed.vectors, atol=1e-6)
    assert ranked.indices == sync_rank.indices[:5] and ranked.requests == 3
    assert err.status == 404 and err.code == "model_not_found"

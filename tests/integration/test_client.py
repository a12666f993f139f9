"""serve_app.client: EmbedServeClient / AsyncEmbedServeClient against the real service (session app); the
header, retry and error-shape checks on httpx.MockTransport are in tests/unit/serve_app/test_client_transport.py."""

from __future__ import annotations

import asyncio
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

pytestmark = pytest.mark.integration

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


# ---- against the real service ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(serve_app):
    with EmbedServeClient(serve_app["base_url"], timeout=120) as c:
        yield c


def test_models_health_ready(client, serve_app):
    ids = {m["id"]: m for m in client.models()}
    names = {"all-minilm-l6-v2", "tiny-qwen3-embedding", "tiny-xlmr", "tiny-cross-encoder", "tiny-qwen3-reranker"}
    assert names <= ids.keys() and ids["all-minilm-l6-v2"]["dimensions"] == 384
    assert client.health() == {"status": "ok"}
    assert client.ready()["status"] == "ready"
    polls = []
    assert client.wait_ready(timeout=60, on_poll=polls.append)["status"] == "ready" and polls


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


def test_embed_options_and_output_types(client):
    cut = client.embed("tiny-qwen3-embedding", TEXTS[:2], dimensions=16, task="retrieval.query")
    assert cut.vectors.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(cut.vectors, axis=1), 1.0, atol=1e-5)
    ub = client.embed("all-minilm-l6-v2", TEXTS[:2], embedding_type="ubinary")
    assert ub.vectors.dtype == np.uint8 and ub.vectors.shape == (2, 48)
    i8 = client.embed("all-minilm-l6-v2", TEXTS[:2], embedding_type="int8")
    assert i8.vectors.dtype == np.int8 and i8.vectors.shape == (2, 384)


def test_over_the_server_limit_is_split_automatically(client):
    texts = [f"input {i}" for i in range(100)]  # the session app allows 64 inputs per request
    result = client.embed("tiny-xlmr", texts, chunk_size=100)
    assert result.vectors.shape[0] == 100 and result.requests == 2
    reference = client.embed("tiny-xlmr", texts, chunk_size=25)
    np.testing.assert_allclose(result.vectors, reference.vectors, atol=1e-5)


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

"""Priority lanes on a real app ("lanes", beside the session app): the body field and the X-Priority header, bad
values, an API key whose requests default to bulk, and bulk requests with queries at once, all answered right."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.integration

PLAIN, INDEXER = "sk-lanes-plain", "sk-lanes-indexer"
MODEL = "all-minilm-l6-v2"
WORDS = "index every passage of the corpus again while users keep asking short questions".split()


def _texts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(6, 12)))) for _ in range(n)]


@pytest.fixture(scope="module")
def lanes(serve_app):
    from ray import serve

    from serve_app.app import build_app

    args = {
        "models": [
            {
                "name": MODEL,
                "deployment": {"num_cpus": 0.25, "torch_threads": 1},
                # a small budget: a bulk-only pass is short, so a query's wait behind one is too
                "batching": {"max_batch_tokens": 128, "max_batch_size": 4},
            }
        ],
        "auth": {"api_keys": [PLAIN, {"key": INDEXER, "priority": "bulk"}], "api_keys_env": None},
        "limits": {"max_inputs_per_request": 1024},
    }
    serve.run(build_app(args), name="lanes", route_prefix="/lanes")
    yield serve_app["base_url"] + "/lanes"
    serve.delete("lanes")


def _auth(key: str = PLAIN, **extra) -> dict:
    return {"Authorization": f"Bearer {key}", **extra}


def _embed(base: str, texts, key: str = PLAIN, headers: dict | None = None, **fields) -> httpx.Response:
    body = {"model": MODEL, "input": texts, **fields}
    return httpx.post(f"{base}/v1/embeddings", json=body, headers=_auth(key, **(headers or {})), timeout=120)


def _vectors(resp: httpx.Response) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    return np.array([d["embedding"] for d in resp.json()["data"]], dtype=np.float32)


def test_field_and_header_are_accepted_everywhere(lanes):
    texts = _texts(3, 0)
    reference = _vectors(_embed(lanes, texts))
    for fields, headers in (
        ({"priority": "bulk"}, {}),
        ({"priority": "interactive"}, {}),
        ({}, {"X-Priority": "bulk"}),
        ({"priority": "interactive"}, {"X-Priority": "bulk"}),
    ):
        np.testing.assert_allclose(_vectors(_embed(lanes, texts, headers=headers, **fields)), reference, atol=1e-5)
    rerank = {"model": MODEL, "query": "short questions", "documents": texts, "priority": "bulk"}
    resp = httpx.post(f"{lanes}/v1/rerank", json=rerank, headers=_auth(), timeout=60)
    assert resp.status_code == 200 and len(resp.json()["results"]) == 3
    resp = httpx.post(
        f"{lanes}/tei/{MODEL}/embed", json={"inputs": texts}, headers=_auth(**{"X-Priority": "bulk"}), timeout=60
    )
    assert resp.status_code == 200
    np.testing.assert_allclose(np.array(resp.json(), dtype=np.float32), reference, atol=1e-5)
    cohere = {"model": MODEL, "texts": texts, "priority": 3}
    resp = httpx.post(f"{lanes}/v2/embed", json=cohere, headers=_auth(), timeout=60)
    assert resp.status_code == 200
    np.testing.assert_allclose(np.array(resp.json()["embeddings"]["float"], dtype=np.float32), reference, atol=1e-5)


def test_bad_values_are_400s_naming_the_field_or_header(lanes):
    resp = _embed(lanes, "x", priority="urgent")
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error["param"] == "priority" and error["code"] == "invalid_priority" and "bulk" in error["message"]
    resp = _embed(lanes, "x", headers={"X-Priority": "later"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "X-Priority"
    rerank = {"model": MODEL, "query": "q", "documents": ["d"], "priority": 7}
    assert httpx.post(f"{lanes}/v1/rerank", json=rerank, headers=_auth()).status_code == 422  # not a string
    resp = httpx.post(f"{lanes}/tei/{MODEL}/embed", json={"inputs": "x"}, headers=_auth(**{"X-Priority": "?"}))
    assert resp.status_code == 400 and resp.json()["error_type"] == "Validation"


def test_the_indexer_key_defaults_to_bulk_and_queries_pass_its_work(lanes):
    """While the indexer's big request is queued, a plain key's query is answered at once; the indexer's own
    one-line request (bulk by its key's default) waits behind its big request, in the same lane."""
    big = _texts(600, 1)

    async def run():
        async with httpx.AsyncClient(timeout=120) as client:

            async def post(texts, key, **fields):
                body = {"model": MODEL, "input": texts, "encoding_format": "base64", **fields}
                start = time.monotonic()
                resp = await client.post(f"{lanes}/v1/embeddings", json=body, headers=_auth(key))
                assert resp.status_code == 200, resp.text
                return start, time.monotonic()

            bulk = asyncio.create_task(post(big, INDEXER))
            await asyncio.sleep(0.8)  # the big request is in the model's queue
            query = asyncio.create_task(post("what changed?", PLAIN))
            queued = asyncio.create_task(post("and this one?", INDEXER))
            overridden = asyncio.create_task(post("me first", INDEXER, priority="interactive"))
            return await bulk, await query, await queued, await overridden

    (_, bulk_end), (q_start, q_end), (_, queued_end), (o_start, o_end) = asyncio.run(run())
    remaining = bulk_end - q_start
    assert remaining > 1.0, "the big request ended too soon for the comparison to mean anything"
    assert q_end - q_start < remaining / 3 and o_end - o_start < remaining / 3
    assert queued_end > bulk_end - 0.3  # behind the whole big request of its own lane


def test_bulk_requests_and_queries_at_once_all_answer_right(lanes):
    bulk_texts = [_texts(96, 10 + i) for i in range(3)]
    queries = _texts(24, 99)
    expected_bulk = [_vectors(_embed(lanes, t)) for t in bulk_texts]
    expected_queries = _vectors(_embed(lanes, queries))

    async def run():
        async with httpx.AsyncClient(timeout=120) as client:

            async def post(texts, key, headers=None):
                body = {"model": MODEL, "input": texts}
                resp = await client.post(f"{lanes}/v1/embeddings", json=body, headers=_auth(key, **(headers or {})))
                return _vectors(resp)

            bulk = [
                asyncio.create_task(post(bulk_texts[0], INDEXER)),
                asyncio.create_task(post(bulk_texts[1], PLAIN, {"X-Priority": "bulk"})),
                asyncio.create_task(post(bulk_texts[2], INDEXER)),
            ]
            await asyncio.sleep(0.2)
            answers = await asyncio.gather(*(post(q, PLAIN) for q in queries))
            return await asyncio.gather(*bulk), answers

    bulk, answers = asyncio.run(run())
    for got, want in zip(bulk, expected_bulk, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(np.concatenate(answers), expected_queries, atol=1e-5)

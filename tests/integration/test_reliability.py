"""Auth, overload, deadlines and a replica killed under load, on a second real app ("guarded")."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.integration

KEYS = ["sk-test-one", "sk-test-two"]
AUTH = {"Authorization": f"Bearer {KEYS[1]}"}


@pytest.fixture(scope="module")
def guarded(serve_app, tiny_xlmr):
    from ray import serve

    from serve_app.app import build_app

    args = {
        "models": [
            {
                "name": "tiny-xlmr",
                "family": "encoder",
                "source": str(tiny_xlmr),
                "deployment": {
                    "num_cpus": 0.25,
                    "torch_threads": 1,
                    "max_ongoing_requests": 1,
                    "max_queued_requests": 1,
                },
            },
            {
                "name": "all-minilm-l6-v2",
                "deployment": {"num_cpus": 0.25, "torch_threads": 1},
                "batching": {"max_batch_tokens": 1024, "max_batch_size": 4},
            },
        ],
        "auth": {"api_keys": KEYS, "api_keys_env": None},
        "request_timeout_s": 1.0,
    }
    serve.run(build_app(args), name="guarded", route_prefix="/guarded")
    yield serve_app["base_url"] + "/guarded"
    serve.delete("guarded")


def _is_error_shape(resp) -> bool:
    body = resp.json()
    return set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])


def test_api_keys(guarded):
    payload = {"model": "tiny-xlmr", "input": "hello"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEYS[0]}"}):
        resp = httpx.post(f"{guarded}/v1/embeddings", json=payload, headers=headers)
        assert resp.status_code == 401 and _is_error_shape(resp)
        assert resp.headers["www-authenticate"] == "Bearer"
    for key in KEYS:
        ok = httpx.post(f"{guarded}/v1/embeddings", json=payload, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200, ok.text
    assert httpx.get(f"{guarded}/health").status_code == 200  # public
    assert httpx.get(f"{guarded}/ready").status_code == 200
    assert httpx.get(f"{guarded}/v1/models").status_code == 401


def test_overload_answers_503_with_retry_after(guarded):
    texts = ["a sentence that takes a little while " * 3] * 16

    async def flood():
        async with httpx.AsyncClient(timeout=60, headers=AUTH) as client:
            reqs = [
                client.post(f"{guarded}/v1/embeddings", json={"model": "tiny-xlmr", "input": texts}) for _ in range(30)
            ]
            return await asyncio.gather(*reqs)

    responses = asyncio.run(flood())
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503, 504}, statuses
    rejected = [r for r in responses if r.status_code == 503]
    assert rejected and statuses.count(200) >= 1
    assert all(r.headers.get("retry-after") and _is_error_shape(r) for r in rejected)


def _describe(app: str, model: str) -> dict:
    from ray import serve

    return serve.get_deployment_handle(model, app).describe.remote().result(timeout_s=30)


def test_deadline_gives_504_and_drops_queued_items(guarded):
    before = _describe("guarded", "all-minilm-l6-v2")["computed_items"]
    texts = [" ".join(f"token{i}x{j}" for j in range(120)) for i in range(64)]  # 64 inputs of 256 tokens
    start = time.monotonic()
    resp = httpx.post(
        f"{guarded}/v1/embeddings",
        json={"model": "all-minilm-l6-v2", "input": texts, "truncate": True},
        headers=AUTH,
        timeout=60,
    )
    assert resp.status_code == 504 and _is_error_shape(resp), resp.text[:300]
    assert time.monotonic() - start < 10
    # Once the batch in progress ends, the rest of the request's items are dropped, not computed.
    previous, stable_since = None, time.monotonic()
    while time.monotonic() - stable_since < 3:
        computed = _describe("guarded", "all-minilm-l6-v2")["computed_items"] - before
        if computed != previous:
            previous, stable_since = computed, time.monotonic()
        time.sleep(0.5)
    assert previous < 64, f"all {previous} items were computed after the deadline"


def test_replica_killed_under_load(guarded, serve_app):
    texts = [f"document number {i} about topic {i % 5}" for i in range(40)]
    expected = {
        t: d["embedding"]
        for t, d in zip(
            texts,
            httpx.post(f"{serve_app['base_url']}/v1/embeddings", json={"model": "tiny-xlmr", "input": texts}).json()[
                "data"
            ],
            strict=True,
        )
    }
    pid = _describe("guarded", "tiny-xlmr")["pid"]

    async def load():
        async with httpx.AsyncClient(timeout=30, headers=AUTH) as client:

            async def one(i):
                await asyncio.sleep(i * 0.02)
                chosen = texts[i % 40 : i % 40 + 3]
                r = await client.post(f"{guarded}/v1/embeddings", json={"model": "tiny-xlmr", "input": chosen})
                return chosen, r

            tasks = [asyncio.create_task(one(i)) for i in range(60)]
            await asyncio.sleep(0.3)
            os.kill(pid, signal.SIGKILL)
            return await asyncio.gather(*tasks)

    started = time.monotonic()
    results = asyncio.run(load())
    assert time.monotonic() - started < 30  # none hangs past the deadline
    for chosen, resp in results:
        assert resp.status_code in (200, 503, 504), resp.text
        if resp.status_code == 200:
            for text, item in zip(chosen, resp.json()["data"], strict=True):
                np.testing.assert_allclose(item["embedding"], expected[text], atol=1e-5)
        else:
            assert _is_error_shape(resp)
    deadline = time.monotonic() + 90
    while True:  # Serve replaces the replica; later requests succeed
        r = httpx.post(f"{guarded}/v1/embeddings", json={"model": "tiny-xlmr", "input": texts[:2]}, headers=AUTH)
        if r.status_code == 200:
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(1)
    assert _describe("guarded", "tiny-xlmr")["pid"] != pid

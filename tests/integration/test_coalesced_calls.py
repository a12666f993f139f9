"""Concurrent requests for one model share downstream calls (the router's coalescer) and still get exactly
what each would get alone: its own vectors, its own error, nothing swapped."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.integration

MODEL = "all-minilm-l6-v2"
TOO_LONG = "word " * 400  # over the model's 256-token limit


def _payloads() -> list[dict]:
    out = []
    for i in range(48):
        text = TOO_LONG if i % 6 == 0 else f"sentence {i} about topic {i % 7}, told in a few words"
        body = {"model": MODEL, "input": [text, f"second input of request {i}"]}
        if i % 8 == 3:
            body["dimensions"] = 384
        if i % 10 == 7:
            body["input"] = f"single input {i}"
        out.append(body)
    return out


def test_concurrent_requests_get_what_each_gets_alone(serve_app):
    url = serve_app["base_url"] + "/v1/embeddings"
    payloads = _payloads()
    with httpx.Client(timeout=60) as client:
        alone = [client.post(url, json=p) for p in payloads]

    async def together() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
            return await asyncio.gather(*(client.post(url, json=p) for p in payloads))

    concurrent = asyncio.run(together())
    for i, (a, c) in enumerate(zip(alone, concurrent, strict=True)):
        assert a.status_code == c.status_code, (i, a.text, c.text)
        if a.status_code == 200:
            va = np.array([d["embedding"] for d in a.json()["data"]])
            vc = np.array([d["embedding"] for d in c.json()["data"]])
            np.testing.assert_allclose(vc, va, atol=1e-5)
            assert c.json()["usage"] == a.json()["usage"]
        else:
            assert c.json() == a.json()  # the same error, naming the same input
            assert c.json()["error"]["code"] == "context_length_exceeded"
    assert sum(r.status_code == 400 for r in concurrent) == 8

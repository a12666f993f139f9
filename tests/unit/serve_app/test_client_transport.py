"""serve_app.client on httpx.MockTransport (no service): the API key header, 503 retries with Retry-After and
the typed error, and halving the chunk on a 413 (against the real service: tests/integration/test_client.py)."""

from __future__ import annotations

import json

import httpx
import pytest

from serve_app.client import EmbedServeClient, EmbedServeError


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

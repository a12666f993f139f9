"""The `openai-compatible` family without Ray: the source string, API keys, Retry-After and token splits, row
decoding, and RemoteEmbedder against a scripted httpx.MockTransport (the live remote:
tests/integration/test_remote.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import numpy as np
import pytest
from helpers.remote_fakes import embeddings_response, text_vector

from deployments.calls import EmbedCall
from deployments.errors import ServiceError
from deployments.http_helpers import decode_rows, retry_after_seconds
from deployments.remote import RemoteEmbedder, parse_source, resolve_api_key, split_tokens
from serve_app.ingress.errors import status_of

# ---- unit: the source string, keys, headers ------------------------------------------------------------


def test_parse_source_forms():
    t = parse_source("https://openrouter.ai/api/v1#qwen/qwen3-embedding-8b")
    assert t.endpoint == "https://openrouter.ai/api/v1/embeddings" and t.model == "qwen/qwen3-embedding-8b"
    assert (t.retries, t.encoding, t.dimensions_mode, t.key_env) == (3, "base64", "send", None)

    t = parse_source(
        "https://x.example/openai/v1/?api-version=2024-10#emb-3?key_env=AZ_KEY&retries=5&timeout=2.5&dimensions=local"
    )
    assert t.endpoint == "https://x.example/openai/v1/embeddings?api-version=2024-10"
    assert (t.model, t.key_env, t.retries, t.read_timeout_s, t.dimensions_mode) == ("emb-3", "AZ_KEY", 5, 2.5, "local")
    assert parse_source("http://h:1/v1/embeddings#m").endpoint == "http://h:1/v1/embeddings"
    assert parse_source("http://user:pw@h:1/v1?k=secret#m").display_url == "http://h:1/v1"

    for bad, needle in [
        ("https://openrouter.ai/api/v1", "#<remote model>"),
        ("https://openrouter.ai/api/v1#", "#<remote model>"),
        ("ftp://h/v1#m", "http"),
        ("http://h/v1#m?colour=red", "unknown option 'colour'"),
        ("http://h/v1#m?retries=many", "not a valid int"),
        ("http://h/v1#m?timeout=-1", "non-negative"),
        ("http://h/v1#m?encoding=hex", "encoding"),
        ("http://h/v1#m?key_env=not a name", "key_env"),
    ]:
        with pytest.raises(ValueError, match=None) as info:
            parse_source(bad)
        assert needle in str(info.value), (bad, str(info.value))


def test_api_key_resolution():
    plain = parse_source("http://h/v1#m")
    assert resolve_api_key("remote-qwen3", plain, {}) is None
    assert resolve_api_key("remote-qwen3", plain, {"REMOTE_QWEN3_API_KEY": "k1"}) == "k1"
    router = parse_source("https://openrouter.ai/api/v1#qwen/qwen3-embedding-8b")
    assert resolve_api_key("q8", router, {"OPENROUTER_API_KEY": "k2"}) == "k2"
    assert resolve_api_key("q8", router, {"OPENROUTER_API_KEY": "k2", "Q8_API_KEY": "k3"}) == "k3"
    named = parse_source("http://h/v1#m?key_env=MY_KEY")
    assert resolve_api_key("x", named, {"MY_KEY": "k4", "X_API_KEY": "no"}) == "k4"
    with pytest.raises(ValueError, match="MY_KEY"):
        resolve_api_key("x", named, {})


def test_retry_after_and_token_split():
    assert retry_after_seconds("2") == 2.0 and retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert split_tokens(7, ["only"]) == [7]
    parts = split_tokens(10, ["a", "bbbb", "ccccc"])
    assert sum(parts) == 10 and parts[0] <= parts[1] <= parts[2]
    assert split_tokens(0, ["a", "b"]) == [0, 0]


def test_decode_rows_base64_float_and_order():
    a = np.array([[0.6, 0.8, 0.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    b64 = [{"index": i, "embedding": base64.b64encode(a[i].astype("<f4").tobytes()).decode()} for i in (1, 0)]
    np.testing.assert_array_equal(decode_rows(b64, 2), a)
    floats = [{"index": 0, "embedding": a[0].tolist()}, {"index": 1, "embedding": a[1].tolist()}]
    np.testing.assert_array_equal(decode_rows(floats, 2), a)
    for data, n in [(floats, 3), ([{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [1.0, 2.0]}], 2)]:
        with pytest.raises(ValueError):
            decode_rows(data, n)


# ---- unit: RemoteEmbedder against a scripted transport ----------------------------------------------------


class Script:
    """A MockTransport handler answering from a list of steps (status codes, exceptions, or 'ok')."""

    def __init__(self, steps=(), *, honour_dims: bool = False, b64: bool = True) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []
        self.bodies: list[dict] = []
        self.honour_dims = honour_dims
        self.b64 = b64

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = json.loads(request.content)
        self.bodies.append(body)
        step = self.steps.pop(0) if self.steps else "ok"
        if isinstance(step, Exception):
            raise step
        if callable(step):
            return step(body)
        if isinstance(step, tuple):
            status, headers, payload = step
            return httpx.Response(status, headers=headers, json=payload)
        if step == "ok":
            return embeddings_response(body, b64=self.b64, honour_dims=self.honour_dims)
        return httpx.Response(step, json={"error": {"message": f"scripted {step}", "type": "x"}})


def _embedder(script: Script, source: str = "http://remote.test/v1#m?backoff=0.01", chunk: int = 64, key=None):
    return RemoteEmbedder("remote-m", parse_source(source), key, chunk, transport=httpx.MockTransport(script))


def _run(embedder: RemoteEmbedder, call: EmbedCall):
    async def go():
        try:
            return await embedder.embed(call)
        finally:
            await embedder.aclose()

    return asyncio.run(go())


def _error(embedder: RemoteEmbedder, call: EmbedCall) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        _run(embedder, call)
    return info.value


def test_chunks_in_order_with_usage_and_key():
    texts = [f"text number {i} " + "word " * i for i in range(10)]
    script = Script()
    reply = _run(_embedder(script, chunk=3, key="sk-remote"), EmbedCall(texts=texts))
    assert [len(b["input"]) for b in script.bodies] == [3, 3, 3, 1]
    assert [t for b in script.bodies for t in b["input"]] == texts
    np.testing.assert_allclose(reply.vectors, np.stack([text_vector(t) for t in texts]), atol=1e-6)
    assert reply.vectors.dtype == np.float32 and reply.model == "remote-m"
    assert reply.total_tokens == sum(len(t.split()) + 2 for t in texts) and len(reply.token_counts) == 10
    assert all(r.headers["authorization"] == "Bearer sk-remote" for r in script.requests)
    assert script.bodies[0] == {"model": "m", "input": texts[:3], "encoding_format": "base64"}


def test_float_answers_and_optional_fields():
    script = Script(b64=False)
    call = EmbedCall(texts=["a b", "c"], truncate=True, truncation_direction="left", normalize=False)
    reply = _run(_embedder(script, "http://remote.test/v1#m?encoding=float"), call)
    np.testing.assert_allclose(reply.vectors[0], text_vector("a b"), atol=1e-6)
    assert script.bodies[0] == {
        "model": "m",
        "input": ["a b", "c"],
        "encoding_format": "float",
        "truncate": True,
        "truncation_direction": "left",
        "normalized": False,
    }
    assert "authorization" not in script.requests[0].headers


def test_dimensions_sent_and_cut_locally_when_ignored():
    full = np.stack([text_vector(t) for t in ["x", "y"]])
    cut = full[:, :4] / np.linalg.norm(full[:, :4], axis=1, keepdims=True)
    for honour in (True, False):  # a remote that honours `dimensions`, and one that ignores it
        script = Script(honour_dims=honour)
        reply = _run(_embedder(script), EmbedCall(texts=["x", "y"], dimensions=4))
        assert script.bodies[0]["dimensions"] == 4
        assert reply.vectors.shape == (2, 4)
        np.testing.assert_allclose(reply.vectors, cut, atol=1e-6)
    script = Script()
    reply = _run(_embedder(script, "http://remote.test/v1#m?dimensions=local"), EmbedCall(texts=["x"], dimensions=4))
    assert "dimensions" not in script.bodies[0] and reply.vectors.shape == (1, 4)
    err = _error(_embedder(Script()), EmbedCall(texts=["x"], dimensions=16))
    assert status_of(err)[0] == 502 and "fewer than dimensions=16" in err.message


def test_retries_503_then_success_and_honours_retry_after():
    script = Script([503, (429, {"Retry-After": "0.2"}, {"error": "slow down"}), "ok"])
    start = time.monotonic()
    reply = _run(_embedder(script), EmbedCall(texts=["hello"]))
    assert len(script.requests) == 3 and reply.vectors.shape == (1, 8)
    assert time.monotonic() - start >= 0.2


def test_connection_errors_retry_then_503_with_retry_after():
    boom = httpx.ConnectError("connection refused")
    script = Script([boom, boom, boom])
    err = _error(_embedder(script, "http://remote.test/v1#m?retries=2&backoff=0.01"), EmbedCall(texts=["x"]))
    assert len(script.requests) == 3
    assert status_of(err)[0] == 503 and err.code == "remote_unavailable" and err.retry_after_s >= 1
    assert "after 3 attempts" in err.message and "ConnectError" in err.message


def test_long_retry_after_gives_up_at_once(caplog):
    script = Script([(503, {"Retry-After": "120"}, {"error": {"message": "maintenance"}})])
    err = _error(_embedder(script), EmbedCall(texts=["x"]))
    assert len(script.requests) == 1 and status_of(err)[0] == 503 and err.retry_after_s == 120
    assert "maintenance" not in err.message and "HTTP 503" in err.message
    assert "maintenance" in caplog.text  # the upstream's words are for the log


@pytest.mark.parametrize(
    "step,status,code,needle,upstream",
    [
        (
            (400, {}, {"error": {"message": "input too long", "param": "input"}}),
            400,
            "remote_invalid_request",
            "refused the request (HTTP 400)",
            "input too long",
        ),
        ((422, {}, {"detail": "bad field"}), 400, "remote_invalid_request", "HTTP 422", "bad field"),
        ((404, {}, {"error": {"message": "no model m"}}), 404, "remote_not_found", "HTTP 404", "no model m"),
        ((401, {}, {"error": "bad key"}), 502, "remote_auth_failed", "rejected this service's credentials", "bad key"),
        ((403, {}, {"error": "forbidden"}), 502, "remote_auth_failed", "HTTP 403", "REMOTE_M_API_KEY"),
        ((402, {}, {"error": {"message": "insufficient credits"}}), 502, "remote_error", "(HTTP 402)", "credits"),
        ((413, {}, {"error": "too big"}), 413, "remote_payload_too_large", "HTTP 413", "too big"),
    ],
)
def test_error_mapping(step, status, code, needle, upstream, caplog):
    script = Script([step])
    err = _error(_embedder(script), EmbedCall(texts=["x"]))
    assert len(script.requests) == 1  # never retried
    assert (status_of(err)[0], err.code) == (status, code) and needle in err.message, err.message
    assert err.message.startswith("The remote model remote-m ")
    assert upstream not in err.message and upstream in caplog.text  # told to the operator, not the client
    if status == 400 and step[0] == 400:
        assert err.param == "input"


def test_timeout_is_504_and_bad_body_is_502():
    err = _error(_embedder(Script([httpx.ReadTimeout("slow")])), EmbedCall(texts=["x"]))
    assert status_of(err)[0] == 504 and err.code == "remote_timeout"
    garbage = Script([(200, {}, {"data": [{"index": 0, "embedding": "%%%"}]})])
    err = _error(_embedder(garbage), EmbedCall(texts=["x"]))
    assert status_of(err)[0] == 502 and err.code == "remote_bad_response"
    short = Script([(200, {}, {"data": []})])
    assert status_of(_error(_embedder(short), EmbedCall(texts=["x"])))[0] == 502


def test_truncate_is_dropped_once_a_strict_remote_refuses_it():
    def strict(body):
        if "truncate" in body:
            return httpx.Response(400, json={"error": {"message": "Unrecognized request argument supplied: truncate"}})
        return embeddings_response(body)

    script = Script([strict] * 3)
    embedder = _embedder(script)

    async def twice():
        call = EmbedCall(texts=["query", "document"], truncate=True)
        try:
            return [await embedder.embed(call), await embedder.embed(call)]
        finally:
            await embedder.aclose()

    first, second = asyncio.run(twice())
    assert ["truncate" in b for b in script.bodies] == [True, False, False]
    np.testing.assert_allclose(first.vectors, second.vectors)
    assert embedder.send_truncate is False
    # a 400 that is not about `truncate` stays a 400 (after the one retry without it)
    err = _error(_embedder(Script([400, 400])), EmbedCall(texts=["x"], truncate=True))
    assert status_of(err)[0] == 400 and err.code == "remote_invalid_request"


def test_one_failing_chunk_fails_the_call():
    script = Script(["ok", 400, "ok"])
    err = _error(_embedder(script, chunk=1), EmbedCall(texts=["a", "b", "c"]))
    assert status_of(err)[0] == 400

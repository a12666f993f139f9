"""The remote backend against a hostile or broken remote: compression bombs, oversized answers, error bodies
and internal addresses that must not reach API clients, and the OpenRouter key's host match (no Ray)."""

from __future__ import annotations

import asyncio
import json
import logging
import tracemalloc

import httpx
import pytest
from helpers.media_samples import gzip_bomb
from helpers.remote_fakes import embeddings_response

from deployments.calls import EmbedCall
from deployments.errors import ServiceError
from deployments.remote import RemoteEmbedder, default_key_envs, parse_source, resolve_api_key
from deployments.remote.target import DEFAULT_MAX_RESPONSE_BYTES
from serve_app.ingress.errors import status_of

INTERNAL = "http://10.1.2.3:8000/v1?api-version=s3cr3t#internal-model?backoff=0.01&retries=1"
SECRET = "SECRET-UPSTREAM-DETAIL stack trace at /srv/app.py"


class Chunks(httpx.AsyncByteStream):
    """A streamed answer (as from the network): counts how many chunks the client pulled."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def __aiter__(self):
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk


def _embedder(handler, source: str = "http://remote.test/v1#m?backoff=0.01") -> RemoteEmbedder:
    return RemoteEmbedder("remote-m", parse_source(source), None, 64, transport=httpx.MockTransport(handler))


def _error(embedder: RemoteEmbedder, texts=("x",)) -> ServiceError:
    async def go():
        try:
            return await embedder.embed(EmbedCall(texts=list(texts)))
        finally:
            await embedder.aclose()

    with pytest.raises(ServiceError) as info:
        asyncio.run(go())
    return info.value


# -- 1. compression bombs --------------------------------------------------------------------------------
def test_gzip_of_gzip_answer_is_refused_without_inflating():
    seen: list[httpx.Request] = []
    stream = Chunks([gzip_bomb(256 * 2**20)])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        headers = {"content-type": "application/json", "content-encoding": "gzip, gzip"}
        return httpx.Response(200, headers=headers, stream=stream)

    tracemalloc.start()
    try:
        err = _error(_embedder(handler))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen[0].headers["accept-encoding"] == "identity"
    assert status_of(err)[0] == 502 and err.code == "remote_bad_response"
    assert "compressed" in err.message and "Content-Encoding: gzip, gzip" in err.message
    assert stream.pulled == 0  # refused on the header, nothing read
    assert peak < 16 * 2**20  # the 256 MiB were never inflated


# -- 2. a cap on the answer's size -----------------------------------------------------------------------
def test_answer_over_the_cap_is_refused_while_streaming():
    stream = Chunks([b"x" * 1024] * 100)  # no Content-Length: chunked

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "application/json"}, stream=stream)

    err = _error(_embedder(handler, "http://remote.test/v1#m?max_response_bytes=4096"))
    assert status_of(err)[0] == 502 and err.code == "remote_bad_response"
    assert "over the 4096-byte limit" in err.message
    assert stream.pulled <= 6  # stopped as soon as the cap was passed


def test_declared_length_over_the_cap_is_refused_unread():
    stream = Chunks([b"x" * 10_000])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": "10000"}, stream=stream)

    err = _error(_embedder(handler, "http://remote.test/v1#m?max_response_bytes=4096"))
    assert "10000 bytes is over the 4096-byte limit" in err.message and stream.pulled == 0


def test_default_cap_is_sized_from_the_call():
    target = parse_source("http://remote.test/v1#m")
    assert target.response_cap(1) == DEFAULT_MAX_RESPONSE_BYTES == 64 * 2**20
    assert target.response_cap(2048) == 2048 * 256 * 2**10
    assert parse_source("http://remote.test/v1#m?max_response_bytes=5000").response_cap(2048) == 5000
    with pytest.raises(ValueError, match="max_response_bytes"):
        parse_source("http://remote.test/v1#m?max_response_bytes=10")


def test_answers_within_the_cap_still_work():
    def handler(request: httpx.Request) -> httpx.Response:
        full = embeddings_response(json.loads(request.content))
        return httpx.Response(200, headers=full.headers, stream=Chunks([full.content[:50], full.content[50:]]))

    embedder = _embedder(handler)

    async def go():
        try:
            return await embedder.embed(EmbedCall(texts=["a", "b"]))
        finally:
            await embedder.aclose()

    assert asyncio.run(go()).vectors.shape == (2, 8)


# -- 3. nothing of the remote's URL or words reaches the client ------------------------------------------
def _scripted(status: int, headers: dict | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers or {}, json={"error": {"message": SECRET, "param": "input"}})

    return handler


def _raising(exc: Exception):
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def _not_json(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=SECRET.encode())


@pytest.mark.parametrize(
    ("handler", "status", "code"),
    [
        (_scripted(400), 400, "remote_invalid_request"),
        (_scripted(401), 502, "remote_auth_failed"),
        (_scripted(404), 404, "remote_not_found"),
        (_scripted(402), 502, "remote_error"),
        (_scripted(413), 413, "remote_payload_too_large"),
        (_scripted(500), 503, "remote_unavailable"),
        (_scripted(429, {"Retry-After": "0.01"}), 503, "remote_unavailable"),
        (_raising(httpx.ConnectError("cannot connect to 10.1.2.3:8000 " + SECRET)), 503, "remote_unavailable"),
        (_raising(httpx.ReadTimeout("read from 10.1.2.3:8000 timed out")), 504, "remote_timeout"),
        (_not_json, 502, "remote_bad_response"),
    ],
)
def test_errors_name_our_model_not_the_remote(handler, status, code, caplog):
    caplog.set_level(logging.WARNING, logger="ray.serve")
    err = _error(_embedder(handler, INTERNAL))
    assert (status_of(err)[0], err.code) == (status, code), err.message
    assert err.message.startswith("The remote model remote-m "), err.message
    for leak in ("10.1.2.3", "s3cr3t", "internal-model", "SECRET", "/srv/app.py"):
        assert leak not in err.message, (leak, err.message)
    if code == "remote_unavailable":
        assert err.retry_after_s >= 1
    assert "10.1.2.3" in caplog.text  # the operator still learns where and what


def test_unavailable_says_what_kind_of_failure():
    err = _error(_embedder(_scripted(503), INTERNAL))
    assert err.message == "The remote model remote-m is unavailable after 2 attempts (last: HTTP 503); retry shortly."
    err = _error(_embedder(_raising(httpx.ConnectError("refused")), INTERNAL))
    assert "(last: connection error (ConnectError))" in err.message


def test_error_bodies_are_read_only_up_to_a_limit(caplog):
    stream = Chunks([b"e" * 4096] * 1000)  # 4 MB of error body

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(402, stream=stream)

    err = _error(_embedder(handler))
    assert err.code == "remote_error" and stream.pulled <= 20


# -- 4. the OpenRouter key goes to OpenRouter only --------------------------------------------------------
@pytest.mark.parametrize(
    ("base", "gets_key"),
    [
        ("https://openrouter.ai/api/v1", True),
        ("https://api.openrouter.ai/api/v1", True),
        ("https://OpenRouter.AI./api/v1", True),
        ("https://evilopenrouter.ai/api/v1", False),
        ("https://openrouter.ai.evil.example/api/v1", False),
        ("https://xopenrouter.ai/v1", False),
        ("http://10.0.0.7:8000/v1", False),
    ],
)
def test_openrouter_key_only_for_openrouter_hosts(base, gets_key):
    target = parse_source(f"{base}#qwen/qwen3-embedding-8b")
    assert ("OPENROUTER_API_KEY" in default_key_envs("q8", target)) is gets_key
    key = resolve_api_key("q8", target, {"OPENROUTER_API_KEY": "sk-or"})
    assert key == ("sk-or" if gets_key else None)

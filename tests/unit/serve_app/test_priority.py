"""A request's priority lane, from the wire to the call a model deployment gets: body field, X-Priority header,
the API key's default, interactive; bad values are 400s naming the field or header. The app is the real ingress
(middleware, fast routes, endpoints, dispatcher) in front of fake model handles that record each call."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from deployments.calls import BULK, INTERACTIVE, EmbedReply, RerankReply
from deployments.errors import InvalidRequest
from serve_app.catalog import load_catalog, resolve_models
from serve_app.config import AppArgs, AuthConfig, Limits
from serve_app.ingress import priority
from serve_app.ingress.app import create_app
from serve_app.ingress.dispatch import Dispatcher
from serve_app.ingress.middleware import load_key_priorities
from serve_app.schemas import EmbeddingRequest, RerankRequest

PLAIN, BULK_KEY = "sk-plain", "sk-indexer"


class _Response:
    def __init__(self, value) -> None:
        self.value = value

    def __await__(self):
        async def answer():
            await asyncio.sleep(0)
            return self.value

        return answer().__await__()

    def cancel(self) -> None: ...


class _Handle:
    """A model deployment's handle: answers every call and records (method, call)."""

    def __init__(self, seen: list, method: str = "embed") -> None:
        self.seen, self.method = seen, method

    def options(self, method_name: str) -> _Handle:
        return _Handle(self.seen, method_name)

    def remote(self, arg):
        calls = arg if self.method == "embed_many" else [arg]
        for call in calls:
            self.seen.append((self.method, call))
        if self.method == "rerank":
            n = len(arg.documents)
            return _Response(RerankReply(scores=np.linspace(0, 1, n, dtype=np.float32), token_counts=[2] * n))
        replies = [
            EmbedReply(vectors=np.ones((len(c.texts), 4), np.float32), token_counts=[1] * len(c.texts)) for c in calls
        ]
        return _Response(replies if self.method == "embed_many" else replies[0])


@pytest.fixture
def app_and_calls():
    entries = AppArgs.model_validate({"models": [{"name": "all-minilm-l6-v2"}, {"name": "bge-reranker-v2-m3"}]})
    specs = {s.name: s for s in resolve_models(entries.models, load_catalog())}
    seen: list = []
    dispatcher = Dispatcher(specs, {n: _Handle(seen) for n in specs}, 10.0)
    auth = AuthConfig.model_validate({"api_keys": [PLAIN, {"key": BULK_KEY, "priority": "bulk"}], "api_keys_env": None})
    lanes = load_key_priorities(auth.keyed_priorities(), None, BULK)
    app = create_app(dispatcher, Limits(), [k.encode() for k in auth.key_strings()], key_priorities=lanes)
    return app, seen


def _post(app, path: str, body: dict, key: str = PLAIN, **headers) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
            return await client.post(path, json=body, headers={"authorization": f"Bearer {key}", **headers})

    return asyncio.run(go())


EMBED = {"model": "all-minilm-l6-v2", "input": ["a query"]}
RERANK = {"model": "bge-reranker-v2-m3", "query": "q", "documents": ["d1", "d2"]}


@pytest.mark.parametrize(
    "extra,headers,key,lane",
    [
        ({}, {}, PLAIN, INTERACTIVE),  # nothing said: interactive
        ({"priority": "bulk"}, {}, PLAIN, BULK),
        ({}, {"X-Priority": "bulk"}, PLAIN, BULK),
        ({}, {"x-priority": " Bulk "}, PLAIN, BULK),  # header names are case-insensitive; values trimmed too
        ({"priority": "interactive"}, {"X-Priority": "bulk"}, PLAIN, INTERACTIVE),  # the field wins
        ({}, {}, BULK_KEY, BULK),  # the key's default
        ({}, {"X-Priority": "interactive"}, BULK_KEY, INTERACTIVE),  # the header beats the key's default
        ({"priority": "interactive"}, {}, BULK_KEY, INTERACTIVE),
    ],
)
def test_the_lane_reaches_the_embed_call(app_and_calls, extra, headers, key, lane):
    app, seen = app_and_calls
    resp = _post(app, "/v1/embeddings", {**EMBED, **extra}, key=key, **headers)
    assert resp.status_code == 200, resp.text
    (method, call), *_ = seen
    assert call.priority == lane
    # bulk calls never join a coalesced group (its callers wait for its slowest call)
    assert method == ("embed" if lane == BULK else "embed_many")


@pytest.mark.parametrize(
    "extra,headers,key,lane",
    [
        ({}, {}, PLAIN, INTERACTIVE),
        ({"priority": "bulk"}, {}, PLAIN, BULK),
        ({}, {"X-Priority": "bulk"}, PLAIN, BULK),
        ({}, {}, BULK_KEY, BULK),
    ],
)
def test_the_lane_reaches_the_rerank_call(app_and_calls, extra, headers, key, lane):
    app, seen = app_and_calls
    resp = _post(app, "/v1/rerank", {**RERANK, **extra}, key=key, **headers)
    assert resp.status_code == 200, resp.text
    assert [(m, c.priority) for m, c in seen] == [("rerank", lane)]


def test_other_dialects_take_the_header_and_the_key_default(app_and_calls):
    app, seen = app_and_calls
    assert _post(app, "/tei/all-minilm-l6-v2/embed", {"inputs": "x"}, **{"X-Priority": "bulk"}).status_code == 200
    assert _post(app, "/v2/embed", {"model": "all-minilm-l6-v2", "texts": ["x"]}, key=BULK_KEY).status_code == 200
    # Cohere's own priority: 0 (its default, the highest) is interactive, above 0 bulk
    body = {"model": "all-minilm-l6-v2", "texts": ["x"], "priority": 0}
    assert _post(app, "/v2/embed", body, key=BULK_KEY).status_code == 200
    assert _post(app, "/v2/embed", {**body, "priority": 5}).status_code == 200
    rerank_v2 = {"model": "bge-reranker-v2-m3", "query": "q", "documents": ["d"]}
    assert _post(app, "/v2/rerank", rerank_v2, key=BULK_KEY).status_code == 200
    assert [c.priority for _, c in seen] == [BULK, BULK, INTERACTIVE, BULK, BULK]


@pytest.mark.parametrize(
    "path,body,headers,param",
    [
        ("/v1/embeddings", {**EMBED, "priority": "urgent"}, {}, "priority"),
        ("/v1/embeddings", EMBED, {"X-Priority": "high"}, "X-Priority"),
        ("/v1/embeddings", {**EMBED, "priority": "bulk"}, {"X-Priority": ""}, "X-Priority"),
        ("/v1/rerank", {**RERANK, "priority": "low"}, {}, "priority"),
        ("/tei/all-minilm-l6-v2/embed", {"inputs": "x"}, {"X-Priority": "later"}, "X-Priority"),
    ],
)
def test_a_bad_value_is_a_400_naming_it(app_and_calls, path, body, headers, param):
    app, seen = app_and_calls
    resp = _post(app, path, body, **headers)
    assert resp.status_code == 400, resp.text
    if path.startswith("/tei"):  # TEI's own error body
        assert param in resp.json()["error"] and resp.json()["error_type"] == "Validation"
    else:
        error = resp.json()["error"]
        assert error["param"] == param and error["code"] == "invalid_priority"
        assert "interactive, bulk" in error["message"]
    assert seen == []  # nothing reached a model


def test_the_note_is_per_request(app_and_calls):
    """A header seen by one request does not leak into the next one on the same loop."""
    app, seen = app_and_calls
    _post(app, "/v1/embeddings", EMBED, **{"X-Priority": "bulk"})
    _post(app, "/v1/embeddings", EMBED)
    assert [c.priority for _, c in seen] == [BULK, INTERACTIVE]
    assert priority.resolve() == INTERACTIVE


def test_resolve_order_and_wording():
    assert priority.resolve() == INTERACTIVE and priority.resolve("BULK") == BULK
    token = priority.note(priority.RequestPriority(header=b"bulk", key_default=INTERACTIVE))
    try:
        assert priority.resolve() == BULK and priority.resolve("interactive") == INTERACTIVE
    finally:
        priority.forget(token)
    token = priority.note(priority.RequestPriority(header=None, key_default=BULK))
    try:
        assert priority.resolve() == BULK
    finally:
        priority.forget(token)
    with pytest.raises(InvalidRequest) as err:
        priority.resolve("x" * 100)
    assert err.value.param == "priority" and len(err.value.message) < 120
    assert priority.cohere_lane(None) is None and priority.cohere_lane(0) == INTERACTIVE
    assert priority.cohere_lane(3) == BULK


def test_wire_models_and_key_config(monkeypatch):
    assert EmbeddingRequest.model_validate({**EMBED, "priority": "bulk"}).priority == "bulk"
    assert EmbeddingRequest.model_validate(EMBED).priority is None
    assert RerankRequest.model_validate({**RERANK, "priority": "interactive"}).priority == "interactive"
    assert "priority" in EmbeddingRequest.model_json_schema()["properties"]
    auth = AuthConfig.model_validate({"api_keys": ["k1", {"key": "k2", "priority": "bulk"}, {"key": "k3"}]})
    assert auth.key_strings() == ["k1", "k2", "k3"]  # plain keys keep working beside keys with a priority
    assert auth.keyed_priorities() == {"k2": BULK, "k3": INTERACTIVE}
    with pytest.raises(ValueError):
        AuthConfig.model_validate({"api_keys": [{"key": "k", "priority": "urgent"}]})
    monkeypatch.setenv("LANES_TEST_BULK_KEYS", "e1, e2,")
    assert load_key_priorities({"k2": BULK}, "LANES_TEST_BULK_KEYS", BULK) == {b"k2": BULK, b"e1": BULK, b"e2": BULK}

"""Bodies sent without a JSON content type: read as JSON when they are JSON, otherwise a 415 that says what to send."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration

BODY = b'{"model": "all-minilm-l6-v2", "input": "hello"}'


@pytest.mark.parametrize(
    "content_type",
    [None, "application/x-www-form-urlencoded", "text/plain", "application/json; charset=utf-8", "text/json"],
)
def test_a_json_body_is_served_whatever_its_declared_type(serve_app, content_type):
    """`curl -d '{...}'` sends a form type; clients that forget the header send none."""
    headers = {} if content_type is None else {"content-type": content_type}
    r = httpx.post(serve_app["base_url"] + "/v1/embeddings", content=BODY, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    assert len(r.json()["data"][0]["embedding"]) == 384


def test_a_body_that_is_not_json_gets_415_naming_the_header(serve_app):
    r = httpx.post(
        serve_app["base_url"] + "/v1/rerank",
        content=b"model=tiny-cross-encoder&query=q",
        headers={"content-type": "application/x-www-form-urlencoded"},
        timeout=60,
    )
    assert r.status_code == 415, r.text
    error = r.json()["error"]
    assert "Content-Type: application/json" in error["message"]
    assert "application/x-www-form-urlencoded" in error["message"]
    assert error["code"] == "unsupported_media_type"


def test_other_routes_and_methods_unchanged(serve_app):
    base = serve_app["base_url"]
    assert httpx.get(base + "/v1/models", timeout=30).status_code == 200
    r = httpx.post(base + "/v1/tokenize", content=b'{"model": "all-minilm-l6-v2", "input": "a b"}', timeout=30)
    assert r.status_code == 200, r.text
    assert httpx.post(base + "/nowhere", content=b"x", timeout=30).status_code == 404

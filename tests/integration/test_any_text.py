"""Any JSON string in any text field: served, or a 400 naming the field (never a 5xx).

Bodies are sent as ASCII JSON (`json.dumps` escapes everything), so lone surrogates arrive as `\\udcff` escapes,
exactly what a JavaScript client with a badly sliced string sends.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

SURROGATE = re.compile("[\ud800-\udfff]")
# All of Unicode: surrogates, NUL, controls, bidi marks, non-characters, private use, 4-byte characters.
any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
any_text = st.one_of(
    st.text(alphabet=any_char, min_size=1, max_size=40),
    st.sampled_from(["\udcff\u0000\u202e", "\ufffe\uffff", "\U0001f600\u200d\U0001f4bb", "a\ud800", "\u0000"]),
)
FIELDS = {"input", "query", "documents", "prompt_name", "instruction"}


def post(base_url: str, path: str, payload: dict) -> httpx.Response:
    body = json.dumps(payload).encode("ascii")
    return httpx.post(base_url + path, content=body, headers={"content-type": "application/json"}, timeout=60)


def check(r: httpx.Response, texts: dict[str, str]) -> None:
    """texts: where each text went (`input[1]`) -> the text. A lone surrogate anywhere -> 400 naming one of them."""
    assert r.status_code < 500, r.text
    body = r.json()
    # As the server reads it: an escaped high+low surrogate pair is one (valid) character.
    bad = {where for where, text in texts.items() if SURROGATE.search(json.loads(json.dumps(text)))}
    if bad:
        assert r.status_code == 400, body
        assert body["error"]["code"] == "invalid_text"
        assert body["error"]["param"] in bad, (body, bad)
        assert "lone surrogate" in body["error"]["message"]
    elif r.status_code >= 400:
        assert body["error"]["code"] != "invalid_text", body


def test_the_reported_input_is_a_400_naming_the_field(serve_app):
    r = post(serve_app["base_url"], "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": "\udcff\u0000\u202e"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "input"
    assert "U+DCFF at character 0" in r.json()["error"]["message"]


def test_nul_bidi_noncharacters_and_astral_text_are_served(serve_app):
    texts = ["\u0000", "\u202eevil\u202c", "\ufffe\uffff\U0010ffff", "\U0001f600\u200d\U0001f4bb", "\ue000"]
    for model in ("all-minilm-l6-v2", "tiny-qwen3-embedding", "tiny-xlmr"):
        r = post(serve_app["base_url"], "/v1/embeddings", {"model": model, "input": texts})
        assert r.status_code == 200, (model, r.text)
        assert len(r.json()["data"]) == len(texts)
    r = post(
        serve_app["base_url"], "/v1/rerank", {"model": "tiny-cross-encoder", "query": "\u0000", "documents": texts}
    )
    assert r.status_code == 200, r.text


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    model=st.sampled_from(["all-minilm-l6-v2", "tiny-qwen3-embedding"]),
    inputs=st.lists(st.one_of(any_text, st.builds(lambda t: {"text": t}, any_text)), min_size=1, max_size=4),
    prompt=st.one_of(st.none(), any_text),
)
def test_embedding_texts(serve_app, model, inputs, prompt):
    payload: dict = {"model": model, "input": inputs}
    texts = {
        (f"input[{i}]" if isinstance(x, str) else f"input[{i}].text"): (x if isinstance(x, str) else x["text"])
        for i, x in enumerate(inputs)
    }
    if prompt is not None:
        payload["prompt_name"] = prompt
        texts["prompt_name"] = prompt
    check(post(serve_app["base_url"], "/v1/embeddings", payload), texts)


@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    model=st.sampled_from(["tiny-cross-encoder", "tiny-qwen3-reranker"]),
    query=any_text,
    documents=st.lists(any_text, min_size=1, max_size=4),
    instruction=st.one_of(st.none(), any_text),
)
def test_rerank_texts(serve_app, model, query, documents, instruction):
    payload: dict = {"model": model, "query": query, "documents": documents}
    texts = {"query": query, **{f"documents[{i}]": d for i, d in enumerate(documents)}}
    if instruction is not None:
        payload["instruction"] = instruction
        texts["instruction"] = instruction
    check(post(serve_app["base_url"], "/v1/rerank", payload), texts)


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(text=any_text)
def test_chunk_and_tokenize_texts(serve_app, text):
    check(post(serve_app["base_url"], "/v1/chunk", {"model": "all-minilm-l6-v2", "input": text}), {"input": text})
    r = post(serve_app["base_url"], "/v1/tokenize", {"model": "all-minilm-l6-v2", "input": [text, "ok"]})
    check(r, {"input[0]": text})


def test_a_refused_text_leaves_the_requests_beside_it_alone(serve_app):
    """Bad and good requests at the same moment: the good ones are answered in full."""
    import concurrent.futures

    good = {"model": "all-minilm-l6-v2", "input": ["fine text", "more"]}
    bad = {"model": "all-minilm-l6-v2", "input": ["fine", "bad \udcff"]}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(post, serve_app["base_url"], "/v1/embeddings", p) for p in [good, bad] * 8]
        results = [f.result() for f in futures]
    assert [r.status_code for r in results] == [200, 400] * 8
    assert all(len(r.json()["data"]) == 2 for r in results[::2])
    assert {r.json()["error"]["param"] for r in results[1::2]} == {"input[1]"}

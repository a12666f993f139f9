"""Fuzzing the real service: schemathesis from the OpenAPI schema, hypothesis for valid-model requests.

Whatever comes in, the answer is never a 5xx and every error has the `{"error": {...}}` shape.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

ERROR_KEYS = {"message", "type", "param", "code"}


def assert_sane(status: int, body) -> None:
    assert status < 500, (status, body)
    if status >= 400:
        assert isinstance(body, dict) and set(body) == {"error"} and set(body["error"]) >= ERROR_KEYS, body


def test_openapi_schema_fuzz(serve_app):
    """Every operation of /openapi.json, with cases generated from its schema (positive and negative)."""
    schema = schemathesis.openapi.from_url(serve_app["base_url"] + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/embeddings", "/v1/rerank", "/v2/rerank", "/v1/models"}
    for operation in operations:

        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case):
            response = case.call(base_url=serve_app["base_url"], timeout=60)
            try:
                body = response.json()
            except ValueError:
                body = None
            assert_sane(response.status_code, body)

        check()


texts = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=300),
    st.just(""),
    st.just("word " * 300),
)
embedding_requests = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["all-minilm-l6-v2", "tiny-qwen3-embedding", "tiny-xlmr", "tiny-cross-encoder"]),
        "input": st.one_of(texts, st.lists(texts, max_size=6)),
    },
    optional={
        "dimensions": st.integers(-5, 2000),
        "task": st.sampled_from(["retrieval.query", "retrieval.passage", "nope", ""]),
        "prompt_name": st.text(max_size=20),
        "truncate": st.booleans(),
        "truncation_direction": st.sampled_from(["left", "right", "up"]),
        "late_chunking": st.booleans(),
        "normalized": st.booleans(),
        "encoding_format": st.sampled_from(["float", "base64", "hex"]),
        "embedding_type": st.sampled_from(["float", "base64", "binary", "ubinary", "int8", "bits"]),
    },
)
rerank_requests = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["tiny-cross-encoder", "tiny-qwen3-reranker", "all-minilm-l6-v2"]),
        "query": texts,
        "documents": st.lists(st.one_of(texts, st.builds(lambda t: {"text": t}, texts)), max_size=6),
    },
    optional={
        "top_n": st.integers(-2, 10),
        "return_documents": st.booleans(),
        "instruction": st.text(max_size=20),
        "max_tokens_per_doc": st.integers(-1, 50),
        "raw_scores": st.booleans(),
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(payload=embedding_requests)
def test_embedding_requests_never_5xx(serve_app, payload):
    r = httpx.post(serve_app["base_url"] + "/v1/embeddings", json=payload, timeout=60)
    assert_sane(r.status_code, r.json())
    if r.status_code == 200:
        n = 1 if isinstance(payload["input"], str) else len(payload["input"])
        assert [d["index"] for d in r.json()["data"]] == list(range(n))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(payload=rerank_requests)
def test_rerank_requests_never_5xx(serve_app, payload):
    r = httpx.post(serve_app["base_url"] + "/v1/rerank", json=payload, timeout=60)
    assert_sane(r.status_code, r.json())
    if r.status_code == 200:
        scores = [x["relevance_score"] for x in r.json()["results"]]
        assert scores == sorted(scores, reverse=True)

"""/v1/rerank (Jina / Cohere v1 shape) and /v2/rerank (Cohere v2) on the real service."""

from __future__ import annotations

import random

import httpx
import numpy as np
import pytest

from deployments.engines.postprocess import relevance
from deployments.engines.rerankers import CrossEncoderEngine, Qwen3RerankerEngine

pytestmark = pytest.mark.integration

QUERY = "what is the capital of france"
DOCS = [
    "Paris is the capital of France.",
    "The weather is nice today.",
    "Berlin is the capital of Germany.",
    "France borders Spain, Italy and Germany.",
]


def _rerank(base, payload, path="/v1/rerank"):
    return httpx.post(base + path, json=payload, timeout=120)


def test_cross_encoder_scores_order_and_documents(serve_app, tiny_cross_encoder):
    engine = CrossEncoderEngine(str(tiny_cross_encoder), max_tokens=128)
    expected = relevance(engine.forward(engine.prepare_pairs(QUERY, DOCS)))
    body = _rerank(serve_app["base_url"], {"model": "tiny-cross-encoder", "query": QUERY, "documents": DOCS}).json()
    results = body["results"]
    assert [r["index"] for r in results] == np.argsort(-expected, kind="stable").tolist()
    for r in results:
        assert r["relevance_score"] == pytest.approx(float(expected[r["index"]]), abs=1e-5)
        assert 0.0 <= r["relevance_score"] <= 1.0
        assert r["document"] == {"text": DOCS[r["index"]]}
    assert body["model"] == "tiny-cross-encoder" and body["usage"]["total_tokens"] > 0

    top = _rerank(
        serve_app["base_url"],
        {"model": "tiny-cross-encoder", "query": {"text": QUERY}, "documents": [{"text": d} for d in DOCS],
         "top_n": 2, "return_documents": False},
    ).json()["results"]  # fmt: skip
    assert [r["index"] for r in top] == [r["index"] for r in results[:2]] and "document" not in top[0]
    raw = _rerank(
        serve_app["base_url"], {"model": "tiny-cross-encoder", "query": QUERY, "documents": DOCS, "raw_scores": True}
    ).json()["results"]
    raw_expected = engine.forward(engine.prepare_pairs(QUERY, DOCS))
    assert {r["index"]: round(r["relevance_score"], 4) for r in raw} == {
        i: round(float(v), 4) for i, v in enumerate(raw_expected)
    }


def test_qwen3_reranker_with_instruction(serve_app, tiny_qwen3_reranker):
    engine = Qwen3RerankerEngine(str(tiny_qwen3_reranker), max_tokens=512)
    for instruction in (None, "Find the document that names a capital"):
        expected = relevance(engine.forward(engine.prepare_pairs(QUERY, DOCS, instruction)))
        payload = {"model": "tiny-qwen3-reranker", "query": QUERY, "documents": DOCS}
        if instruction:
            payload["instruction"] = instruction
        results = _rerank(serve_app["base_url"], payload).json()["results"]
        got = {r["index"]: r["relevance_score"] for r in results}
        assert got == pytest.approx({i: float(v) for i, v in enumerate(expected)}, abs=1e-5)


def test_embedding_model_reranks_by_cosine(serve_app, minilm_path):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm_path, device="cpu")
    q = st.encode([QUERY], normalize_embeddings=True)[0]
    expected = st.encode(DOCS, normalize_embeddings=True) @ q
    results = _rerank(serve_app["base_url"], {"model": "all-minilm-l6-v2", "query": QUERY, "documents": DOCS}).json()
    assert results["results"][0]["index"] == 0  # real weights: the Paris sentence wins
    got = {r["index"]: r["relevance_score"] for r in results["results"]}
    assert got == pytest.approx({i: float(v) for i, v in enumerate(expected)}, abs=1e-4)
    models = {m["id"]: m for m in httpx.get(serve_app["base_url"] + "/v1/models").json()["data"]}
    assert "cosine" in models["all-minilm-l6-v2"]["rerank"] and "sigmoid" in models["tiny-cross-encoder"]["rerank"]


def test_cohere_client_v2(serve_app, tiny_cross_encoder):
    import cohere

    client = cohere.ClientV2(api_key="x", base_url=serve_app["base_url"])
    response = client.rerank(model="tiny-cross-encoder", query=QUERY, documents=DOCS, top_n=3, max_tokens_per_doc=64)
    engine = CrossEncoderEngine(str(tiny_cross_encoder), max_tokens=128)
    expected = relevance(engine.forward(engine.prepare_pairs(QUERY, engine.clip(DOCS, 64))))
    assert [r.index for r in response.results] == np.argsort(-expected, kind="stable")[:3].tolist()
    assert response.results[0].relevance_score == pytest.approx(float(expected.max()), abs=1e-5)


def test_many_documents_spread_over_batches(serve_app, tiny_cross_encoder):
    rng = random.Random(3)
    words = "paris france capital city river museum weather rain germany berlin".split()
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 60))) for _ in range(300)]
    docs.append("x" * 3000)  # over the model's 128 tokens: truncated, never an error
    engine = CrossEncoderEngine(str(tiny_cross_encoder), max_tokens=128)
    expected = relevance(engine.forward(engine.prepare_pairs(QUERY, docs)))
    results = _rerank(serve_app["base_url"], {"model": "tiny-cross-encoder", "query": QUERY, "documents": docs})
    assert results.status_code == 200, results.text
    got = np.zeros(len(docs))
    for r in results.json()["results"]:
        got[r["index"]] = r["relevance_score"]
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize(
    "payload,status,needle",
    [
        ({"model": "tiny-cross-encoder", "query": QUERY, "documents": []}, 400, "must not be empty"),
        ({"model": "tiny-cross-encoder", "query": QUERY, "documents": ["a", " "]}, 400, "documents[1] is empty"),
        ({"model": "tiny-cross-encoder", "query": "", "documents": ["a"]}, 400, "query"),
        ({"model": "nope", "query": QUERY, "documents": ["a"]}, 404, "does not exist"),
        ({"model": "tiny-cross-encoder", "query": QUERY, "documents": ["a"], "top_n": 0}, 400, "top_n"),
        ({"model": "tiny-cross-encoder", "query": QUERY, "documents": ["a"], "top_n": "x"}, 422, "top_n"),
        ({"model": "tiny-cross-encoder", "query": QUERY, "documents": ["a"], "instruction": "x"}, 400, "instruction"),
        ({"model": "tiny-cross-encoder", "query": QUERY, "documents": ["d"] * 401}, 413, "max_documents_per_request"),
        ({"model": "tiny-cross-encoder", "query": "q " * 100, "documents": ["a"]}, 400, "query is too long"),
        ({"model": "all-minilm-l6-v2", "query": QUERY, "documents": ["a"], "raw_scores": True}, 400, "cosine"),
    ],
)
def test_rerank_errors(serve_app, payload, status, needle):
    resp = _rerank(serve_app["base_url"], payload)
    assert resp.status_code == status, resp.text
    assert needle in resp.json()["error"]["message"]
    assert _rerank(serve_app["base_url"], {**payload, "model": "tiny-cross-encoder"}, "/v2/rerank").status_code in (
        200,
        400,
        404,
        413,
        422,
    )

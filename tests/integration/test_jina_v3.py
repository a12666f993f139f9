"""jina-embeddings-v3 through the service: `task` picks the adapter, end to end, on a real Serve app.

A tiny random-weight checkpoint in the official layout (tests/helpers/tiny_jina_v3.py), declared by family +
source; the answers must equal our engine run directly with the same task, and differ between tasks.
"""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def jina_app(serve_app, tmp_path_factory):
    from helpers.tiny_jina_v3 import build_tiny_jina_v3
    from ray import serve

    from serve_app.app import build_app

    source = build_tiny_jina_v3(tmp_path_factory.mktemp("jina") / "tiny-jina-v3")
    model = {
        "name": "tiny-jina",
        "family": "jina-v3",
        "source": str(source),
        "matryoshka": {"min": 8, "max": 32},
        "deployment": {"num_cpus": 0.25, "torch_threads": 1},
    }
    serve.run(build_app({"models": [model]}), name="jina", route_prefix="/jina")
    yield {"base": serve_app["base_url"] + "/jina", "source": source}
    serve.delete("jina")


def _embed(base: str, **body) -> httpx.Response:
    return httpx.post(base + "/v1/embeddings", json={"model": "tiny-jina", **body}, timeout=60)


def _vectors(resp: httpx.Response) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    return np.array([d["embedding"] for d in resp.json()["data"]], dtype=np.float32)


def test_each_task_gets_its_adapter_as_the_engine_computes_it(jina_app):
    from deployments.engines.jina_v3 import JinaV3Engine
    from deployments.engines.postprocess import finalize_rows

    torch.set_num_threads(1)
    engine = JinaV3Engine(str(jina_app["source"]))
    texts = ["how do rotary embeddings work", "a passage about adapters"]
    seen = {}
    for task in ("retrieval.query", "retrieval.passage", "text-matching", None):
        body = {"input": texts} if task is None else {"input": texts, "task": task}
        served = _vectors(_embed(jina_app["base"], **body))
        raw = [o.dense for o in engine.forward(engine.prepare(texts, task=task) if task else engine.prepare(texts))]
        direct = finalize_rows(np.stack(raw), None, True)
        cos = (served * direct).sum(axis=1)
        assert cos.min() > 0.9999, (task, cos)
        seen[task] = served
    assert float((seen["retrieval.query"] * seen["retrieval.passage"]).sum(axis=1).max()) < 0.999


def test_prompt_name_may_name_a_task_but_custom_instructions_are_refused(jina_app):
    by_task = _vectors(_embed(jina_app["base"], input=["x y"], task="text-matching"))
    by_name = _vectors(_embed(jina_app["base"], input=["x y"], prompt_name="text-matching"))
    assert np.allclose(by_task, by_name, atol=1e-5)
    custom = _embed(jina_app["base"], input=["x y"], prompt_name="Represent this sentence:")
    assert custom.status_code == 400 and custom.json()["error"]["param"] == "prompt_name"
    card = next(
        m for m in httpx.get(jina_app["base"] + "/v1/models", timeout=30).json()["data"] if m["id"] == "tiny-jina"
    )
    assert "retrieval.query" in card["tasks"] and card["late_chunking"]


def test_late_chunking_with_the_tasks_adapter(jina_app):
    chunks = ["first chunk of a document.", "second chunk, same document."]
    start = time.monotonic()
    query = _vectors(_embed(jina_app["base"], input=chunks, late_chunking=True, task="retrieval.passage"))
    other = _vectors(_embed(jina_app["base"], input=chunks, late_chunking=True, task="separation"))
    assert query.shape == other.shape == (2, 32) and time.monotonic() - start < 60
    assert float((query * other).sum(axis=1).max()) < 0.999


def test_rerank_by_cosine_embeds_the_query_as_a_query_and_documents_as_passages(jina_app):
    query, docs = "how do adapters work", ["adapters are small matrices", "the weather today", "rotary positions"]
    resp = httpx.post(
        jina_app["base"] + "/v1/rerank",
        json={"model": "tiny-jina", "query": query, "documents": docs},
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    scores = {r["index"]: r["relevance_score"] for r in resp.json()["results"]}
    q = _vectors(_embed(jina_app["base"], input=[query], task="retrieval.query"))[0]
    passages = _vectors(_embed(jina_app["base"], input=docs, task="retrieval.passage"))
    np.testing.assert_allclose([scores[i] for i in range(3)], passages @ q, atol=1e-5)
    one_call = _vectors(_embed(jina_app["base"], input=[query, *docs]))  # no adapter: what rerank did before
    assert not np.allclose([scores[i] for i in range(3)], one_call[1:] @ one_call[0], atol=1e-3)


def test_token_id_inputs_take_the_tasks_adapter_and_prompt(jina_app):
    from deployments.engines.jina_v3 import JinaV3Engine

    engine = JinaV3Engine(str(jina_app["source"]))
    text = "how do rotary embeddings work"
    ids = engine.backend.encode(text, add_special_tokens=False).ids
    for task in ("retrieval.query", "text-matching"):
        from_text = _vectors(_embed(jina_app["base"], input=[text], task=task))
        from_ids = _vectors(_embed(jina_app["base"], input=[ids], task=task))
        assert float((from_text * from_ids).sum()) > 0.9999
    plain = _vectors(_embed(jina_app["base"], input=[ids]))
    assert float((plain * from_ids).sum()) < 0.999  # the task's adapter made a difference
    bad = _embed(jina_app["base"], input=[[10**9]], task="retrieval.query")
    assert bad.status_code == 400 and bad.json()["error"]["param"].startswith("input")

"""jina-embeddings-v4 through the service: tasks pick adapters and prefixes, images, multi-vectors and late
chunking, end to end on a real Serve app.

A tiny random-weight checkpoint in the official layout (tests/helpers/tiny_jina_v4.py), declared by family +
source; the answers must equal our engine run directly with the same task and inputs (the engine itself is
held to the official recipe in tests/unit/engines/test_engine_jina_v4.py).
"""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.integration

TASKS = ("retrieval.query", "retrieval.passage", "text-matching", "code.query", "code.passage")


@pytest.fixture(scope="module")
def jina4(serve_app, tmp_path_factory):
    from helpers.tiny_jina_v4 import build_tiny_jina_v4
    from ray import serve

    from deployments.engines.jina_v4 import JinaV4Engine
    from serve_app.app import build_app

    source = build_tiny_jina_v4(tmp_path_factory.mktemp("jina4") / "tiny-jina-v4", seed=7)
    model = {
        "name": "tiny-jina4",
        "family": "jina-v4",
        "source": str(source),
        "matryoshka": {"min": 16, "max": 64},
        "deployment": {"num_cpus": 0.25, "torch_threads": 1},
        "batching": {"max_batch_tokens": 4096, "max_batch_size": 32, "batch_wait_timeout_s": 0.05},
    }
    serve.run(build_app({"models": [model]}), name="jina4", route_prefix="/jina4")
    torch.set_num_threads(1)
    yield {"base": serve_app["base_url"] + "/jina4", "engine": JinaV4Engine(str(source))}
    serve.delete("jina4")


def _embed(base: str, **body) -> httpx.Response:
    return httpx.post(base + "/v1/embeddings", json={"model": "tiny-jina4", **body}, timeout=120)


def _vectors(resp: httpx.Response) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    return np.array([d["embedding"] for d in resp.json()["data"]], dtype=np.float32)


def _direct(engine, inputs, task=None) -> np.ndarray:
    from deployments.engines.postprocess import finalize_rows

    prepared = engine.prepare(inputs, task=task) if task else engine.prepare(inputs)
    return finalize_rows(np.stack([o.dense for o in engine.forward(prepared)]), None, True)


def test_each_task_as_the_engine_computes_it(jina4):
    texts = ["how do task adapters work", "def f(x): return x"]
    seen = {}
    for task in (*TASKS, None):
        resp = _embed(jina4["base"], input=texts, **({"task": task} if task else {}))
        served = _vectors(resp)
        cos = (served * _direct(jina4["engine"], texts, task)).sum(axis=1)
        assert cos.min() > 0.9999, (task, cos)
        prefix = "Passage: " if task and task.endswith("passage") else "Query: "
        want = sum(len(jina4["engine"].backend.encode(prefix + t).ids) for t in texts)
        assert resp.json()["usage"]["prompt_tokens"] == want
        seen[task] = served
    assert np.allclose(seen[None], seen["text-matching"], atol=1e-6)  # no task: text-matching (the default)
    assert float((seen["retrieval.query"] * seen["retrieval.passage"]).sum(axis=1).max()) < 0.999
    assert float((seen["retrieval.query"] * seen["code.query"]).sum(axis=1).max()) < 0.999


def test_transformers_style_task_and_prompt_name(jina4):
    by_task = _vectors(_embed(jina4["base"], input=["x y"], task="retrieval.passage"))
    by_pair = _vectors(_embed(jina4["base"], input=["x y"], task="retrieval", prompt_name="passage"))
    bare = _vectors(_embed(jina4["base"], input=["x y"], task="code"))  # encode_text's default prompt: query
    assert np.allclose(by_task, by_pair, atol=1e-6)
    assert np.allclose(bare, _vectors(_embed(jina4["base"], input=["x y"], task="code.query")), atol=1e-6)
    custom = _embed(jina4["base"], input=["x y"], prompt_name="Represent this sentence:")
    assert custom.status_code == 400 and custom.json()["error"]["param"] == "prompt_name"


def test_concurrent_requests_of_different_tasks_share_batches(jina4):
    """Requests of every task at once (batched together by the deployment): each gets its own adapter."""
    texts = [f"sentence number {i} about adapters" for i in range(10)]
    jobs = [(texts[i], TASKS[i % len(TASKS)]) for i in range(len(texts))]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: _embed(jina4["base"], input=[job[0]], task=job[1]), jobs))
    for (text, task), resp in zip(jobs, answers, strict=True):
        assert float(_vectors(resp)[0] @ _direct(jina4["engine"], [text], task)[0]) > 0.9999, task


def test_multi_vectors_through_the_output_field(jina4):
    texts = ["a short query", "a somewhat longer passage of text"]
    body = _embed(jina4["base"], input=texts, task="retrieval.passage", output=["dense", "colbert"]).json()
    engine = jina4["engine"]
    raw = engine.forward(engine.prepare(texts, task="retrieval.passage"))
    for item, want in zip(body["data"], raw, strict=True):
        got = np.array(item["colbert"], dtype=np.float32)
        assert (
            got.shape
            == want.colbert.shape
            == (len(engine.prepare([texts[item["index"]]], task="retrieval.passage")[0]), 32)
        )
        np.testing.assert_allclose(got, want.colbert, atol=1e-5)
        assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    only = _embed(jina4["base"], input=texts[:1], output=["colbert"]).json()["data"][0]
    assert "colbert" in only and "embedding" not in only
    refused = _embed(jina4["base"], input=texts[:1], output=["sparse"])
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "output"


def test_images_as_the_engine_computes_them(jina4):
    from helpers.media_samples import picture, png_uri

    from deployments import media
    from deployments.engines.visual_inputs import VLItem

    photos = [picture(70, 90, 1), picture(120, 56, 2)]
    uris = [png_uri(p) for p in photos]
    resp = _embed(jina4["base"], input=[{"image": uris[0]}, "a caption", {"image": uris[1]}], task="retrieval.query")
    served = _vectors(resp)
    decoded = [VLItem(images=(media.load_image(u),)) for u in uris]
    direct = _direct(jina4["engine"], [decoded[0], "a caption", decoded[1]], "retrieval.query")
    assert ((served * direct).sum(axis=1)).min() > 0.9999
    assert resp.json()["usage"]["prompt_tokens"] == sum(
        len(p) for p in jina4["engine"].prepare([decoded[0], "a caption", decoded[1]], task="retrieval.query")
    )
    # an image beside text in one input, a video, and hostile media are refused, each naming its input
    both = _embed(jina4["base"], input=["ok", {"text": "caption", "image": uris[0]}])
    assert both.status_code == 400 and "input[1]" in both.json()["error"]["message"]
    video = _embed(jina4["base"], input=[{"video": [uris[0], uris[1]]}])
    assert video.status_code == 400 and video.json()["error"]["param"].startswith("input[0].video")
    bad = _embed(jina4["base"], input=[{"image": "file:///etc/passwd"}])
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input[0].image"


def test_rerank_with_image_documents(jina4):
    from helpers.media_samples import picture, png_uri

    docs = ["a red square", {"image": png_uri(picture(64, 64, 3))}, "plain text document"]
    resp = httpx.post(
        jina4["base"] + "/v1/rerank",
        json={"model": "tiny-jina4", "query": "a square", "documents": docs, "return_documents": False},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text
    scores = {r["index"]: r["relevance_score"] for r in resp.json()["results"]}
    assert set(scores) == {0, 1, 2}
    refused = httpx.post(
        jina4["base"] + "/v1/rerank",
        json={"model": "tiny-jina4", "query": "q", "documents": ["d"], "instruction": "Judge relevance"},
        timeout=60,
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "instruction"


def test_late_chunking_with_the_tasks_adapter(jina4):
    chunks = ["first chunk of a document.", "second chunk, same document."]
    start = time.monotonic()
    passage = _vectors(_embed(jina4["base"], input=chunks, late_chunking=True, task="retrieval.passage"))
    code = _vectors(_embed(jina4["base"], input=chunks, late_chunking=True, task="code.passage"))
    assert passage.shape == code.shape == (2, 64) and time.monotonic() - start < 120
    vectors, _ = jina4["engine"].late_chunk(chunks, "retrieval.passage")
    direct = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert (passage * direct).sum(axis=1).min() > 0.9999
    assert float((passage * code).sum(axis=1).max()) < 0.999


def test_models_card_shows_the_recipe(jina4):
    card = next(
        m for m in httpx.get(jina4["base"] + "/v1/models", timeout=30).json()["data"] if m["id"] == "tiny-jina4"
    )
    assert card["tasks"] == list(TASKS)
    assert card["modalities"] == ["text", "image"] and card["outputs"] == ["dense", "colbert"]
    assert card["late_chunking"] and card["family"] == "jina-v4"
    small = _vectors(_embed(jina4["base"], input=["x y"], dimensions=16))
    assert small.shape == (1, 16) and abs(float(np.linalg.norm(small)) - 1) < 1e-5


def test_cohere_input_types_pick_the_retrieval_adapters(jina4):
    texts = ["a document about adapters"]
    for input_type, task in (("search_query", "retrieval.query"), ("search_document", "retrieval.passage")):
        resp = httpx.post(
            jina4["base"] + "/v2/embed",
            json={"model": "tiny-jina4", "texts": texts, "input_type": input_type, "embedding_types": ["float"]},
            timeout=120,
        )
        assert resp.status_code == 200, resp.text
        served = np.array(resp.json()["embeddings"]["float"], dtype=np.float32)
        assert float(served[0] @ _direct(jina4["engine"], texts, task)[0]) > 0.9999, input_type

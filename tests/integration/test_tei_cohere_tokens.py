"""Other dialects on the real service: TEI's routes (huggingface_hub, LangChain and Chroma clients), Cohere embed
v2 (the cohere client) and token-id inputs on /v1/embeddings (the openai client)."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
from helpers.media_samples import picture, png_uri

pytestmark = pytest.mark.integration

TEXTS = ["The cat sits on the mat.", "Ray Serve scales Python services.", "Bonjour le monde"]
KEY = "sk-dialects"


def _post(base, path, payload, **kw):
    return httpx.post(base + path, json=payload, timeout=120, **kw)


def _v1(base, model, inputs, **fields):
    r = _post(base, "/v1/embeddings", {"model": model, "input": inputs, **fields})
    assert r.status_code == 200, r.text
    return np.array([d["embedding"] for d in r.json()["data"]], dtype=np.float32), r.json()["usage"]["prompt_tokens"]


@pytest.fixture
def hub_client_online(monkeypatch):
    """The session runs with HF_HUB_OFFLINE=1 (no model is ever fetched), and huggingface_hub then refuses every
    request, even to 127.0.0.1; its InferenceClient (also inside LangChain) only talks to this service here."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def _tei_error(resp, status, error_type="Validation"):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type, body
    return body["error"]


# ---- TEI ----------------------------------------------------------------------------------------------------
def test_tei_embed_routes_match_v1(serve_app):
    base = serve_app["base_url"]
    expected, tokens = _v1(base, "all-minilm-l6-v2", TEXTS)
    for path in ("/tei/all-minilm-l6-v2/embed", "/tei/all-minilm-l6-v2", "/tei/all-minilm-l6-v2/", "/embed", "/"):
        r = _post(base, path, {"inputs": TEXTS})  # bare routes: the first (embedding) model of the config
        assert r.status_code == 200, (path, r.text)
        np.testing.assert_allclose(np.array(r.json()), expected, atol=1e-6)
        assert r.headers["x-compute-tokens"] == str(tokens)
    single = _post(base, "/tei/all-minilm-l6-v2/embed", {"inputs": TEXTS[0]}).json()
    assert len(single) == 1 and np.allclose(single[0], expected[0], atol=1e-6)

    q = "tiny-qwen3-embedding"
    raw = np.array(_post(base, f"/tei/{q}/embed", {"inputs": TEXTS, "normalize": False, "dimensions": 16}).json())
    np.testing.assert_allclose(raw, _v1(base, q, TEXTS, normalized=False, dimensions=16)[0], atol=1e-5)
    query = np.array(_post(base, f"/tei/{q}/embed", {"inputs": TEXTS, "prompt_name": "retrieval.query"}).json())
    np.testing.assert_allclose(query, _v1(base, q, TEXTS, task="retrieval.query")[0], atol=1e-5)
    long_text = "word " * 400
    for direction in ("Left", "right"):
        cut = _post(
            base,
            "/tei/all-minilm-l6-v2/embed",
            {"inputs": [long_text], "truncate": True, "truncation_direction": direction},
        ).json()
        want = _v1(base, "all-minilm-l6-v2", [long_text], truncate=True, truncation_direction=direction.lower())[0]
        np.testing.assert_allclose(np.array(cut), want, atol=1e-6)
    ids = _post(base, "/v1/tokenize", {"model": "all-minilm-l6-v2", "input": TEXTS[0]}).json()["data"][0]["ids"]
    from_ids = _post(base, "/tei/all-minilm-l6-v2/embed", {"inputs": [ids[1:-1]]}).json()  # TEI takes ids too
    np.testing.assert_allclose(np.array(from_ids)[0], expected[0], atol=1e-5)


def test_huggingface_hub_inference_client(serve_app, minilm_path, hub_client_online):
    from huggingface_hub import InferenceClient
    from sentence_transformers import SentenceTransformer

    base = serve_app["base_url"]
    client = InferenceClient(base_url=f"{base}/tei/all-minilm-l6-v2")
    got = client.feature_extraction(TEXTS)
    reference = SentenceTransformer(minilm_path, device="cpu").encode(TEXTS, normalize_embeddings=True)
    assert got.shape == (3, 384) and ((got * reference).sum(axis=1) >= 0.9999).all()
    cut = client.feature_extraction("word " * 400, truncate=True, truncation_direction="left")
    want = _v1(base, "all-minilm-l6-v2", ["word " * 400], truncate=True, truncation_direction="left")[0]
    np.testing.assert_allclose(cut, want, atol=1e-6)
    qwen = InferenceClient(base_url=f"{base}/tei/tiny-qwen3-embedding")
    query = qwen.feature_extraction(TEXTS, prompt_name="retrieval.query", normalize=True)
    np.testing.assert_allclose(query, _v1(base, "tiny-qwen3-embedding", TEXTS, task="retrieval.query")[0], atol=1e-5)
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError) as err:
        client.feature_extraction("x", prompt_name="retrieval.query")  # minilm takes no instruction
    assert err.value.response.status_code == 400


def test_langchain_huggingface_endpoint_embeddings(serve_app, hub_client_online):
    """langchain-huggingface >= 1.2.2 refuses a URL as `model` (it then calls the Hub), so the client it wraps is
    pointed at our TEI base path; LangChain's embed_documents / embed_query then run unchanged."""
    from huggingface_hub import AsyncInferenceClient, InferenceClient
    from langchain_huggingface import HuggingFaceEndpointEmbeddings

    base = serve_app["base_url"] + "/tei/all-minilm-l6-v2"
    embeddings = HuggingFaceEndpointEmbeddings(model="sentence-transformers/all-MiniLM-L6-v2")
    embeddings.client = InferenceClient(base_url=base)
    embeddings.async_client = AsyncInferenceClient(base_url=base)
    expected = _v1(serve_app["base_url"], "all-minilm-l6-v2", TEXTS)[0]
    np.testing.assert_allclose(np.array(embeddings.embed_documents(TEXTS)), expected, atol=1e-6)
    np.testing.assert_allclose(np.array(embeddings.embed_query(TEXTS[1])), expected[1], atol=1e-6)
    import asyncio

    np.testing.assert_allclose(np.array(asyncio.run(embeddings.aembed_documents(TEXTS))), expected, atol=1e-6)


def test_chroma_huggingface_embedding_server(serve_app):
    from chromadb.utils.embedding_functions import HuggingFaceEmbeddingServer

    base = serve_app["base_url"]
    expected = _v1(base, "all-minilm-l6-v2", TEXTS)[0]
    for url in (f"{base}/tei/all-minilm-l6-v2/embed", f"{base}/tei/all-minilm-l6-v2", f"{base}/embed"):
        got = HuggingFaceEmbeddingServer(url=url)(TEXTS)
        np.testing.assert_allclose(np.stack(got), expected, atol=1e-6)


def test_tei_rerank(serve_app):
    base = serve_app["base_url"]
    query, docs = "what is the capital of france", ["Paris is the capital of France.", "The weather is nice today."]
    ours = _post(base, "/v1/rerank", {"model": "tiny-cross-encoder", "query": query, "documents": docs}).json()
    want = [(r["index"], r["relevance_score"]) for r in ours["results"]]
    for path in ("/tei/tiny-cross-encoder/rerank", "/tei/tiny-cross-encoder", "/rerank"):  # first rerank model
        r = _post(base, path, {"query": query, "texts": docs, "return_text": True})
        assert r.status_code == 200, (path, r.text)
        got = r.json()
        assert [g["index"] for g in got] == [i for i, _ in want]
        assert [g["score"] for g in got] == pytest.approx([s for _, s in want], abs=1e-6)
        assert [g["text"] for g in got] == [docs[i] for i, _ in want]
    raw = _post(base, "/rerank", {"query": query, "texts": docs, "raw_scores": True}).json()
    ours_raw = _post(
        base, "/v1/rerank", {"model": "tiny-cross-encoder", "query": query, "documents": docs, "raw_scores": True}
    ).json()["results"]
    assert {g["index"]: g["score"] for g in raw} == pytest.approx(
        {r["index"]: r["relevance_score"] for r in ours_raw}, abs=1e-6
    )
    assert "text" not in raw[0]
    cosine = _post(base, "/tei/all-minilm-l6-v2/rerank", {"query": query, "texts": docs}).json()
    assert cosine[0]["index"] == 0  # an embedding model ranks by cosine similarity


def test_tei_embed_all_gives_every_token_state(serve_app, tiny_xlmr, tiny_bge_m3):
    import torch
    from transformers import AutoModel, AutoTokenizer

    base = serve_app["base_url"]
    for name, path in (("tiny-xlmr", tiny_xlmr), ("tiny-bge-m3", tiny_bge_m3)):
        got = _post(base, f"/tei/{name}/embed_all", {"inputs": TEXTS[:2]})
        assert got.status_code == 200, got.text
        tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
        for text, states in zip(TEXTS[:2], got.json(), strict=True):
            with torch.no_grad():
                want = model(**tokenizer(text, return_tensors="pt")).last_hidden_state[0].numpy()
            np.testing.assert_allclose(np.array(states), want, atol=1e-4)
        assert got.headers["x-compute-tokens"] == str(sum(len(tokenizer(t)["input_ids"]) for t in TEXTS[:2]))
    bare = _post(base, "/embed_all", {"inputs": "hello"}).json()  # the first embedding model: all-MiniLM-L6-v2
    assert len(bare) == 1 and len(bare[0]) == 3 and len(bare[0][0]) == 384  # [CLS] hello [SEP]


def test_tei_embed_sparse(serve_app):
    base = serve_app["base_url"]
    ours = _post(base, "/v1/embeddings", {"model": "tiny-bge-m3", "input": TEXTS, "output": ["sparse"]}).json()
    for path in ("/tei/tiny-bge-m3/embed_sparse", "/embed_sparse"):  # the first model with a sparse output
        got = _post(base, path, {"inputs": TEXTS}).json()
        for mine, theirs in zip(got, ours["data"], strict=True):
            assert [x["index"] for x in mine] == theirs["sparse"]["indices"]
            assert [x["value"] for x in mine] == pytest.approx(theirs["sparse"]["values"], abs=1e-6)
    assert "sparse" in _tei_error(_post(base, "/tei/all-minilm-l6-v2/embed_sparse", {"inputs": "x"}), 400)


def test_tei_tokenize_decode_and_info(serve_app):
    base = serve_app["base_url"]
    ours = _post(base, "/v1/tokenize", {"model": "all-minilm-l6-v2", "input": TEXTS}).json()
    for path in ("/tei/all-minilm-l6-v2/tokenize", "/tokenize"):  # bare /tokenize with TEI's body: TEI's answer
        got = _post(base, path, {"inputs": TEXTS}).json()
        assert [[t["id"] for t in tokens] for tokens in got] == [d["ids"] for d in ours["data"]]
    first = _post(base, "/tokenize", {"inputs": "Hello world"}).json()[0]
    assert first[0] == {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert first[1] == {"id": 7592, "text": "Hello", "special": False, "start": 0, "stop": 5}
    bare = _post(base, "/tokenize", {"inputs": "Hello world", "add_special_tokens": False}).json()[0]
    assert [t["id"] for t in bare] == [7592, 2088]
    still_ours = _post(base, "/tokenize", {"model": "all-minilm-l6-v2", "input": "Hello world"}).json()
    assert still_ours["data"][0]["ids"] == [101, 7592, 2088, 102]
    prompted = _post(base, "/tei/tiny-qwen3-embedding/tokenize", {"inputs": "hi", "prompt_name": "qa.query"}).json()
    plain = _post(base, "/tei/tiny-qwen3-embedding/tokenize", {"inputs": "hi"}).json()
    assert len(prompted[0]) > len(plain[0]) and plain[0][-1]["special"]  # <|endoftext|>
    for path in ("/tei/all-minilm-l6-v2/decode", "/decode"):
        assert _post(base, path, {"ids": [101, 7592, 2088, 102]}).json() == ["hello world"]
        two = _post(base, path, {"ids": [[7592], [101, 2088]], "skip_special_tokens": False}).json()
        assert two == ["hello", "[CLS] world"]
    assert "input[0]" not in _tei_error(_post(base, "/decode", {"ids": [[1], [10**6]]}), 400)
    assert "ids[1]" in _tei_error(_post(base, "/decode", {"ids": [[1], [10**6]]}), 400)
    assert "covers text embedding models" in _tei_error(
        _post(base, "/tei/tiny-vl-embedding/tokenize", {"inputs": "x"}), 400
    )

    info = httpx.get(base + "/info").json()  # the first model of the config
    assert info["served_model_name"] == "all-minilm-l6-v2" and "embedding" in info["model_type"]
    assert info["max_input_length"] == 256 and info["max_client_batch_size"] == 64
    reranker = httpx.get(base + "/tei/tiny-cross-encoder/info").json()
    assert "reranker" in reranker["model_type"] and reranker["max_input_length"] == 128


def test_tei_errors_have_tei_shape(serve_app):
    base = serve_app["base_url"]
    assert "empty" in _tei_error(_post(base, "/embed", {"inputs": []}), 400, "Empty")
    assert "input[1] is empty" in _tei_error(_post(base, "/embed", {"inputs": ["a", ""]}), 400, "Empty")
    assert "does not exist" in _tei_error(_post(base, "/tei/nope/embed", {"inputs": "x"}), 404)
    assert "inputs" in _tei_error(_post(base, "/embed", {"input": "x"}), 422)
    assert "limit is 64" in _tei_error(_post(base, "/embed", {"inputs": ["x"] * 65}), 413)
    assert "more than the model's limit" in _tei_error(_post(base, "/embed", {"inputs": "word " * 400}), 400)
    bad = httpx.post(base + "/embed", content=b"{nope", headers={"content-type": "application/json"}, timeout=30)
    assert "not valid JSON" in _tei_error(bad, 400)
    plain = httpx.post(base + "/tei/all-minilm-l6-v2/embed", content=b'{"inputs": "x"}', timeout=30)  # no type
    assert plain.status_code == 200 and len(plain.json()[0]) == 384
    assert "not token ids" in _tei_error(_post(base, "/tei/tiny-vl-embedding/embed", {"inputs": [1, 2]}), 400)
    assert "/embed_all" in _tei_error(_post(base, "/tei/tiny-vl-embedding/embed_all", {"inputs": "x"}), 400)


def test_tei_routes_are_counted_by_route(serve_app):
    import re
    import time

    base = serve_app["base_url"]
    for _ in range(2):
        assert _post(base, "/tei/tiny-xlmr/embed", {"inputs": "metrics"}).status_code == 200
    assert _post(base, "/tei/nope/embed", {"inputs": "x"}).status_code == 404
    deadline = time.monotonic() + 60
    while True:
        text = httpx.get(serve_app["metrics_url"], timeout=10).text
        rows = re.findall(r'^ray_embedserve_http_requests_total\{[^}]*route="/tei/tiny-xlmr/embed"[^}]*\}', text, re.M)
        if rows:
            break
        assert time.monotonic() < deadline, "no metrics row for /tei/tiny-xlmr/embed"
        time.sleep(2)
    assert 'route="/tei/nope/embed"' not in text  # unknown paths stay "other"


@pytest.fixture(scope="module")
def guarded(serve_app, tiny_xlmr):
    """A second app with an API key, under a route prefix (TEI base URL: <prefix>/tei/<model>)."""
    from ray import serve

    from serve_app.app import build_app

    args = {
        "models": [
            {"name": "tiny-xlmr", "family": "encoder", "source": str(tiny_xlmr), "deployment": {"num_cpus": 0.25}}
        ],
        "auth": {"api_keys": [KEY], "api_keys_env": None},
        "limits": {"max_body_bytes": 2000},
    }
    serve.run(build_app(args), name="dialects", route_prefix="/dialects")
    yield serve_app["base_url"] + "/dialects"
    serve.delete("dialects")


def test_auth_and_body_limit_on_the_new_routes(guarded, hub_client_online):
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    auth = {"Authorization": f"Bearer {KEY}"}
    for path, payload in (
        ("/tei/tiny-xlmr/embed", {"inputs": "x"}),
        ("/embed", {"inputs": "x"}),
        ("/tokenize", {"inputs": "x"}),
        ("/v2/embed", {"model": "tiny-xlmr", "texts": ["x"]}),
    ):
        assert _post(guarded, path, payload).status_code == 401
        assert _post(guarded, path, payload, headers=auth).status_code == 200, path
        assert _post(guarded, path, {**payload, "pad": "x" * 3000}, headers=auth).status_code == 413
    assert httpx.get(guarded + "/tei/tiny-xlmr/info").status_code == 401
    assert httpx.get(guarded + "/info", headers=auth).json()["served_model_name"] == "tiny-xlmr"
    with pytest.raises(HfHubHTTPError):
        InferenceClient(base_url=f"{guarded}/tei/tiny-xlmr").feature_extraction("x")
    vectors = InferenceClient(base_url=f"{guarded}/tei/tiny-xlmr", api_key=KEY).feature_extraction(["a", "b"])
    assert vectors.shape == (2, 32)


# ---- Cohere embed v2 ------------------------------------------------------------------------------------------
def test_cohere_client_embed_v2(serve_app):
    import cohere

    base = serve_app["base_url"]
    client = cohere.ClientV2(base_url=base, api_key="x")
    kinds = ["float", "int8", "uint8", "binary", "ubinary", "base64"]
    res = client.embed(model="all-minilm-l6-v2", texts=TEXTS, input_type="search_document", embedding_types=kinds)
    expected, tokens = _v1(base, "all-minilm-l6-v2", TEXTS)
    e = res.embeddings
    np.testing.assert_allclose(np.array(e.float_), expected, atol=1e-6)
    for kind in ("int8", "binary", "ubinary"):
        ours = _post(base, "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": TEXTS, "embedding_type": kind})
        assert getattr(e, kind) == [d["embedding"] for d in ours.json()["data"]]
    assert (np.array(e.uint8) - 128).tolist() == e.int8
    decoded = np.stack([np.frombuffer(base64.b64decode(s), "<f4") for s in e.base64])
    np.testing.assert_allclose(decoded, expected, atol=1e-6)
    assert res.texts == TEXTS and res.meta.billed_units.input_tokens == tokens and res.id

    q = "tiny-qwen3-embedding"
    query = client.embed(
        model=q, texts=TEXTS, input_type="search_query", output_dimension=16, embedding_types=["float"]
    )
    np.testing.assert_allclose(
        np.array(query.embeddings.float_), _v1(base, q, TEXTS, task="retrieval.query", dimensions=16)[0], atol=1e-5
    )
    doc = client.embed(model=q, texts=TEXTS, input_type="search_document", embedding_types=["float"])
    np.testing.assert_allclose(np.array(doc.embeddings.float_), _v1(base, q, TEXTS)[0], atol=1e-5)

    long_text = "word " * 400
    start = client.embed(model="all-minilm-l6-v2", texts=[long_text], input_type="clustering", truncate="START")
    want = _v1(base, "all-minilm-l6-v2", [long_text], truncate=True, truncation_direction="left")[0]
    np.testing.assert_allclose(np.array(start.embeddings.float_), want, atol=1e-6)
    with pytest.raises(cohere.core.api_error.ApiError) as err:
        client.embed(model="all-minilm-l6-v2", texts=[long_text], input_type="search_query", truncate="NONE")
    assert err.value.status_code == 400
    with pytest.raises(cohere.core.api_error.ApiError) as err:
        client.embed(model="all-minilm-l6-v2", images=[png_uri(picture(32, 32, 1))], input_type="image")
    assert err.value.status_code == 400 and "image" in str(err.value.body)


def test_cohere_images_and_mixed_inputs_through_qwen3_vl(serve_app):
    import cohere
    from cohere import EmbedInput, ImageUrlEmbedContent, TextEmbedContent
    from cohere.types import EmbedImageUrl

    base = serve_app["base_url"]
    client = cohere.ClientV2(base_url=base, api_key="x")
    uri = png_uri(picture(48, 64, 2))
    images = client.embed(model="tiny-vl-embedding", images=[uri], input_type="image", embedding_types=["float"])
    np.testing.assert_allclose(
        np.array(images.embeddings.float_), _v1(base, "tiny-vl-embedding", [{"image": uri}])[0], atol=1e-5
    )
    mixed = client.embed(
        model="tiny-vl-embedding",
        inputs=[
            EmbedInput(
                content=[
                    TextEmbedContent(text="a small picture"),
                    ImageUrlEmbedContent(image_url=EmbedImageUrl(url=uri)),
                ]
            ),
            EmbedInput(content=[TextEmbedContent(text="just text")]),
        ],
        input_type="search_query",
        embedding_types=["float", "int8"],
    )
    want = _v1(
        base, "tiny-vl-embedding", [{"text": "a small picture", "image": uri}, "just text"], task="retrieval.query"
    )[0]
    np.testing.assert_allclose(np.array(mixed.embeddings.float_), want, atol=1e-5)
    assert len(mixed.embeddings.int8) == 2


def test_cohere_errors_use_the_service_envelope(serve_app):
    base = serve_app["base_url"]
    for payload, status, needle in (
        ({"model": "all-minilm-l6-v2"}, 400, "exactly one"),
        ({"model": "all-minilm-l6-v2", "texts": ["a"], "images": ["b"]}, 400, "exactly one"),
        ({"model": "all-minilm-l6-v2", "texts": []}, 400, "must not be empty"),
        ({"model": "all-minilm-l6-v2", "texts": ["a"], "embedding_types": ["bits"]}, 422, "embedding_types"),
        ({"model": "all-minilm-l6-v2", "texts": ["a"], "output_dimension": 16}, 400, "384"),
        ({"model": "tiny-qwen3-embedding", "texts": ["a"], "input_type": "clustering"}, 400, "clustering"),
        ({"model": "nope", "texts": ["a"]}, 404, "does not exist"),
        ({"model": "all-minilm-l6-v2", "texts": ["a"] * 65}, 413, "limit is 64"),
    ):
        r = _post(base, "/v2/embed", payload)
        assert r.status_code == status, (payload, r.text)
        assert set(r.json()) == {"error"} and needle in r.json()["error"]["message"], r.text


# ---- token ids on /v1/embeddings --------------------------------------------------------------------------------
def test_token_id_inputs_embed_like_their_text(serve_app):
    import openai

    base = serve_app["base_url"]
    ids = [
        d["ids"][1:-1]
        for d in _post(base, "/v1/tokenize", {"model": "all-minilm-l6-v2", "input": TEXTS}).json()["data"]
    ]
    expected, tokens = _v1(base, "all-minilm-l6-v2", TEXTS)
    got, got_tokens = _v1(base, "all-minilm-l6-v2", ids)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got_tokens == tokens  # [CLS] and [SEP] added and counted, as for the text
    single, _ = _v1(base, "all-minilm-l6-v2", ids[0])  # one list of ids is one input
    np.testing.assert_allclose(single[0], expected[0], atol=1e-5)

    client = openai.OpenAI(base_url=base + "/v1", api_key="x")
    result = client.embeddings.create(model="all-minilm-l6-v2", input=ids)
    np.testing.assert_allclose(np.array([d.embedding for d in result.data]), expected, atol=1e-5)
    assert result.usage.prompt_tokens == tokens

    q = "tiny-qwen3-embedding"  # the instruction's ids go first, <|endoftext|> last, as for text
    q_ids = [
        d["ids"][:-1] for d in _post(base, "/v1/tokenize", {"model": q, "input": TEXTS}).json()["data"]
    ]  # without <|endoftext|>
    np.testing.assert_allclose(
        _v1(base, q, q_ids, task="retrieval.query")[0], _v1(base, q, TEXTS, task="retrieval.query")[0], atol=1e-5
    )
    assert _v1(base, q, q_ids, task="retrieval.query")[1] == _v1(base, q, TEXTS, task="retrieval.query")[1]
    m3_ids = _post(base, "/v1/tokenize", {"model": "tiny-bge-m3", "input": "hello"}).json()["data"][0]["ids"][1:-1]
    outputs = ["dense", "sparse", "colbert"]
    by_ids = _post(base, "/v1/embeddings", {"model": "tiny-bge-m3", "input": [m3_ids], "output": outputs}).json()
    by_text = _post(base, "/v1/embeddings", {"model": "tiny-bge-m3", "input": ["hello"], "output": outputs}).json()
    for key in ("embedding", "colbert"):
        np.testing.assert_allclose(np.array(by_ids["data"][0][key]), np.array(by_text["data"][0][key]), atol=1e-5)
    assert by_ids["data"][0]["sparse"]["indices"] == by_text["data"][0]["sparse"]["indices"]


def test_token_id_input_errors(serve_app):
    base = serve_app["base_url"]
    for payload, status, needle in (
        ({"model": "all-minilm-l6-v2", "input": [[101], [5, 40000]]}, 400, "input[1]: token id 40000 at position 1"),
        ({"model": "all-minilm-l6-v2", "input": [-1]}, 400, "input[0]"),
        ({"model": "all-minilm-l6-v2", "input": [[1], []]}, 400, "input[1] is empty"),
        ({"model": "all-minilm-l6-v2", "input": [7] * 300}, 400, "more than the model's limit of 256"),
        ({"model": "tiny-vl-embedding", "input": [1, 2]}, 400, "chat template"),
        ({"model": "all-minilm-l6-v2", "input": [1, "a"]}, 422, "input"),
        ({"model": "all-minilm-l6-v2", "input": [1.5]}, 422, "input"),
        ({"model": "tiny-xlmr-mean", "input": [[5], [6]], "late_chunking": True}, 400, "not token ids"),
    ):
        r = _post(base, "/v1/embeddings", payload)
        assert r.status_code == status, (payload, r.text)
        assert needle in r.json()["error"]["message"], r.text
    err = _post(base, "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": [[101], [5, 40000]]}).json()["error"]
    assert err["param"] == "input[1]"
    cut = _post(base, "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": [7] * 300, "truncate": True}).json()
    assert cut["usage"]["prompt_tokens"] == 256

"""TEI, Cohere embed v2 and token-id inputs: shapes, policy and routing, without Ray (the real service:
tests/integration/test_tei_cohere_tokens.py)."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from pydantic import ValidationError

from deployments.errors import InvalidRequest, NotFound, TooLarge, Unavailable
from deployments.families import QWEN3_QUERY_TEMPLATE, TASK_INSTRUCTIONS
from deployments.spec import ModelSpec
from serve_app.config import Limits
from serve_app.ingress.app import create_app
from serve_app.ingress.dispatch import Dispatcher
from serve_app.ingress.encoding import embeddings_response
from serve_app.ingress.endpoints.cohere_embed import cohere_values, content_item
from serve_app.ingress.endpoints.tei import default_models, tei_error_type
from serve_app.ingress.endpoints.tokenize import is_tei_body
from serve_app.policy import cohere_task, plan_embedding, token_id_inputs
from serve_app.schemas import (
    CohereEmbedRequest,
    CohereInput,
    EmbeddingRequest,
    TeiDecodeRequest,
    TeiEmbedRequest,
    TeiRerankRequest,
)

QWEN = ModelSpec(
    name="qwen3",
    family="qwen3-embedding",
    source="x",
    dimensions=1024,
    instruction_aware=True,
    tasks=["retrieval.query", "retrieval.passage", "classification"],
)
MINILM = ModelSpec(name="minilm", family="encoder", source="x", dimensions=384, pooling="mean")
BGE = ModelSpec(name="bge-m3", family="bge-m3", source="x", dimensions=1024)
RERANK = ModelSpec(name="reranker", family="cross-encoder", source="x")
VL = ModelSpec(name="vl", family="qwen3-vl-embedding", source="x", dimensions=64, instruction_aware=True)
REMOTE = ModelSpec(name="remote", family="openai-compatible", source="http://h/v1#m", dimensions=8)
LIMITS = Limits(max_inputs_per_request=4, max_chars_per_input=50)


def _ids_plan(spec, value, **kw):
    return plan_embedding(spec, EmbeddingRequest(model=spec.name, input=value, **kw), LIMITS)


# ---- token ids on /v1/embeddings ---------------------------------------------------------------------------
def test_token_id_input_shapes():
    assert EmbeddingRequest.model_validate_json('{"model": "m", "input": [1, 2, 3]}').input == [1, 2, 3]
    assert EmbeddingRequest.model_validate_json('{"model": "m", "input": [[1], [2, 3]]}').input == [[1], [2, 3]]
    for bad in ('[1, "a"]', "[true]", "[1.5]", '[[1], "a"]', "[[1, [2]]]"):
        with pytest.raises(ValidationError):
            EmbeddingRequest.model_validate_json(f'{{"model": "m", "input": {bad}}}')
    assert token_id_inputs([1, 2]) == [[1, 2]] and token_id_inputs([[1], [2]]) == [[1], [2]]
    assert token_id_inputs("x") is None and token_id_inputs(["x"]) is None and token_id_inputs([]) is None


def test_token_ids_plan_carries_ids_and_the_instruction_prefix():
    call = _ids_plan(MINILM, [5, 6, 7], truncate=True, truncation_direction="left").call
    assert call.token_ids == [[5, 6, 7]] and call.texts == [] and call.token_prefix is None
    assert call.truncate and call.truncation_direction == "left"
    query = _ids_plan(QWEN, [[5], [6, 7]], task="retrieval.query", dimensions=64).call
    assert query.token_prefix == QWEN3_QUERY_TEMPLATE.format(instruction=TASK_INSTRUCTIONS["retrieval.query"], text="")
    assert query.dimensions == 64 and query.token_ids == [[5], [6, 7]]
    sparse = _ids_plan(BGE, [1, 2], output=["dense", "sparse"]).call
    assert sparse.outputs == ("dense", "sparse")


@pytest.mark.parametrize(
    "spec,value,kw,error,needle",
    [
        (VL, [1, 2], {}, InvalidRequest, "chat template"),
        (REMOTE, [[1, 2]], {}, InvalidRequest, "remote API"),
        (MINILM, [[1], []], {}, InvalidRequest, "input[1] is empty"),
        (MINILM, [[1]] * 5, {}, TooLarge, "limit is 4"),
        (MINILM, [[1] * 51], {}, TooLarge, "51 token ids"),
        (MINILM, [1], {"task": "retrieval.query"}, InvalidRequest, "does not support task"),
        (MINILM, [1], {"late_chunking": True}, InvalidRequest, "not token ids"),
        (MINILM, [1], {"dimensions": 7}, InvalidRequest, "384"),
        (RERANK, [1], {}, InvalidRequest, "/v1/rerank"),
    ],
)
def test_token_ids_refusals(spec, value, kw, error, needle):
    with pytest.raises(error) as err:
        _ids_plan(spec, value, **kw)
    assert needle in err.value.message


# ---- TEI -----------------------------------------------------------------------------------------------------
def test_tei_shapes():
    body = TeiEmbedRequest.model_validate_json(
        '{"inputs": ["a", "b"], "truncate": true, "truncation_direction": "Left", "normalize": false, "x": 1}'
    )
    assert body.inputs == ["a", "b"] and body.truncate and body.truncation_direction == "Left" and not body.normalize
    assert TeiEmbedRequest.model_validate_json('{"inputs": [[1, 2], [3]]}').inputs == [[1, 2], [3]]
    with pytest.raises(ValidationError):
        TeiEmbedRequest.model_validate_json('{"inputs": "a", "truncation_direction": "up"}')
    rerank = TeiRerankRequest.model_validate_json('{"query": "q", "texts": ["a"], "return_text": true}')
    assert rerank.return_text and not rerank.raw_scores
    assert TeiDecodeRequest.model_validate_json('{"ids": [1, 2]}').skip_special_tokens
    assert is_tei_body({"inputs": "x"}) and not is_tei_body({"model": "m", "input": "x"})
    assert not is_tei_body({"inputs": "x", "model": "m"}) and not is_tei_body(["inputs"])


def test_default_models_follow_the_config_order():
    specs = {s.name: s for s in (RERANK, VL, MINILM, BGE, QWEN)}
    d = default_models(specs)
    assert d[""] == d["info"] == "reranker"  # TEI's one served model: the first of the config
    assert d["embed"] == d["embed_all"] == "vl"  # the first embedding model
    assert d["embed_sparse"] == "bge-m3" and d["rerank"] == "reranker"
    assert d["tokenize"] == d["decode"] == "minilm"  # the first text model with a local tokenizer
    only_embedders = default_models({s.name: s for s in (MINILM, QWEN)})
    assert only_embedders["rerank"] == only_embedders["embed_sparse"] == "minilm"


@pytest.mark.parametrize(
    "error,kind",
    [
        (InvalidRequest("x", code="empty_input"), "Empty"),
        (InvalidRequest("x"), "Validation"),
        (TooLarge("x"), "Validation"),
        (NotFound("x"), "Validation"),
        (Unavailable("x"), "Overloaded"),
    ],
)
def test_tei_error_types(error, kind):
    from serve_app.ingress.errors import status_of

    assert tei_error_type(status_of(error)[0], error.code) == kind
    assert tei_error_type(500, None) == tei_error_type(504, None) == "Backend"


def test_every_route_is_known_to_metrics_and_fast_path():
    """/tei/<model>/... paths are concrete (models x routes), so metrics label them and the fast path takes them."""
    specs = {s.name: s for s in (MINILM, RERANK, BGE)}
    app = create_app(Dispatcher(specs, {}, 10.0), Limits(), [], False)
    middleware = app.user_middleware[0].kwargs
    routes, fast = set(middleware["routes"]), middleware["fast_routes"]
    for name in specs:
        for suffix in ("", "/", "/embed", "/embed_sparse", "/embed_all", "/rerank", "/tokenize", "/decode"):
            assert f"/tei/{name}{suffix}" in fast and f"/tei/{name}{suffix}" in routes
        assert f"/tei/{name}/info" in routes
    for path in ("/", "/embed", "/embed_sparse", "/embed_all", "/rerank", "/decode", "/v2/embed", "/tokenize"):
        assert path in fast and path in routes
    assert {"/info", "/v1/tokenize", "/v1/embeddings", "/v2/rerank"} <= routes
    assert fast["/tei/reranker"][0] is TeiRerankRequest and fast["/tei/minilm"][0] is TeiEmbedRequest
    schema_paths = set(app.openapi()["paths"])
    assert "/v2/embed" in schema_paths and not any(p.startswith("/tei") or p == "/embed" for p in schema_paths)


# ---- Cohere embed v2 -----------------------------------------------------------------------------------------
def test_cohere_input_types_become_tasks():
    assert cohere_task(QWEN, "search_query") == "retrieval.query"
    assert cohere_task(QWEN, "search_document") is None  # passages carry no instruction
    assert cohere_task(QWEN, "classification") == "classification"
    with pytest.raises(InvalidRequest) as err:
        cohere_task(QWEN, "clustering")
    assert err.value.param == "input_type"
    assert cohere_task(MINILM, "search_query") is None  # no instructions: accepted, nothing added
    assert cohere_task(VL, "image") is None and cohere_task(QWEN, None) is None


def test_cohere_embedding_types_match_our_output_types():
    import orjson

    rng = np.random.default_rng(0)
    v = rng.normal(size=(3, 20)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ours = orjson.loads(embeddings_response(v, "int8", "m", 1))["data"]
    assert cohere_values(v, "int8").tolist() == [d["embedding"] for d in ours]
    assert (cohere_values(v, "uint8").astype(int) - 128).tolist() == cohere_values(v, "int8").tolist()
    for kind in ("binary", "ubinary"):
        ours = orjson.loads(embeddings_response(v, kind, "m", 1))["data"]
        assert cohere_values(v, kind).tolist() == [d["embedding"] for d in ours]
    decoded = [np.frombuffer(base64.b64decode(s), "<f4") for s in cohere_values(v, "base64")]
    np.testing.assert_array_equal(np.stack(decoded), v)


def test_cohere_shapes_and_mixed_inputs():
    body = CohereEmbedRequest.model_validate_json(
        '{"model": "m", "input_type": "image", "embedding_types": ["float", "int8"], "truncate": "START",'
        ' "inputs": [{"content": [{"type": "text", "text": "a cat"},'
        ' {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}'
    )
    item = content_item(0, body.inputs[0])
    assert item.text == "a cat" and item.image == "data:image/png;base64,AAAA"
    two = CohereInput.model_validate(
        {
            "content": [
                {"type": "image_url", "image_url": {"url": "a"}},
                {"type": "image_url", "image_url": {"url": "b"}},
            ]
        }
    )
    with pytest.raises(InvalidRequest):
        content_item(0, two)
    with pytest.raises(InvalidRequest):
        content_item(0, CohereInput.model_validate({"content": []}))
    with pytest.raises(ValidationError):
        CohereEmbedRequest.model_validate_json('{"model": "m", "texts": ["a"], "embedding_types": ["bits"]}')

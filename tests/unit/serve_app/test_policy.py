"""The instruction and limitation policy, table-driven, without Ray."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployments.errors import InvalidRequest, ServiceError, Unavailable
from deployments.families import BGE_M3_LATE_CHUNKING, QWEN3_LATE_CHUNKING, TASK_INSTRUCTIONS
from deployments.spec import ModelSpec
from serve_app.config import Limits
from serve_app.ingress.errors import status_of
from serve_app.policy import (
    fallback_for,
    plan_embedding,
    plan_rerank,
)
from serve_app.schemas import EmbeddingRequest


def qwen3_query(instruction: str, text: str) -> str:
    """Qwen3-Embedding's official query template, written out independently of the registry."""
    return f"Instruct: {instruction}\nQuery:{text}"


QWEN = ModelSpec(
    name="qwen3-embedding-0.6b",
    family="qwen3-embedding",
    source="Qwen/Qwen3-Embedding-0.6B",
    dimensions=1024,
    matryoshka={"min": 32, "max": 1024},
    instruction_aware=True,
    tasks=list(TASK_INSTRUCTIONS),
)
BGE = ModelSpec(name="bge-m3", family="bge-m3", source="BAAI/bge-m3", dimensions=1024)
MINILM = ModelSpec(
    name="all-minilm-l6-v2", family="encoder", source="x", dimensions=384, pooling="mean", late_chunking=True
)
RERANK = ModelSpec(name="bge-reranker-v2-m3", family="cross-encoder", source="BAAI/bge-reranker-v2-m3")
LIMITS = Limits(max_inputs_per_request=4, max_chars_per_input=50)


def plan(spec, **fields):
    fields.setdefault("input", "hello")
    return plan_embedding(spec, EmbeddingRequest(model=spec.name, **fields), LIMITS)


def refused(spec, status=400, **fields) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        plan(spec, **fields)
    assert status_of(info.value)[0] == status, info.value.message
    return info.value


@pytest.mark.parametrize(
    "task,expected",
    [
        ("retrieval.query", "Instruct: " + TASK_INSTRUCTIONS["retrieval.query"] + "\nQuery:hello"),
        ("retrieval.passage", "hello"),
        ("code.passage", "hello"),
        (
            "code.query",
            "Instruct: Given a natural language description, retrieve relevant code snippets or "
            "implementations\nQuery:hello",
        ),
        ("clustering", "Instruct: Represent this text for clustering\nQuery:hello"),
        ("separation", "Instruct: Represent this text for clustering\nQuery:hello"),
        ("bitext", "Instruct: Represent this text for finding its translation in another language\nQuery:hello"),
    ],
)
def test_task_instructions_word_for_word(task, expected):
    assert plan(QWEN, task=task).call.texts == [expected]


def test_seed_instruction_texts_exact():
    assert TASK_INSTRUCTIONS["retrieval.query"] == (
        "Given a search query, retrieve relevant documents or passages that directly answer or address the query"
    )
    assert (
        TASK_INSTRUCTIONS["qa.query"] == "Given a question, retrieve passages that contain the answer to the question"
    )
    assert TASK_INSTRUCTIONS["summarization.query"] == (
        "Given a summary, retrieve the original document that matches this summary"
    )
    assert TASK_INSTRUCTIONS["scientific.query"] == (
        "Given a scientific question, retrieve relevant research papers or scientific information"
    )


def test_custom_prompt_uses_the_official_template():
    out = plan(QWEN, prompt_name="Represent this legal document for contract analysis", input=["a", "b"])
    assert out.call.texts == [qwen3_query("Represent this legal document for contract analysis", t) for t in "ab"]
    assert out.call.texts[0] == "Instruct: Represent this legal document for contract analysis\nQuery:a"


def test_prompt_name_that_names_a_task_means_the_task():
    assert plan(QWEN, prompt_name="qa.query").call.texts == plan(QWEN, task="qa.query").call.texts


@pytest.mark.parametrize(
    "spec,fields,status,needle",
    [
        (BGE, {"task": "retrieval.query"}, 400, "Model bge-m3 does not support task instructions"),
        (MINILM, {"prompt_name": "anything"}, 400, "takes no `task` or `prompt_name`"),
        (QWEN, {"task": "no-such-task"}, 400, "Unknown task 'no-such-task'"),
        (QWEN, {"task": "qa.query", "prompt_name": "x"}, 400, "not both"),
        (QWEN, {"dimensions": 16}, 400, "between 32 and 1024"),
        (QWEN, {"dimensions": 2048}, 400, "between 32 and 1024"),
        (BGE, {"dimensions": 512}, 400, "1024 (the model has no matryoshka training)"),
        (QWEN, {"input": []}, 400, "must not be empty"),
        (QWEN, {"input": ["ok", "  "]}, 400, "input[1] is empty"),
        (QWEN, {"input": ["x"] * 5}, 413, "limit is 4"),
        (QWEN, {"input": ["y" * 51]}, 413, "input[0] has 51 characters"),
        (RERANK, {}, 400, "use /v1/rerank"),
        (MINILM, {"late_chunking": True, "task": "qa.query"}, 400, "does not support task instructions"),
    ],
)
def test_refusals(spec, fields, status, needle):
    err = refused(spec, status=status, **fields)
    assert needle in err.message
    assert err.param


def test_late_chunking_messages_word_for_word():
    assert refused(BGE, late_chunking=True).message == (
        "Model bge-m3 does not support late_chunking. BGE-M3's architecture causes embedding space collapse when "
        "late chunking is applied. Use jina-embeddings-v4 or voyage-context-3 for contextual embeddings."
    )
    assert refused(BGE, late_chunking=True).message == BGE_M3_LATE_CHUNKING.format(model="bge-m3")
    assert refused(QWEN, late_chunking=True).message == (
        "late_chunking is not supported for qwen3-embedding-0.6b. Qwen3 models use last-token pooling, which is "
        "incompatible with late chunking. Use jina-embeddings-v3 or jina-embeddings-v4 for late chunking support."
    )
    assert QWEN3_LATE_CHUNKING.count("{model}") == 1


def test_refusal_text_follows_the_family_not_the_served_name():
    renamed = ModelSpec(name="my-m3", family="bge-m3", source="/models/m3-finetune", dimensions=1024)
    assert refused(renamed, late_chunking=True).message == BGE_M3_LATE_CHUNKING.format(model="my-m3")
    named_like_m3 = ModelSpec(name="bge-m3-lookalike", family="encoder", source="x", dimensions=8, pooling="cls")
    assert "BGE-M3" not in refused(named_like_m3, late_chunking=True).message


def test_a_declared_qwen3_embedding_gets_the_family_recipe():
    """family + source only: tasks, instructions and matryoshka as the catalog's Qwen3-Embedding models."""
    mine = ModelSpec(name="my-qwen", family="qwen3-embedding", source="/models/ft", dimensions=1024)
    assert mine.instruction_aware and set(mine.tasks) == set(TASK_INSTRUCTIONS)
    assert mine.dimension_range() == (32, 1024)
    out = plan(mine, task="retrieval.query", input="hello", dimensions=64)
    assert out.call.texts == [qwen3_query(TASK_INSTRUCTIONS["retrieval.query"], "hello")]
    assert out.call.dimensions == 64


def test_late_chunking_allowed_for_mean_pooling():
    assert plan(MINILM, late_chunking=True, input=["a", "b"]).call.late_chunking


def test_dimensions_and_defaults():
    assert plan(QWEN, dimensions=256).call.dimensions == 256
    assert plan(QWEN, dimensions=1024).call.dimensions is None  # native size: nothing to cut
    assert plan(QWEN).call.dimensions is None
    with_default = QWEN.model_copy(update={"default_dimensions": 512})
    assert plan(with_default).call.dimensions == 512
    assert plan(with_default, dimensions=64).call.dimensions == 64


def test_output_options_pass_through():
    out = plan(QWEN, encoding_format="base64", normalized=False, truncate=True, truncation_direction="left")
    assert out.output_type == "base64"
    assert (out.call.normalize, out.call.truncate, out.call.truncation_direction) == (False, True, "left")
    assert plan(QWEN, encoding_format="base64", embedding_type="int8").output_type == "int8"


# ---- rerank -------------------------------------------------------------------------------------
QWEN_RERANK = ModelSpec(
    name="qwen3-reranker-0.6b", family="qwen3-reranker", source="x", instruction_aware=True, max_tokens=8192
)


def rerank_plan(spec, **kw):
    kw.setdefault("query", "q")
    kw.setdefault("documents", ["a", "b", "c"])
    kw.setdefault("top_n", None)
    return plan_rerank(spec, limits=LIMITS, **kw)


def test_rerank_plans():
    p = rerank_plan(RERANK, top_n=10)
    assert p.top_n == 3 and p.rerank is not None and p.embed is None
    p = rerank_plan(QWEN_RERANK, instruction="Find code", max_tokens_per_doc=7)
    assert (p.rerank.instruction, p.rerank.max_tokens_per_doc) == ("Find code", 7)
    p = rerank_plan(QWEN, query="hello", documents=["d1", "d2"])  # an embedding model: cosine
    assert p.embed.texts == [qwen3_query(TASK_INSTRUCTIONS["retrieval.query"], "hello"), "d1", "d2"]
    assert p.embed.truncate
    assert rerank_plan(MINILM, query="hello").embed.texts[0] == "hello"


@pytest.mark.parametrize(
    "spec,kw,status,needle",
    [
        (RERANK, {"documents": []}, 400, "must not be empty"),
        (RERANK, {"documents": ["a", ""]}, 400, "documents[1] is empty"),
        (RERANK, {"query": " "}, 400, "query"),
        (RERANK, {"top_n": 0}, 400, "top_n"),
        (RERANK, {"instruction": "x"}, 400, "does not take an instruction"),
        (RERANK, {"max_tokens_per_doc": 0}, 400, "max_tokens_per_doc"),
        (MINILM, {"raw_scores": True}, 400, "cosine"),
        (MINILM, {"instruction": "x"}, 400, "does not take an instruction"),
        (RERANK, {"documents": ["d"] * 1001}, 413, "max_documents_per_request"),
        (RERANK, {"documents": ["y" * 51]}, 413, "characters"),
    ],
)
def test_rerank_refusals(spec, kw, status, needle):
    with pytest.raises(ServiceError) as info:
        rerank_plan(spec, **kw)
    assert status_of(info.value)[0] == status and needle in info.value.message


@settings(max_examples=200, database=None)
@given(dims=st.integers(-10, 3000))
def test_dimensions_property(dims):
    """A requested size is accepted exactly when it is inside the model's matryoshka range."""
    try:
        out = plan(QWEN, dimensions=dims).call.dimensions
    except ServiceError as err:
        assert not 32 <= dims <= 1024 and status_of(err)[0] == 400 and err.param == "dimensions"
    else:
        assert 32 <= dims <= 1024 and out == (None if dims == 1024 else dims)


@settings(max_examples=200, database=None)
@given(texts=st.lists(st.text(max_size=60), max_size=6), task=st.sampled_from([None, *TASK_INSTRUCTIONS]))
def test_instruction_property(texts, task):
    """Accepted inputs keep their order and count; queries get the template, passages stay verbatim."""
    try:
        out = plan(QWEN, input=texts, task=task)
    except ServiceError as err:
        assert status_of(err)[0] in (400, 413)
        assert not texts or len(texts) > 4 or any(not t.strip() or len(t) > 50 for t in texts)
        return
    instruction = TASK_INSTRUCTIONS.get(task) if task else None
    expected = [qwen3_query(instruction, t) if instruction else t for t in texts]
    assert out.call.texts == expected


# ---- multimodal and fallback ----------------------------------------------------------------------
VL = ModelSpec(
    name="qwen3-vl-embedding-8b",
    family="qwen3-vl-embedding",
    source="x",
    dimensions=4096,
    matryoshka={"min": 64, "max": 4096},
    instruction_aware=True,
    tasks=list(TASK_INSTRUCTIONS),
    modalities=["text", "image", "video"],
    fallback="qwen3-embedding-8b",
)
QWEN8 = QWEN.model_copy(update={"name": "qwen3-embedding-8b", "dimensions": 4096, "matryoshka": None})


def test_vl_plan_keeps_media_and_puts_instruction_in_system():
    out = plan(VL, input=["a", {"image": "data:image/png;base64,AAAA", "text": "b"}], task="qa.query")
    assert out.call.items == [{"text": "a"}, {"image": "data:image/png;base64,AAAA", "text": "b"}]
    assert out.call.instruction == TASK_INSTRUCTIONS["qa.query"] and out.call.texts == ["a", "b"]
    assert plan(VL, input=[{"video": ["f1", "f2"]}]).call.items == [{"video": ["f1", "f2"]}]


def test_fallback_only_for_server_failures_of_text_only_requests():
    specs = {"qwen3-vl-embedding-8b": VL, "qwen3-embedding-8b": QWEN8}
    down = Unavailable("replica died")
    text = plan(VL, input=["hello", {"text": "world", "instruction": "Find it"}], task="qa.query").call
    chosen = fallback_for(VL, specs, text, down)
    assert chosen is not None and chosen[0].name == "qwen3-embedding-8b"
    assert chosen[1].texts == [qwen3_query(TASK_INSTRUCTIONS["qa.query"], "hello"), qwen3_query("Find it", "world")]
    assert fallback_for(VL, specs, text, InvalidRequest("bad input")) is None
    media = plan(VL, input=[{"image": "data:image/png;base64,AAAA"}]).call
    assert fallback_for(VL, specs, media, down) is None
    assert fallback_for(VL.model_copy(update={"fallback": None}), specs, text, down) is None


def test_media_refused_for_text_models():
    err = refused(MINILM, input=[{"text": "x", "image": "data:image/png;base64,AAAA"}])
    assert err.param == "input[0].image" and "takes text only" in err.message


def test_remote_instruction_aware_model_gets_the_qwen3_template():
    remote = ModelSpec(
        name="remote-qwen",
        family="openai-compatible",
        source="https://example.invalid/v1#qwen/qwen3-embedding-8b",
        instruction_aware=True,
        tasks=["retrieval.query", "retrieval.passage"],
    )
    assert plan(remote, task="retrieval.query").call.texts == [
        qwen3_query(TASK_INSTRUCTIONS["retrieval.query"], "hello")
    ]
    assert (
        refused(remote.model_copy(update={"instruction_aware": False}), task="retrieval.query").code
        == "unsupported_parameter"
    )


def test_jina_v3_task_picks_its_adapter_and_custom_instructions_are_refused():
    from deployments.errors import InvalidRequest
    from serve_app.catalog import load_catalog, resolve_models
    from serve_app.config import AppArgs, Limits
    from serve_app.policy import plan_embedding
    from serve_app.schemas import EmbeddingRequest

    (spec,) = resolve_models(
        AppArgs.model_validate({"models": [{"name": "jina-embeddings-v3"}]}).models, load_catalog()
    )
    assert spec.recipe.instruction_style == "task-adapter"

    def plan(**fields):
        return plan_embedding(spec, EmbeddingRequest(model=spec.name, input=["a b"], **fields), Limits()).call

    assert plan(task="retrieval.query").task == "retrieval.query"
    assert plan(prompt_name="text-matching").task == "text-matching"
    call = plan(task="separation", late_chunking=True)
    assert call.task == "separation" and call.late_chunking and call.texts == ["a b"]  # texts are not rewritten
    assert plan().task is None  # the model card: no task, no adapter
    with pytest.raises(InvalidRequest) as custom:
        plan(prompt_name="Represent this for search:")
    assert custom.value.param == "prompt_name" and "Custom instructions are not supported" in str(custom.value)
    with pytest.raises(InvalidRequest):
        plan(task="code.query")


@pytest.mark.parametrize("name", ["jina-embeddings-v3", "jina-embeddings-v4"])
def test_adapter_models_rerank_queries_as_queries_and_documents_as_passages(name):
    from serve_app.catalog import load_catalog, resolve_models
    from serve_app.config import AppArgs
    from serve_app.policy import plan_rerank

    (spec,) = resolve_models(AppArgs.model_validate({"models": [{"name": name}]}).models, load_catalog())
    plan = plan_rerank(spec, query="what is ray", documents=["a", "b"], top_n=None, limits=Limits())
    assert plan.query_embed.texts == ["what is ray"] and plan.query_embed.task == "retrieval.query"
    assert plan.embed.texts == ["a", "b"] and plan.embed.task == "retrieval.passage"
    assert plan.top_n == 2 and plan.rerank is None
    # encoders without adapters still embed query and documents in one call
    (minilm,) = resolve_models(
        AppArgs.model_validate({"models": [{"name": "all-minilm-l6-v2"}]}).models, load_catalog()
    )
    plain = plan_rerank(minilm, query="q", documents=["a"], top_n=None, limits=Limits())
    assert plain.query_embed is None and plain.embed.texts == ["q", "a"] and plain.embed.task is None

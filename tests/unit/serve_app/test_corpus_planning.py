"""Corpus job planning without Ray or a model: each row judged as the API judges a one-input request, the
good rows planned as one request (instructions exactly the API's), job-level refusals up front."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deployments.families import QWEN3_QUERY_TEMPLATE, TASK_INSTRUCTIONS
from serve_app.config import Limits
from serve_app.corpus.job import CorpusJob, fingerprint
from serve_app.corpus.planning import JobError, check_job, embedding_request, plan_rows, resolve_spec, row_input
from serve_app.policy import plan_embedding

QWEN = {"name": "q", "family": "qwen3-embedding", "source": "/nonexistent/q", "dimensions": 64, "max_tokens": 512}


def job(**kw) -> CorpusJob:
    base = {"input": "in.parquet", "output": "out", "model": {"name": "all-minilm-l6-v2"}}
    return CorpusJob.model_validate({**base, **kw})


def test_bad_rows_get_the_apis_verdict_and_good_rows_keep_their_order():
    j = job(max_chars_per_input=50)
    spec = resolve_spec(j)
    texts = ["first", "", None, "   ", "x" * 51, 7, "bad \udcff surrogate", "last ünïcödé 🌍"]
    good, call, bad = plan_rows(j, spec, texts, None, skip={})
    assert good == [0, 7]
    assert call is not None and call.texts == ["first", "last ünïcödé 🌍"]
    codes = {b.index: b.code for b in bad}
    assert codes == {
        1: "empty_input",
        2: "empty_input",
        3: "empty_input",
        4: "payload_too_large",
        5: "invalid_input",
        6: "invalid_input",
    }
    reasons = {b.index: b.reason for b in bad}
    assert reasons[1] == "text is empty."  # the API's words, naming the column instead of input[0]
    assert "51 characters" in reasons[4] and "max_chars_per_input" in reasons[4]
    assert "not text (got int)" in reasons[5]
    assert "surrogate" in reasons[6]


def test_unreadable_rows_are_bad_rows_and_not_planned():
    j = job()
    good, call, bad = plan_rows(j, resolve_spec(j), ["a", "b", "c"], None, skip={1: "not JSON"})
    assert good == [0, 2] and call.texts == ["a", "c"]
    assert [(b.index, b.code, b.reason) for b in bad] == [(1, "unreadable_row", "not JSON")]


def test_instruction_is_the_routers_for_a_qwen3_model():
    j = job(model=QWEN, task="retrieval.query", dimensions=32)
    spec = resolve_spec(j)
    texts = ["what is ray", "wie geht's"]
    _, call, bad = plan_rows(j, spec, texts, None, skip={})
    assert bad == []
    api = plan_embedding(spec, embedding_request(j, spec, texts), Limits()).call
    assert call.texts == api.texts
    assert call.texts[0] == QWEN3_QUERY_TEMPLATE.format(instruction=TASK_INSTRUCTIONS["retrieval.query"], text=texts[0])
    assert (call.dimensions, call.normalize, call.outputs) == (32, True, ("dense",))


def test_custom_prompt_name_and_passage_task():
    spec_job = job(model=QWEN, prompt_name="Find the recipe")
    _, call, _ = plan_rows(spec_job, resolve_spec(spec_job), ["soup"], None, skip={})
    assert call.texts == ["Instruct: Find the recipe\nQuery:soup"]
    passage = job(model=QWEN, task="retrieval.passage")
    _, call, _ = plan_rows(passage, resolve_spec(passage), ["soup"], None, skip={})
    assert call.texts == ["soup"]  # passages carry no instruction


@pytest.mark.parametrize(
    "fields,needle",
    [
        ({"task": "retrieval.query"}, "does not support task instructions"),
        ({"dimensions": 100}, "must be 384"),
        ({"output_kinds": ["sparse"]}, "gives only: dense"),
        ({"image_column": "img"}, "no image input"),
    ],
)
def test_job_level_refusals_come_before_any_work(fields, needle):
    j = job(**fields)
    with pytest.raises(JobError, match=needle):
        check_job(j, resolve_spec(j))


def test_unknown_model_and_wrong_kind_are_refused():
    with pytest.raises(JobError, match="not in the catalog"):
        resolve_spec(job(model={"name": "nope"}))
    reranker = {"name": "r", "family": "cross-encoder", "source": "/nonexistent/r"}
    with pytest.raises(JobError, match="rerank model"):
        resolve_spec(job(model=reranker))


def test_job_shape_refusals():
    with pytest.raises(ValidationError):
        job(embedding_type="base64")  # a JSON transport encoding; parquet stores numbers
    with pytest.raises(ValidationError, match="text column, an image column"):
        job(text_column=None)
    with pytest.raises(ValidationError, match="both an id column and embedded"):
        job(id_columns=["text"])


def test_resources_change_the_actors_not_the_fingerprint():
    plain = job()
    tuned = job(actors=3, num_cpus=2, num_gpus=0.25, torch_threads=2, max_batch_tokens=4096, rows_per_part=2000)
    spec = resolve_spec(tuned)
    assert (spec.deployment.num_cpus, spec.deployment.num_gpus, spec.deployment.torch_threads) == (2, 0.25, 2)
    assert spec.batching.max_batch_tokens == 4096

    def fp(j):
        return fingerprint(j.result_settings(resolve_spec(j).model_dump(mode="json")))

    assert fp(plain) == fp(tuned)
    assert fp(plain) != fp(job(truncate=True))
    assert fp(plain) != fp(job(rows_per_part=10))  # parts are cut differently: their files differ


def test_image_rows_become_content_items():
    j = job(model={"name": "v", "family": "qwen3-vl-embedding", "source": "/nonexistent/v"}, image_column="img")
    assert row_input(j, "a cat", b"\x89PNG") == {"image": "iVBORw==", "text": "a cat"}
    assert row_input(j, None, "https://example.com/cat.png") == {"image": "https://example.com/cat.png"}
    with pytest.raises(TypeError, match="neither text nor an image"):
        row_input(j, None, None)
    spec = resolve_spec(j)
    good, call, bad = plan_rows(j, spec, ["a cat", "", None], [b"\x89PNG", None, None], skip={})
    assert good == [0] and call.items == [{"text": "a cat", "image": "iVBORw=="}]
    assert call.instruction is None
    assert [(b.index, b.code) for b in bad] == [(1, "empty_input"), (2, "invalid_input")]

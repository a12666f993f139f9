"""The corpus actor's compute step with a stand-in engine (no Ray, no model): batches under the model's token
budget, each refused or failing row a bad row of its own, outputs in input order; and the progress line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from deployments.calls import EmbedCall
from deployments.engines.protocol import Capabilities, EmbeddingOutput, InputError
from deployments.engines.tokenization import Tokens
from deployments.spec import BatchingConfig
from serve_app.corpus.embedder import PartEmbedder, embed_call, run_part, window_rows
from serve_app.corpus.job import CorpusJob, PartResult
from serve_app.corpus.output import Layout, finished_parts
from serve_app.corpus.planning import resolve_spec
from serve_app.corpus.progress import Progress, duration
from serve_app.corpus.sources import plan_parts


class WordEngine:
    """One token per word plus two specials; the vector is [tokens, first letter code]; words 'boom' fail the
    forward pass and 'refuse' is refused by prepare (as a real engine refuses bad media)."""

    def __init__(self, max_tokens: int = 8) -> None:
        self.capabilities = Capabilities(max_tokens=max_tokens, dimensions=2)
        self.passes: list[list[int]] = []
        self.prepared_calls = 0

    def prepare(self, inputs, truncate=False, direction="right"):
        self.prepared_calls += 1
        for i, text in enumerate(inputs):
            if "refuse" in text:
                raise InputError("cannot take this one", i)
        out = []
        for text in inputs:
            ids = [ord(w[0]) for w in text.split()]
            full = len(ids) + 2
            if truncate and full > self.capabilities.max_tokens:
                ids = ids[: self.capabilities.max_tokens - 2]
            out.append(Tokens(ids=[0, *ids, 1], full_length=full))
        return out

    def forward(self, items):
        self.passes.append([len(t) for t in items])
        if any(ord("b") in t.ids and len(t) == 3 for t in items):  # the one-word input "boom"
            raise RuntimeError("boom")
        return [EmbeddingOutput(dense=np.array([len(t), t.ids[1]], np.float32)) for t in items]


def job(**kw) -> CorpusJob:
    fields = {"input": "x", "output": "y", "model": {"name": "m", "family": "encoder", "source": "/nonexistent"}}
    return CorpusJob.model_validate({**fields, **kw})


def test_batches_respect_the_budget_and_bad_rows_stay_alone():
    engine = WordEngine(max_tokens=8)
    texts = ["a b c", "refuse me", "d", "boom", "e f g h i j k l m", "n o", "p q r s"]
    call = EmbedCall(texts=list(texts), normalize=False)
    batching = BatchingConfig(max_batch_tokens=10, max_batch_size=2)
    got = embed_call(engine, call, batching, job())
    assert got.kept == [0, 2, 5, 6]
    assert {b.index: b.code for b in got.bad} == {
        1: "invalid_input",
        3: "inference_failed",
        4: "context_length_exceeded",
    }
    assert "cannot take this one" in next(b.reason for b in got.bad if b.index == 1)
    assert "11 tokens, more than the model's limit of 8" in next(b.reason for b in got.bad if b.index == 4)
    assert got.tokens == [5, 3, 4, 6]
    np.testing.assert_array_equal(got.done.vectors[:, 0], [5, 3, 4, 6])  # outputs in input order
    np.testing.assert_array_equal(got.done.vectors[:, 1], [ord("a"), ord("d"), ord("n"), ord("p")])
    for lengths in engine.passes:  # rows x longest <= budget, at most max_batch_size rows (a lone row may exceed)
        assert len(lengths) <= 2 and (len(lengths) == 1 or len(lengths) * max(lengths) <= 10)


def test_truncate_keeps_long_rows_and_dimensions_normalize_apply():
    engine = WordEngine(max_tokens=4)
    call = EmbedCall(texts=["a b c d e f"], truncate=True, dimensions=1, normalize=True)
    got = embed_call(engine, call, BatchingConfig(), job(truncate=True))
    assert got.bad == [] and got.tokens == [4]
    np.testing.assert_allclose(got.done.vectors, [[1.0]])  # cut to 1 dimension, then normalized


def test_a_call_of_only_bad_rows_gives_no_outputs():
    got = embed_call(WordEngine(), EmbedCall(texts=["refuse", "boom"]), BatchingConfig(), job())
    assert got.kept == [] and got.done is None and [b.index for b in got.bad] == [0, 1]


def test_window_defaults_to_several_batches():
    assert window_rows(job(), BatchingConfig(max_batch_size=64)) == 256
    assert window_rows(job(window_rows=10), BatchingConfig()) == 10


def test_progress_line_counts_rows_rate_and_time_left():
    now = [100.0]
    out = io.StringIO()
    p = Progress({0: 100, 1: 100}, parts_done_before=3, parts_total=5, out=out, interval_s=5, clock=lambda: now[0])
    now[0] = 130.0  # Ray's start and the model load: no pace yet
    p.update(PartResult(part=0, rows=50, errors=2))
    assert p.line() == (
        "corpus: 50/200 rows (25.0%) | -- rows/s | time left unknown | 2 bad rows | parts 3/5 (3 done before)"
    )
    now[0] = 132.0
    p.update(PartResult(part=0, rows=50))  # within the interval: counted, not printed
    p.update(PartResult(part=0, rows=0, final=True))
    assert out.getvalue().count("\n") == 1
    assert p.rate() == 25.0  # the pace since the first report: 50 rows in 2 s
    assert p.line() == "corpus: 100/200 rows (50.0%) | 25.0 rows/s | 4s left | 2 bad rows | parts 4/5 (3 done before)"
    assert p.rows_done == 100 and p.finished == {0}
    p.update(PartResult(part=1, rows=60))
    p.update(PartResult(part=1, rows=60))  # a retried part reports again: capped at its size
    p.update(PartResult(part=1, rows=0, final=True, failed="OSError: gone"))
    assert p.rows_done == 200 and p.failed == {1: "OSError: gone"}
    assert p.line().endswith("parts 4/5 (3 done before) | 1 parts failed")


def test_duration_words():
    assert [duration(s) for s in (4.2, 65, 3725)] == ["4s", "1m05s", "1h02m05s"]


def write_jsonl(path, rows: list) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return str(path)


ROWS = [
    {"id": "a", "text": "a b"},
    {"id": "b", "text": ""},
    "not json",
    {"id": "d", "text": "refuse this"},
    {"id": "e", "text": "e f g"},
    {"id": "f", "text": "boom"},
    {"id": "g", "text": "g h i j k l m n o"},
    {"id": "h", "text": "h"},
]


def test_run_part_writes_each_good_row_with_its_own_id_and_each_bad_row_with_its_reason(tmp_path):
    """Windows of 3 rows: bad rows in every window, positions mapped back through planning and the engine."""
    path = write_jsonl(tmp_path / "docs.jsonl", ROWS)
    j = job(
        input=path, output=str(tmp_path / "out"), id_columns=["id"], window_rows=3, rows_per_part=100, normalized=False
    )
    spec = resolve_spec(j)
    layout = Layout(j.output)
    layout.make_dirs()
    (part,) = plan_parts(path, "auto", ["id", "text"], j.rows_per_part)
    reports = list(run_part(WordEngine(max_tokens=8), spec, j, layout, part, "fp"))
    assert [(r.rows, r.errors, r.final) for r in reports] == [(3, 2, False), (3, 2, False), (2, 1, False), (0, 0, True)]
    table = pq.read_table(layout.data(part)).to_pylist()
    assert [(r["id"], r["embedding"][1], r["token_count"]) for r in table] == [
        ("a", ord("a"), 4),
        ("e", ord("e"), 5),
        ("h", ord("h"), 3),
    ]
    bad = [json.loads(line) for line in Path(layout.errors(part)).read_text(encoding="utf-8").splitlines()]
    assert [(b["id"], b["row"], b["code"]) for b in bad] == [
        ("b", 1, "empty_input"),
        (None, 2, "unreadable_row"),
        ("d", 3, "invalid_input"),
        ("f", 5, "inference_failed"),
        ("g", 6, "context_length_exceeded"),
    ]
    marker = finished_parts(layout, [part], "fp")[0]
    assert (marker.rows, marker.embedded, marker.errors, marker.tokens) == (8, 3, 5, 12)


def test_a_part_that_cannot_be_finished_is_reported_and_left_for_the_next_run(tmp_path, monkeypatch):
    import deployments.shell

    path = write_jsonl(tmp_path / "docs.jsonl", ROWS)
    j = job(input=path, output=str(tmp_path / "out"), id_columns=["id"])
    spec = resolve_spec(j)
    layout = Layout(j.output)
    layout.make_dirs()
    (part,) = plan_parts(path, "auto", ["id", "text"], j.rows_per_part)
    monkeypatch.setattr(deployments.shell, "load_engine", lambda spec: WordEngine())
    actor = PartEmbedder(j.model_dump(mode="json"), spec.model_dump(mode="json"), "fp")
    write_jsonl(tmp_path / "docs.jsonl", ROWS[:5])  # the file changed after planning
    out = list(actor({"part": np.array([part.model_dump_json()], dtype=object)}))
    assert len(out) == 1 and bool(out[0]["final"][0]) and "changed since it was planned" in out[0]["failed"][0]
    assert finished_parts(layout, [part], "fp") == {} and not layout.exists(layout.data(part))
    write_jsonl(tmp_path / "docs.jsonl", ROWS)  # back as planned: the same actor finishes it
    out = list(actor({"part": np.array([part.model_dump_json()], dtype=object)}))
    assert [int(o["rows"][0]) for o in out] == [8, 0] and out[-1]["failed"][0] == ""
    assert finished_parts(layout, [part], "fp")[0].embedded == 3

"""Corpus job parts and output without Ray or a model: planning parts from parquet / JSON lines / CSV, reading one
part back, vector columns, and resume (markers that match settings, source file state and rows)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deployments.engines.postprocess import FinishedEmbeddings
from serve_app.corpus.job import CorpusJob, Part
from serve_app.corpus.output import (
    Layout,
    PartWriter,
    check_manifest,
    embedding_columns,
    finished_parts,
    merge_errors,
    remove_stale_parts,
    write_manifest,
)
from serve_app.corpus.planning import BadRow, JobError
from serve_app.corpus.sources import SourceError, plan_parts, read_part

TEXTS = [f"row {i} ünïcödé" for i in range(7)]


def write_inputs(folder) -> dict[str, str]:
    folder.mkdir(exist_ok=True)
    pq.write_table(pa.table({"id": list(range(7)), "text": TEXTS}), folder / "a.parquet", row_group_size=3)
    with open(folder / "b.jsonl", "w", encoding="utf-8") as f:
        for i, t in enumerate(TEXTS):
            f.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")
            if i == 2:
                f.write("\n{broken\n")  # a blank line (skipped) and a line that is not JSON (a bad row)
    with open(folder / "c.csv", "w", encoding="utf-8") as f:
        f.write("id,text\n")
        for i, t in enumerate(TEXTS):
            f.write(f'{i},"{t}\nsecond line"\n' if i == 4 else f"{i},{t}\n")  # a quoted newline
    return {k: str(folder / n) for k, n in (("parquet", "a.parquet"), ("jsonl", "b.jsonl"), ("csv", "c.csv"))}


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_parts_cover_every_row_once_and_read_back(tmp_path, fmt):
    path = write_inputs(tmp_path / "in")[fmt]
    parts = plan_parts(path, "auto", ["id", "text"], rows_per_part=3)
    rows = 8 if fmt == "jsonl" else 7  # the broken JSON line is a row (a bad one)
    assert [(p.start, p.stop) for p in parts] == [(s, min(s + 3, rows)) for s in range(0, rows, 3)]
    seen_ids, seen_texts, bad = [], [], {}
    for p in parts:
        got = read_part(p, "text", None, ["id"])
        assert got.rows == list(range(p.first_row, p.first_row + p.rows))
        seen_ids += got.ids["id"].to_pylist()
        seen_texts += got.texts
        bad.update({p.start + i: why for i, why in got.unreadable.items()})
    if fmt == "jsonl":
        assert bad.keys() == {3} and "not a JSON object" in bad[3]
        del seen_ids[3], seen_texts[3]
    expected = list(TEXTS)
    if fmt == "csv":
        expected[4] += "\nsecond line"
    assert seen_ids == list(range(7)) and seen_texts == expected


def test_a_folder_is_its_files_in_order_with_job_wide_row_numbers(tmp_path):
    write_inputs(tmp_path / "in")
    (tmp_path / "in" / "_ignored.csv").write_text("id,text\n9,x\n")
    parts = plan_parts(str(tmp_path / "in"), "auto", ["id", "text"], rows_per_part=4)
    assert [os.path.basename(p.file.path) for p in parts] == ["a.parquet"] * 2 + ["b.jsonl"] * 2 + ["c.csv"] * 2
    assert [p.first_row for p in parts] == [0, 4, 7, 11, 15, 19]
    assert [p.index for p in parts] == list(range(6))
    only_csv = plan_parts(str(tmp_path / "in"), "csv", ["id", "text"], rows_per_part=100)
    assert [os.path.basename(p.file.path) for p in only_csv] == ["c.csv"]


def test_missing_columns_and_inputs_are_refused(tmp_path):
    path = write_inputs(tmp_path / "in")
    with pytest.raises(SourceError, match="no column body"):
        plan_parts(path["parquet"], "auto", ["body"], 10)
    with pytest.raises(SourceError, match="no such input"):
        plan_parts(str(tmp_path / "nope"), "auto", ["text"], 10)


def job_for(tmp_path, **kw) -> CorpusJob:
    return CorpusJob(input="x", output=str(tmp_path / "out"), model={"name": "all-minilm-l6-v2"}, **kw)


def finish_part(layout: Layout, part: Part, job: CorpusJob, fp: str) -> None:
    writer = PartWriter(layout, part, job, fp)
    done = FinishedEmbeddings(vectors=np.eye(2, 4, dtype=np.float32))
    writer.add({}, [part.first_row, part.first_row + 1], embedding_columns(done, ("dense",), "float"), [3, 4])
    writer.add_bad({}, part.first_row + 2, BadRow(2, "empty_input", "text is empty."))
    writer.commit(0.5)


def test_resume_finds_complete_parts_only(tmp_path):
    path = write_inputs(tmp_path / "in")["parquet"]
    parts = plan_parts(path, "auto", ["text"], rows_per_part=3)
    job = job_for(tmp_path)
    layout = Layout(job.output)
    write_manifest(layout, job, {}, {}, "fp1", parts)
    assert finished_parts(layout, parts, "fp1") == {}
    finish_part(layout, parts[0], job, "fp1")
    finish_part(layout, parts[2], job, "fp1")
    writer = PartWriter(layout, parts[1], job, "fp1")  # started, never committed: not complete, nothing left
    writer.add({}, [3], embedding_columns(FinishedEmbeddings(np.ones((1, 4), np.float32)), ("dense",), "float"), [2])
    writer.abandon()
    assert sorted(finished_parts(layout, parts, "fp1")) == [0, 2]
    assert not any(n.startswith(".") for n in os.listdir(tmp_path / "out" / "data"))
    assert finished_parts(layout, parts, "other") == {}  # other settings: nothing is complete
    # the source file changed (size / mtime): its parts are redone
    changed = [p.model_copy(update={"file": p.file.model_copy(update={"size": p.file.size + 1})}) for p in parts]
    assert finished_parts(layout, changed, "fp1") == {}
    # rows re-cut: a marker for other rows does not count
    moved = [p.model_copy(update={"stop": p.stop - 1}) for p in parts]
    assert finished_parts(layout, moved, "fp1") == {}

    markers = finished_parts(layout, parts, "fp1")
    assert merge_errors(layout, parts, markers) == 2
    lines = [json.loads(x) for x in Path(layout.errors_file).read_text(encoding="utf-8").splitlines()]
    assert [x["row"] for x in lines] == [2, 8] and {x["code"] for x in lines} == {"empty_input"}
    table = pq.read_table(tmp_path / "out" / "data")
    assert sorted(table.column("row").to_pylist()) == [0, 1, 6, 7]
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 4)


def test_a_part_redone_starts_clean(tmp_path):
    path = write_inputs(tmp_path / "in")["parquet"]
    part = plan_parts(path, "auto", ["text"], rows_per_part=3)[0]
    job = job_for(tmp_path)
    layout = Layout(job.output)
    layout.make_dirs()
    finish_part(layout, part, job, "fp1")
    writer = PartWriter(layout, part, job, "fp1")  # redoing it removes the old marker, data and errors first
    assert not layout.exists(layout.marker(part)) and not layout.exists(layout.data(part))
    assert not layout.exists(layout.errors(part))
    writer.commit(0.1)  # every row bad this time: no data file, no errors file left from before
    assert not layout.exists(layout.data(part))
    assert finished_parts(layout, [part], "fp1")[0].embedded == 0


def test_manifest_with_other_settings_is_refused(tmp_path):
    job = job_for(tmp_path)
    layout = Layout(job.output)
    check_manifest(layout, "fp1")  # nothing there yet
    write_manifest(layout, job, {}, {}, "fp1", [])
    check_manifest(layout, "fp1")
    with pytest.raises(JobError, match="other settings"):
        check_manifest(layout, "fp2")
    layout.clear()
    check_manifest(layout, "fp2")


def test_vector_columns_for_each_output_type_and_bge_m3_outputs():
    vectors = np.array([[0.5, -0.5, 0.25, -0.1, 0.0, 0.3, -0.2, 0.9, 0.1]], np.float32)
    ints = embedding_columns(FinishedEmbeddings(vectors), ("dense",), "int8")["embedding"]
    assert ints.type == pa.list_(pa.int8(), 9) and ints.to_pylist() == [[64, -64, 32, -13, 0, 38, -25, 114, 13]]
    bits = embedding_columns(FinishedEmbeddings(vectors), ("dense",), "ubinary")["embedding"]
    assert bits.type == pa.list_(pa.uint8(), 2) and bits.to_pylist() == [[0b10100101, 0b10000000]]
    done = FinishedEmbeddings(
        vectors=np.empty((2, 0), np.float32),
        sparse=[
            {"indices": np.array([3, 9]), "values": np.array([0.5, 0.25], np.float32), "tokens": ["a", "b"]},
            {"indices": np.array([], np.int64), "values": np.array([], np.float32), "tokens": []},
        ],
        colbert=[np.ones((3, 2), np.float32), np.zeros((0, 2), np.float32)],
    )
    cols = embedding_columns(done, ("sparse", "colbert"), "float")
    assert "embedding" not in cols
    assert cols["sparse"].to_pylist() == [
        {"indices": [3, 9], "values": [0.5, 0.25], "tokens": ["a", "b"]},
        {"indices": [], "values": [], "tokens": []},
    ]
    assert cols["colbert"].type == pa.list_(pa.list_(pa.float32(), 2))
    assert cols["colbert"].to_pylist() == [[[1.0, 1.0]] * 3, []]


def test_parts_past_a_shrunken_plan_are_removed(tmp_path):
    path = write_inputs(tmp_path / "in")["parquet"]
    parts = plan_parts(path, "auto", ["text"], rows_per_part=3)
    job = job_for(tmp_path)
    layout = Layout(job.output)
    layout.make_dirs()
    for part in parts:
        finish_part(layout, part, job, "fp1")
    (tmp_path / "out" / "data" / "notes.txt").write_text("not ours")
    removed = remove_stale_parts(layout, parts[:1])
    assert sorted(removed) == sorted(
        [f"data/{p.name}.parquet" for p in parts[1:]]
        + [f"_done/{p.name}.json" for p in parts[1:]]
        + [f"_errors/{p.name}.jsonl" for p in parts[1:]]
    )
    assert sorted(os.listdir(tmp_path / "out" / "data")) == ["notes.txt", "part-000000.parquet"]
    assert remove_stale_parts(layout, parts[:1]) == []

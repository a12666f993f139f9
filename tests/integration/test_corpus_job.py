"""The corpus job on the session's Ray (Ray Data actors beside the Serve app) gives the API's answers: the same
vectors for the same rows and request fields, bad rows in the errors file, reruns that compute nothing."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serve_app.corpus import CorpusJob, run_corpus_job

pytestmark = pytest.mark.integration

GOOD = [
    "The cat sits on the mat.",
    "Ray Data streams blocks through actor pools.",
    "Grüße aus Köln, schöne Straße!",
    "東京は日本の首都です。",
    "مرحبا بالعالم",
    "Emoji 🌍🚀 and a ZWJ family 👩‍👩‍👧 in one line",
    "Ça va? Très bien, merci.",
    "combining e\u0301 and precomposed é",
    "Привет, как дела?",
    "retrieval augmented generation needs embeddings",
    "a b c d e f g",
    "Tabs\tand\nnewlines inside one text",
]
ROWS = (
    [{"id": f"d{i:02d}", "text": t} for i, t in enumerate(GOOD * 2)]
    + [
        {"id": "bad-empty", "text": ""},
        {"id": "bad-blank", "text": "   "},
        {"id": "bad-long", "text": "word " * 400},  # > 256 tokens: refused without truncate
        {"id": "bad-none", "text": None},
    ]
    + [{"id": f"e{i:02d}", "text": f"closing sentence {i} ✓"} for i in range(4)]
)
BAD = {"bad-empty": "empty_input", "bad-blank": "empty_input", "bad-long": "context_length_exceeded"}
BAD["bad-none"] = "empty_input"


def write_parquet(path: Path) -> str:
    pq.write_table(pa.table({"id": [r["id"] for r in ROWS], "text": [r["text"] for r in ROWS]}), path)
    return str(path)


def write_jsonl(path: Path) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for r in ROWS:
            f.write(json.dumps({k: v for k, v in r.items() if v is not None}, ensure_ascii=False) + "\n")
    return str(path)


def write_csv(path: Path) -> str:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        for r in ROWS:
            w.writerow([r["id"], r["text"] if r["text"] is not None else ""])
    return str(path)


def corpus_job(input_path: str, out: Path, model: dict, **fields) -> CorpusJob:
    base = {"id_columns": ["id"], "rows_per_part": 8, "actors": 1, "num_cpus": 1}
    return CorpusJob.model_validate({"input": input_path, "output": str(out), "model": model, **base, **fields})


def api_embed(base: str, model: str, texts: list[str], **fields) -> tuple[list[dict], int]:
    """The same texts through /v1/embeddings (16 per request): -> data items, prompt tokens."""
    items, tokens = [], 0
    for lo in range(0, len(texts), 16):
        body = {"model": model, "input": texts[lo : lo + 16], **fields}
        r = httpx.post(f"{base}/v1/embeddings", json=body, timeout=60)
        assert r.status_code == 200, r.text
        items += r.json()["data"]
        tokens += r.json()["usage"]["prompt_tokens"]
    return items, tokens


def output_rows(out: Path) -> dict[str, dict]:
    return {row["id"]: row for row in pq.read_table(out / "data").to_pylist()}


def errors(out: Path) -> dict[str, dict]:
    return {e["id"]: e for e in map(json.loads, (out / "errors.jsonl").read_text(encoding="utf-8").splitlines())}


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def file_states(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def minilm_run(serve_app, tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus-minilm")
    progress = io.StringIO()
    job = corpus_job(write_parquet(folder / "docs.parquet"), folder / "out", {"name": "all-minilm-l6-v2"})
    report = run_corpus_job(job, progress=progress, progress_interval_s=0)
    return job, folder / "out", report, progress.getvalue()


def test_minilm_job_gives_the_apis_vectors_and_lists_bad_rows(serve_app, minilm_run):
    _, out, report, progress = minilm_run
    assert report.parts_failed == []
    assert (report.parts_total, report.parts_computed, report.parts_skipped) == (4, 4, 0)
    assert (report.rows_total, report.rows_embedded, report.rows_errored) == (len(ROWS), len(ROWS) - len(BAD), 4)
    rows = output_rows(out)
    good = [r for r in ROWS if r["id"] not in BAD]
    assert sorted(rows) == sorted(r["id"] for r in good)
    items, api_tokens = api_embed(serve_app["base_url"], "all-minilm-l6-v2", [r["text"] for r in good])
    ours = np.array([rows[r["id"]]["embedding"] for r in good])
    assert ours.shape == (len(good), 384)
    assert (cosines(ours, [i["embedding"] for i in items]) >= 0.9999).all()
    assert sum(rows[r["id"]]["token_count"] for r in good) == api_tokens  # the API's token counts, per row
    assert {k: e["code"] for k, e in errors(out).items()} == BAD
    assert "more than the model's limit of 256" in errors(out)["bad-long"]["reason"]
    assert errors(out)["bad-empty"]["row"] == [r["id"] for r in ROWS].index("bad-empty")
    assert "rows/s" in progress and "left" in progress and f"{len(ROWS)}/{len(ROWS)} rows (100.0%)" in progress


def test_rerun_computes_nothing_then_only_the_missing_part(minilm_run):
    job, out, first, _ = minilm_run
    data, done = file_states(out / "data"), file_states(out / "_done")
    assert len(data) == 4 and len(done) == 4
    again = run_corpus_job(job, progress=io.StringIO())
    assert (again.parts_computed, again.parts_skipped, again.rows_this_run) == (0, 4, 0)
    assert again.rows_embedded == first.rows_embedded and again.rows_errored == first.rows_errored
    assert file_states(out / "data") == data and file_states(out / "_done") == done  # not even rewritten

    before = output_rows(out)
    (out / "_done" / "part-000001.json").unlink()  # as if the run had stopped before finishing part 1
    third = run_corpus_job(job, progress=io.StringIO())
    assert (third.parts_computed, third.parts_skipped, third.rows_this_run) == (1, 3, 8)
    after = file_states(out / "data")
    assert {k: v for k, v in after.items() if k != "part-000001.parquet"} == {
        k: v for k, v in data.items() if k != "part-000001.parquet"
    }
    assert after["part-000001.parquet"] != data["part-000001.parquet"]  # written anew
    rows = output_rows(out)
    assert rows.keys() == before.keys()
    for key, row in rows.items():
        np.testing.assert_allclose(row["embedding"], before[key]["embedding"], atol=1e-6)
    assert {k: e["code"] for k, e in errors(out).items()} == BAD


def test_other_settings_into_the_same_output_are_refused(minilm_run):
    from serve_app.corpus.planning import JobError

    job, _, _, _ = minilm_run
    with pytest.raises(JobError, match="other settings"):
        run_corpus_job(job.model_copy(update={"truncate": True}), progress=io.StringIO())


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_csv_and_jsonl_inputs_give_the_same_output(minilm_run, tmp_path, fmt):
    _, parquet_out, _, _ = minilm_run
    path = write_csv(tmp_path / "docs.csv") if fmt == "csv" else write_jsonl(tmp_path / "docs.jsonl")
    report = run_corpus_job(corpus_job(path, tmp_path / "out", {"name": "all-minilm-l6-v2"}), progress=io.StringIO())
    assert report.parts_failed == [] and report.rows_total == len(ROWS)
    want, got = output_rows(parquet_out), output_rows(tmp_path / "out")
    assert got.keys() == want.keys()
    for key, row in got.items():
        np.testing.assert_allclose(row["embedding"], want[key]["embedding"], atol=1e-5)
        assert row["token_count"] == want[key]["token_count"]
    assert {k: e["code"] for k, e in errors(tmp_path / "out").items()} == BAD


def test_qwen3_task_instruction_and_dimensions_match_the_api(
    serve_app, tmp_path, tiny_qwen3, tiny_xlmr, tiny_xlmr_mean, tiny_cross_encoder, tiny_qwen3_reranker
):
    from conftest import tiny_model_entries

    entry = tiny_model_entries(tiny_qwen3, tiny_xlmr, tiny_xlmr_mean, tiny_cross_encoder, tiny_qwen3_reranker)[0]
    assert entry["name"] == "tiny-qwen3-embedding"  # declared exactly as the session's service declares it
    texts = [r["text"] for r in ROWS if r["id"] not in BAD]
    path = write_parquet(tmp_path / "docs.parquet")
    job = corpus_job(path, tmp_path / "out", entry, task="retrieval.query", dimensions=32)
    report = run_corpus_job(job, progress=io.StringIO())
    assert report.parts_failed == [] and report.rows_embedded == len(texts)  # 512 tokens: "bad-long" fits here
    rows = output_rows(tmp_path / "out")
    good = [r for r in ROWS if r["id"] not in BAD]
    ours = np.array([rows[r["id"]]["embedding"] for r in good])
    items, tokens = api_embed(
        serve_app["base_url"], "tiny-qwen3-embedding", texts, task="retrieval.query", dimensions=32
    )
    assert ours.shape == (len(good), 32)
    api = np.array([i["embedding"] for i in items])
    assert (cosines(ours, api) >= 0.9999).all()
    assert np.abs(ours - api).max() < 1e-4
    assert sum(rows[r["id"]]["token_count"] for r in good) == tokens  # the instruction's tokens, as the API counts
    # Without the task the API answers otherwise (random tiny weights move little, but measurably).
    plain, plain_tokens = api_embed(serve_app["base_url"], "tiny-qwen3-embedding", texts, dimensions=32)
    assert plain_tokens < tokens and np.abs(ours - np.array([i["embedding"] for i in plain])).max() > 1e-3


def test_bge_m3_sparse_output_matches_the_api(serve_app, tmp_path, tiny_bge_m3):
    entry = {
        "name": "tiny-bge-m3",
        "family": "encoder",
        "source": str(tiny_bge_m3),
        "outputs": ["dense", "sparse", "colbert"],
    }
    texts = [r["text"] for r in ROWS if r["id"] not in BAD]
    job = corpus_job(
        write_jsonl(tmp_path / "docs.jsonl"),
        tmp_path / "out",
        entry,
        output_kinds=["dense", "sparse"],
        return_sparse_tokens=True,
    )
    report = run_corpus_job(job, progress=io.StringIO())
    assert report.parts_failed == []
    rows = output_rows(tmp_path / "out")
    assert "colbert" not in next(iter(rows.values()))
    good = [r for r in ROWS if r["id"] in rows]
    items, _ = api_embed(
        serve_app["base_url"],
        "tiny-bge-m3",
        [r["text"] for r in good],
        output=["dense", "sparse"],
        return_sparse_tokens=True,
    )
    assert len(good) >= len(texts) - 1  # "bad-long" may fit the tiny model's own limit
    ours = np.array([rows[r["id"]]["embedding"] for r in good])
    assert (cosines(ours, [i["embedding"] for i in items]) >= 0.9999).all()
    for r, item in zip(good, items, strict=True):
        sparse = rows[r["id"]]["sparse"]
        assert sparse["indices"] == item["sparse"]["indices"] and sparse["indices"]
        np.testing.assert_allclose(sparse["values"], item["sparse"]["values"], rtol=1e-4, atol=1e-6)
        assert sparse["tokens"] == item["sparse"]["tokens"]


def test_cli_entrypoint_runs_the_job(tmp_path):
    """`python -m serve_app.corpus` (the `ray job submit` entrypoint) on a local Ray of its own; JSON report out."""
    import subprocess
    import sys

    from helpers.serve_process import kill_session

    path = write_jsonl(tmp_path / "docs.jsonl")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    cmd = [sys.executable, "-m", "serve_app.corpus", path, str(tmp_path / "out"), "-m", "all-minilm-l6-v2"]
    cmd += ["--id-column", "id", "--rows-per-part", "16", "--actors", "1"]
    pipe = subprocess.PIPE
    proc = subprocess.Popen(cmd, stdout=pipe, stderr=pipe, text=True, env=env, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        kill_session(proc)  # whatever of its local Ray is left
    assert proc.returncode == 0, stderr[-3000:]
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["parts_computed"] == 2 and report["rows_errored"] == 4
    assert "rows/s" in stderr


def test_qwen3_vl_image_column_matches_the_api(serve_app, tmp_path, tiny_vl):
    """Image rows (PNG bytes in the column) with an optional caption, through a Qwen3-VL embedding model declared
    as the session's service declares it, equal the API's answers for the same images as data URIs; an
    undecodable image is a bad row."""
    import base64

    from conftest import tiny_vl_entries
    from helpers.media_samples import picture, png_uri

    entry = tiny_vl_entries(tiny_vl)[0]
    uris = [png_uri(picture(48 + 8 * i, 64, seed=i)) for i in range(3)]
    captions = ["a wave pattern", None, "ünïcödé caption 🌊"]
    table = pa.table(
        {
            "id": ["img0", "img1", "img2", "broken"],
            "image": [*(base64.b64decode(u.split(",", 1)[1]) for u in uris), b"not an image at all"],
            "caption": [*captions, "x"],
        }
    )
    pq.write_table(table, tmp_path / "imgs.parquet")
    fields = {"task": "retrieval.passage", "dimensions": 32}
    job = corpus_job(
        str(tmp_path / "imgs.parquet"), tmp_path / "out", entry, image_column="image", text_column="caption", **fields
    )
    report = run_corpus_job(job, progress=io.StringIO())
    assert report.parts_failed == [] and report.rows_embedded == 3
    assert errors(tmp_path / "out")["broken"]["code"] == "invalid_media"
    inputs = [{"image": u, **({"text": c} if c is not None else {})} for u, c in zip(uris, captions, strict=True)]
    r = httpx.post(
        f"{serve_app['base_url']}/v1/embeddings",
        json={"model": entry["name"], "input": inputs, **fields},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    api = np.array([d["embedding"] for d in r.json()["data"]])
    rows = output_rows(tmp_path / "out")
    ours = np.array([rows[f"img{i}"]["embedding"] for i in range(3)])
    assert ours.shape == (3, 32)
    assert (cosines(ours, api) >= 0.9999).all()

"""serve_app.cli_commands: models / embed / rerank / bench / wait against the session app (the /ready progress
display against a scripted server and `serve --wait` are in tests/unit/serve_app/test_cli_commands.py)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from serve_app import cli_commands
from serve_app.cli_commands import main, run_bench
from serve_app.client import EmbedServeClient

pytestmark = pytest.mark.integration

TEXTS = ["The cat sits on the mat.", "Ray Serve scales Python services.", "Bonjour le monde"]
DOCS = ["Paris is the capital of France.", "The weather is nice today.", "Berlin is the capital of Germany."]


# ---- against the session app ----------------------------------------------------------------------------------
def test_models_table_and_json(serve_app, capsys):
    url = serve_app["base_url"]
    assert main(["models", "--url", url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["MODEL", "KIND", "FAMILY"]
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert rows["all-minilm-l6-v2"][1:4] == ["embedding", "encoder", "384"]
    assert rows["tiny-cross-encoder"][1] == "rerank"
    assert main(["models", "--url", url, "--json"]) == 0
    assert "tiny-qwen3-reranker" in {m["id"] for m in json.loads(capsys.readouterr().out)}


def test_embed_command(serve_app, capsys, tmp_path):
    url = serve_app["base_url"]
    expected = EmbedServeClient(url).embed("all-minilm-l6-v2", TEXTS).vectors

    assert main(["embed", "--url", url, "-m", "all-minilm-l6-v2", *TEXTS]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2] and [line["text"] for line in lines] == TEXTS
    np.testing.assert_allclose(np.array([line["embedding"] for line in lines]), expected, atol=1e-6)
    assert "3 embeddings x 384 dims from all-minilm-l6-v2" in captured.err

    src = tmp_path / "texts.txt"
    src.write_text("\n".join(TEXTS) + "\n\n")
    out = tmp_path / "vectors.npy"
    args = ["embed", "--url", url, "-m", "all-minilm-l6-v2", "-f", str(src), "-o", str(out), "--chunk-size", "2"]
    assert main(args) == 0
    assert "2 requests" in capsys.readouterr().err
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)

    args = ["embed", "--url", url, "-m", "tiny-qwen3-embedding", "--dimensions", "16", "--task", "retrieval.query"]
    assert main([*args, "--no-text", "hello"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert set(line) == {"index", "embedding"} and len(line["embedding"]) == 16

    assert main(["embed", "--url", url, "-m", "no-such-model", "x"]) == 1
    assert "error: HTTP 404" in capsys.readouterr().err
    assert main(["embed", "--url", url, "-m", "all-minilm-l6-v2"]) == 2


def test_rerank_command(serve_app, capsys):
    url = serve_app["base_url"]
    expected = EmbedServeClient(url).rerank("tiny-cross-encoder", "capital of france", DOCS)
    assert main(["rerank", "--url", url, "-m", "tiny-cross-encoder", "-q", "capital of france", *DOCS]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [int(line.split()[2].strip("[]")) for line in lines] == expected.indices
    assert lines[0].split()[0] == "1" and DOCS[expected.indices[0]] in lines[0]

    args = ["rerank", "--url", url, "-m", "tiny-qwen3-reranker", "-q", "capital of france", "-n", "2", "--json"]
    assert main([*args, *DOCS]) == 0
    body = json.loads(capsys.readouterr().out)
    assert len(body["results"]) == 2 and body["model"] == "tiny-qwen3-reranker" and body["usage"] > 0


def test_bench_command(serve_app, capsys):
    url = serve_app["base_url"]
    assert main(["bench", "--url", url, "-m", "tiny-xlmr", "-n", "12", "-c", "3", "-b", "2", "-d", "60", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["requests"] == 12 and report["errors"] == {} and report["kind"] == "embedding"
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["max"] and report["tokens_per_s"] > 0

    assert main(["bench", "--url", url, "-m", "tiny-cross-encoder", "-n", "4", "-b", "3", "-c", "2"]) == 0
    text = capsys.readouterr().out
    assert "tiny-cross-encoder (rerank)" in text and "4 requests of 3" in text and "latency ms  p50" in text

    start = time.monotonic()  # the time bound wins over the count
    report = run_bench(url, "tiny-xlmr", requests=100_000, duration_s=1.0, concurrency=2)
    assert time.monotonic() - start < 30 and 0 < report["requests"] < 100_000

    assert main(["bench", "--url", url, "-m", "no-such-model", "-n", "1"]) == 1
    assert "not served" in capsys.readouterr().err


def test_wait_against_the_service(serve_app, capsys):
    assert main(["wait", "--url", serve_app["base_url"], "--wait-timeout", "60"]) == 0
    out = capsys.readouterr().out
    assert "all-minilm-l6-v2: ready" in out and "models ready" in out
    assert cli_commands.DEFAULT_URL == "http://127.0.0.1:8000"

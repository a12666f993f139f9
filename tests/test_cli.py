"""serve_app.cli_commands: models / embed / rerank / bench / wait against the session app, the /ready progress
display against a scripted server, and `serve --wait`."""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from serve_app import cli_commands
from serve_app.cli_commands import main, register, run_bench, url_from_serve_config, wait_with_progress
from serve_app.client import EmbedServeClient

TEXTS = ["The cat sits on the mat.", "Ray Serve scales Python services.", "Bonjour le monde"]
DOCS = ["Paris is the capital of France.", "The weather is nice today.", "Berlin is the capital of Germany."]


# ---- no service needed -------------------------------------------------------------------------------------
class ReadyScript(BaseHTTPRequestHandler):
    """/ready answers from a script: None -> 404 (app not deployed yet), else the body (503 until all ready)."""

    steps: list = []  # noqa: RUF012
    polls = 0

    def do_GET(self):
        cls = type(self)
        cls.polls += 1
        step = cls.steps.pop(0) if len(cls.steps) > 1 else cls.steps[0]
        if step is None:
            self._send(404, {"error": {"message": "not found"}})
            return
        ready = all(v == "ready" for v in step.values())
        self._send(200 if ready else 503, {"status": "ready" if ready else "not_ready", "models": step})

    def _send(self, status, payload):
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def ready_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), ReadyScript)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _script(steps):
    ReadyScript.steps = list(steps)
    ReadyScript.polls = 0


LOADING = [
    None,
    {"a": "unavailable: DeploymentUnavailableError", "b": "unavailable: DeploymentUnavailableError"},
    {"a": "unavailable: DeploymentUnavailableError", "b": "unavailable: DeploymentUnavailableError"},
    {"a": "ready", "b": "unavailable: DeploymentUnavailableError"},
    {"a": "ready", "b": "ready"},
]


def test_wait_with_progress_prints_each_change(ready_server, capsys):
    _script(LOADING)
    assert wait_with_progress(ready_server, timeout=20, interval=0.01) is True
    lines = capsys.readouterr().out.splitlines()
    body = [line.split("] ", 1)[1] for line in lines[1:]]
    assert lines[0].startswith("waiting up to 20 s for the models at http://127.0.0.1:")
    assert body == [
        f"waiting for {ready_server}/ready to answer",
        "server answering /ready",
        "a: unavailable: DeploymentUnavailableError (0/2 ready)",
        "b: unavailable: DeploymentUnavailableError (0/2 ready)",
        "a: ready (1/2 ready)",
        "b: ready (2/2 ready)",
        "all 2 models ready",
    ]
    assert ReadyScript.polls == 5


def test_wait_with_progress_times_out(ready_server, capsys):
    _script([{"a": "ready", "b": "unavailable: ActorDiedError"}])
    start = time.monotonic()
    assert wait_with_progress(ready_server, timeout=0.5, interval=0.05) is False
    assert time.monotonic() - start < 5
    assert "not ready after 0.5 s: b" in capsys.readouterr().out
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert main(["wait", "--url", f"http://127.0.0.1:{closed}", "--wait-timeout", "0.3"]) == 1
    assert "the server did not answer" in capsys.readouterr().out


def test_serve_wait_wraps_the_serve_command(ready_server, tmp_path, capsys):
    _script([{"a": "ready"}])
    called = []
    parser = argparse.ArgumentParser(prog="embedserve")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve")
    p.add_argument("config", nargs="?", default="configs/local.yaml")
    p.set_defaults(func=lambda args: called.append(args.config) or 0)
    register(sub)
    assert {"models", "embed", "rerank", "bench", "wait", "serve"} <= set(sub.choices)

    args = parser.parse_args(["serve", "my.yaml", "--wait", "--wait-url", ready_server, "--wait-timeout", "20"])
    assert args.func(args) == 0 and called == ["my.yaml"]
    waiter = next(t for t in threading.enumerate() if t.name == "embedserve-wait")
    waiter.join(timeout=30)
    assert "a: ready (1/1 ready)" in capsys.readouterr().err

    args = parser.parse_args(["serve"])  # no --wait: no thread, same command
    assert args.func(args) == 0 and called[-1] == "configs/local.yaml"

    config = tmp_path / "c.yaml"
    config.write_text("http_options: {host: 0.0.0.0, port: 8123}\napplications:\n  - route_prefix: /emb/\n")
    assert url_from_serve_config(str(config)) == "http://127.0.0.1:8123/emb"
    assert url_from_serve_config("configs/local.yaml") == "http://127.0.0.1:8000"


def test_bench_bounds_are_checked(capsys):
    assert main(["bench", "-m", "x", "-n", "0"]) == 2
    assert "requests must be" in capsys.readouterr().err
    with pytest.raises(ValueError, match="concurrency"):
        run_bench("http://127.0.0.1:1", "x", concurrency=0)


# ---- against the session app ----------------------------------------------------------------------------------
@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
def test_wait_against_the_service(serve_app, capsys):
    assert main(["wait", "--url", serve_app["base_url"], "--wait-timeout", "60"]) == 0
    out = capsys.readouterr().out
    assert "all-minilm-l6-v2: ready" in out and "models ready" in out
    assert cli_commands.DEFAULT_URL == "http://127.0.0.1:8000"

"""serve_app.cli_commands without a service: the /ready progress display against a scripted server,
`serve --wait`, and the bench bounds (the commands against the real app: tests/integration/test_cli.py)."""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serve_app.cli_commands import main, register, run_bench, url_from_serve_config, wait_with_progress


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

"""`embedserve serve` in its own process and session, for tests that need the real command (its own local Ray)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml
from helpers.net import free_port
from helpers.paths import REPO


def start_embedserve(config: dict, folder: Path, ready_timeout_s: float = 150) -> tuple[subprocess.Popen, Path]:
    """Write `config` to folder/serve.yaml, start `embedserve serve` on it and wait until /ready answers 200.
    -> (process, log path). The process leads its own session, so `kill_session` finds all it started."""
    path = folder / "serve.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = path.with_suffix(".log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serve_app.cli", "serve", str(path), "--metrics-port", str(free_port())],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{config['http_options']['port']}"
    deadline = time.monotonic() + ready_timeout_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(log.read_text()[-4000:])
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base + "/ready", timeout=5).status_code == 200:
                return proc, log
        if time.monotonic() > deadline:
            kill_session(proc)
            raise AssertionError(f"not ready in {ready_timeout_s:.0f} s:\n" + log.read_text()[-4000:])
        time.sleep(1)


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL whatever of this process's session is left (only processes we started), then reap it."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, ProcessLookupError):
            if os.getsid(int(pid)) == proc.pid:
                os.kill(int(pid), signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def stop_session(proc: subprocess.Popen) -> None:
    """SIGINT (Serve and Ray shut down), then kill_session for anything left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=40)
    kill_session(proc)

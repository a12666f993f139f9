"""Start and stop the two services under test, each in its own subprocess (own process group), on 127.0.0.1.

- ours: `python -m serve_app.cli serve <config>` (what `embedserve serve` runs) with a Serve config generated
  from configs/local.yaml, only the HTTP port changed to a free one;
- Infinity: `infinity_emb v2` from its own venv (see bench/infinity_env.py), serving the same model directory.

Stopping never uses names: the driver gets SIGINT (Serve shuts down, Ray stops the processes it
started), then any process of the tree recorded while it ran gets SIGTERM / SIGKILL, then the process
group we created gets SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from bench.procs import ServiceProcesses, terminate

REPO = Path(__file__).resolve().parent.parent
MODEL_NAME = "all-minilm-l6-v2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli_has_option(option: str) -> bool:
    """Whether `embedserve serve` knows an option (the CLI evolves; the harness follows it)."""
    try:
        import inspect

        import serve_app.cli as cli

        return option in inspect.getsource(cli)
    except Exception:
        return False


class Service:
    name = "service"
    embed_path = "/v1/embeddings"
    ready_path = "/ready"

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None
        self.procs: ServiceProcesses | None = None
        self.started_at = 0.0
        self.ready_after_s: float | None = None
        self.cmd: list[str] = []

    @property
    def embed_url(self) -> str:
        return self.base_url + self.embed_path

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> None:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started_at = time.monotonic()
        self.cmd = self.command()
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=REPO,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: the whole tree can be stopped together
        )
        self.procs = ServiceProcesses(self.name, self.proc.pid)

    def wait_ready(self, timeout_s: float) -> float:
        """Poll the readiness route until 200; -> seconds from start. Raises if the process dies or time runs out."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.base_url + self.ready_path).status_code == 200:
                        self.ready_after_s = time.monotonic() - self.started_at
                        self.after_ready()
                        return self.ready_after_s
                time.sleep(1.0)
        raise TimeoutError(f"{self.name} not ready after {timeout_s:.0f} s; see {self.log_path}")

    def after_ready(self) -> None:
        if self.procs is not None:
            self.procs.snapshot()

    def body(self, texts: list[str], truncate: bool) -> dict:
        return {"model": MODEL_NAME, "input": texts}

    def stop(self) -> dict:
        """Stop everything this service started; -> what it took (for the record)."""
        report: dict = {"graceful": False, "killed": []}
        if self.proc is None:
            return report
        try:
            if self.procs is not None:
                self.procs.snapshot()
            if self.proc.poll() is None:
                self._interrupt()
                try:
                    self.proc.wait(timeout=40)
                    report["graceful"] = True
                except subprocess.TimeoutExpired:
                    pass
            leftovers = self.procs.alive() if self.procs is not None else []
            report["killed"] = terminate(leftovers)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group we created (start_new_session)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        finally:
            self._log.close()
        return report

    def _interrupt(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)


class OurService(Service):
    """embedserve on a local, loopback-only Ray, started like `embedserve serve` does."""

    name = "embedserve"

    def __init__(self, log_dir: Path, base_config: Path, worker_niceness: int | None = None) -> None:
        super().__init__(log_dir)
        self.worker_niceness = worker_niceness  # None: Ray's default (15) for every worker, replicas included
        self.metrics_url: str | None = None  # Ray's Prometheus endpoint, found once the service is up
        self.metrics_port: int | None = None
        cfg = yaml.safe_load(base_config.read_text())
        cfg.setdefault("http_options", {})
        cfg["http_options"]["host"] = "127.0.0.1"
        cfg["http_options"]["port"] = self.port
        self.config = cfg
        self.config_path = log_dir / "serve-config.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.worker_niceness is not None:
            env["RAY_worker_niceness"] = str(self.worker_niceness)
        return env

    def model_entry(self) -> dict:
        return self.config["applications"][0]["args"]["models"][0]

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "serve_app.cli", "serve", str(self.config_path)]
        if _cli_has_option("--metrics-port"):  # a fixed default port would collide with other local Rays
            self.metrics_port = free_port()
            cmd += ["--metrics-port", str(self.metrics_port)]
        return cmd

    def after_ready(self) -> None:
        super().after_ready()
        assert self.procs is not None
        # Ray's session name appears in gcs_server / raylet command lines: also catch re-parented processes.
        for p in self.procs.snapshot().values():
            m = re.search(r"session_\d{4}-\d\d-\d\d_[\d_-]+", p.name)
            if m:
                self.procs.match = m.group(0)
                break

    def body(self, texts: list[str], truncate: bool) -> dict:
        out: dict = {"model": MODEL_NAME, "input": texts}
        if truncate:
            out["truncate"] = True
        return out


class InfinityService(Service):
    """Infinity (michaelfeil/infinity) on the same model directory, from its own venv."""

    name = "infinity"
    embed_path = "/embeddings"
    ready_path = "/health"

    def __init__(self, log_dir: Path, venv: Path, model_dir: str, batch_size: int = 64) -> None:
        super().__init__(log_dir)
        self.venv = venv
        self.model_dir = model_dir
        self.batch_size = batch_size

    def command(self) -> list[str]:
        return [
            str(self.venv / "bin" / "infinity_emb"),
            "v2",
            "--model-id",
            self.model_dir,
            "--served-model-name",
            MODEL_NAME,
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
            "--batch-size",
            str(self.batch_size),
            "--engine",
            "torch",
            "--device",
            "cpu",
            "--no-vector-disk-cache",  # the default, said explicitly: a result cache would skew repeated inputs
        ]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(DO_NOT_TRACK="1", INFINITY_ANONYMOUS_USAGE_STATS="0", HF_HUB_OFFLINE="1")
        env.pop("PYTHONPATH", None)
        return env

    def after_ready(self) -> None:
        super().after_ready()
        # /health answers before the first model is warm on some versions: wait for /models to list it.
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            for _ in range(60):
                with contextlib.suppress(httpx.HTTPError):
                    r = client.get(self.base_url + "/models")
                    if r.status_code == 200 and MODEL_NAME in r.text:
                        return
                time.sleep(1.0)

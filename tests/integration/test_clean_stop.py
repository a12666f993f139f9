"""Stopping `embedserve serve` with requests in flight: every one is answered, one clear line, exit 0.

A rolling restart or a container stop sends SIGTERM; Ctrl-C sends SIGINT. The service stops taking new
requests, finishes the ones it has within the grace period, and exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess

import httpx
import pytest
from helpers.net import free_port
from helpers.serve_configs import serve_config
from helpers.serve_process import kill_session, start_embedserve

pytestmark = pytest.mark.integration

IN_FLIGHT = 24


def _start(tmp_path, tiny_xlmr) -> tuple[subprocess.Popen, str, object]:
    port = free_port()
    cfg = serve_config(
        port,
        apps=[
            {
                "name": "embedserve",
                "route_prefix": "/",
                "import_path": "serve_app.app:build_app",
                "args": {
                    "models": [
                        {
                            "name": "tiny-xlmr",
                            "family": "encoder",
                            "source": str(tiny_xlmr),
                            "deployment": {"num_cpus": 0.5, "torch_threads": 1},
                            # Each request waits ~1.5 s for its batch: the stop arrives while all are in flight.
                            "batching": {"max_batch_size": 64, "batch_wait_timeout_s": 1.5},
                        }
                    ]
                },
            }
        ],
        proxy_location="HeadOnly",
    )
    proc, log = start_embedserve(cfg, tmp_path)
    return proc, f"http://127.0.0.1:{port}", log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_with_requests_in_flight_answers_every_one(tmp_path, tiny_xlmr, serve_app, signum):
    proc, base, log = _start(tmp_path, tiny_xlmr)
    try:

        async def load() -> list:
            async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=64)) as c:

                async def one(i: int):
                    try:
                        return await c.post("/v1/embeddings", json={"model": "tiny-xlmr", "input": f"text {i}"})
                    except httpx.HTTPError as exc:
                        return exc

                tasks = [asyncio.create_task(one(i)) for i in range(IN_FLIGHT)]
                await asyncio.sleep(0.5)  # all sent, all waiting for their batch
                proc.send_signal(signum)
                return await asyncio.gather(*tasks)

        answers = asyncio.run(load())
        code = proc.wait(timeout=90)
        text = log.read_text()
        failed = [a for a in answers if not isinstance(a, httpx.Response) or a.status_code != 200]
        assert not failed, (failed[:3], text[-3000:])
        assert all(len(a.json()["data"][0]["embedding"]) > 0 for a in answers)
        assert code == 0, text[-3000:]
        assert "embedserve: stopping" in text
        assert "SIGTERM received" not in text and "PC: @" not in text  # no crash-like dump
        with pytest.raises(httpx.HTTPError):  # and it is gone
            httpx.get(base + "/health", timeout=2)
    finally:
        kill_session(proc)

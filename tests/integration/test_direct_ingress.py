"""`embedserve serve` on a local Ray: the router answers HTTP itself (Serve's direct ingress), no proxy hop.

The choice (serve_app/cli.py) is unit-tested in tests/unit/serve_app/test_direct_ingress_choice.py; here a real
`embedserve serve` in its own process serves a tiny model, and the configured port must belong to the router
replica, answer like the proxied session app, and stay on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers.net import free_port, wildcard_listeners
from helpers.serve_configs import serve_config
from helpers.serve_process import start_embedserve, stop_session

pytestmark = pytest.mark.integration


def _listener_owner(port: int) -> str | None:
    """Command line of the process listening on 127.0.0.1:port (from /proc, no tools needed)."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[1] == f"0100007F:{port:04X}" and parts[3] == "0A":
            inode = parts[9]
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return None


@pytest.fixture(scope="module")
def direct_service(tiny_xlmr, serve_app, tmp_path_factory):
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
                        }
                    ]
                },
            }
        ],
        proxy_location="HeadOnly",
    )
    before = wildcard_listeners()
    proc, log = start_embedserve(cfg, tmp_path_factory.mktemp("direct"))
    try:
        yield {"base_url": f"http://127.0.0.1:{port}", "port": port, "before": before, "log": log}
    finally:
        stop_session(proc)


def test_the_router_replica_holds_the_configured_port(direct_service):
    owner = _listener_owner(direct_service["port"])
    assert owner is not None and "ServeReplica:embedserve:router" in owner, owner
    assert "the router answers HTTP on 127.0.0.1" in direct_service["log"].read_text()


def test_answers_match_the_proxied_app_and_errors_keep_their_shape(direct_service, serve_app):
    texts = ["direct ingress", "one hop fewer", "same vectors"]
    body = {"model": "tiny-xlmr", "input": texts}
    direct = httpx.post(direct_service["base_url"] + "/v1/embeddings", json=body, timeout=30)
    proxied = httpx.post(serve_app["base_url"] + "/v1/embeddings", json=body, timeout=30)
    assert direct.status_code == proxied.status_code == 200
    a = np.array([d["embedding"] for d in direct.json()["data"]])
    b = np.array([d["embedding"] for d in proxied.json()["data"]])
    assert a.shape == (3, b.shape[1]) and np.allclose(a, b, atol=1e-5)

    missing = httpx.post(direct_service["base_url"] + "/v1/embeddings", json={**body, "model": "nope"}, timeout=30)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    empty = httpx.post(direct_service["base_url"] + "/v1/embeddings", json={**body, "input": []}, timeout=30)
    assert empty.status_code == 400 and empty.json()["error"]["type"] == "invalid_request_error"


def test_concurrent_requests_each_get_their_own_vectors(direct_service):
    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(base_url=direct_service["base_url"], timeout=60, limits=limits) as client:
            calls = [
                client.post("/v1/embeddings", json={"model": "tiny-xlmr", "input": [f"text {i}"] * (1 + i % 3)})
                for i in range(60)
            ]
            return await asyncio.gather(*calls)

    replies = asyncio.run(run())
    assert [r.status_code for r in replies] == [200] * 60
    first = {}
    for i, r in enumerate(replies):
        data = r.json()["data"]
        assert len(data) == 1 + i % 3
        vector = np.array(data[0]["embedding"])
        for d in data[1:]:  # the same text repeated: identical rows
            assert np.allclose(np.array(d["embedding"]), vector, atol=1e-6)
        first[i] = vector
    assert not np.allclose(first[0], first[1])


def test_stays_on_loopback(direct_service):
    assert wildcard_listeners() - direct_service["before"] == set()

"""Keep a local Ray Serve on 127.0.0.1.

Ray 2.60 replicas open their inter-deployment gRPC server on `[::]:0` (every interface) with no
setting to change it. For local runs we install this as Ray's `worker_process_setup_hook`, which
rewrites that wildcard bind to loopback in every worker process. Cluster deployments do not use it.
"""

from __future__ import annotations

import sys

HOOK = "serve_app.loopback.bind_grpc_to_loopback"


def _to_loopback(address: str) -> str:
    if address.startswith("[::]:") or address.startswith("0.0.0.0:"):
        return "127.0.0.1:" + address.rsplit(":", 1)[1]
    return address


def bind_grpc_to_loopback() -> None:
    import ray._common.tls_utils as tls

    original = getattr(tls.add_port_to_grpc_server, "__wrapped__", tls.add_port_to_grpc_server)

    def add_port_on_loopback(server, address: str, *args, **kwargs):
        return original(server, _to_loopback(address), *args, **kwargs)

    add_port_on_loopback.__wrapped__ = original  # type: ignore[attr-defined]
    tls.add_port_to_grpc_server = add_port_on_loopback
    replica = sys.modules.get("ray.serve._private.replica")
    if replica is not None:
        replica.add_port_to_grpc_server = add_port_on_loopback

"""The local Ray that `embedserve serve`, the corpus job, the tests and the benchmarks start: on 127.0.0.1 only,
without the dashboard, with Serve's throughput settings; and Serve's direct ingress settings.

Kept apart from the command line so that whatever starts a local Ray (the CLI, serve_app/corpus/runner.py,
tests/conftest.py, bench/) imports it from below the CLI.
"""

from __future__ import annotations

import os

LOCAL_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # Seen with Ray 2.60: without this, Ray binds internal servers to the machine's network interface.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
    "TOKENIZERS_PARALLELISM": "false",
    # Ray starts workers at nice 15; on a shared laptop that starves the model behind any other process.
    "RAY_worker_niceness": "0",
    # Ray Serve's throughput settings (measured by `python -m bench.hops`): handle calls between deployments
    # over gRPC, and user code on the replica's own event loop (our blocking work already runs in threads).
    # They hold for any topology, so cluster/Dockerfile sets them too.
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
}
# OpenMP's wait policy stays libgomp's default (a short spin): small passes run on one thread, without an OpenMP
# team to spin (deployments/engines/runtime.py: PassThreads), and large ones gain from the spin (measured by
# `python -m bench.cost`: OMP_WAIT_POLICY=PASSIVE cost MiniLM ~10% at 32 inputs per request). Set OMP_WAIT_POLICY
# or GOMP_SPINCOUNT yourself to choose otherwise: they reach every worker.
PASSED_THROUGH_ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

# For Ray's workers only (Serve's replicas, proxy, controller), never for this process or its children: Serve's
# request router on the replica's own loop saves a thread hop per handle call, but breaks handles called from
# plain driver code outside an event loop.
WORKER_ONLY_ENV = {"RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0"}


DEFAULT_METRICS_PORT = 9101


def direct_ingress_env(port: int) -> dict[str, str]:
    """Serve's direct ingress: the router replica itself answers HTTP on `port`, no proxy actor in between.

    One hop fewer per request (measured by `python -m bench.hops`). Each ingress replica needs its own port, so
    the range is pinned to the one configured port: it suits one router replica on one node (the local
    default); clusters keep Serve's proxy.
    """
    return {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1),  # exclusive bound
    }


def start_local_ray(
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    metrics_port: int = DEFAULT_METRICS_PORT,
    ingress_port: int | None = None,
) -> None:
    """Ray on loopback only, without the dashboard (~1 GB saved); env reaches every worker.

    With `ingress_port`, the router replica answers HTTP on that port itself (direct ingress); Serve's proxy
    then needs a port of its own in the Serve config.
    """
    env = dict(LOCAL_ENV)
    env.update({k: os.environ[k] for k in PASSED_THROUGH_ENV if k in os.environ})
    if ingress_port is not None:
        env.update(direct_ingress_env(ingress_port))
    for key, value in env.items():
        os.environ.setdefault(key, value)
    import ray
    import ray._private.ray_constants as ray_constants

    from serve_app import loopback

    # The constant is read when ray is first imported; set it too in case that was before us.
    ray_constants.ENABLE_RAY_CLUSTER = False

    ray.init(
        namespace="serve",
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        _metrics_export_port=metrics_port,  # Prometheus: http://127.0.0.1:<port>/metrics
        runtime_env={
            "env_vars": {**{k: os.environ[k] for k in env}, **WORKER_ONLY_ENV},
            "worker_process_setup_hook": loopback.HOOK,
        },
        configure_logging=True,
    )

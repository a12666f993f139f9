"""`embedserve` command line: run a Serve config on a local, loopback-only Ray.

`embedserve serve CONFIG` starts Ray itself (127.0.0.1, no dashboard, no usage stats) when no cluster
address is given, then hands the config to Ray Serve's own `serve run`, so the config means exactly
what it means to `serve run` / `serve deploy` on a cluster.
"""

from __future__ import annotations

import argparse
import os
import sys

LOCAL_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # Seen with Ray 2.60: without this, Ray binds internal servers to the machine's network interface.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
    "TOKENIZERS_PARALLELISM": "false",
    # Ray starts workers at nice 15; on a shared laptop that starves the model behind any other process.
    "RAY_worker_niceness": "0",
}


DEFAULT_METRICS_PORT = 9101


def start_local_ray(
    num_cpus: int | None = None, num_gpus: int | None = None, metrics_port: int = DEFAULT_METRICS_PORT
) -> None:
    """Ray on loopback only, without the dashboard (~1 GB saved); env reaches every worker."""
    for key, value in LOCAL_ENV.items():
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
            "env_vars": {k: os.environ[k] for k in LOCAL_ENV},
            "worker_process_setup_hook": loopback.HOOK,
        },
        configure_logging=True,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.config):
        print(f"no such config: {args.config}", file=sys.stderr)
        return 2
    if args.address:
        os.environ["RAY_ADDRESS"] = args.address
    else:
        start_local_ray(args.num_cpus, args.num_gpus, args.metrics_port)
    from ray.serve.scripts import run as serve_run

    serve_run.main([args.config], standalone_mode=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="embedserve", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run a Serve config (default: configs/local.yaml)")
    p.add_argument("config", nargs="?", default="configs/local.yaml")
    p.add_argument("--address", help="an existing Ray cluster (default: start a local one on 127.0.0.1)")
    p.add_argument("--num-cpus", type=int, default=None)
    p.add_argument("--num-gpus", type=int, default=None)
    p.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT, help="Prometheus metrics (127.0.0.1)")
    p.set_defaults(func=cmd_serve)
    from serve_app.cli_commands import register  # models, embed, rerank, bench, wait; serve --wait

    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

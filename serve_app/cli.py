"""`embedserve` command line: run a Serve config on a local, loopback-only Ray.

`embedserve serve CONFIG` starts Ray itself (127.0.0.1, no dashboard, no usage stats) when no cluster
address is given, then hands the config to Ray Serve's own `serve run`, so the config means exactly
what it means to `serve run` / `serve deploy` on a cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from serve_app.local_ray import DEFAULT_METRICS_PORT, start_local_ray

# The default local service ships inside the package (configs/local.yaml links to it), so a plain
# `pip install` serves from any folder.
DEFAULT_CONFIG = Path(__file__).resolve().parent / "local.yaml"


def direct_ingress_port(config: dict) -> int | None:
    """The port direct ingress can take for this Serve config, or None when it needs Serve's proxy.

    Direct ingress fits one application whose router runs one fixed replica (one port for one listener).
    """
    apps = config.get("applications") or []
    if len(apps) != 1:
        return None
    router = ((apps[0].get("args") or {}).get("router")) or {}
    if router.get("autoscaling_config") or (router.get("num_replicas") or 1) != 1:
        return None
    if (config.get("proxy_location") or "HeadOnly") == "Disabled":
        return None
    return int((config.get("http_options") or {}).get("port", 8000))


def cmd_serve(args: argparse.Namespace) -> int:
    if not os.path.isfile(args.config):
        print(f"no such config: {args.config}", file=sys.stderr)
        return 2
    if args.address:
        os.environ["RAY_ADDRESS"] = args.address
    else:
        import yaml

        with open(args.config) as f:
            config = yaml.safe_load(f) or {}
        ingress_port = direct_ingress_port(config) if args.ingress != "proxy" else None
        if ingress_port is None and args.ingress == "direct":
            print("--ingress direct needs one application with one router replica", file=sys.stderr)
            return 2
        if ingress_port is not None:
            args.config = _with_spare_proxy_port(config)
            print(f"embedserve: the router answers HTTP on 127.0.0.1:{ingress_port} itself", file=sys.stderr)
        start_local_ray(args.num_cpus, args.num_gpus, args.metrics_port, ingress_port)
        if not args.skip_placement_check and not placement_ok(config, local=True):
            return 2
        if not exposure_ok(config):
            return 2
    stop_cleanly_on_signals()
    from ray.serve.scripts import run as serve_run

    serve_run.main([args.config], standalone_mode=False)
    return 0


def placement_ok(config: dict, local: bool) -> bool:
    """Name every replica the cluster cannot hold, before deploying. A local Ray never grows: refuse; a cluster
    may add nodes (autoscaler): warn."""
    from serve_app.placement import HINT, nodes_of_cluster, replicas_of, unplaceable

    try:
        problems = unplaceable(replicas_of(config), nodes_of_cluster())
    except Exception as exc:  # a config Serve will word better itself: let `serve run` report it
        print(f"embedserve: placement not checked ({exc})", file=sys.stderr)
        return True
    if not problems:
        return True
    head = "cannot place every model on this machine" if local else "WARNING: the cluster cannot place every model now"
    print(f"embedserve: {head}:", file=sys.stderr)
    for line in problems:
        print(f"  - {line}", file=sys.stderr)
    print(f"  {HINT}", file=sys.stderr)
    if local:
        print("  (--skip-placement-check starts it anyway)", file=sys.stderr)
    return not local


def exposure_ok(config: dict) -> bool:
    """Refuse to serve an API without keys on a non-loopback address, unless the config says it is intended
    (`args.auth.allow_unauthenticated: true`). The router enforces the same rule per request (403) wherever the
    app runs; here the user hears it before anything starts."""
    import ipaddress

    from serve_app.config import AuthConfig
    from serve_app.ingress.middleware import application_keys

    host = str((config.get("http_options") or {}).get("host", "127.0.0.1"))
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return True
    for app in config.get("applications") or []:
        if app.get("import_path") != "serve_app.app:build_app":
            continue
        auth = AuthConfig.model_validate((app.get("args") or {}).get("auth") or {})
        has_keys = bool(application_keys(auth)[0])  # the router's own reading of the keys
        if not has_keys and not auth.allow_unauthenticated:
            print(
                f"embedserve: app {app.get('name', 'default')} would listen on {host} without API keys. Set "
                f"{auth.api_keys_env or 'args.auth.api_keys'} (comma-separated keys) or args.auth.api_keys, or "
                "args.auth.allow_unauthenticated: true if an open API on this network is intended.",
                file=sys.stderr,
            )
            return False
    return True


def stop_cleanly_on_signals() -> None:
    """SIGTERM (a container stop, a rolling restart) stops like Ctrl-C: Serve stops taking requests and shuts
    every deployment down gracefully, finishing the requests in flight; exit status 0.

    Without this, SIGTERM kills the driver at once (Ray prints a crash dump) and the local Ray dies with it,
    dropping every request in flight.
    """
    import signal

    def stop(signum: int, _frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop at a time; a second Ctrl-C still interrupts
        print(
            f"embedserve: stopping ({signal.Signals(signum).name}): no new requests; finishing the ones in flight",
            file=sys.stderr,
            flush=True,
        )
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _with_spare_proxy_port(config: dict) -> str:
    """Path of a copy of the Serve config whose http_options.port is a free loopback port (removed at exit).

    Under direct ingress Serve still starts its proxy on the head node (a fallback route to every app); it
    must not take the configured port, which belongs to the router replica now.
    """
    import atexit
    import copy
    import socket
    import tempfile

    import yaml

    config = copy.deepcopy(config)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        config.setdefault("http_options", {})["port"] = int(s.getsockname()[1])
    with tempfile.NamedTemporaryFile("w", prefix="embedserve-", suffix=".yaml", delete=False) as out:
        yaml.safe_dump(config, out, sort_keys=False)
    atexit.register(_remove, out.name)
    return out.name


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="embedserve", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run a Serve config (default: the local CPU config shipped with the package)")
    p.add_argument("config", nargs="?", default=str(DEFAULT_CONFIG), help="default: configs/local.yaml's content")
    p.add_argument("--address", help="an existing Ray cluster (default: start a local one on 127.0.0.1)")
    p.add_argument("--num-cpus", type=int, default=None)
    p.add_argument("--num-gpus", type=int, default=None)
    p.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT, help="Prometheus metrics (127.0.0.1)")
    p.add_argument(
        "--skip-placement-check",
        action="store_true",
        help="start even when the local Ray cannot place every model's replicas (they wait for resources)",
    )
    p.add_argument(
        "--ingress",
        choices=["auto", "direct", "proxy"],
        default="auto",
        help="local Ray only. auto: the router answers HTTP itself when the config has one application with one "
        "router replica (one hop fewer), else Serve's proxy",
    )
    p.set_defaults(func=cmd_serve)
    from serve_app.cli_commands import register  # models, embed, rerank, bench, wait; serve --wait

    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

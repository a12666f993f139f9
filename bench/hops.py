"""What Ray Serve itself costs per request on this machine: `python -m bench.hops`.

Empty applications (no model, a constant answer) measured under Serve's settings, each in a fresh local Ray on
127.0.0.1 (the settings are read when Ray starts):

- one hop: HTTP -> FastAPI ingress; two hops: HTTP -> FastAPI ingress -> a second deployment (our router ->
  model shape);
- `ray-defaults`: Serve's proxy, handle calls as Ray actor calls, user code in its own thread;
- `grpc+loop`: what `embedserve serve` sets for its local Ray (serve_app/local_ray.py LOCAL_ENV and
  WORKER_ONLY_ENV): handle calls over gRPC, user code and Serve's request router on the replica's event loop;
- `grpc+loop+direct`: plus direct ingress (no proxy: the ingress replica answers HTTP), what `embedserve
  serve` uses locally for a one-router config.

Requests per second at 1 and 16 in flight, bounded by count; the client runs on the same machine. Writes
bench/results/hops.json (or --out) and prints a table. Compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.servers import free_port
from serve_app.loadgen import LoadGenerator

HERE = Path(__file__).resolve().parent

SETTINGS: dict[str, dict[str, str]] = {
    "ray-defaults": {
        "RAY_SERVE_USE_GRPC_BY_DEFAULT": "0",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "1",
    },
    "grpc+loop": {},  # serve_app.local_ray.LOCAL_ENV as it is
    "grpc+loop+direct": {},  # plus direct ingress on the measured port
}


def build_apps():
    from fastapi import FastAPI
    from fastapi.responses import Response
    from ray import serve

    one_api, two_api = FastAPI(), FastAPI()
    answer = b'{"ok":true}'

    @serve.deployment(max_ongoing_requests=256)
    @serve.ingress(one_api)
    class OneHop:
        @one_api.post("/e")
        async def e(self) -> Response:
            return Response(answer, media_type="application/json")

    @serve.deployment(max_ongoing_requests=256)
    class Leaf:
        async def __call__(self, x: int) -> int:
            return x

    @serve.deployment(max_ongoing_requests=256)
    @serve.ingress(two_api)
    class TwoHops:
        def __init__(self, leaf) -> None:
            self.leaf = leaf

        @two_api.post("/e")
        async def e(self) -> Response:
            await self.leaf.remote(1)
            return Response(answer, media_type="application/json")

    return {"one hop": OneHop.bind(), "two hops": TwoHops.bind(Leaf.bind())}


async def _drive(url: str, requests: int, concurrency: int) -> float:
    async with LoadGenerator(url, concurrency=concurrency, timeout_s=30) as gen:
        for bound in (max(5, concurrency), requests):  # warm the connections and the replicas, then measure
            result = await gen.run([b"{}"], max_requests=bound, duration_s=600)
            if result.failed:
                raise RuntimeError(f"{url}: {result.failed} failed requests, first: {result.first_failure()}")
        return result.sent / result.seconds


def measure_one(setting: str, app_name: str, requests: int) -> dict:
    """Runs inside a fresh process: start Ray with the setting, measure one app, stop."""
    from serve_app import local_ray

    for key, value in SETTINGS[setting].items():
        os.environ[key] = value
    if setting == "ray-defaults":
        local_ray.WORKER_ONLY_ENV = {}  # this process measures one setting and exits
    direct_port = free_port() if setting.endswith("direct") else None
    local_ray.start_local_ray(num_cpus=2, metrics_port=free_port(), ingress_port=direct_port)
    from ray import serve

    proxy_port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": proxy_port})
    try:
        serve.run(build_apps()[app_name], name="hops", route_prefix="/")
        url = f"http://127.0.0.1:{direct_port or proxy_port}/e"
        return {f"c{c}": round(asyncio.run(_drive(url, requests, c)), 1) for c in (1, 16)}
    finally:
        serve.shutdown()
        import ray

        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hops", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500, help="per app, setting and concurrency")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)  # internal: SETTING APP in this process
    args = parser.parse_args(argv)
    if args.one:
        print("HOPS " + json.dumps(measure_one(args.one[0], args.one[1], args.requests)), flush=True)
        return 0

    results: dict = {}
    for setting in SETTINGS:
        results[setting] = {}
        for app_name in ("one hop", "two hops"):
            cmd = [sys.executable, "-m", "bench.hops", "--one", setting, app_name, "--requests", str(args.requests)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=HERE.parent)
            line = next((x for x in proc.stdout.splitlines() if x.startswith("HOPS ")), None)
            if line is None:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"{setting} / {app_name}: no result (exit {proc.returncode})")
            results[setting][app_name] = json.loads(line[5:])
            print(f"{setting} / {app_name}: {results[setting][app_name]}", flush=True)

    record = {
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python -m bench.hops " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cores": os.cpu_count(),
        "loadavg_1m_end": round(os.getloadavg()[0], 2),
        "requests_per_point": args.requests,
        "requests_per_s": results,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hops.json").write_text(json.dumps(record, indent=2) + "\n")
    print("\n| setting | one hop, 1 in flight | one hop, 16 | two hops, 1 | two hops, 16 |")
    print("|---|---:|---:|---:|---:|")
    for setting, r in results.items():
        cells = [f"{r[a][c]:.0f} req/s" for a in ("one hop", "two hops") for c in ("c1", "c16")]
        print(f"| {setting} | " + " | ".join(cells) + " |")
    print(f"\nwrote {out / 'hops.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

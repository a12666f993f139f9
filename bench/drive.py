"""The benchmark's client process: one load through serve_app.loadgen, its summary as one JSON line on stdout.

Run apart from the servers so the client's CPU is its own and can be reported (it shares the machine):

    python -m bench.drive --url http://127.0.0.1:8000/v1/embeddings --model m --concurrency 64 --duration 8

Bodies are prepared before the clock starts from bench/corpus.py's fixed sentences (short: 8-14 words).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import orjson

from serve_app.loadgen import LoadGenerator, PreparedRequest, percentiles_ms, run_blocking

WORDS = (
    "retrieval augmented generation embeddings rerank passage query document vector batch token budget "
    "latency throughput replica cluster kubernetes memory queue python model service search index"
).split()


def run_drive(url: str, model: str, api_key: str | None = None, timeout_s: float = 300, **options) -> dict:
    """Run this client in its own process (its CPU stays apart from the servers') -> its JSON summary.
    `options`: any of this module's flags, by name (concurrency=64, inputs=32, duration=8, warmup=0, ...)."""
    import subprocess
    from pathlib import Path

    cmd = [sys.executable, "-m", "bench.drive", "--url", url, "--model", model]
    for name, value in options.items():
        cmd += [f"--{name.replace('_', '-')}", str(value)]
    if api_key:
        cmd += ["--api-key", api_key]
    out = subprocess.run(
        cmd, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=timeout_s
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench.drive failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bodies(model: str, inputs: int, distinct: int = 256, seed: int = 7) -> list[PreparedRequest]:
    rng = random.Random(seed)
    out = []
    for _ in range(distinct):
        texts = [" ".join(rng.choices(WORDS, k=rng.randint(8, 14))) for _ in range(inputs)]
        out.append(PreparedRequest(orjson.dumps({"model": model, "input": texts[0] if inputs == 1 else texts})))
    return out


async def drive(args: argparse.Namespace) -> dict:
    headers = {"content-type": "application/json"}
    if args.api_key:
        headers["authorization"] = f"Bearer {args.api_key}"
    requests = bodies(args.model, args.inputs)
    async with LoadGenerator(args.url, concurrency=args.concurrency, headers=headers, timeout_s=60) as load:
        warmup_ok = 0
        if args.warmup > 0:
            warmup_ok = (await load.run(requests, max_requests=10_000, duration_s=args.warmup)).ok
        cpu0 = time.process_time()
        result = await load.run(requests, max_requests=args.max_requests, duration_s=args.duration)
        client_cpu = time.process_time() - cpu0
    ok = result.latencies(ok_only=True)
    p50, p90, p99 = percentiles_ms(ok, [50, 90, 99]) if ok else (None, None, None)
    first = result.first_failure()
    return {
        "concurrency": args.concurrency,
        "inputs_per_request": args.inputs,
        "warmup_ok": warmup_ok,
        "sent": result.sent,
        "ok": result.ok,
        "failed": result.failed,
        "first_failure": None if first is None else f"{first.status} {first.error}",
        "seconds": round(result.seconds, 3),
        "requests_per_s": round(result.ok / result.seconds, 1) if result.seconds else 0.0,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "client_cpu_s": round(client_cpu, 3),
        "client_pid": os.getpid(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="the full embeddings URL")
    p.add_argument("--model", required=True)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--inputs", type=int, default=1, help="inputs per request")
    p.add_argument("--duration", type=float, default=8.0, help="seconds of measured load (bounded)")
    p.add_argument("--max-requests", type=int, default=50_000)
    p.add_argument("--warmup", type=float, default=1.5, help="seconds of unmeasured load first")
    p.add_argument("--api-key", default=None)
    args = p.parse_args(argv)
    if not 1 <= args.concurrency <= 512 or not 0 < args.duration <= 120 or not 1 <= args.max_requests <= 200_000:
        p.error("concurrency 1..512, duration (0, 120] s, max-requests 1..200000")
    print(json.dumps(run_blocking(drive(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

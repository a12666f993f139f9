"""Priority lanes under a bulk stream: `python -m bench.lanes` (`--quick` for a smoke run; results to bench/out/).

Issue #17: re-indexing and users' queries share the models. On a real `embedserve serve` (own local Ray, loopback
only) with all-MiniLM-L6-v2 on the CPU, each server runs three phases:

- idle: single-sentence queries alone, one in flight (bench.drive), p50 / p99;
- without lanes: the same queries while a bulk stream keeps the model busy (`--bulk-concurrency` requests of 256
  inputs each in flight, sent with a plain key, so everything is interactive: today's single FIFO);
- with lanes: the same, the bulk stream sent with the indexer's key, whose default lane is bulk (config
  `auth.api_keys: [{key, priority: bulk}]`): nothing else changes, not even the bodies.

Each load is `python -m bench.drive` in its own process (queries and bulk apart, so neither client's loop delays
the other's timing). Target from the issue: query p99 under bulk within 2x of the idle p99.

What bounds a query's wait behind bulk work: a pass already running is never interrupted. A CPU replica that runs
two passes side by side (the local config: 2 threads) keeps one of them free of bulk work while queries keep
coming (deployments/batcher.py), so a query starts at once beside one bulk pass; there the budget matters little
for queries and a larger one gives bulk more throughput. A replica with one pass (a GPU, a 1-thread CPU replica)
has no pass to keep free: a query waits for the bulk pass running, a whole budget, so there choose the budget by
the latency you need (on this 2-core CPU a pass of 64 short inputs takes ~110-180 ms, of 8 ~20 ms). The run
measures two budgets: 8 inputs / 256 tokens and, with `--default-budget-too`, configs/local.yaml's 64 / 8192.
The price of lanes is bulk throughput while queries flow (one bulk pass instead of two), recorded per mode.

Writes bench/results/lanes.json (command, machine, timestamps, numbers, bulk throughput per mode).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from bench.drive import run_drive
from bench.machine import cpu_model
from bench.servers import MODEL_NAME, OurService

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
QUERY_KEY = "bench-lanes-query-key"
INDEXER_KEY = "bench-lanes-indexer-key"
BULK_INPUTS = 256
LANES_BUDGET = {"max_batch_tokens": 256, "max_batch_size": 8, "batch_wait_timeout_s": 0.0}


def log(msg: str) -> None:
    print(f"[lanes {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def config(budget: dict | None) -> dict:
    """configs/local.yaml (the shipped local default), with an indexer key whose requests default to bulk."""
    cfg = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    args = cfg["applications"][0]["args"]
    if budget is not None:
        args["models"][0]["batching"] = dict(budget)
    args["auth"] = {"api_keys": [QUERY_KEY, {"key": INDEXER_KEY, "priority": "bulk"}], "api_keys_env": None}
    return cfg


def queries(url: str, seconds: float) -> dict:
    return run_drive(url, MODEL_NAME, QUERY_KEY, concurrency=1, inputs=1, duration=seconds, warmup=0.5)


BULK_MARGIN_S = 8.0  # the bulk stream outlasts the queries by this much (the query client's start-up included)


def under_bulk(url: str, key: str, seconds: float, concurrency: int, ramp_s: float) -> dict:
    """Queries for `seconds` while a bulk stream (started `ramp_s` earlier) keeps the model busy all along:
    the bulk stream must still be running when the last query is answered, or the phase is refused (queries
    after the stream would be idle ones)."""
    bulk: dict = {}

    def run_bulk() -> None:
        try:
            bulk.update(
                run_drive(
                    url,
                    MODEL_NAME,
                    key,
                    concurrency=concurrency,
                    inputs=BULK_INPUTS,
                    duration=ramp_s + seconds + BULK_MARGIN_S,
                    warmup=0,
                    max_requests=10_000,
                )
            )
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            bulk["error"] = str(exc)[-500:]

    thread = threading.Thread(target=run_bulk, daemon=True)
    thread.start()
    time.sleep(ramp_s)
    measured = queries(url, seconds)
    covered = thread.is_alive()
    thread.join(timeout=240)
    if not covered:
        raise RuntimeError("the bulk stream ended before the queries did: raise BULK_MARGIN_S")
    if "error" in bulk or not bulk:
        raise RuntimeError(f"bulk stream failed: {bulk.get('error', 'no result')}")
    bulk["inputs_per_s"] = round(bulk["ok"] * BULK_INPUTS / bulk["seconds"], 1) if bulk["seconds"] else 0.0
    return {"queries": measured, "bulk": bulk}


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def summary(q: dict) -> dict:
    """A client run's record, with the client's own CPU per request (bench.drive): proof it was not the limit."""
    out = {k: q[k] for k in ("ok", "failed", "requests_per_s", "first_failure")}
    out["client_cpu_ms_per_request"] = round(q["client_cpu_s"] * 1000 / max(q["ok"], 1), 3)
    return {**out, **{k: _ms(q[k]) for k in ("p50_ms", "p90_ms", "p99_ms")}}


def run_server(name: str, budget: dict | None, out_dir: Path, args: argparse.Namespace) -> dict:
    cfg_path = out_dir / f"{name}.yaml"
    cfg_path.write_text(yaml.safe_dump(config(budget), sort_keys=False))
    service = OurService(out_dir, cfg_path)
    service.start()
    try:
        ready = service.wait_ready(240)
        log(f"{name}: ready after {ready:.1f} s; model batching {service.model_entry().get('batching')}")
        url = service.embed_url
        run_drive(url, MODEL_NAME, INDEXER_KEY, concurrency=2, inputs=BULK_INPUTS, duration=2, warmup=0)  # warm
        idle = queries(url, args.seconds)
        log(f"{name}: idle queries p50 {_ms(idle['p50_ms'])} ms  p99 {_ms(idle['p99_ms'])} ms  ({idle['ok']} ok)")
        modes = {}
        for mode, key in (("without_lanes", QUERY_KEY), ("with_lanes", INDEXER_KEY)):
            r = under_bulk(url, key, args.seconds, args.bulk_concurrency, args.ramp)
            q, b = r["queries"], r["bulk"]
            log(
                f"{name}: {mode:13s} queries p50 {_ms(q['p50_ms'])} ms  p99 {_ms(q['p99_ms'])} ms  ({q['ok']} ok, "
                f"{q['failed']} failed); bulk {b['inputs_per_s']} inputs/s ({b['ok']} ok, {b['failed']} failed)"
            )
            modes[mode] = {
                "queries": summary(q),
                "bulk": {
                    "inputs_per_s": b["inputs_per_s"],
                    "requests": b["ok"],
                    "failed": b["failed"],
                    "p50_ms": _ms(b["p50_ms"]),
                    "p99_ms": _ms(b["p99_ms"]),
                    "seconds": b["seconds"],
                    "first_failure": b["first_failure"],
                    "client_cpu_ms_per_request": round(b["client_cpu_s"] * 1000 / max(b["ok"], 1), 3),
                },
                "query_p99_over_idle_p99": round(q["p99_ms"] / idle["p99_ms"], 2)
                if q["p99_ms"] and idle["p99_ms"]
                else None,
            }
        return {
            "server": name,
            "batching": service.model_entry().get("batching"),
            "deployment": service.model_entry().get("deployment"),
            "ready_s": round(ready, 1),
            "idle": summary(idle),
            **modes,
        }
    finally:
        service.stop()


def table(record: dict) -> str:
    lines = [
        "| server (batching) | mode | query p50 ms | query p99 ms | p99 / idle p99 | bulk inputs/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for run in record["runs"]:
        b = run["batching"]
        label = f"{run['server']} ({b['max_batch_size']} inputs / {b['max_batch_tokens']} tokens)"
        lines.append(f"| {label} | idle | {run['idle']['p50_ms']} | {run['idle']['p99_ms']} | 1.0 | - |")
        for mode in ("without_lanes", "with_lanes"):
            m = run[mode]
            lines.append(
                f"| {label} | {mode.replace('_', ' ')} | {m['queries']['p50_ms']} | {m['queries']['p99_ms']} | "
                f"{m['query_p99_over_idle_p99']} | {m['bulk']['inputs_per_s']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short phases; results to bench/out/lanes-quick.json")
    p.add_argument("--seconds", type=float, default=15.0, help="measured query seconds per phase")
    p.add_argument("--ramp", type=float, default=4.0, help="seconds of bulk load before queries are measured")
    p.add_argument("--bulk-concurrency", type=int, default=3, help="bulk requests (256 inputs each) in flight")
    p.add_argument("--default-budget-too", action="store_true", help="also run configs/local.yaml's budget")
    p.add_argument("--max-batch-size", type=int, default=LANES_BUDGET["max_batch_size"], help="the lanes budget")
    p.add_argument("--max-batch-tokens", type=int, default=LANES_BUDGET["max_batch_tokens"])
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.ramp = 5.0, 2.0
    if not 1 <= args.seconds <= 60 or not 0 < args.ramp <= 20 or not 1 <= args.bulk_concurrency <= 16:
        p.error("seconds 1..60, ramp (0, 20], bulk-concurrency 1..16")
    out_dir = HERE / "out" / "lanes"
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    record: dict = {
        "command": "python -m bench.lanes" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "cpu_model": cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "model": MODEL_NAME,
        "workload": {
            "queries": "one sentence (8-14 words) per request, 1 in flight, python -m bench.drive",
            "bulk": f"{args.bulk_concurrency} requests of {BULK_INPUTS} sentences in flight, python -m bench.drive",
            "without_lanes": "bulk sent with a plain key: every request interactive (one FIFO queue)",
            "with_lanes": "bulk sent with a key declared {priority: bulk}: the bulk lane",
            "query_seconds_per_phase": args.seconds,
            "bulk_ramp_s": args.ramp,
            "bulk_outlasts_queries_by_s": BULK_MARGIN_S,
            "bulk_inputs_per_s": "over the bulk client's whole run (ramp, queries, margin)",
        },
        "target": "query p99 under bulk <= 2 x idle query p99",
        "runs": [],
    }
    budget = {**LANES_BUDGET, "max_batch_size": args.max_batch_size, "max_batch_tokens": args.max_batch_tokens}
    plan = [("embedserve-lanes-budget", budget)]
    if args.default_budget_too:
        plan.append(("embedserve-local-budget", None))
    for name, budget in plan:
        log(f"starting {name}")
        record["runs"].append(run_server(name, budget, out_dir, args))
    record["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    record["wall_s"] = round(time.monotonic() - started, 1)
    record["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    first = record["runs"][0]["with_lanes"]["query_p99_over_idle_p99"]
    record["target_met"] = first is not None and first <= 2.0
    target = (HERE / "out" / "lanes-quick.json") if args.quick else (HERE / "results" / "lanes.json")
    target.write_text(json.dumps(record, indent=2))
    print(table(record))
    log(f"wrote {target} after {record['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

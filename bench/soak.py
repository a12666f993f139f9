"""Soak: thousands of mixed embedding and rerank requests with concurrency against a running service.

Checks every answer against the same input sent alone (nothing lost, nothing swapped) and reports the
memory of the service's processes before and after. Used by tests/test_soak.py (small) and run by hand:

    .venv/bin/python -m bench.soak --requests 5000 --concurrency 64   # starts its own local service
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from pathlib import Path

import httpx
import numpy as np

WORDS = (
    "retrieval augmented generation embeddings rerank passage query document vector batch token budget "
    "latency throughput replica cluster kubernetes memory queue python model service search index"
).split()


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    return children


def service_memory_mb(root: int | None = None) -> float:
    """Proportional set size (shared pages counted once) of every process under `root` (default: us,
    the driver that started Ray, so Ray's GCS, raylet, proxy, controller and replicas are all counted)."""
    tree = _children()
    todo, total_kb = list(tree.get(root or os.getpid(), [])), 0
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def _pool(rng: random.Random, n: int, max_words: int) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, max_words))) + f" #{i}" for i in range(n)]


async def run_soak(
    base_url: str,
    *,
    requests: int = 2000,
    concurrency: int = 32,
    embed_model: str = "all-minilm-l6-v2",
    rerank_model: str | None = None,
    headers: dict | None = None,
    seed: int = 0,
    time_limit_s: float = 600,
    max_words: int = 80,
) -> dict:
    rng = random.Random(seed)
    pool = _pool(rng, 60, max_words)
    rerank_model = rerank_model or embed_model
    async with httpx.AsyncClient(base_url=base_url, timeout=120, headers=headers or {}) as client:
        alone = {}
        for text in pool:
            r = await client.post("/v1/embeddings", json={"model": embed_model, "input": text})
            alone[text] = np.asarray(r.json()["data"][0]["embedding"], dtype=np.float32)
        queries = pool[:5]
        reranked = {}
        for q in queries:
            r = await client.post("/v1/rerank", json={"model": rerank_model, "query": q, "documents": pool[5:25]})
            reranked[q] = {x["index"]: x["relevance_score"] for x in r.json()["results"]}

        memory_before = service_memory_mb()
        plan = []
        for _ in range(requests):
            if rng.random() < 0.8:
                plan.append(("embed", rng.sample(pool, rng.randint(1, 8))))
            else:
                plan.append(("rerank", rng.choice(queries)))
        limit = asyncio.Semaphore(concurrency)
        latencies: list[float] = []
        # not_sent: left unsent when the time limit ran out (the soak stops by itself)
        outcome = {"ok": 0, "mismatched": 0, "errors": 0, "not_sent": 0, "status": {}}
        deadline = time.monotonic() + time_limit_s

        async def one(kind, arg):
            async with limit:
                if time.monotonic() > deadline:
                    outcome["not_sent"] += 1
                    return
                start = time.perf_counter()
                if kind == "embed":
                    r = await client.post("/v1/embeddings", json={"model": embed_model, "input": arg})
                else:
                    r = await client.post(
                        "/v1/rerank", json={"model": rerank_model, "query": arg, "documents": pool[5:25]}
                    )
                latencies.append(time.perf_counter() - start)
                outcome["status"][r.status_code] = outcome["status"].get(r.status_code, 0) + 1
                if r.status_code != 200:
                    outcome["errors"] += 1
                    return
                body = r.json()
                if kind == "embed":
                    good = len(body["data"]) == len(arg) and all(
                        np.allclose(d["embedding"], alone[t], atol=1e-4) for t, d in zip(arg, body["data"], strict=True)
                    )
                else:
                    got = {x["index"]: x["relevance_score"] for x in body["results"]}
                    good = got.keys() == reranked[arg].keys() and all(
                        abs(got[i] - reranked[arg][i]) < 1e-4 for i in got
                    )
                outcome["ok" if good else "mismatched"] += 1

        started = time.monotonic()
        await asyncio.gather(*(one(k, a) for k, a in plan))
        elapsed = time.monotonic() - started
    memory_after = service_memory_mb()
    lat = np.asarray(latencies) * 1000 if latencies else np.zeros(1)
    return {
        "requests": requests,
        "concurrency": concurrency,
        **{k: v for k, v in outcome.items() if k != "status"},
        "status_counts": {str(k): v for k, v in outcome["status"].items()},
        "seconds": round(elapsed, 1),
        "requests_per_s": round(requests / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
        "memory_before_mb": round(memory_before),
        "memory_after_mb": round(memory_after),
        "memory_growth_mb": round(memory_after - memory_before),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--url", help="an already running service (default: start configs/local.yaml's model)")
    args = parser.parse_args()
    if args.url:
        result = asyncio.run(run_soak(args.url, requests=args.requests, concurrency=args.concurrency))
    else:
        from ray import serve

        from serve_app.app import build_app
        from serve_app.cli import start_local_ray

        start_local_ray()
        port = 8123
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(
            build_app({"models": [{"name": "all-minilm-l6-v2", "deployment": {"num_cpus": 1, "torch_threads": 2}}]}),
            name="soak",
            route_prefix="/",
        )
        try:
            result = asyncio.run(
                run_soak(f"http://127.0.0.1:{port}", requests=args.requests, concurrency=args.concurrency)
            )
        finally:
            serve.shutdown()
    result["command"] = f"python -m bench.soak --requests {args.requests} --concurrency {args.concurrency}"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

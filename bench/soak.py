"""Soak: thousands of mixed embedding and rerank requests with concurrency against a running service.

Checks every answer against the same input sent alone (nothing lost, nothing swapped) and reports the
memory of the service's processes before and after. Used by tests/integration/test_soak.py (small) and run by hand:

    .venv/bin/python -m bench.soak --requests 5000 --concurrency 64   # starts its own local service
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from serve_app.loadgen import PreparedRequest, Sample, percentiles_ms, run_load

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
    documents = pool[5:25]
    rerank_model = rerank_model or embed_model
    async with httpx.AsyncClient(base_url=base_url, timeout=120, headers=headers or {}) as client:
        alone = {}
        for text in pool:
            r = await client.post("/v1/embeddings", json={"model": embed_model, "input": text})
            alone[text] = np.asarray(r.json()["data"][0]["embedding"], dtype=np.float32)
        queries = pool[:5]
        reranked = {}
        for q in queries:
            r = await client.post("/v1/rerank", json={"model": rerank_model, "query": q, "documents": documents})
            reranked[q] = {x["index"]: x["relevance_score"] for x in r.json()["results"]}

    plan: list[tuple[str, Any]] = []
    for _ in range(requests):
        if rng.random() < 0.8:
            plan.append(("embed", rng.sample(pool, rng.randint(1, 8))))
        else:
            plan.append(("rerank", rng.choice(queries)))
    prepared = [
        PreparedRequest(orjson.dumps({"model": embed_model, "input": arg}), path="/v1/embeddings")
        if kind == "embed"
        else PreparedRequest(
            orjson.dumps({"model": rerank_model, "query": arg, "documents": documents}), path="/v1/rerank"
        )
        for kind, arg in plan
    ]

    def check(sample: Sample, content: bytes) -> str:
        """Each answer against the same inputs sent alone: "ok" or "mismatched" (error answers: "error")."""
        if sample.status != 200:
            return "error"
        kind, arg = plan[sample.item]
        body = orjson.loads(content)
        if kind == "embed":
            good = len(body["data"]) == len(arg) and all(
                np.allclose(d["embedding"], alone[t], atol=1e-4) for t, d in zip(arg, body["data"], strict=True)
            )
        else:
            got = {x["index"]: x["relevance_score"] for x in body["results"]}
            good = got.keys() == reranked[arg].keys() and all(abs(got[i] - reranked[arg][i]) < 1e-4 for i in got)
        return "ok" if good else "mismatched"

    memory_before = service_memory_mb()
    # the load stops by itself at the time limit; what it left unsent is reported as not_sent
    result = await run_load(
        base_url,
        prepared,
        concurrency=concurrency,
        max_requests=requests,
        duration_s=time_limit_s,
        inspect=check,
        headers=headers,
        timeout_s=120,
    )
    memory_after = service_memory_mb()
    verdicts = Counter(s.detail for s in result.samples)
    answered = [s for s in result.samples if s.status is not None]
    p50, p99 = percentiles_ms([s.latency for s in answered] or [0.0], (50, 99))
    return {
        "requests": requests,
        "concurrency": concurrency,
        "ok": verdicts["ok"],
        "mismatched": verdicts["mismatched"],
        "errors": result.sent - verdicts["ok"] - verdicts["mismatched"],
        "not_sent": requests - result.sent,
        "status_counts": {str(k): v for k, v in result.status_counts().items() if k is not None},
        "seconds": round(result.seconds, 1),
        "requests_per_s": round(requests / result.seconds, 1),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
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
        from serve_app.local_ray import start_local_ray

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

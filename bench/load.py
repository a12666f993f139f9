"""HTTP load: an async httpx client with bounded concurrency, bounded in request count and in time.

Every request body is prepared before the clock starts; each of `concurrency` workers sends the next
body as soon as its previous answer arrives, until `max_requests` were sent or `duration_s` passed,
and then stops by itself. Latency is per request (send to full body read).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import httpx
import orjson

from bench.stats import latency_summary

HEADERS = {"content-type": "application/json"}


@dataclass(frozen=True)
class Workload:
    name: str
    label: str
    texts: list[list[str]]  # one entry per distinct request
    tokens: list[int]  # real tokens per distinct request (model tokenizer, after truncation)
    concurrency: int
    truncate: bool = False

    @property
    def inputs_per_request(self) -> int:
        return len(self.texts[0])


def _check_first(content: bytes, n_inputs: int) -> str | None:
    try:
        payload = orjson.loads(content)
        data = payload["data"]
    except Exception as exc:
        return f"unreadable answer: {exc}"
    if len(data) != n_inputs:
        return f"{len(data)} embeddings for {n_inputs} inputs"
    dims = {len(d["embedding"]) for d in data}
    if dims != {384}:
        return f"unexpected dimensions {dims}"
    return None


async def _drive(
    client: httpx.AsyncClient,
    url: str,
    bodies: list[bytes],
    w: Workload,
    duration_s: float,
    max_requests: int,
    max_errors: int = 50,
) -> dict:
    state = {"next": 0, "errors": 0, "inputs": 0, "tokens": 0, "first_error": None, "checked": False}
    latencies: list[float] = []
    start = time.perf_counter()
    deadline = start + duration_s

    async def worker() -> None:
        while True:
            i = state["next"]
            if i >= max_requests or time.perf_counter() >= deadline or state["errors"] >= max_errors:
                return
            state["next"] = i + 1
            k = i % len(bodies)
            t0 = time.perf_counter()
            try:
                r = await client.post(url, content=bodies[k], headers=HEADERS)
                ok = r.status_code == 200
                problem = None if ok else f"HTTP {r.status_code}: {r.text[:300]}"
                if ok and not state["checked"]:
                    state["checked"] = True
                    problem = _check_first(r.content, len(w.texts[k]))
                    ok = problem is None
            except httpx.HTTPError as exc:
                ok, problem = False, f"{type(exc).__name__}: {exc}"
            latencies.append(time.perf_counter() - t0)
            if ok:
                state["inputs"] += len(w.texts[k])
                state["tokens"] += w.tokens[k]
            else:
                state["errors"] += 1
                state["first_error"] = state["first_error"] or problem

    cpu0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(w.concurrency)))
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    return {
        "requests": state["next"],
        "errors": state["errors"],
        "first_error": state["first_error"],
        "seconds": elapsed,
        "inputs": state["inputs"],
        "tokens": state["tokens"],
        "inputs_per_s": state["inputs"] / elapsed if elapsed else 0.0,
        "tokens_per_s": state["tokens"] / elapsed if elapsed else 0.0,
        "requests_per_s": (state["next"] - state["errors"]) / elapsed if elapsed else 0.0,
        "latency": latency_summary(latencies),
        "client_cpu_cores": cpu / elapsed if elapsed else 0.0,
    }


def bodies_for(w: Workload, make_body) -> list[bytes]:
    return [orjson.dumps(make_body(texts, w.truncate)) for texts in w.texts]


async def run_workload(
    url: str,
    w: Workload,
    make_body,
    duration_s: float,
    max_requests: int,
    warmup_s: float,
    on_measure_start=None,
) -> dict:
    """Warm up (not counted), then measure; -> throughput, latency and client CPU of the measured part."""
    bodies = bodies_for(w, make_body)
    limits = httpx.Limits(max_connections=w.concurrency, max_keepalive_connections=w.concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120.0), trust_env=False) as client:
        if warmup_s > 0:
            warm = await _drive(client, url, bodies, w, warmup_s, max(w.concurrency * 4, 8))
            if warm["errors"] and not warm["inputs"]:
                return {**warm, "warmup_failed": True}
        context = on_measure_start() if on_measure_start else None
        result = await _drive(client, url, bodies, w, duration_s, max_requests)
        result["loadavg_1m"] = os.getloadavg()[0]
        if context is not None:
            result["_context"] = context
        return result


def run(url: str, w: Workload, make_body, duration_s: float, max_requests: int, warmup_s: float, on_start=None):
    """Synchronous entry: its own event loop (uvloop when installed, as a fast client should)."""
    try:
        import uvloop

        return uvloop.run(run_workload(url, w, make_body, duration_s, max_requests, warmup_s, on_start))
    except ImportError:  # pragma: no cover
        return asyncio.run(run_workload(url, w, make_body, duration_s, max_requests, warmup_s, on_start))

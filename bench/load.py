"""HTTP load for the benchmark: a workload's bodies through serve_app.loadgen (bounded concurrency, bounded in
request count and in time, latency per request from send to full body read), summarised for the report.

Every request body is prepared before the clock starts; each of `concurrency` workers sends the next
body as soon as its previous answer arrives, until `max_requests` were sent or `duration_s` passed,
and then stops by itself (or after 50 failed requests).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from bench.stats import latency_summary
from serve_app.loadgen import LoadGenerator, Sample, Transport, run_blocking


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


def _checker(w: Workload) -> Callable[[Sample, bytes], None]:
    """Marks error answers with their text, and checks the shape of the first good answer of a run."""
    checked = [False]

    def inspect(sample: Sample, content: bytes) -> None:
        if sample.status != 200:
            sample.error = f"HTTP {sample.status}: {content[:300].decode('utf-8', 'replace')}"
        elif not checked[0]:
            checked[0] = True
            sample.error = _check_first(content, len(w.texts[sample.item]))

    return inspect


async def _drive(
    gen: LoadGenerator, bodies: list[bytes], w: Workload, duration_s: float, max_requests: int, max_errors: int = 50
) -> dict:
    r = await gen.run(
        bodies, max_requests=max_requests, duration_s=duration_s, inspect=_checker(w), max_errors=max_errors
    )
    good = [s for s in r.samples if s.ok]
    inputs = sum(len(w.texts[s.item]) for s in good)
    tokens = sum(w.tokens[s.item] for s in good)
    first = r.first_failure()
    elapsed = r.seconds
    return {
        "requests": r.sent,
        "errors": r.failed,
        "first_error": first.error if first else None,
        "seconds": elapsed,
        "inputs": inputs,
        "tokens": tokens,
        "inputs_per_s": inputs / elapsed if elapsed else 0.0,
        "tokens_per_s": tokens / elapsed if elapsed else 0.0,
        "requests_per_s": r.ok / elapsed if elapsed else 0.0,
        "latency": latency_summary(r.latencies()),
        "client_cpu_cores": r.cpu_seconds / elapsed if elapsed else 0.0,
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
    transport: Transport = "auto",
) -> dict:
    """Warm up (not counted), then measure; -> throughput, latency and client CPU of the measured part."""
    bodies = bodies_for(w, make_body)
    async with LoadGenerator(url, concurrency=w.concurrency, timeout_s=120.0, transport=transport) as gen:
        if warmup_s > 0:
            warm = await _drive(gen, bodies, w, warmup_s, max(w.concurrency * 4, 8))
            if warm["errors"] and not warm["inputs"]:
                return {**warm, "warmup_failed": True}
        context = on_measure_start() if on_measure_start else None
        result = await _drive(gen, bodies, w, duration_s, max_requests)
        result["loadavg_1m"] = os.getloadavg()[0]
        if context is not None:
            result["_context"] = context
        return result


def run(url: str, w: Workload, make_body, duration_s: float, max_requests: int, warmup_s: float, on_start=None):
    """Synchronous entry: its own event loop (uvloop when installed, as a fast client should)."""
    return run_blocking(run_workload(url, w, make_body, duration_s, max_requests, warmup_s, on_start))

"""Small statistics helpers shared by the in-process and HTTP measurements."""

from __future__ import annotations

from collections.abc import Sequence

from serve_app.loadgen import percentiles_ms


def latency_summary(seconds: Sequence[float]) -> dict:
    """p50 / p90 / p99 / mean / max of per-request latencies, in milliseconds."""
    if not seconds:
        return {"n": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    p50, p90, p99 = percentiles_ms(seconds, (50, 90, 99))
    return {
        "n": len(seconds),
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "mean_ms": sum(seconds) * 1000.0 / len(seconds),
        "max_ms": max(seconds) * 1000.0,
    }

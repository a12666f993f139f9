"""Small statistics helpers shared by the in-process and HTTP measurements."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def latency_summary(seconds: Sequence[float]) -> dict:
    """p50 / p90 / p99 / mean / max of per-request latencies, in milliseconds."""
    if not seconds:
        return {"n": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {
        "n": int(ms.size),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(ms.mean()),
        "max_ms": float(ms.max()),
    }

"""Padding efficiency of our engine on the mixed-length workload: real tokens over processed (padded) tokens.

The service's batches are simulated as its batcher forms them under load (deployments/batching.py):
items in arrival order, each costing `ceil(tokens / (max_batch_tokens / max_batch_size))` slots, a batch
closing when the next item would pass `max_batch_size` slots; each batch is then planned by the engine
(deployments/engines/batching.py plan_micro_batches with the engine's max_batch_tokens) and measured
with padding_efficiency. Two references bracket it: the whole set planned at once (the best sorting can
do) and fixed batches of 32 in arrival order padded to their longest (no sorting at all).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from deployments.engines.micro_batches import padding_efficiency, plan_micro_batches


def simulate_batches(lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    slot = max(1.0, max_batch_tokens / max_batch_size)
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, n in enumerate(lengths):
        cost = min(max_batch_size, max(1, math.ceil(n / slot)))
        if current and used + cost > max_batch_size:
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += cost
    if current:
        batches.append(current)
    return batches


def _processed(lengths: Sequence[int], groups: Sequence[Sequence[int]]) -> int:
    return sum(max(lengths[i] for i in g) * len(g) for g in groups)


def service_padding(lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int) -> dict:
    real = sum(lengths)
    batches = simulate_batches(lengths, max_batch_tokens, max_batch_size)
    processed = 0
    micro = 0
    for batch in batches:
        sub = [lengths[i] for i in batch]
        groups = plan_micro_batches(sub, max_batch_tokens)
        micro += len(groups)
        processed += _processed(sub, groups)
    whole = plan_micro_batches(list(lengths), max_batch_tokens)
    naive = [list(range(s, min(s + 32, len(lengths)))) for s in range(0, len(lengths), 32)]
    return {
        "max_batch_tokens": max_batch_tokens,
        "max_batch_size": max_batch_size,
        "inputs": len(lengths),
        "real_tokens": real,
        "batches": len(batches),
        "mean_batch_inputs": len(lengths) / len(batches) if batches else 0.0,
        "micro_batches": micro,
        "efficiency": real / processed if processed else 1.0,
        "whole_set_planned_once": padding_efficiency(lengths, whole),
        "unsorted_batches_of_32": padding_efficiency(lengths, naive),
    }

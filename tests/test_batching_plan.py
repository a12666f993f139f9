"""Micro-batch planning and the Serve batch cost, without Ray."""

from __future__ import annotations

import random

import pytest

from deployments.engines.batching import pad_batch, padding_efficiency, plan_micro_batches


@pytest.mark.parametrize("seed", range(5))
def test_plan_covers_every_item_once_within_budget(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 300) for _ in range(rng.randint(1, 200))]
    budget = 1024
    groups = plan_micro_batches(lengths, budget, max_rows=32)
    flat = sorted(i for g in groups for i in g)
    assert flat == list(range(len(lengths)))
    for g in groups:
        longest = max(lengths[i] for i in g)
        assert len(g) <= 32
        assert longest * len(g) <= budget or len(g) == 1


def test_sorting_inside_the_budget_keeps_padding_low():
    rng = random.Random(0)
    lengths = [rng.randint(5, 500) for _ in range(256)]
    groups = plan_micro_batches(lengths, 8192)
    fifo = [list(range(i, min(i + 16, len(lengths)))) for i in range(0, len(lengths), 16)]
    assert padding_efficiency(lengths, groups) > 0.9
    assert padding_efficiency(lengths, groups) > padding_efficiency(lengths, fifo)


def test_lone_item_over_budget_still_runs():
    assert plan_micro_batches([5000, 10], 1024) == [[0], [1]]


def test_pad_sides():
    ids, mask = pad_batch([[1, 2, 3], [4]], pad_id=0, side="left")
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask = pad_batch([[1, 2, 3], [4]], pad_id=9, side="right")
    assert ids.tolist() == [[1, 2, 3], [4, 9, 9]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]

"""Micro-batch planning and the Serve batch cost, without Ray."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deployments.engines.micro_batches import pad_batch, padding_efficiency, plan_micro_batches


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


@settings(max_examples=200, database=None)
@given(
    lengths=st.lists(st.integers(1, 600), min_size=1, max_size=120),
    budget=st.integers(16, 20000),
    rows=st.one_of(st.none(), st.integers(1, 64)),
)
def test_plan_property(lengths, budget, rows):
    """Every item exactly once; each micro-batch within the budget and row cap, or a lone item."""
    groups = plan_micro_batches(lengths, budget, max_rows=rows)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        assert len(g) == 1 or max(lengths[i] for i in g) * len(g) <= budget
        assert rows is None or len(g) <= rows


@settings(max_examples=100, database=None)
@given(st.lists(st.lists(st.integers(0, 50), min_size=1, max_size=20), min_size=1, max_size=10), st.booleans())
def test_pad_property(seqs, left):
    ids, mask = pad_batch(seqs, pad_id=99, side="left" if left else "right")
    for row, seq in enumerate(seqs):
        kept = ids[row][mask[row].bool()].tolist()
        assert kept == seq and int(mask[row].sum()) == len(seq)

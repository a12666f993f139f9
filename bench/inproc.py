"""The in-process limit: our engine without Ray (tokenize + embed), and sentence-transformers as a reference."""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence

from bench.stats import latency_summary


def time_engine_pass(
    engine, texts: Sequence[str], chunk: int, truncate: bool, tokens_per_text: Sequence[int], time_budget_s: float
) -> dict:
    """Tokenize + embed `texts` in calls of `chunk` inputs, cycling over them until `time_budget_s` is spent.

    Stops at a call boundary (at least one call), so the time is bounded by the budget plus one call.
    """
    bounds = [(s, min(s + chunk, len(texts))) for s in range(0, len(texts), chunk)]
    done_inputs = done_tokens = calls = 0
    start = time.perf_counter()
    while True:
        lo, hi = bounds[calls % len(bounds)]
        engine.forward(engine.prepare(texts[lo:hi], truncate=truncate))
        done_inputs += hi - lo
        done_tokens += sum(tokens_per_text[lo:hi])
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= time_budget_s:
            break
    return {
        "inputs": done_inputs,
        "calls": calls,
        "seconds": elapsed,
        "inputs_per_s": done_inputs / elapsed,
        "tokens_per_s": done_tokens / elapsed,
    }


def idle_latency(engine, corpus: Sequence[str], requests: int, time_budget_s: float) -> dict:
    """One input per call, one call at a time (at least 10 calls, then bounded by count and time)."""
    latencies = []
    deadline = time.perf_counter() + time_budget_s
    for i in range(requests):
        if time.perf_counter() > deadline and len(latencies) >= 10:
            break
        t0 = time.perf_counter()
        engine.forward(engine.prepare([corpus[i % len(corpus)]]))
        latencies.append(time.perf_counter() - t0)
    return latency_summary(latencies)


def measure_engine(
    model_path: str,
    torch_threads: int,
    corpus: Sequence[str],
    corpus_tokens: Sequence[int],
    mixed: Sequence[str],
    mixed_tokens: Sequence[int],
    budgets: Sequence[int],
    chunk: int,
    pass_seconds: float,
    idle_requests: int,
    log=print,
) -> dict:
    """Our engine without Ray: a max_batch_tokens sweep on the corpus, the mixed set, 32/call, idle latency."""
    import torch

    from deployments.engines.runtime import choose_runtime, set_cpu_threads
    from deployments.engines.text_embedding import TextEmbeddingEngine

    set_cpu_threads(torch_threads)
    engine = TextEmbeddingEngine(model_path, runtime=choose_runtime("cpu"))
    # Warm-up: first calls allocate and pick kernels.
    for _ in range(3):
        engine.forward(engine.prepare(list(corpus[:64])))
    sweep = {}
    for budget in budgets:
        engine.max_batch_tokens = budget
        sweep[str(budget)] = r = time_engine_pass(engine, corpus, chunk, False, corpus_tokens, pass_seconds)
        log(f"  engine max_batch_tokens={budget}: {r['inputs_per_s']:.1f} inputs/s")
    best_budget = max(budgets, key=lambda b: sweep[str(b)]["inputs_per_s"])
    engine.max_batch_tokens = best_budget
    mixed_result = time_engine_pass(engine, mixed, chunk, True, mixed_tokens, pass_seconds)
    log(f"  engine mixed (budget {best_budget}): {mixed_result['tokens_per_s']:.0f} tokens/s")
    per32 = time_engine_pass(engine, corpus, 32, False, corpus_tokens, pass_seconds)
    log(f"  engine 32 inputs/call: {per32['inputs_per_s']:.1f} inputs/s")

    idle = idle_latency(engine, corpus, idle_requests, max(pass_seconds, 5.0))
    log(f"  engine idle: p50 {idle['p50_ms']:.2f} ms")
    result = {
        "torch_threads": torch.get_num_threads(),
        "chunk": chunk,
        "sweep": sweep,
        "best_max_batch_tokens": best_budget,
        "best": sweep[str(best_budget)],
        "mixed": mixed_result,
        "per_call_32": per32,
        "idle": idle,
    }
    del engine
    gc.collect()
    return result


def measure_engine_recheck(
    model_path: str,
    torch_threads: int,
    budget: int,
    corpus: Sequence[str],
    corpus_tokens: Sequence[int],
    mixed: Sequence[str],
    mixed_tokens: Sequence[int],
    chunk: int,
    pass_seconds: float,
) -> dict:
    """The best budget again (end of run), so the limit is the better of two moments on a noisy machine."""
    from deployments.engines.runtime import choose_runtime, set_cpu_threads
    from deployments.engines.text_embedding import TextEmbeddingEngine

    set_cpu_threads(torch_threads)
    engine = TextEmbeddingEngine(model_path, runtime=choose_runtime("cpu"), max_batch_tokens=budget)
    engine.forward(engine.prepare(list(corpus[:64])))
    out = {
        "corpus": time_engine_pass(engine, corpus, chunk, False, corpus_tokens, pass_seconds),
        "mixed": time_engine_pass(engine, mixed, chunk, True, mixed_tokens, pass_seconds),
        "idle": idle_latency(engine, corpus, 100, max(pass_seconds, 5.0)),
    }
    del engine
    gc.collect()
    return out


def measure_sentence_transformers(
    model_path: str, torch_threads: int, corpus: Sequence[str], corpus_tokens: Sequence[int], pass_seconds: float
) -> dict:
    """sentence-transformers `encode(batch_size=32)` on the corpus: the usual in-process reference."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(torch_threads)
    model = SentenceTransformer(model_path, device="cpu")
    model.encode(list(corpus[:64]), batch_size=32)
    texts, chunk = list(corpus), 128  # time-bounded at 128-input calls, cycling over the corpus
    done = tokens = calls = 0
    start = time.perf_counter()
    while True:
        lo = (calls * chunk) % len(texts)
        part = texts[lo : lo + chunk]
        model.encode(part, batch_size=32, show_progress_bar=False)
        done += len(part)
        tokens += sum(corpus_tokens[lo : lo + len(part)])
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= pass_seconds:
            break
    out = {
        "batch_size": 32,
        "inputs": done,
        "seconds": elapsed,
        "inputs_per_s": done / elapsed,
        "tokens_per_s": tokens / elapsed,
    }
    del model
    gc.collect()
    return out

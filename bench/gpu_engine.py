"""Engine throughput on one GPU, no Ray: `python -m bench.gpu_engine` (`--smoke`: tiny shapes, any device).

Random weights in the real shapes of Qwen3-Embedding-0.6B and bge-m3 (XLM-R large), saved with a small
byte-level tokenizer and loaded by our TextEmbeddingEngine, so the real loading, padding, forward and pooling
code runs; the inputs are token ids of random lengths (log-uniform, 16 to 1024), so no hub download is needed.
Three ways to batch the same inputs, each timed on the same GPU:

- `ours`: deployments/engines/batching.py (length-sorted micro-batches cut by token budget and length bands);
- `st-style`: sentence-transformers' policy (sorted by length, batches of 32 padded to their longest);
- `packed`: every micro-batch concatenated without padding, varlen attention through transformers'
  flash_attention_2 padding-free path (position_ids restart per sequence); Qwen3 shape only, needs flash-attn.

Reports real tokens/s, padding efficiency, and useful TFLOP/s against the bf16 dense peak (H100/H200: 989;
other GPUs: --peak-tflops). Writes bench/results/gpu_engine.json (or --out).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

SHAPES = {
    "qwen3-embedding-0.6b": dict(
        family="qwen3",
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151669,
    ),
    "bge-m3": dict(
        family="xlmr",
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        vocab_size=250002,
    ),
}
SMOKE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=4096)


def _tokenizer(specials: list[str]):
    """A tiny byte-level tokenizer: the engine needs one to load; the benchmark feeds token ids directly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in pre_tokenizers.ByteLevel.alphabet():
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return tok


def build_model_dir(name: str, directory: Path, smoke: bool) -> tuple[Path, dict]:
    import torch
    from transformers import AutoModel, PreTrainedTokenizerFast, Qwen3Config, XLMRobertaConfig

    shape = dict(SHAPES[name])
    family = shape.pop("family")
    if smoke:
        shape.update(SMOKE, **({"num_key_value_heads": 2, "head_dim": 16} if family == "qwen3" else {}))
    if family == "qwen3":
        tok = _tokenizer(["<|endoftext|>"])
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>", padding_side="left"
        )
        config = Qwen3Config(**shape, max_position_embeddings=32768, eos_token_id=0, pad_token_id=0)
    else:
        tok = _tokenizer(["<s>", "<pad>", "</s>", "<unk>"])
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
        )
        config = XLMRobertaConfig(**shape, max_position_embeddings=8194, type_vocab_size=1, pad_token_id=1)
    fast.model_max_length = 8192
    fast.save_pretrained(directory)
    torch.manual_seed(0)
    model = AutoModel.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(directory)
    params = sum(p.numel() for n, p in model.named_parameters() if "embed" not in n)
    return directory, {"family": family, "non_embedding_params": params, **shape}


def useful_flops(lengths: list[int], shape: dict) -> float:
    """Forward FLOPs of the real tokens: 2 x parameters per token, plus attention (QK^T and AV) per layer."""
    heads = shape["num_attention_heads"] * shape.get("head_dim", shape["hidden_size"] // shape["num_attention_heads"])
    linear = 2 * shape["non_embedding_params"] * sum(lengths)
    attention = 4 * shape["num_hidden_layers"] * heads * sum(n * n for n in lengths)
    return float(linear + attention)


def st_style_groups(lengths: list[int], batch: int = 32) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch] for i in range(0, len(order), batch)]


def time_groups(engine, items, groups, repeats: int, packed: bool = False) -> float:
    import torch

    def one_pass():
        for g in groups:
            if packed:
                _packed_forward(engine, [items[i].ids for i in g])
            else:
                engine._forward([items[i].ids for i in g])
        if engine.runtime.is_cuda:
            torch.cuda.synchronize()

    with torch.inference_mode():
        one_pass()  # warm-up (kernels, allocator)
        best = math.inf
        for _ in range(repeats):
            start = time.perf_counter()
            one_pass()
            best = min(best, time.perf_counter() - start)
    return best


def _packed_forward(engine, sequences):
    """All sequences in one row, no padding; position_ids restart per sequence (flash-attn varlen)."""
    import torch

    ids = torch.tensor([t for s in sequences for t in s], device=engine.runtime.device).unsqueeze(0)
    positions = torch.cat([torch.arange(len(s), device=engine.runtime.device) for s in sequences]).unsqueeze(0)
    hidden = engine.model(input_ids=ids, position_ids=positions).last_hidden_state[0]
    ends = torch.tensor([len(s) for s in sequences], device=hidden.device).cumsum(0) - 1
    return hidden[ends]  # last-token pooling (Qwen3), one row per sequence


def measure(name: str, args, workdir: Path) -> dict:
    import torch

    from deployments.engines.micro_batches import plan_micro_batches
    from deployments.engines.runtime import choose_runtime
    from deployments.engines.text_embedding import ENCODER, QWEN3_EMBEDDING, TextEmbeddingEngine
    from deployments.engines.tokenization import Tokens

    path, shape = build_model_dir(name, workdir / name, args.smoke)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # flash-attn when installed (as the service picks it); --no-packed measures SDPA instead
    runtime = choose_runtime(device, "bfloat16" if device == "cuda" else None, None if args.packed_attn else "sdpa")
    recipe = QWEN3_EMBEDDING if shape["family"] == "qwen3" else ENCODER
    engine = TextEmbeddingEngine(str(path), recipe, runtime=runtime, max_tokens=8192, max_batch_tokens=args.budget)
    rng = random.Random(7)
    hi = 64 if args.smoke else args.max_len
    lengths = [int(math.exp(rng.uniform(math.log(16), math.log(hi)))) for _ in range(args.inputs)]
    vocab = shape["vocab_size"]
    items = [Tokens(ids=[rng.randrange(10, vocab) for _ in range(n)], full_length=n) for n in lengths]
    real = sum(lengths)
    flops = useful_flops(lengths, shape)
    on_hopper = device == "cuda" and any(g in torch.cuda.get_device_name() for g in ("H100", "H200"))
    peak = args.peak_tflops or (989.4 if on_hopper else None)

    plans = {
        "ours": plan_micro_batches(lengths, args.budget),
        "st-style": st_style_groups(lengths),
    }
    out: dict = {
        "shape": shape,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "attn_implementation": runtime.attn_implementation,
        "inputs": len(lengths),
        "real_tokens": real,
        "peak_bf16_tflops": peak,
        "modes": {},
    }
    for mode, groups in plans.items():
        processed = sum(max(lengths[i] for i in g) * len(g) for g in groups)
        seconds = time_groups(engine, items, groups, args.repeats)
        out["modes"][mode] = _row(real, processed, flops, seconds, peak, len(groups))
    if shape["family"] == "qwen3" and runtime.attn_implementation == "flash_attention_2":
        try:
            groups = plans["ours"]
            seconds = time_groups(engine, items, groups, args.repeats, packed=True)
            out["modes"]["packed"] = _row(real, real, flops, seconds, peak, len(groups))
            with torch.inference_mode():  # same vectors as the padded path?
                g = groups[0][:8]
                a = _packed_forward(engine, [items[i].ids for i in g]).float()
                b = torch.as_tensor(engine.pooled([items[i] for i in g]), device=a.device)
                out["modes"]["packed"]["cosine_vs_padded_min"] = float(
                    torch.nn.functional.cosine_similarity(a, b, dim=1).min()
                )
        except Exception as exc:  # recorded, not hidden: the packed path depends on the flash-attn build
            out["modes"]["packed"] = {"error": f"{type(exc).__name__}: {exc}"}
    else:
        out["modes"]["packed"] = {"skipped": "needs CUDA, flash-attn and the Qwen3 shape"}
    return out


def _row(real: int, processed: int, flops: float, seconds: float, peak: float | None, forwards: int) -> dict:
    row = {
        "seconds": round(seconds, 4),
        "forward_calls": forwards,
        "real_tokens_per_s": round(real / seconds),
        "padding_efficiency": round(real / processed, 3),
        "useful_tflops": round(flops / seconds / 1e12, 2),
    }
    if peak:
        row["share_of_bf16_peak"] = round(flops / seconds / 1e12 / peak, 3)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_engine", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes (checks the script, any device)")
    parser.add_argument("--models", default=",".join(SHAPES))
    parser.add_argument("--inputs", type=int, default=2048)
    parser.add_argument("--max-len", type=int, default=1024)
    parser.add_argument("--budget", type=int, default=32768, help="max_batch_tokens of a micro-batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak of a GPU not in the table")
    parser.add_argument("--no-packed", dest="packed_attn", action="store_false")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.inputs, args.repeats = min(args.inputs, 64), 1

    record = {
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python -m bench.gpu_engine " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="gpu-engine-") as tmp:
        for name in args.models.split(","):
            record["models"][name] = measure(name, args, Path(tmp))
            for mode, row in record["models"][name]["modes"].items():
                print(f"{name:22s} {mode:9s} {row}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / ("gpu_engine-smoke.json" if args.smoke else "gpu_engine.json")
    target.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

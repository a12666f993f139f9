"""Where and how a model runs: device, dtype, attention kernel and CPU threads.

Chosen once at load so every engine follows the same rule: CUDA + bf16 + flash-attention-2 when the
hardware and the package are there, otherwise sdpa + fp32 on the CPU.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype
    attn_implementation: str

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


def _flash_attn_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def choose_runtime(device: str | None = None, dtype: str | None = None, attn: str | None = None) -> Runtime:
    """Pick the runtime; explicit arguments (from the model's config) win over detection."""
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    default_dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    torch_dtype = getattr(torch, dtype) if dtype else default_dtype
    if attn:
        attn_impl = attn
    elif dev.type == "cuda" and torch_dtype in (torch.bfloat16, torch.float16) and _flash_attn_available():
        attn_impl = "flash_attention_2"
    else:
        attn_impl = "sdpa"
    return Runtime(device=dev, dtype=torch_dtype, attn_implementation=attn_impl)


def set_cpu_threads(num_threads: float | int | None) -> int:
    """Match torch's intra-op threads to the CPUs this process was given.

    Ray sets OMP_NUM_THREADS to the replica's `num_cpus` (1 for fractional values), which would pin
    torch to one thread; the caller passes its allotment explicitly instead.
    """
    if num_threads is None or num_threads <= 0:
        num_threads = os.cpu_count() or 1
    n = max(1, int(num_threads))
    torch.set_num_threads(n)
    return n


def cap_gpu_memory(runtime: Runtime, fraction: float | None) -> None:
    """Hold a fractional-GPU replica to its share: Ray only sets CUDA_VISIBLE_DEVICES."""
    if runtime.is_cuda and fraction and 0 < fraction < 1:
        torch.cuda.set_per_process_memory_fraction(fraction, runtime.device)

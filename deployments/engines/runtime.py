"""Where and how a model runs: device, dtype, attention kernel and CPU threads.

Chosen once at load so every engine follows the same rule: CUDA + bf16 + flash-attention-2 when the
hardware and the package are there, otherwise sdpa + fp32 on the CPU.
"""

from __future__ import annotations

import importlib.util
import os
import threading
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


def dense_parameters(model: torch.nn.Module) -> int:
    """Parameters a token passes through (embedding tables are lookups, not compute)."""
    lookups = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    return max(0, sum(p.numel() for p in model.parameters()) - lookups)


class PassThreads:
    """Torch intra-op threads chosen per forward pass, by the pass's size and what else is running.

    A CPU replica given n threads runs up to n passes at once (deployments/shell.py). A pass that runs alone
    and is large takes all n threads (lowest latency). A pass that shares the replica with other passes, or
    is small (a near-free model, a few short queries), runs on one thread: one-thread passes side by side
    do the same work with up to ~15% less CPU than one n-thread pass (`python -m bench.pass_threads`): no
    OpenMP fork/join per op, no workers spinning or sleeping on cores the router needs. "Large" is
    2 x dense parameters x tokens (a forward's FLOPs) above `small_pass_flops`, about a millisecond of one core.

    Called on the pass's own executor thread: OpenMP's thread count is per calling thread.
    """

    SMALL_PASS_FLOPS = 1e8

    def __init__(self, max_threads: int, dense_params: int, small_pass_flops: float = SMALL_PASS_FLOPS) -> None:
        self.max_threads = max(1, max_threads)
        self.dense_params = dense_params
        self.small_pass_flops = small_pass_flops
        self._mine = threading.local()

    def is_large(self, tokens: int) -> bool:
        """Worth more than one thread, or a pass of its own beside another."""
        return 2 * self.dense_params * tokens >= self.small_pass_flops

    def threads_for(self, tokens: int, alone: bool = True) -> int:
        if self.max_threads == 1 or not alone or not self.is_large(tokens):
            return 1
        return self.max_threads

    def set_for(self, tokens: int, alone: bool = True) -> int:
        n = self.threads_for(tokens, alone)
        if getattr(self._mine, "threads", None) != n:
            torch.set_num_threads(n)
            self._mine.threads = n
        return n


def cap_gpu_memory(runtime: Runtime, fraction: float | None) -> None:
    """Hold a fractional-GPU replica to its share: Ray only sets CUDA_VISIBLE_DEVICES."""
    if runtime.is_cuda and fraction and 0 < fraction < 1:
        torch.cuda.set_per_process_memory_fraction(fraction, runtime.device)

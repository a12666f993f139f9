"""What every model deployment does the same way: threads, engine options, Serve options."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from serve_app.config import ModelSpec


class Executors:
    """One thread for the model (torch parallelizes inside it), others for tokenization and decoding.

    Keeping work off the replica's event loop lets it accept requests and tokenize the next batch while
    the current one computes.
    """

    def __init__(self, name: str, prep_threads: int = 2) -> None:
        self.model = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-model")
        self.prep = ThreadPoolExecutor(max_workers=prep_threads, thread_name_prefix=f"{name}-prep")

    async def run_model(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.model, fn, *args)

    async def run_prep(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.prep, fn, *args)


def engine_runtime(spec: ModelSpec):
    """Device/dtype/attention and CPU threads for this replica (imports torch: replica side only)."""
    from deployments.engines.runtime import cap_gpu_memory, choose_runtime, set_cpu_threads

    runtime = choose_runtime(spec.device, spec.dtype, spec.attn_implementation)
    threads = spec.deployment.torch_threads or max(1, round(spec.deployment.num_cpus))
    set_cpu_threads(threads)
    cap_gpu_memory(runtime, spec.deployment.num_gpus)
    return runtime


def serve_options(spec: ModelSpec) -> dict[str, Any]:
    """Ray Serve `.options()` for a model's deployment, from its spec."""
    d, b = spec.deployment, spec.batching
    in_flight = b.max_batch_size * b.max_concurrent_batches
    opts: dict[str, Any] = {
        "name": spec.name,
        "ray_actor_options": {"num_cpus": d.num_cpus, "num_gpus": d.num_gpus},
        # A request carries several items; room for two batches' worth of single-input requests.
        "max_ongoing_requests": d.max_ongoing_requests or max(2 * in_flight, 16),
        "max_queued_requests": d.max_queued_requests,
        "user_config": {"batching": b.model_dump()},
    }
    if d.autoscaling_config is not None:
        opts["autoscaling_config"] = d.autoscaling_config
    elif d.num_replicas is not None:
        opts["num_replicas"] = d.num_replicas
    for key in ("health_check_period_s", "health_check_timeout_s", "graceful_shutdown_timeout_s"):
        value = getattr(d, key)
        if value is not None:
            opts[key] = value
    return opts


def replica_facts(spec: ModelSpec, **extra: Any) -> dict[str, Any]:
    """Where this replica runs and what it loaded (for /ready, placement checks and debugging)."""
    import ray

    ctx = ray.get_runtime_context()
    return {
        "name": spec.name,
        "node_id": ctx.get_node_id(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "pid": os.getpid(),
        **extra,
    }

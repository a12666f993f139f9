"""What every model deployment does the same way: threads, engine options, Serve options."""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from serve_app.config import ModelSpec

log = logging.getLogger("ray.serve")


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
    opts: dict[str, Any] = {
        "name": spec.name,
        "ray_actor_options": {"num_cpus": d.num_cpus, "num_gpus": d.num_gpus},
        # Room for the batch computing, a full next one waiting, and as much again arriving.
        "max_ongoing_requests": d.max_ongoing_requests or max(4 * b.max_batch_size, 16),
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


class BatchedModel:
    """The shell every model deployment shares: engine, threads, token-budget batcher, live batching
    updates, per-item failure mapping and describe(). Subclasses give `build_engine` and `_forward`."""

    prep_threads = 2

    def __init__(self, spec: dict) -> None:
        from deployments.batching import TokenBudgetBatcher
        from deployments.metrics import ModelMetrics

        self.spec = ModelSpec.model_validate(spec)
        self.engine = self.build_engine(self.spec)
        self.executors = Executors(self.spec.name, prep_threads=self.prep_threads)
        b = self.spec.batching
        self.batcher = TokenBudgetBatcher(
            self._run_batch,
            max_batch_tokens=b.max_batch_tokens,
            max_batch_size=b.max_batch_size,
            batch_wait_timeout_s=b.batch_wait_timeout_s,
            max_concurrent_batches=b.max_concurrent_batches,
            metrics=ModelMetrics(self.spec.name),
        )

    def build_engine(self, spec: ModelSpec):
        raise NotImplementedError

    def _forward(self, items: list) -> list:
        raise NotImplementedError

    def reconfigure(self, user_config: dict) -> None:
        """Serve's user_config: batching settings, applied live."""
        from serve_app.config import BatchingConfig

        b = BatchingConfig.model_validate(user_config.get("batching", {}))
        self.engine.max_batch_tokens = b.max_batch_tokens
        self.batcher.configure(b.max_batch_tokens, b.max_batch_size, b.batch_wait_timeout_s)
        log.info("%s batching: %s", self.spec.name, b.model_dump())

    async def _run_batch(self, items: list) -> list:
        from deployments.batching import run_isolated
        from serve_app.errors import ServiceError

        results = await self.executors.run_model(run_isolated, self._forward, items)
        return [
            ServiceError(f"inference failed: {r}", status=500, type="server_error", code="inference_failed")
            if isinstance(r, Exception) and not isinstance(r, ServiceError)
            else r
            for r in results
        ]

    def check_health(self) -> None:
        """Serve calls this periodically; a replica whose model thread is gone is replaced."""
        if self.engine is None or self.executors.model._shutdown:
            raise RuntimeError(f"{self.spec.name}: model thread is not running")

    def describe(self) -> dict:
        return replica_facts(
            self.spec,
            max_tokens=self.engine.max_tokens,
            dimensions=getattr(self.engine, "dimensions", None),
            computed_items=self.batcher.computed_items,
            batching=self.batcher.settings(),
        )

"""What every local model deployment does the same way: load the family's engine, threads, token-budget
batching, live batching updates, per-item failure isolation and describe().

A deployment shell (deployments/embedding.py, deployments/reranking.py) adds only the call it answers. The
engine is found through the family registry and spoken to through engines/protocol.py, never by probing.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray

from deployments.batcher import TokenBudgetBatcher, run_isolated
from deployments.engines.protocol import InputError
from deployments.errors import Cancelled, DeadlineExceeded, InferenceFailed, InvalidRequest, ServiceError
from deployments.metrics import ModelMetrics
from deployments.spec import BatchingConfig, ModelSpec

log = logging.getLogger("ray.serve")

ENGINES_PACKAGE = "deployments.engines"


class Executors:
    """Threads for the model (one per concurrent pass; torch parallelizes inside each), others for tokenization
    and decoding.

    Keeping work off the replica's event loop lets it accept requests and tokenize the next batch while
    the current one computes.
    """

    def __init__(self, name: str, prep_threads: int = 2, model_threads: int = 1) -> None:
        self.model = ThreadPoolExecutor(max_workers=model_threads, thread_name_prefix=f"{name}-model")
        self.prep = ThreadPoolExecutor(max_workers=prep_threads, thread_name_prefix=f"{name}-prep")

    async def run_model(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.model, fn, *args)

    async def run_prep(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.prep, fn, *args)


def engine_class(spec: ModelSpec) -> type:
    """The engine class the family registry names (`module:Class` under deployments.engines)."""
    module_name, _, class_name = (spec.recipe.engine_for(spec.outputs or ()) or "").partition(":")
    if not module_name or not class_name:
        raise ValueError(f"family {spec.family} runs no local engine")
    return getattr(importlib.import_module(f"{ENGINES_PACKAGE}.{module_name}"), class_name)


def load_engine(spec: ModelSpec):
    """Load this replica's engine: runtime (device, dtype, attention, CPU threads, GPU share) + recipe."""
    from deployments.engines.protocol import EngineOptions
    from deployments.engines.runtime import cap_gpu_memory, choose_runtime, set_cpu_threads

    runtime = choose_runtime(spec.device, spec.dtype, spec.attn_implementation)
    set_cpu_threads(cpu_threads(spec))
    cap_gpu_memory(runtime, spec.deployment.num_gpus)
    v = spec.vision
    options = EngineOptions(
        runtime=runtime,
        max_tokens=spec.max_tokens,
        max_batch_tokens=spec.batching.max_batch_tokens,
        trust_remote_code=spec.trust_remote_code,
        pooling=spec.pooling,
        default_instruction=spec.default_instruction,
        outputs=tuple(spec.outputs or ("dense",)),
        vision=v.model_dump() if spec.recipe.multimodal else {},
        recipe=dict(spec.recipe.engine_options),
    )
    return engine_class(spec).load(spec.source, options)


def cpu_threads(spec: ModelSpec) -> int:
    return spec.deployment.torch_threads or max(1, round(spec.deployment.num_cpus))


def pass_threads(spec: ModelSpec, engine: Any):
    """Threads per pass for a CPU replica (None on a GPU, where the CPU only launches kernels)."""
    from deployments.engines.runtime import PassThreads, dense_parameters

    model = getattr(engine, "model", None)
    first = next(model.parameters(), None) if model is not None else None
    if first is None or first.device.type != "cpu":
        return None
    return PassThreads(cpu_threads(spec), dense_parameters(model))


def run_pass(threads, forward, items: list, alone: bool = True) -> list:
    """One forward pass on a model thread, with the threads its size (and the passes beside it) call for."""
    if threads is not None:
        threads.set_for(sum(getattr(item, "cost", 0) for item in items), alone)
    return run_isolated(forward, items)


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
        "logging_config": {"enable_access_log": d.access_log},
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
    ctx = ray.get_runtime_context()
    return {
        "name": spec.name,
        "node_id": ctx.get_node_id(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "pid": os.getpid(),
        **extra,
    }


async def answer_each(answer, calls: list) -> list:
    """One downstream call that carries several callers' calls (the router's coalescer): each call answered on
    its own, as if sent alone; a failure stays with its call (a ServiceError in its place)."""
    results = await asyncio.gather(*(answer(call) for call in calls), return_exceptions=True)
    return [as_service_error(r) if isinstance(r, BaseException) else r for r in results]


def as_service_error(exc: BaseException) -> ServiceError:
    """A failure that travels back inside a reply list: always a domain error the router can word."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, asyncio.CancelledError):
        return Cancelled("The request was cancelled.")
    log.error("call failed: %r", exc)
    return InferenceFailed(f"inference failed: {exc}")


def past_deadline(deadline: float | None) -> None:
    if deadline is not None and time.time() > deadline:
        raise DeadlineExceeded("The request ran past its deadline before the model got to it.")


def too_long_error(index: int, tokens: int, limit: int, param: str = "input") -> InvalidRequest:
    return InvalidRequest(
        f"{param}[{index}] has {tokens} tokens, more than the model's limit of {limit}. "
        "Shorten it or set truncate=true to cut it.",
        param=f"{param}[{index}]",
        code="context_length_exceeded",
    )


def input_error(exc: InputError, param: str) -> InvalidRequest:
    """An engine's refusal of one input, as the client's error naming that input."""
    where = param if exc.index is None else f"{param}[{exc.index}]"
    code = "context_length_exceeded" if exc.too_long else "invalid_input"
    return InvalidRequest(f"{where}: {exc}", param=where, code=code)


class BatchedModel:
    """The shell every local model deployment shares: engine, threads, token-budget batcher, live batching
    updates, per-item failure mapping and describe()."""

    prep_threads = 2

    def __init__(self, spec: dict) -> None:
        self.spec = ModelSpec.model_validate(spec)
        self.engine = load_engine(self.spec)
        self.capabilities = self.engine.capabilities
        self.threads = pass_threads(self.spec, self.engine)
        # A CPU replica runs one pass per thread it was given, side by side (see PassThreads); a GPU one pass.
        passes = self.threads.max_threads if self.threads is not None else 1
        self._passes_running = 0
        prep_threads = 4 if self.spec.recipe.multimodal else self.prep_threads  # media decoding is I/O bound
        self.executors = Executors(self.spec.name, prep_threads=prep_threads, model_threads=passes)
        b = self.spec.batching
        self.batcher = TokenBudgetBatcher(
            self._run_batch,
            max_batch_tokens=b.max_batch_tokens,
            max_batch_size=b.max_batch_size,
            batch_wait_timeout_s=b.batch_wait_timeout_s,
            max_concurrent_batches=b.max_concurrent_batches,
            parallel_passes=passes,
            worth_a_pass=None if self.threads is None else self.threads.is_large,
            metrics=ModelMetrics(self.spec.name),
        )

    def reconfigure(self, user_config: dict) -> None:
        """Serve's user_config: batching settings, applied live."""
        b = BatchingConfig.model_validate(user_config.get("batching", {}))
        self.engine.max_batch_tokens = b.max_batch_tokens
        self.batcher.configure(b.max_batch_tokens, b.max_batch_size, b.batch_wait_timeout_s)
        log.info("%s batching: %s", self.spec.name, b.model_dump())

    async def _run_batch(self, items: list) -> list:
        alone = self._passes_running == 0 and not self.batcher.pass_beside
        self._passes_running += 1
        try:
            results = await self.executors.run_model(run_pass, self.threads, self.engine.forward, items, alone)
        finally:
            self._passes_running -= 1
        return [
            InferenceFailed(f"inference failed: {r}")
            if isinstance(r, Exception) and not isinstance(r, ServiceError)
            else r
            for r in results
        ]

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """The model's own token ids for plain texts (what /tokenize shows)."""
        return self.engine.token_ids(texts)

    def check_health(self) -> None:
        """Serve calls this periodically; a replica whose model thread is gone is replaced."""
        if self.engine is None or self.executors.model._shutdown:
            raise RuntimeError(f"{self.spec.name}: model thread is not running")

    def describe(self) -> dict:
        return replica_facts(
            self.spec,
            max_tokens=self.capabilities.max_tokens,
            dimensions=self.capabilities.dimensions,
            outputs=list(self.capabilities.outputs),
            computed_items=self.batcher.computed_items,
            lanes={"computed": dict(self.batcher.computed_by_lane), "waiting": self.batcher.waiting()},
            batching=self.batcher.settings(),
        )

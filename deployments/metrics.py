"""Prometheus metrics of the model deployments (exported by Ray's metrics agent, ray_ prefix).

Every metric carries the model name, plus the deployment / replica / application tags Ray Serve adds.
Scrape each Ray node's metrics export port (`embedserve serve` puts it on 127.0.0.1:9101).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ray.serve import metrics

_TIME_BOUNDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]


class ModelMetrics:
    def __init__(self, model: str) -> None:
        self.tags = {"model": model}
        keys = ("model",)
        self.requests = metrics.Counter(
            "embedserve_model_requests_total", "Calls a model deployment answered, by outcome.", ("model", "outcome")
        )
        self.inputs = metrics.Counter("embedserve_inputs_total", "Inputs (or rerank pairs) computed.", keys)
        self.tokens = metrics.Counter("embedserve_tokens_total", "Real tokens computed (no padding).", keys)
        self.batch_size = metrics.Histogram(
            "embedserve_batch_size", "Items in one batch.", [1, 2, 4, 8, 16, 32, 64, 128, 256], keys
        )
        self.padding = metrics.Histogram(
            "embedserve_batch_padding_efficiency",
            "Real tokens over processed (padded) tokens of one batch.",
            [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 1.0],
            keys,
        )
        self.queue_wait = metrics.Histogram(
            "embedserve_queue_wait_seconds", "From an item's enqueue to its batch's start.", _TIME_BOUNDS, keys
        )
        self.forward = metrics.Histogram(
            "embedserve_forward_seconds", "Model time of one batch (forward + pooling).", _TIME_BOUNDS, keys
        )
        lane_keys = ("model", "lane")
        self.lane_inputs = metrics.Counter(
            "embedserve_lane_inputs_total", "Inputs (or rerank pairs) computed, by priority lane.", lane_keys
        )
        self.lane_queue_wait = metrics.Histogram(
            "embedserve_lane_queue_wait_seconds",
            "From an item's enqueue to its batch's start, by priority lane (interactive, bulk).",
            _TIME_BOUNDS,
            lane_keys,
        )

    def call(self, outcome: str) -> None:
        self.requests.inc(tags={"model": self.tags["model"], "outcome": outcome})

    def batch(
        self,
        lengths: Sequence[int],
        enqueued: Sequence[float],
        padded_tokens: int,
        seconds: float,
        lanes: Sequence[str] | None = None,
    ) -> None:
        """One computed batch; `lanes`: each item's priority lane, in the order of `enqueued`."""
        now = time.monotonic()
        real = sum(lengths)
        tags = self.tags
        self.inputs.inc(len(lengths), tags=tags)
        self.tokens.inc(real, tags=tags)
        self.batch_size.observe(len(lengths), tags=tags)
        if padded_tokens:
            self.padding.observe(real / padded_tokens, tags=tags)
        started = now - seconds
        for t in enqueued:
            self.queue_wait.observe(max(0.0, started - t), tags=tags)
        self.forward.observe(seconds, tags=tags)
        if lanes is not None:
            counts: dict[str, int] = {}
            for lane, t in zip(lanes, enqueued, strict=True):
                counts[lane] = counts.get(lane, 0) + 1
                self.lane_queue_wait.observe(max(0.0, started - t), tags={**tags, "lane": lane})
            for lane, n in counts.items():
                self.lane_inputs.inc(n, tags={**tags, "lane": lane})

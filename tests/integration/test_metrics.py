"""Prometheus metrics exported through Ray's metrics agent on 127.0.0.1."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from helpers.paths import REPO

pytestmark = pytest.mark.integration

WANTED = [
    "ray_embedserve_inputs_total",
    "ray_embedserve_tokens_total",
    "ray_embedserve_batch_size_bucket",
    "ray_embedserve_batch_padding_efficiency_bucket",
    "ray_embedserve_queue_wait_seconds_bucket",
    "ray_embedserve_forward_seconds_bucket",
    "ray_embedserve_model_requests_total",
    "ray_embedserve_http_requests_total",
    "ray_embedserve_http_request_seconds_bucket",
]


def test_metrics_per_model(serve_app):
    for _ in range(3):
        r = httpx.post(
            serve_app["base_url"] + "/v1/embeddings",
            json={"model": "tiny-xlmr", "input": ["metrics one", "metrics two"]},
            timeout=60,
        )
        assert r.status_code == 200
    deadline = time.monotonic() + 60
    while True:
        text = httpx.get(serve_app["metrics_url"], timeout=10).text
        missing = [m for m in WANTED if not re.search(rf'^{m}{{[^}}]*model="tiny-xlmr"|^{m}{{', text, re.M)]
        model_rows = re.findall(r'^ray_embedserve_inputs_total\{[^}]*model="tiny-xlmr"[^}]*\} (\S+)', text, re.M)
        if not missing and model_rows and float(model_rows[0]) >= 6:
            break
        assert time.monotonic() < deadline, f"missing: {missing}"
        time.sleep(2)


def test_grafana_dashboard_uses_exported_metrics():
    import json

    dashboard = json.loads((REPO / "cluster" / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for name in WANTED:
        base = name.removesuffix("_bucket")
        assert base in exprs or name in exprs, name

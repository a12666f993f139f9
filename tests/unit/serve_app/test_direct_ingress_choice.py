"""`embedserve serve` picks Serve's direct ingress (the router answers HTTP itself) only for one router replica,
and moves the proxy off the configured port (serve_app/cli.py; no Ray). The live check is
tests/integration/test_direct_ingress.py."""

from __future__ import annotations

from pathlib import Path

import yaml
from helpers.paths import REPO
from helpers.serve_configs import serve_config

from serve_app.cli import _with_spare_proxy_port, direct_ingress_port


def test_direct_ingress_only_for_one_router_replica():
    local = yaml.safe_load((REPO / "configs" / "local.yaml").read_text())
    assert direct_ingress_port(local) == 8000
    assert direct_ingress_port(serve_config(9123)) == 9123
    assert direct_ingress_port(serve_config(apps=[{"args": {"router": {"num_replicas": 1}}}])) == 8000
    assert direct_ingress_port(serve_config(apps=[{"args": {}}, {"args": {}}])) is None  # two ingress apps
    assert direct_ingress_port(serve_config(apps=[{"args": {"router": {"num_replicas": 2}}}])) is None
    autoscaled = {"router": {"autoscaling_config": {"min_replicas": 1, "max_replicas": 4}}}
    assert direct_ingress_port(serve_config(apps=[{"args": autoscaled}])) is None
    assert direct_ingress_port(serve_config(proxy_location="Disabled")) is None


def test_the_proxy_moves_off_the_configured_port():
    original = serve_config(8123, apps=[{"name": "x", "args": {"models": ["m"]}}])
    copy = Path(_with_spare_proxy_port(original))
    try:
        moved = yaml.safe_load(copy.read_text())
        assert original["http_options"]["port"] == 8123  # the caller's config is left as it was
        assert moved["http_options"]["port"] != 8123
        moved["http_options"]["port"] = 8123
        assert moved == original
    finally:
        copy.unlink()

"""A bounded soak on the session's service: mixed traffic, nothing lost or swapped, memory reported."""

from __future__ import annotations

import asyncio
import json

import pytest

from bench.soak import run_soak

pytestmark = pytest.mark.integration


def test_soak_mixed_traffic(serve_app):
    result = asyncio.run(run_soak(serve_app["base_url"], requests=300, concurrency=48, max_words=20))
    print("soak:", json.dumps(result))
    assert result["ok"] == 300, result
    assert result["mismatched"] == result["errors"] == result["not_sent"] == 0
    # Bounded growth: caches and allocator pools settle; a leak per request would show up far above this.
    assert result["memory_growth_mb"] < 0.25 * result["memory_before_mb"] + 200, result

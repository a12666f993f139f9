"""Does our ingress code keep anything per request? `python -m bench.ingress_memory` (about 10 s, no Ray).

The router's FastAPI app (middleware, endpoint, policy, dispatcher, coalescer, encoding) runs in-process behind
httpx's ASGI transport, with model handles that answer at once and Ray's metrics replaced by no-ops (they need a
Ray worker). After a warm-up it counts the live Python objects by type and the process RSS, runs more requests,
and counts again: what grows per request shows up here, apart from Serve's own request path and the model.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import time

import httpx
import numpy as np

from deployments.calls import EmbedReply
from serve_app.catalog import load_catalog, resolve_models
from serve_app.config import AppArgs, Limits
from serve_app.ingress import middleware
from serve_app.ingress.app import create_app
from serve_app.ingress.dispatch import Dispatcher

KEY = "bench-key"


class _NoOp:
    def inc(self, tags=None) -> None: ...

    def observe(self, value, tags=None) -> None: ...


class _NoMetrics:
    def __init__(self) -> None:
        self.requests = self.latency = _NoOp()


class _Response:
    """What a DeploymentHandle call returns: awaitable, cancellable."""

    def __init__(self, value) -> None:
        self.value = value

    def __await__(self):
        async def answer():
            await asyncio.sleep(0)
            return self.value

        return answer().__await__()

    def cancel(self) -> None: ...


class _Handle:
    def __init__(self, method: str = "embed") -> None:
        self.method = method

    def options(self, method_name: str) -> _Handle:
        return _Handle(method_name)

    def remote(self, arg):
        def reply(call) -> EmbedReply:
            n = len(call.texts)
            return EmbedReply(vectors=np.ones((n, 8), np.float32), token_counts=[3] * n, model="m")

        return _Response([reply(c) for c in arg] if self.method == "embed_many" else reply(arg))


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))


def _objects() -> collections.Counter:
    gc.collect()
    return collections.Counter(type(o).__name__ for o in gc.get_objects())


async def _drive(app, requests: int, concurrency: int = 32) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:

        async def one(i: int) -> None:
            body = {"model": "all-minilm-l6-v2", "input": f"hello {i % 100}"}
            r = await client.post("/v1/embeddings", json=body, headers={"authorization": f"Bearer {KEY}"})
            assert r.status_code == 200, r.text

        for start in range(0, requests, concurrency):
            await asyncio.gather(*(one(start + j) for j in range(concurrency)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=30_000)
    args = p.parse_args(argv)
    middleware._Metrics = _NoMetrics
    entries = AppArgs.model_validate({"models": [{"name": "all-minilm-l6-v2"}]}).models
    specs = {s.name: s for s in resolve_models(entries, load_catalog())}
    app = create_app(Dispatcher(specs, {n: _Handle() for n in specs}, 60.0), Limits(), [KEY.encode()])
    asyncio.run(_drive(app, 5_000))
    before, rss_before = _objects(), _rss_mib()
    start = time.monotonic()
    asyncio.run(_drive(app, args.requests))
    after, rss_after = _objects(), _rss_mib()
    grown = {k: after[k] - before[k] for k in after if after[k] - before[k] > 0}
    print(
        json.dumps(
            {
                "requests": args.requests,
                "seconds": round(time.monotonic() - start, 1),
                "rss_mib": [round(rss_before, 1), round(rss_after, 1)],
                "object_types_grown": dict(sorted(grown.items(), key=lambda kv: -kv[1])[:10]),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

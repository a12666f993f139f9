"""A redeploy that replaces replicas (changed `args`, as `serve deploy` and KubeRay do) under steady load:
no request dropped or failed.

The app "rolling" serves a tiny model; a steady load runs while the app is deployed again with changed args
(a router limit and the model's batch size), which gives the router and the model deployment new code
versions: Serve starts new replicas and stops the old ones. Every request must answer 200 with its vector.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.integration


def _args(tiny_xlmr, max_batch_size: int, max_inputs: int) -> dict:
    return {
        "models": [
            {
                "name": "tiny-xlmr",
                "family": "encoder",
                "source": str(tiny_xlmr),
                "deployment": {"num_cpus": 0.25, "torch_threads": 1, "num_replicas": 1},
                "batching": {"max_batch_size": max_batch_size},
            }
        ],
        "limits": {"max_inputs_per_request": max_inputs},
    }


def test_redeploy_with_changed_args_under_load_drops_nothing(serve_app, tiny_xlmr):
    from ray import serve

    from serve_app.app import build_app

    serve.run(build_app(_args(tiny_xlmr, 32, 100)), name="rolling", route_prefix="/rolling")
    url = serve_app["base_url"] + "/rolling/v1/embeddings"
    stop = threading.Event()
    outcomes: list[tuple[int, str]] = []

    async def load() -> None:
        async with httpx.AsyncClient(timeout=60) as client:

            async def loop(worker: int) -> None:
                i = 0
                while not stop.is_set():
                    text = f"steady {worker} {i}"
                    try:
                        r = await client.post(url, json={"model": "tiny-xlmr", "input": text})
                        ok = r.status_code == 200 and len(r.json()["data"][0]["embedding"]) > 0
                        outcomes.append((r.status_code, "" if ok else r.text[:300]))
                    except httpx.HTTPError as exc:
                        outcomes.append((0, repr(exc)))
                    i += 1

            await asyncio.gather(*(loop(w) for w in range(8)))

    driver = threading.Thread(target=lambda: asyncio.run(load()))
    driver.start()
    try:
        time.sleep(2)
        before = len(outcomes)
        serve.run(build_app(_args(tiny_xlmr, 16, 90)), name="rolling", route_prefix="/rolling")  # new versions
        time.sleep(3)
    finally:
        stop.set()
        driver.join(timeout=90)
        serve.delete("rolling")
    failed = [o for o in outcomes if o[0] != 200]
    assert before > 10 and len(outcomes) > before + 10, (before, len(outcomes))
    assert not failed, (len(failed), len(outcomes), failed[:5])

"""A model without a running replica is refused at once (503, Retry-After, the reason), on a real Serve app.

The app ("states") has a model that runs, one that asks for more CPUs than the test cluster has, and one
whose weights are corrupt (its replica fails to start). Deployed without waiting for it to be RUNNING, as a
user's `serve deploy` of such a config would be.
"""

from __future__ import annotations

import shutil
import time

import httpx
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def states_app(serve_app, tiny_xlmr, tmp_path_factory):
    from ray import serve

    from serve_app.app import build_app

    broken = tmp_path_factory.mktemp("broken") / "model"
    shutil.copytree(tiny_xlmr, broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    small = {"num_cpus": 0.25, "torch_threads": 1}
    args = {
        "models": [
            {"name": "fine", "family": "encoder", "source": str(tiny_xlmr), "deployment": small},
            {"name": "too-big", "family": "encoder", "source": str(tiny_xlmr), "deployment": {"num_cpus": 64}},
            {"name": "broken", "family": "encoder", "source": str(broken), "deployment": small},
        ]
    }
    serve._run(build_app(args), name="states", route_prefix="/states", _blocking=False)
    base = serve_app["base_url"] + "/states"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the router and "fine" come up; the others never do
        try:
            r = httpx.post(base + "/v1/embeddings", json={"model": "fine", "input": "x"}, timeout=10)
            if r.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    yield base
    serve.delete("states", _blocking=False)


def _state(base: str, name: str) -> str:
    return httpx.get(base + "/ready", timeout=30).json()["models"][name]


def test_a_model_waiting_for_resources_answers_503_at_once(states_app):
    deadline = time.monotonic() + 90
    while _state(states_app, "too-big") != "waiting_for_resources":  # Serve says so after 30 s unscheduled
        assert time.monotonic() < deadline, _state(states_app, "too-big")
        time.sleep(2)
    start = time.monotonic()
    r = httpx.post(states_app + "/v1/embeddings", json={"model": "too-big", "input": "x"}, timeout=30)
    took = time.monotonic() - start
    assert r.status_code == 503, r.text
    assert took < 5, took  # not the 60 s deadline
    assert int(r.headers["retry-after"]) > 0
    message = r.json()["error"]["message"]
    assert "too-big" in message and "waiting for resources" in message, message
    assert '"CPU": 64' in message  # Serve's own words: what one replica asks for


def test_a_model_that_failed_says_so(states_app):
    deadline = time.monotonic() + 150
    while True:  # Serve retries the constructor a few times before it calls the deployment failed
        r = httpx.post(states_app + "/v1/embeddings", json={"model": "broken", "input": "x"}, timeout=30)
        assert r.status_code == 503, r.text
        if "failed to start" in r.json()["error"]["message"] or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert "failed to start" in r.json()["error"]["message"], r.text


def test_ready_and_models_show_each_state_in_one_word(states_app):
    ready = httpx.get(states_app + "/ready", timeout=30)
    assert ready.status_code == 503
    models = ready.json()["models"]
    assert models["fine"] == "ready"
    assert models["too-big"] == "waiting_for_resources"
    assert models["broken"] in ("starting", "failed", "unhealthy")
    assert all(" " not in word for word in models.values())  # no exception names, no resources
    cards = {m["id"]: m for m in httpx.get(states_app + "/v1/models", timeout=30).json()["data"]}
    assert cards["fine"]["state"] == "running"
    assert cards["too-big"]["state"] == "waiting_for_resources"

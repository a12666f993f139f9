"""The `openai-compatible` family: a remote /v1/embeddings behind our API.

The unit tests (RemoteEmbedder on httpx.MockTransport, no Ray) are in tests/unit/deployments/test_remote_embedder.py.
These integration tests serve a second embedserve application ("remote-upstream", the real all-MiniLM-L6-v2, API
key required) as the remote, and a third one whose models are remote: the upstream, an unknown upstream model, a
closed port, and a flaky http.server that fails twice with 503 before answering.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest
from helpers.remote_fakes import embeddings_response, text_vector

pytestmark = pytest.mark.integration


# ---- integration: a real upstream embedserve, and a flaky fake --------------------------------------------

UPSTREAM_KEY = "sk-upstream-test"


class FlakyHandler(BaseHTTPRequestHandler):
    """Fails `failures` times with 503 (Retry-After: 0), then answers 8-dim float vectors, ignoring
    `dimensions` and `encoding_format` (as some remotes do)."""

    failures = 0
    seen: list[dict] = []  # noqa: RUF012

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).seen.append({"path": self.path, "body": body, "auth": self.headers.get("authorization")})
        if type(self).failures > 0:
            type(self).failures -= 1
            self._send(503, {"error": {"message": "warming up"}}, {"Retry-After": "0"})
            return
        resp = embeddings_response(body, b64=False)
        self._send(200, json.loads(resp.content), {})

    def _send(self, status, payload, headers):
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(raw)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def remote_apps(serve_app):
    from ray import serve

    from deployments.remote import RemoteEmbeddingDeployment
    from deployments.shell import serve_options
    from deployments.spec import ModelSpec
    from serve_app.app import build_app
    from serve_app.ingress.router import Router

    base = serve_app["base_url"]
    flaky = ThreadingHTTPServer(("127.0.0.1", 0), FlakyHandler)
    threading.Thread(target=flaky.serve_forever, daemon=True).start()

    upstream_args = {
        "models": [
            {
                "name": "all-minilm-l6-v2",
                "matryoshka": {"min": 32, "max": 384},  # so the upstream honours `dimensions`
                "deployment": {"num_cpus": 0.25, "torch_threads": 1},
            }
        ],
        "auth": {"api_keys": [UPSTREAM_KEY], "api_keys_env": None},
    }
    serve.run(build_app(upstream_args), name="remote-upstream", route_prefix="/upstream")

    upstream = f"{base}/upstream/v1"
    minilm = {"dimensions": 384, "matryoshka": {"min": 32, "max": 384}, "max_tokens": 256}
    fast_fail = "retries=1&backoff=0.05&connect_timeout=2"
    models = [
        {"name": "remote-minilm", "source": f"{upstream}#all-minilm-l6-v2?key_env=UPSTREAM_KEY", **minilm},
        {"name": "remote-missing", "source": f"{upstream}#no-such-model?key_env=UPSTREAM_KEY&{fast_fail}", **minilm},
        {"name": "remote-down", "source": f"http://127.0.0.1:{_closed_port()}/v1#all-minilm-l6-v2?{fast_fail}"},
        {
            "name": "remote-flaky",
            "source": f"http://127.0.0.1:{flaky.server_port}/v1#fake-8?retries=3&backoff=0.05",
            "dimensions": 8,
            "matryoshka": {"min": 2, "max": 8},
        },
    ]
    specs = []
    handles = {}
    for entry in models:
        spec = ModelSpec.model_validate(
            {
                "family": "openai-compatible",
                "deployment": {"num_cpus": 0},
                "batching": {"max_batch_size": 3},  # inputs per remote call: 7 inputs -> 3 calls
                **entry,
            }
        )
        opts = serve_options(spec)
        opts["ray_actor_options"]["runtime_env"] = {"env_vars": {"UPSTREAM_KEY": UPSTREAM_KEY}}
        specs.append(spec.model_dump(mode="json"))
        handles[spec.name] = RemoteEmbeddingDeployment.options(**opts).bind(spec.model_dump(mode="json"))
    app = Router.options(name="router", ray_actor_options={"num_cpus": 0}).bind(
        specs, handles, {}, {"api_keys_env": None}, 30.0
    )
    serve.run(app, name="remote-downstream", route_prefix="/remote")
    yield {"upstream": f"{base}/upstream", "remote": f"{base}/remote", "flaky": FlakyHandler}
    serve.delete("remote-downstream")
    serve.delete("remote-upstream")
    flaky.shutdown()


def _embed(url: str, payload: dict, **headers) -> httpx.Response:
    return httpx.post(f"{url}/v1/embeddings", json=payload, headers=headers, timeout=60)


def _vectors(resp: httpx.Response) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    return np.array([d["embedding"] for d in resp.json()["data"]], dtype=np.float32)


def _json_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


TEXTS = [
    "The cat sits on the mat.",
    "Ray Serve scales Python services.",
    "Bonjour le monde",
    "Embeddings map text to vectors.",
    "A remote backend answers over HTTP.",
    "Retries back off exponentially.",
    "Seven inputs make three remote calls.",
]


def test_remote_vectors_and_usage_match_upstream(remote_apps):
    auth = {"Authorization": f"Bearer {UPSTREAM_KEY}"}
    direct = _embed(remote_apps["upstream"], {"model": "all-minilm-l6-v2", "input": TEXTS}, **auth)
    via = _embed(remote_apps["remote"], {"model": "remote-minilm", "input": TEXTS})
    np.testing.assert_allclose(_vectors(via), _vectors(direct), atol=1e-6)
    assert via.json()["model"] == "remote-minilm"
    assert via.json()["usage"] == direct.json()["usage"] and direct.json()["usage"]["prompt_tokens"] > len(TEXTS)

    # base64 out of our API too (what the openai client asks for)
    import openai

    client = openai.OpenAI(base_url=remote_apps["remote"] + "/v1", api_key="unused")
    got = client.embeddings.create(model="remote-minilm", input=TEXTS[:2])
    np.testing.assert_allclose(np.array([d.embedding for d in got.data]), _vectors(direct)[:2], atol=1e-6)


def test_remote_dimensions_and_rerank(remote_apps):
    auth = {"Authorization": f"Bearer {UPSTREAM_KEY}"}
    payload = {"input": TEXTS[:4], "dimensions": 64}
    direct = _vectors(_embed(remote_apps["upstream"], {"model": "all-minilm-l6-v2", **payload}, **auth))
    via = _vectors(_embed(remote_apps["remote"], {"model": "remote-minilm", **payload}))
    assert via.shape == (4, 64)
    np.testing.assert_allclose(via, direct, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(via, axis=1), 1.0, atol=1e-5)
    bad = _embed(remote_apps["remote"], {"model": "remote-minilm", "input": "x", "dimensions": 16})
    assert "between 32 and 384" in _json_error(bad, 400)["message"]  # our policy, before any remote call

    rerank = httpx.post(
        remote_apps["remote"] + "/v1/rerank",
        json={"model": "remote-minilm", "query": "Where does the cat sit?", "documents": TEXTS[:3]},
        timeout=60,
    )
    assert rerank.status_code == 200, rerank.text
    assert rerank.json()["results"][0]["index"] == 0


def test_remote_unknown_model_and_unreachable_port(remote_apps):
    missing = _json_error(_embed(remote_apps["remote"], {"model": "remote-missing", "input": "x"}), 404)
    assert missing["code"] == "remote_not_found" and "remote-missing" in missing["message"]
    assert "no-such-model" not in missing["message"]  # the upstream's own words stay in our log

    start = time.monotonic()
    down = _embed(remote_apps["remote"], {"model": "remote-down", "input": "x"})
    err = _json_error(down, 503)
    assert err["code"] == "remote_unavailable" and "after 2 attempts" in err["message"]
    assert int(down.headers["retry-after"]) >= 1
    assert time.monotonic() - start < 20
    ready = httpx.get(remote_apps["remote"] + "/ready", timeout=30).json()
    assert ready["models"]["remote-down"] == "ready"  # the replica is up; the outage is per request


def test_flaky_remote_retries_then_succeeds_and_cuts_dimensions(remote_apps):
    flaky = remote_apps["flaky"]
    flaky.seen.clear()
    flaky.failures = 2
    resp = _embed(remote_apps["remote"], {"model": "remote-flaky", "input": ["alpha", "beta gamma"], "dimensions": 4})
    vectors = _vectors(resp)
    assert len(flaky.seen) == 3 and all(s["path"] == "/v1/embeddings" for s in flaky.seen)
    assert flaky.seen[0]["body"]["dimensions"] == 4 and flaky.seen[0]["auth"] is None
    expected = np.stack([text_vector(t)[:4] / np.linalg.norm(text_vector(t)[:4]) for t in ["alpha", "beta gamma"]])
    np.testing.assert_allclose(vectors, expected, atol=1e-6)  # the fake ignored `dimensions`: cut here
    assert resp.json()["usage"]["prompt_tokens"] == (1 + 2) + (2 + 2)

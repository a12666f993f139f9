"""An API without keys answers on loopback only, unless the config says an open API is intended."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from serve_app.cli import exposure_ok
from serve_app.config import Limits
from serve_app.ingress.app import create_app
from serve_app.ingress.dispatch import Dispatcher


def _status(base_url: str, keys: list[bytes], allow: bool = False, path: str = "/v1/models", **headers) -> int:
    app = create_app(Dispatcher({}, {}, 60.0), Limits(), keys, allow_unauthenticated=allow)

    async def get() -> int:
        transport = httpx.ASGITransport(app=app)  # the server address of the request comes from the URL
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            return (await client.get(path, headers=headers)).status_code

    return asyncio.run(get())


@pytest.mark.parametrize("base", ["http://127.0.0.1:8000", "http://[::1]:8000", "http://localhost:8000"])
def test_no_keys_on_loopback_is_open(base):
    assert _status(base, []) == 200


def test_no_keys_on_a_network_address_is_refused_unless_allowed():
    assert _status("http://10.0.0.5:8000", []) == 403
    assert _status("http://10.0.0.5:8000", [], allow=True) == 200
    assert _status("http://10.0.0.5:8000", [], path="/health") == 200  # probes stay public


def test_keys_on_a_network_address_work_as_before():
    assert _status("http://10.0.0.5:8000", [b"k1"]) == 401
    assert _status("http://10.0.0.5:8000", [b"k1"], authorization="Bearer k1") == 200


def _config(host: str, auth: dict | None = None) -> dict:
    args: dict = {"models": [{"name": "all-minilm-l6-v2"}]}
    if auth is not None:
        args["auth"] = auth
    app = {"name": "embedserve", "import_path": "serve_app.app:build_app", "args": args}
    return {"http_options": {"host": host, "port": 8000}, "applications": [app]}


def test_the_cli_refuses_to_start_an_open_api_on_the_network(monkeypatch, capsys):
    monkeypatch.delenv("EMBEDSERVE_API_KEYS", raising=False)
    assert exposure_ok(_config("127.0.0.1"))
    assert not exposure_ok(_config("0.0.0.0"))
    assert "without API keys" in capsys.readouterr().err
    assert exposure_ok(_config("0.0.0.0", {"api_keys": ["k"]}))
    assert exposure_ok(_config("0.0.0.0", {"allow_unauthenticated": True}))
    monkeypatch.setenv("EMBEDSERVE_API_KEYS", "k1,k2")
    assert exposure_ok(_config("0.0.0.0"))


def test_keys_that_only_come_with_a_lane_count_as_keys(monkeypatch):
    monkeypatch.delenv("EMBEDSERVE_API_KEYS", raising=False)
    monkeypatch.delenv("INDEXER_KEYS", raising=False)
    assert exposure_ok(_config("0.0.0.0", {"api_keys": [{"key": "k", "priority": "bulk"}]}))
    assert not exposure_ok(_config("0.0.0.0", {"bulk_api_keys_env": "INDEXER_KEYS"}))
    monkeypatch.setenv("INDEXER_KEYS", "sk-indexer")
    assert exposure_ok(_config("0.0.0.0", {"bulk_api_keys_env": "INDEXER_KEYS"}))

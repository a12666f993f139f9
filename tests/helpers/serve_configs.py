"""A minimal Serve config (the shape of configs/local.yaml) for the `embedserve serve` tests."""

from __future__ import annotations


def serve_config(port: int = 8000, apps: list[dict] | None = None, **top) -> dict:
    return {"http_options": {"host": "127.0.0.1", "port": port}, "applications": apps or [{"args": {}}], **top}

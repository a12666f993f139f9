"""Bearer API-key check as ASGI middleware: runs before the body is read; keys are never logged.

Every key is compared with `hmac.compare_digest` (constant time) and all keys are always compared,
so the answer's timing says nothing about which key nearly matched.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable

from serve_app.encoding import dumps

PUBLIC_PATHS = {"/health", "/ready", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def load_keys(literal: list[str], env_var: str | None) -> list[bytes]:
    keys = [k for k in literal if k]
    if env_var and os.environ.get(env_var):
        keys += [k.strip() for k in os.environ[env_var].split(",") if k.strip()]
    return [k.encode() for k in keys]


def key_matches(presented: bytes, keys: list[bytes]) -> bool:
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key)
    return matched


_UNAUTHORIZED = dumps(
    {
        "error": {
            "message": "Missing or invalid API key: send `Authorization: Bearer <key>`.",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
)


class BearerAuth:
    def __init__(self, app, keys: Callable[[], list[bytes]]) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope, receive, send) -> None:
        keys = self.keys()
        if scope["type"] != "http" or not keys:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        if path in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        presented = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    presented = token.strip()
                break
        if presented and key_matches(presented, keys):
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_UNAUTHORIZED)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _UNAUTHORIZED})

"""ASGI middleware: refuse request bodies over the configured size with a 413, before parsing them."""

from __future__ import annotations

from collections.abc import Callable

from serve_app.encoding import dumps


def _too_large_body(limit: int) -> bytes:
    return dumps(
        {
            "error": {
                "message": f"Request body is larger than {limit} bytes (max_body_bytes).",
                "type": "invalid_request_error",
                "param": None,
                "code": "payload_too_large",
            }
        }
    )


class BodySizeLimit:
    def __init__(self, app, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit

    async def _reject(self, send, limit: int) -> None:
        body = _too_large_body(limit)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await self._reject(send, limit)
                    return
        state = {"received": 0, "over": False, "started": False}

        async def limited_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if state["over"]:
                return  # the app's answer to a cut-off body is replaced by the 413 below
            state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await self._reject(send, limit)

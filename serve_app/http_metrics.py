"""ASGI middleware: requests and latency per route and status, exported through Ray's metrics (ray_ prefix).

A plain ASGI wrapper rather than Starlette's `@app.middleware("http")`: that one runs every request through an
extra task and a streaming response, a cost paid on each of thousands of small embedding requests.
"""

from __future__ import annotations

import time

_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]


class _Metrics:
    def __init__(self) -> None:
        from ray.serve import metrics

        keys = ("route", "status")
        self.requests = metrics.Counter("embedserve_http_requests_total", "HTTP requests answered.", keys)
        self.latency = metrics.Histogram(
            "embedserve_http_request_seconds", "Router time per HTTP request.", _BOUNDS, keys
        )


class HTTPMetrics:
    def __init__(self, app) -> None:
        self.app = app
        self._metrics: _Metrics | None = None  # created in the replica, on first use

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if self._metrics is None:
                self._metrics = _Metrics()
            path, root = scope.get("path", ""), scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root) :] or "/"
            tags = {"route": path, "status": str(status)}
            self._metrics.requests.inc(tags=tags)
            self._metrics.latency.observe(time.perf_counter() - start, tags=tags)

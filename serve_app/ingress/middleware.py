"""One ASGI layer in front of the routes: metrics, API-key check and body-size limit, in that order.

One plain ASGI wrapper rather than three (or Starlette's `@app.middleware`, which runs every request through
an extra task and a streaming response): a cost paid on each of thousands of small embedding requests.
Limits and keys come from the application instance that owns this layer, never from module state.

- Metrics: requests and latency per route and status (Ray's metrics, ray_ prefix). Routes the app does not
  know are counted as "other", so random paths cannot grow the number of series.
- Auth: `Authorization: Bearer <key>`, compared in constant time against every key; public paths exempt.
  With no keys at all, a request that arrived on a non-loopback address is refused (403) unless the app says
  `allow_unauthenticated`: an API without keys is for one machine, not a network, unless someone chose so.
- Body limit: a declared Content-Length over the limit is refused before reading; a streamed body is cut
  off as soon as it passes the limit. Both answer 413 in the service's error envelope.
- Priority: the `X-Priority` header and the matched API key's default lane are noted for the request
  (ingress/priority.py), where the dispatcher finds them when it sends the request's calls.
- Content type: a POST to an API route without a JSON content type (`curl -d` sends a form type) is read as
  JSON when its body is a JSON object or array, and refused with 415 saying what to send otherwise.
- Fast routes (POST /v1/embeddings, /v1/rerank, /v2/rerank with a JSON content type): the body is parsed once,
  straight into its validated request shape (pydantic from bytes), and handed to the endpoint's handler, with
  no framework routing on the way. A body that does not validate is replayed to the FastAPI app, so every
  error answer is exactly the framework's.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Iterable

from pydantic import ValidationError

from deployments.calls import BULK
from deployments.errors import ServiceError
from serve_app.config import AuthConfig
from serve_app.ingress import priority
from serve_app.ingress.errors import error_body, error_response, plain_error

log = logging.getLogger("ray.serve")

PUBLIC_PATHS = frozenset({"/health", "/ready", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
_LATENCY_BOUNDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

_UNAUTHORIZED = error_body(
    "Missing or invalid API key: send `Authorization: Bearer <key>`.", "authentication_error", code="invalid_api_key"
)
_EXPOSED = error_body(
    "This service has no API keys and is reachable from the network, so it refuses requests. Set "
    "args.auth.api_keys (or the EMBEDSERVE_API_KEYS environment variable of the router), or "
    "args.auth.allow_unauthenticated: true if an open API on this network is intended.",
    "authentication_error",
    code="no_api_keys",
)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _env_keys(env_var: str | None) -> list[str]:
    """The comma-separated keys of an environment variable (none when unset or empty)."""
    return [k.strip() for k in os.environ.get(env_var, "").split(",") if k.strip()] if env_var else []


def load_keys(literal: list[str], env_var: str | None) -> list[bytes]:
    return [k.encode() for k in [*(k for k in literal if k), *_env_keys(env_var)]]


def load_key_priorities(keyed: dict[str, str], env_var: str | None, lane: str) -> dict[bytes, str]:
    """API key -> its default priority lane: keys declared with a priority, plus the keys of `env_var`
    (comma-separated), which get `lane`."""
    return {**{k.encode(): v for k, v in keyed.items() if k}, **{k.encode(): lane for k in _env_keys(env_var)}}


def application_keys(auth: AuthConfig) -> tuple[list[bytes], dict[bytes, str]]:
    """Every key an application accepts (literal, `api_keys_env`, `bulk_api_keys_env`) and the default lane of
    those that have one: what the router enforces and what the CLI's exposure check counts."""
    priorities = load_key_priorities(auth.keyed_priorities(), auth.bulk_api_keys_env, BULK)
    keys = load_keys(auth.key_strings(), auth.api_keys_env)
    return keys + [k for k in priorities if k not in keys], priorities


def key_matches(presented: bytes, keys: list[bytes]) -> bool:
    """Every key is compared (constant time each), so timing says nothing about which key nearly matched."""
    return matched_key(presented, keys) is not None


def matched_key(presented: bytes, keys: list[bytes]) -> bytes | None:
    """The key `presented` equals, or None; every key is compared (constant time each), whichever matches."""
    found = None
    for key in keys:
        if hmac.compare_digest(presented, key):
            found = key
    return found


class _Metrics:
    def __init__(self) -> None:
        from ray.serve import metrics

        keys = ("route", "status")
        self.requests = metrics.Counter("embedserve_http_requests_total", "HTTP requests answered.", keys)
        self.latency = metrics.Histogram(
            "embedserve_http_request_seconds", "Router time per HTTP request.", _LATENCY_BOUNDS, keys
        )


async def _answer(send, status: int, body: bytes, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _is_json_type(content_type: bytes) -> bool:
    """application/json, application/<x>+json, text/json; parameters (charset) ignored."""
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media == b"text/json" or media.endswith(b"+json")


def _looks_like_json(body: bytes) -> bool:
    return body.lstrip(b" \t\r\n")[:1] in (b"{", b"[")


def _not_json(content_type: bytes) -> bytes:
    got = content_type.decode("latin-1")[:100] if content_type else "none"
    return error_body(
        f"The body is not JSON (content type: {got}). Send a JSON body with `Content-Type: application/json`.",
        "invalid_request_error",
        code="unsupported_media_type",
    )


def _with_json_type(scope: dict) -> dict:
    headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"content-type"]
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


def _replay(body: bytes, receive):
    """A receive() that hands the already-read body over once, then listens to the client again."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class IngressMiddleware:
    def __init__(
        self,
        app,
        *,
        keys: list[bytes],
        max_body_bytes: int,
        allow_unauthenticated: bool = False,
        routes: Iterable[str] = (),
        fast_routes: dict | None = None,
        key_priorities: dict[bytes, str] | None = None,
    ) -> None:
        self.app = app
        self.key_priorities = key_priorities or {}
        self.fast_routes = fast_routes or {}
        self.keys = keys
        self.allow_unauthenticated = allow_unauthenticated
        self._local: dict[str, bool] = {}  # listening host -> loopback (asked once per address)
        self.max_body_bytes = max_body_bytes
        self.routes = frozenset(routes)
        self._metrics: _Metrics | None = None  # created in the replica, on first use
        self._too_large = error_body(
            f"Request body is larger than {max_body_bytes} bytes (max_body_bytes).",
            "invalid_request_error",
            code="payload_too_large",
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        status = 500  # what the client gets if the app raises before answering

        async def send_and_note(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, send_and_note, path)
        finally:
            if self._metrics is None:
                self._metrics = _Metrics()
            tags = {"route": path if path in self.routes else "other", "status": str(status)}
            self._metrics.requests.inc(tags=tags)
            self._metrics.latency.observe(time.perf_counter() - start, tags=tags)

    async def _guarded(self, scope, receive, send, path: str) -> None:
        declared = 0
        presented = b""
        content_type = b""
        lane_header: bytes | None = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
            elif name == b"content-type":
                content_type = value
            elif name == priority.HEADER_KEY:
                lane_header = value
            elif name == b"authorization" and not presented:
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    presented = token.strip()
        key = matched_key(presented, self.keys) if self.keys and presented else None
        if self.keys and path not in PUBLIC_PATHS and key is None:
            await _answer(send, 401, _UNAUTHORIZED, [(b"www-authenticate", b"Bearer")])
            return
        if not self.keys and not self.allow_unauthenticated and path not in PUBLIC_PATHS and self._exposed(scope):
            await _answer(send, 403, _EXPOSED)
            return
        if declared > self.max_body_bytes:
            await _answer(send, 413, self._too_large)
            return
        post = scope.get("method") == "POST"
        json_body = _is_json_type(content_type)
        if post and not json_body and path in self.routes:
            body = await self._read_body(receive, send)
            if body is None:
                return
            if not _looks_like_json(body):
                await _answer(send, 415, _not_json(content_type))
                return
            scope, receive, json_body = _with_json_type(scope), _replay(body, receive), True
        default_lane = self.key_priorities.get(key) if key is not None else None
        noted = None
        if lane_header is not None or default_lane is not None:
            noted = priority.note(priority.RequestPriority(lane_header, default_lane))
        try:
            route = self.fast_routes.get(path) if json_body and post else None
            if route is not None:
                await self._fast(route, scope, receive, send)
                return
            await self._body_limited(scope, receive, send)
        finally:
            if noted is not None:
                priority.forget(noted)

    def _exposed(self, scope) -> bool:
        """The request arrived on a non-loopback address (the server's side of the connection)."""
        server = scope.get("server")
        if not server or not server[0]:
            return False  # a Unix socket or an in-process call
        host = server[0]
        local = self._local.get(host)
        if local is None:
            local = self._local[host] = _is_loopback(host)
        return not local

    async def _read_body(self, receive, send) -> bytes | None:
        """The whole body, or None when the client left or the body passed the limit (413 already sent)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away before its body arrived
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _answer(send, 413, self._too_large)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _fast(self, route, scope, receive, send) -> None:
        """Parse the body once into the route's request shape and call its handler; replay anything else."""
        shape, handler = route
        body = await self._read_body(receive, send)
        if body is None:
            return
        try:
            request = shape.model_validate_json(body)
        except ValidationError:
            await self.app(scope, _replay(body, receive), send)  # the framework words the 422
            return
        try:
            response = await handler(request)
        except ServiceError as exc:
            response = error_response(exc)
        except Exception:
            log.exception("unhandled error")
            response = plain_error(500, "Internal server error.", code="internal")
        await response(scope, receive, send)

    async def _body_limited(self, scope, receive, send) -> None:
        """Run the app with the body counted as it streams in; past the limit it sees a disconnect instead."""
        limit = self.max_body_bytes
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
            await _answer(send, 413, self._too_large)

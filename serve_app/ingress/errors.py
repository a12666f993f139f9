"""The only place where a failure becomes an HTTP status: domain errors (deployments/errors.py), Ray's
handle errors and the framework's own (schema, routing) all leave as `{"error": {message, type, param, code}}`.
"""

from __future__ import annotations

import logging
import re

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RequestCancelledError
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.errors import (
    Cancelled,
    DeadlineExceeded,
    InferenceFailed,
    InvalidRequest,
    NotFound,
    ServiceError,
    TooLarge,
    Unavailable,
    UpstreamFailed,
)

log = logging.getLogger("ray.serve")

# Domain error class -> (HTTP status, OpenAI-style error type). Subclasses inherit their parent's row.
HTTP_STATUS: dict[type[ServiceError], tuple[int, str]] = {
    InvalidRequest: (400, "invalid_request_error"),
    NotFound: (404, "not_found_error"),
    TooLarge: (413, "invalid_request_error"),
    Cancelled: (499, "cancelled"),
    InferenceFailed: (500, "server_error"),
    UpstreamFailed: (502, "upstream_error"),
    Unavailable: (503, "server_overloaded"),
    DeadlineExceeded: (504, "timeout_error"),
}

# Statuses the framework produces by itself (no domain error behind them).
_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_overloaded",
}


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> bytes:
    """The error envelope, the same for every failure the service answers."""
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def status_of(err: ServiceError) -> tuple[int, str]:
    for cls in type(err).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 400, "invalid_request_error"


def error_response(err: ServiceError) -> Response:
    status, kind = status_of(err)
    headers = {"Retry-After": str(err.retry_after_s)} if err.retry_after_s is not None else None
    body = error_body(err.message, kind, err.param, err.code)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def plain_error(status: int, message: str, param: str | None = None, code: str | None = None) -> Response:
    """A failure the framework found (schema, route, method) rather than the service's logic."""
    kind = _STATUS_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = error_body(message, kind, param, code)
    return Response(body, status_code=status, media_type="application/json")


def from_ray(exc: BaseException) -> ServiceError:
    """What a deployment handle raised -> a domain error (ours travel inside RayTaskError as `.cause`)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ServiceError):
        return cause
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, BackPressureError):
        return Unavailable("The model's queue is full; retry shortly.")
    if isinstance(exc, DeploymentUnavailableError):
        return Unavailable("The model is not available right now; retry shortly.", retry_after_s=5)
    if isinstance(exc, RequestCancelledError):
        return Cancelled("The request was cancelled.")
    if isinstance(exc, TimeoutError):
        return DeadlineExceeded("The request timed out.")
    if type(exc).__name__ in ("RayActorError", "ActorDiedError", "ActorUnavailableError", "ActorUnschedulableError"):
        return Unavailable("A model replica failed; retry shortly.", retry_after_s=2)
    log.exception("unexpected error from a model deployment", exc_info=exc)
    return InferenceFailed("Internal error while running the model.", code="internal")


_TYPE_TAG = re.compile(r"^(?:[a-z-]+\[.*\]|str|int|float|bool|[A-Z]\w*)$")  # pydantic's union-branch names


def _location(loc: tuple) -> str:
    """pydantic's error location as the client wrote the field: `input[2].text`."""
    parts = [str(p) for p in loc if p != "body" and not (isinstance(p, str) and _TYPE_TAG.match(p))]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def install_handlers(app: FastAPI) -> None:
    """Every exception that reaches FastAPI leaves in the envelope, with its status."""

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        broken = [e for e in errors if e.get("type") == "json_invalid"]
        if broken:  # not JSON at all: the client's body, not a field
            where = broken[0].get("loc", ("body", 0))[-1]
            reason = (broken[0].get("ctx") or {}).get("error", "invalid JSON")
            return plain_error(400, f"The body is not valid JSON ({reason} at position {where}).", code="invalid_json")
        text = [e for e in errors if e.get("type") == "invalid_text"]
        if text:  # the shape is right but a text is not Unicode: the client's data, not its schema
            where = _location(tuple(text[0].get("loc", ())))
            return plain_error(400, f"Invalid request: {where} {text[0].get('msg')}", param=where, code="invalid_text")
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        where = _location(tuple(first.get("loc", ())))
        message = f"Invalid request: {where}: {first.get('msg')}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        return plain_error(422, message, param=where, code="invalid_schema")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return plain_error(exc.status_code, str(exc.detail), code=f"http_{exc.status_code}")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return plain_error(500, "Internal server error.", code="internal")

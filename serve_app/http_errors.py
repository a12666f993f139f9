"""Every failure the HTTP face can see, rendered as `{"error": {message, type, param, code}}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app.encoding import dumps
from serve_app.errors import ServiceError, overloaded

log = logging.getLogger("ray.serve")

_STATUS_TYPES = {
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_overloaded",
}


def error_response(err: ServiceError) -> Response:
    return Response(dumps(err.body()), status_code=err.status, media_type="application/json", headers=err.headers)


def simple_error(status: int, message: str, param: str | None = None, code: str | None = None) -> Response:
    err = ServiceError(message, status=status, type=_STATUS_TYPES.get(status, "server_error"), param=param, code=code)
    return error_response(err)


def _location(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def from_ray(exc: BaseException) -> ServiceError:
    """Map what a deployment handle raised into a ServiceError (ours travel inside RayTaskError)."""
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, RequestCancelledError

    cause = getattr(exc, "cause", None)
    if isinstance(exc, ServiceError):
        if isinstance(cause, ServiceError):
            return cause
        return exc
    if isinstance(cause, ServiceError):
        return cause
    if isinstance(exc, BackPressureError):
        return overloaded("The model's queue is full; retry shortly.")
    if isinstance(exc, DeploymentUnavailableError):
        return overloaded("The model is not available right now; retry shortly.", retry_after_s=5)
    if isinstance(exc, RequestCancelledError):
        return ServiceError("The request was cancelled.", status=499, type="cancelled", code="cancelled")
    if isinstance(exc, TimeoutError):
        return ServiceError("The request timed out.", status=504, type="timeout_error", code="timeout")
    name = type(exc).__name__
    if name in ("RayActorError", "ActorDiedError", "ActorUnavailableError", "ActorUnschedulableError"):
        return overloaded("A model replica failed; retry shortly.", retry_after_s=2)
    log.exception("unexpected error from a model deployment", exc_info=exc)
    return ServiceError("Internal error while running the model.", status=500, type="server_error", code="internal")


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        where = _location(tuple(first.get("loc", ())))
        message = f"Invalid request: {where}: {first.get('msg')}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        return simple_error(422, message, param=where, code="invalid_schema")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return simple_error(exc.status_code, str(exc.detail), code=f"http_{exc.status_code}")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return simple_error(500, "Internal server error.", code="internal")

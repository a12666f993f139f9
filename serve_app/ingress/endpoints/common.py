"""Small pieces every endpoint uses: the JSON response, usage counts, documented error statuses."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.responses import Response
from pydantic import BaseModel

from serve_app.ingress.encoding import dumps
from serve_app.schemas import ErrorResponse

# path -> (request shape, handler): the routes the ingress middleware may serve straight from the raw body
FastRoutes = dict[str, tuple[type[BaseModel], Callable[[Any], Awaitable[Response]]]]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 404, 413, 422, 503)
}


def usage(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": tokens, "total_tokens": tokens}


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(dumps(payload), status_code=status, media_type="application/json")

"""Small pieces every endpoint uses: the JSON response, usage counts, documented error statuses."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response

from serve_app.ingress.encoding import dumps
from serve_app.schemas import ErrorResponse

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 404, 413, 422, 503)
}


def usage(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": tokens, "total_tokens": tokens}


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(dumps(payload), status_code=status, media_type="application/json")

"""A request's priority lane: the body's `priority` field, else the `X-Priority` header, else the API key's
default, else interactive (deployments/batcher.py puts interactive inputs ahead of bulk ones).

The ingress middleware sees the headers and which API key matched; the endpoints see the body. The middleware
notes the header and the key's default for the request in a context variable (each request runs in its own
task, so the note is that request's alone), and the dispatcher resolves the lane when it sends a call: every
route that reaches a model (OpenAI, Jina, Cohere, TEI, /v1/chunk) honours the header and the key's default
without knowing about them, and a route with a body field hands that over.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from deployments.calls import BULK, INTERACTIVE, PRIORITIES
from deployments.errors import InvalidRequest

HEADER = "X-Priority"
HEADER_KEY = HEADER.lower().encode()


@dataclass(frozen=True, slots=True)
class RequestPriority:
    """What the middleware saw: the raw `X-Priority` header (None when absent) and the key's default lane."""

    header: bytes | None = None
    key_default: str | None = None


_CURRENT: ContextVar[RequestPriority | None] = ContextVar("embedserve_request_priority", default=None)


def note(seen: RequestPriority) -> object:
    """Remember this request's header and key default (the middleware, before the route runs); -> a token for
    `forget`."""
    return _CURRENT.set(seen)


def forget(token: object) -> None:
    _CURRENT.reset(token)  # type: ignore[arg-type]


def lane(value: str, param: str) -> str:
    """A client's priority value -> its lane; anything else is a 400 naming where it came from."""
    normalized = value.strip().lower()
    if normalized in PRIORITIES:
        return normalized
    shown = value if len(value) <= 40 else value[:40] + "..."
    raise InvalidRequest(
        f"{param} must be one of {', '.join(PRIORITIES)}; got {shown!r}.", param=param, code="invalid_priority"
    )


def cohere_lane(priority: int | None) -> str | None:
    """Cohere's own `priority` (an integer, lower is handled earlier, 0 the default and highest): 0 (or less)
    is interactive, anything above it bulk; None: not given."""
    if priority is None:
        return None
    return INTERACTIVE if priority <= 0 else BULK


def resolve(field: str | None = None, param: str = "priority") -> str:
    """The lane of the current request: its body field (`field`, as sent), else the header, else the API key's
    default, else interactive. A header that is present is checked even when the field decides: a malformed
    value is the client's mistake either way."""
    seen = _CURRENT.get()
    from_header = None
    if seen is not None and seen.header is not None:
        from_header = lane(seen.header.decode("latin-1"), HEADER)
    if field is not None:
        return lane(field, param)
    if from_header is not None:
        return from_header
    if seen is not None and seen.key_default is not None:
        return seen.key_default
    return INTERACTIVE

"""Everything of the Python client that is not I/O, written once for the sync and the async client.

Each public call is a *plan*: a generator that yields steps and receives what they gave, so the same logic
(retries, chunking, halving on 413, decoding, merging) runs under a blocking driver (sync.py) and an
asyncio driver (aio.py):

    answer = yield Request("POST", "/v1/embeddings", payload)  # an HTTP answer, or a connection error raised
    yield Sleep(0.5)                                           # None
    parts = yield Parallel([plan_a, plan_b])                   # each plan's result in order, or its failure

A driver performs each step (the async one runs a Parallel's plans concurrently, the sync one in turn) and
hands the outcome back with `advance`. No httpx here: an answer is anything with `status_code`, `headers`
and `content` (an httpx.Response is one).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import orjson

from deployments.http_helpers import backoff_seconds, decode_rows, retry_after_seconds

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_CHUNK_SIZE = 256
RETRY_STATUSES = frozenset({429, 503})
MAX_RETRY_WAIT_S = 30.0

T = TypeVar("T")


# ---- results and errors -----------------------------------------------------------------------------------
class EmbedServeError(Exception):
    """An error answer (`status` is the HTTP status), or a connection failure (`status` 0)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.retry_after = retry_after
        self.body = body

    def __str__(self) -> str:
        what = "/".join(x for x in (self.type, self.code) if x)
        return f"HTTP {self.status} {what}: {self.message}" if self.status else f"{what}: {self.message}"


class EmbedServeConnectionError(EmbedServeError):
    """The server could not be reached (refused, reset, timed out)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=0, type="connection_error", code="connection_failed")


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.total_tokens + other.total_tokens)


@dataclass(slots=True)
class Embeddings:
    """`vectors` [n, dims] in input order (float32; int8/uint8 for embedding_type binary/ubinary/int8)."""

    vectors: np.ndarray
    usage: Usage
    model: str
    requests: int = 1  # how many HTTP requests it took

    def __iter__(self) -> Iterator[Any]:  # vectors, usage = client.embed(...)
        return iter((self.vectors, self.usage))

    def __len__(self) -> int:
        return len(self.vectors)


@dataclass(slots=True)
class RerankHit:
    index: int
    relevance_score: float
    document: str | None = None


@dataclass(slots=True)
class Ranking:
    """`results` best first (cut to top_n); `index` is the document's position in the request."""

    results: list[RerankHit]
    usage: Usage
    model: str
    requests: int = 1

    @property
    def indices(self) -> list[int]:
        return [r.index for r in self.results]

    @property
    def scores(self) -> list[float]:
        return [r.relevance_score for r in self.results]

    def __iter__(self) -> Iterator[RerankHit]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)


# ---- answers and error mapping ----------------------------------------------------------------------------
class HttpAnswer(Protocol):
    """What a driver hands back for a Request (httpx.Response fits; so does `Answer`)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Answer:
    """A plain HttpAnswer, for code that reads answers without httpx (the load generator's users)."""

    status_code: int
    content: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


def error_from_response(resp: HttpAnswer) -> EmbedServeError:
    """Our JSON error shape (or any other body) -> EmbedServeError."""
    try:
        body = orjson.loads(resp.content)
    except ValueError:
        body = None
    retry_after = retry_after_seconds(resp.headers.get("retry-after"))
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return EmbedServeError(
            str(err.get("message") or f"HTTP {resp.status_code}"),
            status=resp.status_code,
            type=err.get("type"),
            code=err.get("code"),
            param=err.get("param"),
            retry_after=retry_after,
            body=body,
        )
    text = resp.content.decode("utf-8", "replace").strip()[:500] if body is None else str(err or body)[:500]
    return EmbedServeError(
        text or _reason(resp.status_code), status=resp.status_code, retry_after=retry_after, body=body
    )


def connection_error(base_url: str, path: str, exc: BaseException) -> EmbedServeConnectionError:
    """A transport failure (refused, reset, timed out) as the error both clients raise."""
    return EmbedServeConnectionError(f"{base_url}{path}: {type(exc).__name__}: {exc}")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _json(answer: HttpAnswer) -> Any:
    return orjson.loads(answer.content)


def retry_delay(attempt: int, retry_after: float | None) -> float:
    """Seconds before retry number `attempt` (0-based): the server's Retry-After (capped), else backoff."""
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_WAIT_S)
    return backoff_seconds(attempt)


# ---- settings ---------------------------------------------------------------------------------------------
def resolve_base_url(url: str | None) -> str:
    """`url`, else $EMBEDSERVE_URL, else DEFAULT_URL; without a trailing / or /v1."""
    url = (url or os.environ.get("EMBEDSERVE_URL") or DEFAULT_URL).rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The Bearer header for `api_key`, else $EMBEDSERVE_API_KEY; none when neither is set."""
    key = api_key if api_key is not None else os.environ.get("EMBEDSERVE_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


# ---- steps and plans --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Request:
    """Send one HTTP request; the plan receives the answer (whatever its status) or a connection error."""

    method: str
    path: str
    json: Any = None


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Parallel:
    """Run these plans (concurrently where the driver can); the plan receives their results in order, or
    the first failure raised."""

    plans: list[Plan[Any]]


Step = Request | Sleep | Parallel
Plan = Generator[Step, Any, T]


@dataclass(frozen=True, slots=True)
class Done(Generic[T]):
    """A plan's end, with its result."""

    value: T


def advance(plan: Plan[T], outcome: Any = None, failure: Exception | None = None) -> Step | Done[T]:
    """Give the plan the outcome of its last step (or raise the step's failure in it): its next step, or Done.
    Start a plan with `advance(plan)`."""
    try:
        return plan.throw(failure) if failure is not None else plan.send(outcome)
    except StopIteration as stop:
        return Done(stop.value)


# ---- pure helpers -----------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Part:
    """What one request answered, before re-assembly."""

    rows: list[np.ndarray] = field(default_factory=list)
    scores: dict[int, float] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    requests: int = 1


def chunk_ranges(n: int, size: int) -> list[range]:
    size = max(1, int(size))
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def _halves(r: range) -> tuple[range, range]:
    mid = r.start + len(r) // 2
    return range(r.start, mid), range(mid, r.stop)


def _splittable(err: EmbedServeError, n: int) -> bool:
    """A 413 about the whole request (count or body size), not about one input: halve and retry."""
    return err.status == 413 and n > 1 and err.param in (None, "input", "documents", "body")


def _check_list(name: str, items: Any) -> list:
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise TypeError(f"{name} must be a list (a single string is allowed for embed's inputs only)")
    return list(items)


def _usage(body: dict) -> Usage:
    usage = body.get("usage") or {}
    return Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("total_tokens", 0)))


def embed_payload(model: str, texts: list[str], options: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": model, "input": texts}
    if "embedding_type" not in options and "encoding_format" not in options:
        payload["encoding_format"] = "base64"  # float32 bytes: smaller and faster to decode than JSON numbers
    payload.update({k: v for k, v in options.items() if v is not None})
    return payload


_INT_TYPES = {"binary": np.int8, "int8": np.int8, "ubinary": np.uint8}


def _decode_embeddings(body: Any, n: int, options: dict[str, Any]) -> _Part:
    dtype = _INT_TYPES.get(options.get("embedding_type") or "", np.float32)
    try:
        if not isinstance(body, dict):
            raise ValueError("the answer is not a JSON object")
        vectors = decode_rows(body.get("data"), n, dtype)
    except ValueError as exc:  # binascii.Error included
        raise EmbedServeError(
            f"invalid embeddings answer for {n} inputs: {exc}", status=200, type="invalid_response"
        ) from None
    return _Part(rows=list(vectors), usage=_usage(body), model=body.get("model", ""))


def _merge_embeddings(parts: list[_Part]) -> Embeddings:
    rows = [r for p in parts for r in p.rows]
    usage = Usage()
    for p in parts:
        usage += p.usage
    vectors = np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
    return Embeddings(vectors=vectors, usage=usage, model=parts[0].model, requests=sum(p.requests for p in parts))


def rerank_payload(model: str, query: Any, docs: list, top_n: int | None, options: dict[str, Any]) -> dict:
    payload: dict[str, Any] = {"model": model, "query": query, "documents": docs, "return_documents": False}
    if top_n is not None:
        payload["top_n"] = top_n
    payload.update({k: v for k, v in options.items() if v is not None})
    return payload


def _decode_rerank(body: dict, offset: int) -> _Part:
    return _Part(
        scores={offset + r["index"]: float(r["relevance_score"]) for r in body["results"]},
        usage=_usage(body),
        model=body.get("model", ""),
    )


def _doc_text(doc: Any) -> str:
    return doc.get("text", "") if isinstance(doc, dict) else str(doc)


def _merge_rerank(parts: list[_Part], documents: Sequence[Any], top_n: int | None, return_documents: bool) -> Ranking:
    scores: dict[int, float] = {}
    usage = Usage()
    for p in parts:
        scores.update(p.scores)
        usage += p.usage
    order = sorted(scores, key=lambda i: (-scores[i], i))
    if top_n is not None:
        order = order[: max(0, top_n)]
    hits = [RerankHit(i, scores[i], _doc_text(documents[i]) if return_documents else None) for i in order]
    return Ranking(results=hits, usage=usage, model=parts[0].model, requests=sum(p.requests for p in parts))


def _joined(halves: list[_Part]) -> _Part:
    a, b = halves
    return _Part(
        rows=a.rows + b.rows,
        scores={**a.scores, **b.scores},
        usage=a.usage + b.usage,
        model=a.model,
        requests=a.requests + b.requests,
    )


def _all(plans: list[Plan[T]]) -> Plan[list[T]]:
    """Results of several plans in order (one plan runs inline, without a Parallel step)."""
    if len(plans) == 1:
        return [(yield from plans[0])]
    return (yield Parallel(list(plans)))


# ---- the calls --------------------------------------------------------------------------------------------
class CallPlanner:
    """A client's settings, and the plan of each of its calls (the drivers add only the HTTP)."""

    def __init__(
        self,
        base_url: str | None,
        *,
        api_key: str | None,
        timeout: float,
        chunk_size: int,
        max_retries: int,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.base_url = resolve_base_url(base_url)
        self.headers = auth_headers(api_key)
        self.timeout = timeout
        self.chunk_size = chunk_size
        self.max_retries = max(0, max_retries)

    def connection_error(self, path: str, exc: BaseException) -> EmbedServeConnectionError:
        return connection_error(self.base_url, path, exc)

    def request(self, method: str, path: str, json: Any = None, ok: tuple[int, ...] = (200,)) -> Plan[HttpAnswer]:
        """One request; 429 / 503 answers and connection failures retried `max_retries` times, honouring
        Retry-After. An answer outside `ok` is raised as EmbedServeError."""
        attempt = 0
        while True:
            try:
                answer: HttpAnswer = yield Request(method, path, json)
            except EmbedServeConnectionError as exc:
                err: EmbedServeError = exc
            else:
                if answer.status_code in ok:
                    return answer
                err = error_from_response(answer)
                if answer.status_code not in RETRY_STATUSES:
                    raise err
            if attempt >= self.max_retries:
                raise err
            yield Sleep(retry_delay(attempt, err.retry_after))
            attempt += 1

    def models(self) -> Plan[list[dict[str, Any]]]:
        return _json((yield from self.request("GET", "/v1/models")))["data"]

    def health(self) -> Plan[dict[str, Any]]:
        return _json((yield from self.request("GET", "/health")))

    def ready(self) -> Plan[dict[str, Any]]:
        return _json((yield from self.request("GET", "/ready", ok=(200, 503))))

    def wait_ready(
        self, timeout: float, interval: float, on_poll: Callable[[dict | None], None] | None
    ) -> Plan[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            last: dict | None
            try:
                answer: HttpAnswer = yield Request("GET", "/ready")
                last = _json(answer) if answer.status_code in (200, 503) else None
            except (EmbedServeConnectionError, ValueError):
                last = None
            if on_poll is not None:
                on_poll(last)
            if last is not None and last.get("status") == "ready":
                return last
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.base_url} not ready after {timeout:g} s: {last}")
            yield Sleep(min(interval, max(0.0, deadline - time.monotonic())))

    def embed(
        self, model: str, inputs: str | Sequence[str], chunk_size: int | None, options: dict[str, Any]
    ) -> Plan[Embeddings]:
        texts = [inputs] if isinstance(inputs, str) else _check_list("inputs", inputs)
        size = len(texts) if options.get("late_chunking") else (chunk_size or self.chunk_size)
        ranges = chunk_ranges(len(texts), size) or [range(0, 0)]
        parts = yield from _all([self._embed_part(model, texts, r, options) for r in ranges])
        return _merge_embeddings(parts)

    def _embed_part(self, model: str, texts: list[str], r: range, options: dict[str, Any]) -> Plan[_Part]:
        try:
            payload = embed_payload(model, texts[r.start : r.stop], options)
            answer = yield from self.request("POST", "/v1/embeddings", payload)
        except EmbedServeError as err:
            if not _splittable(err, len(r)) or options.get("late_chunking"):
                raise
            halves = [self._embed_part(model, texts, h, options) for h in _halves(r)]
            return _joined((yield from _all(halves)))
        return _decode_embeddings(_json(answer), len(r), options)

    def rerank(
        self,
        model: str,
        query: str | dict,
        documents: Sequence[str | dict],
        top_n: int | None,
        return_documents: bool,
        chunk_size: int | None,
        options: dict[str, Any],
    ) -> Plan[Ranking]:
        docs = _check_list("documents", documents)
        ranges = chunk_ranges(len(docs), chunk_size or self.chunk_size) or [range(0, 0)]
        server_top_n = top_n if len(ranges) == 1 else None
        parts = yield from _all([self._rerank_part(model, query, docs, r, server_top_n, options) for r in ranges])
        return _merge_rerank(parts, docs, top_n, return_documents)

    def _rerank_part(
        self, model: str, query: Any, docs: list, r: range, top_n: int | None, options: dict[str, Any]
    ) -> Plan[_Part]:
        try:
            payload = rerank_payload(model, query, docs[r.start : r.stop], top_n, options)
            answer = yield from self.request("POST", "/v1/rerank", payload)
        except EmbedServeError as err:
            if not _splittable(err, len(r)):
                raise
            halves = [self._rerank_part(model, query, docs, h, None, options) for h in _halves(r)]
            return _joined((yield from _all(halves)))
        return _decode_rerank(_json(answer), r.start)

"""Python client for embedserve: `EmbedServeClient` (sync) and `AsyncEmbedServeClient` (asyncio), on httpx.

    from serve_app.client import EmbedServeClient

    with EmbedServeClient("http://127.0.0.1:8000") as client:
        result = client.embed("all-minilm-l6-v2", ["Hello world", "Bonjour le monde"], dimensions=128)
        result.vectors                      # numpy float32 [2, 128], in input order
        result.usage.prompt_tokens
        vectors, usage = client.embed("all-minilm-l6-v2", texts)   # a result unpacks as (vectors, usage)
        ranking = client.rerank("bge-reranker-v2-m3", "what is AI?", documents, top_n=3)
        ranking.results[0].index, ranking.results[0].relevance_score

Big input lists are split into requests of at most `chunk_size` inputs (default 256; the async client sends
up to `max_concurrency` of them at once) and the results put back in input order with the usage summed; a
413 for a whole request (the server's `max_inputs_per_request` or body size) halves the chunk and retries.
429 / 503 answers and connection failures are retried `max_retries` times, honouring `Retry-After`.
Every error answer is raised as `EmbedServeError` carrying the `{"error": {message, type, param, code}}` fields
and the HTTP status. No Ray, no torch: only httpx and numpy.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_CHUNK_SIZE = 256
_RETRY_STATUSES = frozenset({429, 503})
_MAX_RETRY_WAIT_S = 30.0


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


@dataclass(slots=True)
class _Part:
    """What one request answered, before re-assembly."""

    rows: list[np.ndarray] = field(default_factory=list)
    scores: dict[int, float] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    requests: int = 1


# ---- pure helpers (shared by both clients) ---------------------------------------------------------------
def _base(url: str | None) -> str:
    url = (url or os.environ.get("EMBEDSERVE_URL") or DEFAULT_URL).rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _headers(api_key: str | None) -> dict[str, str]:
    key = api_key if api_key is not None else os.environ.get("EMBEDSERVE_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def error_from_response(resp: httpx.Response) -> EmbedServeError:
    """Our JSON error shape (or any other body) -> EmbedServeError."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return EmbedServeError(
            str(err.get("message") or f"HTTP {resp.status_code}"),
            status=resp.status_code,
            type=err.get("type"),
            code=err.get("code"),
            param=err.get("param"),
            retry_after=_retry_after(resp),
            body=body,
        )
    text = resp.text.strip()[:500] if body is None else str(err or body)[:500]
    return EmbedServeError(
        text or resp.reason_phrase or f"HTTP {resp.status_code}",
        status=resp.status_code,
        retry_after=_retry_after(resp),
        body=body,
    )


def _chunks(n: int, size: int) -> list[range]:
    size = max(1, int(size))
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def _splittable(err: EmbedServeError, n: int) -> bool:
    """A 413 about the whole request (count or body size), not about one input: halve and retry."""
    return err.status == 413 and n > 1 and err.param in (None, "input", "documents", "body")


def _embed_payload(model: str, texts: list[str], options: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {"model": model, "input": texts}
    if "embedding_type" not in options and "encoding_format" not in options:
        payload["encoding_format"] = "base64"  # float32 bytes: smaller and faster to decode than JSON numbers
    payload.update({k: v for k, v in options.items() if v is not None})
    return payload


_INT_TYPES = {"binary": np.int8, "int8": np.int8, "ubinary": np.uint8}


def _decode_embeddings(body: dict, n: int, options: dict[str, Any]) -> _Part:
    data = sorted(body["data"], key=lambda d: d["index"])
    if len(data) != n:
        raise EmbedServeError(
            f"the server answered {len(data)} embeddings for {n} inputs", status=200, type="invalid_response"
        )
    dtype = _INT_TYPES.get(options.get("embedding_type") or "", np.float32)
    rows = [
        np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4")
        if isinstance(d["embedding"], str)
        else np.asarray(d["embedding"], dtype=dtype)
        for d in data
    ]
    usage = body.get("usage") or {}
    return _Part(
        rows=rows,
        usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("total_tokens", 0))),
        model=body.get("model", ""),
    )


def _merge_embeddings(parts: list[_Part]) -> Embeddings:
    rows = [r for p in parts for r in p.rows]
    usage = Usage()
    for p in parts:
        usage += p.usage
    vectors = np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
    return Embeddings(vectors=vectors, usage=usage, model=parts[0].model, requests=sum(p.requests for p in parts))


def _doc_text(doc: Any) -> str:
    return doc.get("text", "") if isinstance(doc, dict) else str(doc)


def _rerank_payload(model: str, query: Any, docs: list, top_n: int | None, options: dict[str, Any]) -> dict:
    payload: dict[str, Any] = {"model": model, "query": query, "documents": docs, "return_documents": False}
    if top_n is not None:
        payload["top_n"] = top_n
    payload.update({k: v for k, v in options.items() if v is not None})
    return payload


def _decode_rerank(body: dict, offset: int) -> _Part:
    usage = body.get("usage") or {}
    return _Part(
        scores={offset + r["index"]: float(r["relevance_score"]) for r in body["results"]},
        usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("total_tokens", 0))),
        model=body.get("model", ""),
    )


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


def _halves(r: range) -> tuple[range, range]:
    mid = r.start + len(r) // 2
    return range(r.start, mid), range(mid, r.stop)


def _joined(halves: list[_Part]) -> _Part:
    a, b = halves
    return _Part(
        scores={**a.scores, **b.scores}, usage=a.usage + b.usage, model=a.model, requests=a.requests + b.requests
    )


def _check_list(name: str, items: Any) -> list:
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise TypeError(f"{name} must be a list (a single string is allowed for embed's inputs only)")
    return list(items)


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(retry_after, _MAX_RETRY_WAIT_S)
    return min(0.5 * 2**attempt, 8.0)


class _Options:
    def __init__(
        self,
        base_url: str | None,
        api_key: str | None,
        timeout: float,
        chunk_size: int,
        max_retries: int,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.base_url = _base(base_url)
        self.headers = _headers(api_key)
        self.timeout = timeout
        self.chunk_size = chunk_size
        self.max_retries = max(0, max_retries)


# ---- sync ----------------------------------------------------------------------------------------------
class EmbedServeClient:
    """Blocking client. `base_url` defaults to $EMBEDSERVE_URL or http://127.0.0.1:8000 (a trailing /v1 is
    fine); `api_key` to $EMBEDSERVE_API_KEY."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_retries: int = 2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._o = _Options(base_url, api_key, timeout, chunk_size, max_retries)
        self.base_url = self._o.base_url
        self._http = httpx.Client(base_url=self.base_url, headers=self._o.headers, timeout=timeout, transport=transport)

    def __enter__(self) -> EmbedServeClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, json: Any = None, ok: tuple[int, ...] = (200,)) -> httpx.Response:
        attempt = 0
        while True:
            try:
                resp = self._http.request(method, path, json=json)
            except httpx.TransportError as exc:
                err: EmbedServeError = EmbedServeConnectionError(f"{self.base_url}{path}: {type(exc).__name__}: {exc}")
            else:
                if resp.status_code in ok:
                    return resp
                err = error_from_response(resp)
                if resp.status_code not in _RETRY_STATUSES:
                    raise err
            if attempt >= self._o.max_retries:
                raise err
            time.sleep(_backoff(attempt, err.retry_after))
            attempt += 1

    def models(self) -> list[dict[str, Any]]:
        """The served models (`GET /v1/models` `data`: id, kind, family, dimensions, max_tokens, ...)."""
        return self._request("GET", "/v1/models").json()["data"]

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health").json()

    def ready(self) -> dict[str, Any]:
        """`{"status": "ready" | "not_ready", "models": {name: state}}` (a 503 is an answer, not an error)."""
        return self._request("GET", "/ready", ok=(200, 503)).json()

    def wait_ready(
        self, timeout: float = 120.0, interval: float = 0.5, on_poll: Callable[[dict | None], None] | None = None
    ) -> dict[str, Any]:
        """Poll /ready until every model is ready; TimeoutError after `timeout` s. `on_poll` sees each answer
        (None while the server does not answer)."""
        deadline = time.monotonic() + timeout
        last: dict | None = None
        while True:
            try:
                resp = self._http.get("/ready")
                last = resp.json() if resp.status_code in (200, 503) else None
            except (httpx.TransportError, ValueError):
                last = None
            if on_poll is not None:
                on_poll(last)
            if last is not None and last.get("status") == "ready":
                return last
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.base_url} not ready after {timeout:g} s: {last}")
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))

    def embed(
        self, model: str, inputs: str | Sequence[str], *, chunk_size: int | None = None, **options: Any
    ) -> Embeddings:
        """Embeddings of `inputs` in order. options: dimensions, task, prompt_name, truncate,
        truncation_direction, late_chunking, normalized, embedding_type, ... (the API's fields)."""
        texts = [inputs] if isinstance(inputs, str) else _check_list("inputs", inputs)
        size = len(texts) if options.get("late_chunking") else (chunk_size or self._o.chunk_size)
        parts = [self._embed_part(model, texts[r.start : r.stop], options) for r in _chunks(len(texts), size)]
        return _merge_embeddings(parts or [self._embed_part(model, texts, options)])

    def _embed_part(self, model: str, texts: list[str], options: dict[str, Any]) -> _Part:
        try:
            resp = self._request("POST", "/v1/embeddings", _embed_payload(model, texts, options))
        except EmbedServeError as err:
            if not _splittable(err, len(texts)) or options.get("late_chunking"):
                raise
            half = len(texts) // 2
            merged = _merge_embeddings(
                [self._embed_part(model, texts[:half], options), self._embed_part(model, texts[half:], options)]
            )
            return _Part(rows=list(merged.vectors), usage=merged.usage, model=merged.model, requests=merged.requests)
        return _decode_embeddings(resp.json(), len(texts), options)

    def rerank(
        self,
        model: str,
        query: str | dict,
        documents: Sequence[str | dict],
        top_n: int | None = None,
        *,
        return_documents: bool = True,
        chunk_size: int | None = None,
        **options: Any,
    ) -> Ranking:
        """Documents ranked best first. options: instruction, max_tokens_per_doc, raw_scores."""
        docs = _check_list("documents", documents)
        ranges = _chunks(len(docs), chunk_size or self._o.chunk_size) or [range(0, 0)]
        server_top_n = top_n if len(ranges) == 1 else None
        parts = [self._rerank_part(model, query, docs, r, server_top_n, options) for r in ranges]
        return _merge_rerank(parts, docs, top_n, return_documents)

    def _rerank_part(self, model, query, docs, r: range, top_n, options) -> _Part:
        try:
            payload = _rerank_payload(model, query, docs[r.start : r.stop], top_n, options)
            resp = self._request("POST", "/v1/rerank", payload)
        except EmbedServeError as err:
            if not _splittable(err, len(r)):
                raise
            return _joined([self._rerank_part(model, query, docs, h, None, options) for h in _halves(r)])
        return _decode_rerank(resp.json(), r.start)


# ---- async ---------------------------------------------------------------------------------------------
class AsyncEmbedServeClient:
    """asyncio client; the same methods as EmbedServeClient, awaited. Chunks of one call run concurrently
    (at most `max_concurrency` requests in flight per client)."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_retries: int = 2,
        max_concurrency: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._o = _Options(base_url, api_key, timeout, chunk_size, max_retries)
        self.base_url = self._o.base_url
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self._o.headers,
            timeout=timeout,
            transport=transport,
            # keep every connection alive: httpx keeps only 20 by default, and above that each request
            # would open (and close) a new TCP connection
            limits=httpx.Limits(
                max_connections=max(max_concurrency, 1) * 2, max_keepalive_connections=max(max_concurrency, 1) * 2
            ),
        )
        self._max_concurrency = max(1, max_concurrency)
        self._slots: asyncio.Semaphore | None = None

    async def __aenter__(self) -> AsyncEmbedServeClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, json: Any = None, ok: tuple[int, ...] = (200,)) -> httpx.Response:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_concurrency)
        attempt = 0
        while True:
            try:
                async with self._slots:
                    resp = await self._http.request(method, path, json=json)
            except httpx.TransportError as exc:
                err: EmbedServeError = EmbedServeConnectionError(f"{self.base_url}{path}: {type(exc).__name__}: {exc}")
            else:
                if resp.status_code in ok:
                    return resp
                err = error_from_response(resp)
                if resp.status_code not in _RETRY_STATUSES:
                    raise err
            if attempt >= self._o.max_retries:
                raise err
            await asyncio.sleep(_backoff(attempt, err.retry_after))
            attempt += 1

    async def models(self) -> list[dict[str, Any]]:
        return (await self._request("GET", "/v1/models")).json()["data"]

    async def health(self) -> dict[str, Any]:
        return (await self._request("GET", "/health")).json()

    async def ready(self) -> dict[str, Any]:
        resp = await self._request("GET", "/ready", ok=(200, 503))
        return resp.json()

    async def wait_ready(
        self, timeout: float = 120.0, interval: float = 0.5, on_poll: Callable[[dict | None], None] | None = None
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict | None = None
        while True:
            try:
                resp = await self._http.get("/ready")
                last = resp.json() if resp.status_code in (200, 503) else None
            except (httpx.TransportError, ValueError):
                last = None
            if on_poll is not None:
                on_poll(last)
            if last is not None and last.get("status") == "ready":
                return last
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.base_url} not ready after {timeout:g} s: {last}")
            await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))

    async def embed(
        self, model: str, inputs: str | Sequence[str], *, chunk_size: int | None = None, **options: Any
    ) -> Embeddings:
        texts = [inputs] if isinstance(inputs, str) else _check_list("inputs", inputs)
        size = len(texts) if options.get("late_chunking") else (chunk_size or self._o.chunk_size)
        ranges = _chunks(len(texts), size) or [range(0, 0)]
        parts = await _gather([self._embed_part(model, texts[r.start : r.stop], options) for r in ranges])
        return _merge_embeddings(parts)

    async def _embed_part(self, model: str, texts: list[str], options: dict[str, Any]) -> _Part:
        try:
            resp = await self._request("POST", "/v1/embeddings", _embed_payload(model, texts, options))
        except EmbedServeError as err:
            if not _splittable(err, len(texts)) or options.get("late_chunking"):
                raise
            half = len(texts) // 2
            halves = await _gather(
                [self._embed_part(model, texts[:half], options), self._embed_part(model, texts[half:], options)]
            )
            merged = _merge_embeddings(halves)
            return _Part(rows=list(merged.vectors), usage=merged.usage, model=merged.model, requests=merged.requests)
        return _decode_embeddings(resp.json(), len(texts), options)

    async def rerank(
        self,
        model: str,
        query: str | dict,
        documents: Sequence[str | dict],
        top_n: int | None = None,
        *,
        return_documents: bool = True,
        chunk_size: int | None = None,
        **options: Any,
    ) -> Ranking:
        docs = _check_list("documents", documents)
        ranges = _chunks(len(docs), chunk_size or self._o.chunk_size) or [range(0, 0)]
        server_top_n = top_n if len(ranges) == 1 else None
        parts = await _gather([self._rerank_part(model, query, docs, r, server_top_n, options) for r in ranges])
        return _merge_rerank(parts, docs, top_n, return_documents)

    async def _rerank_part(self, model, query, docs, r: range, top_n, options) -> _Part:
        try:
            payload = _rerank_payload(model, query, docs[r.start : r.stop], top_n, options)
            resp = await self._request("POST", "/v1/rerank", payload)
        except EmbedServeError as err:
            if not _splittable(err, len(r)):
                raise
            halves = await _gather([self._rerank_part(model, query, docs, h, None, options) for h in _halves(r)])
            return _joined(halves)
        return _decode_rerank(resp.json(), r.start)


async def _gather(coros: list) -> list:
    """Results in order; the first failure cancels the others and is raised."""
    if len(coros) == 1:
        return [await coros[0]]
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

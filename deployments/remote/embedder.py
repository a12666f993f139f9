"""The HTTP side of a remote model (no Ray): chunking, concurrency, retries, decoding, error mapping.

Path of a call: split the inputs into chunks of at most `batching.max_batch_size` -> one POST per chunk
(at most `concurrency` in flight per replica), base64 float32 asked for and decoded with numpy -> retries
with exponential backoff on 429 / 5xx / connection errors (bounded, honouring `Retry-After`) -> remote errors
mapped to domain errors (deployments/errors.py) -> cut + re-normalize when the remote ignored `dimensions`
-> EmbedReply.

Answers are read raw and capped (`RemoteTarget.response_cap`): we ask for `identity` and refuse a compressed
answer, so nothing can inflate past the cap. What the remote said when it failed, and where it is, go to the
log (logger "ray.serve") only: the API client hears which of our models failed and the HTTP status, never the
backend's URL or its error body.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import math
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import orjson

from deployments.calls import EmbedCall, EmbedReply
from deployments.engines.postprocess import finalize_rows
from deployments.errors import (
    DeadlineExceeded,
    InvalidRequest,
    NotFound,
    ServiceError,
    TooLarge,
    Unavailable,
    UpstreamFailed,
)
from deployments.http_helpers import backoff_seconds, decode_rows, retry_after_seconds, unasked_encoding
from deployments.remote.target import RemoteTarget, default_key_envs

log = logging.getLogger("ray.serve")

TRUNCATE_FIELDS = ("truncate", "truncation_direction")
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
ERROR_BODY_BYTES = 64 * 2**10  # of an error answer, read for the log only
_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_.\[\]]{0,63}")


class ResponseRefused(Exception):
    """The remote's answer is not read: over the size cap, or compressed although we asked for identity."""


@dataclass
class RawAnswer:
    """A remote answer read under the cap: status, headers and the (raw, uncompressed) body."""

    status_code: int
    headers: httpx.Headers
    content: bytes
    truncated: bool = False

    def as_response(self) -> httpx.Response:
        """An httpx.Response of the body as read, for remote_message (only the content type is kept)."""
        ctype = self.headers.get("content-type")
        return httpx.Response(self.status_code, headers={"content-type": ctype} if ctype else {}, content=self.content)


def remote_message(resp: httpx.Response) -> tuple[str, str | None]:
    """(message, param) from an error answer: OpenAI/embedserve `{"error": {...}}`, `{"error": "..."}`,
    `{"message"}`, `{"detail"}`, or the text."""
    try:
        body = resp.json()
    except ValueError:
        text = resp.text.strip()
        return (text[:500] or resp.reason_phrase or f"HTTP {resp.status_code}"), None
    param = None
    msg: Any = body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            param = err.get("param") if isinstance(err.get("param"), str) else None
            msg = err.get("message") or err.get("detail") or err.get("msg") or err
        else:
            msg = err
        if isinstance(msg, dict | list):
            msg = body.get("message") or body.get("detail") or msg
    if not isinstance(msg, str):
        msg = orjson.dumps(msg).decode()
    return msg[:500], param


def split_tokens(total: int, texts: list[str]) -> list[int]:
    """A chunk's token total spread over its inputs in proportion to their length (the OpenAI shape reports
    one total per call); the parts add up to the total exactly."""
    if len(texts) == 1:
        return [total]
    weights = np.array([max(len(t), 1) for t in texts], dtype=np.float64)
    shares = weights / weights.sum() * total
    counts = np.floor(shares).astype(np.int64)
    rest = int(total - counts.sum())
    if rest > 0:
        counts[np.argsort(-(shares - counts), kind="stable")[:rest]] += 1
    return counts.tolist()


@dataclass
class RemoteStats:
    calls: int = 0
    retries: int = 0
    failures: int = 0
    last_error: str | None = None


class RemoteEmbedder:
    """The HTTP side of a remote model (no Ray): chunking, retries, error mapping, decoding.

    `transport` is for tests (httpx.MockTransport); one AsyncClient per replica, created on first use so it
    belongs to the replica's event loop.
    """

    def __init__(
        self,
        name: str,
        target: RemoteTarget,
        api_key: str | None,
        chunk_size: int,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.target = target
        self.chunk_size = max(1, chunk_size)
        # identity: a compressed answer could inflate far past the response cap (it is refused, not decoded).
        self._headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "accept-encoding": "identity",
        }
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self.stats = RemoteStats()
        self.send_truncate = True  # off once the remote has refused the field and answered without it

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            t = self.target
            self._client = httpx.AsyncClient(
                # pool=None: waiting for a free connection is bounded by the router's deadline, not reported as
                # a remote timeout.
                timeout=httpx.Timeout(t.read_timeout_s, connect=t.connect_timeout_s, pool=None),
                limits=httpx.Limits(max_connections=max(t.concurrency, 1), max_keepalive_connections=t.concurrency),
                headers=self._headers,
                transport=self._transport,
                follow_redirects=False,
            )
            self._slots = asyncio.Semaphore(t.concurrency)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # ---- one call --------------------------------------------------------------------------------------
    async def embed(self, call: EmbedCall) -> EmbedReply:
        if getattr(call, "items", None):
            raise InvalidRequest(f"Model {self.name} is a remote text model: it takes text inputs only.", param="input")
        if set(getattr(call, "outputs", None) or ("dense",)) - {"dense"}:
            raise InvalidRequest(f"Model {self.name} is a remote model: it gives dense vectors only.", param="output")
        texts = list(call.texts)
        if not texts:
            raise InvalidRequest("`input` must not be empty.", param="input", code="empty_input")
        # Late chunking needs every chunk of the document in one call.
        size = len(texts) if call.late_chunking else self.chunk_size
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        results = await _all_or_nothing([self._embed_chunk(chunk, call) for chunk in chunks])
        vectors = np.concatenate([r[0] for r in results]) if len(results) > 1 else results[0][0]
        counts = [c for r in results for c in r[1]]
        width = vectors.shape[1]
        if call.dimensions is not None and width < call.dimensions:
            raise UpstreamFailed(
                f"The remote model {self.name} returned {width}-dimensional vectors, fewer than "
                f"dimensions={call.dimensions}.",
                param="dimensions",
                code="remote_bad_response",
            )
        cut = call.dimensions if call.dimensions is not None and width > call.dimensions else None
        return EmbedReply(vectors=finalize_rows(vectors, cut, call.normalize), token_counts=counts, model=self.name)

    def payload(self, texts: list[str], call: EmbedCall) -> dict[str, Any]:
        """The remote request. Fields beyond OpenAI's are sent only when the caller asked for non-defaults."""
        body: dict[str, Any] = {"model": self.target.model, "input": texts, "encoding_format": self.target.encoding}
        if call.dimensions is not None and self.target.dimensions_mode == "send":
            body["dimensions"] = call.dimensions
        if call.truncate and self.send_truncate:
            body["truncate"] = True
            if call.truncation_direction != "right":
                body["truncation_direction"] = call.truncation_direction
        if not call.normalize:
            body["normalized"] = False
        if call.late_chunking:
            body["late_chunking"] = True
        return body

    async def _embed_chunk(self, texts: list[str], call: EmbedCall) -> tuple[np.ndarray, list[int]]:
        payload = self.payload(texts, call)
        try:
            body = await self.post(payload)
        except ServiceError as err:
            # `truncate` is a hint (the router sets it when reranking with an embedding model); a strict
            # OpenAI-style remote refuses unknown fields. Try once without it; if that works, stop sending it.
            if err.code != "remote_invalid_request" or "truncate" not in payload:
                raise
            body = await self.post({k: v for k, v in payload.items() if k not in TRUNCATE_FIELDS})
            if self.send_truncate:
                self.send_truncate = False
                log.warning("%s: the remote refuses `truncate`; no longer sending it", self.name)
        try:
            vectors = decode_rows(body.get("data") if isinstance(body, dict) else None, len(texts))
        except (ValueError, binascii.Error) as exc:
            raise self._fail(self._bad_response(str(exc)[:200]), f"invalid embeddings response: {exc}") from None
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        total = usage.get("prompt_tokens")
        if not isinstance(total, int):
            total = usage.get("total_tokens") if isinstance(usage.get("total_tokens"), int) else 0
        return vectors, split_tokens(max(0, total), texts)

    # ---- one POST, with retries --------------------------------------------------------------------------
    async def post(self, payload: dict[str, Any]) -> Any:
        """POST one chunk, retrying 429 / 5xx / connection errors; the decoded JSON answer or a domain error."""
        client = self._http()
        assert self._slots is not None
        content = orjson.dumps(payload)
        t = self.target
        inputs = payload.get("input")
        cap = t.response_cap(len(inputs) if isinstance(inputs, list) else 1)
        attempt = 0
        while True:
            retry_after: float | None = None
            async with self._slots:
                self.stats.calls += 1
                try:
                    answer = await read_answer(client, t.endpoint, content, cap)
                except httpx.TimeoutException as exc:
                    if not isinstance(exc, httpx.ConnectTimeout):
                        why = f"no answer within {t.read_timeout_s:g} s ({type(exc).__name__})"
                        raise self._fail(self._timeout(), why) from None
                    reason, detail = "connect timeout", f"connect timeout after {t.connect_timeout_s:g} s"
                except httpx.TransportError as exc:
                    reason = f"connection error ({type(exc).__name__})"
                    detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
                except ResponseRefused as exc:
                    raise self._fail(self._bad_response(str(exc)), str(exc)) from None
                else:
                    if answer.status_code < 300:
                        try:
                            return orjson.loads(answer.content)
                        except orjson.JSONDecodeError:
                            why = f"the body is not JSON: {answer.content[:200]!r}"
                            raise self._fail(self._bad_response("the body is not JSON"), why) from None
                    if answer.status_code not in RETRYABLE_STATUSES:
                        detail = f"HTTP {answer.status_code}: {upstream_detail(answer)}"
                        raise self._fail(self._map_status(answer), detail)
                    reason = f"HTTP {answer.status_code}"
                    detail = f"HTTP {answer.status_code}: {upstream_detail(answer)}"
                    retry_after = retry_after_seconds(answer.headers.get("retry-after"))
            attempt += 1
            self.stats.last_error = detail[:500]
            backoff = backoff_seconds(attempt - 1, t.backoff_s, t.max_backoff_s)
            if attempt > t.retries or (retry_after is not None and retry_after > t.max_retry_after_s):
                wait = retry_after if retry_after is not None else backoff
                why = f"giving up after {attempt} attempt(s); last: {detail}"
                raise self._fail(self._unavailable(attempt, reason, wait), why)
            delay = retry_after if retry_after is not None else backoff * random.uniform(0.5, 1.0)
            self.stats.retries += 1
            log.warning(
                "%s: remote %s at %s (attempt %d), retrying in %.2f s",
                self.name,
                detail[:500],
                t.display_url,
                attempt,
                delay,
            )
            await asyncio.sleep(delay)

    # ---- error mapping: details to the log, a plain answer to the client ----------------------------------
    def _fail(self, err: ServiceError, detail: str | None = None) -> ServiceError:
        """Count a failed call; `detail` (the upstream's own words, where it is) goes to the log and to
        describe(), which only operators see; the client gets `err` alone."""
        self.stats.failures += 1
        self.stats.last_error = (detail or err.message)[:500]
        if detail:
            self._log_failure(detail)
        return err

    def _log_failure(self, detail: str) -> None:
        """The upstream's own words and where it is: for operators only (never in a client's error)."""
        log.warning(
            "%s: remote model %s at %s failed: %s", self.name, self.target.model, self.target.display_url, detail[:2000]
        )

    def _failed(self, status: int) -> str:
        return f"The remote model {self.name} failed (HTTP {status})"

    def _map_status(self, answer: RawAnswer) -> ServiceError:
        """A non-retried error status -> the domain error of the same meaning, in our words (the upstream's
        body goes to the log, see _fail); only a plain field name is kept from it, as `param`."""
        status = answer.status_code
        if status in (400, 422):
            _, param = remote_message(answer.as_response())
            return InvalidRequest(
                f"The remote model {self.name} refused the request (HTTP {status}).",
                param=param if param is not None and _PARAM.fullmatch(param) else None,
                code="remote_invalid_request",
            )
        if status == 404:
            return NotFound(
                f"The remote model {self.name} is not available from its remote backend (HTTP 404).",
                param="model",
                code="remote_not_found",
            )
        if status == 413:
            return TooLarge(
                f"The remote model {self.name} refused the request as too large (HTTP 413).",
                code="remote_payload_too_large",
            )
        if status in (401, 403):
            key_env = self.target.key_env or " or ".join(default_key_envs(self.name, self.target))
            log.warning(
                "%s: the remote rejected our credentials (HTTP %d); check the API key in the replica's "
                "environment variable %s",
                self.name,
                status,
                key_env,
            )
            return UpstreamFailed(
                f"{self._failed(status)}: the remote backend rejected this service's credentials.",
                code="remote_auth_failed",
            )
        return UpstreamFailed(f"{self._failed(status)}.", code="remote_error")

    def _timeout(self) -> ServiceError:
        return DeadlineExceeded(
            f"The remote model {self.name} did not answer within {self.target.read_timeout_s:g} s.",
            code="remote_timeout",
        )

    def _unavailable(self, attempts: int, reason: str, wait_s: float) -> ServiceError:
        """`reason` is ours ("HTTP 503", "connection error (ConnectError)"): never the upstream's words."""
        return Unavailable(
            f"The remote model {self.name} is unavailable after {attempts} attempt{'s' if attempts > 1 else ''} "
            f"(last: {reason}); retry shortly.",
            code="remote_unavailable",
            retry_after_s=max(1, math.ceil(wait_s)),
        )

    def _bad_response(self, why: str) -> ServiceError:
        """`why` is our own description of what is wrong with the answer."""
        return UpstreamFailed(
            f"The remote model {self.name} returned an invalid embeddings response: {why}.",
            code="remote_bad_response",
        )


async def read_answer(client: httpx.AsyncClient, url: str, content: bytes, cap: int) -> RawAnswer:
    """POST and read the answer raw (never decompressed), at most `cap` bytes of a success and
    ERROR_BODY_BYTES of an error (cut there: it is only logged). ResponseRefused when a success is over the
    cap or any answer is compressed."""
    async with client.stream("POST", url, content=content) as resp:
        encoding = unasked_encoding(resp.headers.get("content-encoding"))
        if encoding is not None:
            raise ResponseRefused(
                f"the answer is compressed (Content-Encoding: {encoding}) although an uncompressed one was asked for"
            )
        success = resp.status_code < 300
        limit = cap if success else ERROR_BODY_BYTES
        declared = resp.headers.get("content-length", "")
        if success and declared.isdigit() and int(declared) > limit:
            raise ResponseRefused(f"the answer of {int(declared)} bytes is over the {limit}-byte limit")
        body = bytearray()
        truncated = False
        async for chunk in _raw_chunks(resp):
            body += chunk
            if len(body) > limit:
                if success:
                    raise ResponseRefused(f"the answer is over the {limit}-byte limit")
                del body[limit:]
                truncated = True
                break
        return RawAnswer(resp.status_code, resp.headers, bytes(body), truncated)


async def _raw_chunks(resp: httpx.Response) -> AsyncIterator[bytes]:
    """The body as it arrives, undecoded. An answer built in memory (a test transport's httpx.Response with
    `content=`) was read when it was made: it is handed over whole."""
    if resp.is_stream_consumed:
        yield resp.content
        return
    async for chunk in resp.aiter_raw():
        yield chunk


def upstream_detail(answer: RawAnswer) -> str:
    """What the remote said in an error answer, for the log."""
    msg, _ = remote_message(answer.as_response())
    return msg + (" [cut]" if answer.truncated else "")


async def _all_or_nothing(coros: list) -> list:
    """Run concurrently, results in order; the first failure cancels the rest and is raised."""
    if len(coros) == 1:
        return [await coros[0]]
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

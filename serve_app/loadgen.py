"""The one HTTP load generator of the project: `embedserve bench`, bench/load.py, bench/soak.py, bench/hops.py
and the cluster scenario tests all drive their traffic through it.

Every request body is prepared before the clock starts. `concurrency` workers share the list; each sends the
next request as soon as its previous answer arrived, and stops by itself once `max_requests` were sent,
`duration_s` passed, `max_errors` requests failed or `stop` was set. Each exchange becomes a `Sample`
(latency, status, error, and what `inspect` made of the answer's body, e.g. a check of the answer).

Transport: for http:// URLs a minimal keep-alive HTTP/1.1 client on asyncio streams, one connection per
worker (httpx spends more CPU per request than the server under test at high rates, and both share the
machine); `transport="httpx"` (the default for https://) uses one httpx.AsyncClient with a connection per
worker. `BackgroundLoad` runs a load in a thread of its own for synchronous code.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx
import numpy as np

T = TypeVar("T")
Transport = Literal["auto", "raw", "httpx"]
Inspect = Callable[["Sample", bytes], Any]

DEFAULT_HEADERS = {"content-type": "application/json"}


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """One request to send: `path` is appended to the load's URL path; `body` goes as it is."""

    body: bytes = b""
    path: str = ""
    method: str = "POST"


@dataclass(slots=True)
class Sample:
    """One exchange. Times are time.monotonic(); `status` None: no answer (connection failure, timeout)."""

    index: int  # order of sending, from 0
    item: int  # which prepared request
    worker: int
    start: float
    end: float = 0.0
    status: int | None = None
    error: str | None = None  # why it failed; `inspect` may set it to mark a wrong answer
    detail: Any = None  # what `inspect` returned for the answer

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and self.error is None


@dataclass(slots=True)
class LoadResult:
    samples: list[Sample]
    seconds: float  # wall time of the run
    cpu_seconds: float  # this process's CPU time during the run (the client's own cost)

    @property
    def sent(self) -> int:
        return len(self.samples)

    @property
    def ok(self) -> int:
        return sum(s.ok for s in self.samples)

    @property
    def failed(self) -> int:
        return self.sent - self.ok

    def status_counts(self) -> dict[int | None, int]:
        counts: dict[int | None, int] = {}
        for s in self.samples:
            counts[s.status] = counts.get(s.status, 0) + 1
        return counts

    def latencies(self, *, ok_only: bool = False) -> list[float]:
        return [s.latency for s in self.samples if s.ok or not ok_only]

    def first_failure(self) -> Sample | None:
        return next((s for s in self.samples if not s.ok), None)


def percentiles_ms(seconds: Sequence[float], quantiles: Sequence[float]) -> list[float]:
    """Latency percentiles in milliseconds (NaN for no latencies)."""
    if not len(seconds):
        return [float("nan")] * len(quantiles)
    return [float(v) for v in np.percentile(np.asarray(seconds, dtype=np.float64) * 1000.0, list(quantiles))]


# ---- transports -------------------------------------------------------------------------------------------
class HttpProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this client reads it."""


class _Exchanger(Protocol):
    async def exchange(self, worker: int, method: str, path: str, body: bytes) -> tuple[int, bytes]: ...

    async def aclose(self) -> None: ...


class HttpConnection:
    """One keep-alive HTTP/1.1 connection: requests with Content-Length bodies; answers with Content-Length,
    chunked, or read-until-close bodies. Reconnects when the server closed it; a request that met a closed
    reused connection before any answer byte (the server's idle timeout) is sent again once, on a new one."""

    def __init__(self, host: str, port: int, header_block: bytes) -> None:
        self.host, self.port = host, port
        self._headers = header_block
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.connects = 0  # how many TCP connections this one opened (keep-alive shows as 1)

    async def request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        length = b"content-length: %d\r\n" % len(body) if body or method not in ("GET", "HEAD") else b""
        message = f"{method} {path} HTTP/1.1\r\n".encode("latin-1") + self._headers + length + b"\r\n" + body
        try:
            reused = self._writer is not None
            status_line = await self._send(message)
            if not status_line and reused:
                status_line = await self._send(message)
            if not status_line:
                raise ConnectionResetError("the server closed the connection without answering")
            return await self._read_answer(method, status_line)
        except BaseException:
            self.close()  # after a failure, timeout or cancellation the connection's state is unknown
            raise

    async def _send(self, message: bytes) -> bytes:
        """Send on the open connection (or a new one); -> the status line, b"" if the server closed first."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            self.connects += 1
        assert self._reader is not None
        try:
            self._writer.write(message)
            await self._writer.drain()
            line = await self._reader.readline()
        except (ConnectionResetError, BrokenPipeError):
            line = b""
        if not line:
            self.close()
        return line

    async def _read_answer(self, method: str, status_line: bytes) -> tuple[int, bytes]:
        reader = self._reader
        assert reader is not None
        while True:
            version, status = _parse_status(status_line)
            headers = await _read_headers(reader)
            if not 100 <= status < 200:
                break
            status_line = await reader.readline()  # an interim answer (100 Continue, 103): the real one follows
        connection = headers.get("connection", "").lower()
        keep = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            try:
                body = await reader.readexactly(int(headers["content-length"]))
            except ValueError:
                raise HttpProtocolError(f"bad content-length {headers['content-length']!r}") from None
        else:
            body, keep = await reader.read(), False  # the body ends when the server closes
        if not keep:
            self.close()
        return status, body

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


def _parse_status(line: bytes) -> tuple[str, int]:
    parts = line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpProtocolError(f"bad status line {line[:100]!r}")
    return parts[0], int(parts[1])


async def _read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n"):
            return headers
        if not line:
            raise ConnectionResetError("the server closed the connection in the middle of the headers")
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise HttpProtocolError(f"bad header line {line[:100]!r}")
        headers[name.strip().lower()] = value.strip()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size_line = await reader.readline()
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise HttpProtocolError(f"bad chunk size line {size_line[:100]!r}") from None
        if size == 0:
            await _read_headers(reader)  # trailers, up to the empty line
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise HttpProtocolError("a chunk does not end with CRLF")


class _RawExchanger:
    """One HttpConnection per worker."""

    def __init__(self, host: str, port: int, header_block: bytes, workers: int) -> None:
        self.connections = [HttpConnection(host, port, header_block) for _ in range(workers)]

    async def exchange(self, worker: int, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        return await self.connections[worker].request(method, path, body)

    async def aclose(self) -> None:
        for connection in self.connections:
            connection.close()


class _HttpxExchanger:
    """One httpx.AsyncClient with a keep-alive connection per worker."""

    def __init__(self, origin: str, headers: dict[str, str], workers: int, timeout_s: float) -> None:
        self._origin = origin
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=workers, max_keepalive_connections=workers),
            trust_env=False,
        )

    async def exchange(self, worker: int, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        resp = await self._client.request(method, self._origin + path, content=body or None)
        return resp.status_code, resp.content

    async def aclose(self) -> None:
        await self._client.aclose()


# ---- the engine -------------------------------------------------------------------------------------------
class LoadGenerator:
    """Connections to one server, kept open across runs (a warm-up, then the measurement).

    `url`: where requests go (a PreparedRequest's `path` is appended to its path); `headers` are sent with
    every request (default: JSON content type); `timeout_s` bounds each exchange."""

    def __init__(
        self,
        url: str,
        *,
        concurrency: int,
        transport: Transport = "auto",
        headers: dict[str, str] | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r}: an http:// or https:// URL with a host is needed")
        if transport == "auto":
            transport = "raw" if parts.scheme == "http" else "httpx"
        if transport == "raw" and parts.scheme != "http":
            raise ValueError("the raw transport speaks plain http:// only; use transport='httpx'")
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.transport = transport
        self._path, self._query = parts.path, f"?{parts.query}" if parts.query else ""
        merged = {**DEFAULT_HEADERS, **{k.lower(): v for k, v in (headers or {}).items()}}
        self._exchanger: _Exchanger
        if transport == "raw":
            block = f"host: {parts.netloc}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in merged.items())
            self._exchanger = _RawExchanger(parts.hostname, parts.port or 80, block.encode("latin-1"), concurrency)
        else:
            self._exchanger = _HttpxExchanger(f"{parts.scheme}://{parts.netloc}", merged, concurrency, timeout_s)

    @property
    def connects(self) -> int | None:
        """TCP connections opened so far (raw transport only)."""
        if isinstance(self._exchanger, _RawExchanger):
            return sum(c.connects for c in self._exchanger.connections)
        return None

    async def __aenter__(self) -> LoadGenerator:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._exchanger.aclose()

    def _target(self, req: PreparedRequest) -> str:
        path = self._path.rstrip("/") + req.path if req.path else self._path
        return (path or "/") + self._query

    async def run(
        self,
        requests: Sequence[PreparedRequest | bytes],
        *,
        max_requests: int,
        duration_s: float,
        inspect: Inspect | None = None,
        max_errors: int | None = None,
        stop: threading.Event | None = None,
        record: list[Sample] | None = None,
    ) -> LoadResult:
        """Send requests (cycling through `requests`) until a bound is reached; -> every exchange.

        `inspect(sample, body)` runs for each answer (any status) and its result is kept as `sample.detail`;
        setting `sample.error` there marks the answer as failed. `record`: a list the samples are appended
        to as they complete (a live view for another thread)."""
        prepared = [r if isinstance(r, PreparedRequest) else PreparedRequest(r) for r in requests]
        if not prepared:
            raise ValueError("no requests to send")
        samples = record if record is not None else []
        sent, failed = 0, 0
        start = time.monotonic()
        deadline = start + duration_s
        cpu0 = time.process_time()

        def done() -> bool:
            return (
                sent >= max_requests
                or time.monotonic() >= deadline
                or (stop is not None and stop.is_set())
                or (max_errors is not None and failed >= max_errors)
            )

        async def worker(w: int) -> None:
            nonlocal sent, failed
            while not done():
                k = sent % len(prepared)
                req = prepared[k]
                sample = Sample(index=sent, item=k, worker=w, start=time.monotonic())
                sent += 1
                try:
                    async with asyncio.timeout(self.timeout_s):
                        status, body = await self._exchanger.exchange(w, req.method, self._target(req), req.body)
                except TimeoutError:
                    sample.end = time.monotonic()
                    sample.error = f"no answer within {self.timeout_s:g} s"
                except Exception as exc:
                    sample.end = time.monotonic()
                    sample.error = f"{type(exc).__name__}: {exc}".rstrip(": ")
                else:
                    sample.end = time.monotonic()
                    sample.status = status
                    if inspect is not None:
                        sample.detail = inspect(sample, body)
                failed += not sample.ok
                samples.append(sample)

        try:
            async with asyncio.TaskGroup() as group:
                for w in range(self.concurrency):
                    group.create_task(worker(w))
        except ExceptionGroup as failures:  # a failing `inspect`: raise it as it is, the other workers cancelled
            raise failures.exceptions[0] from None
        return LoadResult(samples=samples, seconds=time.monotonic() - start, cpu_seconds=time.process_time() - cpu0)


async def run_load(
    url: str,
    requests: Sequence[PreparedRequest | bytes],
    *,
    concurrency: int,
    max_requests: int,
    duration_s: float,
    inspect: Inspect | None = None,
    max_errors: int | None = None,
    stop: threading.Event | None = None,
    record: list[Sample] | None = None,
    transport: Transport = "auto",
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> LoadResult:
    """One run on fresh connections (LoadGenerator.run's arguments)."""
    async with LoadGenerator(
        url, concurrency=concurrency, transport=transport, headers=headers, timeout_s=timeout_s
    ) as generator:
        return await generator.run(
            requests,
            max_requests=max_requests,
            duration_s=duration_s,
            inspect=inspect,
            max_errors=max_errors,
            stop=stop,
            record=record,
        )


def run_blocking(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a new event loop: uvloop's when installed (a cheaper client)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main)
    return uvloop.run(main)


class BackgroundLoad:
    """A load in a thread of its own, for synchronous code: `start()`, look at `samples` / `ok` / `failed`
    while it runs, `stop()` (it also stops by itself at its bounds). A context manager. The arguments are
    run_load's."""

    def __init__(
        self,
        url: str,
        requests: Sequence[PreparedRequest | bytes],
        *,
        concurrency: int,
        max_requests: int,
        duration_s: float,
        inspect: Inspect | None = None,
        transport: Transport = "auto",
        headers: dict[str, str] | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.samples: list[Sample] = []  # appended to while the load runs
        self.result: LoadResult | None = None
        self.failure: BaseException | None = None  # what ended the load's thread, if anything did
        self._stop = threading.Event()
        self._load = functools.partial(
            run_load,
            url,
            requests,
            concurrency=concurrency,
            max_requests=max_requests,
            duration_s=duration_s,
            inspect=inspect,
            stop=self._stop,
            record=self.samples,
            transport=transport,
            headers=headers,
            timeout_s=timeout_s,
        )
        self._thread = threading.Thread(target=self._main, name="loadgen", daemon=True)

    def start(self) -> BackgroundLoad:
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Ask every worker to stop after its answer in flight, and wait for them (at most `timeout` s)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def ok(self) -> int:
        return sum(s.ok for s in list(self.samples))

    @property
    def failed(self) -> int:
        return sum(not s.ok for s in list(self.samples))

    def __enter__(self) -> BackgroundLoad:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _main(self) -> None:
        try:
            self.result = run_blocking(self._load())
        except BaseException as exc:  # kept for the caller: a thread's exception would otherwise vanish
            self.failure = exc

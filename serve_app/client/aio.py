"""The asyncio client: core.py's plans over an httpx.AsyncClient, the chunks of one call concurrently."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import httpx

from serve_app.client.core import (
    DEFAULT_CHUNK_SIZE,
    CallPlanner,
    Done,
    Embeddings,
    HttpAnswer,
    Plan,
    Ranking,
    Request,
    Sleep,
    advance,
)

T = TypeVar("T")


async def drive(plan: Plan[T], send: Callable[[Request], Awaitable[HttpAnswer]]) -> T:
    """Run a plan to its end on the event loop: requests through `send`, a Parallel's plans concurrently."""
    step = advance(plan)
    while not isinstance(step, Done):
        outcome: Any = None
        failure: Exception | None = None
        try:
            if isinstance(step, Request):
                outcome = await send(step)
            elif isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
            else:
                outcome = await gather_or_cancel([drive(p, send) for p in step.plans])
        except Exception as exc:
            failure = exc
        step = advance(plan, outcome, failure)
    return step.value


async def gather_or_cancel(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Results in order; the first failure cancels the others and is raised."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


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
        self._plans = CallPlanner(
            base_url, api_key=api_key, timeout=timeout, chunk_size=chunk_size, max_retries=max_retries
        )
        self.base_url = self._plans.base_url
        self._max_concurrency = max(1, max_concurrency)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self._plans.headers,
            timeout=timeout,
            transport=transport,
            # keep every connection alive: httpx keeps only 20 by default, and above that each request
            # would open (and close) a new TCP connection
            limits=httpx.Limits(
                max_connections=self._max_concurrency * 2, max_keepalive_connections=self._max_concurrency * 2
            ),
        )
        self._slots: asyncio.Semaphore | None = None  # created on first use, on the caller's event loop

    async def __aenter__(self) -> AsyncEmbedServeClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, request: Request) -> httpx.Response:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_concurrency)
        try:
            async with self._slots:
                return await self._http.request(request.method, request.path, json=request.json)
        except httpx.TransportError as exc:
            raise self._plans.connection_error(request.path, exc) from exc

    async def _run(self, plan: Plan[T]) -> T:
        return await drive(plan, self._send)

    async def models(self) -> list[dict[str, Any]]:
        return await self._run(self._plans.models())

    async def health(self) -> dict[str, Any]:
        return await self._run(self._plans.health())

    async def ready(self) -> dict[str, Any]:
        return await self._run(self._plans.ready())

    async def wait_ready(
        self, timeout: float = 120.0, interval: float = 0.5, on_poll: Callable[[dict | None], None] | None = None
    ) -> dict[str, Any]:
        return await self._run(self._plans.wait_ready(timeout, interval, on_poll))

    async def embed(
        self, model: str, inputs: str | Sequence[str], *, chunk_size: int | None = None, **options: Any
    ) -> Embeddings:
        return await self._run(self._plans.embed(model, inputs, chunk_size, options))

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
        return await self._run(
            self._plans.rerank(model, query, documents, top_n, return_documents, chunk_size, options)
        )

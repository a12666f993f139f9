"""The blocking client: core.py's plans run one step at a time over an httpx.Client."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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


def drive(plan: Plan[T], send: Callable[[Request], HttpAnswer]) -> T:
    """Run a plan to its end, blocking: requests through `send`, a Parallel's plans one after the other."""
    step = advance(plan)
    while not isinstance(step, Done):
        outcome: Any = None
        failure: Exception | None = None
        try:
            if isinstance(step, Request):
                outcome = send(step)
            elif isinstance(step, Sleep):
                time.sleep(step.seconds)
            else:
                outcome = [drive(p, send) for p in step.plans]
        except Exception as exc:
            failure = exc
        step = advance(plan, outcome, failure)
    return step.value


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
        self._plans = CallPlanner(
            base_url, api_key=api_key, timeout=timeout, chunk_size=chunk_size, max_retries=max_retries
        )
        self.base_url = self._plans.base_url
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._plans.headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> EmbedServeClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, request: Request) -> httpx.Response:
        try:
            return self._http.request(request.method, request.path, json=request.json)
        except httpx.TransportError as exc:
            raise self._plans.connection_error(request.path, exc) from exc

    def _run(self, plan: Plan[T]) -> T:
        return drive(plan, self._send)

    def models(self) -> list[dict[str, Any]]:
        """The served models (`GET /v1/models` `data`: id, kind, family, dimensions, max_tokens, ...)."""
        return self._run(self._plans.models())

    def health(self) -> dict[str, Any]:
        return self._run(self._plans.health())

    def ready(self) -> dict[str, Any]:
        """`{"status": "ready" | "not_ready", "models": {name: state}}` (a 503 is an answer, not an error)."""
        return self._run(self._plans.ready())

    def wait_ready(
        self, timeout: float = 120.0, interval: float = 0.5, on_poll: Callable[[dict | None], None] | None = None
    ) -> dict[str, Any]:
        """Poll /ready until every model is ready; TimeoutError after `timeout` s. `on_poll` sees each answer
        (None while the server does not answer)."""
        return self._run(self._plans.wait_ready(timeout, interval, on_poll))

    def embed(
        self, model: str, inputs: str | Sequence[str], *, chunk_size: int | None = None, **options: Any
    ) -> Embeddings:
        """Embeddings of `inputs` in order. options: dimensions, task, prompt_name, truncate,
        truncation_direction, late_chunking, normalized, embedding_type, ... (the API's fields)."""
        return self._run(self._plans.embed(model, inputs, chunk_size, options))

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
        return self._run(self._plans.rerank(model, query, documents, top_n, return_documents, chunk_size, options))

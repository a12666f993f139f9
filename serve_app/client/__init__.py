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

Layout: core.py holds the logic of every call once, as plans without I/O; sync.py and aio.py run them over
httpx.Client and httpx.AsyncClient.
"""

from serve_app.client.aio import AsyncEmbedServeClient
from serve_app.client.core import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_URL,
    Answer,
    Embeddings,
    EmbedServeConnectionError,
    EmbedServeError,
    Ranking,
    RerankHit,
    Usage,
    auth_headers,
    error_from_response,
    resolve_base_url,
)
from serve_app.client.sync import EmbedServeClient

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_URL",
    "Answer",
    "AsyncEmbedServeClient",
    "EmbedServeClient",
    "EmbedServeConnectionError",
    "EmbedServeError",
    "Embeddings",
    "Ranking",
    "RerankHit",
    "Usage",
    "auth_headers",
    "error_from_response",
    "resolve_base_url",
]

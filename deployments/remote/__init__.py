"""Remote models (family `openai-compatible`): embedding calls forwarded to a remote OpenAI-compatible
`/v1/embeddings` API (OpenRouter, OpenAI, another embedserve, TEI, vLLM, ...).

- target.py: the `source` string (`<base URL>#<remote model>[?options]`) and the API key from the environment
- embedder.py: the HTTP client side (no Ray): chunking, retries, decoding, remote errors -> domain errors
- deployment.py: the Ray Serve shell, same contract as the local embedding deployment
"""

from deployments.remote.deployment import RemoteEmbeddingDeployment
from deployments.remote.embedder import (
    RETRYABLE_STATUSES,
    RemoteEmbedder,
    RemoteStats,
    remote_message,
    split_tokens,
)
from deployments.remote.target import (
    SOURCE_OPTIONS,
    RemoteTarget,
    default_key_envs,
    is_openrouter_host,
    parse_source,
    resolve_api_key,
)

__all__ = [
    "RETRYABLE_STATUSES",
    "SOURCE_OPTIONS",
    "RemoteEmbedder",
    "RemoteEmbeddingDeployment",
    "RemoteStats",
    "RemoteTarget",
    "default_key_envs",
    "is_openrouter_host",
    "parse_source",
    "remote_message",
    "resolve_api_key",
    "split_tokens",
]

"""The Ray Serve deployment of a remote model (family `openai-compatible`): a thin shell around RemoteEmbedder."""

from __future__ import annotations

import logging

import httpx
from ray import serve

from deployments.calls import EmbedCall, EmbedReply
from deployments.errors import ServiceError
from deployments.remote.embedder import RemoteEmbedder
from deployments.remote.target import parse_source, resolve_api_key
from deployments.shell import answer_each, past_deadline, replica_facts
from deployments.spec import BatchingConfig, ModelSpec

log = logging.getLogger("ray.serve")


@serve.deployment
class RemoteEmbeddingDeployment:
    """Same contract as TextEmbeddingDeployment: `embed(EmbedCall) -> EmbedReply`, `describe()`."""

    def __init__(self, spec: dict, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.spec = ModelSpec.model_validate(spec)
        self.target = parse_source(self.spec.source)
        api_key = resolve_api_key(self.spec.name, self.target)
        self.remote = RemoteEmbedder(
            self.spec.name, self.target, api_key, self.spec.batching.max_batch_size, transport=transport
        )
        log.info(
            "%s: remote model %s at %s (API key: %s, %d inputs per call)",
            self.spec.name,
            self.target.model,
            self.target.display_url,
            "set" if api_key else "none",
            self.remote.chunk_size,
        )

    def reconfigure(self, user_config: dict) -> None:
        """`batching.max_batch_size` is the most inputs sent in one remote call (live-updatable)."""
        b = BatchingConfig.model_validate(user_config.get("batching", {}))
        self.remote.chunk_size = b.max_batch_size

    async def embed_many(self, calls: list[EmbedCall]) -> list[EmbedReply | ServiceError]:
        return await answer_each(self.embed, calls)

    async def embed(self, call: EmbedCall) -> EmbedReply:
        past_deadline(call.deadline)
        return await self.remote.embed(call)

    def describe(self) -> dict:
        s = self.remote.stats
        return replica_facts(
            self.spec,
            remote_url=self.target.display_url,
            remote_model=self.target.model,
            inputs_per_call=self.remote.chunk_size,
            remote_calls=s.calls,
            remote_retries=s.retries,
            remote_failures=s.failures,
            last_remote_error=s.last_error,
        )

    def check_health(self) -> None:
        """The replica is healthy while it runs: a remote outage is reported per request (503), and restarting
        this replica would not fix it."""

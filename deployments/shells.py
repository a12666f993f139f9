"""Which deployment serves a model: the family registry's `shell`, bound with the model's Serve options."""

from __future__ import annotations

from ray.serve import Application
from ray.serve.deployment import Deployment

from deployments.embedding import EmbeddingDeployment
from deployments.remote import RemoteEmbeddingDeployment
from deployments.reranking import RerankDeployment
from deployments.shell import serve_options
from deployments.spec import ModelSpec

SHELLS: dict[str, Deployment] = {
    "embedding": EmbeddingDeployment,
    "rerank": RerankDeployment,
    "remote": RemoteEmbeddingDeployment,
}


def model_deployment(spec: ModelSpec) -> Application:
    """The model's deployment, named after the model so a Serve config's `deployments:` section can tune it."""
    return SHELLS[spec.recipe.shell].options(**serve_options(spec)).bind(spec.model_dump(mode="json"))

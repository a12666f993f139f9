"""Application builder: `import_path: serve_app.app:build_app` in a Serve config.

Resolves `args.models` against the catalog, creates one deployment per model (named after the model,
so a Serve config's `deployments:` section can tune it), and binds the router to their handles.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from serve_app.catalog import load_catalog, resolve_models
from serve_app.config import AppArgs, ModelSpec

TEXT_EMBEDDING_FAMILIES = {"encoder", "qwen3-embedding"}
RERANK_FAMILIES = {"cross-encoder", "qwen3-reranker"}


def model_deployment(spec: ModelSpec) -> Application:
    from deployments.common import serve_options

    if spec.family in TEXT_EMBEDDING_FAMILIES:
        from deployments.embedding import TextEmbeddingDeployment

        deployment = TextEmbeddingDeployment
    elif spec.family in RERANK_FAMILIES:
        from deployments.rerank import RerankDeployment

        deployment = RerankDeployment
    elif spec.family == "qwen3-vl-embedding":
        from deployments.vl import VLEmbeddingDeployment

        deployment = VLEmbeddingDeployment
    elif spec.family == "qwen3-vl-reranker":
        from deployments.vl import VLRerankDeployment

        deployment = VLRerankDeployment
    elif spec.family == "openai-compatible":
        from deployments.remote import RemoteEmbeddingDeployment

        deployment = RemoteEmbeddingDeployment
    else:
        raise ValueError(
            f"model {spec.name}: family {spec.family!r} cannot be served by this version of embedserve yet"
        )
    return deployment.options(**serve_options(spec)).bind(spec.model_dump(mode="json"))


def build_app(args: dict[str, Any]) -> Application:
    cfg = AppArgs.model_validate(args)
    specs = resolve_models(cfg.models, load_catalog(cfg.catalog))
    handles = {spec.name: model_deployment(spec) for spec in specs}
    from serve_app.router import Router

    router_opts: dict[str, Any] = {
        "name": "router",
        "ray_actor_options": {"num_cpus": cfg.router.num_cpus},
        "max_ongoing_requests": cfg.router.max_ongoing_requests or 1024,
    }
    if cfg.router.autoscaling_config is not None:
        router_opts["autoscaling_config"] = cfg.router.autoscaling_config
    elif cfg.router.num_replicas is not None:
        router_opts["num_replicas"] = cfg.router.num_replicas
    return Router.options(**router_opts).bind(
        [s.model_dump(mode="json") for s in specs],
        handles,
        cfg.limits.model_dump(),
        cfg.auth.model_dump(),
        cfg.request_timeout_s,
    )

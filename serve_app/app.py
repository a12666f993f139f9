"""Application builder: `import_path: serve_app.app:build_app` in a Serve config.

Resolves `args.models` against the catalog, creates one deployment per model (the family registry says
which shell serves it), and binds the router to their handles.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from deployments.shells import model_deployment
from serve_app.catalog import load_catalog, resolve_models
from serve_app.config import AppArgs
from serve_app.ingress.router import Router


def build_app(args: dict[str, Any]) -> Application:
    cfg = AppArgs.model_validate(args)
    specs = resolve_models(cfg.models, load_catalog(cfg.catalog))
    handles = {spec.name: model_deployment(spec) for spec in specs}
    router_opts: dict[str, Any] = {
        "name": "router",
        "ray_actor_options": {"num_cpus": cfg.router.num_cpus},
        "max_ongoing_requests": cfg.router.max_ongoing_requests or 1024,
        "logging_config": {"enable_access_log": cfg.router.access_log},
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

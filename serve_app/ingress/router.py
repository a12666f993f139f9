"""The HTTP ingress deployment: validate, apply policy, dispatch by model name, encode the answer.

It never imports torch: everything model-specific happens in the model deployments behind the handles it is
given at build time. Its FastAPI app is built per replica from this application's settings
(`__serve_build_asgi_app__`, called by Serve after `__init__`).
"""

from __future__ import annotations

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.spec import ModelSpec
from serve_app.config import AuthConfig, Limits
from serve_app.ingress.app import create_app
from serve_app.ingress.dispatch import Dispatcher
from serve_app.ingress.middleware import application_keys


def _app_name() -> str | None:
    try:
        return serve.get_replica_context().app_name
    except Exception:  # built outside a replica (tests of the app alone)
        return None


@serve.deployment
@serve.ingress()
class Router:
    def __init__(
        self,
        specs: list[dict],
        handles: dict[str, DeploymentHandle],
        limits: dict | None = None,
        auth: dict | None = None,
        request_timeout_s: float = 60.0,
    ) -> None:
        parsed = {s["name"]: ModelSpec.model_validate(s) for s in specs}
        self.limits = Limits.model_validate(limits or {})
        auth_cfg = AuthConfig.model_validate(auth or {})
        self.api_keys, self.key_priorities = application_keys(auth_cfg)
        self.allow_unauthenticated = auth_cfg.allow_unauthenticated
        self.dispatcher = Dispatcher(parsed, handles, request_timeout_s, app_name=_app_name())

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(
            self.dispatcher, self.limits, self.api_keys, self.allow_unauthenticated, key_priorities=self.key_priorities
        )

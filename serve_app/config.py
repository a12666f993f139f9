"""Shapes of a Serve application's `args`: models, router, limits, auth and deadline.

A model in `args.models` either names a catalog entry (`- name: bge-m3`) and optionally overrides some
of its fields, or declares a new one (`name`, `family`, `source`); the model spec itself (and the family
defaults a declaration gets) is deployments/spec.py, shared with the model deployments.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from deployments.spec import DeploymentConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Limits(_Strict):
    """Request limits, checked in the router before anything is queued (413 when exceeded)."""

    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_inputs_per_request: int = Field(2048, ge=1)
    max_chars_per_input: int = Field(200_000, ge=1)
    max_documents_per_request: int = Field(1000, ge=1)


class ApiKey(_Strict):
    """A key declared with the priority lane its requests get when they name none (a re-indexing job's key:
    bulk)."""

    key: str = Field(min_length=1)
    priority: Literal["interactive", "bulk"] = "interactive"


class AuthConfig(_Strict):
    """Bearer API keys. Keys come from `api_keys` and/or the comma-separated env var `api_keys_env`
    (read by the router replica, so set it in the Serve config's runtime_env or the cluster's environment).
    No keys at all: the API is open on loopback only; on any other address it refuses requests (403) unless
    `allow_unauthenticated` says an open API is intended (a network that is private by other means).

    Priority lanes: an item of `api_keys` may be `{key, priority}`; the keys of `bulk_api_keys_env` (comma-
    separated) are keys whose requests default to the bulk lane. A request's own `priority` field or
    `X-Priority` header overrides its key's default."""

    api_keys: list[str | ApiKey] = Field(default_factory=list)
    api_keys_env: str | None = "EMBEDSERVE_API_KEYS"
    bulk_api_keys_env: str | None = Field(None, description="env var of comma-separated keys that default to bulk")
    allow_unauthenticated: bool = Field(False, description="serve without API keys on a non-loopback address")

    def key_strings(self) -> list[str]:
        """Every key of `api_keys`, declared plain or with a priority."""
        return [k if isinstance(k, str) else k.key for k in self.api_keys]

    def keyed_priorities(self) -> dict[str, str]:
        """key -> default lane, for the keys of `api_keys` declared with a priority."""
        return {k.key: k.priority for k in self.api_keys if isinstance(k, ApiKey)}


class ModelEntry(BaseModel):
    """One item of `args.models`: a catalog name plus overrides, or a full declaration."""

    model_config = ConfigDict(extra="allow")
    name: str


class AppArgs(_Strict):
    """The `args` of the Serve application (`import_path: serve_app.app:build_app`)."""

    models: list[ModelEntry] = Field(min_length=1)
    catalog: str | None = Field(None, description="catalog YAML; default: the catalog shipped with the package")
    router: DeploymentConfig = Field(default_factory=lambda: DeploymentConfig(num_cpus=0))
    limits: Limits = Field(default_factory=lambda: Limits())
    auth: AuthConfig = Field(default_factory=lambda: AuthConfig())
    request_timeout_s: float = Field(60.0, gt=0, description="router-side deadline per request (504 after)")

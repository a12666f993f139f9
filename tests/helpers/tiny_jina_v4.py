"""A tiny random-weight jina-embeddings-v4 in the official repository's layout, built offline.

Same architecture as jinaai/jina-embeddings-v4 (Qwen2.5-VL: vision tower with window attention and a full
attention block, patch merger, M-RoPE causal text decoder; a `multi_vector_projector`), at toy size: text hidden
64, head_dim 16, mrope_section [2, 3, 3]; vision depth 2, hidden 32, patch 14, merge 2, window 56, full
attention at block 1. The files are laid out as the official repository ships them:

- config.json: the JinaEmbeddingsV4Config fields (task_names, matryoshka_dims, multi_vector_projector_dim,
  single_vector_pool_strategy, architectures / auto_map naming the hub code we never run);
- model-00001-of-00002.safetensors + model-00002-of-00002.safetensors + index: the base weights under the names
  transformers 4.52 saves (`model.layers.*`, `model.embed_tokens.*`, `model.norm.*`, `visual.*`) plus
  `multi_vector_projector.{weight,bias}` (or, with `module_layout=True`, `model.language_model.*` /
  `model.visual.*`);
- adapters/adapter_config.json (PEFT LoRA: the official target_modules regex and exclude_modules) and
  adapters/adapter_model.safetensors with `base_model.model.<module>.lora_{A,B}.<task>.weight` per task;
- a Qwen-style byte-level BPE tokenizer with the special tokens, and preprocessor_config.json with the official
  processor numbers (patch 14, merge 2, CLIP mean / std, min_pixels 3136, max_pixels 602112).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from helpers.tiny_vl import save_qwen_tokenizer
from safetensors.torch import save_file
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

WORDS = ["Query", "Passage", "user", "Describe", "image", "the"]
TASKS = ["retrieval", "text-matching", "code"]
RANK = 4
ALPHA = 8  # scaling 2: the test notices a reader that ignores alpha (the official adapters have 32 / 32)
MULTI_DIM = 32
TARGET_MODULES = (
    "(.*(model).*(down_proj|gate_proj|up_proj|k_proj|q_proj|v_proj|o_proj).*$|"
    ".*(single_vector_projector|multi_vector_projector).*$)"
)
LORA_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def tiny_config(vocab: dict[str, int]) -> dict:
    """config.json as the official repository writes it (top-level text fields and nested text/vision configs)."""
    text = {
        "vocab_size": len(vocab),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1_000_000.0,
        "rope_scaling": {"mrope_section": [2, 3, 3], "rope_type": "default", "type": "default"},
        "sliding_window": None,
        "use_sliding_window": False,
        "tie_word_embeddings": True,
        "bos_token_id": vocab["<|endoftext|>"],
        "eos_token_id": vocab["<|im_end|>"],
        "model_type": "qwen2_5_vl_text",
    }
    return {
        "architectures": ["JinaEmbeddingsV4Model"],
        "auto_map": {
            "AutoConfig": "configuration_jina_embeddings_v4.JinaEmbeddingsV4Config",
            "AutoModel": "modeling_jina_embeddings_v4.JinaEmbeddingsV4Model",
        },
        "model_type": "qwen2_5_vl",
        **{k: v for k, v in text.items() if k != "model_type"},
        "text_config": text,
        "vision_config": {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "in_channels": 3,
            "out_hidden_size": 64,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "temporal_patch_size": 2,
            "tokens_per_second": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
            "hidden_act": "silu",
            "model_type": "qwen2_5_vl",
        },
        "image_token_id": vocab["<|image_pad|>"],
        "video_token_id": vocab["<|video_pad|>"],
        "vision_start_token_id": vocab["<|vision_start|>"],
        "vision_end_token_id": vocab["<|vision_end|>"],
        "vision_token_id": vocab["<|vision_pad|>"],
        "task_names": TASKS,
        "matryoshka_dims": [16, 32, 64],
        "multi_vector_projector_dim": MULTI_DIM,
        "single_vector_pool_strategy": "mean",
        "truncate_dim": None,
        "torch_dtype": "float32",
    }


def _old_layout(name: str) -> str:
    """Module name -> the name transformers 4.52 saves (its reversed _checkpoint_conversion_mapping)."""
    if name.startswith("language_model."):
        return "model." + name[len("language_model.") :]
    return name  # visual.*


def build_tiny_jina_v4(directory: Path, *, seed: int = 0, module_layout: bool = False) -> Path:
    """Write a loadable tiny jina-embeddings-v4 (base weights, adapters, projector, tokenizer, processor)."""
    _, vocab = save_qwen_tokenizer(directory, WORDS, 32768)

    raw = tiny_config(vocab)
    (directory / "config.json").write_text(json.dumps(raw, indent=2))
    config = Qwen2_5_VLConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "auto_map")})
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    model = Qwen2_5_VLModel(config)
    tensors: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            value = param.detach().clone()
            if "embed_tokens" in name:
                value = torch.randn(value.shape, generator=g)
            elif value.dim() >= 2:
                value = value + 0.05 * torch.randn(value.shape, generator=g)
            elif "norm" in name or "ln_" in name:
                value = 1.0 + 0.1 * torch.randn(value.shape, generator=g)
            else:
                value = 0.05 * torch.randn(value.shape, generator=g)
            tensors["model." + name if module_layout else _old_layout(name)] = value.contiguous()
    hidden = raw["hidden_size"]
    tensors["multi_vector_projector.weight"] = 0.2 * torch.randn(MULTI_DIM, hidden, generator=g)
    tensors["multi_vector_projector.bias"] = 0.1 * torch.randn(MULTI_DIM, generator=g)
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(directory / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, shard))
    index = {"metadata": {"total_size": sum(t.numel() * 4 for t in tensors.values())}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))

    _write_adapters(directory / "adapters", model, hidden, g)
    preprocessor = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor",
        "max_pixels": 602112,
        "min_pixels": 3136,
        "merge_size": 2,
        "patch_size": 14,
        "processor_class": "Qwen2_5_VLProcessor",
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"longest_edge": 602112, "shortest_edge": 3136},
        "temporal_patch_size": 2,
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return directory


def _write_adapters(folder: Path, model: Qwen2_5_VLModel, hidden: int, g: torch.Generator) -> None:
    """adapters/ as PEFT saves the official MultiAdapterLinear: one (A, B) pair per task and module."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, torch.Tensor] = {}
    for name, module in model.language_model.named_modules():
        if name.rsplit(".", 1)[-1] not in LORA_NAMES:
            continue
        for task in TASKS:
            prefix = f"base_model.model.model.language_model.{name}"
            out[f"{prefix}.lora_A.{task}.weight"] = 0.3 * torch.randn(RANK, module.in_features, generator=g)
            out[f"{prefix}.lora_B.{task}.weight"] = 0.3 * torch.randn(module.out_features, RANK, generator=g)
    for task in TASKS:
        prefix = "base_model.model.multi_vector_projector"
        out[f"{prefix}.lora_A.{task}.weight"] = 0.3 * torch.randn(RANK, hidden, generator=g)
        out[f"{prefix}.lora_B.{task}.weight"] = 0.3 * torch.randn(MULTI_DIM, RANK, generator=g)
    save_file(out, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "alpha_pattern": {},
        "base_model_name_or_path": "jinaai/jina-embeddings-v4",
        "bias": "none",
        "exclude_modules": ".*visual.*",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": "gaussian",
        "lora_alpha": ALPHA,
        "lora_bias": False,
        "lora_dropout": 0.1,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": RANK,
        "rank_pattern": {},
        "target_modules": TARGET_MODULES,
        "task_type": "FEATURE_EXTRACTION",
        "use_dora": False,
        "use_rslora": False,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))


def token_id(directory: Path, token: str) -> int:
    return json.loads((directory / "tokenizer.json").read_text())["model"]["vocab"][token]

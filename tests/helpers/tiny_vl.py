"""A tiny random-weight Qwen3-VL with a Qwen-style tokenizer and processor files, built offline.

Same architecture as Qwen3-VL-Embedding / Qwen3-VL-Reranker (Qwen3VLForConditionalGeneration: vision
tower with deepstack, M-RoPE text decoder, lm_head), at toy size: text hidden 64, head_dim 16,
mrope_section [4, 2, 2]; vision depth 2, hidden 32, patch 16, spatial merge 2, out_hidden 64, 16 position
embeddings, deepstack at layer 0. The tokenizer is byte-level BPE made with `tokenizers` and carries
Qwen's special tokens (ids inside the vocab) plus "yes" / "no" as single tokens. The processor files
(preprocessor_config.json, video_preprocessor_config.json, chat_template.jinja) follow the official
checkpoints; the chat template is our own, written to render what the official Qwen3-VL one renders.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from helpers.tiny_models import _byte_bpe
from tokenizers import processors
from transformers import PreTrainedTokenizerFast, Qwen3VLConfig, Qwen3VLForConditionalGeneration

SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
WORDS = ["yes", "no", "user", "system", "assistant", "seconds"]

# Renders like the official Qwen3-VL chat template for system / user / assistant turns (no tools):
# a system turn only as the first message; user content items in order, an image as
# <|vision_start|><|image_pad|><|vision_end|>, a video as <|vision_start|><|video_pad|><|vision_end|>.
CHAT_TEMPLATE = """\
{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].content is string %}
        {{- messages[0].content }}
    {%- else %}
        {%- for part in messages[0].content %}
            {%- if 'text' in part %}{{- part.text }}{%- endif %}
        {%- endfor %}
    {%- endif %}
    {{- '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'user' or message.role == 'assistant' %}
        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- if message.content is string %}
            {{- message.content }}
        {%- else %}
            {%- for part in message.content %}
                {%- if part.type == 'image' or 'image' in part or 'image_url' in part %}
                    {{- '<|vision_start|><|image_pad|><|vision_end|>' }}
                {%- elif part.type == 'video' or 'video' in part %}
                    {{- '<|vision_start|><|video_pad|><|vision_end|>' }}
                {%- elif 'text' in part %}
                    {{- part.text }}
                {%- endif %}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

PATCH = 16
MERGE = 2
TEMPORAL = 2


def save_qwen_tokenizer(directory: Path, words: list[str], max_length: int):
    """A byte-level BPE with Qwen's chat and vision special tokens plus `words`, saved in `directory`;
    -> (tokenizer, vocab). Shared by the Qwen3-VL and jina-embeddings-v4 (Qwen2.5-VL) builders."""
    tok, vocab = _byte_bpe(SPECIALS, words=words)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIALS[1:2] + SPECIALS[3:],
    )
    fast.model_max_length = max_length
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    return tok, vocab


def build_tiny_qwen3_vl(directory: Path, *, seed: int = 0) -> Path:
    """Write a loadable tiny Qwen3-VL checkpoint (weights, config, tokenizer, processor files)."""
    tok, vocab = save_qwen_tokenizer(directory, WORDS, 4096)
    (directory / "chat_template.jinja").write_text(CHAT_TEMPLATE)

    vocab_size = len(tok.get_vocab())
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": vocab_size,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 4096,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5_000_000.0,
                "mrope_section": [4, 2, 2],
                "mrope_interleaved": True,
            },
            "bos_token_id": None,
            "eos_token_id": vocab["<|im_end|>"],
            "pad_token_id": vocab["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": PATCH,
            "spatial_merge_size": MERGE,
            "temporal_patch_size": TEMPORAL,
            "out_hidden_size": 64,
            "num_position_embeddings": 16,
            "deepstack_visual_indexes": [0],
        },
        image_token_id=vocab["<|image_pad|>"],
        video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"],
        vision_end_token_id=vocab["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "embed_tokens" in name or "lm_head" in name:
                param.normal_(0.0, 1.0)
    model.save_pretrained(directory)

    processor_common = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "merge_size": MERGE,
        "patch_size": PATCH,
        "temporal_patch_size": TEMPORAL,
        "resample": 3,
        "rescale_factor": 1 / 255,
        "processor_class": "Qwen3VLProcessor",
    }
    image_cfg = {
        **processor_common,
        "image_processor_type": "Qwen2VLImageProcessor",
        "size": {"shortest_edge": 65536, "longest_edge": 16777216},
    }
    video_cfg = {
        **processor_common,
        "video_processor_type": "Qwen3VLVideoProcessor",
        "size": {"shortest_edge": 4096, "longest_edge": 25165824},
        "do_sample_frames": True,
        "fps": 2,
        "min_frames": 4,
        "max_frames": 768,
        "return_metadata": False,
    }
    (directory / "preprocessor_config.json").write_text(json.dumps(image_cfg, indent=2))
    (directory / "video_preprocessor_config.json").write_text(json.dumps(video_cfg, indent=2))
    return directory


def token_id(directory: Path, token: str) -> int:
    return json.loads((directory / "tokenizer.json").read_text())["model"]["vocab"][token]

"""A tiny random-weight jina-embeddings-v3 checkpoint in the official layout, built offline.

The files are what jinaai/jina-embeddings-v3 ships, with tiny sizes: config.json with the official
architecture fields (rotary positions, `lora_adaptations`, `lora_rank`, `lora_alpha`, `task_instructions`,
`auto_map` pointing at hub code that is never run), config_sentence_transformers.json's prompts, modules.json
and 1_Pooling (mean), an XLM-R style tokenizer (SentencePiece-like Unigram with the ▁ metaspace, <s> </s>
framing), and model.safetensors in bfloat16 with the official parameter names:

    roberta.embeddings.word_embeddings.parametrizations.weight.original      [V, H]
    roberta.embeddings.word_embeddings.parametrizations.weight.0.lora_A      [n, V, r]
    roberta.embeddings.word_embeddings.parametrizations.weight.0.lora_B      [n, r, H]
    roberta.embeddings.token_type_embeddings.parametrizations.weight.*       [1, H] / [n, 1, r] / [n, r, H]
    roberta.emb_ln.{weight,bias}
    roberta.encoder.layers.N.mixer.Wqkv.parametrizations.weight.original     [3H, H]  (+ .bias [3H])
    roberta.encoder.layers.N.mixer.Wqkv.parametrizations.weight.0.lora_A     [n, r, H]
    roberta.encoder.layers.N.mixer.Wqkv.parametrizations.weight.0.lora_B     [n, 3H, r]
    roberta.encoder.layers.N.mixer.out_proj.*, mlp.fc1.*, mlp.fc2.*           (same pattern)
    roberta.encoder.layers.N.norm1.*, norm2.*
    roberta.pooler.dense.*                                                    (shipped, unused for embeddings)

The adapters get random A and B (the official init leaves B at zero, which would make every task equal).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

TASKS = ["retrieval.query", "retrieval.passage", "separation", "classification", "text-matching"]
TASK_INSTRUCTIONS = {
    "retrieval.query": "Represent the query for retrieving evidence documents: ",
    "retrieval.passage": "Represent the document for retrieval: ",
    "separation": "",
    "classification": "",
    "text-matching": "",
}
WORDS = (
    "Represent the query for retrieving evidence documents document retrieval "
    "Follow white rabbit hello world quick brown fox jumps over lazy dog The a an of and in on is are was "
    "search engine late chunking long text embedding model task adapter"
).split()

HIDDEN, HEADS, LAYERS, INTERMEDIATE, RANK, ALPHA = 32, 4, 2, 64, 4, 1


def _tokenizer() -> tuple[Tokenizer, dict[str, int]]:
    """XLM-R's special ids (<s>=0, <pad>=1, </s>=2, <unk>=3, <mask> last) around a small Unigram vocabulary."""
    pieces: list[tuple[str, float]] = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -6.0)]
    for ch in string.ascii_letters + string.digits + string.punctuation:
        pieces.append((ch, -8.0))
        pieces.append(("▁" + ch, -7.0))
    seen = {p for p, _ in pieces}
    for word in WORDS:
        for piece in ("▁" + word, word):
            if piece not in seen:
                pieces.append((piece, -1.0 - 0.01 * len(pieces) / 100))
                seen.add(piece)
    pieces.append(("<mask>", 0.0))
    tok = Tokenizer(models.Unigram(pieces, unk_id=3))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    vocab = tok.get_vocab()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])],
    )
    return tok, vocab


def _config(vocab_size: int) -> dict:
    return {
        "_name_or_path": "jinaai/jina-embeddings-v3",
        "architectures": ["XLMRobertaLoRA"],
        "attention_probs_dropout_prob": 0.1,
        "auto_map": {
            "AutoConfig": "jinaai/xlm-roberta-flash-implementation--configuration_xlm_roberta.XLMRobertaFlashConfig",
            "AutoModel": "jinaai/xlm-roberta-flash-implementation--modeling_lora.XLMRobertaLoRA",
        },
        "bos_token_id": 0,
        "classifier_dropout": None,
        "emb_pooler": None,
        "eos_token_id": 2,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTERMEDIATE,
        "layer_norm_eps": 1e-05,
        "load_trained_adapters": True,
        "lora_adaptations": TASKS,
        "lora_alpha": ALPHA,
        "lora_dropout_p": 0.0,
        "lora_main_params_trainable": False,
        "lora_rank": RANK,
        "matryoshka_dimensions": [8, 16, 32],
        "max_position_embeddings": 8194,
        "model_type": "xlm-roberta",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "output_past": True,
        "pad_token_id": 1,
        "position_embedding_type": "rotary",
        "rotary_emb_base": 20000.0,
        "task_instructions": TASK_INSTRUCTIONS,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.43.4",
        "truncate_dim": None,
        "type_vocab_size": 1,
        "use_cache": True,
        "use_flash_attn": True,
        "use_reentrant": False,
        "vocab_size": vocab_size,
    }


def _lora_linear(out: dict, name: str, fan_in: int, fan_out: int, g: torch.Generator) -> None:
    n = len(TASKS)
    out[f"{name}.parametrizations.weight.original"] = torch.randn(fan_out, fan_in, generator=g) * 0.2
    out[f"{name}.bias"] = torch.randn(fan_out, generator=g) * 0.1
    out[f"{name}.parametrizations.weight.0.lora_A"] = torch.randn(n, RANK, fan_in, generator=g) * 0.5
    out[f"{name}.parametrizations.weight.0.lora_B"] = torch.randn(n, fan_out, RANK, generator=g) * 0.5


def _lora_embedding(out: dict, name: str, num: int, dim: int, g: torch.Generator) -> None:
    n = len(TASKS)
    out[f"{name}.parametrizations.weight.original"] = torch.randn(num, dim, generator=g)
    out[f"{name}.parametrizations.weight.0.lora_A"] = torch.randn(n, num, RANK, generator=g)
    out[f"{name}.parametrizations.weight.0.lora_B"] = torch.randn(n, RANK, dim, generator=g)


def _layer_norm(out: dict, name: str, g: torch.Generator) -> None:
    out[f"{name}.weight"] = 1.0 + 0.1 * torch.randn(HIDDEN, generator=g)
    out[f"{name}.bias"] = 0.1 * torch.randn(HIDDEN, generator=g)


def build_tiny_jina_v3(directory: Path, *, seed: int = 0) -> Path:
    tok, vocab = _tokenizer()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
    )
    fast.model_max_length = 8194
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)

    vocab_size = len(vocab)
    (directory / "config.json").write_text(json.dumps(_config(vocab_size), indent=2))
    (directory / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": TASK_INSTRUCTIONS, "default_prompt_name": None, "similarity_fn_name": "cosine"})
    )
    (directory / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "transformer", "path": "", "type": "custom_st.Transformer"},
                {"idx": 1, "name": "pooler", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {
                    "idx": 2,
                    "name": "normalizer",
                    "path": "2_Normalize",
                    "type": "sentence_transformers.models.Normalize",
                },
            ]
        )
    )
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {"word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}
        )
    )

    g = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    _lora_embedding(tensors, "roberta.embeddings.word_embeddings", vocab_size, HIDDEN, g)
    _lora_embedding(tensors, "roberta.embeddings.token_type_embeddings", 1, HIDDEN, g)
    _layer_norm(tensors, "roberta.emb_ln", g)
    for i in range(LAYERS):
        p = f"roberta.encoder.layers.{i}"
        _lora_linear(tensors, f"{p}.mixer.Wqkv", HIDDEN, 3 * HIDDEN, g)
        _lora_linear(tensors, f"{p}.mixer.out_proj", HIDDEN, HIDDEN, g)
        _layer_norm(tensors, f"{p}.norm1", g)
        _lora_linear(tensors, f"{p}.mlp.fc1", HIDDEN, INTERMEDIATE, g)
        _lora_linear(tensors, f"{p}.mlp.fc2", INTERMEDIATE, HIDDEN, g)
        _layer_norm(tensors, f"{p}.norm2", g)
    _lora_linear(tensors, "roberta.pooler.dense", HIDDEN, HIDDEN, g)
    save_file(
        {k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()},
        str(directory / "model.safetensors"),
        metadata={"format": "pt"},
    )
    return directory

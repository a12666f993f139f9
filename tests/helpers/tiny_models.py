"""Tiny random-weight models of the real architectures, built offline by the tests.

Tokenizers are made with the `tokenizers` library: byte-level BPE (every text encodes, as with
Qwen's and XLM-R's real vocabularies) plus each family's special tokens and post-processor.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoModel, PreTrainedTokenizerFast, Qwen3Config, XLMRobertaConfig

_BYTE_CHARS = list(pre_tokenizers.ByteLevel.alphabet())


def _byte_bpe(specials: list[str], words: list[str] = ()) -> tuple[Tokenizer, dict[str, int]]:
    """Specials first (ids 0..), then the 256 byte symbols, then whole `words` built by merges."""
    vocab: dict[str, int] = {}
    for tok in specials:
        vocab[tok] = len(vocab)
    for ch in sorted(_BYTE_CHARS):
        vocab.setdefault(ch, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:
        for end in range(2, len(word) + 1):
            left, right = word[: end - 1], word[end - 1]
            if word[:end] not in vocab:
                merges.append((left, right))
                vocab[word[:end]] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    return tok, vocab


def build_tiny_qwen3(directory: Path, *, eos_postprocessor: bool = True, seed: int = 0) -> Path:
    """A Qwen3 decoder (Qwen3Model) with a Qwen-style tokenizer.

    With `eos_postprocessor`, the tokenizer appends <|endoftext|> itself (as the updated official
    Qwen3-Embedding tokenizer does); without it the engine must append it.
    """
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok, vocab = _byte_bpe(specials, words=["yes", "no"])
    eos_id = vocab["<|endoftext|>"]
    if eos_postprocessor:
        tok.post_processor = processors.TemplateProcessing(
            single="$A <|endoftext|>",
            pair="$A $B <|endoftext|>",
            special_tokens=[("<|endoftext|>", eos_id)],
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>", padding_side="left"
    )
    fast.model_max_length = 512
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)

    config = Qwen3Config(
        vocab_size=len(tok.get_vocab()),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    _bump_weights(model)
    model.save_pretrained(directory)
    return directory


def build_tiny_xlmr(directory: Path, *, pooling: str = "cls", seed: int = 0) -> Path:
    """An XLM-RoBERTa encoder with XLM-R's special tokens and a sentence-transformers pooling config."""
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok, vocab = _byte_bpe(specials)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])],
    )
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
    fast.model_max_length = 128
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)

    config = XLMRobertaConfig(
        vocab_size=len(tok.get_vocab()),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=130,  # 128 usable: RoBERTa offsets positions by pad_id + 1
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        type_vocab_size=1,
    )
    torch.manual_seed(seed)
    model = AutoModel.from_config(config, add_pooling_layer=False)
    _bump_weights(model)
    model.save_pretrained(directory)
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": 32,
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
            }
        )
    )
    return directory


def _bump_weights(model: torch.nn.Module) -> None:
    """Random init is near-isotropic; scale embeddings so different inputs give clearly different vectors."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "embed" in name and param.dim() == 2:
                param.normal_(0.0, 1.0)


def build_tiny_cross_encoder(directory: Path, *, seed: int = 0) -> Path:
    """An XLM-RoBERTa sequence classifier with one logit (bge-reranker-v2-m3's shape, tiny)."""
    from transformers import XLMRobertaForSequenceClassification

    build_tiny_xlmr(directory, seed=seed)
    config = XLMRobertaConfig.from_pretrained(directory)
    config.num_labels = 1
    config.architectures = ["XLMRobertaForSequenceClassification"]
    torch.manual_seed(seed)
    model = XLMRobertaForSequenceClassification(config)
    _bump_weights(model)
    with torch.no_grad():
        model.classifier.out_proj.weight.normal_(0.0, 2.0)
    model.save_pretrained(directory)
    return directory


def build_tiny_qwen3_reranker(directory: Path, *, seed: int = 0) -> Path:
    """A Qwen3 causal LM whose tokenizer has single 'yes' / 'no' tokens and the chat / think specials."""
    from transformers import Qwen3ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    tok, vocab = _byte_bpe(specials, words=["yes", "no"])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left"
    )
    fast.model_max_length = 512
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    config = Qwen3Config(
        vocab_size=len(tok.get_vocab()),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<|endoftext|>"],
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    _bump_weights(model)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 1.0)
    model.save_pretrained(directory)
    return directory


def build_tiny_bge_m3(directory: Path, *, seed: int = 3) -> Path:
    """A tiny XLM-R with BGE-M3's official head files (sparse_linear.pt, colbert_linear.pt), random weights."""
    build_tiny_xlmr(directory, pooling="cls", seed=seed)
    torch.manual_seed(seed + 4)
    sparse, colbert = torch.nn.Linear(32, 1), torch.nn.Linear(32, 32)
    with torch.no_grad():
        sparse.bias.fill_(0.2)
    torch.save(sparse.state_dict(), directory / "sparse_linear.pt")
    torch.save(colbert.state_dict(), directory / "colbert_linear.pt")
    return directory

"""BERT-style encoders run on packed tokens: the dense layers see only real tokens, never padding.

A padded batch of short queries is up to a third padding (lengths 10..27 padded to 27), and in an encoder
almost all the compute is the dense layers (QKV, output, FFN), which cost the same per padded position as per
real one. Here the inputs are concatenated into one [tokens, hidden] matrix; only attention, which must see
each sequence apart, scatters them into a padded [batch, heads, longest, head_dim] block and gathers the
result back. So a batch of mixed lengths costs its real tokens in the dense layers, with no micro-batch split
needed to keep padding low (TEI does the same on GPU with variable-length flash attention).

The model's own modules (weights, LayerNorms, activation) are called in the model's own order; only the
batching differs, so any checkpoint transformers loads as BertModel / RobertaModel / XLMRobertaModel runs
unchanged. `packing_refusal` names the configurations this path does not reproduce (the engine then runs the
model's own forward).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Model types whose layers are BertLayer-shaped (attention.self.query/key/value, attention.output,
# intermediate, output) and whose embeddings add word + absolute position + token type, then LayerNorm.
BERT_LIKE = {"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta"}


def packing_refusal(model: torch.nn.Module, attn_implementation: str) -> str | None:
    """Why `model` cannot run packed (None: it can)."""
    config = model.config
    kind = BERT_LIKE.get(getattr(config, "model_type", ""))
    if kind is None:
        return f"model type {getattr(config, 'model_type', '?')!r} is not BERT-like"
    if attn_implementation not in ("sdpa", "eager"):
        return f"attention {attn_implementation!r} (packing uses torch's scaled_dot_product_attention)"
    if getattr(config, "position_embedding_type", "absolute") not in (None, "absolute"):
        return f"position embedding type {config.position_embedding_type!r}"
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return "a decoder configuration"
    if getattr(config, "chunk_size_feed_forward", 0):
        return "chunked feed-forward"
    for part in ("embeddings", "encoder"):
        if not hasattr(model, part):
            return f"no {part} module"
    layer = model.encoder.layer[0]
    for path in ("attention.self.query", "attention.output.LayerNorm", "intermediate.dense", "output.LayerNorm"):
        target = layer
        for name in path.split("."):
            target = getattr(target, name, None)
        if target is None:
            return f"layers without {path}"
    return None


class PackedEncoder:
    """Runs a BERT-like model's embeddings and layers on packed tokens (right padding on output).

    The dense layers take every input of the call at once. Attention runs per bucket of similar lengths
    (cut where a length falls below `min_fill` x the bucket's longest), so padding stays small there too.
    Each layer's query, key and value weights are re-seated as views of one fused matrix: one GEMM instead
    of three, with no second copy of the weights (the model's modules still see their own weights)."""

    def __init__(self, model: torch.nn.Module, min_fill: float = 0.75) -> None:
        self.model = model
        self.kind = BERT_LIKE[model.config.model_type]
        self.min_fill = min_fill
        embeddings = model.embeddings
        # RoBERTa / XLM-R number positions from padding_idx + 1; BERT from 0.
        self.position_offset = int(embeddings.padding_idx) + 1 if self.kind == "roberta" else 0
        self.heads = int(model.config.num_attention_heads)
        self.qkv = [_fuse_qkv(layer.attention.self) for layer in model.encoder.layer]

    def __call__(self, sequences: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (hidden [rows, longest, H] right-padded with zeros, mask [rows, longest] int64): the same shapes
        the model's own forward gives for a right-padded batch, so pooling code is shared."""
        lengths = [len(s) for s in sequences]
        order = sorted(range(len(sequences)), key=lambda i: lengths[i], reverse=True)
        buckets, start = [], 0
        for rows in self._buckets(order, lengths):
            buckets.append(_Bucket(start, [lengths[i] for i in rows], device))
            start = buckets[-1].stop
        ids = torch.tensor([t for i in order for t in sequences[i]], dtype=torch.long, device=device)
        positions = torch.cat([torch.arange(lengths[i]) for i in order]).to(device) + self.position_offset

        x = self._embed(ids, positions)
        for layer, (weight, bias) in zip(self.model.encoder.layer, self.qkv, strict=True):
            x = self._layer(layer, weight, bias, x, buckets)

        rows, longest = len(sequences), max(lengths)
        mask = torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]
        where = torch.tensor(order, dtype=torch.long)[:, None] * longest + torch.arange(longest)[None, :]
        where = where[mask[order]].to(device)  # flat [rows * longest] slot of each packed token, in packed order
        hidden = x.new_zeros(rows * longest, x.shape[-1])
        hidden[where] = x
        return hidden.view(rows, longest, -1), mask.to(device=device, dtype=torch.long)

    def _buckets(self, order: list[int], lengths: list[int]) -> list[list[int]]:
        buckets: list[list[int]] = []
        for i in order:
            if buckets and lengths[i] >= self.min_fill * lengths[buckets[-1][0]]:
                buckets[-1].append(i)
            else:
                buckets.append([i])
        return buckets

    def _embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        e = self.model.embeddings
        x = e.word_embeddings(ids) + e.position_embeddings(positions)
        if getattr(e, "token_type_embeddings", None) is not None:
            x = x + e.token_type_embeddings.weight[0]  # one segment: type 0, as the model's forward defaults
        return e.LayerNorm(x)

    def _layer(self, layer, weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor, buckets) -> torch.Tensor:
        hidden = x.shape[-1]
        qkv = F.linear(x, weight, bias)
        context = torch.cat([b.attend(qkv[b.start : b.stop], self.heads, hidden) for b in buckets])
        attended = layer.attention.output.LayerNorm(layer.attention.output.dense(context) + x)
        return layer.output.LayerNorm(layer.output.dense(layer.intermediate(attended)) + attended)


class _Bucket:
    """Rows of similar length, contiguous in the packed tokens: [start, stop) of them, padded to `longest`."""

    def __init__(self, start: int, lengths: list[int], device: torch.device) -> None:
        self.start, self.stop = start, start + sum(lengths)
        self.rows, self.longest = len(lengths), max(lengths)
        mask = torch.arange(self.longest)[None, :] < torch.tensor(lengths)[:, None]
        self.where = mask.reshape(-1).nonzero().squeeze(1).to(device)
        self.mask = None if min(lengths) == self.longest else mask.to(device)[:, None, None, :]

    def attend(self, qkv: torch.Tensor, heads: int, hidden: int) -> torch.Tensor:
        """qkv [tokens, 3H] of this bucket's rows -> attention context [tokens, H]."""
        head_dim = hidden // heads
        padded = qkv.new_zeros(self.rows * self.longest, 3 * hidden)
        padded[self.where] = qkv
        q, k, v = padded.view(self.rows, self.longest, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)
        return context.transpose(1, 2).reshape(self.rows * self.longest, hidden)[self.where]


def _fuse_qkv(attention: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One [3H, H] weight (and [3H] bias) for query, key and value; the three Linear modules keep views of it."""
    parts = (attention.query, attention.key, attention.value)
    weight = torch.cat([p.weight.detach() for p in parts])
    bias = None if parts[0].bias is None else torch.cat([p.bias.detach() for p in parts])
    hidden = parts[0].weight.shape[0]
    for n, p in enumerate(parts):
        p.weight = torch.nn.Parameter(weight[n * hidden : (n + 1) * hidden], requires_grad=False)
        if bias is not None:
            p.bias = torch.nn.Parameter(bias[n * hidden : (n + 1) * hidden], requires_grad=False)
    return weight, bias

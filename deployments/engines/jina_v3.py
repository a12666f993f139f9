"""jina-embeddings-v3: an XLM-RoBERTa encoder with rotary positions and five task LoRA adapters, run from the
official checkpoint's own parameters, with no hub code (no trust_remote_code).

The recipe, restated from the official implementation (jinaai/xlm-roberta-flash-implementation, used by
jinaai/jina-embeddings-v3) and its config.json:

- Embeddings: word + token-type embeddings (token type 0), no absolute position table
  (`position_embedding_type: "rotary"`), then LayerNorm (`emb_ln`).
- 24 post-norm blocks: h = norm1(h + out_proj(attn(Wqkv(h)))); h = norm2(h + fc2(gelu(fc1(h)))).
  `Wqkv` is one Linear(H -> 3H) whose output is [q | k | v], each head-major (`(three heads dim)`).
- Rotary on q and k over the whole head (rotary_emb_dim = H / heads unless the config says otherwise),
  base `rotary_emb_base` (20000), non-interleaved halves (x1 = first half, x2 = second half), positions
  0..T-1 from the first token. Attention is bidirectional, scaled by 1/sqrt(head dim), padded keys masked.
- LoRA on every Linear and every Embedding of the encoder (Wqkv, out_proj, fc1, fc2, word and token-type
  embeddings; the unused pooler too). The checkpoint keeps each base weight as
  `<module>.parametrizations.weight.original` and the adapters, stacked on a leading adapter axis, as
  `<module>.parametrizations.weight.0.lora_A` / `lora_B`:
    Linear [out, in]:  lora_A [n, r, in],  lora_B [n, out, r],  W_task = W + (B @ A) * alpha / r
    Embedding [V, H]:  lora_A [n, V, r],   lora_B [n, r, H],    W_task = W + (A @ B) * alpha / r
  with r = `lora_rank` (4), alpha = `lora_alpha` (1), dropout unused at inference. The adapter index is the
  task's position in `lora_adaptations` (retrieval.query, retrieval.passage, separation, classification,
  text-matching). Without a task no adapter is used (the base weights), as the model card says.
- Each task has a text prompt prepended to the input (`task_instructions` in config.json, the same as
  config_sentence_transformers.json's `prompts`): retrieval.query "Represent the query for retrieving evidence
  documents: ", retrieval.passage "Represent the document for retrieval: ", the others "".
- Mean pooling over all real tokens (special tokens included), computed in float32; matryoshka cuts and
  normalization are engines/postprocess.py's, as for every family. 8192 tokens at most.

Here the adapters are not merged into the weights: every Linear computes x W^T + b + ((x A_t^T) B_t^T) * s
with A_t, B_t gathered per row (engines/lora.py, shared with jina-v4), so one batch may mix tasks (the official
code loops over the batch's tasks and merges each one's weights). A zero adapter appended after the last one
stands for "no task".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer

from deployments.engines.facts import read_facts
from deployments.engines.lora import AdapterRows, LoRAEmbedding, LoRALinear
from deployments.engines.micro_batches import pad_batch, plan_micro_batches
from deployments.engines.pooling import pool
from deployments.engines.protocol import Capabilities, EmbeddingOutput, EngineOptions, InputError
from deployments.engines.runtime import Runtime, choose_runtime
from deployments.engines.source import read_json, read_safetensors, resolve_source
from deployments.engines.tokenization import Tokens

log = logging.getLogger(__name__)

# What a hub download of the model needs: configs, tokenizer and weights; never the repo's Python files.
HUB_FILES = [
    "config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "1_Pooling/*",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentencepiece.bpe.model",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
]

ORIGINAL = ".parametrizations.weight.original"
LORA_A = ".parametrizations.weight.0.lora_A"
LORA_B = ".parametrizations.weight.0.lora_B"
CHECKPOINT_PREFIX = "roberta."
IGNORED_PREFIXES = ("pooler.", "lm_head.")  # in the checkpoint, unused for embeddings


@dataclass(slots=True)
class AdapterTokens(Tokens):
    """Tokens plus the task they are embedded for: `adapter` indexes `lora_adaptations`; None = no adapter."""

    task: str | None = None
    adapter: int | None = None


@dataclass(frozen=True)
class JinaV3Config:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str
    rotary_emb_base: float
    rotary_emb_dim: int
    lora_adaptations: tuple[str, ...]
    lora_rank: int
    lora_alpha: float

    @classmethod
    def from_dict(cls, config: dict) -> JinaV3Config:
        kind = config.get("position_embedding_type", "absolute")
        if kind != "rotary":
            raise ValueError(f"jina-v3 engine needs position_embedding_type 'rotary' (config says {kind!r})")
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=hidden,
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_attention_heads=heads,
            intermediate_size=int(config["intermediate_size"]),
            type_vocab_size=int(config.get("type_vocab_size", 1)),
            layer_norm_eps=float(config.get("layer_norm_eps", 1e-5)),
            hidden_act=str(config.get("hidden_act", "gelu")),
            rotary_emb_base=float(config.get("rotary_emb_base", 10000.0)),
            rotary_emb_dim=int(config.get("rotary_emb_dim") or hidden // heads),
            lora_adaptations=tuple(config.get("lora_adaptations") or ()),
            lora_rank=int(config.get("lora_rank", 4)),
            lora_alpha=float(config.get("lora_alpha", 1)),
        )

    @property
    def lora_scaling(self) -> float:
        return self.lora_alpha / self.lora_rank


# ---- the model --------------------------------------------------------------------------------------


def rotary_tables(length: int, dim: int, base: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [length, dim / 2] in float32 for positions 0..length-1."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, T, d]: rotate the first 2 * cos.shape[-1] dims as two halves (GPT-NeoX layout)."""
    half = cos.shape[-1]
    rot, rest = x[..., : 2 * half].float(), x[..., 2 * half :]
    x1, x2 = rot[..., :half], rot[..., half:]
    turned = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)
    return torch.cat((turned, rest), dim=-1) if rest.shape[-1] else turned


class Mixer(nn.Module):
    def __init__(self, cfg: JinaV3Config) -> None:
        super().__init__()
        h, n, r, s = cfg.hidden_size, len(cfg.lora_adaptations), cfg.lora_rank, cfg.lora_scaling
        self.heads = cfg.num_attention_heads
        self.Wqkv = LoRALinear(h, 3 * h, n, r, s)
        self.out_proj = LoRALinear(h, h, n, r, s)

    def forward(self, x, key_mask, cos, sin, rows):
        b, t, h = x.shape
        qkv = self.Wqkv(x, rows).view(b, t, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, heads, T, d]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, h), rows)


class Mlp(nn.Module):
    def __init__(self, cfg: JinaV3Config) -> None:
        super().__init__()
        h, i = cfg.hidden_size, cfg.intermediate_size
        n, r, s = len(cfg.lora_adaptations), cfg.lora_rank, cfg.lora_scaling
        self.fc1 = LoRALinear(h, i, n, r, s)
        self.fc2 = LoRALinear(i, h, n, r, s)
        tanh = cfg.hidden_act in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh")
        self.approximate = "tanh" if tanh else "none"

    def forward(self, x, rows):
        return self.fc2(F.gelu(self.fc1(x, rows), approximate=self.approximate), rows)


class Block(nn.Module):
    def __init__(self, cfg: JinaV3Config) -> None:
        super().__init__()
        self.mixer = Mixer(cfg)
        self.norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(cfg)
        self.norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x, key_mask, cos, sin, rows):
        x = self.norm1(x + self.mixer(x, key_mask, cos, sin, rows))
        return self.norm2(x + self.mlp(x, rows))


class Embeddings(nn.Module):
    def __init__(self, cfg: JinaV3Config) -> None:
        super().__init__()
        h, n, r, s = cfg.hidden_size, len(cfg.lora_adaptations), cfg.lora_rank, cfg.lora_scaling
        self.word_embeddings = LoRAEmbedding(cfg.vocab_size, h, n, r, s)
        self.token_type_embeddings = LoRAEmbedding(cfg.type_vocab_size, h, n, r, s) if cfg.type_vocab_size else None


class Encoder(nn.Module):
    def __init__(self, cfg: JinaV3Config) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Block(cfg) for _ in range(cfg.num_hidden_layers)])


class JinaV3Model(nn.Module):
    """The encoder; module names follow the checkpoint's (minus `roberta.` and the parametrization paths)."""

    def __init__(self, cfg: JinaV3Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.emb_ln = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.encoder = Encoder(cfg)
        for p in self.parameters():
            p.requires_grad_(False)

    @property
    def no_adapter(self) -> int:
        """The index of the zero adapter: rows embedded without a task."""
        return len(self.cfg.lora_adaptations)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, adapters: torch.Tensor) -> torch.Tensor:
        """ids, mask [B, T] (right padding); adapters [B] (index, or `no_adapter`; host tensor) -> states [B, T, H]."""
        values = adapters.tolist()
        rows = None if all(a == self.no_adapter for a in values) else AdapterRows.of(values, ids.device)
        x = self.embeddings.word_embeddings(ids, rows)
        if self.embeddings.token_type_embeddings is not None:
            x = x + self.embeddings.token_type_embeddings(torch.zeros_like(ids), rows)
        x = self.emb_ln(x)
        cos, sin = rotary_tables(ids.shape[1], self.cfg.rotary_emb_dim, self.cfg.rotary_emb_base, ids.device)
        key_mask = mask.bool()[:, None, None, :]
        for layer in self.encoder.layers:
            x = layer(x, key_mask, cos, sin, rows)
        return x


def load_checkpoint(model: JinaV3Model, tensors: dict[str, torch.Tensor]) -> None:
    """Copy the official checkpoint's tensors into the model; every parameter must be found, with its shape."""
    params = dict(model.named_parameters())
    loaded: set[str] = set()
    unused: list[str] = []
    for name, value in tensors.items():
        key = name[len(CHECKPOINT_PREFIX) :] if name.startswith(CHECKPOINT_PREFIX) else name
        if key.startswith(IGNORED_PREFIXES):
            continue
        key = key.replace(ORIGINAL, ".weight").replace(LORA_A, ".lora_A").replace(LORA_B, ".lora_B")
        param = params.get(key)
        if param is None:
            unused.append(name)
            continue
        # The last adapter of a LoRA tensor stays zero: "no task".
        target = param.data[:-1] if key.endswith((".lora_A", ".lora_B")) else param.data
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(f"checkpoint tensor {name}: shape {tuple(value.shape)}, expected {tuple(target.shape)}")
        target.copy_(value.to(target.dtype))
        loaded.add(key)
    missing = sorted(set(params) - loaded)
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} parameters, e.g. {missing[:4]}")
    if unused:
        log.warning("jina-v3: %d checkpoint tensors not used, e.g. %s", len(unused), unused[:4])


def local_model_dir(source: str) -> str:
    """A local directory for `source`; a hub id is fetched (configs, tokenizer, weights: no code files)."""
    path = resolve_source(source)
    if os.path.isdir(path):
        return path
    from huggingface_hub import snapshot_download

    return snapshot_download(path, allow_patterns=HUB_FILES)


def task_prompts(path: str, config: dict) -> dict[str, str]:
    """Each task's prompt: config.json `task_instructions`, else config_sentence_transformers.json `prompts`."""
    prompts = config.get("task_instructions")
    if not prompts:
        prompts = (read_json(path, "config_sentence_transformers.json") or {}).get("prompts") or {}
    return {str(k): str(v or "") for k, v in prompts.items()}


# ---- the engine -------------------------------------------------------------------------------------


class JinaV3Engine:
    """Speaks engines/protocol.py like TextEmbeddingEngine, plus a `task` per input in `prepare`,
    `token_ids` and `late_chunk`: it picks the adapter and the prompt. `default_task` serves inputs that come
    without one (None: no adapter and no prompt, the model card's behaviour without a task)."""

    def __init__(
        self,
        source: str,
        *,
        runtime: Runtime | None = None,
        max_tokens: int | None = None,
        max_batch_tokens: int = 16384,
        default_task: str | None = None,
    ) -> None:
        path = local_model_dir(source)
        self.runtime = runtime or choose_runtime()
        config = read_json(path, "config.json") or {}
        self.config = JinaV3Config.from_dict(config)
        self.tasks = self.config.lora_adaptations
        self.prompts = task_prompts(path, config)
        if default_task is not None and default_task not in self.tasks:
            raise ValueError(f"{source}: default task {default_task!r} is not one of {', '.join(self.tasks)}")
        self.default_task = default_task

        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        backend = self.tokenizer.backend_tokenizer
        self.backend = _plain_copy(backend)
        self.prefix, self.suffix = _special_frame(self.backend)

        model = JinaV3Model(self.config).to(dtype=self.runtime.dtype)  # cast before loading: one copy in memory
        load_checkpoint(model, read_safetensors(path, "jina-v3"))
        self.model = model.to(device=self.runtime.device).eval()

        facts = read_facts(path)
        self.dimensions = self.config.hidden_size
        self.max_tokens = int(max_tokens or facts.max_tokens or 8192)
        self.max_batch_tokens = max_batch_tokens
        pad_id = self.tokenizer.pad_token_id
        self.pad_id = int(pad_id if pad_id is not None else 1)
        log.info(
            "loaded %s (jina-v3): adapters=%s default_task=%s dims=%d max_tokens=%d device=%s dtype=%s",
            source,
            ",".join(self.tasks),
            default_task,
            self.dimensions,
            self.max_tokens,
            self.runtime.device,
            self.runtime.dtype,
        )

    @classmethod
    def load(cls, source: str, options: EngineOptions) -> JinaV3Engine:
        if options.trust_remote_code:
            log.info("jina-v3: trust_remote_code ignored; the engine runs no hub code")
        return cls(
            source,
            runtime=options.runtime,
            max_tokens=options.max_tokens,
            max_batch_tokens=options.max_batch_tokens,
            default_task=options.recipe.get("default_task"),
        )

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            max_tokens=self.max_tokens,
            dimensions=self.dimensions,
            token_ids=True,
            token_id_inputs=True,
            late_chunking=True,
        )

    # -- tasks ------------------------------------------------------------------------------------
    def adapter_of(self, task: str | None, index: int | None = None) -> int | None:
        """The adapter index of a task (None: no adapter); InputError (a 400 naming input `index`) for a task
        the model lacks."""
        task = task if task is not None else self.default_task
        if task is None:
            return None
        if task not in self.tasks:
            raise InputError(f"unknown task {task!r}; this model's tasks: {', '.join(self.tasks)}", index)
        return self.tasks.index(task)

    def _tasks_for(self, n: int, task: str | Sequence[str | None] | None) -> list[str | None]:
        if task is None or isinstance(task, str):
            chosen = task if task is not None else self.default_task
            return [chosen] * n
        tasks = [t if t is not None else self.default_task for t in task]
        if len(tasks) != n:
            raise ValueError(f"{len(tasks)} tasks for {n} inputs")
        return tasks

    # -- tokenize ---------------------------------------------------------------------------------
    def prepare(
        self,
        inputs: Sequence[str],
        truncate: bool = False,
        direction: str = "right",
        task: str | Sequence[str | None] | None = None,
    ) -> list[AdapterTokens]:
        """Token ids per text, the task's prompt in front; `task` is one for all inputs or one per input.
        Over-long inputs are cut only when `truncate`, and never into the prompt."""
        tasks = self._tasks_for(len(inputs), task)
        adapters = [self.adapter_of(t, i) for i, t in enumerate(tasks)]
        prompts = [self.prompts.get(t, "") if t else "" for t in tasks]
        encodings = self.backend.encode_batch(
            [p + text for p, text in zip(prompts, inputs, strict=True)], add_special_tokens=False
        )
        framing = len(self.prefix) + len(self.suffix)
        out = []
        for enc, prompt, t, adapter in zip(encodings, prompts, tasks, adapters, strict=True):
            ids = list(enc.ids)
            full = len(ids) + framing
            if truncate and full > self.max_tokens:
                head = _prompt_tokens(enc.offsets, len(prompt))
                keep = max(self.max_tokens - framing - head, 0)
                body = ids[head:]
                body = body[len(body) - keep :] if direction == "left" else body[:keep]
                ids = ids[:head] + body
            out.append(AdapterTokens(ids=self.prefix + ids + self.suffix, full_length=full, task=t, adapter=adapter))
        return out

    def token_ids(self, texts: Sequence[str], task: str | Sequence[str | None] | None = None) -> list[list[int]]:
        return [t.ids for t in self.prepare(texts, task=task)]

    # Token-id inputs, token details and decoding: the same calls as TextEmbeddingEngine's, plus `task`.
    @property
    def vocab_size(self) -> int:
        """Ids the model can look up: the smaller of the tokenizer's vocabulary and the embedding table."""
        return min(self.backend.get_vocab_size(with_added_tokens=True), self.config.vocab_size)

    def prepare_ids(
        self,
        sequences: Sequence[Sequence[int]],
        prefix: str | None = None,
        truncate: bool = False,
        direction: str = "right",
        task: str | Sequence[str | None] | None = None,
    ) -> list[AdapterTokens]:
        """Token-id inputs framed as `prepare` frames a text's ids: the task's prompt (and any `prefix` text)
        first, <s> ... </s> around; an id outside the vocabulary raises InputError naming the input."""
        tasks = self._tasks_for(len(sequences), task)
        limit = self.vocab_size
        framing = len(self.prefix) + len(self.suffix)
        extra = self.backend.encode(prefix, add_special_tokens=False).ids if prefix else []
        out = []
        for i, (seq, t) in enumerate(zip(sequences, tasks, strict=True)):
            for pos, token in enumerate(seq):
                if not 0 <= token < limit:
                    raise InputError(f"token id {token} at position {pos} is not in the model's vocabulary", i)
            head = [*self._prompt_ids(t), *extra]
            body = list(seq)
            full = len(head) + len(body) + framing
            if truncate and full > self.max_tokens:
                keep = max(self.max_tokens - framing - len(head), 0)
                body = body[len(body) - keep :] if direction == "left" else body[:keep]
            ids = [*self.prefix, *head, *body, *self.suffix]
            out.append(AdapterTokens(ids=ids, full_length=full, task=t, adapter=self.adapter_of(t, i)))
        return out

    def token_details(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[dict]]:
        """Per text, each token's id, text, whether it is special, and its UTF-8 byte span (None if special)."""
        out = []
        for text, enc in zip(texts, self.backend.encode_batch(list(texts), add_special_tokens=False), strict=True):
            tokens = []
            for token_id, (start, stop) in zip(enc.ids, enc.offsets, strict=True):
                first = len(text[:start].encode("utf-8"))
                last = first + len(text[start:stop].encode("utf-8"))
                tokens.append(
                    {"id": token_id, "text": text[start:stop], "special": False, "start": first, "stop": last}
                )
            if add_special_tokens:
                tokens = [*map(self._special_detail, self.prefix), *tokens, *map(self._special_detail, self.suffix)]
            out.append(tokens)
        return out

    def _special_detail(self, token_id: int) -> dict:
        return {
            "id": token_id,
            "text": self.backend.id_to_token(token_id),
            "special": True,
            "start": None,
            "stop": None,
        }

    def decode_ids(self, sequences: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        limit = self.backend.get_vocab_size(with_added_tokens=True)
        for i, seq in enumerate(sequences):
            for pos, token in enumerate(seq):
                if not 0 <= token < limit:
                    raise InputError(f"token id {token} at position {pos} is not in the model's vocabulary", i)
        return self.backend.decode_batch([list(x) for x in sequences], skip_special_tokens=skip_special_tokens)

    def _prompt_ids(self, task: str | None) -> list[int]:
        """The task prompt's ids as they open a text (tokenized with a word after it, as in `prepare`)."""
        prompt = self.prompts.get(task, "") if task else ""
        if not prompt:
            return []
        enc = self.backend.encode(prompt + "x", add_special_tokens=False)
        return list(enc.ids[: _prompt_tokens(enc.offsets, len(prompt))])

    def late_chunk(self, chunks: Sequence[str], task: str | None = None) -> tuple[np.ndarray, list[int]]:
        """Chunks of one document encoded together with the task's adapter; the task's prompt opens the
        document (its tokens belong to no chunk). Past the limit, windows overlapping by a quarter, as in
        engines/late_chunking.py: tokens of a later window's overlap are taken from the earlier window."""
        chunks = list(chunks)
        task = task if task is not None else self.default_task
        adapter = self.adapter_of(task)
        prompt = self.prompts.get(task, "") if task else ""
        pieces = [list(e.ids) for e in self.backend.encode_batch(chunks, add_special_tokens=False)]
        head: list[int] = []
        if prompt and chunks:
            joined = self.backend.encode(prompt + chunks[0], add_special_tokens=False)
            n = _prompt_tokens(joined.offsets, len(prompt))
            head, pieces[0] = list(joined.ids[:n]), list(joined.ids[n:])
        content = head + [tok for piece in pieces for tok in piece]
        window = self.max_tokens - len(self.prefix) - len(self.suffix)
        if window < 2:
            raise ValueError("model limit too small for late chunking")
        overlap = window // 4 if len(content) > window else 0
        step = window - overlap
        starts = list(range(0, max(len(content) - overlap, 1), step)) if content else []
        windows = [
            AdapterTokens(
                ids=self.prefix + content[s : s + window] + self.suffix, full_length=0, task=task, adapter=adapter
            )
            for s in starts
        ]
        states = torch.empty((len(content), self.dimensions), dtype=torch.float32)
        for k, (start, hidden) in enumerate(zip(starts, self.token_states(windows), strict=True)):
            body = hidden[len(self.prefix) : len(hidden) - len(self.suffix)]
            skip = overlap if k > 0 else 0
            states[start + skip : start + len(body)] = body[skip:]

        vectors = np.zeros((len(pieces), self.dimensions), dtype=np.float32)
        offset = len(head)
        for i, piece in enumerate(pieces):
            if piece:
                vectors[i] = states[offset : offset + len(piece)].mean(dim=0).numpy()
            offset += len(piece)
        counts = [len(p) for p in pieces]
        if counts:  # usage: every token the model processed (prompt, special tokens, overlaps) counted once
            counts[0] += sum(len(w.ids) for w in windows) - sum(counts)
        return vectors, counts

    # -- forward ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def token_states(self, items: Sequence[AdapterTokens]) -> list[torch.Tensor]:
        """Last hidden states per input ([len, H], float32 on CPU)."""
        out: list[torch.Tensor | None] = [None] * len(items)
        for group in plan_micro_batches([len(t) for t in items], self.max_batch_tokens):
            hidden, mask = self._forward([items[i] for i in group])
            for row, i in enumerate(group):
                out[i] = hidden[row][mask[row].bool()].float().cpu()
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def pooled(self, items: Sequence[AdapterTokens]) -> np.ndarray:
        """Mean-pooled, un-normalized vectors [n, dims] float32, in the order given."""
        out = np.empty((len(items), self.dimensions), dtype=np.float32)
        for group in plan_micro_batches([len(t) for t in items], self.max_batch_tokens):
            hidden, mask = self._forward([items[i] for i in group])
            out[group] = pool(hidden.float(), mask, "mean").cpu().numpy()
        return out

    def forward(self, items: Sequence[AdapterTokens]) -> list[EmbeddingOutput]:
        """The protocol's raw outputs: one un-normalized dense vector per item, each with its own adapter."""
        return [EmbeddingOutput(dense=row) for row in self.pooled(items)]

    def _forward(self, items: Sequence[AdapterTokens]) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.runtime.device
        ids, mask = pad_batch([t.ids for t in items], self.pad_id, "right")
        none = self.model.no_adapter
        adapters = torch.tensor([none if t.adapter is None else t.adapter for t in items], dtype=torch.long)
        ids, mask = ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        return self.model(ids, mask, adapters), mask  # adapter indices stay on the host (AdapterRows.of)


def _plain_copy(backend):
    """The tokenizers backend without truncation or padding (a copy: the HF tokenizer keeps its own)."""
    from tokenizers import Tokenizer

    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def _special_frame(backend) -> tuple[list[int], list[int]]:
    """The ids the post-processor puts before and after a single text (<s> ... </s> for XLM-R)."""
    marker = backend.encode("x", add_special_tokens=False).ids
    framed = backend.encode("x", add_special_tokens=True).ids
    for start in range(len(framed) - len(marker) + 1):
        if framed[start : start + len(marker)] == marker:
            return framed[:start], framed[start + len(marker) :]
    return [], []


def _prompt_tokens(offsets: Sequence[tuple[int, int]], prompt_chars: int) -> int:
    """How many leading tokens of `prompt + text` belong to the prompt (those ending inside it)."""
    if not prompt_chars:
        return 0
    n = 0
    for _, end in offsets:
        if end > prompt_chars:
            break
        n += 1
    return n

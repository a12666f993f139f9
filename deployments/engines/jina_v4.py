"""jina-embeddings-v4: a Qwen2.5-VL backbone with three task LoRA adapters, mean-pooled single vectors and
projected multi-vectors, for text and images, run from the official checkpoint's files with no hub code.

The recipe, restated from the official implementation (jinaai/jina-embeddings-v4: modeling_jina_embeddings_v4.py,
custom_lora_module.py, qwen2_5_vl.py, config.json, adapters/adapter_config.json, the model card):

- Backbone: Qwen2.5-VL (vision tower with window attention, merger, M-RoPE text decoder with causal attention),
  exactly transformers' Qwen2_5_VLModel; the text output is the final-norm last hidden state.
- Adapters: `adapters/adapter_config.json` + `adapters/adapter_model.safetensors` (PEFT layout). One LoRA pair per
  task (`task_names` in config.json: retrieval, text-matching, code) on every module matched by `target_modules`
  (`q/k/v/o_proj` and `gate/up/down_proj` of the text decoder, and `multi_vector_projector`; `exclude_modules`
  keeps them off the vision tower), r = 32, alpha = 32, scaling alpha / r (rsLoRA: alpha / sqrt(r)); keys
  `<module>.lora_A.<task>.weight` [r, in] and `.lora_B.<task>.weight` [out, r]. The official MultiAdapterLinear
  picks the task per example; so does engines/lora.py here, per row of a batch.
- Text: `"{Query|Passage}: {text}"` (PREFIX_DICT). The prompt name follows the task: retrieval.query and
  code.query -> "Query", retrieval.passage and code.passage -> "Passage"; text-matching always "Query" (the
  official code forces it). No special tokens are added (Qwen tokenizer). 32768 tokens at most.
- Images: the fixed prompt `<|im_start|>user\\n<|vision_start|><|image_pad|>...<|vision_end|>Describe the
  image.<|im_end|>\\n`, the processor's resize (smart_resize to multiples of 28 inside [min_pixels, max_pixels]
  of preprocessor_config.json: 3136 .. 602112, i.e. at most 768 tokens), CLIP mean/std. No prefix.
- Single vector: mean of the last hidden states over all attended tokens for text, over <|vision_start|> ..
  <|vision_end|> (inclusive) for an image; L2-normalized (done by postprocess.finalize_rows, after any
  matryoshka cut: 2048 native, trained cuts 128 .. 1024).
- Multi-vector: `multi_vector_projector` (Linear 2048 -> 128, with the task's LoRA), L2-normalized per token,
  one row per attended token (template tokens included), returned as the `colbert` output.

Without a task the official code refuses to encode; here the family's default task is used
(deployments/families.py). Where this engine differs: per-row task choice instead of per-task loops; pooling in
float32; client text never becomes a control token (a literal "<|im_end|>" in a text stays text); an input
is either a text or an image (the official recipe has no joint text + image input).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer

from deployments.engines.jina_v3 import _prompt_tokens
from deployments.engines.lora import AdapterRows, BatchAdapters, SelectedLoRALinear
from deployments.engines.micro_batches import pad_batch, plan_visual_batches
from deployments.engines.protocol import Capabilities, EmbeddingOutput, EngineOptions, InputError
from deployments.engines.qwen3_vl.base import read_geometry
from deployments.engines.runtime import Runtime, choose_runtime
from deployments.engines.source import read_json, read_safetensors, resolve_source
from deployments.engines.visual_inputs import VideoSampling, VLItem
from deployments.engines.vl_vision import (
    VisionLimits,
    VisualInput,
    VLInputError,
    grids,
    prepare_image,
    to_patches,
    video_sampling,
)

log = logging.getLogger(__name__)

# What a hub download needs: configs, tokenizer, processor settings, weights and adapters; never Python files.
HUB_FILES = [
    "config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
    "adapters/adapter_config.json",
    "adapters/adapter_model.safetensors",
]

# The official PREFIX_DICT and the task -> (adapter, prompt name) rule.
PREFIXES = {"query": "Query", "passage": "Passage"}
IMAGE_PROMPT_TAIL = "Describe the image."
DEFAULT_MAX_TOKENS = 32768  # the official processor's text_max_length
DEFAULT_MIN_PIXELS = 56 * 56  # Qwen2-VL image processor defaults, when preprocessor_config.json lacks them
DEFAULT_MAX_PIXELS = 28 * 28 * 1280
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PROJECTOR = "multi_vector_projector"
_ADAPTER_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])\.(?:default\.)?(?P<task>[^.]+)\.weight$"
)
_LAYER_MODULE = re.compile(r"(?:^|\.)layers\.(?P<layer>\d+)\.(?P<block>self_attn|mlp)\.(?P<name>\w+)$")


def task_table(adapters: Sequence[str]) -> dict[str, tuple[str, str]]:
    """API task name -> (adapter, prompt name). Asymmetric adapters get `<adapter>.query` / `<adapter>.passage`
    (the Jina API's names); text-matching is symmetric and always uses the query prompt (official code)."""
    table: dict[str, tuple[str, str]] = {}
    for adapter in adapters:
        if adapter == "text-matching":
            table[adapter] = (adapter, "query")
        else:
            table[f"{adapter}.query"] = (adapter, "query")
            table[f"{adapter}.passage"] = (adapter, "passage")
    return table


@dataclass(slots=True)
class V4Item:
    """One prepared input: token ids, its task's adapter index, the image (if any) and the span that the
    single vector averages (text: every token; image: <|vision_start|> .. <|vision_end|>)."""

    ids: list[int]
    full_length: int
    task: str | None
    adapter: int
    visuals: list[VisualInput] = field(default_factory=list)
    pool_start: int = 0
    pool_end: int | None = None  # None: to the end
    keep_states: bool = False

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def cost(self) -> int:
        return len(self.ids)

    @property
    def patches(self) -> int:
        return sum(v.num_patches for v in self.visuals)


# ---- checkpoint ---------------------------------------------------------------------------------------


def backbone_key(name: str) -> str | None:
    """A checkpoint name -> the parameter name in Qwen2_5_VLModel (visual.* / language_model.*), or None for
    tensors the embedding model does not use (lm_head). Reads both layouts: the one transformers 4.52 saves
    (`model.layers.*`, `visual.*`) and the module layout (`model.language_model.*`, `model.visual.*`)."""
    for old, new in (
        ("model.language_model.", "language_model."),
        ("model.visual.", "visual."),
        ("language_model.model.", "language_model."),
        ("model.", "language_model."),
    ):
        if name.startswith(old):
            return new + name[len(old) :]
    if name.startswith(("visual.", "language_model.")):
        return name
    return None


def read_adapters(path: str, tasks: Sequence[str]) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """(adapter_config, {module -> {"A": [n, r, in], "B": [n, out, r]}}) with adapters stacked in `tasks` order.
    Module names are normalized to `layers.<i>.<self_attn|mlp>.<name>` or `multi_vector_projector`."""
    from safetensors.torch import load_file

    folder = os.path.join(path, "adapters")
    config = read_json(folder, "adapter_config.json")
    weights = os.path.join(folder, "adapter_model.safetensors")
    if config is None or not os.path.isfile(weights):
        raise FileNotFoundError(f"{path}: no adapters/adapter_config.json + adapters/adapter_model.safetensors")
    found: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    for key, value in load_file(weights).items():
        match = _ADAPTER_KEY.match(key)
        if match is None:
            raise ValueError(f"{path}: unexpected adapter tensor {key}")
        module, ab, task = match["module"], match["ab"], match["task"]
        if "visual" in module:
            raise ValueError(f"{path}: adapter tensor {key} is on the vision tower (the recipe excludes it)")
        layer = _LAYER_MODULE.search(module)
        if layer is not None and layer["name"] in LORA_TARGETS:
            module = f"layers.{layer['layer']}.{layer['block']}.{layer['name']}"
        elif module.endswith(PROJECTOR):
            module = PROJECTOR
        elif module.endswith("single_vector_projector"):
            continue  # named by the official target_modules regex; the model has no such layer (mean pooling)
        else:
            raise ValueError(f"{path}: adapter tensor {key} is on a module this engine does not know")
        found.setdefault(module, {}).setdefault(ab, {})[task] = value
    stacked: dict[str, dict[str, torch.Tensor]] = {}
    for module, pair in found.items():
        for ab in ("A", "B"):
            missing = [t for t in tasks if t not in pair.get(ab, {})]
            if missing:
                raise ValueError(f"{path}: adapter of {module} lacks lora_{ab} for {', '.join(missing)}")
        stacked[module] = {ab: torch.stack([pair[ab][t] for t in tasks]) for ab in ("A", "B")}
    return config, stacked


def lora_scaling(config: dict) -> tuple[int, float]:
    """(rank, scaling) from adapter_config.json: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ValueError("adapter_config.json: per-module rank / alpha patterns are not supported")
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    return rank, alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


class JinaV4Model(nn.Module):
    """transformers' Qwen2_5_VLModel (the backbone, LoRA layers swapped in) plus the multi-vector projector."""

    def __init__(self, config, adapters: int, rank: int, scaling: float, dtype: torch.dtype) -> None:
        super().__init__()
        from transformers import Qwen2_5_VLModel
        from transformers.initialization import no_init_weights

        with no_init_weights():
            self.backbone = Qwen2_5_VLModel._from_config(config, dtype=dtype)
        hidden = config.text_config.hidden_size
        dim = int(getattr(config, "multi_vector_projector_dim", 128))
        self.selection = BatchAdapters()
        self.adapters, self.rank, self.scaling = adapters, rank, scaling
        projector = nn.Linear(hidden, dim).to(dtype)
        self.multi_vector_projector = SelectedLoRALinear.wrap(projector, self.selection, adapters, rank, scaling)

    def add_adapters(self, stacked: dict[str, dict[str, torch.Tensor]]) -> None:
        """Swap each adapted Linear of the text decoder for a per-row LoRA Linear carrying its task pairs."""
        layers = self.backbone.language_model.layers
        for module, pair in stacked.items():
            if module == PROJECTOR:
                target = self.multi_vector_projector
            else:
                _, index, block, name = module.split(".")
                parent = getattr(layers[int(index)], block)
                base = getattr(parent, name)
                target = SelectedLoRALinear.wrap(base, self.selection, self.adapters, self.rank, self.scaling)
                setattr(parent, name, target)
            for ab, param in (("A", target.lora_A), ("B", target.lora_B)):
                value, expected = pair[ab], (param.shape[0] - 1, *param.shape[1:])
                if tuple(value.shape) != expected:
                    raise ValueError(f"adapter {module}.lora_{ab}: shape {tuple(value.shape)}, expected {expected}")
                param.data[:-1].copy_(value.to(param.dtype))

    def load_base(self, tensors: dict[str, torch.Tensor]) -> None:
        """The base checkpoint into the backbone and projector; every parameter must be found, with its shape."""
        params = {k: v for k, v in self.backbone.named_parameters() if not k.endswith((".lora_A", ".lora_B"))}
        projector = {"multi_vector_projector.weight": "weight", "multi_vector_projector.bias": "bias"}
        loaded: set[str] = set()
        unused: list[str] = []
        for name, value in tensors.items():
            if name in projector:
                target = getattr(self.multi_vector_projector, projector[name])
                key = name
            else:
                key = backbone_key(name)
                target = params.get(key) if key else None
                if target is None:
                    unused.append(name)
                    continue
            if tuple(value.shape) != tuple(target.shape):
                shape, want = tuple(value.shape), tuple(target.shape)
                raise ValueError(f"checkpoint tensor {name}: shape {shape}, expected {want}")
            target.data.copy_(value.to(target.dtype))
            loaded.add(key)
        expected = set(params) | set(projector)
        missing = sorted(expected - loaded)
        if missing:
            raise ValueError(f"checkpoint lacks {len(missing)} parameters, e.g. {missing[:4]}")
        if unused:
            log.info("jina-v4: %d checkpoint tensors not used (e.g. %s)", len(unused), unused[:3])


# ---- the engine ---------------------------------------------------------------------------------------


class JinaV4Engine:
    """Speaks engines/protocol.py for text and image inputs, plus a `task` in `prepare`, `token_ids` and
    `late_chunk` that picks the adapter and the prompt; `default_task` serves inputs that come without one."""

    def __init__(
        self,
        source: str,
        *,
        runtime: Runtime | None = None,
        limits: VisionLimits | None = None,
        max_tokens: int | None = None,
        max_batch_tokens: int = 16384,
        max_batch_patches: int = 65536,
        default_task: str | None = "text-matching",
        multi_vector: bool = True,
    ) -> None:
        from transformers import Qwen2_5_VLConfig

        path = local_model_dir(source)
        self.runtime = runtime or choose_runtime()
        raw = read_json(path, "config.json") or {}
        config = Qwen2_5_VLConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "auto_map")})
        config._attn_implementation = self.runtime.attn_implementation
        config.text_config._attn_implementation = self.runtime.attn_implementation
        config.vision_config._attn_implementation = self.runtime.attn_implementation
        self.adapter_names = tuple(raw.get("task_names") or ())
        if not self.adapter_names:
            raise ValueError(f"{source}: config.json names no task_names (the jina-v4 adapters)")
        self.tasks = task_table(self.adapter_names)
        if default_task is not None and default_task not in self.tasks:
            raise ValueError(f"{source}: default task {default_task!r} is not one of {', '.join(self.tasks)}")
        self.default_task = default_task
        self.matryoshka_dims = tuple(raw.get("matryoshka_dims") or ())

        adapter_config, stacked = read_adapters(path, self.adapter_names)
        rank, scaling = lora_scaling(adapter_config)
        model = JinaV4Model(config, len(self.adapter_names), rank, scaling, self.runtime.dtype)
        model.add_adapters(stacked)
        model.load_base(read_safetensors(path, "jina-v4"))
        for p in model.parameters():
            p.requires_grad_(False)
        self.model = model.to(self.runtime.device).eval()
        self.multi_vector = multi_vector

        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        backend = copy.deepcopy(self.tokenizer.backend_tokenizer)
        backend.no_truncation()
        backend.no_padding()
        backend.encode_special_tokens = True  # client text never becomes a control token
        self.backend = backend
        vocab = self.tokenizer.get_vocab()
        self.special = {
            name: int(vocab[tok])
            for name, tok in (
                ("im_start", "<|im_start|>"),
                ("im_end", "<|im_end|>"),
                ("vision_start", "<|vision_start|>"),
                ("vision_end", "<|vision_end|>"),
                ("image_pad", "<|image_pad|>"),
            )
        }
        if self.special["image_pad"] != config.image_token_id:
            raise ValueError(f"{source}: tokenizer and config disagree on the image token id")
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.special["im_end"])
        self._image_head = [self.special["im_start"], *self._encode("user\n"), self.special["vision_start"]]
        self._image_tail = [
            self.special["vision_end"],
            *self._encode(IMAGE_PROMPT_TAIL),
            self.special["im_end"],
            *self._encode("\n"),
        ]

        self.geometry = read_geometry(path, config)
        image_cfg = read_json(path, "preprocessor_config.json") or {}
        image_cfg = image_cfg or (read_json(path, "processor_config.json") or {}).get("image_processor") or {}
        size = image_cfg.get("size") or {}
        ckpt_min = int(image_cfg.get("min_pixels") or size.get("shortest_edge") or DEFAULT_MIN_PIXELS)
        ckpt_max = int(image_cfg.get("max_pixels") or size.get("longest_edge") or DEFAULT_MAX_PIXELS)
        base = limits or VisionLimits()
        # The checkpoint's own pixel range (what the official processor feeds the model), capped by the
        # deployment's vision limits: a limit may lower the ceiling, never push it above the recipe's.
        top = min(ckpt_max, base.max_pixels)
        self.limits = VisionLimits(
            min_pixels=min(ckpt_min, top),
            max_pixels=top,
            total_pixels=base.total_pixels,
            fps=base.fps,
            max_frames=base.max_frames,
        )
        self.dimensions = int(config.text_config.hidden_size)
        self.multi_vector_dim = int(self.model.multi_vector_projector.weight.shape[0])
        self.max_tokens = int(max_tokens or DEFAULT_MAX_TOKENS)
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_patches = max_batch_patches
        log.info(
            "loaded %s (jina-v4): adapters=%s r=%d scaling=%g default_task=%s dims=%d multi=%d max_tokens=%d "
            "pixels=%d..%d device=%s dtype=%s attn=%s",
            source,
            ",".join(self.adapter_names),
            rank,
            scaling,
            default_task,
            self.dimensions,
            self.multi_vector_dim,
            self.max_tokens,
            self.limits.min_pixels,
            self.limits.max_pixels,
            self.runtime.device,
            self.runtime.dtype,
            self.runtime.attn_implementation,
        )

    @classmethod
    def load(cls, source: str, options: EngineOptions) -> JinaV4Engine:
        if options.trust_remote_code:
            log.info("jina-v4: trust_remote_code ignored; the engine runs no hub code")
        v = options.vision
        limits = VisionLimits(
            **{k: v[k] for k in ("min_pixels", "max_pixels", "total_pixels", "fps", "max_frames") if k in v}
        )
        return cls(
            source,
            runtime=options.runtime,
            limits=limits,
            max_tokens=options.max_tokens,
            max_batch_tokens=options.max_batch_tokens,
            max_batch_patches=v.get("max_batch_patches", 65536),
            default_task=options.recipe.get("default_task", "text-matching"),
            multi_vector="colbert" in options.outputs,
        )

    @property
    def capabilities(self) -> Capabilities:
        outputs = ("dense", "colbert") if self.multi_vector else ("dense",)
        return Capabilities(
            max_tokens=self.max_tokens, dimensions=self.dimensions, outputs=outputs, token_ids=True, late_chunking=True
        )

    def video_sampling(self) -> VideoSampling:
        """For the media intake's interface; the recipe takes images, not videos (refused before decoding)."""
        return video_sampling(self.limits, self.geometry)

    # -- tasks ------------------------------------------------------------------------------------------
    def resolve(self, task: str | None, index: int | None = None) -> tuple[str, int, str]:
        """(task, adapter index, prompt name); InputError for a task the model lacks, or none at all."""
        task = task if task is not None else self.default_task
        if task is None:
            raise InputError(f"a task is needed; this model's tasks: {', '.join(self.tasks)}", index)
        if task not in self.tasks:
            raise InputError(f"unknown task {task!r}; this model's tasks: {', '.join(self.tasks)}", index)
        adapter, prompt = self.tasks[task]
        return task, self.adapter_names.index(adapter), prompt

    def prompt_of(self, task: str | None) -> str:
        """The text prefix of a task, e.g. "Query: "."""
        return f"{PREFIXES[self.resolve(task)[2]]}: "

    def _tasks_for(self, n: int, task: str | Sequence[str | None] | None) -> list[str | None]:
        if task is None or isinstance(task, str):
            return [task] * n
        tasks = list(task)
        if len(tasks) != n:
            raise ValueError(f"{len(tasks)} tasks for {n} inputs")
        return tasks

    def _encode(self, text: str) -> list[int]:
        return list(self.backend.encode(text, add_special_tokens=False).ids)

    # -- tokenize ---------------------------------------------------------------------------------------
    def prepare(
        self,
        inputs: Sequence[str | VLItem],
        truncate: bool = False,
        direction: str = "right",
        task: str | Sequence[str | None] | None = None,
    ) -> list[V4Item]:
        """Texts (or VLItems with a text or one image) -> prepared items; `task` is one for all inputs or one per
        input. Over-long texts are cut only when `truncate`, and never into the prompt."""
        tasks = self._tasks_for(len(inputs), task)
        out: list[V4Item] = []
        for i, (x, t) in enumerate(zip(inputs, tasks, strict=True)):
            name, adapter, prompt = self.resolve(t, i)
            item = x if isinstance(x, VLItem) else VLItem(text=x)
            if item.videos:
                raise InputError("jina-embeddings-v4 takes text and images, not videos", i)
            if item.images:
                if item.text:
                    raise InputError("jina-embeddings-v4 embeds either a text or an image per input, not both", i)
                if len(item.images) > 1:
                    raise InputError("one image per input", i)
                out.append(self._prepare_image(item.images[0], name, adapter, i))
            else:
                out.append(self._prepare_text(item.text or "", name, adapter, prompt, truncate, direction))
        return out

    def _prepare_text(self, text: str, task: str, adapter: int, prompt: str, truncate: bool, direction: str) -> V4Item:
        prefix = f"{PREFIXES[prompt]}: "
        enc = self.backend.encode(prefix + text, add_special_tokens=False)
        ids = list(enc.ids)
        full = len(ids)
        if truncate and full > self.max_tokens:
            head = _prompt_tokens(enc.offsets, len(prefix))
            keep = max(self.max_tokens - head, 0)
            body = ids[head:]
            body = body[len(body) - keep :] if direction == "left" else body[:keep]
            ids = ids[:head] + body
        return V4Item(ids=ids, full_length=full, task=task, adapter=adapter)

    def _prepare_image(self, image, task: str, adapter: int, index: int) -> V4Item:
        try:
            visual = prepare_image(image, self.limits, self.geometry)
        except VLInputError as exc:
            raise InputError(str(exc), index) from None
        tokens = visual.num_tokens(self.geometry.merge_size)
        start = len(self._image_head) - 1
        ids = [*self._image_head, *[self.special["image_pad"]] * tokens, *self._image_tail]
        if len(ids) > self.max_tokens:
            raise InputError(
                f"input has {len(ids)} tokens, more than the model's limit of {self.max_tokens}", index, too_long=True
            )
        return V4Item(
            ids=ids,
            full_length=len(ids),
            task=task,
            adapter=adapter,
            visuals=[visual],
            pool_start=start,
            pool_end=start + tokens + 2,
        )

    def token_ids(self, texts: Sequence[str], task: str | Sequence[str | None] | None = None) -> list[list[int]]:
        """The ids the model sees for texts (the task's prefix included)."""
        return [t.ids for t in self.prepare(list(texts), task=task)]

    # -- forward ----------------------------------------------------------------------------------------
    def _plan(self, items: Sequence[V4Item]) -> list[list[int]]:
        return plan_visual_batches(
            [len(p) for p in items], [p.patches for p in items], self.max_batch_tokens, self.max_batch_patches
        )

    @torch.inference_mode()
    def _forward(self, batch: Sequence[V4Item]) -> tuple[torch.Tensor, torch.Tensor, AdapterRows]:
        """-> (last hidden states [B, T, H], attention mask [B, T], the rows' adapters)."""
        device = self.runtime.device
        ids, mask = pad_batch([p.ids for p in batch], self.pad_id, "right")
        kwargs = {}
        images = [v for p in batch for v in p.visuals]
        if images:
            kwargs["pixel_values"] = torch.cat([to_patches(v, self.geometry) for v in images]).to(
                device, self.runtime.dtype
            )
            kwargs["image_grid_thw"] = grids(images).to(device)
            kwargs["mm_token_type_ids"] = (ids == self.special["image_pad"]).long().to(device)
        rows = AdapterRows.of([p.adapter for p in batch], device)
        selection = self.model.selection
        selection.rows = rows
        try:
            backbone = self.model.backbone
            backbone.rope_deltas = None  # positions are computed afresh for every batch
            out = backbone(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False, **kwargs)
        finally:
            selection.rows = None
        return out.last_hidden_state, mask.to(device), rows

    @torch.inference_mode()
    def forward(self, items: Sequence[V4Item]) -> list[EmbeddingOutput]:
        """Raw outputs: the un-normalized mean vector, and (when loaded for it) the normalized multi-vectors."""
        out: list[EmbeddingOutput | None] = [None] * len(items)
        for group in self._plan(items):
            batch = [items[i] for i in group]
            hidden, _, rows = self._forward(batch)
            multi = None
            if self.multi_vector:
                multi = F.normalize(self.model.multi_vector_projector(hidden, rows).float(), dim=-1)
            for row, (i, item) in enumerate(zip(group, batch, strict=True)):
                n = len(item)
                end = n if item.pool_end is None else item.pool_end
                dense = hidden[row, item.pool_start : end].float().mean(dim=0).cpu().numpy()
                colbert = multi[row, :n].cpu().numpy() if multi is not None else None
                tokens = hidden[row, :n].float().cpu().numpy() if item.keep_states else None
                out[i] = EmbeddingOutput(dense=dense, colbert=colbert, tokens=tokens)
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def token_states(self, items: Sequence[V4Item]) -> list[torch.Tensor]:
        """Last hidden states per input ([len, H], float32 on CPU)."""
        out: list[torch.Tensor | None] = [None] * len(items)
        for group in self._plan(items):
            hidden, _, _ = self._forward([items[i] for i in group])
            for row, i in enumerate(group):
                out[i] = hidden[row, : len(items[i])].float().cpu()
        return out  # type: ignore[return-value]

    def late_chunk(self, chunks: Sequence[str], task: str | None = None) -> tuple[np.ndarray, list[int]]:
        """Chunks of one document encoded together with the task's adapter; the task's prefix opens the document
        (its tokens belong to no chunk). Past the limit, windows overlapping by a quarter, as in
        engines/late_chunking.py: tokens of a later window's overlap are taken from the earlier window."""
        chunks = list(chunks)
        name, adapter, prompt = self.resolve(task)
        prefix = f"{PREFIXES[prompt]}: "
        pieces = [list(e.ids) for e in self.backend.encode_batch(chunks, add_special_tokens=False)]
        head: list[int] = []
        if chunks:
            joined = self.backend.encode(prefix + chunks[0], add_special_tokens=False)
            n = _prompt_tokens(joined.offsets, len(prefix))
            head, pieces[0] = list(joined.ids[:n]), list(joined.ids[n:])
        content = head + [tok for piece in pieces for tok in piece]
        window = self.max_tokens
        if window < 2:
            raise ValueError("model limit too small for late chunking")
        overlap = window // 4 if len(content) > window else 0
        step = window - overlap
        starts = list(range(0, max(len(content) - overlap, 1), step)) if content else []
        windows = [V4Item(ids=content[s : s + window], full_length=0, task=name, adapter=adapter) for s in starts]
        states = torch.empty((len(content), self.dimensions), dtype=torch.float32)
        for k, (start, hidden) in enumerate(zip(starts, self.token_states(windows), strict=True)):
            skip = overlap if k > 0 else 0
            states[start + skip : start + len(hidden)] = hidden[skip:]
        vectors = np.zeros((len(pieces), self.dimensions), dtype=np.float32)
        offset = len(head)
        for i, piece in enumerate(pieces):
            if piece:
                vectors[i] = states[offset : offset + len(piece)].mean(dim=0).numpy()
            offset += len(piece)
        counts = [len(p) for p in pieces]
        if counts:  # usage: every token the model processed (prefix and overlaps) counted once
            counts[0] += sum(len(w.ids) for w in windows) - sum(counts)
        return vectors, counts


def local_model_dir(source: str) -> str:
    """A local directory for `source`; a hub id is fetched (configs, tokenizer, weights, adapters: no code)."""
    path = resolve_source(source)
    if os.path.isdir(path):
        return path
    from huggingface_hub import snapshot_download

    return snapshot_download(path, allow_patterns=HUB_FILES)

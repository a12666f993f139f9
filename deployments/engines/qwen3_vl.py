"""Qwen3-VL-Embedding and Qwen3-VL-Reranker engines: text, image, video and mixed inputs.

Plain torch + transformers, no Ray and no torchvision. The engines take media already decoded by
`deployments.media` (never a client string), build the official prompt, and run the model.

Recipes (QwenLM/Qwen3-VL-Embedding `src/models`, the model cards):

embedding  messages: system = the instruction (default "Represent the user's input."; a given
           instruction is stripped and gets a final "." unless it ends in punctuation); user = videos,
           then images, then text ("NULL" when the item is empty). Rendered with the chat template and
           the generation prompt:
             <|im_start|>system\\n{instruction}<|im_end|>\\n<|im_start|>user\\n{videos}{images}{text}
             <|im_end|>\\n<|im_start|>assistant\\n
           Vector: the last hidden state at the last attended token; the recipe L2-normalizes it, and
           matryoshka sizes cut then re-normalize: both done by the caller (`pooling.finalize`).
reranker   system = 'Judge whether the Document meets the requirements based on the Query and the
           Instruct provided. Note that the answer can only be "yes" or "no".'; user =
           "<Instruct>: {instruction}<Query>:{query parts}\\n<Document>:{document parts}" (parts: videos,
           images, text, or "NULL"); default instruction "Given a search query, retrieve relevant
           candidates that answer the query."; generation prompt. Score = sigmoid(logit("yes") -
           logit("no")) at the last position, i.e. sigmoid(h . (w_yes - w_no)) with the lm_head rows of
           the single tokens "yes" and "no" (looked up at load).
vision     an image is <|vision_start|> + <|image_pad|> x tokens + <|vision_end|>; a video is, for each
           temporal patch, "<{t:.1f} seconds>" + <|vision_start|> + <|video_pad|> x tokens-per-frame +
           <|vision_end|> (this replaces the whole <|vision_start|><|video_pad|><|vision_end|> of the
           template, as Qwen3VLProcessor does in transformers 4.57, the recipe's version; transformers
           5.x nests it inside another start/end pair, which the models were not trained with). Pixel
           preprocessing: `vl_vision`.

Tokenization: the rendered prompt is split at the template's special tokens and each text run
(template text, client text and timestamps together, exactly as in the rendered string) is encoded
with special-token matching off, so client text can never inject <|image_pad|> or <|im_end|>; for
ordinary text this gives the same ids as tokenizing the whole rendered string.

Length: over `max_tokens` an item is refused (VLInputError) unless `truncate=True`; then, like the
official reranker, non-special tokens are dropped from the end of the prompt (before the fixed
"<|im_end|>\\n<|im_start|>assistant\\n" suffix) while every special and visual token is kept.

API (all synchronous; `prepare*` and `count_tokens` are thread-safe, the forward calls belong to one
model thread):

    item = VLItem(text=None, images=(PIL.Image, ...), videos=(media.Video, ...), instruction=None)

    emb = Qwen3VLEmbeddingEngine(source, runtime=None, limits=VisionLimits(), max_tokens=8192,
                                 max_batch_tokens=16384, max_batch_patches=65536, ...)
    emb.video_sampling() -> media.VideoSampling   # pass to media.load_video for this model
    emb.count_tokens(item) -> TokenCount           # exact, no pixel work: batch cost before preparing
    p = emb.prepare(item, truncate=False) -> VLPrepared   # resize + tokenize (p.num_tokens, p.cost)
    emb.embed([p, ...]) -> np.ndarray [n, dims] float32, un-normalized (length-sorted micro-batches)

    rr = Qwen3VLRerankerEngine(source, ..., max_tokens=10240)
    q = rr.prepare_side(query_item) -> PreparedSide  # resize the query's media once per request
    p = rr.prepare(q, document_item, instruction=None, truncate=False) -> VLPrepared
    rr.count_tokens(query_item, document_item, instruction=None) -> TokenCount
    rr.score([p, ...]) -> np.ndarray [n] float32 in [0, 1]
"""

from __future__ import annotations

import copy
import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer

from deployments.engines.batching import pad_batch, plan_micro_batches
from deployments.engines.runtime import Runtime, choose_runtime
from deployments.engines.source import read_json, resolve_source
from deployments.engines.vl_vision import (
    PatchGeometry,
    VisionLimits,
    VisualInput,
    VLInputError,
    grids,
    plan_image,
    plan_video,
    prepare_image,
    prepare_video,
    to_patches,
    video_sampling,
)
from deployments.media import Video, VideoSampling

log = logging.getLogger(__name__)

EMBEDDING_INSTRUCTION = "Represent the user's input."
RERANKER_INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."
RERANKER_SYSTEM = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct provided. "
    'Note that the answer can only be "yes" or "no".'
)
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"

__all__ = [
    "EMBEDDING_INSTRUCTION",
    "RERANKER_INSTRUCTION",
    "RERANKER_SYSTEM",
    "PatchGeometry",
    "PreparedSide",
    "Qwen3VLEmbeddingEngine",
    "Qwen3VLRerankerEngine",
    "TokenCount",
    "VLInputError",
    "VLItem",
    "VLPrepared",
    "VisionLimits",
]


@dataclass(frozen=True)
class VLItem:
    """One multimodal input: any of text, images, videos (decoded), plus an optional instruction."""

    text: str | None = None
    images: tuple[Image.Image, ...] = ()
    videos: tuple[Video, ...] = ()
    instruction: str | None = None

    def __post_init__(self) -> None:
        # Accept a single image / video, or lists, for convenience.
        images = (self.images,) if isinstance(self.images, Image.Image) else tuple(self.images)
        videos = (self.videos,) if isinstance(self.videos, Video) else tuple(self.videos)
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "videos", videos)


@dataclass(frozen=True)
class TokenCount:
    total: int  # sequence length the model runs (template, text, timestamps and visual tokens)
    visual: int  # <|image_pad|> / <|video_pad|> tokens
    patches: int  # vision-tower patches (4 per visual token with merge 2)

    @property
    def text(self) -> int:
        return self.total - self.visual


@dataclass
class VLPrepared:
    """A prompt ready for the model: token ids and the resized media in prompt order."""

    ids: list[int]
    visuals: list[VisualInput]
    full_length: int  # tokens before any truncation
    visual_tokens: int
    patches: int

    @property
    def num_tokens(self) -> int:
        return len(self.ids)

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.ids)

    @property
    def cost(self) -> int:
        """Batch cost in token slots (the sequence length; the vision tower is bounded separately)."""
        return len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


# -- prompt pieces ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Special:
    token: str


@dataclass(frozen=True)
class _Visual:
    index: int  # position in the item's visual list


@dataclass(frozen=True)
class _Placeholder:
    kind: str  # "image" | "video": one template placeholder, for the load-time template check


@dataclass
class PreparedSide:
    """One side of a prompt (an embedding item, a rerank query or document) with its media resized."""

    text: str | None
    images: tuple[Image.Image, ...]
    videos: tuple[Video, ...]
    visuals: list[VisualInput]  # videos first, then images (the recipe's order)
    has_pixels: bool


def normalize_instruction(instruction: str | None) -> str | None:
    """The embedding recipe: strip, and end with punctuation (a '.' is added otherwise)."""
    if not instruction:
        return None
    text = instruction.strip()
    if text and not unicodedata.category(text[-1]).startswith("P"):
        text += "."
    return text or None


class _Qwen3VLBase:
    default_max_tokens = 8192

    def __init__(
        self,
        source: str,
        *,
        runtime: Runtime | None = None,
        limits: VisionLimits | None = None,
        max_tokens: int | None = None,
        max_batch_tokens: int = 16384,
        max_batch_patches: int = 65536,
        trust_remote_code: bool = False,
    ) -> None:
        path = resolve_source(source)
        self.source = source
        self.runtime = runtime or choose_runtime()
        self.limits = limits or VisionLimits()
        self.max_tokens = int(max_tokens or self.default_max_tokens)
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_patches = max_batch_patches
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self._load_model(path, trust_remote_code)
        config = self.model.config
        if getattr(config, "model_type", None) not in ("qwen3_vl",):
            raise ValueError(f"{source}: expected a qwen3_vl checkpoint, got {config.model_type!r}")
        self.geometry = _read_geometry(path, config)
        self._setup_tokens(config)
        self._check_template()

    # -- loading -----------------------------------------------------------------------------------
    def _load_model(self, path: str, trust_remote_code: bool) -> None:
        raise NotImplementedError

    def _setup_tokens(self, config) -> None:
        vocab = self.tokenizer.get_vocab()
        ids = {}
        for token in (IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD):
            if token not in vocab:
                raise ValueError(f"{self.source}: tokenizer has no {token!r} token")
            ids[token] = vocab[token]
        if ids[IMAGE_PAD] != config.image_token_id or ids[VIDEO_PAD] != config.video_token_id:
            raise ValueError(f"{self.source}: tokenizer and config disagree on the image / video token ids")
        self.special_ids = ids
        self.image_token_id = ids[IMAGE_PAD]
        self.video_token_id = ids[VIDEO_PAD]
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.tokenizer.eos_token_id or 0)
        self.protected_ids = frozenset(self.tokenizer.all_special_ids) | frozenset(ids.values())
        backend = copy.deepcopy(self.tokenizer.backend_tokenizer)
        backend.no_truncation()
        backend.no_padding()
        backend.encode_special_tokens = True  # client text never becomes a control token
        self._backend = backend
        self._suffix = [_Special(IM_END), "\n", _Special(IM_START), "assistant\n"]
        self._suffix_len = len(self._encode_pieces(self._suffix, [])[0])

    def video_sampling(self) -> VideoSampling:
        """Frame sampling and pixel budget for `media.load_video` with this model's limits."""
        return video_sampling(self.limits, self.geometry)

    # -- media -------------------------------------------------------------------------------------
    def _side(self, item: VLItem | PreparedSide, pixels: bool) -> PreparedSide:
        if isinstance(item, PreparedSide) and (item.has_pixels or not pixels):
            return item
        limits, geometry = self.limits, self.geometry
        visuals: list[VisualInput] = []
        for video in item.videos:
            visuals.append(prepare_video(video, limits, geometry) if pixels else plan_video(video, limits, geometry))
        for image in item.images:
            visuals.append(prepare_image(image, limits, geometry) if pixels else plan_image(image, limits, geometry))
        return PreparedSide(item.text, tuple(item.images), tuple(item.videos), visuals, pixels)

    # -- tokenization ------------------------------------------------------------------------------
    def _side_pieces(self, side: PreparedSide, offset: int) -> list:
        pieces: list = [_Visual(offset + i) for i in range(len(side.visuals))]
        if side.text is not None:
            pieces.append(side.text)
        elif not side.visuals:
            pieces.append("NULL")
        return pieces

    def _encode_pieces(self, pieces: Sequence, visuals: Sequence[VisualInput]) -> tuple[list[int], list[bool]]:
        """Pieces -> (ids, protected flags). Text runs between special tokens are encoded together."""
        merge = self.geometry.merge_size
        expanded: list = []
        for piece in pieces:
            if isinstance(piece, _Visual):
                visual = visuals[piece.index]
                if visual.kind == "image":
                    expanded += [_Special(VISION_START), ("pad", IMAGE_PAD, visual.num_tokens(merge))]
                    expanded.append(_Special(VISION_END))
                else:
                    t, h, w = visual.grid
                    per_frame = h * w // (merge * merge)
                    for seconds in visual.timestamps or [0.0] * t:
                        expanded += [f"<{seconds:.1f} seconds>", _Special(VISION_START)]
                        expanded += [("pad", VIDEO_PAD, per_frame), _Special(VISION_END)]
            else:
                expanded.append(piece)
        runs: list[str] = []
        layout: list = []
        buffer: list[str] = []
        for piece in [*expanded, None]:
            if isinstance(piece, str):
                buffer.append(piece)
                continue
            if buffer:
                layout.append(("text", len(runs)))
                runs.append("".join(buffer))
                buffer = []
            if piece is not None:
                layout.append(piece)
        encoded = self._backend.encode_batch(runs, add_special_tokens=False) if runs else []
        ids: list[int] = []
        protected: list[bool] = []
        for entry in layout:
            if isinstance(entry, _Special):
                ids.append(self.special_ids[entry.token])
                protected.append(True)
            elif entry[0] == "pad":
                token_id = self.special_ids[entry[1]]
                ids += [token_id] * entry[2]
                protected += [True] * entry[2]
            else:
                run = encoded[entry[1]].ids
                ids += run
                protected += [i in self.protected_ids for i in run]
        return ids, protected

    def _count(self, pieces: list, visuals: list[VisualInput]) -> TokenCount:
        ids, _ = self._encode_pieces(pieces, visuals)
        merge2 = self.geometry.merge_size**2
        return TokenCount(
            total=len(ids),
            visual=sum(v.num_patches // merge2 for v in visuals),
            patches=sum(v.num_patches for v in visuals),
        )

    def _finish(self, pieces: list, visuals: list[VisualInput], truncate: bool) -> VLPrepared:
        ids, protected = self._encode_pieces(pieces, visuals)
        full = len(ids)
        if full > self.max_tokens:
            if not truncate:
                raise VLInputError(f"input has {full} tokens, more than the model's limit of {self.max_tokens}")
            ids = _truncate(ids, protected, self.max_tokens, self._suffix_len)
        merge2 = self.geometry.merge_size**2
        return VLPrepared(
            ids=ids,
            visuals=list(visuals),
            full_length=full,
            visual_tokens=sum(v.num_patches // merge2 for v in visuals),
            patches=sum(v.num_patches for v in visuals),
        )

    def _render(self, pieces: list) -> str:
        """The template-level string (one placeholder per image / video), for the load-time template check."""
        out = []
        for piece in pieces:
            if isinstance(piece, _Special):
                out.append(piece.token)
            elif isinstance(piece, _Placeholder):
                out.append(VISION_START + (IMAGE_PAD if piece.kind == "image" else VIDEO_PAD) + VISION_END)
            else:
                out.append(piece)
        return "".join(out)

    def _check_template(self) -> None:
        """Warn when the checkpoint's chat template renders differently from the recipe layout we build."""
        template = getattr(self.tokenizer, "chat_template", None)
        if not template:
            return
        messages, pieces = self._template_probe()
        try:
            rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # a template we cannot render is only worth a warning
            log.warning("%s: chat template did not render (%s); using the recipe layout", self.source, exc)
            return
        ours = self._render(pieces)
        self.template_matches = rendered == ours
        if not self.template_matches:
            log.warning(
                "%s: the checkpoint's chat template differs from the recipe layout; using the recipe layout.\n"
                "template: %r\nrecipe:   %r",
                self.source,
                rendered,
                ours,
            )

    def _template_probe(self) -> tuple[list, list]:
        raise NotImplementedError

    # -- forward -----------------------------------------------------------------------------------
    def _plan(self, items: Sequence[VLPrepared]) -> list[list[int]]:
        """Length-sorted micro-batches under the token budget, split further under the patch budget."""
        groups = plan_micro_batches([len(p) for p in items], self.max_batch_tokens)
        out: list[list[int]] = []
        for group in groups:
            current: list[int] = []
            patches = 0
            for i in group:
                if current and patches + items[i].patches > self.max_batch_patches:
                    out.append(current)
                    current, patches = [], 0
                current.append(i)
                patches += items[i].patches
            out.append(current)
        return out

    def _forward(self, batch: Sequence[VLPrepared]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (last hidden states [B, T, H], index of each row's last attended token [B])."""
        device = self.runtime.device
        ids, mask = pad_batch([p.ids for p in batch], self.pad_id, "right")
        mm_types = torch.zeros_like(ids)
        mm_types[ids == self.image_token_id] = 1
        mm_types[ids == self.video_token_id] = 2
        images = [v for p in batch for v in p.visuals if v.kind == "image"]
        videos = [v for p in batch for v in p.visuals if v.kind == "video"]
        kwargs = {}
        dtype = self.runtime.dtype
        if images:
            kwargs["pixel_values"] = torch.cat([to_patches(v, self.geometry) for v in images]).to(device, dtype)
            kwargs["image_grid_thw"] = grids(images).to(device)
        if videos:
            kwargs["pixel_values_videos"] = torch.cat([to_patches(v, self.geometry) for v in videos]).to(device, dtype)
            kwargs["video_grid_thw"] = grids(videos).to(device)
        out = self.backbone(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            mm_token_type_ids=mm_types.to(device),
            use_cache=False,
            **kwargs,
        )
        last = mask.sum(dim=1) - 1
        return out.last_hidden_state, last.to(device)


class Qwen3VLEmbeddingEngine(_Qwen3VLBase):
    """Qwen3-VL-Embedding (2B / 8B): last attended token of the instruction-conditioned prompt."""

    default_max_tokens = 8192

    def __init__(self, source: str, *, default_instruction: str = EMBEDDING_INSTRUCTION, **kwargs) -> None:
        self.default_instruction = default_instruction
        super().__init__(source, **kwargs)
        self.dimensions = int(self.model.config.text_config.hidden_size)
        log.info(
            "loaded %s: qwen3-vl embedding dims=%d max_tokens=%d device=%s dtype=%s attn=%s",
            source,
            self.dimensions,
            self.max_tokens,
            self.runtime.device,
            self.runtime.dtype,
            self.runtime.attn_implementation,
        )

    def _load_model(self, path: str, trust_remote_code: bool) -> None:
        from transformers import Qwen3VLModel

        self.model = Qwen3VLModel.from_pretrained(
            path,
            dtype=self.runtime.dtype,
            attn_implementation=self.runtime.attn_implementation,
            trust_remote_code=trust_remote_code,
        )
        self.model.to(self.runtime.device).eval()
        self.backbone = self.model

    def _pieces(self, side: PreparedSide, instruction: str | None) -> list:
        system = normalize_instruction(instruction) or self.default_instruction
        return [
            _Special(IM_START),
            "system\n" + system,
            _Special(IM_END),
            "\n",
            _Special(IM_START),
            "user\n",
            *self._side_pieces(side, 0),
            *self._suffix,
        ]

    def count_tokens(self, item: VLItem) -> TokenCount:
        """Exact sequence length and visual cost from the media sizes alone (no pixel work)."""
        side = self._side(item, pixels=False)
        return self._count(self._pieces(side, item.instruction), side.visuals)

    def prepare(self, item: VLItem, truncate: bool = False) -> VLPrepared:
        """Resize the media and tokenize the prompt; raises VLInputError for an unusable item."""
        side = self._side(item, pixels=True)
        return self._finish(self._pieces(side, item.instruction), side.visuals, truncate)

    @torch.inference_mode()
    def embed(self, items: Sequence[VLPrepared]) -> np.ndarray:
        """Pooled vectors [n, dims] float32 (not normalized: `pooling.finalize` cuts, then normalizes)."""
        out = np.empty((len(items), self.dimensions), dtype=np.float32)
        for group in self._plan(items):
            hidden, last = self._forward([items[i] for i in group])
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            out[group] = hidden[rows, last].float().cpu().numpy()
        return out

    def _template_probe(self) -> tuple[list, list]:
        messages = [
            {"role": "system", "content": [{"type": "text", "text": "Probe."}]},
            {
                "role": "user",
                "content": [
                    {"type": "video", "video": "v"},
                    {"type": "image", "image": "i"},
                    {"type": "text", "text": "t"},
                ],
            },
        ]
        pieces = [
            _Special(IM_START),
            "system\nProbe.",
            _Special(IM_END),
            "\n",
            _Special(IM_START),
            "user\n",
            _Placeholder("video"),
            _Placeholder("image"),
            "t",
            *self._suffix,
        ]
        return messages, pieces


class Qwen3VLRerankerEngine(_Qwen3VLBase):
    """Qwen3-VL-Reranker (2B / 8B): P(yes) against no for a (query, document) pair."""

    default_max_tokens = 10240

    def __init__(self, source: str, *, default_instruction: str = RERANKER_INSTRUCTION, **kwargs) -> None:
        self.default_instruction = default_instruction
        super().__init__(source, **kwargs)
        log.info(
            "loaded %s: qwen3-vl reranker max_tokens=%d device=%s dtype=%s attn=%s",
            source,
            self.max_tokens,
            self.runtime.device,
            self.runtime.dtype,
            self.runtime.attn_implementation,
        )

    def _load_model(self, path: str, trust_remote_code: bool) -> None:
        from transformers import Qwen3VLForConditionalGeneration

        full = Qwen3VLForConditionalGeneration.from_pretrained(
            path,
            dtype=self.runtime.dtype,
            attn_implementation=self.runtime.attn_implementation,
            trust_remote_code=trust_remote_code,
        )
        vocab = self.tokenizer.get_vocab()
        if "yes" not in vocab or "no" not in vocab:
            raise ValueError(f"{self.source}: tokenizer has no single 'yes' / 'no' tokens")
        self.yes_id, self.no_id = vocab["yes"], vocab["no"]
        weight = full.lm_head.weight.detach()
        self.score_vector = (weight[self.yes_id].float() - weight[self.no_id].float()).to(self.runtime.device)
        self.model = full
        self.backbone = full.model
        self.backbone.to(self.runtime.device).eval()
        full.lm_head = torch.nn.Identity()  # only the yes/no rows are used; let the rest go

    def _pieces(self, query: PreparedSide, document: PreparedSide, instruction: str | None) -> list:
        return [
            _Special(IM_START),
            "system\n" + RERANKER_SYSTEM,
            _Special(IM_END),
            "\n",
            _Special(IM_START),
            "user\n<Instruct>: " + (instruction or self.default_instruction) + "<Query>:",
            *self._side_pieces(query, 0),
            "\n<Document>:",
            *self._side_pieces(document, len(query.visuals)),
            *self._suffix,
        ]

    def prepare_side(self, item: VLItem | PreparedSide) -> PreparedSide:
        """Resize one side's media once (e.g. the query, shared by every document of a request)."""
        return self._side(item, pixels=True)

    def count_tokens(
        self, query: VLItem | PreparedSide, document: VLItem | PreparedSide, instruction: str | None = None
    ) -> TokenCount:
        """Exact sequence length and visual cost of a pair from the media sizes alone."""
        q, d = self._side(query, pixels=False), self._side(document, pixels=False)
        return self._count(self._pieces(q, d, instruction), [*q.visuals, *d.visuals])

    def prepare(
        self,
        query: VLItem | PreparedSide,
        document: VLItem | PreparedSide,
        instruction: str | None = None,
        truncate: bool = False,
    ) -> VLPrepared:
        """Resize (unless already prepared) and tokenize one pair; raises VLInputError when unusable."""
        q, d = self._side(query, pixels=True), self._side(document, pixels=True)
        return self._finish(self._pieces(q, d, instruction), [*q.visuals, *d.visuals], truncate)

    @torch.inference_mode()
    def score(self, items: Sequence[VLPrepared]) -> np.ndarray:
        """Relevance in [0, 1] per prepared pair, in the order given."""
        out = np.empty(len(items), dtype=np.float32)
        for group in self._plan(items):
            hidden, last = self._forward([items[i] for i in group])
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            logits = hidden[rows, last].float() @ self.score_vector
            out[group] = torch.sigmoid(logits).cpu().numpy()
        return out

    def _template_probe(self) -> tuple[list, list]:
        messages = [
            {"role": "system", "content": [{"type": "text", "text": RERANKER_SYSTEM}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<Instruct>: probe"},
                    {"type": "text", "text": "<Query>:"},
                    {"type": "image", "image": "i"},
                    {"type": "text", "text": "q"},
                    {"type": "text", "text": "\n<Document>:"},
                    {"type": "video", "video": "v"},
                    {"type": "text", "text": "d"},
                ],
            },
        ]
        pieces = [
            _Special(IM_START),
            "system\n" + RERANKER_SYSTEM,
            _Special(IM_END),
            "\n",
            _Special(IM_START),
            "user\n<Instruct>: probe<Query>:",
            _Placeholder("image"),
            "q\n<Document>:",
            _Placeholder("video"),
            "d",
            *self._suffix,
        ]
        return messages, pieces


def _truncate(ids: list[int], protected: list[bool], limit: int, suffix_len: int) -> list[int]:
    """Keep every protected token and the suffix; drop unprotected tokens from the end of the body."""
    body, body_flags = ids[: len(ids) - suffix_len], protected[: len(ids) - suffix_len]
    suffix = ids[len(ids) - suffix_len :]
    keep_budget = limit - suffix_len - sum(body_flags)
    if keep_budget < 0:
        raise VLInputError(
            f"input has {len(ids)} tokens and its images / videos alone exceed the model's limit of {limit}"
        )
    out = []
    for token, flag in zip(body, body_flags, strict=True):
        if flag:
            out.append(token)
        elif keep_budget > 0:
            out.append(token)
            keep_budget -= 1
    return out + suffix


def _read_geometry(path: str, config) -> PatchGeometry:
    vision = config.vision_config
    image_cfg = read_json(path, "preprocessor_config.json") or {}
    video_cfg = read_json(path, "video_preprocessor_config.json") or image_cfg
    patch = int(image_cfg.get("patch_size", vision.patch_size))
    merge = int(image_cfg.get("merge_size", vision.spatial_merge_size))
    temporal = int(image_cfg.get("temporal_patch_size", vision.temporal_patch_size))
    if (patch, merge, temporal) != (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size):
        raise ValueError(f"{path}: processor patch geometry does not match the vision config")
    default = (0.5, 0.5, 0.5)
    return PatchGeometry(
        patch_size=patch,
        merge_size=merge,
        temporal_patch_size=temporal,
        image_mean=tuple(image_cfg.get("image_mean", default)),
        image_std=tuple(image_cfg.get("image_std", default)),
        video_mean=tuple(video_cfg.get("image_mean", image_cfg.get("image_mean", default))),
        video_std=tuple(video_cfg.get("image_std", image_cfg.get("image_std", default))),
        rescale_factor=float(image_cfg.get("rescale_factor", 1 / 255)),
    )

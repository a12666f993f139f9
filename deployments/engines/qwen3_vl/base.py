"""What both Qwen3-VL engines share: loading, the checkpoint's patch geometry, media sizing, batching, forward.

The subclasses add the model head they need (`_load_model`), their prompt layout and their output.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import AutoTokenizer

from deployments.engines.micro_batches import pad_batch, plan_visual_batches
from deployments.engines.protocol import EngineOptions, InputError
from deployments.engines.qwen3_vl.inputs import PreparedSide, TokenCount, VLPrepared
from deployments.engines.qwen3_vl.templates import Piece, TemplateProbe, check_template
from deployments.engines.qwen3_vl.tokens import PromptEncoder
from deployments.engines.runtime import Runtime, choose_runtime
from deployments.engines.source import read_json, resolve_source
from deployments.engines.visual_inputs import VideoSampling, VLItem
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

log = logging.getLogger("ray.serve")


@contextlib.contextmanager
def input_errors(index: int | None) -> Iterator[None]:
    """An unusable input (geometry, length) as the protocol's InputError naming its position."""
    try:
        yield
    except VLInputError as exc:
        raise InputError(str(exc), index, too_long="token" in str(exc)) from None


class Qwen3VLEngineBase:
    default_max_tokens = 8192
    default_instruction: str
    template_probe: TemplateProbe  # the subclass's prompt, for the load-time template check

    @classmethod
    def load(cls, source: str, options: EngineOptions) -> Qwen3VLEngineBase:
        v = options.vision
        limits = VisionLimits(**{k: v[k] for k in ("min_pixels", "max_pixels", "total_pixels", "fps", "max_frames")})
        return cls(
            source,
            default_instruction=options.default_instruction or cls.default_instruction,
            runtime=options.runtime,
            limits=limits,
            max_tokens=options.max_tokens,
            max_batch_tokens=options.max_batch_tokens,
            max_batch_patches=v.get("max_batch_patches", 65536),
            trust_remote_code=options.trust_remote_code,
        )

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
        self.geometry = read_geometry(path, config)
        self.prompt_encoder = PromptEncoder(self.tokenizer, config, source, self.geometry.merge_size)
        self.special_ids = self.prompt_encoder.special_ids
        self.image_token_id = self.prompt_encoder.image_token_id
        self.video_token_id = self.prompt_encoder.video_token_id
        self.pad_id = self.prompt_encoder.pad_id
        self.template_matches = check_template(self.tokenizer, self.template_probe, source)

    def _load_model(self, path: str, trust_remote_code: bool) -> None:
        """Set `self.model` (whose config is checked) and `self.backbone` (the Qwen3VLModel that runs)."""
        raise NotImplementedError

    def video_sampling(self) -> VideoSampling:
        """Frame sampling and pixel budget for `media.load_video` with this model's limits."""
        return video_sampling(self.limits, self.geometry)

    # -- media -------------------------------------------------------------------------------------
    def _side(self, item: VLItem | PreparedSide, pixels: bool) -> PreparedSide:
        """Resize a side's media (`pixels`), or only plan the sizes; a side already resized is kept."""
        if isinstance(item, PreparedSide) and (item.has_pixels or not pixels):
            return item
        limits, geometry = self.limits, self.geometry
        visuals: list[VisualInput] = []
        for video in item.videos:
            visuals.append(prepare_video(video, limits, geometry) if pixels else plan_video(video, limits, geometry))
        for image in item.images:
            visuals.append(prepare_image(image, limits, geometry) if pixels else plan_image(image, limits, geometry))
        return PreparedSide(item.text, tuple(item.images), tuple(item.videos), visuals, pixels)

    # -- prompts -----------------------------------------------------------------------------------
    def _count(self, pieces: list[Piece], visuals: list[VisualInput]) -> TokenCount:
        return self.prompt_encoder.count(pieces, visuals)

    def _finish(self, pieces: list[Piece], visuals: list[VisualInput], truncate: bool) -> VLPrepared:
        return self.prompt_encoder.prepare(pieces, visuals, self.max_tokens, truncate)

    # -- forward -----------------------------------------------------------------------------------
    def _plan(self, items: Sequence[VLPrepared]) -> list[list[int]]:
        return plan_visual_batches(
            [len(p) for p in items], [p.patches for p in items], self.max_batch_tokens, self.max_batch_patches
        )

    def _last_states(self, items: Sequence[VLPrepared]) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Per micro-batch: (indices into `items`, float32 hidden state at each row's last attended token)."""
        for group in self._plan(items):
            hidden, last = self._forward([items[i] for i in group])
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            yield group, hidden[rows, last].float()

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


PIXEL_SETTINGS = ("image_mean", "image_std", "rescale_factor", "patch_size", "merge_size", "temporal_patch_size")


def processor_settings(path: str) -> tuple[dict, dict]:
    """(image, video) processor settings, from either save layout.

    Older saves have preprocessor_config.json and video_preprocessor_config.json; transformers 5 writes one
    processor_config.json with both nested (`image_processor`, `video_processor`). A setting found in neither
    is named at load (the defaults below then apply): a model normalized differently from its training gives
    quietly wrong vectors (cos 0.96 measured with CLIP mean/std read as 0.5).
    """
    unified = read_json(path, "processor_config.json") or {}
    image = read_json(path, "preprocessor_config.json") or unified.get("image_processor") or {}
    video = read_json(path, "video_preprocessor_config.json") or unified.get("video_processor") or image
    missing = [key for key in PIXEL_SETTINGS if key not in image]
    if missing:
        log.warning(
            "%s: no %s in its processor settings (preprocessor_config.json or processor_config.json); using "
            "the defaults (mean/std 0.5, rescale 1/255, the vision config's patch numbers)",
            path,
            ", ".join(missing),
        )
    return image, video


def read_geometry(path: str, config: Any) -> PatchGeometry:
    """The processor's patch numbers from the checkpoint's preprocessor configs, checked against the model."""
    vision = config.vision_config
    image_cfg, video_cfg = processor_settings(path)
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

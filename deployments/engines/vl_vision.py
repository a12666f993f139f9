"""Qwen3-VL pixel preprocessing without torchvision: resize, normalize and patchify images and videos.

Reproduces what the official Qwen3-VL-Embedding / Qwen3-VL-Reranker recipe feeds the model, which is
qwen-vl-utils (resize) followed by the transformers processor called with `do_resize=False`
(rescale + normalize + patchify):

image      qwen-vl-utils `fetch_image`: smart_resize to multiples of patch x merge (32) inside
           [min_pixels, max_pixels], then PIL bicubic resize of the RGB image.
video      qwen-vl-utils `fetch_video`: frames of a frame list are first resized one by one as images
           (to multiples of 64, 4 .. 16384 tokens of 64 x 64: a qwen-vl-utils quirk) and the list is
           padded to an even length by repeating the last frame; a decoded video enters as decoded;
           then every frame is smart-resized to one size with per-frame pixels in
           [128 tokens, max(min(768 tokens, total_pixels / frames * 2), 1.05 * 128 tokens)], with
           torchvision's tensor resize (bicubic, antialias, uint8 rounding), reproduced here with
           `torch.nn.functional.interpolate`.
patches    (x - mean / rescale) / (std / rescale) in float32 (the fused form of the processor's
           rescale + normalize), then the processor's patch layout: rows ordered by
           (t, h / merge, w / merge, merge_h, merge_w), each row (channel, temporal, patch_h, patch_w);
           an image is repeated `temporal_patch_size` times along time.
timestamps per temporal patch, the mean time of its first and last frame (frame index / fps), as
           Qwen3VLProcessor computes them for `<{t:.1f} seconds>`.

The resized frames are kept as uint8 (what the model will see, 1/4 the memory of float patches);
`to_patches` builds the float rows at forward time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from deployments.engines.visual_inputs import Video, VideoSampling


class VLInputError(ValueError):
    """An input the model cannot take (aspect ratio, length); the message is meant for the client."""


@dataclass(frozen=True)
class VisionLimits:
    """Per-model vision budget (defaults: the product seed and the official Qwen3-VL-Embedding recipe)."""

    min_pixels: int = 4096  # image floor: 4 tokens of 32 x 32
    max_pixels: int = 1_843_200  # image ceiling: 1800 tokens (1280 x 1440)
    total_pixels: int = 7_864_320  # video budget (x2 inside: frames come in temporal pairs)
    fps: float = 1.0
    max_frames: int = 64
    min_frames: int = 4
    frame_min_tokens: int = 128  # qwen-vl-utils VIDEO_MIN_TOKEN_NUM
    frame_max_tokens: int = 768  # qwen-vl-utils VIDEO_MAX_TOKEN_NUM
    list_frame_min_tokens: int = 4  # frame-list frames are first resized as images (IMAGE_MIN_TOKEN_NUM)
    list_frame_max_tokens: int = 16384  # IMAGE_MAX_TOKEN_NUM
    list_fps: float = 2.0  # nominal rate of a frame list (qwen-vl-utils' sample_fps default)


@dataclass(frozen=True)
class PatchGeometry:
    """The processor's numbers, read from the checkpoint's preprocessor configs."""

    patch_size: int = 16
    merge_size: int = 2
    temporal_patch_size: int = 2
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    video_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    video_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


def video_sampling(limits: VisionLimits, geometry: PatchGeometry) -> VideoSampling:
    """The media intake's frame sampling for this model (fps, frame counts, pixel budget)."""
    f2 = geometry.factor**2
    return VideoSampling(
        fps=limits.fps,
        max_frames=limits.max_frames,
        min_frames=limits.min_frames,
        frame_factor=geometry.temporal_patch_size,
        total_pixels=limits.total_pixels,
        frame_min_pixels=limits.frame_min_tokens * f2,
        frame_max_pixels=limits.frame_max_tokens * f2,
        list_fps=limits.list_fps,
    )


def smart_resize(height: int, width: int, factor: int, min_pixels: float, max_pixels: float) -> tuple[int, int]:
    """qwen-vl-utils' smart_resize: sides multiple of `factor`, area within [min, max], aspect kept.

    One difference: a side never drops below `factor` when shrinking (qwen-vl-utils would produce 0 and
    fail for extreme aspect ratios).
    """
    if height < 1 or width < 1:
        raise VLInputError("image has no pixels")
    if max(height, width) / min(height, width) > 200:
        raise VLInputError(f"image aspect ratio {max(height, width) / min(height, width):.0f}:1 is over 200:1")
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass
class VisualInput:
    """One image or video, resized for the model. `pixels` is None for a size-only plan."""

    kind: str  # "image" | "video"
    grid: tuple[int, int, int]  # (t, h, w) in patches
    timestamps: list[float] | None = None  # videos: seconds per temporal patch
    pixels: torch.Tensor | None = None  # uint8 [frames, 3, H, W]

    @property
    def num_patches(self) -> int:
        t, h, w = self.grid
        return t * h * w

    def num_tokens(self, merge_size: int) -> int:
        return self.num_patches // (merge_size * merge_size)


# -- images ----------------------------------------------------------------------------------------------
def image_target(size: tuple[int, int], limits: VisionLimits, geometry: PatchGeometry) -> tuple[int, int]:
    """(height, width) an image of PIL size (width, height) is resized to."""
    width, height = size
    return smart_resize(height, width, geometry.factor, limits.min_pixels, limits.max_pixels)


def plan_image(image: Image.Image, limits: VisionLimits, geometry: PatchGeometry) -> VisualInput:
    h, w = image_target(image.size, limits, geometry)
    return VisualInput("image", (1, h // geometry.patch_size, w // geometry.patch_size))


def prepare_image(image: Image.Image, limits: VisionLimits, geometry: PatchGeometry) -> VisualInput:
    h, w = image_target(image.size, limits, geometry)
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    resized = rgb.resize((w, h), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1).unsqueeze(0)
    return VisualInput("image", (1, h // geometry.patch_size, w // geometry.patch_size), pixels=pixels)


# -- videos ----------------------------------------------------------------------------------------------
def _list_frame_target(size: tuple[int, int], limits: VisionLimits, geometry: PatchGeometry) -> tuple[int, int]:
    """First resize of a frame-list frame. qwen-vl-utils hands `fetch_image` the merged factor (32) as
    its patch size, which multiplies it by the merge size again: frames snap to multiples of 64, within
    4 .. 16384 tokens of 64 x 64. Reproduced as is: it is what the recipe feeds the model."""
    factor = geometry.factor * geometry.merge_size
    f2 = factor**2
    width, height = size
    return smart_resize(height, width, factor, limits.list_frame_min_tokens * f2, limits.list_frame_max_tokens * f2)


def _video_layout(video: Video, limits: VisionLimits, geometry: PatchGeometry):
    """(frame size before the video resize, padded frame count, target size, timestamps)."""
    if not video.frames:
        raise VLInputError("video has no frames")
    first = video.frames[0]
    # A frame list is first resized frame by frame as images; decoded frames enter at their own size.
    from_list = video.source == "frames"
    base = _list_frame_target(first.size, limits, geometry) if from_list else (first.height, first.width)
    tps = geometry.temporal_patch_size
    count = len(video.frames)
    padded = count + (-count % tps)
    f2 = geometry.factor**2
    min_pixels = limits.frame_min_tokens * f2
    max_pixels = max(min(limits.frame_max_tokens * f2, limits.total_pixels / padded * tps), int(min_pixels * 1.05))
    target = smart_resize(base[0], base[1], geometry.factor, min_pixels, max_pixels)

    indices = list(video.frame_indices[:count])
    if video.source == "frames":
        indices = list(range(padded))  # qwen-vl-utils numbers the padded list
    else:
        indices += [indices[-1]] * (padded - len(indices))
    fps = video.fps if video.fps and video.fps > 0 else 24.0
    seconds = [i / fps for i in indices]
    timestamps = [(seconds[i] + seconds[i + tps - 1]) / 2 for i in range(0, padded, tps)]
    return base, padded, target, timestamps


def plan_video(video: Video, limits: VisionLimits, geometry: PatchGeometry) -> VisualInput:
    _, padded, (h, w), timestamps = _video_layout(video, limits, geometry)
    p = geometry.patch_size
    return VisualInput("video", (padded // geometry.temporal_patch_size, h // p, w // p), timestamps)


def prepare_video(video: Video, limits: VisionLimits, geometry: PatchGeometry, chunk: int = 8) -> VisualInput:
    base, padded, (h, w), timestamps = _video_layout(video, limits, geometry)
    frames = []
    for frame in video.frames:
        rgb = frame if frame.mode == "RGB" else frame.convert("RGB")
        if (rgb.height, rgb.width) != base:
            rgb = rgb.resize((base[1], base[0]), Image.Resampling.BICUBIC)
        frames.append(torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1))
    frames += [frames[-1]] * (padded - len(frames))
    stacked = torch.stack(frames)
    if (h, w) != base:
        stacked = torch.cat([resize_uint8(stacked[i : i + chunk], (h, w)) for i in range(0, padded, chunk)])
    p = geometry.patch_size
    return VisualInput("video", (padded // geometry.temporal_patch_size, h // p, w // p), timestamps, pixels=stacked)


def resize_uint8(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """torchvision's tensor resize for uint8 (bicubic, antialias): float32 interpolate, clamp, round."""
    out = F.interpolate(frames.to(torch.float32), size=size, mode="bicubic", align_corners=False, antialias=True)
    return out.clamp_(0, 255).round_().to(torch.uint8)


# -- patches ---------------------------------------------------------------------------------------------
def to_patches(visual: VisualInput, geometry: PatchGeometry) -> torch.Tensor:
    """uint8 frames -> the processor's float32 patch rows [t * h * w, 3 * temporal * patch * patch]."""
    if visual.pixels is None:
        raise ValueError("visual input has no pixels (a size-only plan)")
    tps, p, m = geometry.temporal_patch_size, geometry.patch_size, geometry.merge_size
    frames = visual.pixels
    if visual.kind == "image":
        frames = frames.expand(tps, -1, -1, -1)
        mean, std = geometry.image_mean, geometry.image_std
    else:
        mean, std = geometry.video_mean, geometry.video_std
    scale = 1.0 / geometry.rescale_factor
    mean_t = (torch.tensor(mean, dtype=torch.float32) * scale).view(1, -1, 1, 1)
    std_t = (torch.tensor(std, dtype=torch.float32) * scale).view(1, -1, 1, 1)
    x = (frames.to(torch.float32) - mean_t) / std_t
    gt, gh, gw = visual.grid
    channels = x.shape[1]
    x = x.view(gt, tps, channels, gh // m, m, p, gw // m, m, p)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, channels * tps * p * p)


def grids(visuals: Sequence[VisualInput]) -> torch.Tensor:
    return torch.tensor([list(v.grid) for v in visuals], dtype=torch.long)

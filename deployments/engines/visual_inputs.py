"""Decoded visual inputs, as the multimodal engines take them: the contract between media intake and engines.

The media intake (`deployments.media`) turns client references into these objects and the engines consume
them, so they live at the engine level: engines never import the layers above them. Pure data (PIL images,
frame positions, sampling numbers): no torch, so the intake can build them without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image


@dataclass(frozen=True)
class VideoSampling:
    """How frames are picked, and the pixel budget the model will spend on them (qwen-vl-utils' rules)."""

    fps: float = 1.0
    max_frames: int = 64
    min_frames: int = 4
    frame_factor: int = 2  # frames are taken in multiples of the temporal patch
    total_pixels: int = 7_864_320
    frame_min_pixels: int = 128 * 32 * 32  # the model's per-frame floor (VIDEO_MIN_TOKEN_NUM * factor^2)
    frame_max_pixels: int = 768 * 32 * 32  # the model's per-frame ceiling (VIDEO_MAX_TOKEN_NUM * factor^2)
    list_fps: float = 2.0  # nominal rate of a frame list, for timestamps (qwen-vl-utils' default)
    headroom: float = 4.0  # frames above headroom x the per-frame budget are box-reduced while decoding

    def frame_budget(self, num_frames: int) -> float:
        """Pixels the model will keep per frame for a clip of `num_frames` frames."""
        share = self.total_pixels / max(num_frames, 1) * self.frame_factor
        return max(min(self.frame_max_pixels, share), int(self.frame_min_pixels * 1.05))


@dataclass
class Video:
    """Decoded frames of one video and where they sit in time.

    `frame_indices` are positions in a sequence running at `fps` frames per second (the source's own
    frames for a video file; the list positions for a frame list, at `VideoSampling.list_fps`).
    """

    frames: list[Image.Image]
    fps: float
    frame_indices: list[int]
    total_frames: int
    source: str  # "file" (a decoded video) or "frames" (a client frame list)
    meta: dict = field(default_factory=dict)


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

"""The caps every intake step works under, and the one error every step raises.

Kept apart from the steps so that fetching, image decoding and video decoding share one definition of both.
"""

from __future__ import annotations

from dataclasses import dataclass


class MediaError(ValueError):
    """A client-supplied media reference could not be used; the message is meant for the client."""


@dataclass(frozen=True)
class MediaLimits:
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    fetch_deadline_s: float = 30.0  # whole fetch, redirects included
    max_redirects: int = 3
    max_image_bytes: int = 20 * 2**20
    max_video_bytes: int = 64 * 2**20
    max_image_pixels: int = 40_000_000  # checked from the header, before decoding
    image_formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
    max_frame_list: int = 1024  # references in a frame-list video (subsampled before fetching)
    max_video_frame_pixels: int = 4096 * 2304  # one decoded video frame
    max_video_seconds: float = 900.0
    max_decoded_frames: int = 30_000
    decode_deadline_s: float = 60.0
    user_agent: str = "embedserve-media/1"


DEFAULT_LIMITS = MediaLimits()

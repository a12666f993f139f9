"""The caps every intake step works under, the one error every step raises, and one request's media budget.

Kept apart from the steps so that fetching, image decoding and video decoding share one definition of all three.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


class MediaError(ValueError):
    """A client-supplied media reference could not be used; the message is meant for the client."""


class MediaCancelled(MediaError):
    """The caller went away: the rest of the request's media is not worth fetching or decoding."""


@dataclass(frozen=True)
class MediaLimits:
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 10.0
    fetch_deadline_s: float = 30.0  # whole fetch, redirects included
    max_redirects: int = 3
    # Ports a URL may name: anything else would let a client probe services behind public addresses.
    # None or () allows any port.
    allowed_ports: tuple[int, ...] | None = (80, 443)
    max_image_bytes: int = 20 * 2**20
    max_video_bytes: int = 64 * 2**20
    max_image_pixels: int = 40_000_000  # checked from the header, before decoding
    image_formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
    max_frame_list: int = 1024  # references in a frame-list video (subsampled before fetching)
    max_video_frame_pixels: int = 4096 * 2304  # one decoded video frame
    max_video_seconds: float = 900.0
    max_decoded_frames: int = 30_000
    decode_deadline_s: float = 60.0
    # One request, all of its media together: a request of many slow references must not hold a thread for long.
    request_media_deadline_s: float = 60.0
    max_media_items: int = 64  # image and video references in one request (a frame list is one video)
    max_request_media_bytes: int = 256 * 2**20  # encoded bytes of all of one request's media
    user_agent: str = "embedserve-media/1"


DEFAULT_LIMITS = MediaLimits()

CancelSignal = Callable[[], bool] | threading.Event


class MediaBudget:
    """What one request may still spend on media: time, references and bytes, shared by all of its items.

    The steps draw on it (`check` between items and frames, `take_bytes` after each reference is read) so that
    a request of many slow or large references ends at one deadline, and stops early once `cancelled` says
    the caller is gone.
    """

    def __init__(
        self,
        limits: MediaLimits = DEFAULT_LIMITS,
        *,
        cancelled: CancelSignal | None = None,
        deadline: float | None = None,
    ) -> None:
        """`deadline` (time.monotonic() seconds) shortens the request-wide one, e.g. to the caller's own."""
        self.limits = limits
        own = time.monotonic() + limits.request_media_deadline_s
        self.deadline = own if deadline is None else min(own, deadline)
        self.items = 0
        self.bytes_left = limits.max_request_media_bytes
        self._cancelled = cancelled

    def cancelled(self) -> bool:
        """True once the caller has said it no longer waits for the answer."""
        flag = self._cancelled
        if flag is None:
            return False
        return flag.is_set() if isinstance(flag, threading.Event) else bool(flag())

    def check(self) -> None:
        """Stop here when the caller is gone or the request's media time is spent."""
        if self.cancelled():
            raise MediaCancelled("the request was cancelled")
        if time.monotonic() >= self.deadline:
            raise MediaError(
                f"the request's media took longer than its {self.limits.request_media_deadline_s:g} s budget "
                "to fetch and decode"
            )

    def take_item(self) -> None:
        """Count one image or video reference against the per-request cap."""
        self.items += 1
        if self.items > self.limits.max_media_items:
            raise MediaError(f"the request has more than {self.limits.max_media_items} images and videos")

    def cap_bytes(self, max_bytes: int) -> int:
        """The most bytes the next reference may take: its own cap, or what the request has left if less."""
        if self.bytes_left <= 0:
            self.take_bytes(1)  # refused with the request's limit in the message
        return min(max_bytes, self.bytes_left)

    def take_bytes(self, count: int) -> None:
        """Charge a reference's bytes to the request; over the request's total is refused."""
        self.bytes_left -= count
        if self.bytes_left < 0:
            raise MediaError(
                f"the request's media is over the {self.limits.max_request_media_bytes}-byte limit for one request"
            )

    def until(self, deadline: float | None) -> float:
        """The earlier of `deadline` (monotonic; None for none) and the request-wide one."""
        return self.deadline if deadline is None else min(deadline, self.deadline)

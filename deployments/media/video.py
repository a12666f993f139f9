"""Video references -> sampled RGB frames: a video file decoded with PyAV, or a client list of frame images.

PyAV only ever sees a container chosen by sniffing the bytes against an allow-list (MP4/MOV, WebM/Matroska,
AVI), so no other ffmpeg demuxer (HLS, concat, ...) that could open further URLs or files is probed; frame
size, duration, decoded frames and decode time are capped. Frames are sampled as qwen-vl-utils samples a
video file; a frame list is subsampled as the official Qwen3-VL recipe does, before any frame is fetched.
Frames far above the model's per-frame share of `total_pixels` are box-reduced while decoding (memory).
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Sequence
from types import ModuleType

import numpy as np
from PIL import Image

from deployments.engines.visual_inputs import Video, VideoSampling
from deployments.media.addresses import PUBLIC_ONLY, AddressPolicy
from deployments.media.images import load_image
from deployments.media.limits import DEFAULT_LIMITS, MediaBudget, MediaError, MediaLimits
from deployments.media.references import reference_bytes

DEFAULT_SAMPLING = VideoSampling()


def load_video(
    ref: str | Sequence[str],
    *,
    sampling: VideoSampling = DEFAULT_SAMPLING,
    limits: MediaLimits = DEFAULT_LIMITS,
    policy: AddressPolicy = PUBLIC_ONLY,
    budget: MediaBudget | None = None,
) -> Video:
    """A video file reference, or a list of frame references (each an image reference).

    With a `budget` (one request's media), fetching and decoding end by the request's deadline and stop
    when the caller is gone.
    """
    if isinstance(ref, str):
        data = reference_bytes(ref, "video", limits.max_video_bytes, limits, policy, budget=budget)
        return decode_video(data, sampling, limits, budget=budget)
    if isinstance(ref, (list, tuple)):
        return load_frames(ref, sampling=sampling, limits=limits, policy=policy, budget=budget)
    raise MediaError("video must be a URL, a data URI, base64, or a list of frames")


def load_frames(
    refs: Sequence[str],
    *,
    sampling: VideoSampling = DEFAULT_SAMPLING,
    limits: MediaLimits = DEFAULT_LIMITS,
    policy: AddressPolicy = PUBLIC_ONLY,
    budget: MediaBudget | None = None,
) -> Video:
    """A client list of frame images -> a Video, subsampled before any frame is fetched."""
    if not refs:
        raise MediaError("video frame list is empty")
    if len(refs) > limits.max_frame_list:
        raise MediaError(f"video frame list has {len(refs)} frames, over the limit of {limits.max_frame_list}")
    chosen = sample_frame_list(len(refs), sampling.max_frames)
    deadline = time.monotonic() + limits.fetch_deadline_s * 2
    if budget is not None:
        deadline = budget.until(deadline)
    pixels = sampling.frame_budget(len(chosen) + len(chosen) % sampling.frame_factor) * sampling.headroom
    frames = []
    for position in chosen:
        try:
            if time.monotonic() >= deadline:
                raise MediaError("timed out")
            image = load_image(refs[position], limits=limits, policy=policy, deadline=deadline, budget=budget)
        except MediaError as exc:
            raise type(exc)(f"frame {position}: {exc}") from None
        frames.append(_reduce(image, pixels))
    return Video(
        frames=frames,
        fps=sampling.list_fps,
        frame_indices=list(range(len(frames))),
        total_frames=len(frames),
        source="frames",
        meta={"list_positions": chosen},
    )


# -- frame sampling --------------------------------------------------------------------------------------
def sample_frame_list(count: int, max_frames: int) -> list[int]:
    """The official recipe's subsampling of a frame list: floor(linspace(0, count - 1, max_frames))."""
    if count <= max_frames:
        return list(range(count))
    return np.linspace(0, count - 1, max_frames, dtype=int).tolist()


def num_sampled_frames(total_frames: int, video_fps: float, sampling: VideoSampling) -> int:
    """qwen-vl-utils' smart_nframes for `fps` sampling (a single-frame video keeps its one frame)."""
    factor = sampling.frame_factor
    min_frames = math.ceil(sampling.min_frames / factor) * factor
    max_frames = max(factor, math.floor(sampling.max_frames / factor) * factor)
    wanted = total_frames / video_fps * sampling.fps
    n = min(min(max(wanted, min_frames), max_frames), total_frames)
    n = math.floor(n / factor) * factor
    if n < factor:
        return min(total_frames, 1)
    return int(n)


def sample_indices(total_frames: int, num_frames: int) -> list[int]:
    """round(linspace(0, total - 1, n)) computed as torch.linspace does in float32, ties to even."""
    if num_frames <= 1:
        return [0] * num_frames
    start, end = np.float32(0.0), np.float32(total_frames - 1)
    step = np.float32((end - start) / np.float32(num_frames - 1))
    idx = np.arange(num_frames)
    half = num_frames // 2
    lo = start + step * idx[:half].astype(np.float32)
    hi = end - step * (num_frames - idx[half:] - 1).astype(np.float32)
    values = np.concatenate([lo, hi]).astype(np.float32)
    return np.rint(values).astype(np.int64).tolist()


# -- decoding a video file -------------------------------------------------------------------------------
_CONTAINERS = (
    (lambda d: d[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"), "mp4"),
    (lambda d: d[:4] == b"\x1a\x45\xdf\xa3", "matroska"),
    (lambda d: d[:4] == b"RIFF" and d[8:12] == b"AVI ", "avi"),
)


def sniff_container(data: bytes) -> str:
    for test, name in _CONTAINERS:
        if test(data):
            return name
    raise MediaError("not a video in an accepted container (MP4/MOV, WebM/Matroska, AVI)")


def decode_video(
    data: bytes,
    sampling: VideoSampling = DEFAULT_SAMPLING,
    limits: MediaLimits = DEFAULT_LIMITS,
    *,
    budget: MediaBudget | None = None,
) -> Video:
    """Bytes of a video file -> the sampled frames (RGB), decoded with PyAV under the limits.

    Every failure is a MediaError: the bytes are the client's, so whatever PyAV or Pillow raises on a corrupt
    file (FFmpeg errors, a stream without a codec context, ...) is a bad input, never a server error.
    """
    import av  # imported here: only video requests pay for it

    fmt = sniff_container(data)
    deadline = time.monotonic() + limits.decode_deadline_s
    try:
        return _decode_video(av, data, fmt, sampling, limits, deadline, budget)
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(f"could not decode video ({type(exc).__name__})") from exc


def _decode_video(
    av: ModuleType,
    data: bytes,
    fmt: str,
    sampling: VideoSampling,
    limits: MediaLimits,
    deadline: float,
    budget: MediaBudget | None,
) -> Video:
    """Probe, sample and decode; the second pass runs when the container's frame count was wrong."""
    if budget is not None:
        deadline = budget.until(deadline)
    total, fps = _probe(av, data, fmt, limits)
    n = num_sampled_frames(total, fps, sampling)
    wanted = sample_indices(total, n)
    pixels = sampling.frame_budget(n + n % sampling.frame_factor) * sampling.headroom
    frames, decoded = _decode_frames(av, data, fmt, wanted, pixels, limits, deadline, budget)
    if len(frames) < len(wanted):
        # The container's frame count was wrong: sample again from the frames that really exist.
        total = decoded
        if total < 1:
            raise MediaError("video has no decodable frames")
        n = num_sampled_frames(total, fps, sampling)
        wanted = sample_indices(total, n)
        frames, _ = _decode_frames(av, data, fmt, wanted, pixels, limits, deadline, budget)
        if len(frames) < len(wanted):
            raise MediaError("video could not be decoded consistently")
    return Video(frames=frames, fps=fps, frame_indices=wanted, total_frames=total, source="file")


def _open(av: ModuleType, data: bytes, fmt: str):
    return av.open(io.BytesIO(data), mode="r", format=fmt, metadata_errors="ignore")


def _probe(av: ModuleType, data: bytes, fmt: str, limits: MediaLimits) -> tuple[int, float]:
    with _open(av, data, fmt) as container:
        if not container.streams.video:
            raise MediaError("no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx is None:  # a damaged header: the stream is there but its codec is not
            raise MediaError("the video stream has no usable codec")
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if width * height > limits.max_video_frame_pixels:
            raise MediaError(f"video frames are {width}x{height}, over the {limits.max_video_frame_pixels}-pixel limit")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        total = int(stream.frames or 0)
        if total <= 0:
            total = 0
            for packet in container.demux(stream):
                if packet.size:
                    total += 1
                    if total > limits.max_decoded_frames:
                        break
        if fps <= 0 or not math.isfinite(fps):
            seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
            if seconds <= 0:
                raise MediaError("video has no frame rate")
            fps = total / seconds
    if total <= 0:
        raise MediaError("video has no frames")
    if total > limits.max_decoded_frames or total / fps > limits.max_video_seconds:
        raise MediaError(
            f"video is too long ({total} frames, {total / fps:.0f} s); the limit is "
            f"{limits.max_video_seconds:.0f} s and {limits.max_decoded_frames} frames"
        )
    return total, fps


def _decode_frames(
    av: ModuleType,
    data: bytes,
    fmt: str,
    wanted: list[int],
    pixels: float,
    limits: MediaLimits,
    deadline: float,
    budget: MediaBudget | None = None,
) -> tuple[list[Image.Image], int]:
    """Decode in order, keeping the wanted indices (an index may repeat); returns (frames, frames seen).

    `pixels` bounds a kept frame (see _reduce); the request's `budget`, if any, is checked after each frame
    so that decoding stops once the caller is gone.
    """
    wanted_set = set(wanted)
    last = max(wanted) if wanted else -1
    kept: dict[int, Image.Image] = {}
    seen = 0
    with _open(av, data, fmt) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            seen = index + 1
            if frame.width * frame.height > limits.max_video_frame_pixels:
                raise MediaError(f"a video frame is {frame.width}x{frame.height}, over the pixel limit")
            if index in wanted_set:
                kept[index] = _reduce(frame.to_image(), pixels)
            if index >= last:
                break
            if seen > limits.max_decoded_frames:
                raise MediaError("video has too many frames")
            if time.monotonic() > deadline:
                raise MediaError("video took too long to decode")
            if budget is not None:
                budget.check()
    return [kept[i] for i in wanted if i in kept], seen


def _reduce(image: Image.Image, max_pixels: float) -> Image.Image:
    """Integer box reduction of a frame far above what the model will keep (memory bound, not quality)."""
    pixels = image.width * image.height
    if pixels <= max_pixels:
        return image
    factor = math.ceil(math.sqrt(pixels / max_pixels))
    return image.reduce(factor)

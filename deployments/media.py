"""Safe media intake: client references -> decoded RGB images and sampled video frames.

Nothing a client sends is ever handed to PIL's or qwen-vl-utils' path / URL loaders (they open local
files and fetch any URL with no timeout). This module is the only place that turns a reference into
pixels, and it does so under explicit limits. No torch, no Ray: the functions are synchronous and meant
to run in worker threads.

References
    image   an ``https://`` / ``http://`` URL, a ``data:`` URI (base64), or bare base64.
    video   an URL or a ``data:`` URI / bare base64 of a video file (MP4/MOV, WebM/Matroska, AVI),
            or a list of frames, each an image reference as above.
    Any other scheme (``file://``, ``ftp://``, ...) and anything that is neither is refused.

API
    load_image(ref, *, limits=MediaLimits(), policy=PUBLIC_ONLY) -> PIL.Image.Image (RGB)
    load_video(ref, *, sampling=VideoSampling(), limits=..., policy=...) -> Video
    decode_image(data: bytes, limits) / decode_video(data: bytes, sampling, limits)   (bytes already in hand)
    fetch(url, *, max_bytes, limits, policy) -> bytes
    Every failure raises MediaError(message); the message is safe to return to the client (the service
    answers 400 and names the input index).

Fetching (URLs)
    http(s) only, no credentials in the URL; the host is resolved once and every resolved address must
    pass the AddressPolicy (PUBLIC_ONLY refuses loopback, private, link-local, shared, multicast,
    reserved, unspecified, IPv4-mapped / 6to4 / Teredo / NAT64 forms of those, and cloud metadata
    addresses); the connection goes to the address that was checked (the URL is pinned to the IP; the
    Host header and TLS SNI / certificate check keep the name), so DNS cannot change between check and
    connect. Redirects are followed by hand, at most `max_redirects`, each hop checked again. Connect and
    read timeouts, an overall deadline, no proxies from the environment, and a byte cap enforced while
    streaming (Content-Length above the cap is refused before reading).

Images
    Pillow with a format allow-list (JPEG, PNG, WEBP, GIF (first frame), BMP). The pixel count is read
    from the header and checked before any pixel is decoded (decompression bombs); Pillow's own bomb
    guard is kept as a second line. Converted to RGB; transparent pixels are composited onto white (as
    qwen-vl-utils does for RGBA).

Videos
    PyAV with a container allow-list chosen by sniffing the bytes (so no other ffmpeg demuxer, such as
    HLS or concat, that could open further URLs or files is ever probed); caps on frame size, duration,
    decoded frames and decode time. Frames are sampled as qwen-vl-utils samples a video file: `fps`
    frames per second of video, at least `min_frames`, at most `max_frames`, an even count, indices
    round(linspace(0, total - 1, n)). A frame list is subsampled as the official Qwen3-VL recipe does
    (floor(linspace) down to `max_frames`) before any frame is fetched. Frames far larger than the model
    can use under the `total_pixels` budget (more than 4x its per-frame share) are reduced by an integer
    box filter while decoding, to bound memory; smaller frames are kept exactly as decoded, and the
    model's own resize happens in the engine.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import math
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError


class MediaError(ValueError):
    """A client-supplied media reference could not be used; the message is meant for the client."""


# -- limits --------------------------------------------------------------------------------------------
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


# -- address policy ------------------------------------------------------------------------------------
_METADATA_NETS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.169.254/32",  # AWS / GCP / Azure / OpenStack / Oracle instance metadata
        "169.254.170.2/32",  # AWS ECS task metadata
        "168.63.129.16/32",  # Azure wire server (a public address)
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "192.0.0.192/32",  # Oracle Cloud legacy metadata
        "fd00:ec2::254/128",  # AWS IPv6 metadata
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_BLOCKED_NAMES = ("localhost", "metadata", "metadata.google.internal", "instance-data")


def is_public_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True only for globally routable unicast addresses that are not cloud metadata endpoints."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return False
        embedded = []
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip in _NAT64_LOCAL:
            return False
        if embedded and not all(is_public_address(e) for e in embedded):
            return False
        if ip.is_site_local:
            return False
    if any(ip in net for net in _METADATA_NETS):
        return False
    bad = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
    return ip.is_global and not bad and not ip.is_unspecified


class AddressPolicy:
    """Which hosts a fetch may connect to. Subclass (tests only) to allow a local test server."""

    def check_host(self, host: str) -> None:
        name = host.rstrip(".").lower()
        if name in _BLOCKED_NAMES or name.endswith(".localhost"):
            raise MediaError(f"refused to fetch from {host!r}: not a public host")

    def resolve(self, host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise MediaError(f"cannot resolve host {host!r}") from exc
        out = []
        for info in infos:
            addr = info[4][0]
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError:
                continue
            if ip not in out:
                out.append(ip)
        if not out:
            raise MediaError(f"cannot resolve host {host!r}")
        return out

    def allows(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> bool:
        return is_public_address(ip)


PUBLIC_ONLY = AddressPolicy()
DEFAULT_LIMITS = MediaLimits()
DEFAULT_SAMPLING = VideoSampling()

_REDIRECTS = {301, 302, 303, 307, 308}


def fetch(
    url: str,
    *,
    max_bytes: int,
    limits: MediaLimits = DEFAULT_LIMITS,
    policy: AddressPolicy = PUBLIC_ONLY,
    deadline: float | None = None,
) -> bytes:
    """GET an http(s) URL under the policy, following at most `limits.max_redirects` redirects."""
    deadline = deadline if deadline is not None else time.monotonic() + limits.fetch_deadline_s
    timeout = httpx.Timeout(
        connect=limits.connect_timeout_s, read=limits.read_timeout_s, write=limits.read_timeout_s, pool=1.0
    )
    current = _parse_url(url)
    with httpx.Client(trust_env=False, follow_redirects=False, timeout=timeout, max_redirects=0) as client:
        for _hop in range(limits.max_redirects + 1):
            pinned, headers, extensions = _pin(current, policy, limits)
            try:
                with client.stream("GET", pinned, headers=headers, extensions=extensions) as response:
                    if response.status_code in _REDIRECTS:
                        location = response.headers.get("location")
                        if not location:
                            raise MediaError(f"{_show(current)}: redirect without a Location")
                        current = _parse_url(str(current.join(location)))
                        continue
                    if response.status_code != 200:
                        raise MediaError(f"{_show(current)}: HTTP {response.status_code}")
                    return _read_capped(response, max_bytes, deadline, current)
            except MediaError:
                raise
            except httpx.TimeoutException as exc:
                raise MediaError(f"{_show(current)}: timed out") from exc
            except (httpx.HTTPError, OSError, ValueError) as exc:
                raise MediaError(f"{_show(current)}: fetch failed ({type(exc).__name__})") from exc
    raise MediaError(f"{_show(url)}: more than {limits.max_redirects} redirects")


def _parse_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise MediaError("invalid URL") from exc
    if parsed.scheme not in ("http", "https"):
        raise MediaError(f"unsupported URL scheme {parsed.scheme!r}: only https and http URLs are fetched")
    if not parsed.raw_host:
        raise MediaError("URL has no host")
    if parsed.userinfo:
        raise MediaError("URLs with credentials are not fetched")
    return parsed


def _pin(url: httpx.URL, policy: AddressPolicy, limits: MediaLimits) -> tuple[httpx.URL, dict, dict]:
    """Check the host and return the URL rewritten to the checked address, with Host / SNI kept."""
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    policy.check_host(host)
    addresses = policy.resolve(host, port)
    refused = [ip for ip in addresses if not policy.allows(ip, port)]
    if refused:
        raise MediaError(f"refused to fetch from {host!r}: it resolves to a non-public address")
    ip = addresses[0]
    pinned = url.copy_with(host=str(ip))
    host_header = f"[{host}]" if ":" in host else host
    if url.port is not None:
        host_header += f":{url.port}"
    headers = {"Host": host_header, "User-Agent": limits.user_agent, "Accept-Encoding": "identity", "Accept": "*/*"}
    extensions = {"sni_hostname": host} if url.scheme == "https" and not _is_ip(host) else {}
    return pinned, headers, extensions


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _read_capped(response: httpx.Response, max_bytes: int, deadline: float, url: httpx.URL) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise MediaError(f"{_show(url)}: body of {int(declared)} bytes is over the {max_bytes}-byte limit")
    buf = bytearray()
    for chunk in response.iter_bytes():
        buf += chunk
        if len(buf) > max_bytes:
            raise MediaError(f"{_show(url)}: body is over the {max_bytes}-byte limit")
        if time.monotonic() > deadline:
            raise MediaError(f"{_show(url)}: download took too long")
    return bytes(buf)


def _show(url: httpx.URL | str) -> str:
    text = str(url)
    return text if len(text) <= 120 else text[:117] + "..."


# -- references -> bytes -------------------------------------------------------------------------------
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_B64_CHARS = re.compile(r"^[A-Za-z0-9+/_\-]*={0,2}$")


def _reference_bytes(
    ref: str,
    kind: str,
    max_bytes: int,
    limits: MediaLimits,
    policy: AddressPolicy,
    deadline: float | None = None,
) -> bytes:
    if not isinstance(ref, str):
        raise MediaError(f"{kind} must be a string (URL, data URI or base64)")
    text = ref.strip()
    if not text:
        raise MediaError(f"{kind} is empty")
    match = _SCHEME.match(text)
    if match:
        scheme = match.group(1).lower()
        if scheme in ("http", "https"):
            return fetch(text, max_bytes=max_bytes, limits=limits, policy=policy, deadline=deadline)
        if scheme == "data":
            return _data_uri(text, kind, max_bytes)
        raise MediaError(f"unsupported URL scheme {scheme!r}: give an https or http URL, a data URI or base64")
    return _b64(text, max_bytes)


def _data_uri(text: str, kind: str, max_bytes: int) -> bytes:
    header, sep, payload = text[5:].partition(",")
    if not sep:
        raise MediaError("malformed data URI")
    params = [p.strip().lower() for p in header.split(";")]
    if "base64" not in params[1:]:
        raise MediaError("data URIs must be base64-encoded (data:<type>;base64,...)")
    media_type = params[0]
    accepted = {"image": ("image/",), "video": ("video/",)}.get(kind, ())
    if media_type and not media_type.startswith(accepted) and media_type != "application/octet-stream":
        raise MediaError(f"data URI type {media_type!r} is not an {kind} type")
    return _b64(payload, max_bytes)


def _b64(text: str, max_bytes: int) -> bytes:
    compact = "".join(text.split())
    if len(compact) // 4 * 3 > max_bytes + 3:
        raise MediaError(f"encoded data is over the {max_bytes}-byte limit")
    if not compact or not _B64_CHARS.match(compact):
        raise MediaError("not a URL, a data URI or valid base64")
    compact += "=" * (-len(compact) % 4)
    try:
        if "-" in compact or "_" in compact:
            data = base64.urlsafe_b64decode(compact)
        else:
            data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError("invalid base64") from exc
    if len(data) > max_bytes:
        raise MediaError(f"data is over the {max_bytes}-byte limit")
    return data


# -- images ----------------------------------------------------------------------------------------------
# Pillow's own bomb guard, as a second line behind the explicit header check below: it warns above this
# many pixels and raises above twice as many.
Image.MAX_IMAGE_PIXELS = max(DEFAULT_LIMITS.max_image_pixels, 1)
ImageFile.LOAD_TRUNCATED_IMAGES = False


def load_image(
    ref: str,
    *,
    limits: MediaLimits = DEFAULT_LIMITS,
    policy: AddressPolicy = PUBLIC_ONLY,
    deadline: float | None = None,
) -> Image.Image:
    data = _reference_bytes(ref, "image", limits.max_image_bytes, limits, policy, deadline)
    return decode_image(data, limits)


def decode_image(data: bytes, limits: MediaLimits = DEFAULT_LIMITS) -> Image.Image:
    """Bytes -> RGB image, refusing unknown formats and oversized images before decoding pixels."""
    try:
        with Image.open(io.BytesIO(data), formats=list(limits.image_formats)) as img:
            width, height = img.size
            if width < 1 or height < 1:
                raise MediaError("image has no pixels")
            if width * height > limits.max_image_pixels:
                raise MediaError(f"image is {width}x{height}, over the {limits.max_image_pixels}-pixel limit")
            img.load()
            return to_rgb(img)
    except MediaError:
        raise
    except UnidentifiedImageError as exc:
        allowed = ", ".join(limits.image_formats)
        raise MediaError(f"not an image in an accepted format ({allowed})") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError("image is too large (decompression bomb guard)") from exc
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, MemoryError) as exc:
        raise MediaError(f"could not decode image ({type(exc).__name__})") from exc


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with transparency composited onto white (qwen-vl-utils does this for RGBA)."""
    if img.mode == "RGB":
        return img.copy()
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


# -- videos ----------------------------------------------------------------------------------------------
def load_video(
    ref: str | Sequence[str],
    *,
    sampling: VideoSampling = DEFAULT_SAMPLING,
    limits: MediaLimits = DEFAULT_LIMITS,
    policy: AddressPolicy = PUBLIC_ONLY,
) -> Video:
    """A video file reference, or a list of frame references (each an image reference)."""
    if isinstance(ref, str):
        data = _reference_bytes(ref, "video", limits.max_video_bytes, limits, policy)
        return decode_video(data, sampling, limits)
    if isinstance(ref, (list, tuple)):
        return load_frames(ref, sampling=sampling, limits=limits, policy=policy)
    raise MediaError("video must be a URL, a data URI, base64, or a list of frames")


def load_frames(
    refs: Sequence[str],
    *,
    sampling: VideoSampling = DEFAULT_SAMPLING,
    limits: MediaLimits = DEFAULT_LIMITS,
    policy: AddressPolicy = PUBLIC_ONLY,
) -> Video:
    if not refs:
        raise MediaError("video frame list is empty")
    if len(refs) > limits.max_frame_list:
        raise MediaError(f"video frame list has {len(refs)} frames, over the limit of {limits.max_frame_list}")
    chosen = sample_frame_list(len(refs), sampling.max_frames)
    deadline = time.monotonic() + limits.fetch_deadline_s * 2
    budget = sampling.frame_budget(len(chosen) + len(chosen) % sampling.frame_factor) * sampling.headroom
    frames = []
    for position in chosen:
        try:
            image = load_image(refs[position], limits=limits, policy=policy, deadline=deadline)
        except MediaError as exc:
            raise MediaError(f"frame {position}: {exc}") from None
        frames.append(_reduce(image, budget))
    return Video(
        frames=frames,
        fps=sampling.list_fps,
        frame_indices=list(range(len(frames))),
        total_frames=len(frames),
        source="frames",
        meta={"list_positions": chosen},
    )


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
) -> Video:
    """Bytes of a video file -> the sampled frames (RGB), decoded with PyAV under the limits."""
    import av  # imported here: only video requests pay for it

    fmt = sniff_container(data)
    deadline = time.monotonic() + limits.decode_deadline_s
    try:
        total, fps = _probe(av, data, fmt, limits)
        n = num_sampled_frames(total, fps, sampling)
        wanted = sample_indices(total, n)
        budget = sampling.frame_budget(n + n % sampling.frame_factor) * sampling.headroom
        frames, decoded = _decode_frames(av, data, fmt, wanted, budget, limits, deadline)
        if len(frames) < len(wanted):
            # The container's frame count was wrong: sample again from the frames that really exist.
            total = decoded
            if total < 1:
                raise MediaError("video has no decodable frames")
            n = num_sampled_frames(total, fps, sampling)
            wanted = sample_indices(total, n)
            frames, _ = _decode_frames(av, data, fmt, wanted, budget, limits, deadline)
            if len(frames) < len(wanted):
                raise MediaError("video could not be decoded consistently")
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, TypeError, IndexError, MemoryError) as exc:
        raise MediaError(f"could not decode video ({type(exc).__name__})") from exc
    return Video(frames=frames, fps=fps, frame_indices=wanted, total_frames=total, source="file")


def _open(av, data: bytes, fmt: str):
    return av.open(io.BytesIO(data), mode="r", format=fmt, metadata_errors="ignore")


def _probe(av, data: bytes, fmt: str, limits: MediaLimits) -> tuple[int, float]:
    with _open(av, data, fmt) as container:
        if not container.streams.video:
            raise MediaError("no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
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


def _decode_frames(av, data, fmt, wanted, budget, limits, deadline) -> tuple[list[Image.Image], int]:
    """Decode in order, keeping the wanted indices (an index may repeat); returns (frames, frames seen)."""
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
                kept[index] = _reduce(frame.to_image(), budget)
            if index >= last:
                break
            if seen > limits.max_decoded_frames:
                raise MediaError("video has too many frames")
            if time.monotonic() > deadline:
                raise MediaError("video took too long to decode")
    return [kept[i] for i in wanted if i in kept], seen


def _reduce(image: Image.Image, max_pixels: float) -> Image.Image:
    """Integer box reduction of a frame far above what the model will keep (memory bound, not quality)."""
    pixels = image.width * image.height
    if pixels <= max_pixels:
        return image
    factor = math.ceil(math.sqrt(pixels / max_pixels))
    return image.reduce(factor)

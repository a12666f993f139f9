"""Safe media intake: decoding, limits, and the fetch policy (no request ever leaves 127.0.0.1)."""

from __future__ import annotations

import base64
import contextlib
import io
import ipaddress
import struct
import subprocess
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import av
import httpcore
import numpy as np
import pytest
from helpers.media_samples import audio_only, corrupted_copies
from helpers.paths import REPO
from PIL import Image, ImageFile

from deployments import media
from deployments.engines import visual_inputs
from deployments.media import (
    AddressPolicy,
    MediaError,
    MediaLimits,
    VideoSampling,
    decode_image,
    decode_video,
    is_public_address,
    load_frames,
    load_image,
    load_video,
)


# -- helpers -----------------------------------------------------------------------------------------------
def image_bytes(fmt: str = "PNG", size=(40, 30), color=(200, 30, 60), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format=fmt)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares an enormous image (the pixels are never there)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def make_video(seconds: float, rate: int, size=(64, 48), container: str = "mp4", codec: str = "libx264") -> bytes:
    """Frame i is a flat gray of brightness 8 * i (so a decoded frame tells its index)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(int(seconds * rate)):
            frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), min(8 * i, 255), np.uint8), "rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def frame_index(frame: Image.Image) -> int:
    return round(float(np.asarray(frame, dtype=np.float32).mean()) / 8)


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: refusals must happen before connecting."""

    def refuse(self, host, port, *args, **kwargs):
        raise AssertionError(f"a connection was attempted to {host}:{port}")

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", refuse)


# -- images --------------------------------------------------------------------------------------------------
def test_data_uri_and_base64_images():
    png = image_bytes("PNG")
    img = load_image(data_uri(png))
    assert img.mode == "RGB" and img.size == (40, 30) and img.getpixel((0, 0)) == (200, 30, 60)
    jpeg = image_bytes("JPEG", color=(10, 120, 240))
    encoded = base64.b64encode(jpeg).decode()
    wrapped = "\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))  # MIME line breaks
    for ref in (encoded, wrapped, base64.urlsafe_b64encode(jpeg).decode().rstrip("=")):
        out = load_image(ref)
        assert out.size == (40, 30) and np.abs(np.asarray(out, np.int16) - (10, 120, 240)).max() < 8


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_allowed_formats(fmt):
    assert decode_image(image_bytes(fmt)).size == (40, 30)


def test_transparency_goes_onto_white_and_gif_gives_its_first_frame():
    rgba = image_bytes("PNG", color=(255, 0, 0, 0), mode="RGBA")
    assert decode_image(rgba).getpixel((5, 5)) == (255, 255, 255)
    frames = [Image.new("RGB", (20, 20), c) for c in [(250, 0, 0), (0, 0, 250)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    first = decode_image(buf.getvalue()).getpixel((3, 3))
    assert first[0] > 200 and first[2] < 50


def test_refused_images():
    with pytest.raises(MediaError, match="accepted format"):
        decode_image(image_bytes("TIFF"))
    with pytest.raises(MediaError, match="accepted format"):
        decode_image(b"%PDF-1.4 definitely not an image")
    with pytest.raises(MediaError, match="decode"):
        decode_image(image_bytes("PNG", size=(300, 300))[:200])  # truncated
    with pytest.raises(MediaError, match="base64"):
        load_image("data:image/png,rawbytes")
    with pytest.raises(MediaError, match="not an image type"):
        load_image(data_uri(image_bytes(), "text/html"))
    with pytest.raises(MediaError, match="base64"):
        load_image("this is not base64!")
    with pytest.raises(MediaError, match="empty"):
        load_image("  ")


def test_decompression_bomb_is_refused_before_decoding():
    started = time.monotonic()
    for width, height in [(100_000, 100_000), (20_000, 10_000), (7000, 7000)]:
        with pytest.raises(MediaError, match=r"pixel|too large"):
            decode_image(bomb_png(width, height))
    assert time.monotonic() - started < 1.0  # nothing was inflated
    with pytest.raises(MediaError, match="over the 1000-pixel limit"):
        decode_image(image_bytes("PNG", size=(40, 30)), MediaLimits(max_image_pixels=1000))


def test_encoded_size_cap():
    limits = MediaLimits(max_image_bytes=100)
    with pytest.raises(MediaError, match="100-byte limit"):
        load_image(data_uri(image_bytes("PNG", size=(200, 200))), limits=limits)


@pytest.mark.parametrize(
    ("ref", "scheme"),
    [
        ("file:///etc/passwd", "file"),
        ("FILE:///etc/passwd", "file"),
        ("ftp://example.com/a.png", "ftp"),
        ("gopher://example.com/", "gopher"),
        ("C:\\images\\a.png", "c"),
        ("jar:http://example.com/a.jar!/x.png", "jar"),
    ],
)
def test_unsupported_schemes(ref, scheme, no_network):
    with pytest.raises(MediaError, match=f"unsupported URL scheme '{scheme}'"):
        load_image(ref)


# -- the address policy -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("127.8.9.10", False),
        ("10.0.0.1", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # shared address space
        ("169.254.169.254", False),
        ("169.254.170.2", False),
        ("168.63.129.16", False),  # Azure wire server: public, but metadata
        ("100.100.100.200", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("239.255.255.250", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("fd00:ec2::254", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.1.2.3", False),
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
    ],
)
def test_public_address_table(address, public):
    assert is_public_address(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://100.100.100.200/latest/meta-data/",
        "https://192.168.0.10/x.png",
        "http://0.0.0.0/x.png",
        "http://[::ffff:169.254.169.254]/",
        "http://localhost/x.png",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://user:secret@93.184.216.34/x.png",
    ],
)
def test_private_and_metadata_urls_are_refused_without_connecting(url, no_network):
    with pytest.raises(MediaError, match=r"refused|credentials"):
        load_image(url)


# -- fetching from a local test server -----------------------------------------------------------------
PNG = image_bytes("PNG", size=(24, 16), color=(1, 2, 3))


class _Handler(BaseHTTPRequestHandler):
    hits: list[tuple[str, str | None]] = []  # noqa: RUF012 (shared on purpose)

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        _Handler.hits.append((self.path, self.headers.get("Host")))
        port = self.server.server_address[1]
        routes = {
            "/img.png": lambda: self._send(200, PNG, "image/png"),
            "/redirect-ok": lambda: self._redirect("/img.png"),
            "/redirect-abs": lambda: self._redirect(f"http://127.0.0.1:{port}/img.png"),
            "/redirect-localhost": lambda: self._redirect(f"http://localhost:{port}/img.png"),
            "/redirect-loopback": lambda: self._redirect(f"http://127.0.0.2:{port}/img.png"),
            "/redirect-metadata": lambda: self._redirect("http://169.254.169.254/latest/meta-data/"),
            "/redirect-file": lambda: self._redirect("file:///etc/passwd"),
            "/loop": lambda: self._redirect("/loop"),
            "/big": lambda: self._send(200, b"x" * 5000, "image/png"),
            "/big-chunked": self._chunked,
            "/text": lambda: self._send(200, b"<html>hello</html>", "text/html"),
            "/missing": lambda: self._send(404, b"no", "text/plain"),
            "/slow": self._slow,
            "/clip.mp4": lambda: self._send(200, self.server.video, "video/mp4"),
        }
        routes.get(self.path, lambda: self._send(404, b"", "text/plain"))()

    def _send(self, status, body, ctype):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location):
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _chunked(self):
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for _ in range(10):
            self.wfile.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def _slow(self):
        time.sleep(1.0)
        with contextlib.suppress(OSError):  # the client gave up first, as it should
            self._send(200, PNG, "image/png")


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.video = make_video(2, 5)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


class LocalTestPolicy(AddressPolicy):
    """Tests only: the one local test server counts as reachable, and `images.test` resolves to it.
    Every other address still goes through the real policy."""

    def __init__(self, port: int) -> None:
        self.port = port

    def resolve(self, host, port):
        if host == "images.test":
            return [ipaddress.ip_address("127.0.0.1")]
        return super().resolve(host, port)

    def allows(self, ip, port):
        return (str(ip), port) == ("127.0.0.1", self.port) or super().allows(ip, port)

    def allows_port(self, port, allowed):
        return port == self.port or super().allows_port(port, allowed)


def base(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_loopback_urls_are_refused_by_the_real_policy(server):
    _Handler.hits.clear()
    port = server.server_address[1]
    for url in (f"{base(server)}/img.png", f"http://[::1]:{port}/img.png", f"http://127.1:{port}/img.png"):
        with pytest.raises(MediaError, match=r"refused|invalid"):
            load_image(url)
    assert _Handler.hits == []  # nothing reached the server


def test_fetch_through_an_allowed_server(server):
    policy = LocalTestPolicy(server.server_address[1])
    img = load_image(f"{base(server)}/img.png", policy=policy)
    assert img.size == (24, 16) and img.getpixel((0, 0)) == (1, 2, 3)
    for path in ("/redirect-ok", "/redirect-abs"):
        assert load_image(base(server) + path, policy=policy).size == (24, 16)


def test_connection_goes_to_the_checked_address_and_keeps_the_host_name(server):
    port = server.server_address[1]
    _Handler.hits.clear()
    img = load_image(f"http://images.test:{port}/img.png", policy=LocalTestPolicy(port))
    assert img.size == (24, 16)
    assert _Handler.hits == [("/img.png", f"images.test:{port}")]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/redirect-localhost", "refused"),
        ("/redirect-loopback", "refused"),
        ("/redirect-metadata", "refused"),
        ("/redirect-file", "unsupported URL scheme 'file'"),
        ("/loop", "redirects"),
        ("/missing", "HTTP 404"),
        ("/text", "accepted format"),
    ],
)
def test_refused_fetches(server, path, message):
    with pytest.raises(MediaError, match=message):
        load_image(base(server) + path, policy=LocalTestPolicy(server.server_address[1]))


def test_byte_cap_with_and_without_content_length(server):
    limits = MediaLimits(max_image_bytes=2000)
    policy = LocalTestPolicy(server.server_address[1])
    with pytest.raises(MediaError, match="5000 bytes is over the 2000-byte limit"):
        load_image(f"{base(server)}/big", limits=limits, policy=policy)
    with pytest.raises(MediaError, match="over the 2000-byte limit"):
        load_image(f"{base(server)}/big-chunked", limits=limits, policy=policy)


def test_read_timeout(server):
    limits = MediaLimits(read_timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(MediaError, match="timed out"):
        load_image(f"{base(server)}/slow", limits=limits, policy=LocalTestPolicy(server.server_address[1]))
    assert time.monotonic() - started < 0.9


# -- videos ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video(3, 10)  # 30 frames at 10 fps


def test_video_sampled_at_fps(clip):
    video = load_video(data_uri(clip, "video/mp4"))
    # qwen-vl-utils: 3 s at 1 fps -> 3, raised to min_frames 4; indices round(linspace(0, 29, 4))
    assert (video.source, video.fps, video.total_frames) == ("file", 10.0, 30)
    assert video.frame_indices == [0, 10, 19, 29]
    assert [frame_index(f) for f in video.frames] == video.frame_indices
    assert all(f.size == (64, 48) and f.mode == "RGB" for f in video.frames)

    twice = decode_video(clip, VideoSampling(fps=2.0))
    assert twice.frame_indices == [0, 6, 12, 17, 23, 29]
    capped = decode_video(clip, VideoSampling(fps=5.0, max_frames=5))  # 15 wanted, 5 allowed, even -> 4
    assert len(capped.frames) == 4 and capped.frame_indices == [0, 10, 19, 29]


def test_matroska_without_a_frame_count(clip):
    mkv = make_video(2, 8, container="matroska")
    video = decode_video(mkv)
    assert video.total_frames == 16 and video.frame_indices == [0, 5, 10, 15]
    assert [frame_index(f) for f in video.frames] == video.frame_indices


def test_total_pixels_budget_reduces_only_oversized_frames():
    big = make_video(1, 4, size=(640, 480))
    kept = decode_video(big)
    assert all(f.size == (640, 480) for f in kept.frames)  # within 4x the model's per-frame share
    sampling = VideoSampling(total_pixels=20_000, frame_min_pixels=1024, frame_max_pixels=50_000)
    reduced = decode_video(big, sampling)
    budget = sampling.frame_budget(len(reduced.frames)) * sampling.headroom
    assert all(f.width * f.height <= budget for f in reduced.frames)
    assert reduced.frames[0].size == (214, 160)  # box-reduced by 3: 307200 px -> 34240 <= 4 x 10000


def test_refused_videos(clip):
    with pytest.raises(MediaError, match="accepted container"):
        decode_video(b"#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n")  # HLS is never probed
    with pytest.raises(MediaError, match="accepted container"):
        decode_video(image_bytes("PNG"))
    with pytest.raises(MediaError, match="too long"):
        decode_video(clip, limits=MediaLimits(max_video_seconds=2.0))
    with pytest.raises(MediaError, match="pixel limit"):
        decode_video(clip, limits=MediaLimits(max_video_frame_pixels=1000))
    with pytest.raises(MediaError, match="byte limit"):
        load_video(data_uri(clip, "video/mp4"), limits=MediaLimits(max_video_bytes=1000))
    with pytest.raises(MediaError, match="decode"):
        decode_video(clip[: len(clip) // 3])
    with pytest.raises(MediaError, match="not an video type"):
        load_video(data_uri(clip, "image/png"))


def test_video_by_url(server):
    video = load_video(f"{base(server)}/clip.mp4", policy=LocalTestPolicy(server.server_address[1]))
    assert video.total_frames == 10 and len(video.frames) == 4
    with pytest.raises(MediaError, match="refused"):
        load_video(f"{base(server)}/clip.mp4")


def test_frame_lists():
    frames = [data_uri(image_bytes("PNG", color=(8 * i, 8 * i, 8 * i))) for i in range(10)]
    video = load_frames(frames[:3])
    assert (video.source, video.fps, video.frame_indices) == ("frames", 2.0, [0, 1, 2])
    assert [frame_index(f) for f in video.frames] == [0, 1, 2]
    sub = load_video(frames, sampling=VideoSampling(max_frames=4))
    assert [frame_index(f) for f in sub.frames] == [0, 3, 6, 9]  # floor(linspace(0, 9, 4))
    with pytest.raises(MediaError, match="frame 1: "):
        load_frames([frames[0], "not base64 !", frames[2]])
    with pytest.raises(MediaError, match=r"frame 0: .*refused"):
        load_frames(["http://10.1.1.1/f.png"])
    with pytest.raises(MediaError, match="empty"):
        load_frames([])
    with pytest.raises(MediaError, match="over the limit"):
        load_frames(frames, limits=MediaLimits(max_frame_list=5))


def test_sampling_matches_torch_linspace():
    torch = pytest.importorskip("torch")
    for total in (2, 3, 7, 30, 101, 1799):
        for n in range(2, min(total, 64) + 1, 3):
            expected = torch.linspace(0, total - 1, n).round().long().tolist()
            assert media.sample_indices(total, n) == expected


def test_media_intake_loads_neither_torch_nor_ray():
    """The intake runs in the deployment's threads; its data types come from the engines' torch-free module."""
    code = "import sys, deployments.media; print([m for m in ('torch', 'transformers', 'ray') if m in sys.modules])"
    root = REPO
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
    assert media.Video is visual_inputs.Video and media.VideoSampling is visual_inputs.VideoSampling


# -- corrupt files: only ever a MediaError -----------------------------------------------------------------------
@pytest.mark.parametrize("container", ["mp4", "matroska"])
def test_corrupt_videos_only_raise_media_error(container):
    """Truncated, bit-flipped and overwritten copies: a decoder failure is the client's bad input, never a 500
    (damaged MP4 headers used to leave a stream without a codec context: AttributeError)."""
    clip = make_video(1, 4, container=container)
    outcomes = {"decoded": 0, "refused": 0}
    for damaged in corrupted_copies(clip, 240, seed=0):
        try:
            decode_video(damaged)
            outcomes["decoded"] += 1
        except MediaError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0


def test_container_without_a_video_stream():
    with pytest.raises(MediaError, match="no video stream"):
        decode_video(audio_only("matroska"))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_corrupt_images_only_raise_media_error(fmt):
    rng = np.random.RandomState(3)
    noisy = Image.fromarray(rng.randint(0, 255, (24, 32, 3)).astype(np.uint8))
    buf = io.BytesIO()
    noisy.save(buf, format=fmt)
    for damaged in corrupted_copies(buf.getvalue(), 150, seed=1):
        with contextlib.suppress(MediaError):
            decode_image(damaged)


@pytest.mark.parametrize("error", [KeyError("tile"), struct.error("unpack"), ZeroDivisionError(), AttributeError("x")])
def test_any_decoder_exception_is_a_media_error(monkeypatch, error):
    """Whatever Pillow raises on client bytes becomes a MediaError (the caller names the input)."""

    def broken_load(self):
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", broken_load)
    with pytest.raises(MediaError, match=f"could not decode image \\({type(error).__name__}\\)"):
        decode_image(image_bytes("PNG"))

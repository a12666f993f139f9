"""Synthetic pictures, PNG data URIs and MP4 clips for the Qwen3-VL engine and HTTP tests."""

from __future__ import annotations

import base64
import io
import random
import zlib

import av
import numpy as np
from PIL import Image


def picture(height: int, width: int, seed: int) -> Image.Image:
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width]
    channels = [127 + 100 * np.sin(x / (5 + 3 * c + seed % 4) + y / (9 + 2 * c)) for c in range(3)]
    noise = rng.randint(-25, 25, (height, width, 3))
    return Image.fromarray((np.stack(channels, -1) + noise).clip(0, 255).astype(np.uint8))


def png_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def mp4(seconds: int, rate: int, height: int, width: int) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * rate):
            for packet in stream.encode(av.VideoFrame.from_image(picture(height, width, 50 + i))):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def gzip_bomb(inflated_bytes: int, layers: int = 2) -> bytes:
    """Zeros gzipped `layers` times (Content-Encoding: gzip, gzip): 256 MiB fits in well under a kilobyte.

    Built a mebibyte at a time so that the test itself never holds the inflated size.
    """
    inner = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    block = bytes(2**20)
    parts = [inner.compress(block) for _ in range(inflated_bytes // len(block))]
    parts.append(inner.compress(bytes(inflated_bytes % len(block))))
    data = b"".join(parts) + inner.flush()
    for _ in range(layers - 1):
        outer = zlib.compressobj(9, zlib.DEFLATED, 31)
        data = outer.compress(data) + outer.flush()
    return data


def corrupted_copies(data: bytes, count: int, seed: int = 0) -> list[bytes]:
    """Deterministic damaged copies of a file: truncated, bit-flipped, or with random bytes overwritten."""
    rng = random.Random(seed)
    out = []
    for k in range(count):
        copy = bytearray(data)
        if k % 3 == 0:
            copy = copy[: rng.randrange(8, len(copy))]
        elif k % 3 == 1:
            for _ in range(rng.randrange(1, 8)):
                copy[rng.randrange(len(copy))] ^= 1 << rng.randrange(8)
        else:
            for _ in range(rng.randrange(1, 4)):
                copy[rng.randrange(len(copy))] = rng.randrange(256)
        out.append(bytes(copy))
    return out


def audio_only(container: str = "matroska") -> bytes:
    """A valid container holding one second of silence and no video stream."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()

"""Synthetic pictures, PNG data URIs and MP4 clips for the Qwen3-VL engine and HTTP tests."""

from __future__ import annotations

import base64
import io

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

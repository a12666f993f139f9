"""Client media references -> decoded inputs for a multimodal engine, with every failure naming its input.

Client strings (URLs, data URIs, base64) are decoded here by the media package under its address policy and
byte, pixel and frame caps; only decoded images and frames reach the engine.
"""

from __future__ import annotations

from deployments import media
from deployments.engines.visual_inputs import VLItem
from deployments.errors import InvalidRequest


def decode_item(content: dict, where: str, sampling, instruction: str | None = None) -> VLItem:
    """One {text?, image?, video?, instruction?} -> VLItem; a bad image or video is a 400 naming it."""
    images, videos = (), ()
    for kind in ("image", "video"):
        ref = content.get(kind)
        if ref is None:
            continue
        try:
            if kind == "image":
                images = (media.load_image(ref),)
            else:
                videos = (media.load_video(ref, sampling=sampling),)
        except media.MediaError as exc:
            raise InvalidRequest(f"{where}.{kind}: {exc}", param=f"{where}.{kind}", code="invalid_media") from None
    return VLItem(
        text=content.get("text"), images=images, videos=videos, instruction=content.get("instruction") or instruction
    )


def decode_items(items: list[dict], instruction: str | None, engine, param: str) -> list[VLItem]:
    sampling = engine.video_sampling()
    return [decode_item(content, f"{param}[{i}]", sampling, instruction) for i, content in enumerate(items)]

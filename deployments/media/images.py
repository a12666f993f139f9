"""Image references -> RGB images: Pillow under a format allow-list, with the pixel count checked first.

The size is read from the header and refused before any pixel is decoded (decompression bombs); Pillow's own
bomb guard stays on as a second line. Transparent pixels are composited onto white, as qwen-vl-utils does.
"""

from __future__ import annotations

import io

from PIL import Image, ImageFile, UnidentifiedImageError

from deployments.media.addresses import PUBLIC_ONLY, AddressPolicy
from deployments.media.limits import DEFAULT_LIMITS, MediaBudget, MediaError, MediaLimits
from deployments.media.references import reference_bytes

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
    budget: MediaBudget | None = None,
) -> Image.Image:
    """An image reference -> RGB image; with a `budget`, drawn from one request's media allowance."""
    data = reference_bytes(ref, "image", limits.max_image_bytes, limits, policy, deadline, budget)
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
    except Exception as exc:
        # Any failure inside Pillow on client bytes (struct.error, KeyError, ZeroDivisionError, ... on corrupt
        # files) is the client's bad image, never a server error.
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

"""A client's media reference -> bytes: an http(s) URL (fetched), a base64 `data:` URI, or bare base64.

The one place that reads a reference's scheme: any other scheme (`file://`, `ftp://`, ...) is refused here,
so nothing a client sends ever reaches a loader that opens local files or arbitrary URLs.
"""

from __future__ import annotations

import base64
import binascii
import re
import time

from deployments.media.addresses import AddressPolicy
from deployments.media.http_fetch import fetch
from deployments.media.limits import MediaBudget, MediaError, MediaLimits

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_B64_CHARS = re.compile(r"^[A-Za-z0-9+/_\-]*={0,2}$")


def reference_bytes(
    ref: str,
    kind: str,
    max_bytes: int,
    limits: MediaLimits,
    policy: AddressPolicy,
    deadline: float | None = None,
    budget: MediaBudget | None = None,
) -> bytes:
    """The bytes behind `ref` (`kind` is "image" or "video", for messages and the data URI type check).

    With a `budget` (one request's media), the fetch also ends by the request's deadline, and the bytes are
    charged to the request's total.
    """
    if budget is None:
        return _reference_bytes(ref, kind, max_bytes, limits, policy, deadline)
    budget.check()
    if deadline is None:
        deadline = time.monotonic() + limits.fetch_deadline_s
    data = _reference_bytes(ref, kind, budget.cap_bytes(max_bytes), limits, policy, budget.until(deadline))
    budget.take_bytes(len(data))
    return data


def _reference_bytes(
    ref: str,
    kind: str,
    max_bytes: int,
    limits: MediaLimits,
    policy: AddressPolicy,
    deadline: float | None,
) -> bytes:
    """Dispatch on the reference's form: URL (fetched), data URI, or bare base64."""
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

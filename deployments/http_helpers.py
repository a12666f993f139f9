"""HTTP client helpers shared by every client of an embeddings API in this project: the remote backend
(deployments/remote/) and the Python client (serve_app/client); `unasked_encoding` also serves the media
fetcher (deployments/media/http_fetch.py). One copy, so a Retry-After in HTTP-date
form or a malformed base64 row is read the same way everywhere.

The lowest layer: no Ray, no httpx, nothing from serve_app (serve_app may import this, never the reverse).
"""

from __future__ import annotations

import base64
import email.utils
import time
from typing import Any

import numpy as np


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) in seconds; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def unasked_encoding(content_encoding: str | None) -> str | None:
    """The Content-Encoding header of an answer to a request that asked for `identity`, when it names any
    other coding (None when the body is plain). Such a body is refused, never decoded: a few hundred bytes of
    nested gzip inflate to hundreds of MiB before a byte cap on the decoded stream could see them."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    if any(c != "identity" for c in codings):
        return content_encoding.strip()[:60]
    return None


def backoff_seconds(attempt: int, base_s: float = 0.5, cap_s: float = 8.0) -> float:
    """Exponential backoff before retry number `attempt` (0 for the first retry): base, 2 x base, ... capped."""
    return min(cap_s, base_s * 2**attempt)


def decode_rows(data: Any, expected: int, dtype: np.dtype | type = np.float32) -> np.ndarray:
    """The `data` list of an embeddings answer -> [n, dims] in input order. Base64 strings are little-endian
    float32; number lists become `dtype` (the integer types of binary / ubinary / int8 answers).
    ValueError (or binascii.Error) naming what is wrong with the answer."""
    if not isinstance(data, list) or len(data) != expected:
        got = len(data) if isinstance(data, list) else type(data).__name__
        raise ValueError(f"expected {expected} embeddings, got {got}")
    if expected == 0:
        return np.zeros((0, 0), dtype=dtype)
    if all(isinstance(d, dict) and isinstance(d.get("index"), int) for d in data):
        data = sorted(data, key=lambda d: d["index"])
        if [d["index"] for d in data] != list(range(expected)):
            raise ValueError("the embeddings' indices are not 0..n-1")
    rows = []
    for d in data:
        emb = d.get("embedding") if isinstance(d, dict) else None
        if isinstance(emb, str):
            raw = base64.b64decode(emb, validate=True)
            if len(raw) % 4:
                raise ValueError("a base64 embedding is not a whole number of float32 values")
            rows.append(np.frombuffer(raw, dtype="<f4"))
        elif isinstance(emb, list):
            rows.append(np.asarray(emb, dtype=dtype))
        else:
            raise ValueError("an item has no embedding")
    widths = {len(r) for r in rows}
    if len(widths) != 1 or 0 in widths:
        raise ValueError(f"the embeddings have different or zero lengths: {sorted(widths)}")
    stacked = np.stack(rows)
    return stacked.astype(np.float32, copy=False) if stacked.dtype.kind == "f" else stacked

"""Vectors to response bytes without per-float Python work (orjson serializes numpy directly).

Output types (Jina / Cohere semantics):
- float: JSON numbers (float32 values).
- base64: little-endian float32 bytes, base64 (what the OpenAI client decodes).
- binary / ubinary: one bit per dimension (1 where the value > 0), packed 8 per byte, most significant
  bit first; ubinary as unsigned bytes 0..255, binary as signed bytes (unsigned - 128), length dims / 8.
- int8: round(value * 127) clipped to [-128, 127] (meaningful on normalized vectors).
"""

from __future__ import annotations

import base64

import numpy as np
import orjson

_OPTS = orjson.OPT_SERIALIZE_NUMPY


def converted(vectors: np.ndarray, output_type: str):
    if output_type == "float":
        return vectors.astype(np.float32, copy=False)
    if output_type == "base64":
        raw = vectors.astype("<f4", copy=False)
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in raw]
    if output_type in ("binary", "ubinary"):
        packed = np.packbits(vectors > 0, axis=1)
        if output_type == "binary":
            return (packed.astype(np.int16) - 128).astype(np.int8)
        return packed
    if output_type == "int8":
        return np.clip(np.rint(vectors * 127.0), -128, 127).astype(np.int8)
    raise ValueError(f"unknown output type {output_type}")


def _colbert(matrix: np.ndarray, output_type: str):
    if output_type == "base64":
        return base64.b64encode(matrix.astype("<f4", copy=False).tobytes()).decode("ascii")
    return converted(matrix, output_type)


def embeddings_response(
    vectors: np.ndarray,
    output_type: str,
    model: str,
    prompt_tokens: int,
    *,
    dense: bool = True,
    sparse: list[dict] | None = None,
    colbert: list[np.ndarray] | None = None,
) -> bytes:
    n = len(sparse) if sparse is not None else len(colbert) if colbert is not None else len(vectors)
    data: list[dict] = [{"object": "embedding", "index": i} for i in range(n)]
    if dense:
        values = converted(vectors, output_type)
        for i, item in enumerate(data):
            item["embedding"] = values[i]
    if sparse is not None:
        for item, vec in zip(data, sparse, strict=True):
            item["sparse"] = vec
    if colbert is not None:
        for item, matrix in zip(data, colbert, strict=True):
            item["colbert"] = _colbert(matrix, output_type)
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        },
        option=_OPTS,
    )


def dumps(payload) -> bytes:
    return orjson.dumps(payload, option=_OPTS)

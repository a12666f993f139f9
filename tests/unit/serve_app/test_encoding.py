"""Output encodings: float, base64 (OpenAI), binary / ubinary / int8 (Jina / Cohere)."""

from __future__ import annotations

import base64

import numpy as np
import orjson

from serve_app.ingress.encoding import embeddings_response


def _decode(vectors, kind):
    return orjson.loads(embeddings_response(vectors, kind, "m", 7))


def test_float_and_usage():
    v = np.array([[0.5, -0.25, 0.0]], dtype=np.float32)
    out = _decode(v, "float")
    assert out["data"][0] == {"object": "embedding", "index": 0, "embedding": [0.5, -0.25, 0.0]}
    assert out["usage"] == {"prompt_tokens": 7, "total_tokens": 7} and out["object"] == "list"


def test_base64_is_little_endian_float32():
    v = np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32)
    out = _decode(v, "base64")
    for i, item in enumerate(out["data"]):
        back = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
        np.testing.assert_array_equal(back, v[i])


def test_binary_packing():
    v = np.array([[1, -1, 1, 1, -1, -1, -1, 1, 0.5, -0.5]], dtype=np.float32)
    ubin = _decode(v, "ubinary")["data"][0]["embedding"]
    assert ubin == [0b10110001, 0b10000000]
    assert _decode(v, "binary")["data"][0]["embedding"] == [ubin[0] - 128, ubin[1] - 128]


def test_int8_scaling():
    v = np.array([[1.0, -1.0, 0.5, 0.0, -0.004]], dtype=np.float32)
    assert _decode(v, "int8")["data"][0]["embedding"] == [127, -127, 64, 0, -1]

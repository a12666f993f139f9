"""A fake OpenAI-compatible remote: deterministic per-text vectors and the /v1/embeddings answer built from them.

Shared by the RemoteEmbedder unit tests (httpx.MockTransport) and the flaky http.server of the integration tests.
"""

from __future__ import annotations

import base64

import httpx
import numpy as np


def text_vector(text: str, dims: int = 8) -> np.ndarray:
    rng = np.random.default_rng(sum(text.encode()))
    v = rng.standard_normal(dims).astype(np.float32)
    return v / np.linalg.norm(v)


def embeddings_response(body: dict, *, b64: bool = True, dims: int = 8, honour_dims: bool = False) -> httpx.Response:
    n = body.get("dimensions") if honour_dims and body.get("dimensions") else dims
    data = []
    for i, text in enumerate(body["input"]):
        v = text_vector(text, dims)[:n]
        v = v / np.linalg.norm(v)
        emb = base64.b64encode(v.astype("<f4").tobytes()).decode() if b64 else v.tolist()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = sum(len(t.split()) + 2 for t in body["input"])
    return httpx.Response(
        200, json={"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": tokens}}
    )

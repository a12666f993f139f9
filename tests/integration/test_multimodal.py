"""Qwen3-VL models over HTTP: text, image, video and mixed inputs; hostile media refused per input."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
from helpers.media_samples import mp4, picture, png_uri

from deployments import media
from deployments.engines.postprocess import finalize_rows, relevance
from deployments.engines.qwen3_vl import Qwen3VLEmbeddingEngine, Qwen3VLRerankerEngine, VLItem

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engines(tiny_vl):
    return Qwen3VLEmbeddingEngine(str(tiny_vl), max_tokens=4096), Qwen3VLRerankerEngine(str(tiny_vl), max_tokens=4096)


def _embed(base, payload):
    return httpx.post(base + "/v1/embeddings", json={"model": "tiny-vl-embedding", **payload}, timeout=120)


def test_text_image_video_and_mixed_match_the_engine(serve_app, engines):
    embedder, _ = engines
    photo, frames = picture(90, 120, 1), [picture(60, 84, 10 + i) for i in range(4)]
    clip = mp4(3, 10, 48, 64)
    clip_uri = "data:video/mp4;base64," + base64.b64encode(clip).decode()
    inputs = [
        "a plain text input",
        {"image": png_uri(photo)},
        {"text": "a photo of waves", "image": base64.b64encode(_png_bytes(photo)).decode()},  # bare base64
        {"video": [png_uri(f) for f in frames]},
        {"video": clip_uri, "text": "a clip", "instruction": "Find the clip"},
    ]
    resp = _embed(serve_app["base_url"], {"input": inputs, "task": "retrieval.query"})
    assert resp.status_code == 200, resp.text[:500]
    body = resp.json()
    sampling = embedder.video_sampling()
    query = "Given a search query, retrieve relevant documents or passages that directly answer or address the query"
    reference_items = [
        VLItem(text="a plain text input", instruction=query),
        VLItem(images=(photo,), instruction=query),
        VLItem(text="a photo of waves", images=(photo,), instruction=query),
        VLItem(videos=(media.load_frames([png_uri(f) for f in frames], sampling=sampling),), instruction=query),
        VLItem(text="a clip", videos=(media.decode_video(clip, sampling),), instruction="Find the clip"),
    ]
    prepared = [embedder.prepare_item(item) for item in reference_items]
    expected = finalize_rows(embedder.embed(prepared), None, True)
    for got, want in zip(body["data"], expected, strict=True):
        np.testing.assert_allclose(got["embedding"], want, atol=1e-4)
    assert body["usage"]["prompt_tokens"] == sum(p.num_tokens for p in prepared)
    small = _embed(serve_app["base_url"], {"input": [{"image": png_uri(photo)}], "dimensions": 16}).json()
    assert len(small["data"][0]["embedding"]) == 16


def _png_bytes(img) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_vl_reranker_with_image_documents(serve_app, engines):
    _, reranker = engines
    docs = [{"text": "a red square"}, {"image": png_uri(picture(64, 64, 3))}, "plain text document"]
    resp = httpx.post(
        serve_app["base_url"] + "/v1/rerank",
        json={"model": "tiny-vl-reranker", "query": {"text": "find the picture"}, "documents": docs},
        timeout=120,
    )
    assert resp.status_code == 200, resp.text[:500]
    side = reranker.prepare_side(VLItem(text="find the picture"))
    items = [
        VLItem(text="a red square"),
        VLItem(images=(media.load_image(docs[1]["image"]),)),
        VLItem(text="plain text document"),
    ]
    expected = relevance(reranker.score([reranker.prepare_pair(side, it, None, True) for it in items]))
    got = {r["index"]: r["relevance_score"] for r in resp.json()["results"]}
    assert got == pytest.approx({i: float(v) for i, v in enumerate(expected)}, abs=1e-4)
    assert resp.json()["results"][0]["document"] == docs[resp.json()["results"][0]["index"]] or isinstance(
        docs[resp.json()["results"][0]["index"]], str
    )


def _bomb_uri() -> str:
    """A PNG whose header declares 30000 x 30000 pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    raw = zlib.compress(b"\0" * 1000)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(png).decode()


@pytest.mark.parametrize(
    "image",
    [
        "http://127.0.0.1:9/cat.png",
        "http://10.0.0.1/cat.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x.png",
        "file:///etc/passwd",
        "ftp://example.com/x.png",
        "not base64 at all!!",
        "data:image/png;base64," + base64.b64encode(b"not an image").decode(),
        "BOMB",
    ],
)
def test_hostile_media_is_refused_and_others_still_served(serve_app, image):
    image = _bomb_uri() if image == "BOMB" else image
    resp = _embed(serve_app["base_url"], {"input": ["fine", {"text": "x", "image": image}]})
    assert resp.status_code == 400, resp.text[:300]
    error = resp.json()["error"]
    assert error["param"] == "input[1].image" and error["message"].startswith("input[1].image")
    ok = _embed(serve_app["base_url"], {"input": ["still serving"]})
    assert ok.status_code == 200


def test_modalities_are_enforced(serve_app):
    resp = httpx.post(
        serve_app["base_url"] + "/v1/embeddings",
        json={"model": "all-minilm-l6-v2", "input": [{"text": "x", "image": png_uri(picture(20, 20, 1))}]},
    )
    assert resp.status_code == 400 and "takes text only" in resp.json()["error"]["message"]
    resp = httpx.post(
        serve_app["base_url"] + "/v1/rerank",
        json={"model": "tiny-cross-encoder", "query": "q", "documents": [{"image": png_uri(picture(20, 20, 1))}]},
    )
    assert resp.status_code == 400 and "text only" in resp.json()["error"]["message"]
    models = {m["id"]: m for m in httpx.get(serve_app["base_url"] + "/v1/models").json()["data"]}
    assert models["tiny-vl-embedding"]["modalities"] == ["text", "image", "video"]
    assert models["tiny-vl-embedding"]["fallback"] == "tiny-qwen3-embedding"

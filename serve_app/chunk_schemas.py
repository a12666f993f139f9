"""Wire shapes of `POST /v1/chunk` (semantic chunking), to be merged into schemas.py.

The router splits `input` into sentences (serve_app/chunking.py), embeds them with `model` to find where
the topic shifts, groups them into chunks of at most `max_chunk_tokens`, and, when asked, embeds each
chunk with `embedding_model` (separately, or with late chunking: the whole document encoded once and
each chunk pooled over its own tokens).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from serve_app.chunking import DEFAULT_PERCENTILE, DEFAULT_THRESHOLD
from serve_app.schemas import Usage, _Wire


class ChunkRequest(_Wire):
    model: str = Field(description="the model whose sentence embeddings decide where chunks break")
    input: str = Field(description="the document to chunk")
    method: Literal["percentile", "threshold"] = Field(
        "percentile",
        description="break where adjacent-sentence cosine similarity is below `threshold`, or below the "
        "`percentile`-th percentile of this document's similarities",
    )
    threshold: float = Field(DEFAULT_THRESHOLD, ge=-1.0, le=1.0, description="cosine cut-off for method=threshold")
    percentile: float = Field(DEFAULT_PERCENTILE, ge=0.0, le=100.0, description="for method=percentile")
    max_chunk_tokens: int | None = Field(
        None, ge=1, description="most tokens in one chunk (default: the embedding model's limit)"
    )
    return_embeddings: bool = Field(False, description="give each chunk's embedding")
    embedding_model: str | None = Field(None, description="the model that embeds the chunks (default: `model`)")
    late_chunking: bool = Field(
        False, description="embed the chunks by late chunking (models that support it; needs return_embeddings)"
    )


class ChunkObject(BaseModel):
    object: Literal["chunk"] = "chunk"
    index: int
    text: str = Field(description="input[start:end], exactly")
    start: int = Field(description="offset of the first character in `input` (Unicode code points)")
    end: int = Field(description="offset just past the last character")
    tokens: int = Field(description="tokens of the chunk's text in the embedding model's tokenizer")
    oversized: bool = Field(False, description="one sentence longer than max_chunk_tokens, kept whole")
    embedding: list[float] | None = Field(None, description="with return_embeddings")


class ChunkResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    chunks: list[ChunkObject]
    usage: Usage

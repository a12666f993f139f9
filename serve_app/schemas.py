"""Every HTTP wire shape of the service, in one place (requests, responses, errors)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, model_validator
from pydantic_core import PydanticCustomError

from serve_app.chunking import DEFAULT_PERCENTILE, DEFAULT_THRESHOLD

_SURROGATE = re.compile("[\ud800-\udfff]")


def _unicode_text(value: str) -> str:
    """JSON may escape a lone surrogate (`"\\udcff"`); it is not Unicode text and no tokenizer can take it."""
    if not value.isascii():
        bad = _SURROGATE.search(value)
        if bad is not None:
            raise PydanticCustomError(
                "invalid_text",
                f"contains a lone surrogate (U+{ord(bad.group()):04X} at character {bad.start()}), which is not "
                "Unicode text; send valid UTF-8",
            )
    return value


Text = Annotated[str, AfterValidator(_unicode_text)]
"""Every text field a client sends: any Unicode (NUL, bidi controls, non-characters, 4-byte characters) but
no lone surrogates; those are refused with a 400 naming the field."""

TokenId = Annotated[int, Strict()]
"""A token id a client sends: a JSON integer (no bool, float or numeric string); its range is the model's."""


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


# ---- errors ---------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# ---- multimodal content ---------------------------------------------------------------------------
class ContentItem(BaseModel):
    """One input or rerank side: any of text, an image and a video, plus an optional instruction.

    image: an http(s) URL, a data URI or bare base64. video: a URL or data URI of a video file, or a list
    of frames (each an image reference). Only Qwen3-VL models take image / video.
    """

    model_config = ConfigDict(extra="ignore")

    text: Text | None = None
    image: Text | None = None
    video: Text | list[Text] | None = None
    instruction: Text | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> ContentItem:
        if self.text is None and self.image is None and self.video is None:
            raise ValueError("give at least one of text, image, video")
        return self

    @property
    def has_media(self) -> bool:
        return self.image is not None or self.video is not None


# ---- embeddings -----------------------------------------------------------------------------------
PRIORITY_DOC = (
    '"interactive" (a user waits: ahead in the model\'s queue) or "bulk" (indexing: keeps a share of every '
    "batch); default: the X-Priority header, else the API key's default, else interactive"
)
EmbeddingType = Literal["float", "base64", "binary", "ubinary", "int8"]


class EmbeddingRequest(_Wire):
    """OpenAI `/v1/embeddings`, plus the Jina-style fields of the product seed."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())  # unknown OpenAI fields are harmless

    model: Text
    input: Text | list[Text | ContentItem] | list[TokenId] | list[list[TokenId]] = Field(
        description="one text, or a list of texts and content objects {text?, image?, video?, instruction?}; "
        "or the model's own token ids: one list of ids, or a list of such lists (text models only)"
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, description="matryoshka output size; cut then re-normalized")
    user: Text | None = None
    task: Text | None = Field(None, description="task name; instruction-aware models prepend its instruction")
    prompt_name: Text | None = Field(None, description="a custom instruction (or a task name)")
    truncate: bool = Field(False, description="cut inputs longer than the model's limit instead of refusing")
    truncation_direction: Literal["left", "right"] = "right"
    late_chunking: bool = Field(False, description="inputs are consecutive chunks of one document")
    normalized: bool = Field(True, description="L2-normalize the output vectors")
    embedding_type: EmbeddingType | None = Field(None, description="Jina/Cohere output type; overrides encoding_format")
    output: list[Literal["dense", "sparse", "colbert"]] | None = Field(
        None, description='BGE-M3: any of "dense" (default), "sparse", "colbert"'
    )
    return_sparse_tokens: bool = Field(False, description="add the token strings to each sparse vector")
    priority: Text | None = Field(None, description=PRIORITY_DOC, examples=["interactive", "bulk"])


class SparseEmbedding(BaseModel):
    indices: list[int]
    values: list[float]
    tokens: list[str] | None = None


class EmbeddingObject(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | list[int] | str | None = None
    sparse: SparseEmbedding | None = None
    colbert: list[list[float]] | list[list[int]] | str | None = Field(
        None, description="one row per token (CLS dropped); base64: the row-major float32 matrix"
    )


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingObject]
    model: str
    usage: Usage


# ---- rerank ---------------------------------------------------------------------------------------
class RerankRequest(_Wire):
    """Jina / Cohere v1 `/v1/rerank`."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: Text
    query: Text | ContentItem
    documents: list[Text | ContentItem]
    top_n: int | None = Field(None, description="return only the best n (default: all)")
    return_documents: bool = Field(True, description="include each document's text in the results")
    instruction: Text | None = Field(None, description="task instruction for instruction-aware rerankers")
    max_tokens_per_doc: int | None = Field(None, description="cut each document to this many tokens first")
    raw_scores: bool = Field(False, description="raw logits instead of [0, 1] relevance")
    priority: Text | None = Field(None, description=PRIORITY_DOC, examples=["interactive", "bulk"])


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, Any] | None = Field(None, description="the document as sent: {text} (and image / video)")


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    usage: RerankUsage
    meta: dict[str, Any] | None = None


class CohereRerankRequest(_Wire):
    """Cohere v2 `/v2/rerank` (what `cohere.ClientV2(...).rerank(...)` sends)."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: Text
    query: Text
    documents: list[Text | ContentItem]
    top_n: int | None = None
    max_tokens_per_doc: int | None = None


class CohereRerankResult(BaseModel):
    index: int
    relevance_score: float


class CohereRerankResponse(BaseModel):
    id: str
    results: list[CohereRerankResult]
    meta: dict[str, Any]


# ---- semantic chunking (/v1/chunk) ----------------------------------------------------------------
# The router splits `input` into sentences (serve_app/chunking.py), embeds them with `model` to find where
# the topic shifts, groups them into chunks of at most `max_chunk_tokens`, and, when asked, embeds each
# chunk with `embedding_model` (separately, or by late chunking).
class ChunkRequest(_Wire):
    model: Text = Field(description="the model whose sentence embeddings decide where chunks break")
    input: Text = Field(description="the document to chunk")
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
    embedding_model: Text | None = Field(None, description="the model that embeds the chunks (default: `model`)")
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


# ---- tokenize ---------------------------------------------------------------------------------------
class TokenizeRequest(_Wire):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: Text
    input: Text | list[Text]
    task: Text | None = Field(None, description="count the instruction too, as /v1/embeddings would send it")
    prompt_name: Text | None = None
    return_ids: bool = Field(True, description="include the token ids")


class TokenizeItem(BaseModel):
    index: int
    count: int
    ids: list[int] | None = None


class TokenizeResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    max_tokens: int | None
    data: list[TokenizeItem]
    usage: Usage


# ---- models ---------------------------------------------------------------------------------------
class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "embedserve"
    kind: str
    family: str
    max_tokens: int | None
    dimensions: int | None
    dimension_range: list[int] | None = Field(None, description="[min, max] accepted by `dimensions`")
    default_dimensions: int | None
    tasks: list[str]
    instruction_aware: bool
    late_chunking: bool
    modalities: list[str]
    outputs: list[str] = Field(default_factory=lambda: ["dense"])
    rerank: str | None = Field(None, description="how the model answers /v1/rerank")
    fallback: str | None = None
    state: str | None = Field(
        None,
        description="running, starting, waiting_for_resources, unhealthy, failed, scaled_to_zero or unknown",
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: str
    models: dict[str, Any] | None = None


# ---- TEI (text-embeddings-inference) dialect: /embed, /rerank, /tokenize, ... and /tei/<model>/... -----------
# TEI's shapes (router/src/http/types.rs). Unknown fields are ignored, as TEI's serde does.
TeiInputs = Text | list[TokenId] | list[Text] | list[list[TokenId]]
TeiTruncationDirection = Literal["left", "right", "Left", "Right"]


class _Tei(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class TeiEmbedRequest(_Tei):
    inputs: TeiInputs = Field(description="a text, a list of texts, token ids or a list of token-id lists")
    truncate: bool | None = Field(None, description="cut inputs over the model's limit (default false: refused)")
    truncation_direction: TeiTruncationDirection = "right"
    prompt_name: Text | None = Field(None, description="a task name or an instruction (instruction-aware models)")
    normalize: bool = True
    dimensions: int | None = None


class TeiEmbedSparseRequest(_Tei):
    inputs: TeiInputs
    truncate: bool | None = None
    truncation_direction: TeiTruncationDirection = "right"
    prompt_name: Text | None = None


class TeiEmbedAllRequest(TeiEmbedSparseRequest):
    pass


class TeiRerankRequest(_Tei):
    query: Text
    texts: list[Text]
    truncate: bool | None = None
    truncation_direction: TeiTruncationDirection = "right"
    raw_scores: bool = False
    return_text: bool = False


class TeiTokenizeRequest(_Tei):
    inputs: Text | list[Text]
    add_special_tokens: bool = True
    prompt_name: Text | None = None


class TeiDecodeRequest(_Tei):
    ids: list[TokenId] | list[list[TokenId]]
    skip_special_tokens: bool = True


class TeiError(BaseModel):
    """TEI's error body: error_type is one of Unhealthy, Backend, Overloaded, Validation, Tokenizer, Empty."""

    error: str
    error_type: str


# ---- Cohere embed v2 (/v2/embed) ---------------------------------------------------------------------------
CohereInputType = Literal["search_document", "search_query", "classification", "clustering", "image"]
CohereEmbeddingType = Literal["float", "int8", "uint8", "binary", "ubinary", "base64"]


class CohereImageUrl(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: Text


class CohereContent(BaseModel):
    """One part of a mixed input: {"type": "text", "text"} or {"type": "image_url", "image_url": {"url"}}."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "image_url"]
    text: Text | None = None
    image_url: CohereImageUrl | Text | None = None


class CohereInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    content: list[CohereContent]


class CohereEmbedRequest(_Wire):
    """Cohere v2 `/v2/embed` (what `cohere.ClientV2(...).embed(...)` sends): one of texts, images, inputs."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: Text
    input_type: CohereInputType | None = Field(
        None, description="search_query, search_document, classification, clustering or image: the task"
    )
    texts: list[Text] | None = None
    images: list[Text] | None = Field(None, description="data URIs (or http(s) URLs) of images")
    inputs: list[CohereInput] | None = Field(None, description="mixed inputs: text and image parts")
    embedding_types: list[CohereEmbeddingType] | None = Field(None, description="default: float")
    output_dimension: int | None = None
    max_tokens: int | None = None
    truncate: Literal["NONE", "START", "END"] | None = Field(None, description="default END")
    priority: int | None = Field(
        None, description="Cohere's: lower is handled earlier; 0 (the default) the interactive lane, above 0 bulk"
    )


class CohereEmbedResponse(BaseModel):
    id: str
    response_type: Literal["embeddings_by_type"] = "embeddings_by_type"
    embeddings: dict[str, list[list[float]] | list[list[int]] | list[str]]
    texts: list[str] | None = None
    meta: dict[str, Any]

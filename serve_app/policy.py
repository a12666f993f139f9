"""What each model may be asked, and the exact text it is sent: tasks, instructions, late chunking,
truncation, dimensions and request limits. Pure functions of (model spec, request): no Ray, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from serve_app.config import Limits, ModelSpec
from serve_app.errors import ServiceError, bad_request, too_large
from serve_app.protocol import EmbedCall, RerankCall
from serve_app.schemas import EmbeddingRequest, TextDocument

# The user guide seed's task table, word for word. `*.passage` tasks add no instruction.
TASK_INSTRUCTIONS: dict[str, str | None] = {
    "retrieval.query": "Given a search query, retrieve relevant documents or passages that directly answer or "
    "address the query",
    "retrieval.passage": None,
    "text-matching": "Represent this text for finding semantically similar texts",
    "classification": "Represent this text for classification",
    "separation": "Represent this text for clustering",
    "clustering": "Represent this text for clustering",
    "code.query": "Given a natural language description, retrieve relevant code snippets or implementations",
    "code.passage": None,
    "scientific.query": "Given a scientific question, retrieve relevant research papers or scientific information",
    "qa.query": "Given a question, retrieve passages that contain the answer to the question",
    "bitext": "Represent this text for finding its translation in another language",
    "summarization.query": "Given a summary, retrieve the original document that matches this summary",
}

QWEN3_INSTRUCTION_FAMILIES = {"qwen3-embedding"}

BGE_M3_LATE_CHUNKING = (
    "Model {model} does not support late_chunking. BGE-M3's architecture causes embedding space collapse when "
    "late chunking is applied. Use jina-embeddings-v4 or voyage-context-3 for contextual embeddings."
)
QWEN3_LATE_CHUNKING = (
    "late_chunking is not supported for {model}. Qwen3 models use last-token pooling, which is incompatible "
    "with late chunking. Use jina-embeddings-v3 or jina-embeddings-v4 for late chunking support."
)


@dataclass(slots=True)
class EmbeddingPlan:
    call: EmbedCall
    output_type: str  # float | base64 | binary | ubinary | int8


def qwen3_query(instruction: str, text: str) -> str:
    """Qwen3-Embedding's official query template (no space after `Query:`, unlike the seed's example)."""
    return f"Instruct: {instruction}\nQuery:{text}"


def resolve_instruction(spec: ModelSpec, task: str | None, prompt_name: str | None) -> str | None:
    """The instruction a request asks for, or None; 400 when the model takes none or the task is unknown."""
    if task is None and prompt_name is None:
        return None
    if not spec.instruction_aware:
        field = "task" if task is not None else "prompt_name"
        raise bad_request(
            f"Model {spec.name} does not support task instructions: it takes no `task` or `prompt_name`.",
            param=field,
            code="unsupported_parameter",
        )
    if task is not None and prompt_name is not None:
        raise bad_request("Give either `task` or `prompt_name`, not both.", param="prompt_name")
    if task is not None:
        allowed = spec.tasks or list(TASK_INSTRUCTIONS)
        if task not in allowed or task not in TASK_INSTRUCTIONS:
            raise bad_request(
                f"Unknown task '{task}' for model {spec.name}. Supported tasks: {', '.join(allowed)}.",
                param="task",
            )
        return TASK_INSTRUCTIONS[task]
    assert prompt_name is not None
    if not prompt_name.strip():
        raise bad_request("`prompt_name` must not be empty.", param="prompt_name")
    # A task name given as prompt_name means that task (sentence-transformers habit); anything else is raw.
    if prompt_name in TASK_INSTRUCTIONS:
        return TASK_INSTRUCTIONS[prompt_name]
    return prompt_name


def late_chunking_refusal(spec: ModelSpec) -> str | None:
    if spec.late_chunking:
        return None
    if spec.family in ("qwen3-embedding", "qwen3-vl-embedding"):
        return QWEN3_LATE_CHUNKING.format(model=spec.name)
    if spec.name.startswith("bge-m3"):
        return BGE_M3_LATE_CHUNKING.format(model=spec.name)
    return (
        f"late_chunking is not supported for {spec.name}: it needs a mean-pooling model "
        f"(this one pools with '{spec.pooling or 'its own rule'}')."
    )


def check_dimensions(spec: ModelSpec, requested: int | None) -> int | None:
    """The output size to cut to (None: native), validated against the model's matryoshka range."""
    dims = requested if requested is not None else spec.default_dimensions
    if dims is None:
        return None
    allowed = spec.dimension_range()
    if allowed is not None and not allowed[0] <= dims <= allowed[1]:
        lo, hi = allowed
        what = f"between {lo} and {hi}" if lo != hi else f"{hi} (the model has no matryoshka training)"
        raise bad_request(f"dimensions={dims} is not supported by {spec.name}: it must be {what}.", param="dimensions")
    if dims < 1:
        raise bad_request("dimensions must be a positive integer.", param="dimensions")
    return None if dims == spec.dimensions else dims


def check_texts(texts: list[str], limits: Limits, param: str = "input") -> None:
    if not texts:
        raise bad_request(f"`{param}` must not be empty.", param=param, code="empty_input")
    if len(texts) > limits.max_inputs_per_request:
        raise too_large(
            f"{len(texts)} inputs in one request; the limit is {limits.max_inputs_per_request} "
            "(max_inputs_per_request).",
            param=param,
        )
    for i, text in enumerate(texts):
        if not text or not text.strip():
            raise bad_request(f"{param}[{i}] is empty.", param=f"{param}[{i}]", code="empty_input")
        if len(text) > limits.max_chars_per_input:
            raise too_large(
                f"{param}[{i}] has {len(text)} characters; the limit is {limits.max_chars_per_input} "
                "(max_chars_per_input).",
                param=f"{param}[{i}]",
            )


def plan_embedding(spec: ModelSpec, req: EmbeddingRequest, limits: Limits) -> EmbeddingPlan:
    if spec.kind != "embedding":
        raise bad_request(
            f"Model {spec.name} is a {spec.kind} model; use /v1/rerank.", param="model", code="wrong_model_kind"
        )
    texts = [req.input] if isinstance(req.input, str) else list(req.input)
    check_texts(texts, limits)
    if "text" not in spec.modalities:
        raise bad_request(f"Model {spec.name} does not take text input.", param="input")

    instruction = resolve_instruction(spec, req.task, req.prompt_name)
    if req.late_chunking:
        refusal = late_chunking_refusal(spec)
        if refusal:
            raise ServiceError(refusal, status=400, param="late_chunking", code="unsupported_parameter")
        if instruction:
            raise bad_request("late_chunking does not take an instruction.", param="late_chunking")
    if instruction and spec.family in QWEN3_INSTRUCTION_FAMILIES:
        texts = [qwen3_query(instruction, t) for t in texts]

    dims = check_dimensions(spec, req.dimensions)
    output_type = req.embedding_type or req.encoding_format
    call = EmbedCall(
        texts=texts,
        truncate=req.truncate,
        truncation_direction=req.truncation_direction,
        dimensions=dims,
        normalize=req.normalized,
        late_chunking=req.late_chunking,
    )
    return EmbeddingPlan(call=call, output_type=output_type)


# ---- rerank -----------------------------------------------------------------------------------------
RERANK_FAMILIES_WITH_INSTRUCTION = {"qwen3-reranker", "qwen3-vl-reranker"}


@dataclass(slots=True)
class RerankPlan:
    """Either a cross-encoder call, or (for embedding models) one embed call: query first, then documents."""

    documents: list[str]
    top_n: int
    rerank: RerankCall | None = None
    embed: EmbedCall | None = None


def _text(item: str | TextDocument) -> str:
    return item if isinstance(item, str) else item.text


def plan_rerank(
    spec: ModelSpec,
    *,
    query: str | TextDocument,
    documents: list[str | TextDocument],
    top_n: int | None,
    limits: Limits,
    instruction: str | None = None,
    max_tokens_per_doc: int | None = None,
    raw_scores: bool = False,
) -> RerankPlan:
    query_text = _text(query)
    if not query_text or not query_text.strip():
        raise bad_request("`query` must not be empty.", param="query", code="empty_input")
    if len(query_text) > limits.max_chars_per_input:
        raise too_large(
            f"query has {len(query_text)} characters; the limit is {limits.max_chars_per_input} (max_chars_per_input).",
            param="query",
        )
    docs = [_text(d) for d in documents]
    if not docs:
        raise bad_request("`documents` must not be empty.", param="documents", code="empty_input")
    if len(docs) > limits.max_documents_per_request:
        raise too_large(
            f"{len(docs)} documents in one request; the limit is {limits.max_documents_per_request} "
            "(max_documents_per_request).",
            param="documents",
        )
    for i, doc in enumerate(docs):
        if not doc or not doc.strip():
            raise bad_request(f"documents[{i}] is empty.", param=f"documents[{i}]", code="empty_input")
        if len(doc) > limits.max_chars_per_input:
            raise too_large(
                f"documents[{i}] has {len(doc)} characters; the limit is {limits.max_chars_per_input} "
                "(max_chars_per_input).",
                param=f"documents[{i}]",
            )
    if top_n is not None and top_n < 1:
        raise bad_request(f"top_n must be at least 1 (got {top_n}).", param="top_n")
    if max_tokens_per_doc is not None and max_tokens_per_doc < 1:
        raise bad_request(
            f"max_tokens_per_doc must be at least 1 (got {max_tokens_per_doc}).", param="max_tokens_per_doc"
        )
    n = len(docs) if top_n is None else min(top_n, len(docs))

    if spec.kind == "rerank":
        if instruction is not None and spec.family not in RERANK_FAMILIES_WITH_INSTRUCTION:
            raise bad_request(
                f"Model {spec.name} does not take an instruction.", param="instruction", code="unsupported_parameter"
            )
        call = RerankCall(
            query=query_text,
            documents=docs,
            instruction=instruction,
            max_tokens_per_doc=max_tokens_per_doc,
            raw_scores=raw_scores,
        )
        return RerankPlan(documents=docs, top_n=n, rerank=call)

    # An embedding model reranks by cosine similarity; instruction-aware ones embed the query as a query.
    if raw_scores:
        raise bad_request(f"Model {spec.name} reranks by cosine similarity: it has no raw scores.", param="raw_scores")
    if max_tokens_per_doc is not None:
        raise bad_request(
            f"max_tokens_per_doc is only supported by reranker models, not {spec.name}.", param="max_tokens_per_doc"
        )
    if instruction is not None and not spec.instruction_aware:
        raise bad_request(
            f"Model {spec.name} does not take an instruction.", param="instruction", code="unsupported_parameter"
        )
    if spec.instruction_aware and spec.family in QWEN3_INSTRUCTION_FAMILIES:
        query_text = qwen3_query(instruction or TASK_INSTRUCTIONS["retrieval.query"], query_text)
    return RerankPlan(documents=docs, top_n=n, embed=EmbedCall(texts=[query_text, *docs], truncate=True))

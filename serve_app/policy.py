"""What each model may be asked, and the exact text it is sent: tasks, instructions, late chunking,
truncation, dimensions and request limits. Pure functions of (model spec, request): no Ray, no torch.

Every family-specific answer comes from the spec and its family's registry entry (deployments/families.py):
which tasks, how an instruction reaches the model, which modalities and outputs, and the refusal texts.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployments.calls import EmbedCall, RerankCall
from deployments.errors import (
    DeadlineExceeded,
    InferenceFailed,
    InvalidRequest,
    ServiceError,
    TooLarge,
    Unavailable,
    UpstreamFailed,
)
from deployments.families import TASK_INSTRUCTIONS
from deployments.spec import ModelSpec
from serve_app.config import Limits
from serve_app.schemas import ContentItem, EmbeddingRequest


@dataclass(slots=True)
class EmbeddingPlan:
    call: EmbedCall
    output_type: str  # float | base64 | binary | ubinary | int8


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def too_large(message: str, param: str | None = None) -> TooLarge:
    return TooLarge(message, param=param)


def with_instruction(spec: ModelSpec, instruction: str | None, text: str) -> str:
    """The input text as the model must see it: rewritten by the family's query template when the family
    carries instructions in the text (Qwen3-Embedding), unchanged otherwise."""
    template = spec.recipe.query_template
    if instruction and template and spec.recipe.instruction_style == "text-template":
        return template.format(instruction=instruction, text=text)
    return text


def resolve_adapter_task(spec: ModelSpec, task: str | None, prompt_name: str | None) -> str | None:
    """Task-adapter families (jina-embeddings-v3/v4): a task picks one of the model's adapters; `prompt_name` may
    name a task, but there is no custom instruction to send (the user guide's matrix: adapters, no instructions).

    The transformers-style pair of jina-embeddings-v4 (`task="retrieval", prompt_name="passage"`) names the task
    `retrieval.passage`; an adapter named alone (`task="retrieval"`) takes the query prompt, as the official
    `encode_text` does (its prompt_name defaults to "query"); text-matching has one prompt for both roles."""
    if task is not None and prompt_name is not None:
        if f"{task}.{prompt_name}" in spec.tasks:
            return f"{task}.{prompt_name}"
        if task in spec.tasks and prompt_name in ("query", "passage"):
            return task  # a symmetric task (text-matching): the same prompt for queries and passages
        raise bad_request("Give either `task` or `prompt_name`, not both.", param="prompt_name")
    chosen, field = (task, "task") if task is not None else (prompt_name, "prompt_name")
    if chosen is None:
        return None
    if chosen not in spec.tasks and field == "task" and f"{chosen}.query" in spec.tasks:
        return f"{chosen}.query"
    if chosen not in spec.tasks:
        what = "Unknown task" if field == "task" else "Custom instructions are not supported; unknown task"
        raise bad_request(
            f"{what} '{chosen}' for model {spec.name}: it has one adapter per task: {', '.join(spec.tasks)}.",
            param=field,
            code="unsupported_parameter" if field == "prompt_name" else "invalid_value",
        )
    return chosen


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


def check_texts(
    texts: list[str],
    limits: Limits,
    param: str = "input",
    *,
    documents: bool = False,
    media_only: set[int] = frozenset(),
) -> None:
    """Count, emptiness and length of a request's texts (items at `media_only` indexes may have no text)."""
    if not texts:
        raise bad_request(f"`{param}` must not be empty.", param=param, code="empty_input")
    most, what, name = (
        (limits.max_documents_per_request, "documents", "max_documents_per_request")
        if documents
        else (limits.max_inputs_per_request, "inputs", "max_inputs_per_request")
    )
    if len(texts) > most:
        raise too_large(f"{len(texts)} {what} in one request; the limit is {most} ({name}).", param=param)
    for i, text in enumerate(texts):
        if i not in media_only and (not text or not text.strip()):
            raise bad_request(f"{param}[{i}] is empty.", param=f"{param}[{i}]", code="empty_input")
        if len(text) > limits.max_chars_per_input:
            raise too_large(
                f"{param}[{i}] has {len(text)} characters; the limit is {limits.max_chars_per_input} "
                "(max_chars_per_input).",
                param=f"{param}[{i}]",
            )


def content_dict(item: str | ContentItem) -> dict:
    """A request item as the plain dict a VL deployment receives (raw media references, no Nones)."""
    if isinstance(item, str):
        return {"text": item}
    return {k: v for k, v in item.model_dump().items() if v is not None}


def check_content(spec: ModelSpec, items: list[str | ContentItem], limits: Limits, param: str) -> None:
    """Media only for models that take it; text parts checked like plain texts (media-only items may omit text)."""
    for i, item in enumerate(items):
        if isinstance(item, str):
            continue
        where = f"{param}[{i}]"
        for kind, value in (("image", item.image), ("video", item.video)):
            if value is not None and kind not in spec.modalities:
                raise bad_request(
                    f"{where} has an {kind}, but model {spec.name} takes {' and '.join(spec.modalities)} only.",
                    param=f"{where}.{kind}",
                    code="unsupported_modality",
                )
        if isinstance(item.video, list) and not item.video:
            raise bad_request(f"{where}.video is an empty frame list.", param=f"{where}.video")
    texts = [x if isinstance(x, str) else (x.text or "") for x in items]
    media_only = {i for i, x in enumerate(items) if not isinstance(x, str) and x.has_media and not x.text}
    check_texts(texts, limits, param, documents=param == "documents", media_only=media_only)


def plan_embedding(spec: ModelSpec, req: EmbeddingRequest, limits: Limits) -> EmbeddingPlan:
    if spec.kind != "embedding":
        raise bad_request(
            f"Model {spec.name} is a {spec.kind} model; use /v1/rerank.", param="model", code="wrong_model_kind"
        )
    ids = token_id_inputs(req.input)
    if ids is not None:
        return plan_token_ids(spec, req, ids, limits)
    raw = [req.input] if isinstance(req.input, str) else list(req.input)
    check_content(spec, raw, limits, "input")
    if "text" not in spec.modalities:
        raise bad_request(f"Model {spec.name} does not take text input.", param="input")

    adapter_task = None
    if spec.recipe.instruction_style == "task-adapter":
        adapter_task = resolve_adapter_task(spec, req.task, req.prompt_name)
        instruction = None
    else:
        instruction = resolve_instruction(spec, req.task, req.prompt_name)
    if req.late_chunking:
        refusal = spec.late_chunking_refusal()
        if refusal:
            raise InvalidRequest(refusal, param="late_chunking", code="unsupported_parameter")
        if instruction or any(not isinstance(x, str) for x in raw):
            raise bad_request("late_chunking takes plain text chunks and no instruction.", param="late_chunking")

    items = None
    if spec.recipe.instruction_style == "system-message":
        # Qwen3-VL puts the instruction in the system message (queries and documents alike).
        items = [content_dict(x) for x in raw]
        texts = [x.get("text", "") for x in items]
    else:
        texts = []
        for i, x in enumerate(raw):
            text, own = (x, None) if isinstance(x, str) else (x.text or "", x.instruction)
            if own is not None and not (spec.instruction_aware and spec.recipe.instruction_style == "text-template"):
                raise bad_request(
                    f"input[{i}].instruction: model {spec.name} takes no instruction.",
                    param=f"input[{i}].instruction",
                    code="unsupported_parameter",
                )
            chosen = own or instruction
            texts.append(with_instruction(spec, chosen, text))
        if spec.recipe.multimodal and any(not isinstance(x, str) and x.has_media for x in raw):
            # Media for a multimodal model without instructions (jina-embeddings-v4): the deployment decodes
            # them under the media rules; the request's task still picks the adapter.
            items = [content_dict(x) for x in raw]

    outputs = check_outputs(spec, req)
    dims = check_dimensions(spec, req.dimensions)
    output_type = req.embedding_type or req.encoding_format
    call = EmbedCall(
        texts=texts,
        truncate=req.truncate,
        truncation_direction=req.truncation_direction,
        dimensions=dims,
        normalize=req.normalized,
        late_chunking=req.late_chunking,
        items=items,
        instruction=instruction if items is not None else None,
        outputs=outputs,
        sparse_tokens=req.return_sparse_tokens,
        task=adapter_task,
    )
    return EmbeddingPlan(call=call, output_type=output_type)


def check_outputs(spec: ModelSpec, req: EmbeddingRequest) -> tuple[str, ...]:
    outputs = tuple(req.output or ("dense",))
    if not outputs or len(set(outputs)) != len(outputs):
        raise bad_request("`output` must list dense, sparse or colbert, each once.", param="output")
    unsupported = [o for o in outputs if o not in spec.outputs]
    if unsupported:
        raise bad_request(
            f"Model {spec.name} gives only: {', '.join(spec.outputs)} (asked for {', '.join(unsupported)}).",
            param="output",
            code="unsupported_parameter",
        )
    if req.late_chunking and outputs != ("dense",):
        raise bad_request("late_chunking gives dense vectors only.", param="output")
    return outputs


# ---- token-id inputs ------------------------------------------------------------------------------------


def token_id_inputs(value) -> list[list[int]] | None:
    """`input` given as token ids (one list of ids, or a list of id lists) -> one id list per input; None
    when `input` is text. An empty list is text (refused as empty by the text path)."""
    if not isinstance(value, list) or not value:
        return None
    if isinstance(value[0], int):
        return [value]
    if isinstance(value[0], list):
        return value
    return None


def token_ids_refusal(spec: ModelSpec) -> str | None:
    """Why a model cannot take token ids (None: it can): it must embed from its own local tokenizer's ids."""
    if spec.recipe.shell == "remote":
        return f"Model {spec.name} runs behind a remote API with its own tokenizer: send text, not token ids."
    if spec.recipe.multimodal or spec.recipe.instruction_style == "system-message":
        return f"Model {spec.name} builds its prompt from text with a chat template: send text, not token ids."
    if not spec.recipe.local_tokenizer:
        return f"Model {spec.name} has no local tokenizer: send text, not token ids."
    return None


def plan_token_ids(spec: ModelSpec, req: EmbeddingRequest, ids: list[list[int]], limits: Limits) -> EmbeddingPlan:
    """Token-id inputs: the model's own ids, framed by the model (special tokens, the instruction's ids
    before them). Counts and lengths are checked like texts (an input of more ids than max_chars_per_input
    is over the limit); each id's range is checked by the model, which knows its vocabulary."""
    refusal = token_ids_refusal(spec)
    if refusal:
        raise bad_request(refusal, param="input", code="unsupported_parameter")
    if len(ids) > limits.max_inputs_per_request:
        raise too_large(
            f"{len(ids)} inputs in one request; the limit is {limits.max_inputs_per_request} (max_inputs_per_request).",
            param="input",
        )
    for i, seq in enumerate(ids):
        if not seq:
            raise bad_request(f"input[{i}] is empty.", param=f"input[{i}]", code="empty_input")
        if len(seq) > limits.max_chars_per_input:
            raise too_large(
                f"input[{i}] has {len(seq)} token ids; the limit is {limits.max_chars_per_input} "
                "(max_chars_per_input).",
                param=f"input[{i}]",
            )
    if req.late_chunking:
        raise bad_request("late_chunking takes text chunks, not token ids.", param="late_chunking")
    adapter_task = None
    if spec.recipe.instruction_style == "task-adapter":  # the task picks the adapter (and its prompt's ids)
        adapter_task, instruction = resolve_adapter_task(spec, req.task, req.prompt_name), None
    else:
        instruction = resolve_instruction(spec, req.task, req.prompt_name)
    prefix = None
    if instruction:
        template = spec.recipe.query_template or ""
        if not template.endswith("{text}"):
            refusal = f"Model {spec.name} cannot put an instruction before token ids."
            raise bad_request(refusal, param="task", code="unsupported_parameter")
        prefix = with_instruction(spec, instruction, "")
    call = EmbedCall(
        texts=[],
        truncate=req.truncate,
        truncation_direction=req.truncation_direction,
        dimensions=check_dimensions(spec, req.dimensions),
        normalize=req.normalized,
        outputs=check_outputs(spec, req),
        sparse_tokens=req.return_sparse_tokens,
        token_ids=[list(seq) for seq in ids],
        token_prefix=prefix,
        task=adapter_task,
    )
    return EmbeddingPlan(call=call, output_type=req.embedding_type or req.encoding_format)


# ---- Cohere embed v2 ------------------------------------------------------------------------------------

# Cohere's input_type -> our task (its instruction, for instruction-aware models).
COHERE_INPUT_TASKS: dict[str, str | None] = {
    "search_query": "retrieval.query",
    "search_document": "retrieval.passage",
    "classification": "classification",
    "clustering": "clustering",
    "image": None,
}


def cohere_task(spec: ModelSpec, input_type: str | None) -> str | None:
    """The task a Cohere `input_type` asks of this model: None for models without instructions (Cohere's
    clients always send an input_type, so it is not refused there), for documents and images."""
    if input_type is None or not spec.instruction_aware:
        return None
    task = COHERE_INPUT_TASKS.get(input_type)
    if spec.recipe.instruction_style == "task-adapter":
        # Adapter families: documents get their passage adapter too; a kind the model has no adapter for gets
        # the model's default task (jina-v3 calls clustering "separation").
        if task == "clustering" and "separation" in spec.tasks:
            return "separation"
        return task if task in spec.tasks else None
    if task is None or TASK_INSTRUCTIONS.get(task) is None:
        return None
    allowed = spec.tasks or list(TASK_INSTRUCTIONS)
    if task not in allowed:
        raise bad_request(
            f"input_type={input_type} asks for the task {task}, which model {spec.name} does not support "
            f"(its tasks: {', '.join(allowed)}).",
            param="input_type",
        )
    return task


# Cohere's truncate -> (truncate, truncation_direction)
COHERE_TRUNCATE = {"NONE": (False, "right"), "START": (True, "left"), "END": (True, "right")}


# Failures of the serving side (not of the request): a text-only request may go to the fallback model.
SERVER_SIDE_FAILURES = (Unavailable, DeadlineExceeded, InferenceFailed, UpstreamFailed)


def fallback_for(spec: ModelSpec, specs: dict[str, ModelSpec], call: EmbedCall, failure: ServiceError):
    """(fallback model, call) when a VL model failed on the server side (unavailable, timeout, inference) and
    the request is text-only; None otherwise. Its vectors live in another space: the reply names it."""
    if not spec.fallback or not isinstance(failure, SERVER_SIDE_FAILURES) or spec.fallback not in specs:
        return None
    fallback = specs[spec.fallback]
    fallback_call = text_only_fallback(call, fallback)
    return (fallback, fallback_call) if fallback_call is not None else None


def text_only_fallback(call: EmbedCall, fallback: ModelSpec) -> EmbedCall | None:
    """The same request for a text model, when every item is text (else None: no fallback possible)."""
    if call.items is None or any(set(item) - {"text", "instruction"} for item in call.items):
        return None
    texts = []
    for item in call.items:
        chosen = item.get("instruction") or call.instruction
        text = item.get("text", "")
        texts.append(with_instruction(fallback, chosen if fallback.instruction_aware else None, text))
    dims = call.dimensions
    if dims is not None and fallback.dimensions is not None and dims > fallback.dimensions:
        return None
    return EmbedCall(
        texts=texts,
        truncate=call.truncate,
        truncation_direction=call.truncation_direction,
        dimensions=dims,
        normalize=call.normalize,
    )


# ---- rerank -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class RerankPlan:
    """Either a cross-encoder call, or (for embedding models) one embed call: query first, then documents (or,
    with `query_embed`, the documents only)."""

    documents: list[str]
    top_n: int
    rerank: RerankCall | None = None
    embed: EmbedCall | None = None
    # Adapter models with query and passage tasks: the query embedded on its own with its task (`embed` then holds
    # only the documents, with the passage task), as a retrieval system would embed them.
    query_embed: EmbedCall | None = None


def _text(item: str | ContentItem, spec: ModelSpec, where: str) -> str:
    if isinstance(item, str):
        return item
    if item.has_media and not spec.recipe.multimodal:
        raise bad_request(
            f"{where} has an image or video, but model {spec.name} takes text only.",
            param=where,
            code="unsupported_modality",
        )
    return item.text or ""


def plan_rerank(
    spec: ModelSpec,
    *,
    query: str | ContentItem,
    documents: list[str | ContentItem],
    top_n: int | None,
    limits: Limits,
    instruction: str | None = None,
    max_tokens_per_doc: int | None = None,
    raw_scores: bool = False,
) -> RerankPlan:
    vl = spec.recipe.multimodal
    query_text = _text(query, spec, "query")
    query_has_media = not isinstance(query, str) and query.has_media
    if not (vl and query_has_media) and not query_text.strip():
        raise bad_request("`query` must not be empty.", param="query", code="empty_input")
    if len(query_text) > limits.max_chars_per_input:
        raise too_large(
            f"query has {len(query_text)} characters; the limit is {limits.max_chars_per_input} (max_chars_per_input).",
            param="query",
        )
    docs = [_text(d, spec, f"documents[{i}]") for i, d in enumerate(documents)]
    media_only = {i for i, d in enumerate(documents) if vl and not isinstance(d, str) and d.has_media}
    check_texts(docs, limits, "documents", documents=True, media_only=media_only)
    if top_n is not None and top_n < 1:
        raise bad_request(f"top_n must be at least 1 (got {top_n}).", param="top_n")
    if max_tokens_per_doc is not None and max_tokens_per_doc < 1:
        raise bad_request(
            f"max_tokens_per_doc must be at least 1 (got {max_tokens_per_doc}).", param="max_tokens_per_doc"
        )
    n = len(docs) if top_n is None else min(top_n, len(docs))

    if spec.kind == "rerank":
        if instruction is not None and not spec.instruction_aware:
            raise bad_request(
                f"Model {spec.name} does not take an instruction.", param="instruction", code="unsupported_parameter"
            )
        if vl:
            check_content(spec, [query], limits, "query")
            check_content(spec, list(documents), limits, "documents")
        call = RerankCall(
            query=content_dict(query) if vl else query_text,
            documents=[content_dict(d) for d in documents] if vl else docs,
            instruction=instruction,
            max_tokens_per_doc=max_tokens_per_doc,
            raw_scores=raw_scores,
        )
        shown = [content_dict(d) for d in documents] if vl else [{"text": d} for d in docs]
        return RerankPlan(documents=shown, top_n=n, rerank=call)

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
    if spec.instruction_aware:
        query_text = with_instruction(spec, instruction or TASK_INSTRUCTIONS["retrieval.query"], query_text)
    if any(not isinstance(d, str) and d.has_media for d in [query, *documents]):
        check_content(spec, [query, *documents], limits, "documents")
    if instruction is not None and spec.recipe.instruction_style == "task-adapter":
        raise bad_request(
            f"Model {spec.name} takes no instruction: it reranks with its default task's adapter.",
            param="instruction",
            code="unsupported_parameter",
        )
    call = EmbedCall(texts=[query_text, *docs], truncate=True)
    if spec.recipe.instruction_style == "system-message":
        items = [content_dict(query), *(content_dict(d) for d in documents)]
        items[0].setdefault("instruction", instruction or TASK_INSTRUCTIONS["retrieval.query"])
        call = EmbedCall(texts=call.texts, truncate=True, items=items)
    elif vl and any(not isinstance(d, str) and d.has_media for d in [query, *documents]):
        # jina-embeddings-v4: images are compared with the task's adapter, like texts.
        call = EmbedCall(texts=call.texts, truncate=True, items=[content_dict(d) for d in [query, *documents]])
    shown = [content_dict(d) for d in documents]
    if spec.recipe.instruction_style == "task-adapter" and {"retrieval.query", "retrieval.passage"} <= set(spec.tasks):
        # Asymmetric retrieval adapters (jina-embeddings-v3/v4): the query as a query, the documents as passages.
        items = call.items
        query_call = EmbedCall(
            texts=call.texts[:1], truncate=True, task="retrieval.query", items=items[:1] if items else None
        )
        docs_call = EmbedCall(
            texts=call.texts[1:], truncate=True, task="retrieval.passage", items=items[1:] if items else None
        )
        return RerankPlan(documents=shown, top_n=n, embed=docs_call, query_embed=query_call)
    return RerankPlan(documents=shown, top_n=n, embed=call)

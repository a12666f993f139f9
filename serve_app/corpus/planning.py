"""From a job's settings and a part's rows to the calls the engine answers, through the router's own planning.

Every row is judged by serve_app/policy.py's `plan_embedding` as a one-input request (the API's verdict: empty
text, too many characters, a modality the model does not take, a lone surrogate), and the good rows of a window
are planned together as one request, so instructions, prefixes, tasks, dimensions and outputs are exactly the
API's. A row the API would refuse becomes a bad row (code + reason) instead of failing its neighbours.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from deployments.calls import EmbedCall
from deployments.errors import ServiceError
from deployments.spec import ModelSpec
from serve_app.catalog import load_catalog, resolve_models
from serve_app.config import Limits
from serve_app.corpus.job import CorpusJob
from serve_app.policy import plan_embedding
from serve_app.schemas import EmbeddingRequest


class JobError(ValueError):
    """The job cannot run as asked (unknown model, a field the model refuses): said before any work starts."""


@dataclass(slots=True)
class BadRow:
    """A row that gets no vector: its position in the part, a stable code and the reason in words."""

    index: int
    code: str
    reason: str


def resolve_spec(job: CorpusJob) -> ModelSpec:
    """The model as the service would serve it (catalog entry + overrides, or a declaration), with the job's
    own resources and batching for its actors."""
    # A fallback is the router's text-only answer when a request's media fails; a job has no router, and a bad
    # image is a bad row here, so the model is resolved without one (its fallback is not served by the job).
    entry = job.model.model_copy(update={"fallback": None})
    try:
        spec = resolve_models([entry], load_catalog(job.catalog))[0]
    except (ValueError, OSError) as exc:
        raise JobError(str(exc)) from None
    if spec.kind != "embedding" or spec.recipe.shell != "embedding":
        what = "runs behind a remote API" if spec.recipe.shell == "remote" else f"is a {spec.kind} model"
        raise JobError(f"model {spec.name} {what}: a corpus job embeds with a local embedding model")
    raw = spec.model_dump()
    for key, value in (("num_cpus", job.num_cpus), ("num_gpus", job.num_gpus), ("torch_threads", job.torch_threads)):
        if value is not None:
            raw["deployment"][key] = value
    for key, value in (("max_batch_tokens", job.max_batch_tokens), ("max_batch_size", job.max_batch_size)):
        if value is not None:
            raw["batching"][key] = value
    return ModelSpec.model_validate(raw)


def job_limits(job: CorpusJob, inputs: int) -> Limits:
    """The API's per-input limits, with room for a whole window in one planned request."""
    return Limits(max_inputs_per_request=max(inputs, 1), max_chars_per_input=job.max_chars_per_input)


def embedding_request(job: CorpusJob, spec: ModelSpec, inputs: list) -> EmbeddingRequest:
    """The /v1/embeddings request these inputs would be, with the job's request fields."""
    return EmbeddingRequest(
        model=spec.name,
        input=inputs,
        task=job.task,
        prompt_name=job.prompt_name,
        dimensions=job.dimensions,
        truncate=job.truncate,
        truncation_direction=job.truncation_direction,
        normalized=job.normalized,
        embedding_type=job.embedding_type,
        output=job.output_kinds,
        return_sparse_tokens=job.return_sparse_tokens,
    )


def check_job(job: CorpusJob, spec: ModelSpec) -> EmbedCall:
    """Plan a probe input, so a field the model refuses (task, dimensions, outputs, modality) stops the job at
    once with the API's message, not once per row. -> the probe's call (its settings apply to every window)."""
    probe: Any = "probe"
    if job.image_column is not None:
        if "image" not in spec.modalities:
            raise JobError(f"model {spec.name} takes {' and '.join(spec.modalities)} only: it has no image input")
        probe = {"image": "data:image/png;base64,AA==", **({"text": "probe"} if job.text_column else {})}
    try:
        return plan_embedding(spec, embedding_request(job, spec, [probe]), job_limits(job, 1)).call
    except ServiceError as exc:
        raise JobError(f"{exc.message} ({exc.param or 'request'})") from None
    except ValidationError as exc:
        raise JobError(str(exc)) from None


def row_input(job: CorpusJob, text: Any, image: Any) -> str | dict:
    """One row as an API input: a text, or {text?, image} for an image row (bytes are sent as base64)."""
    if job.image_column is None:
        if text is not None and not isinstance(text, str):
            raise TypeError(f"{job.text_column} is not text (got {type(text).__name__})")
        return text if text is not None else ""
    item: dict[str, Any] = {}
    if isinstance(image, bytes | bytearray | memoryview):
        item["image"] = base64.b64encode(bytes(image)).decode("ascii")
    elif isinstance(image, str) and image:
        item["image"] = image
    elif image is not None:
        raise TypeError(f"{job.image_column} is not image bytes or a reference (got {type(image).__name__})")
    if text is not None:
        if not isinstance(text, str):
            raise TypeError(f"{job.text_column} is not text (got {type(text).__name__})")
        item["text"] = text
    if not item:
        raise TypeError("the row has neither text nor an image")
    return item


def _relabel(message: str, job: CorpusJob) -> str:
    """The API's words name `input[0]`; a corpus row names its column."""
    if job.image_column:
        message = message.replace("input[0].image", job.image_column)
    return message.replace("input[0]", job.text_column or job.image_column or "row")


def bad_row(index: int, exc: Exception, job: CorpusJob) -> BadRow:
    """A refusal of one row, as its code and reason."""
    if isinstance(exc, ServiceError):
        return BadRow(index, exc.code, _relabel(exc.message, job))
    if isinstance(exc, ValidationError):
        errors = exc.errors()  # `input` is a union: the error that is not a type mismatch says what is wrong
        first = next((e for e in errors if not e["type"].endswith("_type")), errors[0])
        return BadRow(index, "invalid_input", _relabel(str(first["msg"]), job))
    if isinstance(exc, TypeError):
        return BadRow(index, "invalid_input", str(exc))
    return BadRow(index, "inference_failed", f"{type(exc).__name__}: {exc}")


def plan_rows(
    job: CorpusJob, spec: ModelSpec, texts: list | None, images: list | None, skip: dict[int, str]
) -> tuple[list[int], EmbedCall | None, list[BadRow]]:
    """A window of rows -> (positions of the good rows, one call for them, the bad rows). `skip`: rows that
    could not even be read (position -> reason)."""
    n = len(texts if texts is not None else images or [])
    bad = [BadRow(i, "unreadable_row", reason) for i, reason in sorted(skip.items())]
    good: list[int] = []
    inputs: list = []
    one = job_limits(job, 1)
    for i in range(n):
        if i in skip:
            continue
        try:
            item = row_input(job, texts[i] if texts is not None else None, images[i] if images is not None else None)
            plan_embedding(spec, embedding_request(job, spec, [item]), one)
        except (ServiceError, ValidationError, TypeError) as exc:
            bad.append(bad_row(i, exc, job))
            continue
        good.append(i)
        inputs.append(item)
    if not inputs:
        return [], None, bad
    call = plan_embedding(spec, embedding_request(job, spec, inputs), job_limits(job, len(inputs))).call
    return good, call, sorted(bad, key=lambda b: b.index)

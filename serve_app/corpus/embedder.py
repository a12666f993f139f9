"""The Ray Data actor of a corpus job: one model engine per actor, one part per call.

The engine is the deployments' own (deployments/shell.py `load_engine`: the family registry's engine class,
runtime, CPU threads, GPU memory share), and so is the reply building (engines/postprocess.py
`finish_embeddings`). A window of rows is planned by the router's policy (planning.py), tokenized in one call,
cut into batches under the model's token budget (engines/micro_batches.py with the model's BatchingConfig:
rows x longest <= max_batch_tokens, at most max_batch_size rows, longest first) and run batch by batch.

A row the engine refuses (too long without truncate, media it cannot decode, an input error) or whose batch
fails becomes a bad row; nothing a row holds stops its part, and a part that fails as a whole (unreadable
file) is reported and left for the next run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from deployments.calls import EmbedCall
from deployments.engines.micro_batches import plan_micro_batches
from deployments.engines.postprocess import FinishedEmbeddings, finish_embeddings
from deployments.engines.protocol import InputError
from deployments.errors import ServiceError
from deployments.spec import BatchingConfig, ModelSpec
from serve_app.corpus.job import CorpusJob, Part, PartResult
from serve_app.corpus.output import Layout, PartWriter, embedding_columns
from serve_app.corpus.planning import BadRow, bad_row, plan_rows
from serve_app.corpus.sources import read_part

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Embedded:
    """A call's answer: the positions (in the call's inputs) that got vectors, their outputs, their token
    counts, and the positions refused (BadRow.index is a position in the call's inputs)."""

    kept: list[int]
    done: FinishedEmbeddings | None
    tokens: list[int]
    bad: list[BadRow] = field(default_factory=list)


def window_rows(job: CorpusJob, batching: BatchingConfig) -> int:
    """Rows tokenized and length-sorted together: several full batches, so sorting pays, but bounded memory."""
    return job.window_rows or max(4 * batching.max_batch_size, 64)


def _decode(engine: Any, call: EmbedCall, job: CorpusJob) -> tuple[list, list[int], list[BadRow]]:
    """Multimodal items decoded one by one (each with its own media budget): one bad image is one bad row."""
    from deployments.media_inputs import decode_items

    inputs, kept, bad = [], [], []
    for i, item in enumerate(call.items or []):
        try:
            inputs.extend(decode_items([item], call.instruction, engine, param="input"))
            kept.append(i)
        except ServiceError as exc:
            bad.append(bad_row(i, exc, job))
    return inputs, kept, bad


def _prepare(engine: Any, call: EmbedCall, inputs: list, kept: list[int], job: CorpusJob):
    """engine.prepare as the deployment calls it; an input the engine refuses (InputError naming it) leaves
    the call as a bad row and the rest are prepared again."""
    bad: list[BadRow] = []
    kept = list(kept)
    while kept:
        try:
            if call.task is not None:
                prepared = engine.prepare(inputs, call.truncate, call.truncation_direction, task=call.task)
            else:
                prepared = engine.prepare(inputs, call.truncate, call.truncation_direction)
            return prepared, kept, bad
        except InputError as exc:
            at = exc.index if exc.index is not None and 0 <= exc.index < len(kept) else None
            if at is None:  # not one input's fault: every input of the call is refused with it
                return [], [], bad + [BadRow(i, "invalid_input", str(exc)) for i in kept]
            code = "context_length_exceeded" if exc.too_long else "invalid_input"
            bad.append(BadRow(kept[at], code, f"{job.text_column or job.image_column}: {exc}"))
            del kept[at], inputs[at]
    return [], [], bad


def embed_call(engine: Any, call: EmbedCall, batching: BatchingConfig, job: CorpusJob) -> Embedded:
    """One planned call through the engine, batch by batch under the token budget, each row on its own."""
    from deployments.batcher import run_isolated
    from deployments.shell import too_long_error

    if call.items is not None:
        inputs, kept, bad = _decode(engine, call, job)
    else:
        inputs, kept, bad = list(call.texts), list(range(len(call.texts))), []
    prepared, kept, refused = _prepare(engine, call, inputs, kept, job)
    bad += refused
    limit = engine.capabilities.max_tokens
    fits = []
    for item, position in zip(prepared, kept, strict=True):
        if len(item) > limit:
            bad.append(bad_row(position, too_long_error(0, item.full_length, limit), job))
        else:
            fits.append((position, item))
    rows: dict[int, Any] = {}
    groups = plan_micro_batches([item.cost for _, item in fits], batching.max_batch_tokens, batching.max_batch_size)
    for group in groups:
        results = run_isolated(engine.forward, [fits[i][1] for i in group])
        for i, result in zip(group, results, strict=True):
            if isinstance(result, Exception):
                bad.append(bad_row(fits[i][0], result, job))
            else:
                rows[i] = result
    order = sorted(rows)
    if not order:
        return Embedded([], None, [], sorted(bad, key=lambda b: b.index))
    done = finish_embeddings(
        [rows[i] for i in order],
        call.outputs,
        call.dimensions,
        call.normalize,
        call.sparse_tokens,
        getattr(engine, "token_strings", None),
    )
    return Embedded(
        kept=[fits[i][0] for i in order],
        done=done,
        tokens=[len(fits[i][1]) for i in order],
        bad=sorted(bad, key=lambda b: b.index),
    )


def run_part(
    engine: Any, spec: ModelSpec, job: CorpusJob, layout: Layout, part: Part, fingerprint: str
) -> Iterator[PartResult]:
    """Read, embed and write one part; a progress report after each window, the final one after the marker."""
    started = time.monotonic()
    data = read_part(part, job.text_column, job.image_column, job.id_columns)
    writer = PartWriter(layout, part, job, fingerprint)
    step = window_rows(job, spec.batching)
    errors = 0
    try:
        for lo in range(0, len(data), step):
            hi = min(lo + step, len(data))
            skip = {i - lo: why for i, why in data.unreadable.items() if lo <= i < hi}
            texts = data.texts[lo:hi] if data.texts is not None else None
            images = data.images[lo:hi] if data.images is not None else None
            good, call, bad = plan_rows(job, spec, texts, images, skip)
            if call is not None:
                answer = embed_call(engine, call, spec.batching, job)
                bad += [BadRow(good[b.index], b.code, b.reason) for b in answer.bad]
                if answer.done is not None:
                    at = np.asarray([lo + good[k] for k in answer.kept], dtype=np.int64)
                    ids = {c: a.take(pa.array(at)) for c, a in data.ids.items()}
                    vectors = embedding_columns(answer.done, call.outputs, job.embedding_type)
                    writer.add(ids, [data.rows[i] for i in at], vectors, answer.tokens)
            for b in sorted(bad, key=lambda b: b.index):
                at = lo + b.index
                writer.add_bad({c: a[at].as_py() for c, a in data.ids.items()}, data.rows[at], b)
            errors += len(bad)
            yield PartResult(part=part.index, rows=hi - lo, errors=len(bad))
        writer.commit(time.monotonic() - started)
    except BaseException:
        writer.abandon()
        raise
    yield PartResult(part=part.index, rows=0, errors=0, final=True)


def _as_batch(result: PartResult) -> dict[str, np.ndarray]:
    return {
        "part": np.array([result.part]),
        "rows": np.array([result.rows]),
        "errors": np.array([result.errors]),
        "final": np.array([result.final]),
        "failed": np.array([result.failed or ""], dtype=object),
    }


class PartEmbedder:
    """The `map_batches` callable class: loads the model once per actor, then embeds the parts it is given
    (batch_size=1: one part per call), yielding progress as it goes."""

    def __init__(self, job: dict, spec: dict, fingerprint: str) -> None:
        from deployments.shell import load_engine

        self.job = CorpusJob.model_validate(job)
        self.spec = ModelSpec.model_validate(spec)
        self.fingerprint = fingerprint
        self.layout = Layout(self.job.output)
        self.engine = load_engine(self.spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        for raw in batch["part"]:
            part = Part.model_validate_json(str(raw))
            try:
                for result in run_part(self.engine, self.spec, self.job, self.layout, part, self.fingerprint):
                    yield _as_batch(result)
            except Exception as exc:  # a part that cannot be finished is reported, not fatal to the job
                log.exception("corpus part %s failed", part.name)
                failed = PartResult(part=part.index, rows=0, final=True, failed=f"{type(exc).__name__}: {exc}")
                yield _as_batch(failed)

"""The shapes of a corpus job: its settings (what the CLI and the Python function take), the parts it is cut
into, the marker a finished part leaves, and the report a run gives back.

The request fields are the HTTP API's (serve_app/schemas.py EmbeddingRequest), so a job means what a request
means. Everything that changes a written vector is in `CorpusJob.result_settings()`: a rerun into the same
output folder must have the same result settings, or it would mix two kinds of vectors in one dataset.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve_app.config import ModelEntry

Format = Literal["parquet", "jsonl", "csv"]
# base64 is a transport encoding for JSON; parquet stores the numbers themselves.
OutputType = Literal["float", "binary", "ubinary", "int8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class CorpusJob(_Strict):
    """One corpus job: read `input`, embed one column with one model, write parquet parts under `output`."""

    input: str = Field(description="a file or folder: local path or any URI pyarrow reads (s3://, gs://, ...)")
    output: str = Field(description="output folder (local path or URI): data/, _done/, _errors/, errors.jsonl")
    format: Literal["auto", "parquet", "jsonl", "csv"] = Field("auto", description="auto: from the file suffix")
    text_column: str | None = Field("text", description="the column to embed (None: image-only rows)")
    image_column: str | None = Field(
        None, description="Qwen3-VL embedding models: image bytes, or a URL / data URI / base64 string per row"
    )
    id_columns: list[str] = Field(default_factory=list, description="copied to the output; none: a `row` number")
    model: ModelEntry = Field(description="a catalog name plus overrides, or name + family + source")
    catalog: str | None = Field(None, description="catalog YAML (default: the one shipped with the package)")
    # -- the request, as /v1/embeddings takes it --
    task: str | None = None
    prompt_name: str | None = None
    dimensions: int | None = Field(None, ge=1)
    truncate: bool = False
    truncation_direction: Literal["left", "right"] = "right"
    normalized: bool = True
    embedding_type: OutputType = "float"
    output_kinds: list[Literal["dense", "sparse", "colbert"]] | None = Field(
        None, description='the API\'s `output`: any of "dense" (default), "sparse", "colbert" (BGE-M3)'
    )
    return_sparse_tokens: bool = False
    max_chars_per_input: int = Field(200_000, ge=1, description="longer rows go to the errors file (as a 413)")
    # -- how it runs (no effect on the vectors) --
    rows_per_part: int = Field(2000, ge=1, description="rows per output part: the unit of resume")
    window_rows: int | None = Field(
        None, ge=1, description="rows tokenized and length-sorted together (default 4 x max_batch_size)"
    )
    actors: int | None = Field(None, ge=1, description="model actors (default: as many as the resources allow)")
    num_cpus: float | None = Field(None, ge=0, description="CPUs per actor (default: the model's num_cpus)")
    num_gpus: float | None = Field(None, ge=0, description="GPU share per actor (default: the model's num_gpus)")
    torch_threads: int | None = Field(None, ge=1)
    max_batch_tokens: int | None = Field(None, ge=1, description="default: the model's batching.max_batch_tokens")
    max_batch_size: int | None = Field(None, ge=1, description="default: the model's batching.max_batch_size")

    @model_validator(mode="after")
    def _something_to_embed(self) -> CorpusJob:
        if self.text_column is None and self.image_column is None:
            raise ValueError("give a text column, an image column, or both")
        overlap = {self.text_column, self.image_column} & set(self.id_columns)
        if overlap - {None}:
            raise ValueError(f"{sorted(overlap - {None})} cannot be both an id column and embedded")
        if len(self.id_columns) != len(set(self.id_columns)):
            raise ValueError("an id column is listed twice")
        return self

    def result_settings(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Everything that decides what is written: model recipe and request fields, not resources."""
        recipe = {k: v for k, v in spec.items() if k not in ("deployment", "batching", "description")}
        fields = self.model_dump(
            include={
                "text_column",
                "image_column",
                "id_columns",
                "task",
                "prompt_name",
                "dimensions",
                "truncate",
                "truncation_direction",
                "normalized",
                "embedding_type",
                "output_kinds",
                "return_sparse_tokens",
                "max_chars_per_input",
                "rows_per_part",
            }
        )
        return {"model": recipe, **fields}


def fingerprint(settings: dict[str, Any]) -> str:
    """A short stable hash of result settings (stored in the manifest and in each part's marker)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class SourceFile(_Strict):
    """One input file as planned: where it is and the state it had (a changed file's parts are redone)."""

    path: str
    format: Format
    size: int
    mtime_ns: int | None = None
    rows: int


class Part(_Strict):
    """Rows [start, stop) of one input file: read, embedded and written as one unit."""

    index: int
    file: SourceFile
    start: int
    stop: int
    first_row: int = Field(description="the job-wide number of the part's first row (files in sorted order)")
    byte_start: int | None = Field(None, description="JSON lines: where the part's first line starts")
    byte_stop: int | None = None

    @property
    def name(self) -> str:
        return f"part-{self.index:06d}"

    @property
    def rows(self) -> int:
        return self.stop - self.start


class PartMarker(_Strict):
    """Written after a part's data and errors files: the part is complete for these settings and this source."""

    part: str
    fingerprint: str
    source: SourceFile
    start: int
    stop: int
    rows: int
    embedded: int
    errors: int
    tokens: int
    seconds: float
    finished: str


class PartResult(_Strict):
    """What an actor reports while it works on a part (progress) and when it is done (final)."""

    part: int
    rows: int = Field(description="rows handled in this report (embedded + errors)")
    errors: int = 0
    final: bool = False
    failed: str | None = Field(None, description="the part could not be finished (no marker written)")


class JobReport(_Strict):
    output: str
    fingerprint: str
    parts_total: int
    parts_skipped: int
    parts_computed: int
    parts_failed: list[str] = Field(default_factory=list)
    rows_total: int
    rows_this_run: int
    rows_embedded: int = Field(description="rows with vectors in the whole output (every complete part)")
    rows_errored: int = Field(description="rows in the errors file (every complete part)")
    seconds: float
    rows_per_s: float | None
    errors_file: str

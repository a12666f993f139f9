"""Writing a corpus job's output, and finding what an earlier run already finished (resume).

Layout of the output folder (local path or any URI pyarrow writes):

    job.json                  settings, their fingerprint, the model, the planned parts
    data/part-000042.parquet  id columns (or `row`), token_count and the vectors of part 42's good rows
    _errors/part-000042.jsonl part 42's bad rows: ids, row, code, reason
    _done/part-000042.json    part 42's completion marker, written last
    errors.jsonl              every bad row of the job (rebuilt from _errors/ at the end of each run)

A part is complete when its marker exists, carries the job's fingerprint and names the same source file state
and rows; a rerun computes only the other parts. Data files are first written under a name starting with `.`
and then moved into place, so a reader of `data/` never sees half a file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from deployments.engines.postprocess import FinishedEmbeddings
from serve_app.corpus.job import CorpusJob, Part, PartMarker
from serve_app.corpus.planning import BadRow, JobError
from serve_app.corpus.sources import filesystem
from serve_app.ingress.encoding import converted  # the API's output types (binary, ubinary, int8), not a copy


class Layout:
    """Where each file of a job's output lives."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, self.root = filesystem(uri)

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    @property
    def manifest(self) -> str:
        return self.path("job.json")

    @property
    def errors_file(self) -> str:
        return self.path("errors.jsonl")

    def data(self, part: Part) -> str:
        return self.path("data", f"{part.name}.parquet")

    def errors(self, part: Part) -> str:
        return self.path("_errors", f"{part.name}.jsonl")

    def marker(self, part: Part) -> str:
        return self.path("_done", f"{part.name}.json")

    def make_dirs(self) -> None:
        for sub in ("data", "_errors", "_done"):
            self.fs.create_dir(self.path(sub), recursive=True)

    def clear(self) -> None:
        """--overwrite: remove what a job writes (and nothing else in the folder)."""
        for sub in ("data", "_errors", "_done"):
            with contextlib.suppress(FileNotFoundError):
                if self.fs.get_file_info(self.path(sub)).type == pafs.FileType.Directory:
                    self.fs.delete_dir(self.path(sub))
        for name in (self.manifest, self.errors_file):
            with contextlib.suppress(FileNotFoundError):
                if self.fs.get_file_info(name).type == pafs.FileType.File:
                    self.fs.delete_file(name)

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.File

    def read_text(self, path: str) -> str:
        with self.fs.open_input_stream(path) as f:
            return f.read().decode("utf-8")

    def write_text(self, path: str, text: str) -> None:
        """Write then move into place, so the file is whole or absent."""
        tmp = _tmp_name(path)
        with self.fs.open_output_stream(tmp) as f:
            f.write(text.encode("utf-8"))
        self.fs.move(tmp, path)

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.exists(path):
                self.fs.delete_file(path)


def _tmp_name(path: str) -> str:
    head, _, name = path.rpartition("/")
    return f"{head}/.{name}.{uuid.uuid4().hex[:8]}.tmp"


# ---- manifest and resume --------------------------------------------------------------------------------


def check_manifest(layout: Layout, fingerprint: str) -> None:
    """Refuse to add parts with other settings to an output that holds a different job's parts."""
    if not layout.exists(layout.manifest):
        return
    found = json.loads(layout.read_text(layout.manifest)).get("fingerprint")
    if found != fingerprint:
        raise JobError(
            f"{layout.uri} holds the output of a job with other settings (fingerprint {found}, this job "
            f"{fingerprint}): use another output folder, or --overwrite to replace it"
        )


def write_manifest(
    layout: Layout, job: CorpusJob, spec: dict, settings: dict, fingerprint: str, parts: list[Part]
) -> None:
    layout.make_dirs()
    record = {
        "fingerprint": fingerprint,
        "settings": settings,
        "job": job.model_dump(mode="json"),
        "model": spec,
        "written": _now(),
        "parts": [p.model_dump(mode="json") for p in parts],
    }
    layout.write_text(layout.manifest, json.dumps(record, indent=1, default=str))


def read_marker(layout: Layout, part: Part) -> PartMarker | None:
    if not layout.exists(layout.marker(part)):
        return None
    try:
        return PartMarker.model_validate_json(layout.read_text(layout.marker(part)))
    except ValueError:
        return None


def is_complete(marker: PartMarker | None, part: Part, fingerprint: str) -> bool:
    """The marker says this part was finished with these settings, from this file state and these rows."""
    return (
        marker is not None
        and marker.fingerprint == fingerprint
        and marker.source == part.file
        and (marker.start, marker.stop) == (part.start, part.stop)
    )


def finished_parts(layout: Layout, parts: list[Part], fingerprint: str) -> dict[int, PartMarker]:
    """part index -> marker, for the parts an earlier run completed."""
    out = {}
    for part in parts:
        marker = read_marker(layout, part)
        if marker is not None and is_complete(marker, part, fingerprint):
            out[part.index] = marker
    return out


PART_FILE = re.compile(r"^part-(\d{6})\.(parquet|json|jsonl)$")


def remove_stale_parts(layout: Layout, parts: list[Part]) -> list[str]:
    """Part files numbered past the current plan (the input shrank since an earlier run): removed, or a reader
    of data/ would still see their rows. -> what was removed."""
    removed = []
    for sub in ("data", "_done", "_errors"):
        for info in layout.fs.get_file_info(pafs.FileSelector(layout.path(sub), allow_not_found=True)):
            m = PART_FILE.match(info.base_name)
            if m and int(m.group(1)) >= len(parts):
                layout.fs.delete_file(info.path)
                removed.append(f"{sub}/{info.base_name}")
    return removed


def merge_errors(layout: Layout, parts: list[Part], markers: dict[int, PartMarker]) -> int:
    """Rebuild errors.jsonl from the complete parts' error files (part order); -> rows in it."""
    lines: list[str] = []
    for part in parts:
        marker = markers.get(part.index)
        if marker is None or marker.errors == 0:
            continue
        text = layout.read_text(layout.errors(part))
        lines.extend(line for line in text.splitlines() if line.strip())
    layout.write_text(layout.errors_file, "".join(line + "\n" for line in lines))
    return len(lines)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


# ---- one part's files -----------------------------------------------------------------------------------


def _vectors(matrix: np.ndarray, output_type: str) -> pa.Array:
    """[n, d] -> fixed_size_list<d> of the output type's numbers (float32, int8 or packed bits)."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    values = np.asarray(converted(matrix, output_type))
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def embedding_columns(done: FinishedEmbeddings, outputs: tuple[str, ...], output_type: str) -> dict[str, pa.Array]:
    """The vector columns of a window's good rows: embedding, sparse, colbert (as the call asked)."""
    cols: dict[str, pa.Array] = {}
    if "dense" in outputs:
        cols["embedding"] = _vectors(done.vectors, output_type)
    if "sparse" in outputs and done.sparse is not None:
        fields = {
            "indices": pa.array([np.asarray(s["indices"], np.int64) for s in done.sparse], pa.list_(pa.int64())),
            "values": pa.array([np.asarray(s["values"], np.float32) for s in done.sparse], pa.list_(pa.float32())),
        }
        if done.sparse and "tokens" in done.sparse[0]:
            fields["tokens"] = pa.array([list(s["tokens"]) for s in done.sparse], pa.list_(pa.string()))
        cols["sparse"] = pa.StructArray.from_arrays(list(fields.values()), names=list(fields))
    if "colbert" in outputs and done.colbert is not None:
        matrices = [_vectors(m, output_type) for m in done.colbert]
        offsets = np.cumsum([0, *(len(m) for m in matrices)]).astype(np.int32)
        flat = pa.concat_arrays(matrices)
        cols["colbert"] = pa.ListArray.from_arrays(pa.array(offsets), flat)
    return cols


class PartWriter:
    """Collects a part's windows into one parquet file and one errors file, then commits them with a marker."""

    def __init__(self, layout: Layout, part: Part, job: CorpusJob, fingerprint: str) -> None:
        self.layout, self.part, self.job, self.fingerprint = layout, part, job, fingerprint
        self.tmp = _tmp_name(layout.data(part))
        self.writer: pq.ParquetWriter | None = None
        self._sink = None
        self.errors: list[str] = []
        self.embedded = 0
        self.tokens = 0
        # A part being redone starts clean: a data or errors file left by an interrupted run is not this run's.
        layout.remove(layout.marker(part))
        layout.remove(layout.data(part))
        layout.remove(layout.errors(part))

    def add(self, ids: dict[str, pa.Array], rows: list[int], vectors: dict[str, pa.Array], tokens: list[int]) -> None:
        """The good rows of a window: their ids (already taken), job-wide row numbers and vector columns."""
        if not rows:
            return
        columns = dict(ids) if ids else {"row": pa.array(rows, pa.int64())}
        columns["token_count"] = pa.array(tokens, pa.int32())
        columns.update(vectors)
        table = pa.table(columns)
        if self.writer is None:
            self._sink = self.layout.fs.open_output_stream(self.tmp)
            self.writer = pq.ParquetWriter(self._sink, table.schema)
        self.writer.write_table(table)
        self.embedded += len(rows)
        self.tokens += int(sum(tokens))

    def add_bad(self, ids: dict[str, Any], row: int, bad: BadRow) -> None:
        record = {**ids, "row": row, "code": bad.code, "reason": bad.reason}
        self.errors.append(json.dumps(record, ensure_ascii=False, default=str))

    def commit(self, seconds: float) -> PartMarker:
        """Data, then errors, then the marker: the marker exists only once both are in place."""
        if self.writer is not None:
            self.writer.close()
            self._sink.close()
            self.layout.fs.move(self.tmp, self.layout.data(self.part))
        if self.errors:
            self.layout.write_text(self.layout.errors(self.part), "".join(e + "\n" for e in self.errors))
        marker = PartMarker(
            part=self.part.name,
            fingerprint=self.fingerprint,
            source=self.part.file,
            start=self.part.start,
            stop=self.part.stop,
            rows=self.part.rows,
            embedded=self.embedded,
            errors=len(self.errors),
            tokens=self.tokens,
            seconds=round(seconds, 3),
            finished=_now(),
        )
        self.layout.write_text(self.layout.marker(self.part), marker.model_dump_json(indent=1))
        return marker

    def abandon(self) -> None:
        """A part that failed leaves no data, errors or marker behind (the next run redoes it)."""
        with contextlib.suppress(Exception):
            if self.writer is not None:
                self.writer.close()
                self._sink.close()
        self.layout.remove(self.tmp)

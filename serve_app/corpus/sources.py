"""Reading a corpus: find its files, cut them into parts of rows, read one part's columns.

Parts are planned here, from the files themselves (parquet metadata, a pass over JSON lines / CSV), not from Ray
Data's blocks: block boundaries can differ between runs, and a rerun must find the same parts to skip the ones
already written. A part is rows [start, stop) of one file; JSON lines parts also know their byte range, so each
reads only its own lines.

Any filesystem pyarrow reads works (local paths, s3://, gs://, hdfs://, ...). A row that cannot be read (a JSON
line that is not a JSON object) is a bad row of its part, not a failure of the job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from serve_app.corpus.job import Format, Part, SourceFile

SUFFIX_FORMATS: dict[str, Format] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
}
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4")
READ_CHUNK = 8 << 20


class SourceError(ValueError):
    """The input cannot be used as asked (no files, a missing column, an unknown format)."""


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path on it) for a local path or a URI."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    return pafs.FileSystem.from_uri(uri)


def _compressed(path: str) -> bool:
    return path.endswith(COMPRESSION_SUFFIXES)


def format_of(path: str) -> Format | None:
    """The format a file's suffix names (a compression suffix such as .gz is looked through)."""
    base = path
    for suffix in COMPRESSION_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return SUFFIX_FORMATS.get(os.path.splitext(base)[1].lower())


def list_files(fs: pafs.FileSystem, path: str, wanted: str = "auto") -> list[tuple[str, Format, pafs.FileInfo]]:
    """The input's files in sorted order: `path` itself, or every file under it of a known format (names and
    folders starting with `_` or `.` skipped, like pyarrow's datasets do)."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise SourceError(f"no such input: {path}")
    if info.type == pafs.FileType.File:
        infos = [info]
    else:
        infos = [
            i
            for i in fs.get_file_info(pafs.FileSelector(path, recursive=True))
            if i.type == pafs.FileType.File
            and not any(p.startswith(("_", ".")) for p in os.path.relpath(i.path, path).split(os.sep))
        ]
    out = []
    for i in sorted(infos, key=lambda i: i.path):
        fmt = format_of(i.path)
        if wanted != "auto":
            if fmt is not None and fmt != wanted and info.type != pafs.FileType.File:
                continue  # another format beside the wanted one in a folder
            fmt = wanted  # type: ignore[assignment]
        if fmt is not None:
            out.append((i.path, fmt, i))
    if not out:
        raise SourceError(f"no parquet, JSON lines or CSV files in {path} (format={wanted})")
    return out


# ---- planning -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class FilePlan:
    rows: int
    columns: list[str]  # the columns the file has (JSON lines: the first object's keys)
    byte_starts: list[int] | None = None  # JSON lines: where row k * rows_per_part starts, plus the end


def _scan_parquet(fs: pafs.FileSystem, path: str) -> FilePlan:
    with fs.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata
        return FilePlan(rows=meta.num_rows, columns=list(meta.schema.names))


def _lines(fs: pafs.FileSystem, path: str) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) of every line; offsets are of the decompressed stream."""
    with fs.open_input_stream(path, compression="detect") as f:
        offset, rest = 0, b""
        while True:
            chunk = f.read(READ_CHUNK)
            if not chunk:
                break
            data = rest + chunk
            lines = data.split(b"\n")
            rest = lines.pop()
            for line in lines:
                yield offset, line
                offset += len(line) + 1
        if rest:
            yield offset, rest


def _scan_jsonl(fs: pafs.FileSystem, path: str, rows_per_part: int) -> FilePlan:
    rows, starts, columns = 0, [], None
    end = 0
    for offset, line in _lines(fs, path):
        end = offset + len(line) + 1
        if not line.strip():
            continue
        if rows % rows_per_part == 0:
            starts.append(offset)
        if columns is None:
            try:
                first = json.loads(line)
                columns = list(first) if isinstance(first, dict) else []
            except ValueError:
                columns = None
        rows += 1
    starts.append(end)
    return FilePlan(rows=rows, columns=columns or [], byte_starts=None if _compressed(path) else starts)


def _csv_reader(fs: pafs.FileSystem, path: str, columns: list[str] | None, text_columns: list[str]):
    stream = fs.open_input_stream(path, compression="detect")
    convert = pacsv.ConvertOptions(
        include_columns=columns,
        column_types={c: pa.string() for c in text_columns},  # a column of digits is still text to embed
        strings_can_be_null=True,
    )
    return stream, pacsv.open_csv(stream, convert_options=convert)


def _scan_csv(fs: pafs.FileSystem, path: str) -> FilePlan:
    stream, reader = _csv_reader(fs, path, None, [])
    with stream:
        names = list(reader.schema.names)
        rows = sum(batch.num_rows for batch in reader)
    return FilePlan(rows=rows, columns=names)


def plan_parts(uri: str, wanted_format: str, needed: list[str], rows_per_part: int) -> list[Part]:
    """Cut the input into parts of at most `rows_per_part` rows (never across files), numbered in file order.
    Every needed column must be in every parquet / CSV file (JSON lines: rows without it are bad rows)."""
    fs, path = filesystem(uri)
    parts: list[Part] = []
    first_row = 0
    for file_path, fmt, info in list_files(fs, path, wanted_format):
        if fmt == "parquet":
            plan = _scan_parquet(fs, file_path)
        elif fmt == "csv":
            plan = _scan_csv(fs, file_path)
        else:
            plan = _scan_jsonl(fs, file_path, rows_per_part)
        missing = [c for c in needed if c not in plan.columns]
        if missing and fmt != "jsonl":  # JSON lines: each row has its own keys; a row without the text is bad
            raise SourceError(f"{file_path} has no column {', '.join(missing)} (its columns: {plan.columns})")
        source = SourceFile(
            path=_display_path(uri, file_path), format=fmt, size=info.size or 0, mtime_ns=info.mtime_ns, rows=plan.rows
        )
        for k, start in enumerate(range(0, plan.rows, rows_per_part)):
            stop = min(start + rows_per_part, plan.rows)
            parts.append(
                Part(
                    index=len(parts),
                    file=source,
                    start=start,
                    stop=stop,
                    first_row=first_row + start,
                    byte_start=plan.byte_starts[k] if plan.byte_starts else None,
                    byte_stop=plan.byte_starts[k + 1] if plan.byte_starts else None,
                )
            )
        first_row += plan.rows
    return parts


def _display_path(uri: str, file_path: str) -> str:
    """The file as the job's workers will open it: a URI keeps its scheme."""
    if "://" not in uri:
        return file_path
    scheme = uri.split("://", 1)[0]
    return f"{scheme}://{file_path}"


# ---- reading one part -----------------------------------------------------------------------------------


@dataclass(slots=True)
class PartRows:
    """One part's rows: the needed columns (ids as Arrow arrays, the embedded columns as Python values), each
    row's job-wide number, and the rows that could not be read (position in the part -> reason)."""

    rows: list[int]
    ids: dict[str, pa.Array]
    texts: list[Any] | None
    images: list[Any] | None
    unreadable: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)


def read_part(part: Part, text_column: str | None, image_column: str | None, id_columns: list[str]) -> PartRows:
    fs, path = filesystem(part.file.path)
    embedded = [c for c in (text_column, image_column) if c is not None]
    if part.file.format == "jsonl":
        ids, values, unreadable = _read_jsonl_rows(fs, path, part, id_columns, embedded)
        count = len(values[embedded[0]])
    else:
        if part.file.format == "parquet":
            table = _read_parquet_rows(fs, path, part, [*id_columns, *embedded])
        else:
            table = _read_csv_rows(fs, path, part, [*id_columns, *embedded], embedded)
        ids = {c: table.column(c).combine_chunks() for c in id_columns}
        values = {c: table.column(c).to_pylist() for c in embedded}
        unreadable, count = {}, table.num_rows
    if count != part.rows:
        raise SourceError(f"{part.file.path} changed since it was planned: rows {part.start}..{part.stop} gave {count}")
    return PartRows(
        rows=list(range(part.first_row, part.first_row + part.rows)),
        ids=ids,
        texts=values[text_column] if text_column else None,
        images=values[image_column] if image_column else None,
        unreadable=unreadable,
    )


def _read_parquet_rows(fs: pafs.FileSystem, path: str, part: Part, columns: list[str]) -> pa.Table:
    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        groups, offset, first = [], 0, None
        for g in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if offset < part.stop and offset + n > part.start:
                groups.append(g)
                first = offset if first is None else first
            offset += n
        if not groups:
            return pa.table({c: pa.array([], pa.null()) for c in columns})
        table = pf.read_row_groups(groups, columns=columns)
    return table.slice(part.start - first, part.rows)


def _read_csv_rows(fs: pafs.FileSystem, path: str, part: Part, columns: list[str], texts: list[str]) -> pa.Table:
    stream, reader = _csv_reader(fs, path, columns, texts)
    batches, seen = [], 0
    with stream:
        for batch in reader:  # CSV lines may hold quoted newlines: rows are only found by parsing from the start
            lo, hi = max(part.start - seen, 0), min(part.stop - seen, batch.num_rows)
            if hi > lo:
                batches.append(batch.slice(lo, hi - lo))
            seen += batch.num_rows
            if seen >= part.stop:
                break
    return pa.Table.from_batches(batches, schema=reader.schema).select(columns)


def _part_lines(fs: pafs.FileSystem, path: str, part: Part) -> Iterator[bytes]:
    if part.byte_start is not None and part.byte_stop is not None:
        with fs.open_input_file(path) as f:
            f.seek(part.byte_start)
            data = f.read(part.byte_stop - part.byte_start)
        yield from (line for line in data.split(b"\n") if line.strip())
        return
    row = 0
    for _, line in _lines(fs, path):
        if not line.strip():
            continue
        if part.start <= row < part.stop:
            yield line
        row += 1
        if row >= part.stop:
            return


def _read_jsonl_rows(
    fs: pafs.FileSystem, path: str, part: Part, id_columns: list[str], embedded: list[str]
) -> tuple[dict[str, pa.Array], dict[str, list], dict[int, str]]:
    """Ids as Arrow arrays (types inferred over the part), embedded values as they are in the JSON (a number
    where text belongs is the row's problem, found by the planning checks)."""
    ids: dict[str, list] = {c: [] for c in id_columns}
    values: dict[str, list] = {c: [] for c in embedded}
    unreadable: dict[int, str] = {}
    for i, line in enumerate(_part_lines(fs, path, part)):
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError(f"a JSON {type(obj).__name__}, not an object")
        except ValueError as exc:
            unreadable[i] = f"the line is not a JSON object: {exc}"
            obj = {}
        for c, column in (*ids.items(), *values.items()):
            column.append(obj.get(c))
    return {c: _id_array(v) for c, v in ids.items()}, values, unreadable


def _id_array(values: list) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types in one id column: all as JSON text
        return pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values])

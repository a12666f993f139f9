"""`embedserve corpus INPUT OUTPUT -m MODEL ...`: the corpus job from the command line.

The same command is the entrypoint of a cluster job (`ray job submit ... -- python -m serve_app.corpus ...`):
under `ray job submit` $RAY_ADDRESS names the cluster and the job joins it. Progress goes to stderr; the
report (JSON) to stdout. Exit status: 0 done, 1 some parts failed (rerun to retry them), 2 the job cannot run.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import ValidationError

from serve_app.config import ModelEntry


def model_from_serve_config(path: str, name: str) -> tuple[dict[str, Any], str | None, int | None]:
    """The model entry named `name` in a Serve config's applications -> (entry, catalog, max_chars_per_input),
    so the job embeds with the model exactly as that service declares it."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        config = yaml.safe_load(fh) or {}
    for app in config.get("applications") or []:
        args = app.get("args") or {}
        for entry in args.get("models") or []:
            if entry.get("name") == name:
                limits = args.get("limits") or {}
                return dict(entry), args.get("catalog"), limits.get("max_chars_per_input")
    raise ValueError(f"{path} serves no model named {name!r}")


def job_from_args(args: argparse.Namespace):
    from serve_app.corpus.job import CorpusJob

    entry: dict[str, Any] = {"name": args.model}
    catalog, max_chars = args.catalog, args.max_chars_per_input
    if args.serve_config:
        entry, config_catalog, config_chars = model_from_serve_config(args.serve_config, args.model)
        catalog = catalog or config_catalog
        max_chars = max_chars or config_chars
    if args.model_json:
        entry.update(json.loads(args.model_json))
    if args.family:
        entry["family"] = args.family
    if args.source:
        entry["source"] = args.source
    fields: dict[str, Any] = {
        "input": args.input,
        "output": args.output,
        "format": args.format,
        "text_column": None if args.no_text else args.text_column,
        "image_column": args.image_column,
        "id_columns": args.id_column or [],
        "model": ModelEntry.model_validate(entry),
        "catalog": catalog,
        "task": args.task,
        "prompt_name": args.prompt_name,
        "dimensions": args.dimensions,
        "truncate": args.truncate,
        "truncation_direction": args.truncation_direction,
        "normalized": not args.no_normalize,
        "embedding_type": args.embedding_type,
        "output_kinds": args.output_kind,
        "return_sparse_tokens": args.sparse_tokens,
    }
    optional = {
        "max_chars_per_input": max_chars,
        "rows_per_part": args.rows_per_part,
        "window_rows": args.window_rows,
        "actors": args.actors,
        "num_cpus": args.num_cpus,
        "num_gpus": args.num_gpus,
        "torch_threads": args.torch_threads,
        "max_batch_tokens": args.max_batch_tokens,
        "max_batch_size": args.max_batch_size,
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    return CorpusJob.model_validate(fields)


def cmd_corpus(args: argparse.Namespace) -> int:
    from serve_app.corpus.planning import JobError
    from serve_app.corpus.runner import run_corpus_job
    from serve_app.corpus.sources import SourceError

    try:
        job = job_from_args(args)
        report = run_corpus_job(job, address=args.address, overwrite=args.overwrite)
    except (JobError, SourceError, ValidationError, ValueError, OSError) as exc:
        print(f"embedserve corpus: {exc}", file=sys.stderr)
        return 2
    print(report.model_dump_json(), flush=True)
    print(
        f"corpus: {report.rows_embedded:,} rows embedded, {report.rows_errored:,} bad rows ({report.errors_file}); "
        f"this run: {report.parts_computed} parts computed, {report.parts_skipped} skipped, "
        f"{len(report.parts_failed)} failed, {report.seconds:.1f} s",
        file=sys.stderr,
    )
    return 1 if report.parts_failed else 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `corpus` to an `add_subparsers()` object."""
    p = subparsers.add_parser(
        "corpus",
        help="embed a dataset (parquet, JSON lines, CSV) into parquet parts with Ray Data; reruns resume",
        description=__doc__.splitlines()[0],
    )
    return configure(p)


def configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The corpus job's arguments, on a parser of its own or a subcommand's."""
    p.add_argument("input", help="a file or folder (local path or a URI pyarrow reads: s3://, gs://, ...)")
    p.add_argument("output", help="output folder (data/ parts, errors.jsonl, job.json)")
    p.add_argument("-m", "--model", required=True, help="a catalog name, or the name of a model declared here")
    p.add_argument("--family", help="declare the model: its family (with --source)")
    p.add_argument("--source", help="declare the model: HF id, local directory or package:<module>")
    p.add_argument("--model-json", help="more of the declaration, as in a Serve config: '{\"max_tokens\": 512}'")
    p.add_argument("--serve-config", help="take the model's entry (and catalog, limits) from this Serve config")
    p.add_argument("--catalog", help="catalog YAML (default: the shipped one)")
    p.add_argument("--format", choices=["auto", "parquet", "jsonl", "csv"], default="auto")
    p.add_argument("--text-column", default="text")
    p.add_argument("--no-text", action="store_true", help="image-only rows: no text column")
    p.add_argument("--image-column", help="Qwen3-VL embedding models: image bytes or URL / data URI / base64")
    p.add_argument("--id-column", action="append", help="copied to the output (repeat for several); default: row")
    # the request, as /v1/embeddings takes it
    p.add_argument("--task")
    p.add_argument("--prompt-name")
    p.add_argument("--dimensions", type=int)
    p.add_argument("--truncate", action="store_true", help="cut over-long rows instead of listing them as bad")
    p.add_argument("--truncation-direction", choices=["left", "right"], default="right")
    p.add_argument("--no-normalize", action="store_true")
    p.add_argument("--embedding-type", choices=["float", "binary", "ubinary", "int8"], default="float")
    p.add_argument("--output-kind", action="append", choices=["dense", "sparse", "colbert"], help="BGE-M3 outputs")
    p.add_argument("--sparse-tokens", action="store_true", help="the token strings beside each sparse vector")
    p.add_argument("--max-chars-per-input", type=int)
    # how it runs
    p.add_argument("--rows-per-part", type=int, help="rows per output part, the unit of resume (default 2000)")
    p.add_argument("--window-rows", type=int, help="rows tokenized and length-sorted together")
    p.add_argument("--actors", type=int, help="model actors (default: as many as the free resources hold)")
    p.add_argument("--num-cpus", type=float, help="CPUs per actor (default: the model's num_cpus)")
    p.add_argument("--num-gpus", type=float, help="GPU share per actor, e.g. 0.25 (default: the model's)")
    p.add_argument("--torch-threads", type=int)
    p.add_argument("--max-batch-tokens", type=int, help="default: the model's batching.max_batch_tokens")
    p.add_argument("--max-batch-size", type=int, help="default: the model's batching.max_batch_size")
    p.add_argument("--address", help="a Ray cluster (default: $RAY_ADDRESS, else a local Ray on 127.0.0.1)")
    p.add_argument("--overwrite", action="store_true", help="replace an output written with other settings")
    p.set_defaults(func=cmd_corpus)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = configure(argparse.ArgumentParser(prog="python -m serve_app.corpus", description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)

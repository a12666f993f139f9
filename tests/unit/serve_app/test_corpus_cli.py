"""`embedserve corpus` argument glue: flags to a CorpusJob, and a model taken from a Serve config as served."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from serve_app.cli_commands import register
from serve_app.corpus.cli import configure, job_from_args, model_from_serve_config

REPO = Path(__file__).resolve().parents[3]


def parse(*argv: str):
    return configure(argparse.ArgumentParser()).parse_args(list(argv))


def test_flags_become_the_jobs_request_and_resources():
    args = parse(
        "in.parquet", "s3://bucket/out", "-m", "q", "--family", "qwen3-embedding", "--source", "/models/q",
        "--model-json", '{"max_tokens": 512}', "--id-column", "doc", "--id-column", "lang", "--task",
        "retrieval.query", "--dimensions", "64", "--truncate", "--embedding-type", "int8", "--num-gpus", "0.25",
        "--actors", "4", "--rows-per-part", "500",
    )  # fmt: skip
    job = job_from_args(args)
    assert job.model.model_dump() == {
        "name": "q",
        "family": "qwen3-embedding",
        "source": "/models/q",
        "max_tokens": 512,
    }
    assert (job.input, job.output, job.id_columns) == ("in.parquet", "s3://bucket/out", ["doc", "lang"])
    assert (job.task, job.dimensions, job.truncate, job.embedding_type) == ("retrieval.query", 64, True, "int8")
    assert (job.num_gpus, job.actors, job.rows_per_part, job.num_cpus) == (0.25, 4, 500, None)
    assert job.normalized and job.output_kinds is None and job.text_column == "text"


def test_a_model_from_a_serve_config_is_the_one_it_serves():
    config = REPO / "configs" / "local.yaml"
    entry, catalog, max_chars = model_from_serve_config(str(config), "all-minilm-l6-v2")
    assert catalog is None and max_chars is None  # local.yaml uses the shipped catalog and default limits
    assert entry["deployment"]["torch_threads"] == 2 and entry["batching"]["max_batch_tokens"] == 8192
    job = job_from_args(parse("in.csv", "out", "-m", "all-minilm-l6-v2", "--serve-config", str(config)))
    assert job.model.model_dump()["batching"]["max_batch_tokens"] == 8192
    with pytest.raises(ValueError, match="serves no model named 'nope'"):
        model_from_serve_config(str(config), "nope")


def test_corpus_is_a_subcommand_beside_the_others():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    assert {"models", "embed", "corpus"} <= set(sub.choices)
    args = parser.parse_args(["corpus", "in.jsonl", "out", "-m", "all-minilm-l6-v2", "--output-kind", "sparse"])
    assert job_from_args(args).output_kinds == ["sparse"]

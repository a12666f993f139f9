"""Corpus jobs: embed a whole dataset in Ray Data with the service's own engines and request planning.

Modules, one job each: job (settings, parts, markers, report), sources (find, plan and read parts), planning
(model spec and the router's request planning per row), embedder (the Ray Data actor), output (parquet parts,
errors, markers, resume), progress (the stderr line), runner (the driver), cli (`embedserve corpus`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from serve_app.corpus.job import CorpusJob, JobReport

if TYPE_CHECKING:
    from serve_app.corpus.runner import run_corpus_job

__all__ = ["CorpusJob", "JobReport", "run_corpus_job"]


def __getattr__(name: str):
    """`run_corpus_job` is imported on first use: the CLI's other commands should not load pyarrow and Ray."""
    if name == "run_corpus_job":
        from serve_app.corpus.runner import run_corpus_job

        return run_corpus_job
    raise AttributeError(name)

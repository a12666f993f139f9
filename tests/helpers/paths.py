"""Where the repository is, for tests that read its files or run its modules (whatever folder they live in)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # tests/helpers/paths.py -> the repository root

"""Benchmarks share the tests' helpers (fixtures, stub servers)."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
for folder in (TESTS, TESTS / "rest"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

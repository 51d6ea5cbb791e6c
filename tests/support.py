"""Helpers for tests that need a real component (Redis, Prometheus, ...).

On a user's machine a missing component skips the test with a message that
names it; in CI (``CI=true``) it fails, because CI must run everything.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(available: bool, what: str) -> None:
    """Skip when a component is missing on a user's machine; fail in CI."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available")
    pytest.skip(f"{what} is not available on this machine")


def require_binary(name: str) -> str:
    """The path of an executable the test needs (see :func:`require`)."""
    path = shutil.which(name)
    require(path is not None, f"the {name} executable")
    assert path is not None
    return path


def wait_for(
    condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """Poll ``condition`` until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")

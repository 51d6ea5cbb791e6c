"""The public namespace: sorted, complete, and importable without extras."""

from __future__ import annotations

import subprocess
import sys

import ig_otel


def test_all_is_sorted_case_insensitively():
    assert ig_otel.__all__ == sorted(ig_otel.__all__, key=str.lower)


def test_every_exported_name_resolves():
    for name in ig_otel.__all__:
        assert getattr(ig_otel, name) is not None, name


def test_public_classes_do_not_leak_private_modules_in_all():
    assert not [name for name in ig_otel.__all__ if name.startswith("_") and
                name != "__version__"]


def test_import_does_not_need_httpx_or_requests():
    code = (
        "import sys; sys.modules['httpx'] = None; sys.modules['requests'] = None\n"
        "import ig_otel; print(ig_otel.IGInstrumentor.__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "IGInstrumentor"

"""An unchanged SDK 2.x bot under ``opentelemetry-instrument``, both import orders.

"late": the bot imports ``lightstreamer.client`` itself, after ig-otel has
registered its import hook. "early": another instrumentor, listed before
ig-otel, imports ``lightstreamer.client`` first, so ig-otel has to patch a
module that is already loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import EPIC

pytest.importorskip("lightstreamer.client")
pytestmark = pytest.mark.ls2

BOT = Path(__file__).parent / "bots" / "ls_bot.py"

_EARLY_MODULE = '''
import sys


class EarlyImport:
    """An instrumentor that loads lightstreamer.client before ig-otel runs."""

    def instrument(self, **kwargs):
        import lightstreamer.client  # noqa: F401
        from ig_otel import _lightstreamer

        active = _lightstreamer._active is not None
        sys.stderr.write(f"EARLY-IMPORT ig-otel-active={active}\\n")
'''


def _early_importer(folder: Path) -> Path:
    """A distribution whose instrumentor entry point comes before ig-otel's."""
    folder.mkdir()
    (folder / "early_ls.py").write_text(_EARLY_MODULE)
    info = folder / "early_ls-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: early-ls\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[opentelemetry_instrumentor]\nearly_ls = early_ls:EarlyImport\n")
    return folder


def _metrics(stdout: str) -> dict[str, list[dict]]:
    """Data points by metric name from the console exporter's JSON output."""
    decoder = json.JSONDecoder()
    found: dict[str, list[dict]] = {}
    index = 0
    while (start := stdout.find("{", index)) >= 0:
        try:
            document, index = decoder.raw_decode(stdout, start)
        except ValueError:
            index = start + 1
            continue
        for resource in document.get("resource_metrics", ()):
            for scope in resource["scope_metrics"]:
                for metric in scope["metrics"]:
                    points = metric["data"]["data_points"]
                    found.setdefault(metric["name"], []).extend(points)
    return found


@pytest.mark.parametrize("order", ["late", "early"])
def test_unchanged_bot_exports_stream_updates(order, simulator, tmp_path):
    command = Path(sys.executable).with_name("opentelemetry-instrument")
    assert command.exists(), "opentelemetry-instrument is not installed"
    env = {
        **os.environ,
        "IG_REST_URL": simulator.rest_url,
        "IG_USERNAME": simulator.username,
        "IG_PASSWORD": simulator.password,
        "IG_API_KEY": simulator.api_key,
        "IG_EPIC": EPIC,
        "OTEL_PYTHON_IG_HOSTS": "127.0.0.1",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "console",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "ls-bot",
    }
    env.pop("CI", None)
    if order == "early":
        env["PYTHONPATH"] = str(_early_importer(tmp_path / "front"))
    result = subprocess.run(
        [str(command), sys.executable, str(BOT)],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "BOT prices=" in result.stderr
    if order == "early":
        assert "EARLY-IMPORT ig-otel-active=False" in result.stderr

    metrics = _metrics(result.stdout)
    [updates] = metrics["ig.stream.updates"]
    assert updates["attributes"]["ig.stream.item_kind"] == "MARKET"
    # The bot stops at its fifth update; the SDK may hand that last one to
    # ig-otel's listener after the process has exported, so allow one less.
    received = int(result.stderr.split("BOT prices=")[1].split()[0])
    assert received - 1 <= updates["value"] <= received
    assert "ig.stream.status" in metrics
    assert "ig.rest.request.duration" in metrics
    for secret in (simulator.password, simulator.api_key, simulator.account_id):
        assert secret not in result.stdout

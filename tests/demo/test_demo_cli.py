"""``ig-otel demo`` and ``ig-otel loadtest`` run as a user runs them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("ig-otel")
#: The demo simulator's credentials and account ids; none may be shown.
SECRETS = ("sim-api-key-0001", "sim-password", "ABC123", "ABC456")
#: CST and X-SECURITY-TOKEN values are 40 hex digits in the simulator.
TOKEN = re.compile(r"\b[0-9a-f]{40}\b")


def run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    if not SCRIPT.exists():
        pytest.fail(f"the ig-otel console script is missing next to {sys.executable}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
        assert not TOKEN.search(text), "a CST or X-SECURITY-TOKEN leaked"


def test_demo_walks_the_faults_and_reports_what_it_captured(tmp_path):
    out = tmp_path / "demo.json"
    result = run("demo", "--duration", "12", "--json", str(out), timeout=75)
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())
    assert_no_secrets(result.stdout, result.stderr, out.read_text())

    spans = summary["spans"]
    assert spans["POST /positions/otc"]["count"] >= 2
    assert spans["GET /confirms/{dealReference}"]["count"] >= 2
    assert "ig.stream.session" in spans
    metrics = summary["metrics"]
    sources = {p["attributes"]["ig.confirmation.source"]
               for p in metrics["ig.deal.confirmations"]}
    assert sources == {"rest", "stream"}
    assert sum(p["value"] for p in metrics["ig.stream.updates"]) > 0
    transitions = {p["attributes"]["ig.circuit_breaker.to"]
                   for p in metrics["ig.circuit_breaker.transitions"]}
    assert {"open", "closed"} <= transitions
    events = summary["events"]
    assert "ig.deal.rejected" in events and "ig.stream.status_change" in events
    assert [p["name"] for p in summary["phases"]][0] == "start"
    assert len(result.stdout.splitlines()) > len(summary["phases"])


def test_loadtest_runs_both_phases_and_reports_every_number(tmp_path):
    out = tmp_path / "load.json"
    result = run("loadtest", "--bots", "2", "--duration", "5", "--warmup", "2",
                 "--json", str(out), timeout=80)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert set(report["phases"]) == {"off", "on"}
    for phase in report["phases"].values():
        assert phase["bots_streaming"] == 2
        assert phase["updates"] > 0
        assert set(phase["latency_ms"]) == {"p50", "p95", "p99", "max"}
        assert phase["memory"]["samples"] >= 3
        assert phase["cpu_seconds"] >= 0
    assert report["phases"]["on"]["exported"]["spans"] > 0
    assert report["phases"]["off"]["exported"] == {}
    assert set(report["overhead_on_vs_off"]) >= {"cpu_seconds", "latency_p95"}
    assert report["settings"]["bots"] == 2
    assert "instrumentation on/off" in result.stdout

"""The unchanged bot under opentelemetry-instrument, in both load orders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from ig_stub import CST, XST

BOT = Path(__file__).parent / "bots" / "rest_bot.py"
SECRETS = (CST, XST, "bot-api-key-secret", "bot-password-secret")


def _instrument_command() -> str:
    command = Path(sys.executable).with_name("opentelemetry-instrument")
    assert command.exists(), "opentelemetry-instrument is not installed"
    return str(command)


def _dist_info(name: str) -> Path:
    dist = metadata.distribution(name)
    return Path(dist._path)  # the installed .dist-info folder


def _front_dir(tmp_path: Path, first: list[str]) -> Path:
    """A folder put first on sys.path so these distributions are found first."""
    front = tmp_path / "front"
    front.mkdir()
    for name in first:
        source = _dist_info(name)
        shutil.copytree(source, front / source.name)
    return front


def _run_bot(tmp_path, ig_stub, first: list[str], extra_env=None):
    env = {
        **os.environ,
        "IG_BASE_URL": ig_stub,
        "OTEL_PYTHON_IG_HOSTS": "127.0.0.1",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "console",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "rest-bot",
        "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
        "PYTHONPATH": str(_front_dir(tmp_path, first)),
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST": ".*",
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE": ".*",
        **(extra_env or {}),
    }
    env.pop("CI", None)
    result = subprocess.run(
        [_instrument_command(), sys.executable, str(BOT)],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result


def _json_objects(text: str) -> list[dict]:
    decoder = json.JSONDecoder()
    objects, index = [], 0
    while True:
        start = text.find("{", index)
        if start < 0:
            return objects
        try:
            document, index = decoder.raw_decode(text, start)
        except ValueError:
            index = start + 1
            continue
        objects.append(document)


def _load_order(stderr: str) -> list[str]:
    line = next(x for x in stderr.splitlines() if x.startswith("LOAD-ORDER "))
    return json.loads(line.split(" ", 1)[1])


ORDERS = {
    "ig-first": ["ig-otel"],
    "contrib-first": [
        "opentelemetry-instrumentation-httpx",
        "opentelemetry-instrumentation-requests",
    ],
}


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_unchanged_bot_gets_one_ig_span_per_call(order, tmp_path, ig_stub):
    result = _run_bot(tmp_path, ig_stub, ORDERS[order])

    names = _load_order(result.stderr)
    ig_index, httpx_index = names.index("ig"), names.index("httpx")
    assert (ig_index < httpx_index) == (order == "ig-first")

    documents = _json_objects(result.stdout)
    spans = [d for d in documents if "context" in d and "kind" in d]
    assert sorted(s["name"] for s in spans) == [
        "GET /accounts", "GET /confirms/{dealReference}", "POST /positions/otc",
        "POST /session",
    ]
    by_name = {s["name"]: s for s in spans}
    assert by_name["POST /positions/otc"]["attributes"]["ig.deal.reference"] == "REF42"
    assert by_name["GET /accounts"]["attributes"]["ig.allowance"] == "non_trading"
    # contrib is loaded in both orders, so its spans are the ones enriched
    for span in spans:
        assert "network.protocol.version" in span["attributes"], span["name"]

    metrics_text = json.dumps([d for d in documents if "resource_metrics" in d])
    assert "ig.rest.request.duration" in metrics_text
    # the allowance limiter observes by default
    assert "ig.allowance.utilization" in metrics_text
    for secret in SECRETS:
        assert secret not in result.stdout


def test_disabled_instrumentation_is_honoured(tmp_path, ig_stub):
    result = _run_bot(tmp_path, ig_stub, [],
                      {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "ig"})
    documents = _json_objects(result.stdout)
    spans = [d for d in documents if "context" in d and "kind" in d]
    assert spans, "contrib spans expected"
    assert all("url.template" not in s["attributes"] for s in spans)
    assert "ig.rest.request.duration" not in result.stdout


def test_bad_variable_is_a_clear_error_and_the_bot_still_runs(tmp_path, ig_stub):
    result = _run_bot(tmp_path, ig_stub, [],
                      {"OTEL_PYTHON_IG_RATE_LIMIT_MODE": "sometimes"})
    assert "OTEL_PYTHON_IG_RATE_LIMIT_MODE" in result.stderr
    assert "ig.rest.request.duration" not in result.stdout


def test_header_capture_is_on_yet_tokens_are_redacted(tmp_path, ig_stub):
    result = _run_bot(tmp_path, ig_stub, ORDERS["contrib-first"])
    assert "http.request.header.x_ig_api_key" in result.stdout
    assert "[REDACTED]" in result.stdout
    for secret in SECRETS:
        assert secret not in result.stdout


def test_without_contrib_ig_otel_makes_the_spans(tmp_path, ig_stub):
    result = _run_bot(tmp_path, ig_stub, [], {
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "httpx,requests",
    })
    documents = _json_objects(result.stdout)
    spans = [d for d in documents if "context" in d and "kind" in d]
    assert len(spans) == 4
    for span in spans:
        assert span["kind"] == "SpanKind.CLIENT"
        assert "network.protocol.version" not in span["attributes"]
        assert span["attributes"]["url.template"]

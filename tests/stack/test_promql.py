"""Every PromQL expression the stack ships: contract names, syntax, alert logic."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from _stack import (
    ALERTING,
    PROMETHEUS_CONFIG,
    PROMETHEUS_RULES,
    PROMTOOL_TESTS,
    STANDARD_SERIES,
    contract_series,
    load_yaml,
    metric_names,
    require_binary,
    shipped_queries,
    unescape,
    yaml_files,
)

QUERIES = shipped_queries()


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_binary("promtool")
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_lexer_finds_metric_names_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, url_template) (rate('
        'ig_rest_request_duration_seconds_bucket{job=~"a|b", x="up"}[5m]))) '
        "> bool 1e3 or on (job) max without (instance) (ig_stream_status) * 2"
    )

    assert metric_names(expr) == {
        "ig_rest_request_duration_seconds_bucket",
        "ig_stream_status",
    }


def test_contract_series_include_histogram_parts_and_counter_totals() -> None:
    series = contract_series()

    assert "ig_rest_request_duration_seconds_bucket" in series
    assert "ig_allowance_utilization_ratio" in series
    assert "ig_stream_updates_total" in series
    assert "ig_rest_request_duration_seconds" not in series


def test_the_stack_ships_queries_from_every_source() -> None:
    sources = {query.where.split(" ")[0] for query in QUERIES}

    assert {"ig-overview.json", "ig-alerts.yaml", "ig-otel.yaml"} <= sources
    assert "ig-alerts.yml" in sources


@pytest.mark.parametrize("query", QUERIES, ids=lambda query: query.where)
def test_query_uses_only_series_of_the_contract(query) -> None:
    names = metric_names(query.runnable())

    assert names, f"no metric name found in {query.expr!r}"
    unknown = names - contract_series() - STANDARD_SERIES
    assert not unknown, f"{query.where} queries series nobody emits: {unknown}"


def test_every_query_parses_with_promtool(tmp_path: Path) -> None:
    # promtool has no bare "parse" command in 2.42: each expression becomes
    # a recording rule, and checking the rule file parses all of them.
    rules = [
        {"record": f"stack:query_{index}", "expr": query.runnable()}
        for index, query in enumerate(QUERIES)
    ]
    rule_file = tmp_path / "queries.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]}))

    result = _promtool("check", "rules", str(rule_file))

    assert result.returncode == 0, _explain(result)


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    numbered = "\n".join(
        f"query_{index}: {query.where}" for index, query in enumerate(QUERIES)
    )
    return f"{result.stdout}\n{result.stderr}\n{numbered}"


def test_prometheus_config_and_its_rule_files_pass_promtool() -> None:
    result = _promtool("check", "config", str(PROMETHEUS_CONFIG))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    "test_file", sorted(PROMTOOL_TESTS.glob("*.yml")), ids=lambda path: path.name
)
def test_alert_rules_behave_as_their_unit_tests_say(test_file: Path) -> None:
    result = _promtool("test", "rules", str(test_file))

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_prometheus_rule_file_has_unit_tests() -> None:
    tested = set()
    for test_file in PROMTOOL_TESTS.glob("*.yml"):
        for rule_file in load_yaml(test_file)["rule_files"]:
            tested.add((test_file.parent / rule_file).resolve())

    assert tested >= {path.resolve() for path in yaml_files(PROMETHEUS_RULES)}


def _prometheus_alerts() -> dict[str, dict]:
    alerts = {}
    for path in yaml_files(PROMETHEUS_RULES):
        for group in load_yaml(path)["groups"]:
            alerts.update({rule["alert"]: rule for rule in group["rules"]})
    return alerts


def _grafana_rules() -> list[dict]:
    return [
        rule
        for path in yaml_files(ALERTING)
        for group in load_yaml(path).get("groups", [])
        for rule in group["rules"]
    ]


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("( ", "(").strip()


@pytest.mark.parametrize("rule", _grafana_rules(), ids=lambda rule: rule["uid"])
def test_grafana_rule_matches_its_prometheus_twin(rule: dict) -> None:
    twin = _prometheus_alerts().get(rule["title"])
    assert twin is not None, f"no Prometheus alert named {rule['title']}"

    steps = {item["refId"]: item["model"] for item in rule["data"]}
    evaluator = steps[rule["condition"]]["conditions"][0]["evaluator"]
    operator = {"gt": ">", "lt": "<"}[evaluator["type"]]
    threshold = evaluator["params"][0]
    expected = f"{unescape(steps['A']['expr'])} {operator} {threshold}"

    assert _flat(twin["expr"]) == _flat(expected)
    assert twin.get("for") == rule.get("for")
    assert twin["labels"]["severity"] == rule["labels"]["severity"]

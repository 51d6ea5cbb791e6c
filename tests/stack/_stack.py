"""Shared knowledge of the bundled stack's files, for the tests in this folder.

Paths of the shipped artifacts, small parsers for the collector's env-var
syntax, the collection of every PromQL expression the stack ships, and the
series names the telemetry contract produces.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ig_otel._telemetry import INSTRUMENTS, Kind, prometheus_name

# Skip on a user's machine, fail in CI; re-exported for the stack tests.
from support import require as require
from support import require_binary as require_binary

REPO = Path(__file__).resolve().parents[2]
COLLECTOR_CONFIG = REPO / "collector" / "config.yaml"
BUILDER_MANIFEST = REPO / "collector" / "builder-config.yaml"
BUILD_SCRIPT = REPO / "collector" / "build.sh"
COMPOSE = REPO / "docker-compose.observability.yml"
TEMPO_CONFIG = REPO / "tempo" / "tempo.yaml"
PROMETHEUS_CONFIG = REPO / "prometheus" / "prometheus.yml"
PROMETHEUS_RULES = REPO / "prometheus" / "rules"
PROMTOOL_TESTS = Path(__file__).resolve().parent / "promtool"
GRAFANA = REPO / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards"
ALERTING = GRAFANA / "provisioning" / "alerting"
DASHBOARDS = GRAFANA / "dashboards"


#: Series every Prometheus setup has, which queries may use besides the contract.
STANDARD_SERIES = frozenset({"up", "target_info"})


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def yaml_files(folder: Path) -> list[Path]:
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])


def dashboards() -> dict[Path, dict[str, Any]]:
    return {
        path: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS.glob("*.json"))
    }


def manifest_version() -> str:
    return str(load_yaml(BUILDER_MANIFEST)["dist"]["version"])


# -- collector configuration syntax -------------------------------------------

_ENV_REF = re.compile(
    r"\$\{env:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
)


def env_default(value: str) -> str:
    """Resolve ``${env:NAME:-default}`` references to their defaults."""
    return _ENV_REF.sub(lambda match: match.group("default") or "", str(value))


def env_names(text: str) -> set[str]:
    return {match.group("name") for match in _ENV_REF.finditer(text)}


def component_type(component_id: str) -> str:
    """``otlp_grpc/tempo`` -> ``otlp_grpc``: the type part of a component id."""
    return component_id.split("/", 1)[0]


def otelcol_binary() -> Path | None:
    """The collector built by collector/build.sh, if this machine has one."""
    explicit = os.environ.get("IG_OTEL_OTELCOL")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    cache = Path(
        os.environ.get("IG_OTEL_CACHE", Path.home() / ".cache" / "ig-otel")
    )
    candidate = cache / f"otelcol-{manifest_version()}" / "otelcol-ig"
    return candidate if candidate.is_file() else None


# -- PromQL shipped with the stack ----------------------------------------------


@dataclass(frozen=True)
class Query:
    """One PromQL expression and where it is shipped."""

    where: str
    expr: str

    def runnable(self) -> str:
        """The expression with Grafana's macros and variables filled in."""
        return substitute_macros(self.expr)


_MACROS = (
    ("$__rate_interval", "5m"),
    ("$__interval", "1m"),
    ("$__range", "1h"),
    ("$__tags", 'job=~".*"'),
)
_VARIABLE = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(?::[a-z]+)?\}?")
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.*),\s*\w+\s*\)$", re.S)


def substitute_macros(expr: str) -> str:
    for macro, value in _MACROS:
        expr = expr.replace(macro, value)
    return _VARIABLE.sub(".*", expr)


def _dashboard_queries() -> Iterator[Query]:
    for path, dashboard in dashboards().items():
        for panel in dashboard.get("panels", []):
            for target in panel.get("targets", []):
                if target.get("expr"):
                    where = f"{path.name} panel {panel['id']} {target['refId']}"
                    yield Query(where, target["expr"])
        for variable in dashboard.get("templating", {}).get("list", []):
            query = variable.get("query")
            text = query.get("query") if isinstance(query, dict) else query
            found = _LABEL_VALUES.match(text or "")
            if variable.get("type") == "query" and found:
                where = f"{path.name} variable {variable['name']}"
                yield Query(where, found.group("selector"))


def _grafana_alert_queries() -> Iterator[Query]:
    for path in yaml_files(ALERTING):
        for group in load_yaml(path).get("groups", []):
            for rule in group["rules"]:
                for item in rule["data"]:
                    if item["datasourceUid"] != "__expr__":
                        where = f"{path.name} rule {rule['uid']} {item['refId']}"
                        yield Query(where, unescape(item["model"]["expr"]))


def _datasource_queries() -> Iterator[Query]:
    for path in yaml_files(DATASOURCES):
        for source in load_yaml(path)["datasources"]:
            links = source.get("jsonData", {}).get("tracesToMetrics", {})
            for query in links.get("queries", []):
                where = f"{path.name} {source['uid']} {query['name']}"
                yield Query(where, unescape(query["query"]))


def _prometheus_rule_queries() -> Iterator[Query]:
    for path in yaml_files(PROMETHEUS_RULES):
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule.get("record")
                yield Query(f"{path.name} {name}", rule["expr"])


def shipped_queries() -> list[Query]:
    """Every PromQL expression in dashboards, alert rules and datasources."""
    return [
        *_dashboard_queries(),
        *_grafana_alert_queries(),
        *_datasource_queries(),
        *_prometheus_rule_queries(),
    ]


def unescape(value: str) -> str:
    """Grafana provisioning writes a literal ``$`` as ``$$``."""
    return value.replace("$$", "$")


# -- metric names ----------------------------------------------------------------

_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan",
})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_BRACED = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)"
)
_IDENTIFIER = re.compile(r"(?<![\w.])([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects (a small PromQL lexer).

    Strings, label matchers, range and subquery brackets and grouping
    label lists are removed first; what is left that is not a function
    call, keyword or number is a metric name.
    """
    text = _STRING.sub('""', expr)
    text = _BRACED.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    found = {name for name in _IDENTIFIER.findall(text)}
    return {name for name in found if name.lower() not in _KEYWORDS}


def contract_series() -> frozenset[str]:
    """Every Prometheus series name the telemetry contract produces."""
    names: set[str] = set()
    for instrument in INSTRUMENTS:
        base = prometheus_name(instrument)
        if instrument.kind is Kind.HISTOGRAM:
            names.update(f"{base}_{part}" for part in ("bucket", "sum", "count"))
        else:
            names.add(base)
    return frozenset(names)

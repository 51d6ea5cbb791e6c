"""Grafana provisioning files, held to the schema Grafana enforces at start-up.

Grafana is not runnable here; a mistake in these files stops it from
starting (or leaves a dashboard empty), so each rule it enforces is checked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from _stack import (
    ALERTING,
    DASHBOARD_PROVIDERS,
    DATASOURCES,
    GRAFANA,
    dashboards,
    load_yaml,
    yaml_files,
)

DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
NO_DATA_STATES = {"NoData", "Alerting", "OK", "KeepLast"}
EXEC_ERR_STATES = {"Error", "Alerting", "OK", "KeepLast"}
BUILTIN_UIDS = {"__expr__", "-- Grafana --", "grafana"}
#: Settings of the contact points used here that carry secrets.
SECRET_SETTINGS = {"url", "authorization_credentials", "password", "token"}

DASHBOARDS = dashboards()


def _datasources() -> list[dict[str, Any]]:
    return [
        source
        for path in yaml_files(DATASOURCES)
        for source in load_yaml(path)["datasources"]
    ]


def _datasource_uids() -> set[str]:
    return {source["uid"] for source in _datasources()}


def _alerting() -> dict[str, list[dict[str, Any]]]:
    merged: dict[str, list[dict[str, Any]]] = {}
    for path in yaml_files(ALERTING):
        document = load_yaml(path)
        assert document["apiVersion"] == 1
        for key, value in document.items():
            if key != "apiVersion":
                merged.setdefault(key, []).extend(value)
    return merged


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _alerting()["groups"] for rule in group["rules"]]


def _walk_datasource_refs(node: Any) -> list[Any]:
    refs = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                refs.append(value)
            else:
                refs.extend(_walk_datasource_refs(value))
    elif isinstance(node, list):
        for item in node:
            refs.extend(_walk_datasource_refs(item))
    return refs


# -- datasources ------------------------------------------------------------------


def test_provisioning_folders_hold_only_yaml_files() -> None:
    # A stray file or sub-folder in a provisioning folder stops Grafana.
    for folder in (DATASOURCES, DASHBOARD_PROVIDERS, ALERTING):
        for entry in folder.iterdir():
            assert entry.is_file() and entry.suffix in (".yaml", ".yml"), entry


def test_datasources_have_unique_uids_and_one_default() -> None:
    sources = _datasources()
    uids = [source["uid"] for source in sources]

    assert len(uids) == len(set(uids))
    assert sum(bool(source.get("isDefault")) for source in sources) == 1
    assert {source["type"] for source in sources} == {"prometheus", "tempo"}


def test_exemplars_link_both_trace_id_spellings_to_tempo() -> None:
    prometheus = next(s for s in _datasources() if s["type"] == "prometheus")
    tempo = next(s for s in _datasources() if s["type"] == "tempo")
    links = prometheus["jsonData"]["exemplarTraceIdDestinations"]

    assert {link["name"] for link in links} == {"trace_id", "traceID"}
    assert {link["datasourceUid"] for link in links} == {tempo["uid"]}


def test_tempo_links_back_to_prometheus() -> None:
    prometheus = next(s for s in _datasources() if s["type"] == "prometheus")
    tempo = next(s for s in _datasources() if s["type"] == "tempo")

    assert tempo["jsonData"]["serviceMap"]["datasourceUid"] == prometheus["uid"]
    traces_to_metrics = tempo["jsonData"]["tracesToMetrics"]
    assert traces_to_metrics["datasourceUid"] == prometheus["uid"]


# -- dashboards -------------------------------------------------------------------


def test_dashboard_provider_is_well_formed() -> None:
    providers = [
        provider
        for path in yaml_files(DASHBOARD_PROVIDERS)
        for provider in load_yaml(path)["providers"]
    ]
    names = [provider["name"] for provider in providers]

    assert names and len(names) == len(set(names))
    for provider in providers:
        assert provider["type"] == "file"
        assert provider["options"]["path"].startswith("/")
        assert "folderUid" not in provider


def test_dashboards_have_unique_uids() -> None:
    uids = [dashboard["uid"] for dashboard in DASHBOARDS.values()]

    assert DASHBOARDS
    assert len(uids) == len(set(uids))
    assert all(0 < len(uid) <= 40 for uid in uids)


@pytest.mark.parametrize("path", sorted(DASHBOARDS), ids=lambda path: path.name)
def test_dashboard_is_ready_for_file_provisioning(path: Path) -> None:
    dashboard = DASHBOARDS[path]
    text = path.read_text(encoding="utf-8")

    assert "__inputs" not in dashboard
    assert "${DS_" not in text
    assert dashboard.get("id") is None
    assert dashboard["title"] and dashboard["schemaVersion"] >= 39


@pytest.mark.parametrize("path", sorted(DASHBOARDS), ids=lambda path: path.name)
def test_dashboard_panels_have_unique_ids_and_fit_the_grid(path: Path) -> None:
    panels = DASHBOARDS[path]["panels"]
    ids = [panel["id"] for panel in panels]

    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24
        for target in panel.get("targets", []):
            assert target["refId"] and target["expr"]


@pytest.mark.parametrize("path", sorted(DASHBOARDS), ids=lambda path: path.name)
def test_dashboard_datasources_exist(path: Path) -> None:
    known = _datasource_uids() | BUILTIN_UIDS

    for ref in _walk_datasource_refs(DASHBOARDS[path]):
        uid = ref["uid"] if isinstance(ref, dict) else ref
        assert uid in known, f"{path.name} uses unknown datasource {uid}"


@pytest.mark.parametrize("path", sorted(DASHBOARDS), ids=lambda path: path.name)
def test_dashboard_variables_cover_job_and_instance(path: Path) -> None:
    variables = {v["name"]: v for v in DASHBOARDS[path]["templating"]["list"]}

    assert {"job", "instance"} <= set(variables)
    text = path.read_text(encoding="utf-8")
    assert 'job=~\\"$job\\"' in text and 'instance=~\\"$instance\\"' in text


def test_overview_dashboard_covers_what_users_look_for() -> None:
    overview = next(d for d in DASHBOARDS.values() if d["title"] == "IG overview")
    text = " ".join(
        target["expr"] for panel in overview["panels"]
        for target in panel.get("targets", [])
    )

    for needle in (
        "url_template", "ig_error_code", "ig_allowance_utilization_ratio",
        "ig_circuit_breaker_state", "ig_circuit_breaker_transitions_total",
        'ig_circuit_breaker_outcome="rejected"', "ig_rate_limiter_wait_duration",
        "ig_rate_limiter_rejections_total", "ig_stream_status",
        "ig_stream_silence_seconds", "ig_stream_updates_total",
        "ig_stream_update_lag_seconds_bucket", "ig_stream_reconnects_total",
        "ig_stream_lost_updates_total", "ig_stream_errors_total",
        "ig_deal_confirmations_total", "ig_deal_confirmation_latency_seconds",
        "ig_health_status",
    ):
        assert needle in text, needle


# -- alerting -----------------------------------------------------------------------


def test_alert_groups_have_the_required_fields() -> None:
    provider_folders = {
        provider["folder"]
        for path in yaml_files(DASHBOARD_PROVIDERS)
        for provider in load_yaml(path)["providers"]
    }

    for group in _alerting()["groups"]:
        assert group["name"].strip()
        assert group["folder"] in provider_folders
        assert DURATION.match(group["interval"]), group["interval"]
        assert group["rules"]


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: rule["uid"])
def test_alert_rule_is_valid(rule: dict[str, Any]) -> None:
    ref_ids = [item["refId"] for item in rule["data"]]

    assert rule["uid"] and rule["title"]
    assert rule["condition"] in ref_ids
    assert len(ref_ids) == len(set(ref_ids))
    assert rule.get("noDataState", "NoData") in NO_DATA_STATES
    assert rule.get("execErrState", "Alerting") in EXEC_ERR_STATES
    assert DURATION.match(rule.get("for", "0s"))
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert rule["annotations"]["summary"]


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: rule["uid"])
def test_alert_rule_queries_reduces_then_thresholds(rule: dict[str, Any]) -> None:
    steps = {item["refId"]: item for item in rule["data"]}
    query, reduce, threshold = steps["A"], steps["B"], steps["C"]

    assert query["datasourceUid"] in _datasource_uids()
    assert query["model"]["instant"] is True and query["model"]["expr"]
    assert query["relativeTimeRange"]["from"] > query["relativeTimeRange"]["to"]
    assert reduce["datasourceUid"] == threshold["datasourceUid"] == "__expr__"
    assert reduce["model"]["type"] == "reduce"
    assert reduce["model"]["expression"] == "A"
    assert threshold["model"]["type"] == "threshold"
    assert threshold["model"]["expression"] == "B"
    assert threshold["model"]["conditions"][0]["evaluator"]["params"]
    assert rule["condition"] == "C"
    for item in rule["data"]:
        assert item["model"]["refId"] == item["refId"]


@pytest.mark.parametrize("rule", _rules(), ids=lambda rule: rule["uid"])
def test_alert_rule_links_to_an_existing_panel(rule: dict[str, Any]) -> None:
    dashboard = next(
        d for d in DASHBOARDS.values() if d["uid"] == rule["dashboardUid"]
    )

    assert rule["panelId"] in {panel["id"] for panel in dashboard["panels"]}


def test_the_four_promised_alerts_are_provisioned() -> None:
    titles = {rule["title"] for rule in _rules()}

    assert titles == {
        "IGCircuitBreakerOpen", "IGStreamStalled", "IGAllowanceNearlySpent",
        "IGLatencyBudgetBroken",
    }


def test_contact_points_are_complete_and_keep_secrets_in_the_environment() -> None:
    for point in _alerting()["contactPoints"]:
        assert point["name"].strip()
        for receiver in point["receivers"]:
            assert receiver["uid"].strip() and receiver["type"].strip()
            assert receiver["settings"]
            for key, value in receiver["settings"].items():
                if key in SECRET_SETTINGS:
                    assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*\}", value), key


def test_notification_policy_routes_to_existing_contact_points() -> None:
    receivers = {point["name"] for point in _alerting()["contactPoints"]}

    def check(route: dict[str, Any]) -> None:
        assert route["receiver"] in receivers
        for child in route.get("routes", []):
            check(child)

    policies = _alerting()["policies"]
    assert policies
    for root in policies:
        assert "matchers" not in root and "object_matchers" not in root
        check(root)


@pytest.mark.parametrize(
    "path",
    sorted([*yaml_files(DATASOURCES), *yaml_files(ALERTING)]),
    ids=lambda path: path.name,
)
def test_every_dollar_is_an_env_reference_or_escaped(path: Path) -> None:
    # Grafana expands $VAR and ${VAR} in provisioning values; a template
    # such as {{ $labels.x }} must therefore be written with $$.
    for value in _strings(load_yaml(path)):
        text = value.replace("$$", "")
        for match in re.finditer(r"\$", text):
            rest = text[match.start():]
            assert re.match(r"\$\{[A-Z][A-Z0-9_]*\}", rest), (
                f"{path.relative_to(GRAFANA)}: unescaped $ in {rest[:40]!r}"
            )


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for value in node.values() for text in _strings(value)]
    if isinstance(node, list):
        return [text for value in node for text in _strings(value)]
    return []

"""docker-compose.observability.yml and Tempo's config, checked by structure.

No container engine runs here, so these tests hold the compose file to what
the images need: pinned tags, mounts of files that exist in the repository,
only the ports users need, and the Prometheus flags the pipeline relies on.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _stack import (
    ALERTING,
    COMPOSE,
    DASHBOARD_PROVIDERS,
    REPO,
    TEMPO_CONFIG,
    load_yaml,
    manifest_version,
    yaml_files,
)

COMPOSE_FILE = load_yaml(COMPOSE)
SERVICES = COMPOSE_FILE["services"]
TEMPO = load_yaml(TEMPO_CONFIG)


def _host_ports(service: dict) -> set[int]:
    return {int(str(mapping).split(":")[0]) for mapping in service.get("ports", [])}


def _bind_mounts(service: dict) -> list[tuple[Path, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts.append(((REPO / source).resolve(), target))
    return mounts


def test_compose_runs_the_four_services() -> None:
    assert set(SERVICES) == {"otel-collector", "tempo", "prometheus", "grafana"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_are_pinned_to_exact_versions(name: str) -> None:
    image = SERVICES[name]["image"]
    tag = image.rsplit(":", 1)[1]

    assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), image


def test_images_are_the_releases_the_stack_was_written_for() -> None:
    images = {name: service["image"] for name, service in SERVICES.items()}

    assert images["otel-collector"].endswith(f":{manifest_version()}")
    assert re.fullmatch(r"grafana/tempo:3\.0\.\d+", images["tempo"])
    assert re.fullmatch(r"prom/prometheus:v3\.\d+\.\d+", images["prometheus"])
    assert re.fullmatch(r"grafana/grafana:13\.\d+\.\d+", images["grafana"])


def test_only_the_ports_users_need_reach_the_host() -> None:
    published = {name: _host_ports(service) for name, service in SERVICES.items()}

    assert published == {
        "otel-collector": {4317, 4318},
        "grafana": {3000},
        "prometheus": {9090},
        "tempo": {3200},
    }


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_bind_mounts_point_at_files_in_the_repository(name: str) -> None:
    for source, _target in _bind_mounts(SERVICES[name]):
        assert source.exists(), f"{name} mounts missing {source}"
        assert REPO in source.parents


def test_collector_container_reads_the_shipped_config() -> None:
    collector = SERVICES["otel-collector"]
    mounts = dict((target, source) for source, target in _bind_mounts(collector))
    config_flag = next(arg for arg in collector["command"] if "--config" in arg)

    target = config_flag.split("=", 1)[1]
    assert mounts[target] == REPO / "collector" / "config.yaml"


def test_prometheus_command_keeps_its_defaults_and_enables_the_receivers() -> None:
    command = SERVICES["prometheus"]["command"]

    assert "--config.file=/etc/prometheus/prometheus.yml" in command
    assert "--storage.tsdb.path=/prometheus" in command
    assert "--web.enable-remote-write-receiver" in command
    assert "--enable-feature=exemplar-storage" in command
    mounts = {target: source for source, target in _bind_mounts(SERVICES["prometheus"])}
    assert mounts["/etc/prometheus"] == REPO / "prometheus"


def test_tempo_runs_monolithic_with_the_shipped_config() -> None:
    tempo = SERVICES["tempo"]
    mounts = {target: source for source, target in _bind_mounts(tempo)}

    assert "-target=all" in tempo["command"]
    assert "-config.file=/etc/tempo.yaml" in tempo["command"]
    assert mounts["/etc/tempo.yaml"] == TEMPO_CONFIG
    assert any(volume.endswith(":/var/tempo") for volume in tempo["volumes"])


def test_grafana_mounts_provisioning_and_dashboards_where_the_provider_looks() -> None:
    grafana = SERVICES["grafana"]
    mounts = {target: source for source, target in _bind_mounts(grafana)}
    provider_paths = {
        provider["options"]["path"]
        for path in yaml_files(DASHBOARD_PROVIDERS)
        for provider in load_yaml(path)["providers"]
    }

    for kind in ("datasources", "dashboards", "alerting"):
        target = f"/etc/grafana/provisioning/{kind}"
        assert mounts[target] == REPO / "grafana" / "provisioning" / kind
    for path in provider_paths:
        assert mounts[path] == REPO / "grafana" / "dashboards"


def test_grafana_allows_anonymous_viewers_only() -> None:
    environment = SERVICES["grafana"]["environment"]

    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"


def test_grafana_receives_every_variable_the_alerting_files_read() -> None:
    environment = SERVICES["grafana"]["environment"]
    wanted = set()
    for path in yaml_files(ALERTING):
        text = path.read_text(encoding="utf-8").replace("$$", "")
        wanted.update(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text))

    assert wanted
    assert wanted <= set(environment)
    for name in wanted:
        assert environment[name].startswith(f"${{{name}:-"), name


# -- Tempo 3.0 ------------------------------------------------------------------

REMOVED_IN_TEMPO_3 = {"ingester", "ingester_client", "compactor",
                      "metrics_generator_client"}


def _keys(node: object, prefix: str = "") -> set[str]:
    if not isinstance(node, dict):
        return set()
    found = set()
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        found.add(dotted)
        found.update(_keys(value, dotted + "."))
    return found


def test_tempo_config_has_no_keys_removed_in_3_0() -> None:
    keys = _keys(TEMPO)

    assert not keys & REMOVED_IN_TEMPO_3
    assert "querier.query_live_store" not in keys
    assert "query_frontend.search.query_ingesters_until" not in keys
    assert "ingest.enabled" not in keys
    assert not any("local_blocks" in key for key in keys)


def test_tempo_overrides_use_the_scoped_form() -> None:
    overrides = TEMPO["overrides"]

    assert set(overrides) == {"defaults"}
    processors = overrides["defaults"]["metrics_generator"]["processors"]
    assert set(processors) <= {"service-graphs", "span-metrics"}


def test_tempo_receives_otlp_on_all_interfaces() -> None:
    protocols = TEMPO["distributor"]["receivers"]["otlp"]["protocols"]

    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"


def test_tempo_metrics_generator_writes_to_prometheus_with_exemplars() -> None:
    remote_write = TEMPO["metrics_generator"]["storage"]["remote_write"]

    assert remote_write == [
        {"url": "http://prometheus:9090/api/v1/write", "send_exemplars": True}
    ]
    assert TEMPO["server"]["http_listen_port"] == 3200

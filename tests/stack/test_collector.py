"""collector/config.yaml and the OCB manifest that builds a collector for it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from _stack import (
    BUILD_SCRIPT,
    BUILDER_MANIFEST,
    COLLECTOR_CONFIG,
    COMPOSE,
    component_type,
    env_default,
    load_yaml,
    manifest_version,
    otelcol_binary,
    require,
)

CORE = "go.opentelemetry.io/collector"
CONTRIB = "github.com/open-telemetry/opentelemetry-collector-contrib"

#: Go module of each component type the shipped config may use.
MODULES = {
    ("receivers", "otlp"): f"{CORE}/receiver/otlpreceiver",
    ("processors", "memory_limiter"): f"{CORE}/processor/memorylimiterprocessor",
    ("processors", "batch"): f"{CORE}/processor/batchprocessor",
    ("processors", "resource"): f"{CONTRIB}/processor/resourceprocessor",
    ("processors", "attributes"): f"{CONTRIB}/processor/attributesprocessor",
    ("processors", "transform"): f"{CONTRIB}/processor/transformprocessor",
    ("exporters", "otlp_grpc"): f"{CORE}/exporter/otlpexporter",
    ("exporters", "otlp_http"): f"{CORE}/exporter/otlphttpexporter",
    ("exporters", "debug"): f"{CORE}/exporter/debugexporter",
    ("exporters", "prometheus_remote_write"): (
        f"{CONTRIB}/exporter/prometheusremotewriteexporter"
    ),
    ("exporters", "file"): f"{CONTRIB}/exporter/fileexporter",
    ("extensions", "health_check"): f"{CONTRIB}/extension/healthcheckextension",
    ("connectors", "span_metrics"): f"{CONTRIB}/connector/spanmetricsconnector",
}
KINDS = ("receivers", "processors", "exporters", "extensions", "connectors")

CONFIG = load_yaml(COLLECTOR_CONFIG)
MANIFEST = load_yaml(BUILDER_MANIFEST)
PIPELINES = CONFIG["service"]["pipelines"]


def _used_components() -> set[tuple[str, str]]:
    """(kind, component id) of everything the service actually runs."""
    used = {("extensions", name) for name in CONFIG["service"].get("extensions", [])}
    for pipeline in PIPELINES.values():
        for kind in ("receivers", "processors", "exporters"):
            used.update((kind, name) for name in pipeline.get(kind, []))
    return used


def _manifest_modules() -> dict[str, set[str]]:
    return {
        kind: {entry["gomod"].split()[0] for entry in MANIFEST.get(kind, [])}
        for kind in (*KINDS, "providers")
    }


def _binary() -> Path:
    binary = otelcol_binary()
    require(binary is not None, "the collector built by collector/build.sh")
    assert binary is not None
    return binary


def _clean_env() -> dict[str, str]:
    # The shipped defaults are what is validated, not this shell's overrides.
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("OTELCOL_")
    }


def test_pipelines_only_reference_defined_components() -> None:
    for kind, name in _used_components():
        assert name in (CONFIG.get(kind) or {}), f"{kind} {name} is not defined"


def test_every_defined_component_is_used() -> None:
    defined = {(kind, name) for kind in KINDS for name in CONFIG.get(kind) or {}}

    assert defined == _used_components()


@pytest.mark.parametrize("pipeline", sorted(PIPELINES))
def test_memory_limiter_comes_first_in_every_pipeline(pipeline: str) -> None:
    assert PIPELINES[pipeline]["processors"][0] == "memory_limiter"


def test_memory_limiter_settings_pass_its_validation() -> None:
    limiter = CONFIG["processors"]["memory_limiter"]

    assert limiter["check_interval"] not in ("0s", 0, None)
    assert 0 < limiter["spike_limit_percentage"] < limiter["limit_percentage"] <= 100


def test_listeners_bind_all_interfaces_by_default() -> None:
    protocols = CONFIG["receivers"]["otlp"]["protocols"]
    endpoints = {
        "otlp grpc": env_default(protocols["grpc"]["endpoint"]),
        "otlp http": env_default(protocols["http"]["endpoint"]),
        "health_check": env_default(CONFIG["extensions"]["health_check"]["endpoint"]),
    }

    assert endpoints == {
        "otlp grpc": "0.0.0.0:4317",
        "otlp http": "0.0.0.0:4318",
        "health_check": "0.0.0.0:13133",
    }


def test_exporters_default_to_the_compose_services() -> None:
    exporters = CONFIG["exporters"]

    assert env_default(exporters["otlp_grpc/tempo"]["endpoint"]) == "tempo:4317"
    assert exporters["otlp_grpc/tempo"]["tls"]["insecure"] is True
    write = env_default(exporters["prometheus_remote_write"]["http"]["endpoint"])
    assert write == "http://prometheus:9090/api/v1/write"


def test_config_uses_current_component_names() -> None:
    retired = {"logging", "otlp", "otlphttp", "prometheusremotewrite"}
    exporter_types = {component_type(name) for name in CONFIG["exporters"]}

    assert not exporter_types & retired


def test_own_metrics_use_a_pull_reader() -> None:
    readers = CONFIG["service"]["telemetry"]["metrics"]["readers"]
    prometheus = readers[0]["pull"]["exporter"]["prometheus"]

    assert env_default(prometheus["host"]) == "0.0.0.0"
    assert env_default(prometheus["port"]) == "8888"


def test_manifest_lists_exactly_the_components_the_config_uses() -> None:
    wanted: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for kind, name in _used_components():
        key = (kind, component_type(name))
        assert key in MODULES, f"add the Go module of {key} to MODULES"
        wanted[kind].add(MODULES[key])

    found = _manifest_modules()

    for kind in KINDS:
        assert found[kind] == wanted[kind], kind


def test_manifest_providers_are_env_and_file() -> None:
    providers = _manifest_modules()["providers"]

    assert providers == {
        f"{CORE}/confmap/provider/envprovider",
        f"{CORE}/confmap/provider/fileprovider",
    }


def test_manifest_pins_one_release_and_compose_runs_the_same() -> None:
    version = manifest_version()
    entries = [entry for kind in KINDS for entry in MANIFEST.get(kind, [])]
    providers = {entry["gomod"].split()[1] for entry in MANIFEST["providers"]}
    compose = load_yaml(COMPOSE)

    assert {entry["gomod"].split()[1] for entry in entries} == {f"v{version}"}
    assert len(providers) == 1 and providers.pop().startswith("v1.")
    image = compose["services"]["otel-collector"]["image"]
    assert image == f"otel/opentelemetry-collector-contrib:{version}"


def test_the_built_collector_validates_the_shipped_config() -> None:
    result = subprocess.run(
        [str(_binary()), "validate", f"--config={COLLECTOR_CONFIG}"],
        capture_output=True, text=True, timeout=60, env=_clean_env(), check=False,
    )

    assert result.returncode == 0, result.stderr


def test_the_built_collector_rejects_a_retired_exporter(tmp_path: Path) -> None:
    broken = dict(CONFIG, exporters={**CONFIG["exporters"], "logging": {}})
    broken["service"] = {
        **CONFIG["service"],
        "pipelines": {
            **PIPELINES,
            "traces": {**PIPELINES["traces"], "exporters": ["logging"]},
        },
    }
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))

    result = subprocess.run(
        [str(_binary()), "validate", f"--config={path}"],
        capture_output=True, text=True, timeout=60, env=_clean_env(), check=False,
    )

    assert result.returncode != 0
    assert "logging" in result.stderr


def test_the_built_collector_has_exactly_the_manifest_components() -> None:
    result = subprocess.run(
        [str(_binary()), "components"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    listed = yaml.safe_load(result.stdout)

    assert listed["buildinfo"]["version"] == manifest_version()
    for kind in KINDS:
        names = {entry["name"] for entry in listed.get(kind) or []}
        used = {component_type(name) for used_kind, name in _used_components()
                if used_kind == kind}
        assert names == used, kind


def test_build_script_reuses_the_cached_binary() -> None:
    binary = _binary()
    if not (binary.parent / "manifest.sha256").is_file():
        pytest.skip(f"{binary} was not built by collector/build.sh")
    env = dict(os.environ, IG_OTEL_CACHE=str(binary.parent.parent))

    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(binary)
    assert "up to date" in result.stderr

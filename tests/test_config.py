"""OTEL_PYTHON_IG_* variables: parsing, errors that name the variable, docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ig_otel import ConfigError, load_config
from ig_otel._config import SETTINGS

README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults_parse_without_any_variable():
    config = load_config({})
    assert config.rate_limit_mode == "observe"
    assert config.hosts == ()
    assert config.health_address is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_PYTHON_IG_BREAKER_FAIL_MAX", "zero"),
        ("OTEL_PYTHON_IG_BREAKER_FAIL_MAX", "0"),
        ("OTEL_PYTHON_IG_BREAKER_RESET_TIMEOUT", "-1"),
        ("OTEL_PYTHON_IG_RATE_LIMIT_MODE", "sometimes"),
        ("OTEL_PYTHON_IG_CAPTURE_DEALS", "maybe"),
        ("OTEL_PYTHON_IG_ALLOWANCES", "trading"),
        ("OTEL_PYTHON_IG_ALLOWANCES", "weekly=5"),
        ("OTEL_PYTHON_IG_HEALTH_ADDRESS", "localhost"),
        ("OTEL_PYTHON_IG_STREAM_STALL_SECONDS", "inf"),
    ],
)
def test_bad_values_raise_an_error_naming_the_variable(variable, value):
    with pytest.raises(ConfigError) as caught:
        load_config({variable: value})
    assert caught.value.variable == variable
    assert variable in str(caught.value)
    assert "expected" in str(caught.value)


def test_values_parse_to_typed_settings():
    config = load_config({
        "OTEL_PYTHON_IG_HOSTS": "127.0.0.1:8080, sim.local",
        "OTEL_PYTHON_IG_ALLOWANCES": "trading=50,historical=100",
        "OTEL_PYTHON_IG_HEALTH_ADDRESS": ":8081",
        "OTEL_PYTHON_IG_RESILIENCE": "TRUE",
    })
    assert config.hosts == ("127.0.0.1:8080", "sim.local")
    assert config.allowances == {"trading": 50, "historical": 100}
    assert config.health_address == ("127.0.0.1", 8081)
    assert config.resilience is True


def test_keywords_override_variables_and_are_checked():
    config = load_config({"OTEL_PYTHON_IG_RATE_LIMIT_MODE": "off"},
                         rate_limit_mode="enforce")
    assert config.rate_limit_mode == "enforce"
    with pytest.raises(ConfigError) as caught:
        load_config({}, rate_limit_mode="loud")
    assert caught.value.variable == "rate_limit_mode"
    with pytest.raises(ConfigError):
        load_config({}, no_such_setting=1)


def test_redis_url_never_shows_in_the_config_repr():
    config = load_config({"OTEL_PYTHON_IG_REDIS_URL": "redis://:pw@host:6379/0"})
    assert "pw@" not in repr(config)


def test_readme_documents_every_variable_with_its_default():
    text = README.read_text()
    for setting in SETTINGS:
        row = re.search(rf"^\| `{setting.variable}` \| ([^|]+) \|", text, re.M)
        assert row, f"{setting.variable} is missing from the README table"
        documented = row.group(1).strip()
        expected = f"`{setting.default}`" if setting.default else "(empty)"
        assert documented == expected, setting.variable


def test_variables_are_module_constants_for_the_instrument_command():
    from ig_otel import _config

    for setting in SETTINGS:
        assert getattr(_config, setting.variable) == setting.variable

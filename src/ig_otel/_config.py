"""Configuration of ig-otel through ``OTEL_PYTHON_IG_*`` environment variables.

Every variable is declared once below, with its default and meaning; the
README's table mirrors this module (a test keeps the two in step). Module
attributes named ``OTEL_*`` also become ``opentelemetry-instrument`` flags
(``--ig_hosts`` and so on) through the ``opentelemetry_environment_variables``
entry point.

A value that does not parse raises :class:`ConfigError` naming the variable;
nothing falls back to a default silently.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ig_otel._exceptions import ConfigError

OTEL_PYTHON_IG_HOSTS = "OTEL_PYTHON_IG_HOSTS"
OTEL_PYTHON_IG_CAPTURE_DEALS = "OTEL_PYTHON_IG_CAPTURE_DEALS"
OTEL_PYTHON_IG_STREAM_EPICS = "OTEL_PYTHON_IG_STREAM_EPICS"
OTEL_PYTHON_IG_STREAM_EPIC_LIMIT = "OTEL_PYTHON_IG_STREAM_EPIC_LIMIT"
OTEL_PYTHON_IG_STREAM_STALL_SECONDS = "OTEL_PYTHON_IG_STREAM_STALL_SECONDS"
OTEL_PYTHON_IG_RESILIENCE = "OTEL_PYTHON_IG_RESILIENCE"
OTEL_PYTHON_IG_BREAKER_FAIL_MAX = "OTEL_PYTHON_IG_BREAKER_FAIL_MAX"
OTEL_PYTHON_IG_BREAKER_RESET_TIMEOUT = "OTEL_PYTHON_IG_BREAKER_RESET_TIMEOUT"
OTEL_PYTHON_IG_BREAKER_SUCCESS_THRESHOLD = "OTEL_PYTHON_IG_BREAKER_SUCCESS_THRESHOLD"
OTEL_PYTHON_IG_BREAKER_HALF_OPEN_CALLS = "OTEL_PYTHON_IG_BREAKER_HALF_OPEN_CALLS"
OTEL_PYTHON_IG_RATE_LIMIT_MODE = "OTEL_PYTHON_IG_RATE_LIMIT_MODE"
OTEL_PYTHON_IG_RATE_LIMIT_MAX_WAIT = "OTEL_PYTHON_IG_RATE_LIMIT_MAX_WAIT"
OTEL_PYTHON_IG_ALLOWANCES = "OTEL_PYTHON_IG_ALLOWANCES"
OTEL_PYTHON_IG_REDIS_URL = "OTEL_PYTHON_IG_REDIS_URL"
OTEL_PYTHON_IG_HEALTH_ADDRESS = "OTEL_PYTHON_IG_HEALTH_ADDRESS"


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError("true or false")


def _parse_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _parse_positive_int(text: str) -> int:
    value = int(text.strip())
    if value < 1:
        raise ValueError("a whole number of at least 1")
    return value


def _parse_seconds(text: str) -> float:
    value = float(text.strip())
    if not value >= 0 or value == float("inf"):
        raise ValueError("a number of seconds, 0 or more")
    return value


def _parse_mode(text: str) -> str:
    mode = text.strip().lower()
    if mode not in ("off", "observe", "enforce"):
        raise ValueError("off, observe or enforce")
    return mode


ALLOWANCE_KEYS = ("trading", "non_trading_account", "non_trading_app", "historical")


def _parse_allowances(text: str) -> dict[str, int]:
    limits: dict[str, int] = {}
    for part in _parse_list(text):
        key, sep, number = part.partition("=")
        key = key.strip()
        if not sep or key not in ALLOWANCE_KEYS:
            raise ValueError("key=number pairs with keys " + ", ".join(ALLOWANCE_KEYS))
        limits[key] = _parse_positive_int(number)
    return limits


def _parse_address(text: str) -> tuple[str, int] | None:
    if not text.strip():
        return None
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("host:port")
    return host or "127.0.0.1", int(port)


@dataclass(frozen=True)
class Setting:
    """One environment variable: its parser, default and meaning."""

    variable: str
    attribute: str
    default: str
    parse: Callable[[str], Any]
    expected: str
    doc: str


SETTINGS = (
    Setting(OTEL_PYTHON_IG_HOSTS, "hosts", "", _parse_list, "comma separated hosts",
            "Extra hosts (``host`` or ``host:port``, comma separated) to treat "
            "as IG, for example a simulator. IG's live and demo API hosts are "
            "always IG."),
    Setting(OTEL_PYTHON_IG_CAPTURE_DEALS, "capture_deals", "true", _parse_bool,
            "true or false",
            "``true``/``false``: put deal reference, deal id and epic on spans."),
    Setting(OTEL_PYTHON_IG_STREAM_EPICS, "stream_epics", "", _parse_list,
            "comma separated epics or *",
            "Epics (comma separated) allowed as the ``ig.stream.epic`` metric "
            "attribute; ``*`` allows any, up to the limit below. Empty: no epic "
            "attribute."),
    Setting(OTEL_PYTHON_IG_STREAM_EPIC_LIMIT, "stream_epic_limit", "20",
            _parse_positive_int, "a whole number of at least 1",
            "Most distinct epics ever used as a metric attribute; later ones "
            "become ``_OTHER``."),
    Setting(OTEL_PYTHON_IG_STREAM_STALL_SECONDS, "stream_stall_seconds", "10",
            _parse_seconds, "a number of seconds, 0 or more",
            "Silence, in seconds, after which a connected stream reports "
            "``stalled``."),
    Setting(OTEL_PYTHON_IG_RESILIENCE, "resilience", "false", _parse_bool,
            "true or false",
            "``true``/``false``: guard IG REST calls made through httpx and "
            "requests with circuit breakers and the allowance limiter under "
            "auto-instrumentation."),
    Setting(OTEL_PYTHON_IG_BREAKER_FAIL_MAX, "breaker_fail_max", "5",
            _parse_positive_int, "a whole number of at least 1",
            "Consecutive failures that open a circuit breaker."),
    Setting(OTEL_PYTHON_IG_BREAKER_RESET_TIMEOUT, "breaker_reset_timeout", "30",
            _parse_seconds, "a number of seconds, 0 or more",
            "Seconds an open breaker waits before letting a trial call through."),
    Setting(OTEL_PYTHON_IG_BREAKER_SUCCESS_THRESHOLD, "breaker_success_threshold",
            "1", _parse_positive_int, "a whole number of at least 1",
            "Consecutive successful trial calls that close a half-open breaker."),
    Setting(OTEL_PYTHON_IG_BREAKER_HALF_OPEN_CALLS, "breaker_half_open_calls", "1",
            _parse_positive_int, "a whole number of at least 1",
            "Trial calls a half-open breaker lets through at once."),
    Setting(OTEL_PYTHON_IG_RATE_LIMIT_MODE, "rate_limit_mode", "observe",
            _parse_mode, "off, observe or enforce",
            "``off``, ``observe`` (measure utilization, never delay) or "
            "``enforce`` (wait for the allowance, or fail fast)."),
    Setting(OTEL_PYTHON_IG_RATE_LIMIT_MAX_WAIT, "rate_limit_max_wait", "10",
            _parse_seconds, "a number of seconds, 0 or more",
            "Longest wait, in seconds, in ``enforce`` mode before failing with "
            "``AllowanceExhaustedError``; ``0`` fails fast."),
    Setting(OTEL_PYTHON_IG_ALLOWANCES, "allowances", "", _parse_allowances,
            "key=number pairs",
            "Allowance overrides, e.g. ``trading=100,non_trading_account=30, "
            "non_trading_app=60,historical=10000`` (per minute; historical per "
            "week)."),
    Setting(OTEL_PYTHON_IG_REDIS_URL, "redis_url", "", str.strip,
            "a redis:// URL",
            "``redis://`` URL: share limiter and breaker state between "
            "processes."),
    Setting(OTEL_PYTHON_IG_HEALTH_ADDRESS, "health_address", "", _parse_address,
            "host:port",
            "``host:port`` to serve ``/livez`` and ``/readyz`` on; empty: no "
            "server."),
)


@dataclass(frozen=True)
class Config:
    """Parsed configuration; build it with :func:`load_config`."""

    hosts: tuple[str, ...] = ()
    capture_deals: bool = True
    stream_epics: tuple[str, ...] = ()
    stream_epic_limit: int = 20
    stream_stall_seconds: float = 10.0
    resilience: bool = False
    breaker_fail_max: int = 5
    breaker_reset_timeout: float = 30.0
    breaker_success_threshold: int = 1
    breaker_half_open_calls: int = 1
    rate_limit_mode: str = "observe"
    rate_limit_max_wait: float = 10.0
    allowances: dict[str, int] = field(default_factory=dict)
    redis_url: str = field(default="", repr=False)
    health_address: tuple[str, int] | None = None


def load_config(
    environ: Mapping[str, str] | None = None, **overrides: Any
) -> Config:
    """Read the ``OTEL_PYTHON_IG_*`` variables, then apply keyword overrides.

    Raises:
        ConfigError: a variable or keyword has a value that does not parse.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = env.get(setting.variable, setting.default)
        values[setting.attribute] = _parse_one(setting, setting.variable, raw)

    for name, value in overrides.items():
        setting = _setting_for(name)
        if isinstance(value, str):
            value = _parse_one(setting, name, value)
        values[name] = value
    return Config(**values)


def _parse_one(setting: Setting, label: str, raw: str) -> Any:
    try:
        return setting.parse(raw)
    except ValueError as error:
        expected = str(error) if _is_sentence(error) else setting.expected
        raise ConfigError(label, raw, expected) from None


def _is_sentence(error: ValueError) -> bool:
    text = str(error)
    return bool(text) and not text.startswith(("invalid literal", "could not"))


def _setting_for(attribute: str) -> Setting:
    for setting in SETTINGS:
        if setting.attribute == attribute:
            return setting
    names = ", ".join(s.attribute for s in SETTINGS)
    raise ConfigError(attribute, "<keyword>", f"one of the keywords {names}")

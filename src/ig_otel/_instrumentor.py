"""``IGInstrumentor``: what ``opentelemetry-instrument`` loads for ig-otel.

It instruments whatever of httpx, requests, lightstreamer-client-lib and
websockets is installed, in any order relative to the contrib
instrumentors, and never raises out of ``instrument()`` for a library or
environment problem: under auto-instrumentation one raising instrumentor
stops every later one. A bad ``OTEL_PYTHON_IG_*`` value is logged as an
error naming the variable and ig-otel stays off; a bad keyword argument to
``instrument()`` raises :class:`~ig_otel.ConfigError` at once.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Collection
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from ig_otel._config import Config, ConfigError, load_config
from ig_otel._redact import extend_sanitize_fields
from ig_otel._rest import RestInstrumentation
from ig_otel._telemetry import SCOPE
from ig_otel._version import __version__

_log = logging.getLogger(__name__)

__all__ = ["IGInstrumentor", "pre_instrument"]

_REST_ADAPTERS = ("ig_otel._httpx", "ig_otel._requests")
_STREAM_ADAPTERS = ("ig_otel._lightstreamer", "ig_otel._websockets")
_PROVIDER_KEYS = ("tracer_provider", "meter_provider")


def pre_instrument() -> None:
    """Runs before every instrumentor: keep IG secrets out of header capture."""
    try:
        extend_sanitize_fields()
    except Exception:
        _log.debug("could not extend the header sanitize list", exc_info=True)


class IGInstrumentor(BaseInstrumentor):
    """IG-aware telemetry for REST (httpx, requests) and Lightstreamer.

    Keyword arguments of :meth:`instrument`: ``tracer_provider``,
    ``meter_provider``, and any field of :class:`ig_otel.Config` (for
    example ``hosts=("127.0.0.1:8080",)``), which override the
    ``OTEL_PYTHON_IG_*`` variables.
    """

    _core: RestInstrumentation | None = None
    _adapters: list[Any]
    config: Config | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        # Each adapter checks its own library at instrument time.
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        config = self._load_config(kwargs)
        if config is None:
            return
        self.config = config
        self._adapters = []
        try:
            self._start(config, kwargs)
        except Exception:
            _log.exception("ig-otel could not instrument; the program runs on")

    def _load_config(self, kwargs: dict[str, Any]) -> Config | None:
        overrides = {k: v for k, v in kwargs.items() if k not in _PROVIDER_KEYS}
        try:
            return load_config(**overrides)
        except ConfigError as error:
            if not error.variable.startswith("OTEL_"):
                raise
            _report_config_error(error)
            return None

    def _start(self, config: Config, kwargs: dict[str, Any]) -> None:
        pre_instrument()
        tracer_provider = kwargs.get("tracer_provider")
        meter_provider = kwargs.get("meter_provider")
        tracer = trace.get_tracer(SCOPE, __version__, tracer_provider)
        meter = metrics.get_meter(SCOPE, __version__, meter_provider)
        guard = _build_guard(config, meter_provider)
        self._core = RestInstrumentation(config, tracer, meter, guard=guard)
        for name in _REST_ADAPTERS:
            self._attach(name, self._core)
        for name in _STREAM_ADAPTERS:
            self._attach(name, config, tracer_provider, meter_provider)
        self._health = _start_health(config)

    def _attach(self, module_name: str, *args: Any) -> None:
        try:
            module = importlib.import_module(module_name)
            module.instrument(*args)
        except ImportError as error:
            _log.debug("ig-otel skips %s: %s", module_name, error)
            return
        except Exception:
            _log.exception("ig-otel could not instrument %s", module_name)
            return
        self._adapters.append(module)

    def _uninstrument(self, **kwargs: Any) -> None:
        health = getattr(self, "_health", None)
        if health is not None:
            health.close()
            self._health = None
        for module in reversed(getattr(self, "_adapters", [])):
            try:
                module.uninstrument()
            except Exception:
                _log.exception("ig-otel could not uninstrument %s", module.__name__)
        self._adapters = []
        self._core = None


def _start_health(config: Config) -> Any:
    """Serve /livez and /readyz when ``health_address`` is set."""
    if config.health_address is None:
        return None
    try:
        from ig_otel._health import start_health_server

        server = start_health_server(config.health_address)
    except Exception:
        _log.exception(
            "ig-otel could not serve health endpoints on %s:%s",
            *config.health_address,
        )
        return None
    _log.info("ig-otel serves /livez and /readyz on %s:%s", *config.health_address)
    return server


def _report_config_error(error: ConfigError) -> None:
    """Log a bad variable; print it too when logging is not configured."""
    _log.error("ig-otel is off: %s", error)
    if not _has_real_handler(_log):
        sys.stderr.write(f"ig-otel is off: {error}\n")


def _has_real_handler(logger: logging.Logger) -> bool:
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if not isinstance(handler, logging.NullHandler):
                return True
        current = current.parent if current.propagate else None
    return False


def _build_guard(config: Config, meter_provider: Any) -> Any:
    """The resilience guard for auto-instrumented calls, if any is wanted."""
    if config.rate_limit_mode == "off" and not config.resilience:
        return None
    try:
        from ig_otel._guard import build_guard
    except ImportError:
        return None
    try:
        return build_guard(
            config, meter_provider=meter_provider, breakers=config.resilience
        )
    except Exception:
        _log.exception("ig-otel could not set up rate limiting or breakers")
        return None

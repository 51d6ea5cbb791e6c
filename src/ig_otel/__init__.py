"""ig-otel: OpenTelemetry observability and resilience for IG trading bots.

Run an unchanged bot under ``opentelemetry-instrument`` and its IG REST
calls (httpx, requests, so trading-ig too) and Lightstreamer sessions get
IG-aware spans and metrics. Circuit breakers, allowance rate limiting,
pooled transports and health endpoints are opt-in.

The pooled transports need httpx or requests; their names are imported on
first use so ``import ig_otel`` works without either.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from ig_otel._breaker import CircuitBreaker
from ig_otel._config import Config, load_config
from ig_otel._exceptions import (
    AllowanceExhaustedError,
    CircuitOpenError,
    ConfigError,
    IGOtelError,
)
from ig_otel._guard import (
    Admission,
    AllowanceLimiter,
    Guard,
    build_guard,
    default_guard,
    set_default_guard,
)
from ig_otel._health import (
    HealthRegistry,
    HealthServer,
    default_registry,
    start_health_server,
)
from ig_otel._instrumentor import IGInstrumentor
from ig_otel._limiter import AllowanceLimits
from ig_otel._version import __version__

logging.getLogger(__name__).addHandler(logging.NullHandler())

_LAZY = {
    "IGAsyncTransport": "ig_otel._pool",
    "IGHTTPAdapter": "ig_otel._pool",
    "IGTransport": "ig_otel._pool",
    "guard_session": "ig_otel._pool",
    "SharedAllowanceBook": "ig_otel._redis_limiter",
}

__all__ = [
    "__version__",
    "Admission",
    "AllowanceExhaustedError",
    "AllowanceLimiter",
    "AllowanceLimits",
    "build_guard",
    "CircuitBreaker",
    "CircuitOpenError",
    "Config",
    "ConfigError",
    "default_guard",
    "default_registry",
    "Guard",
    "guard_session",
    "HealthRegistry",
    "HealthServer",
    "IGAsyncTransport",
    "IGHTTPAdapter",
    "IGInstrumentor",
    "IGOtelError",
    "IGTransport",
    "load_config",
    "set_default_guard",
    "SharedAllowanceBook",
    "start_health_server",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ig_otel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

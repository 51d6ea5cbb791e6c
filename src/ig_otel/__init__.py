"""ig-otel: OpenTelemetry observability and resilience for IG trading bots.

Run an unchanged bot under ``opentelemetry-instrument`` and its IG REST
calls (httpx, requests, so trading-ig too) and Lightstreamer sessions get
IG-aware spans and metrics. Circuit breakers, allowance rate limiting,
pooled transports and health endpoints are opt-in.
"""

from __future__ import annotations

import logging

from ig_otel._config import Config, load_config
from ig_otel._exceptions import (
    AllowanceExhaustedError,
    CircuitOpenError,
    ConfigError,
    IGOtelError,
)
from ig_otel._instrumentor import IGInstrumentor
from ig_otel._version import __version__

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AllowanceExhaustedError",
    "CircuitOpenError",
    "Config",
    "ConfigError",
    "IGInstrumentor",
    "IGOtelError",
    "__version__",
    "load_config",
]

"""Emitting ig-otel events: log records with an event name.

Each event goes out as an OpenTelemetry log record carrying ``event_name``
and, when a span is recording in the current context, as a span event of
the same name, so it shows on the trace too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber, get_logger

from ig_otel._telemetry import SCOPE
from ig_otel._version import __version__

_log = logging.getLogger(__name__)

__all__ = ["SeverityNumber", "emit_event"]

AttributeValue = str | bool | int | float


def emit_event(
    name: str,
    severity: SeverityNumber,
    attributes: Mapping[str, AttributeValue],
    body: str | None = None,
) -> None:
    """Emit one event; never raises.

    Args:
        name: Event name from the telemetry contract.
        severity: How serious the event is.
        attributes: Low-cardinality attributes, no secrets.
        body: Optional human-readable sentence.
    """
    try:
        _emit(name, severity, attributes, body)
    except Exception:  # never let telemetry break the caller
        _log.debug("could not emit event %s", name, exc_info=True)


def _emit(
    name: str,
    severity: SeverityNumber,
    attributes: Mapping[str, AttributeValue],
    body: str | None,
) -> None:
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(name, attributes=dict(attributes))

    logger = get_logger(SCOPE, __version__)
    logger.emit(
        event_name=name,
        severity_number=severity,
        severity_text=severity.name,
        attributes=dict(attributes),
        body=body,
    )

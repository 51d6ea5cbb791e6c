"""Shared fixtures: real in-memory OpenTelemetry exporters and components.

The SDK's global providers can be set only once per process, so one set of
in-memory exporters serves the whole session and each test starts from
empty ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)


@dataclass
class Telemetry:
    """What the code under test emitted, read from real SDK exporters."""

    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    logs: InMemoryLogRecordExporter
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider

    def finished_spans(self):
        return list(self.spans.get_finished_spans())

    def metric_points(self, name: str) -> list:
        """Data points of one metric, across scopes, from a fresh collection."""
        data = self.reader.get_metrics_data()
        points = []
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points

    def events(self, name: str) -> list:
        return [
            item.log_record
            for item in self.logs.get_finished_logs()
            if item.log_record.event_name == name
        ]


_SESSION_TELEMETRY: Telemetry | None = None


def _install_session_telemetry() -> Telemetry:
    global _SESSION_TELEMETRY
    if _SESSION_TELEMETRY is not None:
        return _SESSION_TELEMETRY

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))

    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    _logs.set_logger_provider(logger_provider)
    _SESSION_TELEMETRY = Telemetry(
        spans, reader, logs, tracer_provider, meter_provider, logger_provider
    )
    return _SESSION_TELEMETRY


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """Global SDK providers with in-memory exporters, emptied for this test.

    Metrics are cumulative for the life of the process; a test that counts
    should compare before and after, or use attributes unique to it.
    """
    from ig_otel._deals import TRACKER

    # Seeded simulators hand out the same deal references in every test.
    TRACKER.clear()
    session = _install_session_telemetry()
    session.spans.clear()
    session.logs.clear()
    session.reader.get_metrics_data()
    yield session


@dataclass
class Metrics:
    """A private MeterProvider for components that accept one."""

    provider: MeterProvider
    reader: InMemoryMetricReader

    def points(self, name: str) -> list:
        data = self.reader.get_metrics_data()
        found = []
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found


@pytest.fixture
def fresh_metrics() -> Iterator[Metrics]:
    """A MeterProvider of its own, for exact counts without global state."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield Metrics(provider, reader)
    provider.shutdown()

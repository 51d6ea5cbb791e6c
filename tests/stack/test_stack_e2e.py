"""The collector and Prometheus for real: contract in, series and traces out.

The collector built by collector/build.sh runs the shipped config on
loopback ports; its metrics go by remote write to Debian's Prometheus,
started with the shipped prometheus.yml and rules; its traces go to an OTLP
sink in this process, standing in for Tempo. The Python SDK sends every
instrument of the telemetry contract, then every dashboard and alert query
runs against what arrived.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from _stack import (
    COLLECTOR_CONFIG,
    PROMETHEUS_CONFIG,
    contract_series,
    otelcol_binary,
    require,
    require_binary,
    shipped_queries,
)
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from ig_otel import _telemetry as t

JOB = "ig-stack-test"
INSTANCE = "stack-e2e-1"
ENVIRONMENT = "stack-test"
STARTUP_SECONDS = 30.0
ARRIVAL_SECONDS = 30.0
RULE_EVALUATION_SECONDS = 40.0
REST_SPAN = "GET /markets/{epic}"

# -- what the fake bot reports: (value, attributes) per instrument ---------------

TRADING_EXCEEDED = "error.public-api.exceeded-account-trading-allowance"
SAMPLES: dict[str, list[tuple[float, dict[str, Any]]]] = {
    t.REST_REQUEST_DURATION.name: [
        (2.0, {t.URL_TEMPLATE: "/markets/{epic}", t.HTTP_METHOD: "GET",
               t.HTTP_STATUS_CODE: 200, t.IG_ALLOWANCE: "non_trading",
               t.IG_ENVIRONMENT: "demo"}),
        (1.5, {t.URL_TEMPLATE: "/positions/otc", t.HTTP_METHOD: "POST",
               t.HTTP_STATUS_CODE: 403, t.IG_ALLOWANCE: "trading",
               t.IG_ERROR_CODE: TRADING_EXCEEDED, t.ERROR_TYPE: "403",
               t.IG_ENVIRONMENT: "demo"}),
    ],
    t.ALLOWANCE_UTILIZATION.name: [
        (0.95, {t.IG_ALLOWANCE: "trading"}),
        (0.2, {t.IG_ALLOWANCE: "non_trading"}),
    ],
    t.ALLOWANCE_EXCEEDED.name: [
        (1, {t.IG_ALLOWANCE: "trading", t.IG_ERROR_CODE: TRADING_EXCEEDED}),
    ],
    t.ALLOWANCE_HISTORICAL_REMAINING.name: [(9500, {})],
    t.DEAL_CONFIRMATIONS.name: [
        (1, {t.IG_DEAL_STATUS: "ACCEPTED", t.IG_DEAL_REASON: "SUCCESS",
             t.IG_CONFIRMATION_SOURCE: "rest"}),
        (1, {t.IG_DEAL_STATUS: "REJECTED", t.IG_DEAL_REASON: "INSUFFICIENT_FUNDS",
             t.IG_CONFIRMATION_SOURCE: "stream"}),
    ],
    t.DEAL_CONFIRMATION_LATENCY.name: [(0.12, {t.IG_CONFIRMATION_SOURCE: "rest"})],
    t.STREAM_UPDATES.name: [
        (100, {t.IG_STREAM_ITEM_KIND: "PRICE", t.IG_STREAM_MODE: "MERGE"}),
    ],
    t.STREAM_UPDATE_LAG.name: [(0.02, {t.IG_STREAM_ITEM_KIND: "PRICE"})],
    t.STREAM_STATUS.name: [
        (1 if status is t.StreamStatus.STALLED else 0,
         {t.IG_STREAM_STATUS: status.value})
        for status in t.StreamStatus
    ],
    t.STREAM_SILENCE.name: [(45.0, {})],
    t.STREAM_RECONNECTS.name: [(1, {})],
    t.STREAM_SUBSCRIPTIONS.name: [(3, {t.IG_STREAM_ITEM_KIND: "PRICE"})],
    t.STREAM_LOST_UPDATES.name: [(2, {t.IG_STREAM_ITEM_KIND: "PRICE"})],
    t.STREAM_ERRORS.name: [(1, {t.IG_STREAM_ERROR_CODE: "21"})],
    t.BREAKER_STATE.name: [
        (1 if state is t.BreakerState.OPEN else 0,
         {t.IG_BREAKER_NAME: "rest", t.IG_BREAKER_STATE: state.value})
        for state in t.BreakerState
    ],
    t.BREAKER_TRANSITIONS.name: [
        (1, {t.IG_BREAKER_NAME: "rest", t.IG_BREAKER_FROM: "closed",
             t.IG_BREAKER_TO: "open"}),
    ],
    t.BREAKER_CALLS.name: [
        (10, {t.IG_BREAKER_NAME: "rest", t.IG_BREAKER_OUTCOME: "success"}),
        (5, {t.IG_BREAKER_NAME: "rest", t.IG_BREAKER_OUTCOME: "failure"}),
        (3, {t.IG_BREAKER_NAME: "rest", t.IG_BREAKER_OUTCOME: "rejected"}),
    ],
    t.LIMITER_WAIT_DURATION.name: [(0.3, {t.IG_ALLOWANCE: "trading"})],
    t.LIMITER_REJECTIONS.name: [(1, {t.IG_ALLOWANCE: "trading"})],
    t.HTTP_CONNECTIONS_CREATED.name: [(1, {t.SERVER_ADDRESS: "demo-api.ig.com"})],
    t.HEALTH_STATUS.name: [(1, {t.IG_HEALTH_CHECK: "stream"})],
}


class _FakeBot:
    """Creates every contract instrument and reports SAMPLES in rounds."""

    def __init__(self, meter: Meter) -> None:
        self.rounds = 0
        self._record: dict[str, Callable[[float, dict[str, Any]], None]] = {}
        for spec in t.INSTRUMENTS:
            self._create(meter, spec)

    def _create(self, meter: Meter, spec: t.Instrument) -> None:
        common = {"unit": spec.unit, "description": spec.description}
        kind = spec.kind
        if kind is t.Kind.HISTOGRAM:
            instrument = meter.create_histogram(
                spec.name, explicit_bucket_boundaries_advisory=list(spec.buckets or ()),
                **common,
            )
            self._record[spec.name] = instrument.record
        elif kind is t.Kind.COUNTER:
            self._record[spec.name] = meter.create_counter(spec.name, **common).add
        elif kind is t.Kind.UP_DOWN_COUNTER:
            counter = meter.create_up_down_counter(spec.name, **common)
            self._record[spec.name] = counter.add
        elif kind is t.Kind.GAUGE:
            self._record[spec.name] = meter.create_gauge(spec.name, **common).set
        else:
            create = {
                t.Kind.OBSERVABLE_GAUGE: meter.create_observable_gauge,
                t.Kind.OBSERVABLE_COUNTER: meter.create_observable_counter,
                t.Kind.OBSERVABLE_UP_DOWN_COUNTER: (
                    meter.create_observable_up_down_counter
                ),
            }[kind]
            create(spec.name, callbacks=[self._observe(spec)], **common)

    def _observe(self, spec: t.Instrument) -> Callable[[CallbackOptions], list]:
        # Observable counters report running totals, so they grow per round.
        scale_by_round = spec.kind is t.Kind.OBSERVABLE_COUNTER

        def callback(options: CallbackOptions) -> list[Observation]:
            scale = self.rounds if scale_by_round else 1
            return [
                Observation(value * scale, attributes)
                for value, attributes in SAMPLES[spec.name]
            ]

        return callback

    def report(self) -> None:
        self.rounds += 1
        for name, record in self._record.items():
            for value, attributes in SAMPLES[name]:
                record(value, attributes)


# -- the processes ------------------------------------------------------------------


class _TraceSink(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace endpoint standing in for Tempo."""

    def __init__(self) -> None:
        self.requests: queue.Queue[Any] = queue.Queue()

    def Export(self, request, context):
        self.requests.put(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self, timeout: float) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) pairs received within ``timeout``."""
        found = []
        deadline = time.monotonic() + timeout
        while not found and time.monotonic() < deadline:
            try:
                request = self.requests.get(timeout=0.5)
            except queue.Empty:
                continue
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    found.extend((resource, span) for span in scope_spans.spans)
        return found


def _attributes(pairs: Any) -> dict[str, Any]:
    values = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        values[pair.key] = getattr(pair.value, kind) if kind else None
    return values


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@dataclass
class Stack:
    """The running stack and what the fake bot sent through it."""

    prometheus_url: str
    telemetry_url: str
    sink: _TraceSink
    logs: dict[str, Path]
    http: httpx.Client
    trace_id: str = ""
    spans: list[tuple[dict[str, Any], Any]] = field(default_factory=list)

    def query(self, expr: str) -> dict[str, Any]:
        response = self.http.get(
            f"{self.prometheus_url}/api/v1/query", params={"query": expr}
        )
        return response.json()

    def vector(self, expr: str) -> list[dict[str, Any]]:
        body = self.query(expr)
        assert body["status"] == "success", (expr, body)
        return body["data"]["result"]

    def log_tail(self, name: str, lines: int = 30) -> str:
        text = self.logs[name].read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def _start_prometheus(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    command = [
        require_binary("prometheus"),
        f"--config.file={PROMETHEUS_CONFIG}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-remote-write-receiver",
        "--enable-feature=exemplar-storage",
    ]
    # The child keeps its own copy of the log's descriptor.
    with (tmp / "prometheus.log").open("wb") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def _start_collector(
    tmp: Path, ports: dict[str, int], sink_port: int, prometheus_port: int
) -> subprocess.Popen[bytes]:
    binary = otelcol_binary()
    require(binary is not None, "the collector built by collector/build.sh")
    assert binary is not None
    env = dict(
        os.environ,
        OTELCOL_OTLP_GRPC_ENDPOINT=f"127.0.0.1:{ports['grpc']}",
        OTELCOL_OTLP_HTTP_ENDPOINT=f"127.0.0.1:{ports['http']}",
        OTELCOL_HEALTH_ENDPOINT=f"127.0.0.1:{ports['health']}",
        OTELCOL_TELEMETRY_HOST="127.0.0.1",
        OTELCOL_TELEMETRY_PORT=str(ports["telemetry"]),
        OTELCOL_TEMPO_ENDPOINT=f"127.0.0.1:{sink_port}",
        OTELCOL_PROMETHEUS_WRITE_URL=(
            f"http://127.0.0.1:{prometheus_port}/api/v1/write"
        ),
        DEPLOYMENT_ENVIRONMENT=ENVIRONMENT,
    )
    with (tmp / "collector.log").open("wb") as log:
        return subprocess.Popen(
            [str(binary), f"--config={COLLECTOR_CONFIG}"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )


def _send_telemetry(stack: Stack, otlp_port: int) -> None:
    resource = Resource.create({SERVICE_NAME: JOB, SERVICE_INSTANCE_ID: INSTANCE})
    endpoint = f"127.0.0.1:{otlp_port}"
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint, insecure=True, timeout=5),
        export_interval_millis=3_600_000,
    )
    meters = MeterProvider(resource=resource, metric_readers=[reader])
    tracers = TracerProvider(resource=resource)
    tracers.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True,
                                             timeout=5))
    )
    bot = _FakeBot(meters.get_meter(t.SCOPE))
    tracer = tracers.get_tracer(t.SCOPE)
    try:
        # Two reports a little apart give rate() two samples to work with;
        # the first runs inside a sampled span so the SDK keeps an exemplar.
        with tracer.start_as_current_span(
            REST_SPAN, kind=SpanKind.CLIENT,
            attributes={t.URL_TEMPLATE: "/markets/{epic}", t.HTTP_METHOD: "GET",
                        t.IG_EPIC: "CS.D.EURUSD.CFD.IP"},
        ) as span:
            stack.trace_id = format(span.get_span_context().trace_id, "032x")
            bot.report()
        assert meters.force_flush(timeout_millis=10_000)
        time.sleep(1.5)
        bot.report()
        assert meters.force_flush(timeout_millis=10_000)
    finally:
        meters.shutdown()
        tracers.shutdown()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    require_binary("prometheus")
    require(otelcol_binary() is not None, "the collector built by collector/build.sh")

    sink = _TraceSink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    sink_port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    prometheus_port = _free_port()
    ports = {name: _free_port() for name in ("grpc", "http", "health", "telemetry")}
    http = httpx.Client(timeout=5)
    stack = Stack(
        prometheus_url=f"http://127.0.0.1:{prometheus_port}",
        telemetry_url=f"http://127.0.0.1:{ports['telemetry']}/metrics",
        sink=sink,
        logs={"prometheus": tmp / "prometheus.log", "collector": tmp / "collector.log"},
        http=http,
    )
    processes = []
    try:
        processes.append(_start_prometheus(tmp, prometheus_port))
        _wait_until(
            lambda: http.get(f"{stack.prometheus_url}/-/ready").status_code == 200,
            STARTUP_SECONDS, "Prometheus to be ready",
        )
        processes.append(_start_collector(tmp, ports, sink_port, prometheus_port))
        health = f"http://127.0.0.1:{ports['health']}/"
        _wait_until(
            lambda: http.get(health).status_code == 200,
            STARTUP_SECONDS, "the collector's health_check",
        )
        _send_telemetry(stack, ports["grpc"])
        stack.spans = sink.spans(timeout=ARRIVAL_SECONDS)
        _wait_for_series(stack)
        yield stack
    finally:
        for process in reversed(processes):
            _stop(process)
        server.stop(grace=1)
        http.close()


def _wait_for_series(stack: Stack) -> None:
    # Every contract series present, each with the samples of both reports.
    def arrived() -> bool:
        names = {
            sample["metric"]["__name__"]
            for sample in stack.vector('{__name__=~"ig_.+"}')
        }
        if not contract_series() <= names:
            return False
        windows = stack.vector('{__name__=~"ig_.+"}[5m]')
        return all(len(series["values"]) >= 2 for series in windows)

    try:
        _wait_until(arrived, ARRIVAL_SECONDS, "the contract series in Prometheus")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{stack.log_tail('collector')}") from None


# -- tests ---------------------------------------------------------------------------


def test_every_contract_series_arrives_in_prometheus(stack: Stack) -> None:
    names = {
        sample["metric"]["__name__"]
        for sample in stack.vector(f'{{job="{JOB}", __name__=~"ig_.+"}}')
    }

    assert contract_series() <= names
    assert {
        "ig_rest_request_duration_seconds_bucket",
        "ig_allowance_utilization_ratio",
        "ig_circuit_breaker_state",
        "ig_stream_updates_total",
    } <= names


def test_job_and_instance_come_from_the_sdk_resource(stack: Stack) -> None:
    samples = stack.vector("ig_allowance_utilization_ratio")

    assert {(s["metric"]["job"], s["metric"]["instance"]) for s in samples} == {
        (JOB, INSTANCE)
    }


def test_attributes_become_the_labels_the_dashboards_use(stack: Stack) -> None:
    samples = stack.vector(
        "ig_rest_request_duration_seconds_count"
        '{url_template="/positions/otc", http_response_status_code="403"}'
    )

    assert [s["metric"]["ig_error_code"] for s in samples] == [TRADING_EXCEEDED]
    transitions = stack.vector("ig_circuit_breaker_transitions_total")
    labels = transitions[0]["metric"]
    assert (labels["ig_circuit_breaker_from"], labels["ig_circuit_breaker_to"]) == (
        "closed", "open"
    )


def test_resource_processor_labels_the_deployment(stack: Stack) -> None:
    samples = stack.vector(f'target_info{{job="{JOB}"}}')

    assert samples
    assert samples[0]["metric"]["deployment_environment_name"] == ENVIRONMENT


@pytest.mark.parametrize(
    "query", shipped_queries(), ids=lambda query: query.where
)
def test_shipped_query_returns_data(stack: Stack, query) -> None:
    body = stack.query(query.runnable())

    assert body["status"] == "success", body
    assert body["data"]["result"], f"{query.where} returned nothing"


def test_histogram_exemplars_carry_the_trace_id(stack: Stack) -> None:
    now = time.time()
    response = stack.http.get(
        f"{stack.prometheus_url}/api/v1/query_exemplars",
        params={
            "query": "ig_rest_request_duration_seconds_bucket",
            "start": now - 600,
            "end": now + 60,
        },
    )
    series = response.json()["data"]

    trace_ids = {
        exemplar["labels"].get("trace_id")
        for entry in series
        for exemplar in entry["exemplars"]
    }
    assert stack.trace_id in trace_ids


def test_traces_leave_the_collector_with_their_attributes(stack: Stack) -> None:
    rest = [(resource, span) for resource, span in stack.spans
            if span.name == REST_SPAN]

    assert rest, f"spans received: {[span.name for _, span in stack.spans]}"
    resource, span = rest[0]
    assert span.trace_id.hex() == stack.trace_id
    assert _attributes(span.attributes)[t.URL_TEMPLATE] == "/markets/{epic}"
    assert resource["service.name"] == JOB
    assert resource["deployment.environment.name"] == ENVIRONMENT


def test_prometheus_evaluates_the_shipped_alerts_and_they_fire(stack: Stack) -> None:
    # The fake bot reports an open breaker, a stalled stream, a 95% spent
    # allowance and slow calls, so every alert must at least be pending.
    def states() -> dict[str, tuple[str, str]]:
        body = stack.http.get(f"{stack.prometheus_url}/api/v1/rules").json()
        return {
            rule["name"]: (rule["health"], rule["state"])
            for group in body["data"]["groups"]
            for rule in group["rules"]
            if rule["type"] == "alerting"
        }

    def all_active() -> bool:
        found = states()
        return bool(found) and all(
            health == "ok" and state in ("pending", "firing")
            for health, state in found.values()
        )

    try:
        _wait_until(all_active, RULE_EVALUATION_SECONDS, "the alerts to go pending")
    except AssertionError as error:
        raise AssertionError(f"{error}: {states()}") from None
    assert set(states()) == {
        "IGCircuitBreakerOpen", "IGStreamStalled", "IGAllowanceNearlySpent",
        "IGLatencyBudgetBroken",
    }


def test_collector_serves_its_own_metrics(stack: Stack) -> None:
    text = stack.http.get(stack.telemetry_url).text

    assert "otelcol_receiver_accepted_metric_points" in text
    assert "otelcol_exporter_sent_spans" in text

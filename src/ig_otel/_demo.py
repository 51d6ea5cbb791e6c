"""``ig-otel demo``: the simulator, an instrumented sample bot, a summary.

With nothing else running, the demo starts the IG simulator on an ephemeral
loopback port, instruments the process with :class:`~ig_otel.IGInstrumentor`
(resilience on, allowance limiter enforcing) on real SDK providers, and runs
:class:`~ig_otel._sample_bot.SampleBot` through a fixed story, switching
simulator scenarios at run time: normal trading, a latency spike, a rejected
deal, a stream stall, a REST outage that opens and recloses a circuit
breaker, and allowance pressure. One progress line per phase; at the end a
summary of the spans, contract metrics and events that were captured.

Telemetry goes to in-memory exporters for the summary and, when
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or a per-signal variant) is set, also over
OTLP, configured by the SDK's own ``OTEL_EXPORTER_OTLP_*`` variables, so the
run shows up in the bundled Grafana stack.

Timing: the allowances of the simulator and of the limiter are raised
together (a demo compresses minutes into seconds), and stream and breaker
timeouts are short so stalls and recoveries happen within the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ig_otel import _telemetry as names
from ig_otel._loadtest import percentile

__all__ = ["DemoError", "DemoOptions", "bucket_quantile", "run_demo", "summarize"]

_log = logging.getLogger(__name__)

#: Markets the sample bot watches; it trades the first.
EPICS = ("CS.D.EURUSD.MINI.IP", "IX.D.FTSE.DAILY.IP", "CS.D.GBPUSD.MINI.IP")
#: Demo allowances: IG's per-minute limits scaled up for a compressed run.
DEMO_ALLOWANCES = {"trading": 400, "non_trading_account": 400,
                   "non_trading_app": 800, "historical": 10_000}
#: Phase weights: each phase's share of ``--duration``.
WEIGHTS = {"normal trading": 6, "latency spike": 3, "rejected deal": 2,
           "stream stall": 5, "REST outage": 4, "allowance pressure": 2}
#: Extra seconds a phase may take to reach its goal after its share ends.
GRACE = 10.0


class DemoError(Exception):
    """Something essential failed; the message is one line for the user."""


@dataclass(frozen=True)
class DemoOptions:
    """What ``ig-otel demo`` was asked for."""

    duration: float = 24.0
    json_path: str | None = None
    seed: int = 0
    verbose: int = 0


# -- pure: summary ----------------------------------------------------------


def bucket_quantile(
    bounds: Sequence[float], counts: Sequence[int], q: float,
    low: float | None = None, high: float | None = None,
) -> float | None:
    """Estimate a quantile from explicit-bucket histogram counts.

    Linear interpolation inside the bucket holding the quantile, as
    Prometheus' ``histogram_quantile`` does; ``low``/``high`` (the recorded
    min and max) bound the first and the overflow bucket.
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            lower = bounds[index - 1] if index > 0 else (low if low is not None
                                                         else 0.0)
            upper = bounds[index] if index < len(bounds) else (
                high if high is not None else bounds[-1])
            if low is not None:
                lower = max(lower, low)
            if high is not None:
                upper = min(upper, high)
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return high


def _short(attributes: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in sorted(attributes.items()))


def summarize_spans(spans: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Spans by name: count, errors, p50 and p95 duration in milliseconds."""
    durations: dict[str, list[float]] = {}
    errors: Counter[str] = Counter()
    for span in spans:
        durations.setdefault(span.name, []).append(
            (span.end_time - span.start_time) / 1e6)
        if span.status.status_code.name == "ERROR":
            errors[span.name] += 1
    return {
        name: {"count": len(values), "errors": errors[name],
               "p50_ms": _round(percentile(values, 0.5)),
               "p95_ms": _round(percentile(values, 0.95))}
        for name, values in sorted(durations.items())
    }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _point_summary(point: Any) -> dict[str, Any]:
    attributes = dict(point.attributes or {})
    if hasattr(point, "bucket_counts"):
        bounds, counts = list(point.explicit_bounds), list(point.bucket_counts)
        return {"attributes": attributes, "count": point.count,
                "sum": _round(point.sum, 4),
                "p50": _round(bucket_quantile(bounds, counts, 0.5, point.min,
                                              point.max), 4),
                "p95": _round(bucket_quantile(bounds, counts, 0.95, point.min,
                                              point.max), 4)}
    return {"attributes": attributes, "value": point.value}


def summarize_metrics(metrics_data: Any) -> dict[str, list[dict[str, Any]]]:
    """The contract's instruments with every data point, in contract order."""
    found: dict[str, list[dict[str, Any]]] = {}
    for resource_metrics in getattr(metrics_data, "resource_metrics", ()) or ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                points = [_point_summary(p) for p in metric.data.data_points]
                found.setdefault(metric.name, []).extend(points)
    return {spec.name: found[spec.name] for spec in names.INSTRUMENTS
            if spec.name in found}


def summarize_events(records: Iterable[Any]) -> dict[str, dict[str, int]]:
    """Events by name, each with counts by its most telling attribute."""
    detail_keys = (names.IG_STREAM_STATUS, names.IG_BREAKER_TO,
                   names.IG_ALLOWANCE, names.IG_DEAL_REASON)
    events: dict[str, Counter[str]] = {}
    for record in records:
        log_record = getattr(record, "log_record", record)
        name = getattr(log_record, "event_name", None)
        if not name:
            continue
        attributes = dict(log_record.attributes or {})
        detail = next((f"{key.rsplit('.', 1)[-1]}={attributes[key]}"
                       for key in detail_keys if key in attributes), "")
        events.setdefault(name, Counter())[detail] += 1
    return {name: dict(counter) for name, counter in sorted(events.items())}


def summarize(
    spans: Iterable[Any], metrics_data: Any, records: Iterable[Any],
    phases: Sequence[Mapping[str, Any]], extra: Mapping[str, Any],
) -> dict[str, Any]:
    """The whole demo summary as plain JSON-ready data."""
    return {"phases": list(phases), "spans": summarize_spans(spans),
            "metrics": summarize_metrics(metrics_data),
            "events": summarize_events(records), **extra}


def _metric_line(point: Mapping[str, Any], skip: Sequence[str]) -> str:
    attributes = {k: v for k, v in point["attributes"].items() if k not in skip}
    label = _short(attributes) or "(all)"
    if "count" in point:
        return (f"{label}: count={point['count']} p50={_fmt_s(point['p50'])} "
                f"p95={_fmt_s(point['p95'])}")
    value = point["value"]
    return f"{label}: {round(value, 3) if isinstance(value, float) else value}"


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1000:.1f}ms" if seconds < 1 else f"{seconds:.2f}s"


#: Attributes left out of the readable summary (still in the JSON).
_NOISY = (names.IG_ENVIRONMENT, names.SERVER_ADDRESS, names.SERVER_PORT,
          names.IG_API_VERSION)


def format_summary(summary: Mapping[str, Any]) -> list[str]:
    """Readable lines for a summary from :func:`summarize`."""
    lines = ["", "== spans (name: count, p50, p95) =="]
    for name, row in summary["spans"].items():
        errors = f", {row['errors']} with error status" if row["errors"] else ""
        lines.append(f"  {name}: {row['count']}, p50 {row['p50_ms']} ms, "
                     f"p95 {row['p95_ms']} ms{errors}")
    lines.append("== metrics ==")
    for name, points in summary["metrics"].items():
        if name == names.STREAM_STATUS.name:
            points = [p for p in points if p.get("value")]
        if name == names.BREAKER_STATE.name:
            points = [p for p in points if p.get("value")]
        lines.append(f"  {name}")
        for point in points:
            lines.append(f"    {_metric_line(point, _NOISY)}")
    lines.append("== events (name: count by detail) ==")
    for name, details in summary["events"].items():
        text = ", ".join(f"{k or '-'} {v}" for k, v in sorted(details.items()))
        lines.append(f"  {name}: {text}")
    return lines


# -- telemetry setup -----------------------------------------------------------


_OTLP_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                   "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                   "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")


def otlp_wanted(environ: Mapping[str, str]) -> bool:
    """Whether the user pointed the SDK at an OTLP endpoint."""
    return any(environ.get(variable) for variable in _OTLP_VARIABLES)


def otlp_protocol(environ: Mapping[str, str]) -> str:
    """``grpc`` or ``http/protobuf`` from ``OTEL_EXPORTER_OTLP_PROTOCOL``."""
    protocol = environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc").strip() or "grpc"
    return "http/protobuf" if protocol.startswith("http") else "grpc"


@dataclass
class DemoTelemetry:
    """SDK providers with in-memory exporters (and OTLP when configured)."""

    tracer_provider: Any
    meter_provider: Any
    logger_provider: Any
    spans: Any
    reader: Any
    logs: Any
    otlp: str | None = None

    @classmethod
    def install(cls, environ: Mapping[str, str]) -> DemoTelemetry:
        """Build the providers and make them the global ones."""
        from opentelemetry import _logs, metrics, trace
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import (
            BatchLogRecordProcessor,
            InMemoryLogRecordExporter,
            SimpleLogRecordProcessor,
        )
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            InMemoryMetricReader,
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SimpleSpanProcessor,
        )
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        defaults = {} if environ.get("OTEL_SERVICE_NAME") else {
            "service.name": "ig-otel-demo"}
        resource = Resource.create(defaults)
        spans, logs = InMemorySpanExporter(), InMemoryLogRecordExporter()
        reader = InMemoryMetricReader()
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
        readers: list[Any] = [reader]
        protocol = otlp_protocol(environ) if otlp_wanted(environ) else None
        if protocol is not None:
            span_exporter, metric_exporter, log_exporter = _otlp_exporters(protocol)
            tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
            logger_provider.add_log_record_processor(
                BatchLogRecordProcessor(log_exporter))
            interval = int(environ.get("OTEL_METRIC_EXPORT_INTERVAL") or 5000)
            readers.append(PeriodicExportingMetricReader(
                metric_exporter, export_interval_millis=interval))
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        _logs.set_logger_provider(logger_provider)
        return cls(tracer_provider, meter_provider, logger_provider, spans, reader,
                   logs, protocol)

    def poll(self) -> None:
        """Collect metrics now (stream stall detection runs at collection)."""
        self.reader.collect()

    def shutdown(self) -> None:
        """Flush and stop every provider; never raises."""
        for provider in (self.tracer_provider, self.logger_provider,
                         self.meter_provider):
            try:
                provider.shutdown()
            except Exception:
                _log.warning("could not shut a telemetry provider down",
                             exc_info=True)


def _otlp_exporters(protocol: str) -> tuple[Any, Any, Any]:
    # Each exporter reads its endpoint, headers and TLS settings from the
    # standard OTEL_EXPORTER_OTLP_* variables itself.
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import (
            OTLPLogExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )
    else:
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
            OTLPLogExporter,
        )
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter,
        )
    return OTLPSpanExporter(), OTLPMetricExporter(), OTLPLogExporter()


# -- the story -------------------------------------------------------------------


@dataclass
class DemoRun:
    """Everything the phases share."""

    simulator: Any
    bot: Any
    telemetry: DemoTelemetry
    started: float
    open_deals: list[tuple[str, str, float]] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def idle(self, seconds: float) -> None:
        """Wait, collecting metrics every half second (stall detection)."""
        end = time.monotonic() + max(seconds, 0.0)
        while True:
            self.telemetry.poll()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.5, left))

    def failures(self) -> Counter[str]:
        return Counter(self.bot.failures)


def _wait(run: DemoRun, condition: Callable[[], bool], timeout: float,
          step: Callable[[], None] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if step is not None:
            step()
        run.idle(0.2)
    return condition()


def phase_start(run: DemoRun, budget: float) -> str:
    bot = run.bot
    if not bot.login():
        raise DemoError("the sample bot could not log in to the simulator")
    accounts = bot.load_accounts()
    markets = [bot.load_market(epic) for epic in bot.epics]
    points = sum(bot.load_history(epic, 30) for epic in bot.epics)
    bot.connect_stream()
    if not _wait(run, lambda: bot.stream_updates() >= 10, 15.0):
        raise DemoError("no stream updates received within 15 s of connecting")
    return (f"logged in (REST v2), {accounts} accounts, {len(markets)} markets "
            f"{'/'.join(sorted({str(m) for m in markets}))}, {points} history "
            f"points; stream {bot.listener.status}, "
            f"{bot.stream_updates()} updates so far")


def _round_trip(run: DemoRun, tally: Counter[str]) -> None:
    # Open, move stop and limit, close: three deals, each confirmed.
    bot = run.bot
    epic = bot.epics[0]
    opened = bot.open_position(epic, "BUY", 1.0)
    tally[f"{opened.status}/{opened.confirmed_by}"] += 1
    if opened.status != "ACCEPTED" or not opened.deal_id:
        return
    run.open_deals.append((opened.deal_id, "BUY", 1.0))
    level = float(opened.level or 0.0)
    amended = bot.amend_position(opened.deal_id, round(level * 0.99, 5),
                                 round(level * 1.01, 5))
    tally[f"{amended.status}/{amended.confirmed_by}"] += 1
    bot.positions()
    run.idle(0.3)
    closed = bot.close_position(opened.deal_id, "BUY", 1.0)
    tally[f"{closed.status}/{closed.confirmed_by}"] += 1
    if closed.status == "ACCEPTED":
        run.open_deals.remove((opened.deal_id, "BUY", 1.0))


def phase_normal(run: DemoRun, budget: float) -> str:
    end = time.monotonic() + budget
    tally: Counter[str] = Counter()
    rounds = 0
    before = run.bot.stream_updates()
    while rounds == 0 or time.monotonic() < end:
        _round_trip(run, tally)
        rounds += 1
        run.bot.load_market(run.bot.epics[rounds % len(run.bot.epics)])
        run.idle(min(0.5, max(end - time.monotonic(), 0.0)))
    confirms = ", ".join(f"{k} {v}" for k, v in sorted(tally.items()))
    return (f"{rounds} open/amend/close rounds, confirms {confirms}; "
            f"{run.bot.stream_updates() - before} stream updates")


def phase_latency(run: DemoRun, budget: float) -> str:
    run.simulator.set_scenario("latency", mean_ms=120.0, jitter_ms=60.0,
                               spike_ms=1200.0, spike_probability=0.25)
    end = time.monotonic() + budget
    slowest, calls = 0.0, 0
    try:
        while calls < 2 or time.monotonic() < end:
            started = time.monotonic()
            if calls % 2:
                run.bot.positions()
            else:
                run.bot.load_market(run.bot.epics[0])
            slowest = max(slowest, time.monotonic() - started)
            calls += 1
    finally:
        run.simulator.clear_scenario("latency")
    return (f"REST slowed (mean 120 ms, 25% spikes of +1.2 s): {calls} calls, "
            f"slowest {slowest:.2f} s")


def phase_rejected(run: DemoRun, budget: float) -> str:
    run.simulator.set_scenario("rejected-deals", probability=1.0,
                               reasons="INSUFFICIENT_FUNDS")
    try:
        result = run.bot.open_position(run.bot.epics[0], "BUY", 1.0)
    finally:
        run.simulator.clear_scenario("rejected-deals")
    run.idle(max(budget - 0.5, 0.5))
    return (f"deal {result.status} ({result.reason}), confirmed over "
            f"{result.confirmed_by}")


def phase_stall(run: DemoRun, budget: float) -> str:
    bot = run.bot
    listener = bot.listener
    seen = len(listener.statuses)
    # Silent until the client gives the session up, then the server speaks
    # again: a stall that ended earlier would be a mere pause to the client.
    run.simulator.set_scenario("stream-stall")
    started = time.monotonic()
    try:
        noticed = _await_status(listener, seen, max(budget, 3.0) + GRACE)
    finally:
        run.simulator.clear_scenario("stream-stall")
    silent = time.monotonic() - started
    resumed_from = listener.last_update

    def recovered() -> bool:
        return (listener.status.startswith("CONNECTED:")
                and listener.last_update > resumed_from)

    ok = noticed and _wait(run, recovered, 4.0, step=bot.positions)
    if noticed and not ok:
        # A session whose subscriptions were lost in the silence: end it,
        # as a server would, and let the client start afresh.
        run.simulator.end_stream_sessions()
        ok = _wait(run, recovered, GRACE, step=bot.positions)
    run.idle(max(started + budget - time.monotonic(), 0.0))
    statuses = _dedupe(listener.statuses[seen:])
    outcome = "updates resumed" if ok else "the stream did NOT recover in time"
    return f"stream silent {silent:.1f} s: {' -> '.join(statuses)}; {outcome}"


def _await_status(listener: Any, seen: int, timeout: float) -> bool:
    # Woken by the listener itself: the stall must end within milliseconds
    # of the client giving the session up.
    deadline = time.monotonic() + timeout
    with listener.status_seen:
        while not any(s.startswith("DISCONNECTED") for s in listener.statuses[seen:]):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            listener.status_seen.wait(min(left, 0.5))
    return True


def _dedupe(values: Sequence[str]) -> list[str]:
    result: list[str] = []
    for value in values:
        if not result or result[-1] != value:
            result.append(value)
    return result


def phase_outage(run: DemoRun, budget: float) -> str:
    bot = run.bot
    before = run.failures()
    outage = max(1.5, min(2.5, budget * 0.5))
    run.simulator.set_scenario("outage", seconds=outage, status=503)
    started = time.monotonic()
    recovered_at: float | None = None
    deadline = started + outage + GRACE
    while time.monotonic() < deadline:
        answered = bot.positions()
        refused = run.failures()["CircuitOpenError"] > before["CircuitOpenError"]
        if answered is not None and refused and time.monotonic() > started + outage:
            recovered_at = time.monotonic()
            break
        run.idle(0.15)
    run.simulator.clear_scenario("outage")
    after = run.failures() - before
    recovery = (f"closed again {recovered_at - started - outage:.1f} s after "
                "the API recovered" if recovered_at else "did NOT recover in time")
    return (f"API down {outage:.1f} s (503): {after['HTTP 503']} failures, "
            f"{after['CircuitOpenError']} calls refused fast by the open breaker; "
            f"{recovery}")


def phase_allowance(run: DemoRun, budget: float) -> str:
    bot = run.bot
    before = run.failures()
    run.simulator.set_scenario("allowance-exhaustion")
    try:
        for index in range(8):
            if index % 2:
                bot.positions()
            else:
                bot.load_market(bot.epics[index % len(bot.epics)])
            run.idle(0.1)
    finally:
        run.simulator.clear_scenario("allowance-exhaustion")
    run.idle(max(budget - 1.0, 0.2))
    after = run.failures() - before
    return (f"simulator cut the allowances: {_calls(after['HTTP 403'])} answered "
            f"403 (allowance exceeded), then the limiter refused "
            f"{after['AllowanceExhaustedError']} non-trading calls locally "
            f"(enforce mode)")


def _calls(count: int) -> str:
    return "1 call" if count == 1 else f"{count} calls"


def phase_shutdown(run: DemoRun, budget: float) -> str:
    bot = run.bot
    closed = Counter()
    for deal_id, direction, size in list(run.open_deals):
        result = bot.close_position(deal_id, direction, size)
        closed[f"{result.status}/{result.confirmed_by}"] += 1
    bot.disconnect_stream()
    bot.logout()
    text = ", ".join(f"{k} {v}" for k, v in closed.items()) or "none open"
    return f"closed positions: {text}; stream disconnected; logged out"


PHASES: tuple[tuple[str, Callable[[DemoRun, float], str]], ...] = (
    ("start", phase_start),
    ("normal trading", phase_normal),
    ("latency spike", phase_latency),
    ("rejected deal", phase_rejected),
    ("stream stall", phase_stall),
    ("REST outage", phase_outage),
    ("allowance pressure", phase_allowance),
    ("shutdown", phase_shutdown),
)


def budgets(duration: float) -> dict[str, float]:
    """Seconds each weighted phase gets of ``duration`` (start/shutdown: 0)."""
    usable = max(duration - 4.0, 0.0)
    total = sum(WEIGHTS.values())
    return {name: usable * weight / total for name, weight in WEIGHTS.items()}


# -- running it -------------------------------------------------------------------


def _quiet_logs(verbose: int) -> None:
    # The story is told by the progress lines; ig-otel's own warnings (a
    # 403, a breaker opening) are expected here, so show them only on -v.
    if verbose == 0:
        for name in ("ig_otel", "lightstreamer", "aiohttp"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _instrument(simulator: Any, telemetry: DemoTelemetry) -> Any:
    from ig_otel import IGInstrumentor

    instrumentor = IGInstrumentor()
    host = simulator.base_url.split("://", 1)[1]
    instrumentor.instrument(
        hosts=(host,), tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider, resilience=True,
        rate_limit_mode="enforce", rate_limit_max_wait=0.5, breaker_fail_max=3,
        breaker_reset_timeout=1.0, stream_stall_seconds=1.5,
        stream_epics=EPICS, allowances=dict(DEMO_ALLOWANCES),
    )
    return instrumentor


def _simulator(seed: int) -> Any:
    from ig_otel.simulator import AllowanceLimits, Simulator

    limits = AllowanceLimits(
        app_non_trading=DEMO_ALLOWANCES["non_trading_app"],
        account_trading=DEMO_ALLOWANCES["trading"],
        account_non_trading=DEMO_ALLOWANCES["non_trading_account"],
        historical_points=DEMO_ALLOWANCES["historical"],
    )
    return Simulator(seed=seed, limits=limits, keepalive_ms=1000,
                     updates_per_second=5.0)


def _bot(simulator: Any) -> Any:
    from ig_otel._sample_bot import BotCredentials, SampleBot

    credentials = BotCredentials(simulator.rest_url, simulator.api_key,
                                 simulator.username, simulator.password)
    return SampleBot(credentials, EPICS, stalled_timeout_ms=500,
                     reconnect_timeout_ms=1000)


def _say(line: str) -> None:
    print(line, flush=True)


def _story(run: DemoRun, duration: float) -> list[dict[str, Any]]:
    shares = budgets(duration)
    done: list[dict[str, Any]] = []
    for name, phase in PHASES:
        started = time.monotonic()
        detail = phase(run, shares.get(name, 0.0))
        seconds = time.monotonic() - started
        done.append({"name": name, "seconds": round(seconds, 2), "detail": detail})
        _say(f"[{run.elapsed():5.1f}s] {name:<19} {detail}")
    return done


def _extra(run: DemoRun) -> dict[str, Any]:
    stats = run.simulator.stats
    bot = run.bot
    with bot.listener.lock:
        updates = dict(bot.listener.updates)
    return {
        "duration_s": round(run.elapsed(), 2),
        "bot": {"rest_calls": bot.calls, "failures": dict(bot.failures),
                "stream_updates": updates, "history_points": bot.history_points},
        "simulator": {"requests": sum(stats.requests.values()),
                      "statuses": {str(k): v for k, v in stats.statuses.items()},
                      "updates_sent": stats.updates_sent,
                      "stream_sessions": stats.stream_sessions},
    }


def _check(summary: Mapping[str, Any]) -> None:
    metrics = summary["metrics"]
    if not any(" /" in name for name in summary["spans"]):
        raise DemoError("no REST spans were captured; is the instrumentation on?")
    if not metrics.get(names.STREAM_UPDATES.name):
        raise DemoError("no stream updates were counted")


def run_demo(options: DemoOptions) -> int:
    """Run the demo; answers the exit status (0 on success)."""
    _quiet_logs(options.verbose)
    telemetry = DemoTelemetry.install(os.environ)
    simulator = _simulator(options.seed)
    instrumentor = bot = None
    try:
        with simulator:
            _say(f"IG simulator on {simulator.base_url} (REST /gateway/deal, "
                 f"Lightstreamer /lightstreamer); telemetry in memory"
                 + (f" and OTLP ({telemetry.otlp})" if telemetry.otlp else ""))
            instrumentor = _instrument(simulator, telemetry)
            bot = _bot(simulator)
            run = DemoRun(simulator, bot, telemetry, time.monotonic())
            phases = _story(run, options.duration)
            extra = _extra(run)
            bot.close()
            bot = None
            telemetry.tracer_provider.force_flush()
            telemetry.logger_provider.force_flush()
            summary = summarize(telemetry.spans.get_finished_spans(),
                                telemetry.reader.get_metrics_data(),
                                telemetry.logs.get_finished_logs(), phases, extra)
    except KeyboardInterrupt:
        print("ig-otel demo: interrupted", file=sys.stderr)
        return 130
    except DemoError as error:
        print(f"ig-otel demo: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # one line for the user; details on -v
        _log.debug("demo failed", exc_info=True)
        print(f"ig-otel demo: failed: {type(error).__name__}: {error}",
              file=sys.stderr)
        return 1
    finally:
        if bot is not None:
            with contextlib.suppress(Exception):
                bot.close()
        if instrumentor is not None:
            with contextlib.suppress(Exception):
                instrumentor.uninstrument()
        telemetry.shutdown()
    for line in format_summary(summary):
        _say(line)
    try:
        _check(summary)
    except DemoError as error:
        print(f"ig-otel demo: {error}", file=sys.stderr)
        return 1
    if options.json_path:
        with open(options.json_path, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2, default=str)
        _say(f"summary written to {options.json_path}")
    return 0

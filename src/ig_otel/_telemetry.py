"""The telemetry contract: every attribute key and instrument of ig-otel.

Names, kinds and units here are a public interface: users' dashboards and
alerts are written against the Prometheus series they turn into. Add
attributes freely; never rename. Nothing else in the package spells a
telemetry name as a literal.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from enum import Enum
from typing import Any

from opentelemetry import metrics

from ig_otel._version import __version__

#: Meter, tracer and event-logger scope of everything ig-otel emits.
SCOPE = "ig_otel"

# -- attribute keys ---------------------------------------------------------

URL_TEMPLATE = "url.template"
HTTP_METHOD = "http.request.method"
HTTP_METHOD_ORIGINAL = "http.request.method_original"
HTTP_STATUS_CODE = "http.response.status_code"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
URL_FULL = "url.full"

IG_API_VERSION = "ig.api.version"
IG_ALLOWANCE = "ig.allowance"
IG_ENVIRONMENT = "ig.environment"
IG_ERROR_CODE = "ig.error_code"
IG_DEAL_REFERENCE = "ig.deal.reference"
IG_DEAL_ID = "ig.deal.id"
IG_DEAL_STATUS = "ig.deal.status"
IG_DEAL_REASON = "ig.deal.reason"
IG_EPIC = "ig.epic"
IG_CONFIRMATION_SOURCE = "ig.confirmation.source"

IG_STREAM_ITEM_KIND = "ig.stream.item_kind"
IG_STREAM_MODE = "ig.stream.mode"
IG_STREAM_STATUS = "ig.stream.status"
IG_STREAM_ERROR_CODE = "ig.stream.error_code"
IG_STREAM_STATUS_DETAIL = "ig.stream.status_detail"
IG_STREAM_EPIC = "ig.stream.epic"

IG_BREAKER_NAME = "ig.circuit_breaker.name"
IG_BREAKER_STATE = "ig.circuit_breaker.state"
IG_BREAKER_FROM = "ig.circuit_breaker.from"
IG_BREAKER_TO = "ig.circuit_breaker.to"
IG_BREAKER_OUTCOME = "ig.circuit_breaker.outcome"

IG_ALLOWANCE_SCOPE = "ig.allowance.scope"
IG_LIMITER_MODE = "ig.rate_limiter.mode"
IG_LIMITER_RETRY_AFTER = "ig.rate_limiter.retry_after"

IG_HEALTH_CHECK = "ig.health.check"


class Allowance(str, Enum):
    """IG allowance class of an endpoint (``ig.allowance``)."""

    TRADING = "trading"
    NON_TRADING = "non_trading"
    HISTORICAL = "historical"
    SESSION = "session"


class Environment(str, Enum):
    """Which IG platform a host belongs to (``ig.environment``)."""

    LIVE = "live"
    DEMO = "demo"
    OTHER = "other"


class ConfirmationSource(str, Enum):
    """Where a deal confirmation was observed."""

    REST = "rest"
    STREAM = "stream"


class StreamStatus(str, Enum):
    """Coarse Lightstreamer session status (``ig.stream.status``)."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    STALLED = "stalled"
    DISCONNECTED = "disconnected"


class BreakerState(str, Enum):
    """Circuit breaker state (``ig.circuit_breaker.state``)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerOutcome(str, Enum):
    """What happened to one call through a breaker."""

    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"
    REJECTED = "rejected"


STREAM_ITEM_KINDS = ("PRICE", "MARKET", "CHART", "CHART_TICK", "ACCOUNT", "TRADE")

# -- instruments ------------------------------------------------------------

#: Bucket boundaries for request-sized durations, in seconds.
SECONDS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)

#: Bucket boundaries for stream lag and deal confirmation latency, in seconds.
LAG_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
)


class Kind(str, Enum):
    COUNTER = "counter"
    UP_DOWN_COUNTER = "up_down_counter"
    HISTOGRAM = "histogram"
    GAUGE = "gauge"
    OBSERVABLE_GAUGE = "observable_gauge"
    OBSERVABLE_COUNTER = "observable_counter"
    OBSERVABLE_UP_DOWN_COUNTER = "observable_up_down_counter"


@dataclass(frozen=True)
class Instrument:
    """One instrument of the contract: its name, kind, unit and meaning."""

    name: str
    kind: Kind
    unit: str
    description: str
    buckets: tuple[float, ...] | None = None


REST_REQUEST_DURATION = Instrument(
    "ig.rest.request.duration", Kind.HISTOGRAM, "s",
    "Duration of IG REST calls, failures included.", SECONDS_BUCKETS,
)
ALLOWANCE_UTILIZATION = Instrument(
    "ig.allowance.utilization", Kind.OBSERVABLE_GAUGE, "1",
    "Share of an IG allowance used in the current window (1 = all of it).",
)
ALLOWANCE_EXCEEDED = Instrument(
    "ig.allowance.exceeded", Kind.COUNTER, "{error}",
    "IG answers that said an allowance was exceeded.",
)
ALLOWANCE_HISTORICAL_REMAINING = Instrument(
    "ig.allowance.historical.remaining", Kind.OBSERVABLE_GAUGE, "{point}",
    "Historical price points left this week, as IG last reported it.",
)
DEAL_CONFIRMATIONS = Instrument(
    "ig.deal.confirmations", Kind.COUNTER, "{confirmation}",
    "Deal confirmations observed, by status and reason.",
)
DEAL_CONFIRMATION_LATENCY = Instrument(
    "ig.deal.confirmation.latency", Kind.HISTOGRAM, "s",
    "Time from the dealing response that gave a deal reference to its confirm.",
    LAG_BUCKETS,
)
STREAM_UPDATES = Instrument(
    "ig.stream.updates", Kind.OBSERVABLE_COUNTER, "{update}",
    "Lightstreamer item updates received.",
)
STREAM_UPDATE_LAG = Instrument(
    "ig.stream.update.lag", Kind.HISTOGRAM, "s",
    "Delay between the server timestamp of an update and its arrival.",
    LAG_BUCKETS,
)
STREAM_STATUS = Instrument(
    "ig.stream.status", Kind.OBSERVABLE_GAUGE, "{status}",
    "1 for the current Lightstreamer session status, 0 for the others.",
)
STREAM_SILENCE = Instrument(
    "ig.stream.silence", Kind.OBSERVABLE_GAUGE, "s",
    "Seconds since the last message (data or PROBE) on the stream.",
)
STREAM_RECONNECTS = Instrument(
    "ig.stream.reconnects", Kind.OBSERVABLE_COUNTER, "{reconnect}",
    "Times the stream reconnected after a loss.",
)
STREAM_SUBSCRIPTIONS = Instrument(
    "ig.stream.subscriptions", Kind.OBSERVABLE_UP_DOWN_COUNTER, "{subscription}",
    "Active Lightstreamer subscriptions.",
)
STREAM_LOST_UPDATES = Instrument(
    "ig.stream.lost_updates", Kind.OBSERVABLE_COUNTER, "{update}",
    "Updates the server reported as dropped.",
)
STREAM_ERRORS = Instrument(
    "ig.stream.errors", Kind.OBSERVABLE_COUNTER, "{error}",
    "Server and subscription errors by TLCP code.",
)
BREAKER_STATE = Instrument(
    "ig.circuit_breaker.state", Kind.OBSERVABLE_GAUGE, "{state}",
    "1 for the current state of a circuit breaker, 0 for the others.",
)
BREAKER_TRANSITIONS = Instrument(
    "ig.circuit_breaker.transitions", Kind.COUNTER, "{transition}",
    "Circuit breaker state changes.",
)
BREAKER_CALLS = Instrument(
    "ig.circuit_breaker.calls", Kind.COUNTER, "{call}",
    "Calls through a circuit breaker by outcome.",
)
LIMITER_WAIT_DURATION = Instrument(
    "ig.rate_limiter.wait.duration", Kind.HISTOGRAM, "s",
    "Time a call waited for its IG allowance.", LAG_BUCKETS,
)
LIMITER_REJECTIONS = Instrument(
    "ig.rate_limiter.rejections", Kind.COUNTER, "{call}",
    "Calls refused locally because their allowance was spent.",
)
HTTP_CONNECTIONS_CREATED = Instrument(
    "ig.http.connections.created", Kind.COUNTER, "{connection}",
    "New HTTP connections opened by ig-otel's pooled transports.",
)
HEALTH_STATUS = Instrument(
    "ig.health.status", Kind.OBSERVABLE_GAUGE, "{status}",
    "Health check result: 0 pass, 1 warn, 2 fail.",
)

INSTRUMENTS = (
    REST_REQUEST_DURATION, ALLOWANCE_UTILIZATION, ALLOWANCE_EXCEEDED,
    ALLOWANCE_HISTORICAL_REMAINING, DEAL_CONFIRMATIONS, DEAL_CONFIRMATION_LATENCY,
    STREAM_UPDATES, STREAM_UPDATE_LAG, STREAM_STATUS, STREAM_SILENCE,
    STREAM_RECONNECTS, STREAM_SUBSCRIPTIONS, STREAM_LOST_UPDATES, STREAM_ERRORS,
    BREAKER_STATE, BREAKER_TRANSITIONS, BREAKER_CALLS, LIMITER_WAIT_DURATION,
    LIMITER_REJECTIONS, HTTP_CONNECTIONS_CREATED, HEALTH_STATUS,
)

# -- events -----------------------------------------------------------------

EVENT_BREAKER_STATE_CHANGE = "ig.circuit_breaker.state_change"
EVENT_LIMITER_REJECTED = "ig.rate_limiter.rejected"
EVENT_ALLOWANCE_EXCEEDED = "ig.allowance.exceeded"
EVENT_STREAM_STATUS_CHANGE = "ig.stream.status_change"
EVENT_DEAL_REJECTED = "ig.deal.rejected"

# -- span names -------------------------------------------------------------

#: Span from a Lightstreamer connect (or reconnect attempt) to connected/failed.
SPAN_STREAM_SESSION = "ig.stream.session"
#: Span from a subscribe request to the server's SUBOK or error.
SPAN_STREAM_SUBSCRIBE = "ig.stream.subscribe"


def prometheus_name(instrument: Instrument) -> str:
    """Series name the collector's default translation gives an instrument.

    Histograms get ``_bucket``/``_sum``/``_count`` appended by Prometheus;
    this returns the base name.
    """
    base = instrument.name.replace(".", "_")
    unit_suffix = {"s": "_seconds", "By": "_bytes"}.get(instrument.unit, "")
    if unit_suffix and not base.endswith(unit_suffix):
        base += unit_suffix
    monotonic = instrument.kind in (Kind.COUNTER, Kind.OBSERVABLE_COUNTER)
    if monotonic:
        return base + "_total"
    gauge = instrument.kind in (Kind.GAUGE, Kind.OBSERVABLE_GAUGE)
    if gauge and instrument.unit == "1" and not base.endswith("_ratio"):
        base += "_ratio"
    return base


def create_instrument(meter: Any, spec: Instrument, callbacks: Any = None) -> Any:
    """Create the instrument ``spec`` describes on ``meter``.

    Observable kinds take ``callbacks``; histograms get the spec's bucket
    boundaries as advice, so seconds are bucketed as seconds.
    """
    common = {"unit": spec.unit, "description": spec.description}
    if spec.kind is Kind.HISTOGRAM:
        return meter.create_histogram(
            spec.name, explicit_bucket_boundaries_advisory=list(spec.buckets or ()),
            **common,
        )
    factory = getattr(meter, f"create_{spec.kind.value}")
    if spec.kind.value.startswith("observable"):
        return factory(spec.name, callbacks or [], **common)
    return factory(spec.name, **common)


class ProviderBound:
    """Base of telemetry holders kept once per MeterProvider.

    A subclass's ``__init__`` takes the provider and creates its
    instruments; :meth:`for_provider` hands out the one instance per
    provider (the global one by default), so instruments and observable
    callbacks are registered once however many breakers or limiters report.
    """

    _instances: weakref.WeakKeyDictionary[Any, ProviderBound]
    _instances_lock: threading.Lock

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._instances = weakref.WeakKeyDictionary()
        cls._instances_lock = threading.Lock()

    @classmethod
    def for_provider(cls, provider: Any = None) -> Any:
        provider = provider or metrics.get_meter_provider()
        with cls._instances_lock:
            found = cls._instances.get(provider)
            if found is None:
                found = cls._instances[provider] = cls(provider)
            return found

    def __init__(self, provider: Any) -> None:
        self.meter = provider.get_meter(SCOPE, __version__)

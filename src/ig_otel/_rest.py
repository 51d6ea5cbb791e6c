"""The core of IG REST instrumentation, shared by the httpx and requests adapters.

An adapter asks :meth:`RestInstrumentation.classify` whether a request goes
to IG; if so it gets a :class:`RestCall` and drives it through three steps:

1. :meth:`RestInstrumentation.begin` finds the HTTP client span of the call.
   When the contrib httpx or requests instrumentation already made one, it is
   enriched in place (renamed ``{METHOD} {url.template}``, IG attributes
   added); otherwise ig-otel starts the span itself. Either way there is one
   span per call.
2. :meth:`RestInstrumentation.respond` reads what the answer says: status,
   IG ``errorCode``, deal reference, confirmation, historical allowance.
3. :meth:`RestInstrumentation.end` records ``ig.rest.request.duration``, on
   failure too, and ends the span if ig-otel owns it.

Adapters pass plain values in; nothing here imports httpx or requests.
Every step is guarded: an instrumentation bug is logged once and the
caller's request goes on untouched.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import context, trace
from opentelemetry.metrics import Histogram, Meter, Observation
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
)

from ig_otel import _telemetry as names
from ig_otel._config import Config
from ig_otel._deals import (
    TRACKER,
    DealMetrics,
    confirmation_from,
    deal_reference_from,
    load_json_object,
)
from ig_otel._errors import allowance_exceeded, parse_error_code
from ig_otel._events import SeverityNumber, emit_event
from ig_otel._redact import REDACTED, is_secret_header, redact_url
from ig_otel._routes import Route, effective_method, match_route
from ig_otel._telemetry import (
    Allowance,
    ConfirmationSource,
    Environment,
    create_instrument,
)

_log = logging.getLogger(__name__)

__all__ = ["RestCall", "RestInstrumentation", "environment_of"]

LIVE_HOSTS = frozenset({"api.ig.com", "net-api.ig.com"})
DEMO_HOSTS = frozenset({"demo-api.ig.com", "net-demo-api.ig.com"})

#: Largest body ig-otel reads to find an error code or a deal reference.
MAX_BODY_BYTES = 1 << 20

_HTTP_SCOPE_PREFIX = "opentelemetry.instrumentation."
_CAPTURE_VARIABLES = (
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE",
)
_HEADER_ATTRIBUTE_PREFIXES = ("http.request.header.", "http.response.header.")


def environment_of(host: str) -> Environment:
    """``live``, ``demo`` or ``other`` for an API host name."""
    host = host.lower()
    if host in LIVE_HOSTS:
        return Environment.LIVE
    if host in DEMO_HOSTS:
        return Environment.DEMO
    return Environment.OTHER


@dataclass(eq=False, slots=True)
class RestCall:
    """One IG REST call on its way through the instrumentation."""

    method: str
    original_method: str
    route: Route
    environment: Environment
    api_version: str | None
    url: object
    host: str
    port: int | None
    started: float = 0.0
    span: Span | None = None
    owns_span: bool = False
    token: object | None = None
    status_code: int | None = None
    error_code: str | None = None
    error_type: str | None = None
    begun: bool = False
    ended: bool = False
    admission: Any = None
    request_body: Callable[[], bytes | None] | None = None

    @property
    def needs_body(self) -> bool:
        """Whether the answer body holds something telemetry wants."""
        if self.status_code is not None and self.status_code >= 400:
            return True
        template = self.route.template
        if self.route.allowance is Allowance.TRADING:
            return True
        return template.startswith(("/confirms/", "/prices/"))


class DeferredHistogram:
    """Keeps histogram points in a plain list until the next collection.

    The SDK spends over 10 us validating the attributes of each recorded
    point; doing that at collection time keeps it off the request path.
    Each point keeps its span context so exemplars still link to the
    call's trace. Past ``capacity`` buffered points (no reader is
    collecting) points are recorded at once, so memory stays bounded and
    nothing is lost.
    """

    def __init__(self, histogram: Histogram, capacity: int = 20_000) -> None:
        self._histogram = histogram
        self._capacity = capacity
        self._points: list[tuple[float, dict[str, Any], SpanContext]] = []
        self._lock = threading.Lock()

    def record(self, value: float, attributes: dict[str, Any]) -> None:
        span_context = trace.get_current_span().get_span_context()
        with self._lock:
            if len(self._points) < self._capacity:
                self._points.append((value, attributes, span_context))
                return
        self._histogram.record(value, attributes, _context_of(span_context))

    def flush(self) -> None:
        with self._lock:
            points, self._points = self._points, []
        for value, attributes, span_context in points:
            self._histogram.record(value, attributes, _context_of(span_context))


def _context_of(span_context: SpanContext) -> context.Context | None:
    # Only sampled spans carry exemplars; skip building a context otherwise.
    if not span_context.trace_flags.sampled:
        return None
    return trace.set_span_in_context(NonRecordingSpan(span_context))


class _OnceLogger:
    """Logs each distinct instrumentation failure once, then stays quiet."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def failure(self, step: str) -> None:
        with self._lock:
            first = step not in self._seen
            self._seen.add(step)
        if first:
            _log.warning(
                "ig-otel instrumentation failed in %s; the request goes on "
                "untouched and further failures here are logged at DEBUG",
                step, exc_info=True,
            )
        else:
            _log.debug("ig-otel instrumentation failed in %s", step, exc_info=True)


class RestInstrumentation:
    """Turns IG REST calls into enriched spans and contract metrics."""

    def __init__(
        self,
        config: Config,
        tracer: Tracer,
        meter: Meter,
        clock: Callable[[], float] = time.perf_counter,
        guard: Any = None,
    ) -> None:
        self.config = config
        self.guard = guard
        self._tracer = tracer
        self._clock = clock
        self._errors = _OnceLogger()
        self._ig_hosts = _host_set(config.hosts)
        self._deals = DealMetrics(meter, config.capture_deals)
        self._historical_remaining: float | None = None
        self._scrub_headers = _header_capture_on()
        self._metric_bases: dict[tuple[str, str], dict[str, Any]] = {}
        self._create_instruments(meter)

    def _create_instruments(self, meter: Meter) -> None:
        self._duration = DeferredHistogram(
            create_instrument(meter, names.REST_REQUEST_DURATION)
        )
        self._exceeded = create_instrument(meter, names.ALLOWANCE_EXCEEDED)
        create_instrument(
            meter, names.ALLOWANCE_HISTORICAL_REMAINING, [self._observe_historical]
        )

    def _observe_historical(self, _options: Any) -> list:
        # Runs at every collection, before histograms are read: flush first.
        self._duration.flush()
        if self._historical_remaining is None:
            return []
        return [Observation(self._historical_remaining)]

    # -- step 0: is it IG? -------------------------------------------------

    def classify(
        self,
        method: str | bytes,
        url: object,
        host: str,
        port: int | None,
        path: str,
        headers: Mapping[str, str],
    ) -> RestCall | None:
        """A :class:`RestCall` for a request to IG, None for any other host.

        ``url`` is only turned into text when ig-otel makes the span itself;
        ``headers`` needs ``get`` for the lower-case names ``_method`` and
        ``version`` only.
        """
        try:
            if not self._is_ig_host(host, port):
                return None
            return self._new_call(method, url, host, port, path, headers)
        except Exception:
            self._errors.failure("classify")
            return None

    def _is_ig_host(self, host: str, port: int | None) -> bool:
        host = host.lower()
        if host in LIVE_HOSTS or host in DEMO_HOSTS:
            return True
        return host in self._ig_hosts or f"{host}:{port}" in self._ig_hosts

    def _new_call(
        self,
        method: str | bytes,
        url: object,
        host: str,
        port: int | None,
        path: str,
        headers: Mapping[str, str],
    ) -> RestCall:
        original = method.decode() if isinstance(method, bytes) else method
        effective = effective_method(original, headers)
        return RestCall(
            method=effective,
            original_method=original.upper(),
            route=match_route(effective, path),
            environment=environment_of(host),
            api_version=_api_version(headers),
            url=url,
            host=host,
            port=port,
        )

    # -- step 1: begin -----------------------------------------------------

    def begin(self, call: RestCall) -> None:
        """Find or start the call's span and start the clock."""
        call.started = self._clock()
        call.begun = True
        try:
            self._attach_span(call)
            if call.span is not None and call.span.is_recording():
                self._describe_request(call, call.request_body or _no_body)
        except Exception:
            self._errors.failure("begin")

    def _attach_span(self, call: RestCall) -> None:
        current = trace.get_current_span()
        if _is_http_client_span(current):
            call.span = current
            if self._scrub_headers:
                _scrub_captured_headers(current)
            return
        call.span = self._tracer.start_span(
            _span_name(call), kind=SpanKind.CLIENT,
            attributes=_own_span_attributes(call),
        )
        call.owns_span = True
        call.token = context.attach(trace.set_span_in_context(call.span))

    def _describe_request(
        self, call: RestCall, request_body: Callable[[], bytes | None]
    ) -> None:
        span = call.span
        assert span is not None
        span.update_name(_span_name(call))
        span.set_attributes(_request_attributes(call, self.config.capture_deals))
        if self.config.capture_deals and call.route.allowance is Allowance.TRADING:
            epic = _epic_of(request_body())
            if epic:
                span.set_attribute(names.IG_EPIC, epic)

    # -- resilience --------------------------------------------------------

    def admit(self, call: RestCall, guarded: bool = False) -> None:
        """Pass the call through the guard (limiter, breaker) if one is set.

        Raises what the guard raises on purpose (``CircuitOpenError``,
        ``AllowanceExhaustedError``) so the caller can fail fast.
        """
        if self.guard is None or guarded:
            return
        call.admission = self.guard.admit(call.route.allowance)

    async def admit_async(self, call: RestCall, guarded: bool = False) -> None:
        """Async twin of :meth:`admit`."""
        if self.guard is None or guarded:
            return
        call.admission = await self.guard.admit_async(call.route.allowance)

    def _settle(self, call: RestCall, error: BaseException | None) -> None:
        if self.guard is None or call.admission is None:
            return
        self.guard.settle(
            call.admission, status_code=call.status_code,
            error_code=call.error_code, error=error,
        )

    # -- step 2: the answer ------------------------------------------------

    def respond(
        self,
        call: RestCall,
        status_code: int,
        body: bytes | None,
    ) -> None:
        """Read the status and, when given, the body of IG's answer."""
        call.status_code = status_code
        try:
            self._read_answer(call, status_code, body)
        except Exception:
            self._errors.failure("respond")

    def _read_answer(
        self, call: RestCall, status_code: int, body: bytes | None
    ) -> None:
        if status_code >= 400:
            call.error_code = parse_error_code(body)
            call.error_type = str(status_code)
        span = call.span
        recording = span is not None and span.is_recording()
        if recording and call.owns_span:
            _mark_status(span, status_code)
        if recording and call.error_code:
            span.set_attribute(names.IG_ERROR_CODE, call.error_code)
        if call.error_code:
            self._note_allowance_error(call)
        if 200 <= status_code < 300 and body:
            self._read_success(call, body)

    def _read_success(self, call: RestCall, body: bytes) -> None:
        document = load_json_object(body)
        if document is None:
            return
        if call.route.allowance is Allowance.TRADING:
            self._note_deal_reference(call, deal_reference_from(document))
        elif call.route.template.startswith("/confirms/"):
            self._note_confirmation(call, document)
        elif call.route.allowance is Allowance.HISTORICAL:
            self._note_historical(document)

    def _note_deal_reference(self, call: RestCall, reference: str | None) -> None:
        if reference is None:
            return
        for source, latency in TRACKER.sent(reference):
            self._deals.record_latency(source, latency)
        if self.config.capture_deals and _recording(call):
            call.span.set_attribute(names.IG_DEAL_REFERENCE, reference)

    def _note_confirmation(self, call: RestCall, document: Mapping[str, Any]) -> None:
        confirmation = confirmation_from(document)
        if confirmation is None:
            return
        if _recording(call):
            attributes = {
                names.IG_DEAL_STATUS: confirmation.deal_status,
                names.IG_DEAL_REASON: confirmation.reason,
            }
            if self.config.capture_deals:
                attributes[names.IG_DEAL_ID] = confirmation.deal_id
                attributes[names.IG_EPIC] = confirmation.epic
            call.span.set_attributes(
                {k: v for k, v in attributes.items() if v is not None}
            )
        self._deals.record(confirmation, ConfirmationSource.REST)

    def _note_historical(self, document: Mapping[str, Any]) -> None:
        block = document.get("allowance")
        metadata = document.get("metadata")
        if block is None and isinstance(metadata, dict):
            block = metadata.get("allowance")
        if isinstance(block, dict):
            remaining = block.get("remainingAllowance")
            if isinstance(remaining, (int, float)):
                self._historical_remaining = float(remaining)

    def _note_allowance_error(self, call: RestCall) -> None:
        spent = allowance_exceeded(call.error_code)
        if spent is None:
            return
        allowance, scope = spent
        attributes = {
            names.IG_ALLOWANCE: allowance.value,
            names.IG_ALLOWANCE_SCOPE: scope,
            names.IG_ERROR_CODE: call.error_code or "",
        }
        self._exceeded.add(1, attributes)
        emit_event(
            names.EVENT_ALLOWANCE_EXCEEDED, SeverityNumber.WARN, attributes,
            body=f"IG says the {scope} {allowance.value} allowance is spent",
        )
        _log.warning(
            "IG refused %s %s: the %s %s allowance is spent",
            call.method, call.route.template, scope, allowance.value,
        )

    # -- step 3: end -------------------------------------------------------

    def end(self, call: RestCall, error: BaseException | None = None) -> None:
        """Record the duration and finish the span (if ig-otel owns it)."""
        if call.ended:
            return
        call.ended = True
        try:
            if error is not None:
                call.error_type = type(error).__qualname__
            self._duration.record(
                max(self._clock() - call.started, 0.0), self._metric_attributes(call)
            )
            self._finish_span(call, error)
            self._settle(call, error)
        except Exception:
            self._errors.failure("end")

    def _metric_attributes(self, call: RestCall) -> dict[str, Any]:
        key = (call.method, call.route.template)
        base = self._metric_bases.get(key)
        if base is None:
            base = _metric_base(call)
            if len(self._metric_bases) < 4096:
                self._metric_bases[key] = base
        attributes = dict(base)
        attributes[names.IG_ENVIRONMENT] = call.environment.value
        if call.status_code is not None:
            attributes[names.HTTP_STATUS_CODE] = call.status_code
        if call.error_code:
            attributes[names.IG_ERROR_CODE] = call.error_code
        if call.error_type:
            attributes[names.ERROR_TYPE] = call.error_type
        return attributes

    def _finish_span(self, call: RestCall, error: BaseException | None) -> None:
        if not call.owns_span or call.span is None:
            return
        span = call.span
        if error is not None and span.is_recording():
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))
            span.set_attribute(names.ERROR_TYPE, type(error).__qualname__)
        if call.token is not None:
            context.detach(call.token)
            call.token = None
        span.end()


def _no_body() -> None:
    return None


def _host_set(hosts: tuple[str, ...]) -> frozenset[str]:
    cleaned = set()
    for host in hosts:
        host = host.strip().lower()
        for scheme in ("https://", "http://"):
            if host.startswith(scheme):
                host = host[len(scheme):]
        cleaned.add(host.split("/", 1)[0])
    return frozenset(cleaned)


def _api_version(headers: Mapping[str, str]) -> str | None:
    version = headers.get("version")
    if version and len(version) <= 3 and version.strip().isdigit():
        return version.strip()
    return None


def _span_name(call: RestCall) -> str:
    return f"{call.method} {call.route.template}"


def _is_http_client_span(span: Span) -> bool:
    """True for a recording CLIENT span made by a contrib HTTP instrumentation."""
    if not span.is_recording() or getattr(span, "kind", None) is not SpanKind.CLIENT:
        return False
    scope = getattr(span, "instrumentation_scope", None)
    return bool(scope and scope.name.startswith(_HTTP_SCOPE_PREFIX))


def _scrub_captured_headers(span: Span) -> None:
    """Overwrite any captured secret header already on a contrib span."""
    attributes = getattr(span, "attributes", None) or {}
    for key in list(attributes):
        if key.startswith(_HEADER_ATTRIBUTE_PREFIXES):
            header = key.rsplit(".", 1)[-1]
            if is_secret_header(header):
                span.set_attribute(key, [REDACTED])


def _own_span_attributes(call: RestCall) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        names.HTTP_METHOD: call.method,
        names.URL_FULL: redact_url(str(call.url)),
        names.SERVER_ADDRESS: call.host,
    }
    if call.port is not None:
        attributes[names.SERVER_PORT] = call.port
    return attributes


def _request_attributes(call: RestCall, capture_deals: bool) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        names.URL_TEMPLATE: call.route.template,
        names.IG_ALLOWANCE: call.route.allowance.value,
        names.IG_ENVIRONMENT: call.environment.value,
    }
    if call.original_method != call.method:
        attributes[names.HTTP_METHOD] = call.method
        attributes[names.HTTP_METHOD_ORIGINAL] = call.original_method
    if call.api_version:
        attributes[names.IG_API_VERSION] = call.api_version
    if capture_deals and call.route.variables:
        for variable, key in (
            ("epic", names.IG_EPIC),
            ("dealId", names.IG_DEAL_ID),
            ("dealReference", names.IG_DEAL_REFERENCE),
        ):
            value = call.route.variable(variable)
            if value:
                attributes[key] = value
    return attributes


def _metric_base(call: RestCall) -> dict[str, Any]:
    return {
        names.HTTP_METHOD: call.method,
        names.URL_TEMPLATE: call.route.template,
        names.IG_ALLOWANCE: call.route.allowance.value,
    }


def _header_capture_on() -> bool:
    """Whether the contrib instrumentations may capture headers onto spans."""
    return any(os.environ.get(variable) for variable in _CAPTURE_VARIABLES)


def _mark_status(span: Span, status_code: int) -> None:
    span.set_attribute(names.HTTP_STATUS_CODE, status_code)
    if status_code >= 400:
        span.set_attribute(names.ERROR_TYPE, str(status_code))
        span.set_status(Status(StatusCode.ERROR))


def _recording(call: RestCall) -> bool:
    return call.span is not None and call.span.is_recording()


def _epic_of(body: bytes | None) -> str | None:
    document = load_json_object(body)
    epic = document.get("epic") if document else None
    return epic if isinstance(epic, str) and 0 < len(epic) <= 30 else None

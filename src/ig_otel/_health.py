"""Health of an IG bot from readings of its real traffic, never calling IG.

:class:`HealthRegistry` collects readings that other parts already have:
breaker states and allowance utilization (from the guards it watches), the
last REST success and failure, and stream statuses reported by the stream
instrumentation. :meth:`HealthRegistry.readiness` and
:meth:`HealthRegistry.liveness` turn them into ``application/health+json``
documents (draft-inadarei-api-health-check): ``status`` pass, warn or fail,
and ``checks`` keyed ``"{component}:{measurement}"``, each an array of one
reading with ``observedValue``, ``observedUnit``, ``status`` and ``time``.

Readiness rules: an open breaker of a critical group (``trading`` by
default) fails; any other open or half-open breaker warns; a spent
allowance warns (the historical one for the rest of its week); a stream
that is not connected warns; a REST failure newer than the last success
warns. Liveness only says the process answers.

:class:`HealthServer` serves ``/livez``, ``/readyz`` (and ``/healthz`` as an
alias of ``/readyz``) from a small daemon thread: 200 for pass and warn,
503 for fail, with ``Cache-Control: max-age``. ``ig.health.status`` reports
each check as 0 pass, 1 warn, 2 fail.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from ig_otel import _telemetry as tm
from ig_otel._telemetry import BreakerState, StreamStatus
from ig_otel._version import __version__

__all__ = [
    "HEALTH_MEDIA_TYPE",
    "HealthRegistry",
    "HealthServer",
    "default_registry",
    "start_health_server",
]

_log = logging.getLogger(__name__)

HEALTH_MEDIA_TYPE = "application/health+json"
PASS, WARN, FAIL = "pass", "warn", "fail"
_RANK = {PASS: 0, WARN: 1, FAIL: 2}
_READY_CHECK = "readyz"


def _iso(stamp: float) -> str:
    moment = datetime.fromtimestamp(stamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _worst(statuses: Iterable[str]) -> str:
    return max(statuses, key=_RANK.__getitem__, default=PASS)


class HealthRegistry:
    """Readings of real traffic, turned into health documents on demand.

    Args:
        critical_breakers: Breaker names whose opening makes the bot unready.
        clock: Wall-clock seconds (``time.time``); injected by tests.
        meter_provider: Where ``ig.health.status`` goes (global by default).
    """

    def __init__(
        self,
        *,
        critical_breakers: Iterable[str] = ("trading",),
        clock: Callable[[], float] = time.time,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.critical_breakers = frozenset(critical_breakers)
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._guards: weakref.WeakSet[Any] = weakref.WeakSet()
        self._last_success: float | None = None
        self._last_failure: float | None = None
        self._streams: dict[str, tuple[StreamStatus, float]] = {}
        self._gauge_provider = meter_provider
        self._gauge_ready = False

    # -- readings -------------------------------------------------------------

    def watch_guard(self, guard: Any) -> None:
        """Report the breakers and limiter of a guard (held weakly)."""
        with self._lock:
            self._guards.add(guard)
        self._ensure_gauge()

    def rest_succeeded(self) -> None:
        """IG answered a REST call (any non-5xx answer)."""
        self._last_success = self._clock()

    def rest_failed(self) -> None:
        """A REST call failed: 5xx, timeout or transport error."""
        self._last_failure = self._clock()

    def set_stream_status(self, name: str, status: StreamStatus | str) -> None:
        """Record the status of a Lightstreamer connection."""
        with self._lock:
            self._streams[name] = (StreamStatus(status), self._clock())

    def forget_stream(self, name: str) -> None:
        """Stop reporting a stream (it was closed on purpose)."""
        with self._lock:
            self._streams.pop(name, None)

    # -- documents ------------------------------------------------------------

    def liveness(self) -> dict[str, Any]:
        """The ``/livez`` document: the process answers; no dependency checked."""
        now = self._clock()
        reading = {
            "componentType": "system",
            "observedValue": round(now - self._started, 3),
            "observedUnit": "s",
            "status": PASS,
            "time": _iso(now),
        }
        return {
            "status": PASS,
            "version": __version__,
            "checks": {"process:uptime": [reading]},
        }

    def readiness(self) -> dict[str, Any]:
        """The ``/readyz`` document, from the latest readings."""
        checks = dict(self._checks())
        status = _worst(r[0]["status"] for r in checks.values())
        document: dict[str, Any] = {"status": status, "version": __version__}
        if status != PASS:
            document["output"] = ", ".join(
                key for key, r in sorted(checks.items()) if r[0]["status"] != PASS
            )
        document["checks"] = checks
        return document

    def _checks(self) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        now = self._clock()
        stamp = _iso(now)
        for guard in list(self._guards):
            yield from self._breaker_checks(guard, stamp)
            yield from self._allowance_checks(guard, stamp)
        yield from self._rest_checks(now)
        yield from self._stream_checks()

    def _breaker_checks(self, guard: Any, stamp: str) -> Iterator[tuple[str, list]]:
        seen: set[str] = set()
        for breaker in guard.breakers.values():
            if breaker.name in seen:
                continue
            seen.add(breaker.name)
            state = breaker.state
            reading = {
                "componentType": "component",
                "observedValue": state.value,
                "status": self._breaker_status(breaker.name, state),
                "time": stamp,
            }
            if state is BreakerState.OPEN:
                reading["output"] = f"trial call in {breaker.retry_after():.1f} s"
            yield f"ig-{breaker.name}:circuitBreaker", [reading]

    def _breaker_status(self, name: str, state: BreakerState) -> str:
        if state is BreakerState.CLOSED:
            return PASS
        if state is BreakerState.OPEN and name in self.critical_breakers:
            return FAIL
        return WARN

    def _allowance_checks(self, guard: Any, stamp: str) -> Iterator[tuple[str, list]]:
        limiter = guard.limiter
        if limiter is None:
            return
        for budget, share in sorted(limiter.utilization().items()):
            reading = {
                "componentType": "component",
                "observedValue": round(share, 4),
                "observedUnit": "ratio",
                "status": WARN if share >= 1.0 else PASS,
                "time": stamp,
            }
            yield f"ig-allowance-{budget}:utilization", [reading]

    def _rest_checks(self, now: float) -> Iterator[tuple[str, list]]:
        success, failure = self._last_success, self._last_failure
        failing = failure is not None and (success is None or failure > success)
        for measurement, stamp in (("lastSuccess", success), ("lastFailure", failure)):
            if stamp is None:
                continue
            failed_reading = measurement == "lastFailure" and failing
            reading = {
                "componentType": "component",
                "observedValue": round(now - stamp, 3),
                "observedUnit": "s",
                "status": WARN if failed_reading else PASS,
                "time": _iso(stamp),
            }
            yield f"ig-rest:{measurement}", [reading]

    def _stream_checks(self) -> Iterator[tuple[str, list]]:
        with self._lock:
            streams = sorted(self._streams.items())
        for name, (status, since) in streams:
            reading = {
                "componentType": "component",
                "componentId": name,
                "observedValue": status.value,
                "status": PASS if status is StreamStatus.CONNECTED else WARN,
                "time": _iso(since),
            }
            yield f"ig-stream-{name}:status", [reading]

    # -- telemetry ------------------------------------------------------------

    def _ensure_gauge(self) -> None:
        with self._lock:
            if self._gauge_ready:
                return
            self._gauge_ready = True
        provider = self._gauge_provider or metrics.get_meter_provider()
        meter = provider.get_meter(tm.SCOPE, __version__)
        spec = tm.HEALTH_STATUS
        meter.create_observable_gauge(
            spec.name, [self._observe], unit=spec.unit, description=spec.description
        )

    def _observe(self, options: CallbackOptions) -> Iterator[Observation]:
        try:
            document = self.readiness()
        except Exception:  # a reading that fails must not break collection
            _log.debug("could not build the readiness document", exc_info=True)
            return
        yield Observation(_RANK[document["status"]], {tm.IG_HEALTH_CHECK: _READY_CHECK})
        for key, readings in document["checks"].items():
            status = readings[0]["status"]
            yield Observation(_RANK[status], {tm.IG_HEALTH_CHECK: key})


_default_registry_lock = threading.Lock()
_default_registry: list[HealthRegistry] = []


def default_registry() -> HealthRegistry:
    """The process-wide registry that guards report to by default."""
    with _default_registry_lock:
        if not _default_registry:
            _default_registry.append(HealthRegistry())
        return _default_registry[0]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes: without TCP_NODELAY,
    # Nagle and delayed ACKs add ~40 ms to every keep-alive answer.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        registry = self.server.registry
        if path == "/livez":
            document = registry.liveness()
        elif path in ("/readyz", "/healthz"):
            document = registry.readiness()
        else:
            self._send(404, {"status": FAIL, "output": "unknown path"}, 0)
            return
        code = 503 if document["status"] == FAIL else 200
        self._send(code, document, self.server.max_age)

    def _send(self, code: int, document: dict[str, Any], max_age: int) -> None:
        body = json.dumps(document).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", HEALTH_MEDIA_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", f"max-age={max_age}")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("health request: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: HealthRegistry
    max_age: int


class HealthServer:
    """``/livez`` and ``/readyz`` on a daemon thread.

    Args:
        address: ``(host, port)``; port 0 picks a free one.
        registry: Readings to serve (the process default).
        max_age: Seconds callers may cache an answer.
    """

    def __init__(
        self,
        address: tuple[str, int] = ("127.0.0.1", 0),
        registry: HealthRegistry | None = None,
        *,
        max_age: int = 2,
    ) -> None:
        self._server = _Server(address, _Handler)
        self._server.registry = registry or default_registry()
        self._server.max_age = max_age
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="ig-otel-health",
            daemon=True,
        )

    @property
    def address(self) -> tuple[str, int]:
        """The address actually bound."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """Base URL of the server."""
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> HealthServer:
        """Start serving; returns self."""
        self._thread.start()
        _log.info("health endpoints on %s", self.url)
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_health_server(
    address: tuple[str, int], registry: HealthRegistry | None = None
) -> HealthServer:
    """Serve health endpoints on ``address`` (``health_address`` setting)."""
    return HealthServer(address, registry).start()

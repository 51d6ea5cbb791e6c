"""Pooled transports for IG: breaker, allowance limiter and connection reuse.

One line gives a bot all three::

    client = httpx.Client(transport=ig_otel.IGTransport())
    client = httpx.AsyncClient(transport=ig_otel.IGAsyncTransport())
    session.mount("https://", ig_otel.IGHTTPAdapter())
    ig_otel.guard_session(ig_service.session)          # trading-ig

Each call is admitted by a :class:`~ig_otel._guard.Guard` (the process-wide
one unless given) under the allowance class of its IG route, and settled
with its status, IG error code or transport error. Connections are kept
alive with httpx's and urllib3's defaults, and every transport of a process
shares one ``SSLContext``. ``ig.http.connections.created`` counts new
connections (httpcore's ``connection.connect_tcp.started`` trace event for
httpx, the pool's ``_new_conn`` for requests), so reuse is visible.

Markers for the REST instrumentation, so it does not guard a call twice:

* httpx: the transports set ``request.extensions["ig_otel.guarded"] = True``
  before handing the request on, and carry the class attribute
  ``ig_otel_guarded = True`` (visible from the client through
  ``client._transport_for_url(url)`` before the transport runs);
* requests: :class:`IGHTTPAdapter` sets the attribute ``_ig_otel_guarded =
  True`` on the ``PreparedRequest`` (no header is added) before calling
  ``HTTPAdapter.send``.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from opentelemetry import metrics
from opentelemetry.metrics import MeterProvider
from requests.adapters import HTTPAdapter

from ig_otel import _telemetry as tm
from ig_otel._guard import Admission, Guard, default_guard
from ig_otel._telemetry import Allowance
from ig_otel._version import __version__

__all__ = [
    "GUARDED_ATTRIBUTE",
    "GUARDED_EXTENSION",
    "IGAsyncTransport",
    "IGHTTPAdapter",
    "IGTransport",
    "guard_session",
    "shared_ssl_context",
]

_log = logging.getLogger(__name__)

#: httpx request extension set on requests the transports guarded.
GUARDED_EXTENSION = "ig_otel.guarded"
#: PreparedRequest attribute set on requests the adapter guarded.
GUARDED_ATTRIBUTE = "_ig_otel_guarded"

_CONNECT_STARTED = "connection.connect_tcp.started"
_ERROR_BODY_LIMIT = 64 * 1024

_ssl_lock = threading.Lock()
_ssl_context: list[ssl.SSLContext] = []


def shared_ssl_context() -> ssl.SSLContext:
    """The verifying ``SSLContext`` every default transport shares.

    Building a context (and loading the CA bundle) costs about a
    millisecond or two; one per process is enough.
    """
    with _ssl_lock:
        if not _ssl_context:
            _ssl_context.append(httpx.create_ssl_context())
        return _ssl_context[0]


class _ConnectionCounter:
    """``ig.http.connections.created`` on one meter provider."""

    def __init__(self, meter_provider: MeterProvider | None) -> None:
        provider = meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter(tm.SCOPE, __version__)
        spec = tm.HTTP_CONNECTIONS_CREATED
        self._counter = meter.create_counter(
            spec.name, unit=spec.unit, description=spec.description
        )

    def created(self, host: str) -> None:
        self._counter.add(1, {tm.SERVER_ADDRESS: host})


def _allowance_of(method: str, path: str, headers: Any) -> Allowance:
    from ig_otel._routes import effective_method, match_route

    return match_route(effective_method(method, headers), path).allowance


def _error_code(status_code: int, body: Callable[[], bytes]) -> str | None:
    # Only 403 matters to the guard (IG's allowance errors); its body is small.
    if status_code != 403:
        return None
    from ig_otel._errors import parse_error_code

    try:
        return parse_error_code(body()[:_ERROR_BODY_LIMIT])
    except Exception:
        _log.debug("could not read an IG error body", exc_info=True)
        return None


def _transport_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs.setdefault("verify", shared_ssl_context())
    return kwargs


class _HttpxGuarding:
    """What the sync and async httpx transports share."""

    ig_otel_guarded = True

    def _setup(
        self, guard: Guard | None, meter_provider: MeterProvider | None
    ) -> None:
        self._guard = guard
        self._connections = _ConnectionCounter(meter_provider)

    @property
    def guard(self) -> Guard:
        """The guard admitting this transport's calls."""
        if self._guard is None:
            self._guard = default_guard()
        return self._guard

    def _prepare(self, request: httpx.Request) -> Allowance:
        request.extensions[GUARDED_EXTENSION] = True
        request.extensions["trace"] = self._tracer(
            request.url.host, request.extensions.get("trace")
        )
        return _allowance_of(request.method, request.url.path, request.headers)

    def _tracer(self, host: str, chained: Any) -> Any:
        counter = self._connections

        def trace(event_name: str, info: dict[str, Any]) -> None:
            if event_name == _CONNECT_STARTED:
                counter.created(host)
            if chained is not None:
                chained(event_name, info)

        return trace

    def _async_tracer(self, host: str, chained: Any) -> Any:
        counter = self._connections

        async def trace(event_name: str, info: dict[str, Any]) -> None:
            if event_name == _CONNECT_STARTED:
                counter.created(host)
            if chained is not None:
                await chained(event_name, info)

        return trace

    def _settle(
        self, admission: Admission, response: httpx.Response | None,
        error: BaseException | None,
    ) -> None:
        status = response.status_code if response is not None else None
        code = None
        if response is not None and status == 403:
            code = _error_code(403, lambda: _read_sync(response))
        self.guard.settle(admission, status_code=status, error_code=code, error=error)


def _read_sync(response: httpx.Response) -> bytes:
    return response.read()


class IGTransport(_HttpxGuarding, httpx.HTTPTransport):
    """``httpx.HTTPTransport`` with IG breakers, allowance limits and pooling.

    Args:
        guard: Guard admitting the calls; the process-wide one by default.
        meter_provider: Where ``ig.http.connections.created`` goes.
        **kwargs: ``httpx.HTTPTransport`` options (``limits``, ``http2``...);
            ``verify`` defaults to the shared ``SSLContext``.
    """

    def __init__(
        self,
        guard: Guard | None = None,
        *,
        meter_provider: MeterProvider | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**_transport_options(kwargs))
        self._setup(guard, meter_provider)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        allowance = self._prepare(request)
        admission = self.guard.admit(allowance)
        try:
            response = super().handle_request(request)
        except BaseException as error:
            self.guard.settle(admission, status_code=None, error_code=None,
                              error=error)
            raise
        self._settle(admission, response, None)
        return response


class IGAsyncTransport(_HttpxGuarding, httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` twin of :class:`IGTransport`."""

    def __init__(
        self,
        guard: Guard | None = None,
        *,
        meter_provider: MeterProvider | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**_transport_options(kwargs))
        self._setup(guard, meter_provider)

    def _prepare(self, request: httpx.Request) -> Allowance:
        request.extensions[GUARDED_EXTENSION] = True
        request.extensions["trace"] = self._async_tracer(
            request.url.host, request.extensions.get("trace")
        )
        return _allowance_of(request.method, request.url.path, request.headers)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        allowance = self._prepare(request)
        admission = await self.guard.admit_async(allowance)
        try:
            response = await super().handle_async_request(request)
        except BaseException as error:
            self.guard.settle(admission, status_code=None, error_code=None,
                              error=error)
            raise
        code = None
        if response.status_code == 403:
            body = await response.aread()
            code = _error_code(403, lambda: body)
        self.guard.settle(
            admission, status_code=response.status_code, error_code=code, error=None
        )
        return response


def _counting_pools(counter: _ConnectionCounter) -> dict[str, Any]:
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class CountingHTTPConnectionPool(HTTPConnectionPool):
        def _new_conn(self) -> Any:
            counter.created(str(self.host))
            return super()._new_conn()

    class CountingHTTPSConnectionPool(HTTPSConnectionPool):
        def _new_conn(self) -> Any:
            counter.created(str(self.host))
            return super()._new_conn()

    return {"http": CountingHTTPConnectionPool, "https": CountingHTTPSConnectionPool}


class IGHTTPAdapter(HTTPAdapter):
    """requests ``HTTPAdapter`` with IG breakers, allowance limits and pooling.

    Args:
        guard: Guard admitting the calls; the process-wide one by default.
        meter_provider: Where ``ig.http.connections.created`` goes.
        **kwargs: ``HTTPAdapter`` options (``pool_maxsize``...).
    """

    ig_otel_guarded = True

    def __init__(
        self,
        guard: Guard | None = None,
        *,
        meter_provider: MeterProvider | None = None,
        **kwargs: Any,
    ) -> None:
        self._guard = guard
        self._connections = _ConnectionCounter(meter_provider)
        super().__init__(**kwargs)

    @property
    def guard(self) -> Guard:
        """The guard admitting this adapter's calls."""
        if self._guard is None:
            self._guard = default_guard()
        return self._guard

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _counting_pools(self._connections)

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        setattr(request, GUARDED_ATTRIBUTE, True)
        path = urlsplit(request.url).path
        allowance = _allowance_of(request.method or "GET", path, request.headers)
        admission = self.guard.admit(allowance)
        try:
            response = super().send(request, *args, **kwargs)
        except BaseException as error:
            self.guard.settle(admission, status_code=None, error_code=None,
                              error=error)
            raise
        code = _error_code(response.status_code, lambda: response.content)
        self.guard.settle(
            admission, status_code=response.status_code, error_code=code, error=None
        )
        return response


def guard_session(session: Any, guard: Guard | None = None, **kwargs: Any) -> Any:
    """Mount an :class:`IGHTTPAdapter` on a ``requests.Session`` for HTTPS.

    Made for trading-ig: ``guard_session(IGService(...).session)``. Returns
    the session.
    """
    session.mount("https://", IGHTTPAdapter(guard, **kwargs))
    return session

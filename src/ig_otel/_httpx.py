"""httpx adapter of the IG REST instrumentation.

Two patch points, chosen so the nesting never depends on which
instrumentor loaded first:

- ``Client._send_single_request`` / ``AsyncClient._send_single_request``
  (outer): runs once per request after redirects and auth, before any
  transport. It classifies the request and decides who makes the span.
  When the contrib httpx instrumentation will make one (its transport
  wrapper sits inside this call), the :class:`RestCall` waits in a context
  variable for the inner point. Otherwise (contrib absent, or a custom
  transport it does not see) ig-otel makes the span here.
- ``httpcore.ConnectionPool.handle_request`` and its async twin (inner):
  reached from inside the contrib span by every ``httpx.HTTPTransport``.
  Here the contrib span is current, so ig-otel enriches it.

Bodies are read only when telemetry needs them (errors, dealing, confirms,
prices) and replayed to the caller unchanged.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from opentelemetry import propagate
from opentelemetry.instrumentation.utils import (
    is_http_instrumentation_enabled,
    is_instrumentation_enabled,
    suppress_http_instrumentation,
    unwrap,
)
from wrapt import wrap_function_wrapper

from ig_otel._rest import MAX_BODY_BYTES, RestCall, RestInstrumentation

_log = logging.getLogger(__name__)

__all__ = ["instrument", "uninstrument"]

GUARDED_EXTENSION = "ig_otel.guarded"

_PENDING: contextvars.ContextVar[RestCall | None] = contextvars.ContextVar(
    "ig_otel_pending_httpx_call", default=None
)
_state: dict[str, Any] = {"core": None}


def instrument(core: RestInstrumentation) -> None:
    """Patch httpx and httpcore; safe to call when httpx is absent."""
    import httpcore
    import httpx

    if _state["core"] is not None:
        _state["core"] = core
        return
    _state["core"] = core
    wrap_function_wrapper(httpx.Client, "_send_single_request", _send_sync)
    wrap_function_wrapper(httpx.AsyncClient, "_send_single_request", _send_async)
    wrap_function_wrapper(httpcore.ConnectionPool, "handle_request", _pool_sync)
    wrap_function_wrapper(
        httpcore.AsyncConnectionPool, "handle_async_request", _pool_async
    )


def uninstrument() -> None:
    """Remove the patches."""
    import httpcore
    import httpx

    if _state["core"] is None:
        return
    _state["core"] = None
    unwrap(httpx.Client, "_send_single_request")
    unwrap(httpx.AsyncClient, "_send_single_request")
    unwrap(httpcore.ConnectionPool, "handle_request")
    unwrap(httpcore.AsyncConnectionPool, "handle_async_request")


# -- outer point -------------------------------------------------------------


def _classify(client: Any, request: Any) -> tuple[RestCall | None, bool]:
    """The call (None if not IG) and whether a contrib span will wrap it."""
    core: RestInstrumentation | None = _state["core"]
    if core is None or not is_instrumentation_enabled():
        return None, False
    url = request.url
    call = core.classify(
        request.method, url, url.host, url.port, url.path,
        _header_view(request.headers.raw),
    )
    if call is None:
        return None, False
    call.request_body = lambda: _request_body(request)
    return call, _contrib_will_span(client, request)


_VIEWED_HEADERS = {b"_method": "_method", b"version": "version"}


def _header_view(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The few request headers IG semantics read, in one pass over raw ones."""
    view = {}
    for name, value in raw:
        key = _VIEWED_HEADERS.get(name.lower())
        if key is not None:
            view[key] = value.decode("latin-1")
    return view


def _transport_of(client: Any, request: Any) -> Any:
    """The transport the client will hand this request to."""
    if client._mounts:
        return client._transport_for_url(request.url)
    return client._transport


def _contrib_will_span(client: Any, request: Any) -> bool:
    if not is_http_instrumentation_enabled():
        return False
    try:
        transport = _transport_of(client, request)
        if not isinstance(transport, _http_transports()):
            return False
        if getattr(client, "_is_instrumented_by_opentelemetry", False):
            return True
        return _contrib_instrumented()
    except Exception:
        return False


def _http_transports() -> tuple[type, ...]:
    transports = _state.get("transports")
    if transports is None:
        import httpx

        transports = _state["transports"] = (
            httpx.HTTPTransport, httpx.AsyncHTTPTransport,
        )
    return transports


def _contrib_instrumented() -> bool:
    instrumentor = _state.get("contrib")
    if instrumentor is None:
        try:
            from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        except ImportError:
            return False
        instrumentor = _state["contrib"] = HTTPXClientInstrumentor()
    return bool(instrumentor.is_instrumented_by_opentelemetry)


def _send_sync(wrapped, client, args, kwargs):
    request = args[0] if args else kwargs["request"]
    call, contrib = _classify(client, request)
    if call is None:
        return wrapped(*args, **kwargs)
    core: RestInstrumentation = _state["core"]

    if contrib:
        token = _PENDING.set(call)
        try:
            return _run_deferred(core, call, client, request, wrapped, args, kwargs)
        finally:
            _PENDING.reset(token)
    return _run_owned(core, call, client, request, wrapped, args, kwargs)


def _guarded(client: Any, request: Any) -> bool:
    """Whether ig-otel's own pooled transport guards this request already."""
    if request.extensions.get(GUARDED_EXTENSION, False):
        return True
    try:
        return bool(getattr(_transport_of(client, request), "ig_otel_guarded", False))
    except Exception:
        return False


def _run_deferred(core, call, client, request, wrapped, args, kwargs):
    try:
        core.admit(call, _guarded(client, request))
        response = wrapped(*args, **kwargs)
    except BaseException as error:
        _end_unbegun(core, call, error)
        raise
    _end_unbegun(core, call, None)
    return response


def _run_owned(core, call, client, request, wrapped, args, kwargs):
    core.begin(call)
    _inject(request)
    try:
        core.admit(call, _guarded(client, request))
        with _maybe_suppressed(client):
            response = wrapped(*args, **kwargs)
    except BaseException as error:
        core.end(call, error)
        raise
    _respond_httpx(core, call, response)
    core.end(call)
    return response


async def _send_async(wrapped, client, args, kwargs):
    request = args[0] if args else kwargs["request"]
    call, contrib = _classify(client, request)
    if call is None:
        return await wrapped(*args, **kwargs)
    core: RestInstrumentation = _state["core"]

    if contrib:
        token = _PENDING.set(call)
        try:
            try:
                await core.admit_async(call, _guarded(client, request))
                response = await wrapped(*args, **kwargs)
            except BaseException as error:
                _end_unbegun(core, call, error)
                raise
            _end_unbegun(core, call, None)
            return response
        finally:
            _PENDING.reset(token)

    core.begin(call)
    _inject(request)
    try:
        await core.admit_async(call, _guarded(client, request))
        with _maybe_suppressed(client):
            response = await wrapped(*args, **kwargs)
    except BaseException as error:
        core.end(call, error)
        raise
    await _respond_httpx_async(core, call, response)
    core.end(call)
    return response


def _end_unbegun(core: RestInstrumentation, call: RestCall, error) -> None:
    """Account for a call that never reached the wire (e.g. refused early)."""
    if call.begun:
        return
    core.begin(call)
    core.end(call, error)


def _maybe_suppressed(client: Any) -> AbstractContextManager[object]:
    # A custom transport on a client passed to instrument_client would get a
    # contrib span nested in ours; suppressing keeps one span per call.
    if getattr(client, "_is_instrumented_by_opentelemetry", False):
        return suppress_http_instrumentation()
    return nullcontext()


def _inject(request: Any) -> None:
    try:
        propagate.inject(request.headers)
    except Exception:
        _log.debug("could not inject trace context", exc_info=True)


def _request_body(request: Any) -> bytes | None:
    try:
        return request.content
    except Exception:
        return None


def _respond_httpx(core: RestInstrumentation, call: RestCall, response: Any) -> None:
    call.status_code = response.status_code
    body = None
    if call.needs_body and _small(response.headers):
        try:
            body = response.read()
        except Exception:
            body = None
    core.respond(call, response.status_code, body)


async def _respond_httpx_async(
    core: RestInstrumentation, call: RestCall, response: Any
) -> None:
    call.status_code = response.status_code
    body = None
    if call.needs_body and _small(response.headers):
        try:
            body = await response.aread()
        except Exception:
            body = None
    core.respond(call, response.status_code, body)


def _small(headers: Any) -> bool:
    length = headers.get("content-length")
    return length is None or (length.isdigit() and int(length) <= MAX_BODY_BYTES)


# -- inner point (httpcore) -------------------------------------------------


def _take_pending() -> RestCall | None:
    call = _PENDING.get()
    if call is None or call.begun:
        return None
    return call


def _pool_sync(wrapped, pool, args, kwargs):
    call = _take_pending()
    if call is None:
        return wrapped(*args, **kwargs)
    core: RestInstrumentation = _state["core"]
    core.begin(call)
    try:
        response = wrapped(*args, **kwargs)
    except BaseException as error:
        core.end(call, error)
        raise
    body = _buffer_sync(call, response)
    core.respond(call, response.status, body)
    core.end(call)
    return response


async def _pool_async(wrapped, pool, args, kwargs):
    call = _take_pending()
    if call is None:
        return await wrapped(*args, **kwargs)
    core: RestInstrumentation = _state["core"]
    core.begin(call)
    try:
        response = await wrapped(*args, **kwargs)
    except BaseException as error:
        core.end(call, error)
        raise
    body = await _buffer_async(call, response)
    core.respond(call, response.status, body)
    core.end(call)
    return response


def _needs_core_body(call: RestCall, response: Any) -> bool:
    call.status_code = response.status
    if not call.needs_body:
        return False
    for name, value in response.headers:
        if name.lower() == b"content-length":
            return value.isdigit() and int(value) <= MAX_BODY_BYTES
    return True


def _buffer_sync(call: RestCall, response: Any) -> bytes | None:
    if not _needs_core_body(call, response):
        return None
    chunks: list[bytes] = []
    size = 0
    source = iter(response.stream)
    complete = True
    for chunk in source:
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            complete = False
            break
    response.stream = _Replay(chunks, source, response.stream)
    return b"".join(chunks) if complete else None


async def _buffer_async(call: RestCall, response: Any) -> bytes | None:
    if not _needs_core_body(call, response):
        return None
    chunks: list[bytes] = []
    size = 0
    source = response.stream.__aiter__()
    complete = True
    async for chunk in source:
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            complete = False
            break
    response.stream = _AsyncReplay(chunks, source, response.stream)
    return b"".join(chunks) if complete else None


class _Replay:
    """Gives the caller the chunks read for telemetry, then the rest."""

    def __init__(self, chunks: list[bytes], rest: Iterator[bytes], original: Any):
        self._chunks = chunks
        self._rest = rest
        self._original = original

    def __iter__(self) -> Iterator[bytes]:
        yield from self._chunks
        yield from self._rest

    def close(self) -> None:
        close = getattr(self._original, "close", None)
        if close is not None:
            close()


class _AsyncReplay:
    """Async twin of :class:`_Replay`."""

    def __init__(self, chunks: list[bytes], rest: AsyncIterator[bytes], original):
        self._chunks = chunks
        self._rest = rest
        self._original = original

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk
        async for chunk in self._rest:
            yield chunk

    async def aclose(self) -> None:
        aclose = getattr(self._original, "aclose", None)
        if aclose is not None:
            await aclose()

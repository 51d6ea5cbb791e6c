"""requests adapter of the IG REST instrumentation (so trading-ig too).

ig-otel patches ``requests.adapters.HTTPAdapter.send``. The contrib
requests instrumentation patches ``Session.send``, which calls the adapter
from inside its span, so ig-otel is always the inner layer whichever loaded
first: it enriches the contrib span when there is one and makes its own
otherwise. The body is read early only when telemetry needs it (errors,
dealing, confirms, prices) and stays available to the caller from the
response's cache.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import propagate
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap
from wrapt import wrap_function_wrapper

from ig_otel._rest import MAX_BODY_BYTES, RestCall, RestInstrumentation

_log = logging.getLogger(__name__)

__all__ = ["instrument", "uninstrument"]

#: Set to True on a PreparedRequest that ig-otel's own adapter already guarded.
GUARDED_ATTRIBUTE = "_ig_otel_guarded"

_state: dict[str, Any] = {"core": None}


def instrument(core: RestInstrumentation) -> None:
    """Patch ``HTTPAdapter.send``; safe to call when requests is absent."""
    from requests.adapters import HTTPAdapter

    if _state["core"] is not None:
        _state["core"] = core
        return
    _state["core"] = core
    wrap_function_wrapper(HTTPAdapter, "send", _send)


def uninstrument() -> None:
    """Remove the patch."""
    from requests.adapters import HTTPAdapter

    if _state["core"] is None:
        return
    _state["core"] = None
    unwrap(HTTPAdapter, "send")


def _classify(request: Any) -> RestCall | None:
    core: RestInstrumentation | None = _state["core"]
    if core is None or not is_instrumentation_enabled():
        return None
    parts = urlsplit(request.url)
    return core.classify(
        request.method or "GET", request.url, parts.hostname or "", parts.port,
        parts.path, request.headers,
    )


def _send(wrapped, adapter, args, kwargs):
    request = args[0] if args else kwargs["request"]
    call = _classify(request)
    if call is None:
        return wrapped(*args, **kwargs)
    core: RestInstrumentation = _state["core"]

    call.request_body = lambda: _body_bytes(request.body)
    core.begin(call)
    if call.owns_span:
        _inject(request)
    try:
        core.admit(call, guarded=getattr(request, GUARDED_ATTRIBUTE, False))
        response = wrapped(*args, **kwargs)
    except BaseException as error:
        core.end(call, error)
        raise
    call.status_code = response.status_code
    core.respond(call, response.status_code, _answer_body(call, response))
    core.end(call)
    return response


def _inject(request: Any) -> None:
    try:
        propagate.inject(request.headers)
    except Exception:
        _log.debug("could not inject trace context", exc_info=True)


def _body_bytes(body: Any) -> bytes | None:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8", "replace")
    return None


def _answer_body(call: RestCall, response: Any) -> bytes | None:
    if not call.needs_body:
        return None
    length = response.headers.get("Content-Length")
    if length is not None and not (length.isdigit() and int(length) <= MAX_BODY_BYTES):
        return None
    try:
        # Response.content caches the body, so the caller still reads it all.
        return response.content
    except Exception:
        _log.debug("could not read an IG answer body", exc_info=True)
        return None

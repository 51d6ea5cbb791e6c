"""Instrumentation of ``lightstreamer-client-lib`` 1.0.x and 2.x.

Only the SDK's public listener API is used. ``LightstreamerClient.__init__``
and ``connect`` attach a :class:`ClientListener`-shaped watcher to each client
(clients built before instrumentation get it at ``connect``); ``subscribe``
attaches a subscription watcher; ``unsubscribe`` folds the subscription's
counts away. ``getListeners`` hides the watchers, so the application sees the
listeners it added and nothing else.

The class is patched in place when ``lightstreamer.client`` is already
imported, otherwise from a post-import hook, so import order does not matter
(nothing relies on the SDK's import-time aiohttp session).

Spans are short: one per session attempt (``connect()`` or a retry, to
``CONNECTED:*`` or failure) and one per subscription handshake
(``subscribe()`` to ``onSubscription``/``onSubscriptionError``). Item names,
the user (an account id) and the password (``CST-...|XST-...``) are never read
into telemetry. Watchers catch every exception, log it once, and carry on.

Limitation: the public API does not expose ``PROBE``s, so with the SDK the
silence gauge measures time since the last update or session event.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ig_otel import _telemetry as names
from ig_otel._config import Config
from ig_otel._patching import Patches
from ig_otel._stream import (
    StreamInstrumentation,
    StreamMonitor,
    SubscriptionView,
    coarse_status,
)
from ig_otel._telemetry import StreamStatus

__all__ = ["instrument", "uninstrument"]

_log = logging.getLogger(__name__)

_MODULE = "lightstreamer.client"
_CLIENT_METHODS = (
    "__init__", "connect", "disconnect", "subscribe", "unsubscribe", "getListeners"
)
_SUBSCRIPTION_METHODS = ("getListeners",)

_patches = Patches("Lightstreamer", _log)
_warn_once = _patches.warn_once
_active: StreamInstrumentation | None = None
_clients: weakref.WeakKeyDictionary[Any, _ClientWatch] = weakref.WeakKeyDictionary()


# -- entry points -------------------------------------------------------------


def instrument(
    config: Config | None = None,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> None:
    """Instrument the Lightstreamer SDK now or when it is imported; never raises."""
    global _active
    try:
        with _patches.lock:
            if _active is not None:
                return
            _active = StreamInstrumentation(config, tracer_provider, meter_provider)
            _patches.when_imported((_MODULE,), _patch)
    except Exception:
        _warn_once("instrumentation")


def uninstrument() -> None:
    """Remove the patches; watchers already attached go quiet. Never raises."""
    global _active
    try:
        with _patches.lock:
            if _active is not None:
                _active.enabled = False
            _active = None
            _patches.undo()
    except Exception:
        _warn_once("uninstrumentation")


def _patch(module: Any) -> None:
    if _active is None or _patches.covers(module.LightstreamerClient):
        return
    client_cls = module.LightstreamerClient
    subscription_cls = module.Subscription
    wrappers = {
        "__init__": _client_init,
        "connect": _client_connect,
        "disconnect": _client_disconnect,
        "subscribe": _client_subscribe,
        "unsubscribe": _client_unsubscribe,
        "getListeners": _hide_watchers,
    }
    for name in _CLIENT_METHODS:
        _patches.wrap(client_cls, name, wrappers[name])
    for name in _SUBSCRIPTION_METHODS:
        _patches.wrap(subscription_cls, name, _hide_watchers)


# -- wrappers -----------------------------------------------------------------


def _client_init(wrapped, instance, args, kwargs):
    result = wrapped(*args, **kwargs)
    _attach(instance)
    return result


def _attach(client: Any) -> _ClientWatch | None:
    state = _active
    if state is None:
        return None
    try:
        watch = _clients.get(client)
        if watch is None:
            watch = _ClientWatch(state, client)
            _clients[client] = watch
            client.addListener(watch)
        return watch
    except Exception:
        _warn_once("client listener")
        return None


def _client_connect(wrapped, instance, args, kwargs):
    watch = _attach(instance)
    if watch is not None:
        watch.connecting()
    return wrapped(*args, **kwargs)


def _client_disconnect(wrapped, instance, args, kwargs):
    watch = _clients.get(instance)
    if watch is not None:
        watch.disconnecting()
    return wrapped(*args, **kwargs)


def _client_subscribe(wrapped, instance, args, kwargs):
    watch = _attach(instance)
    if watch is not None and args:
        watch.subscribing(args[0])
    return wrapped(*args, **kwargs)


def _client_unsubscribe(wrapped, instance, args, kwargs):
    result = wrapped(*args, **kwargs)
    watch = _clients.get(instance)
    if watch is not None and args:
        watch.unsubscribed(args[0])
    return result


def _hide_watchers(wrapped, instance, args, kwargs):
    listeners = wrapped(*args, **kwargs)
    try:
        return [
            listener
            for listener in listeners
            if not isinstance(listener, _ClientWatch | _SubscriptionWatch)
        ]
    except Exception:
        return listeners


# -- watchers -----------------------------------------------------------------


def _server_attributes(client: Any) -> dict[str, Any]:
    try:
        address = client.connectionDetails.getServerAddress() or ""
    except Exception:
        return {}
    # Only scheme://host:port ever reaches here; keep host and port.
    host_port = address.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    if not host:
        return {names.SERVER_ADDRESS: host_port}
    attributes: dict[str, Any] = {names.SERVER_ADDRESS: host}
    if port.isdigit():
        attributes[names.SERVER_PORT] = int(port)
    return attributes


class _ClientWatch:
    """ClientListener attached to every client; feeds one StreamMonitor."""

    def __init__(self, state: StreamInstrumentation, client: Any) -> None:
        self._state = state
        self.monitor: StreamMonitor = state.new_monitor()
        self._client = weakref.ref(client)
        self._span: Span | None = None
        self._span_lock = threading.Lock()
        self._subscriptions: weakref.WeakKeyDictionary[Any, _SubscriptionWatch] = (
            weakref.WeakKeyDictionary()
        )

    # ---- called from the application's thread

    def connecting(self) -> None:
        self._start_span()

    def disconnecting(self) -> None:
        try:
            self.monitor.closed_by_application()
        except Exception:
            _warn_once("disconnect")

    def subscribing(self, subscription: Any) -> None:
        if not self._state.enabled:
            return
        try:
            watch = self._subscriptions.get(subscription)
            if watch is None:
                watch = _SubscriptionWatch(self._state, self.monitor, subscription)
                self._subscriptions[subscription] = watch
                subscription.addListener(watch)
            watch.start_span()
        except Exception:
            _warn_once("subscription listener")

    def unsubscribed(self, subscription: Any) -> None:
        try:
            watch = self._subscriptions.pop(subscription, None)
            if watch is not None:
                watch.forget()
        except Exception:
            _warn_once("unsubscription")

    def _start_span(self) -> None:
        if not self._state.enabled:
            return
        client = self._client()
        with self._span_lock:
            if self._span is not None or client is None:
                return
            self._span = self._state.tracer.start_span(
                names.SPAN_STREAM_SESSION,
                kind=SpanKind.CLIENT,
                attributes=_server_attributes(client),
            )

    def _end_span(self, status: StreamStatus, detail: str) -> None:
        with self._span_lock:
            span, self._span = self._span, None
        if span is None:
            return
        span.set_attribute(names.IG_STREAM_STATUS, status.value)
        span.set_attribute(names.IG_STREAM_STATUS_DETAIL, detail)
        if status is not StreamStatus.CONNECTED:
            span.set_status(Status(StatusCode.ERROR, detail))
        span.end()

    # ---- ClientListener (SDK event thread)

    def onStatusChange(self, status: str) -> None:
        if not self._state.enabled:
            return
        try:
            self.monitor.status(status)
            coarse = coarse_status(status)
            if status == "CONNECTING":
                self._start_span()
            elif coarse is StreamStatus.CONNECTED and status != (
                "CONNECTED:STREAM-SENSING"
            ) or coarse is StreamStatus.DISCONNECTED:
                self._end_span(coarse, status)
        except Exception:
            _warn_once("status listener")

    def onServerError(self, code: int, message: str) -> None:
        if not self._state.enabled:
            return
        try:
            self.monitor.error(code)
            with self._span_lock:
                span = self._span
            if span is not None:
                span.set_attribute(names.IG_STREAM_ERROR_CODE, str(code))
        except Exception:
            _warn_once("server error listener")

    def onPropertyChange(self, property: str) -> None:
        return None

    def onListenStart(self, *args: Any) -> None:
        return None

    def onListenEnd(self, *args: Any) -> None:
        return None


def _names(getter: Any) -> list[str] | None:
    try:
        values = getter()
    except Exception:
        return None
    return list(values) if values else None


class _SubscriptionWatch:
    """SubscriptionListener attached to every subscription."""

    def __init__(
        self, state: StreamInstrumentation, monitor: StreamMonitor, subscription: Any
    ) -> None:
        self._state = state
        self._monitor = monitor
        items = _names(subscription.getItems) or []
        fields = _names(subscription.getFields) or []
        self._view: SubscriptionView = monitor.subscription(
            items, fields, subscription.getMode()
        )
        self._confirms = "CONFIRMS" in fields and self._view.kind == "TRADE"
        self._span: Span | None = None
        self._span_lock = threading.Lock()

    def start_span(self) -> None:
        view = self._view
        attributes: dict[str, Any] = {
            names.IG_STREAM_ITEM_KIND: view.kind,
            names.IG_STREAM_MODE: view.mode,
        }
        with self._span_lock:
            if self._span is None:
                self._span = self._state.tracer.start_span(
                    names.SPAN_STREAM_SUBSCRIBE,
                    kind=SpanKind.CLIENT,
                    attributes=attributes,
                )

    def _end_span(self, code: int | None = None, message: str = "") -> None:
        with self._span_lock:
            span, self._span = self._span, None
        if span is None:
            return
        if code is not None:
            span.set_attribute(names.IG_STREAM_ERROR_CODE, str(code))
            span.set_status(Status(StatusCode.ERROR, str(message)[:200]))
        span.end()

    def forget(self) -> None:
        self._monitor.forget(self._view)
        self._end_span()

    # ---- SubscriptionListener (SDK event thread)

    def onItemUpdate(self, update: Any) -> None:
        if not self._state.enabled:
            return
        try:
            monitor = self._monitor
            monitor.touch()
            slot = self._view.slot(update.getItemPos())
            if slot is None:
                return
            if slot.hit():
                monitor.lag(slot, update.getValue(slot.time_field))
            if self._confirms and update.isValueChanged("CONFIRMS"):
                monitor.trade_fields(update.getValue("CONFIRMS"))
        except Exception:
            _warn_once("update listener")

    def onSubscription(self) -> None:
        if not self._state.enabled:
            return
        try:
            self._monitor.subscribed(self._view)
            self._end_span()
        except Exception:
            _warn_once("subscription listener")

    def onSubscriptionError(self, code: int, message: str) -> None:
        if not self._state.enabled:
            return
        try:
            self._monitor.error(code)
            self._end_span(code, message)
        except Exception:
            _warn_once("subscription error listener")

    def onUnsubscription(self) -> None:
        if not self._state.enabled:
            return
        try:
            self._monitor.unsubscribed(self._view)
        except Exception:
            _warn_once("unsubscription listener")

    def onItemLostUpdates(self, item_name: Any, item_pos: int, lost: int) -> None:
        if not self._state.enabled:
            return
        try:
            slot = self._view.slot(item_pos)
            self._monitor.lost_updates(slot.kind if slot else self._view.kind, lost)
        except Exception:
            _warn_once("lost updates listener")

    def onEndOfSnapshot(self, item_name: Any, item_pos: int) -> None:
        return None

    def onClearSnapshot(self, item_name: Any, item_pos: int) -> None:
        return None

    def onRealMaxFrequency(self, frequency: Any) -> None:
        return None

    def onCommandSecondLevelSubscriptionError(self, *args: Any) -> None:
        return None

    def onCommandSecondLevelItemLostUpdates(self, *args: Any) -> None:
        return None

    def onListenStart(self, *args: Any) -> None:
        return None

    def onListenEnd(self, *args: Any) -> None:
        return None

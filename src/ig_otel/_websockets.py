"""Instrumentation of raw TLCP clients built on ``websockets``.

Hook points, by client implementation:

* ``websockets.asyncio.client.ClientConnection``: each connection's sans-I/O
  protocol hands the frames of every network read to the connection through
  ``events_received()``; a per-connection wrapper of that call sees the frames
  synchronously, before the application does, with no extra coroutine per
  message. The frames of one read are joined and handled as one batch: update
  lines are counted per subscription item with C-level byte searches, and only
  the updates picked for lag sampling are split into fields. Under load a read
  carries hundreds of frames, so the per-update cost is a small share of a
  byte scan; at low rates every read is handled as it arrives, so status,
  silence and counts are always current, with nothing held back between
  reads except the start of a line split across fragments. ``connection_lost``
  tells a connection closed under the application.
* The legacy ``WebSocketClientProtocol``: ``recv`` (every way of reading a
  message goes through it).

On both, ``send`` sees what the application writes and ``close`` tells a close
on purpose. Server connections are not affected.

Only connections whose negotiated subprotocol is a TLCP one, or whose request
path ends in ``/lightstreamer``, are observed; the others are unhooked once
their first frames arrive. Observed messages go through the shared codec into
the same :class:`~ig_otel._stream.StreamMonitor` core as the SDK adapter:

* sent ``create_session``/``bind_session`` start a session span and select the
  monitor (a bind or a re-create with ``LS_old_session`` continues the
  monitor of the earlier session, so reconnects are counted across
  WebSocket connections); sent ``control`` ``add`` requests tell item kinds,
  mode and field names of each subscription id;
* received ``CONOK``/``CONERR``/``LOOP``/``END`` and a closed connection drive
  the status; ``SUBOK``/``REQERR``/``UNSUB`` the subscriptions; ``U`` the
  update counts and lag (lag is sampled only from updates that carry the time
  field literally; unchanged tokens are skipped); ``OV`` lost updates;
  ``REQERR``/``ERROR``/``CONERR`` errors; every message resets the silence.

The ``LS_password`` parameter (``CST-...|XST-...``), ``LS_user`` and item
names are never copied into telemetry.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections import Counter, OrderedDict
from collections.abc import Iterator
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from ig_otel import _telemetry as names
from ig_otel import _tlcp as tlcp
from ig_otel._config import Config
from ig_otel._patching import Patches
from ig_otel._stream import (
    ItemSlot,
    StreamInstrumentation,
    StreamMonitor,
    SubscriptionView,
)

__all__ = ["instrument", "uninstrument"]

_log = logging.getLogger(__name__)

_ASYNCIO = "websockets.asyncio.client"
_LEGACY = "websockets.legacy.client"
_SESSION_MEMORY = 64
#: Up to this many subscription items, a batch is counted with one byte scan
#: per item; beyond, with one regular-expression pass.
_SCAN_KEYS = 8
#: Reads of at most this many lines are handled line by line.
_FEW_LINES = 4
#: The longest unfinished line carried from one read to the next.
_TAIL_LIMIT = 1 << 20
#: A notification line that is not an update (group 1: the line).
_OTHER_LINE = re.compile(rb"\n(?!U,)([^\r\n]*)\r\n")
_UPDATE_KEY = re.compile(rb"\nU,[^,\r\n]*,[^,\r\n]*,")

_patches = Patches("websockets", _log)
_warn_once = _patches.warn_once
_lock = _patches.lock
_active: StreamInstrumentation | None = None
_watches: weakref.WeakKeyDictionary[Any, _Watch | None] = weakref.WeakKeyDictionary()
_tapped: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_sessions: OrderedDict[str, _Session] = OrderedDict()

# websockets' frame type and text opcodes, loaded with its asyncio client.
_FRAME: Any = None
_TEXT: Any = None
_CONT: Any = None


# -- entry points -------------------------------------------------------------


def instrument(
    config: Config | None = None,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> None:
    """Observe TLCP over ``websockets`` client connections; never raises."""
    global _active
    try:
        with _lock:
            if _active is not None:
                return
            _active = StreamInstrumentation(config, tracer_provider, meter_provider)
            _patches.when_imported((_ASYNCIO, _LEGACY), _patch)
    except Exception:
        _warn_once("instrumentation")


def uninstrument() -> None:
    """Restore the patched methods and frame hooks; never raises."""
    global _active
    try:
        with _lock:
            if _active is not None:
                _active.enabled = False
            _active = None
            _patches.undo()
            for connection in list(_tapped):
                _untap(connection)
            _watches.clear()
            _sessions.clear()
    except Exception:
        _warn_once("uninstrumentation")


def _patch(module: Any) -> None:
    if _active is None:
        return
    cls = getattr(module, "ClientConnection", None)
    if cls is not None:
        _load_frames()
        _patch_class(cls, _frame_hooks(cls))
        return
    cls = getattr(module, "WebSocketClientProtocol", None)
    if cls is not None:
        _patch_class(cls, _legacy_hooks(cls))


def _patch_class(cls: type, hooks: dict[str, Any]) -> None:
    if _patches.covers(cls):
        return
    for name, replacement in hooks.items():
        _patches.replace(cls, name, replacement)


def _common_hooks(cls: type) -> dict[str, Any]:
    send = cls.send  # type: ignore[attr-defined]
    close = cls.close  # type: ignore[attr-defined]

    async def observed_send(self, message: Any, *args: Any, **kwargs: Any) -> Any:
        watch = getattr(self, _ATTRIBUTE, _UNKNOWN)
        if watch is _UNKNOWN:
            watch = _watch_for(self)
        if watch is not None:
            watch.sent(message)
        return await send(self, message, *args, **kwargs)

    async def observed_close(self, *args: Any, **kwargs: Any) -> Any:
        _closed(self, "DISCONNECTED", on_purpose=True)
        return await close(self, *args, **kwargs)

    observed_send.__wrapped__ = send  # type: ignore[attr-defined]
    observed_close.__wrapped__ = close  # type: ignore[attr-defined]
    return {"send": observed_send, "close": observed_close}


def _frame_hooks(cls: type) -> dict[str, Any]:
    connection_made = cls.connection_made  # type: ignore[attr-defined]
    connection_lost = cls.connection_lost  # type: ignore[attr-defined]

    def observed_connection_made(self, transport: Any) -> None:
        connection_made(self, transport)
        _tap(self)

    def observed_connection_lost(self, exc: Exception | None) -> None:
        try:
            connection_lost(self, exc)
        finally:
            _closed(self)

    observed_connection_made.__wrapped__ = connection_made  # type: ignore
    observed_connection_lost.__wrapped__ = connection_lost  # type: ignore
    return {
        **_common_hooks(cls),
        "connection_made": observed_connection_made,
        "connection_lost": observed_connection_lost,
    }


def _legacy_hooks(cls: type) -> dict[str, Any]:
    recv = cls.recv  # type: ignore[attr-defined]

    async def observed_recv(self, *args: Any, **kwargs: Any) -> Any:
        try:
            message = await recv(self, *args, **kwargs)
        except asyncio.CancelledError:
            # A timeout around recv() cancels it; the connection lives on.
            raise
        except BaseException:
            _closed(self)
            raise
        watch = getattr(self, _ATTRIBUTE, _UNKNOWN)
        if watch is _UNKNOWN:
            watch = _watch_for(self)
        if watch is not None:
            watch.received(message)
        return message

    observed_recv.__wrapped__ = recv  # type: ignore[attr-defined]
    return {**_common_hooks(cls), "recv": observed_recv}


def _load_frames() -> None:
    global _FRAME, _TEXT, _CONT
    from websockets.frames import Frame, Opcode

    _FRAME, _TEXT, _CONT = Frame, Opcode.TEXT, Opcode.CONT


def _tap(connection: Any) -> None:
    """Wrap the connection's ``protocol.events_received`` (once per network read).

    The wrapper lives on the protocol instance, so connections made before
    instrumentation and server connections keep the class method untouched.
    """
    try:
        protocol = getattr(connection, "protocol", None)
        if protocol is None or "events_received" in vars(protocol):
            return
        original = protocol.events_received
        # A weak reference: the protocol must not keep its connection alive.
        owner = weakref.ref(connection)

        def events_received() -> list[Any]:
            events = original()
            if events:
                _read(owner, events)
            return events

        protocol.events_received = events_received
        _tapped[connection] = protocol
    except Exception:
        _warn_once("frame hook")


def _untap(connection: Any) -> None:
    protocol = _tapped.pop(connection, None)
    if protocol is not None:
        vars(protocol).pop("events_received", None)
    vars(connection).pop("recv", None)


def _read(owner: weakref.ref[Any], events: list[Any]) -> None:
    connection = owner()
    if connection is None:
        return
    try:
        watch = getattr(connection, _ATTRIBUTE, _UNKNOWN)
        if watch is _UNKNOWN:
            if not any(type(event) is _FRAME for event in events):
                # Only the handshake response: TLCP or not is not known yet.
                return
            watch = _watch_for(connection)
        if watch is None:
            _untap(connection)
        else:
            watch.frames(events)
    except Exception:
        _warn_once("frame handling")


_UNKNOWN: Any = object()
# The watch is cached on the connection itself: one dict lookup per message.
_ATTRIBUTE = "_ig_otel_tlcp_watch"


def _watch_for(connection: Any) -> _Watch | None:
    state = _active
    watch = None
    try:
        if state is not None and state.enabled and _is_tlcp(connection):
            watch = _Watch(state)
        _watches[connection] = watch
        setattr(connection, _ATTRIBUTE, watch)
    except Exception:
        _warn_once("connection check")
    return watch


def _is_tlcp(connection: Any) -> bool:
    subprotocol = getattr(connection, "subprotocol", None)
    if subprotocol and str(subprotocol).startswith("TLCP-"):
        return True
    request = getattr(connection, "request", None)
    path = getattr(request, "path", None) or getattr(connection, "path", None) or ""
    return str(path).split("?", 1)[0].rstrip("/").endswith("/lightstreamer")


def _closed(
    connection: Any,
    raw_status: str = "DISCONNECTED:WILL-RETRY",
    on_purpose: bool = False,
) -> None:
    try:
        watch = _watches.get(connection)
        if watch is not None:
            watch.closed(raw_status, on_purpose)
    except Exception:
        _warn_once("close handling")


# -- per connection -----------------------------------------------------------


class _Subscription:
    __slots__ = ("view", "slots", "time_index", "decoder", "confirms_index")

    def __init__(self, view: SubscriptionView, fields: list[str]) -> None:
        self.view = view
        # Keyed by the raw item index text, so U lines need no int().
        self.slots = {str(i + 1): slot for i, slot in enumerate(view.slots)}
        first = view.slots[0] if view.slots else None
        self.time_index = first.time_index if first else -1
        self.confirms_index = (
            fields.index("CONFIRMS")
            if view.kind == "TRADE" and "CONFIRMS" in fields
            else -1
        )
        self.decoder = (
            tlcp.UpdateDecoder(len(fields)) if self.confirms_index >= 0 else None
        )


class _Session:
    """What outlives one WebSocket: the monitor and the subscriptions."""

    __slots__ = ("monitor", "subscriptions", "pending", "keys")

    def __init__(self, monitor: StreamMonitor) -> None:
        self.monitor = monitor
        self.subscriptions: dict[str, _Subscription] = {}
        self.pending: dict[str, tuple[str, Span]] = {}
        #: ``\nU,<subId>,<item>,`` of every item, as bytes, to its subscription
        #: and slot; None for items whose updates must be decoded one by one.
        self.keys: dict[bytes, tuple[_Subscription, ItemSlot] | None] = {}

    def reindex(self) -> None:
        """Rebuild :attr:`keys` after the subscriptions changed."""
        keys: dict[bytes, tuple[_Subscription, ItemSlot] | None] = {}
        for sub_id, subscription in self.subscriptions.items():
            for item, slot in subscription.slots.items():
                key = f"\nU,{sub_id},{item},".encode()
                keys[key] = None if subscription.decoder else (subscription, slot)
        self.keys = keys


def _remember(session_id: str, session: _Session) -> None:
    with _lock:
        _sessions[session_id] = session
        _sessions.move_to_end(session_id)
        while len(_sessions) > _SESSION_MEMORY:
            _sessions.popitem(last=False)


def _known(session_id: str | None) -> _Session | None:
    if not session_id:
        return None
    with _lock:
        return _sessions.get(session_id)


class _Watch:
    """Observes one TLCP WebSocket connection."""

    def __init__(self, state: StreamInstrumentation) -> None:
        self._state = state
        self.session: _Session | None = None
        self.session_id: str | None = None
        self._span: Span | None = None
        self._ended = False
        # The unfinished end of the last read, after a newline: every batch
        # starts with b"\n", so each update line starts with b"\nU,".
        self._tail = b"\n"

    # ---- client -> server

    def sent(self, message: Any) -> None:
        if not isinstance(message, str) or not self._state.enabled:
            return
        try:
            for request in tlcp.parse_requests(message):
                if isinstance(request, tlcp.Request):
                    self._request(request)
        except Exception:
            _warn_once("request parsing")

    def _request(self, request: tlcp.Request) -> None:
        name, params = request.name, request.params
        if name == "create_session":
            self._open(_known(params.get("LS_old_session")))
        elif name == "bind_session":
            self._open(_known(params.get("LS_session")) or self.session)
        elif name == "control" and self.session is not None:
            self._control(params)

    def _open(self, session: _Session | None) -> None:
        if session is None:
            session = _Session(self._state.new_monitor("tlcp"))
        self.session = session
        session.monitor.status("CONNECTING")
        if self._span is None:
            self._span = self._state.tracer.start_span(
                names.SPAN_STREAM_SESSION, kind=SpanKind.CLIENT
            )

    def _control(self, params: dict[str, str]) -> None:
        session = self.session
        assert session is not None
        operation = params.get("LS_op")
        sub_id = params.get("LS_subId", "")
        if operation == "destroy":
            # The application ends the session; the socket closing next is
            # not a loss.
            session.monitor.closed_by_application()
            self._finish("DISCONNECTED", None)
        elif operation == "add" and sub_id:
            fields = params.get("LS_schema", "").split(" ")
            items = params.get("LS_group", "").split(" ")
            monitor = session.monitor
            view = monitor.subscription(items, fields, params.get("LS_mode"))
            old = session.subscriptions.get(sub_id)
            if old is not None and old.view is not view:
                monitor.forget(old.view)
            session.subscriptions[sub_id] = _Subscription(view, fields)
            session.reindex()
            span = self._state.tracer.start_span(
                names.SPAN_STREAM_SUBSCRIBE,
                kind=SpanKind.CLIENT,
                attributes={
                    names.IG_STREAM_ITEM_KIND: view.kind,
                    names.IG_STREAM_MODE: view.mode,
                },
            )
            session.pending[params.get("LS_reqId", "")] = (sub_id, span)

    # ---- server -> client (hot path)

    def frames(self, events: list[Any]) -> None:
        """The frames of one network read (asyncio client)."""
        session = self.session
        if session is None:
            return
        if type(events[0]) is not _FRAME:
            events = [event for event in events if type(event) is _FRAME]
        # Text frames and their continuations; TLCP sends no binary message.
        payloads = [
            event.data for event in events
            if event.opcode is _TEXT or event.opcode is _CONT
        ]
        if not payloads:
            return
        monitor = session.monitor
        monitor.last_message = monitor.clock()
        payloads.insert(0, self._tail)
        batch = b"".join(payloads)
        end = batch.rfind(b"\r\n") + 2
        self._tail = batch[end - 1:] if len(batch) - end < _TAIL_LIMIT else b"\n"
        try:
            self._batch(session, batch, end)
        except Exception:
            _warn_once("message handling")

    def _batch(self, session: _Session, batch: bytes, end: int) -> None:
        # A read of a few lines (a quiet stream, one frame at a time) is
        # cheapest line by line; bulk counting pays off on long reads.
        if batch.count(b"\r\n", 0, end) <= _FEW_LINES:
            self._lines(batch[1:end].decode("utf-8", "replace"))
            return
        # Runs of updates are counted in bulk; the other notifications are
        # handled one by one between them, in their order.
        start = 0
        for other in _OTHER_LINE.finditer(batch, 0, end):
            self._run(session, batch, start, other.start() + 1)
            self._lines(other.group(1).decode("utf-8", "replace"))
            start = other.end() - 1
        self._run(session, batch, start, end)

    def _run(self, session: _Session, batch: bytes, start: int, end: int) -> None:
        lines = batch.count(b"\r\n", start, end)
        if lines and not self._count(session, batch, start, end, lines):
            self._lines(batch[start + 1:end].decode("utf-8", "replace"))

    def received(self, message: Any) -> None:
        """One whole message (legacy client)."""
        session = self.session
        if session is None or type(message) is not str:
            return
        monitor = session.monitor
        monitor.last_message = monitor.clock()
        try:
            self._lines(message)
        except Exception:
            _warn_once("message handling")

    def _count(
        self, session: _Session, batch: bytes, start: int, end: int, lines: int
    ) -> bool:
        """Count a batch made of updates only; False to take it line by line."""
        keys = session.keys
        if len(keys) <= _SCAN_KEYS:
            counts = [
                (key, entry, batch.count(key, start, end))
                for key, entry in keys.items()
            ]
        else:
            found = Counter(_UPDATE_KEY.findall(batch, start, end))
            counts = [(key, keys.get(key), count) for key, count in found.items()]
        if sum(count for _, _, count in counts) != lines:
            # Updates of unknown items: take them line by line.
            return False
        if any(entry is None and count for _, entry, count in counts):
            return False
        monitor = session.monitor
        for key, entry, count in counts:
            if count and entry is not None:
                _counted(monitor, entry, count, (batch, start, end, key))
        return True

    def _lines(self, text: str) -> None:
        session = self.session
        assert session is not None
        monitor = session.monitor
        for line in text.split("\r\n"):
            if line[:2] == "U,":
                parts = line.split(",", 3)
                if len(parts) == 4:
                    self._update(monitor, session.subscriptions, parts)
            elif line:
                self._notification(tlcp.parse_notification(line))

    def _update(
        self,
        monitor: StreamMonitor,
        subscriptions: dict[str, _Subscription],
        parts: list[str],
    ) -> None:
        subscription = subscriptions.get(parts[1])
        if subscription is None:
            return
        slot = subscription.slots.get(parts[2])
        if slot is not None:
            slot.count += 1
            buffer = slot.lag_buffer
            if buffer is not None and slot.count % buffer.stride == 0:
                _sample_lag(monitor, subscription.time_index, slot, parts[3])
        if subscription.decoder is not None:
            self._trade(monitor, subscription, parts[2], parts[3])

    def _trade(
        self, monitor: StreamMonitor, subscription: _Subscription, item: str, raw: str
    ) -> None:
        decoder = subscription.decoder
        assert decoder is not None
        decoded = decoder.decode(int(item), raw)
        if isinstance(decoded, tlcp.DecodedUpdate):
            index = subscription.confirms_index
            if index in decoded.changed:
                monitor.trade_fields(decoded.values[index])

    def _notification(self, event: tlcp.Event) -> None:
        if not isinstance(event, tlcp.Notification):
            return
        session = self.session
        assert session is not None
        monitor = session.monitor
        tag = event.tag
        if tag == "CONOK":
            self.session_id = event.args[0]
            _remember(self.session_id, session)
            monitor.status("CONNECTED:WS-STREAMING")
            self._end_span(None)
        elif tag == "CONERR":
            monitor.error(event.int_arg(0))
            self._finish("DISCONNECTED", event.int_arg(0))
        elif tag == "END":
            code = event.int_arg(0)
            monitor.error(code)
            retry = code in (41, 48)
            self._finish("DISCONNECTED:WILL-RETRY" if retry else "DISCONNECTED", code)
        elif tag == "LOOP":
            # A routine rebind: the client opens a new WebSocket for the same
            # session; not a loss.
            monitor.status("CONNECTING")
            self._ended = True
        elif tag == "ERROR":
            monitor.error(event.int_arg(0))
            self._finish("DISCONNECTED", event.int_arg(0))
        else:
            self._subscription_event(session, event)

    def _subscription_event(self, session: _Session, event: tlcp.Notification) -> None:
        tag = event.tag
        monitor = session.monitor
        if tag == "SUBOK" or tag == "SUBCMD":
            subscription = session.subscriptions.get(event.args[0])
            if subscription is not None:
                monitor.subscribed(subscription.view)
                self._end_subscribe_span(session, event.args[0], None)
        elif tag == "UNSUB":
            subscription = session.subscriptions.pop(event.args[0], None)
            if subscription is not None:
                monitor.forget(subscription.view)
                session.reindex()
        elif tag == "REQERR":
            code = event.int_arg(1)
            monitor.error(code)
            pending = session.pending.pop(event.args[0], None)
            if pending is not None:
                sub_id, span = pending
                _end(span, code)
                subscription = session.subscriptions.pop(sub_id, None)
                if subscription is not None:
                    monitor.forget(subscription.view)
                    session.reindex()
        elif tag == "OV":
            subscription = session.subscriptions.get(event.args[0])
            if subscription is not None:
                slot = subscription.slots.get(event.args[1])
                kind = slot.kind if slot else subscription.view.kind
                monitor.lost_updates(kind, event.int_arg(2))

    def _end_subscribe_span(
        self, session: _Session, sub_id: str, code: int | None
    ) -> None:
        for request_id, (pending_sub, span) in list(session.pending.items()):
            if pending_sub == sub_id:
                del session.pending[request_id]
                _end(span, code)

    def _finish(self, raw_status: str, code: int | None) -> None:
        session = self.session
        assert session is not None
        session.monitor.status(raw_status)
        self._end_span(code, raw_status)
        self._ended = True
        if raw_status == "DISCONNECTED" and self.session_id:
            with _lock:
                _sessions.pop(self.session_id, None)

    def _end_span(self, code: int | None, detail: str = "") -> None:
        span, self._span = self._span, None
        if span is not None:
            if code is not None:
                span.set_attribute(names.IG_STREAM_STATUS_DETAIL, detail)
            _end(span, code)

    def closed(self, raw_status: str, on_purpose: bool = False) -> None:
        """The WebSocket closed: by the application, or under it."""
        session = self.session
        if session is None or self._ended:
            # Already ended by the server (END, ERROR, LOOP...): closing the
            # socket now is cleanup, not the application giving up.
            return
        self._ended = True
        if on_purpose:
            session.monitor.closed_by_application()
        session.monitor.status(raw_status)
        self._end_span(-1, raw_status)


def _end(span: Span, code: int | None) -> None:
    if code is not None:
        if code >= 0:
            span.set_attribute(names.IG_STREAM_ERROR_CODE, str(code))
        span.set_status(Status(StatusCode.ERROR))
    span.end()


def _sample_lag(
    monitor: StreamMonitor, index: int, slot: Any, raw: str | bytes
) -> None:
    if index < 0:
        return
    if type(raw) is bytes:
        raw = raw.decode("utf-8", "replace")
    tokens = raw.split("|", index + 1)
    if len(tokens) <= index or "^" in raw:
        # A ^n run shifts positions; such updates are not sampled.
        return
    token = tokens[index]
    if token and token[0] not in "#$":
        monitor.lag(slot, token)


def _counted(
    monitor: StreamMonitor,
    entry: tuple[_Subscription, ItemSlot],
    count: int,
    where: tuple[bytes, int, int, bytes],
) -> None:
    """Add ``count`` updates of one item; sample the lag of the stride's share."""
    subscription, slot = entry
    before = slot.count
    slot.count = before + count
    buffer = slot.lag_buffer
    if buffer is None or subscription.time_index < 0:
        return
    stride = buffer.stride
    samples = (before + count) // stride - before // stride
    if samples:
        batch, start, end, key = where
        for values in _sampled(batch, start, end, key, samples, count):
            _sample_lag(monitor, subscription.time_index, slot, values)


def _sampled(
    batch: bytes, start: int, end: int, key: bytes, samples: int, count: int
) -> Iterator[bytes]:
    """Field values of ``samples`` of the ``count`` updates of one item.

    All of them when every update is sampled; otherwise the first update of
    the item from each of ``samples`` evenly spaced offsets of the batch, so
    the samples spread over the batch as the stride spreads them over time.
    """
    every = samples >= count
    position = start
    span = end - start
    for number in range(min(samples, count)):
        if not every:
            position = max(position, start + number * span // samples)
        found = batch.find(key, position, end)
        if found < 0:
            return
        first = found + len(key)
        position = batch.find(b"\r\n", first, end)
        yield batch[first:position]

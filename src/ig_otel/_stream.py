"""Pure core of the stream instrumentation: aggregate per update, export later.

One :class:`StreamMonitor` per Lightstreamer client (SDK adapter) or per TLCP
session (``websockets`` adapter). Adapters call it from their listeners; it
only touches plain Python objects, so the cost per update is an attribute
increment, a clock read and, for sampled updates, one lag computation. No
OpenTelemetry call happens per update.

Export: :class:`StreamExporter` registers the contract's OBSERVABLE
instruments once per ``MeterProvider``; their callbacks read the aggregates of
every live monitor (held through weak references, so a client that is garbage
collected disappears; the counts it had are folded into retired totals so
cumulative counters never go down).

Status: the SDK's raw status string is kept as detail and mapped to
``connecting`` / ``connected`` / ``stalled`` / ``disconnected``. A
``connected`` stream silent (no data, no PROBE) for longer than the stall
threshold reports ``stalled``; this is evaluated when the instruments are
collected (and on every status change), and each coarse change emits an
``ig.stream.status_change`` event (INFO for connecting/connected, WARN for
stalled/disconnected) and is reported to the health registry (``/readyz``)
under the monitor's name. A session the application closes on purpose is
withdrawn from the registry until it connects again. Adapters run a
:class:`StallWatchdog` so a stall is noticed within a second or so even when
no metric reader collects.

Lag: server timestamp to arrival, on the wall clock:

* ``CHART``/``CHART_TICK`` items: ``UTM``, epoch milliseconds.
* ``PRICE`` items: ``TIMESTAMP``, epoch milliseconds.
* ``MARKET`` items: ``UPDATE_TIME``, ``HH:MM:SS`` in UK local time (GMT or
  BST) with no date. The time is placed on the London calendar day before,
  of, or after the current London date, whichever gives the smallest absolute
  lag (so 23:59:59 read at 00:00:01 is 2 s, not -86398 s), and converted with
  ``zoneinfo`` ``Europe/London``; in the repeated hour of October the first
  occurrence is taken. Resolution is one second.

A negative lag (server clock ahead of ours) is recorded as 0 and counted in
:attr:`StreamMonitor.lag_clamped`. Unparseable timestamps are skipped.

Lag sampling: the histogram is fed in batches, never per update. Each monitor
keeps, per item kind, a buffer of at most :data:`LAG_BUFFER` samples and a
stride (initially 1): the lag of every stride-th update of each
subscription item is computed and buffered. When a buffer fills, every other
sample is dropped and the stride doubles, so the buffer stays an even sample
of the whole interval. At each collection the exporter drains the buffers
into the histogram (records made inside the collection are included in it)
and strides halve, so the next interval starts near the rate just seen.
So the histogram's count is the number of lag *samples*;
``ig.stream.updates`` is the exact update count. A process with many
streams records at most :data:`LAG_RECORDS_PER_COLLECTION` samples per
kind per collection, taken evenly from all of them: each recorded point
costs the SDK over 10 us, and a few hundred per interval already give
stable percentiles.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.trace import TracerProvider

from ig_otel import _telemetry as names
from ig_otel._config import Config
from ig_otel._deals import DealMetrics, confirmation_from, load_json_object
from ig_otel._events import SeverityNumber, emit_event
from ig_otel._items import OTHER, EpicPolicy, classify
from ig_otel._telemetry import ConfirmationSource, StreamStatus
from ig_otel._version import __version__

__all__ = [
    "LAG_BUFFER",
    "HealthSink",
    "StallWatchdog",
    "StreamExporter",
    "StreamInstrumentation",
    "StreamMonitor",
    "SubscriptionView",
    "coarse_status",
    "exporter_for",
    "lag_from_epoch_ms",
    "lag_from_uk_time",
]

_log = logging.getLogger(__name__)

#: Most lag samples buffered per item kind between two collections.
LAG_BUFFER = 64
#: Most lag points recorded per item kind per collection, over all streams.
LAG_RECORDS_PER_COLLECTION = 256

_LONDON = ZoneInfo("Europe/London")
_MODES = frozenset(("MERGE", "DISTINCT", "RAW", "COMMAND"))

#: Field that carries the server timestamp of each item kind.
TIME_FIELDS = {
    "CHART": "UTM",
    "CHART_TICK": "UTM",
    "PRICE": "TIMESTAMP",
    "MARKET": "UPDATE_TIME",
}

_STATUSES = tuple(StreamStatus)


class HealthSink(Protocol):
    """Where status changes go for ``/readyz`` (a ``HealthRegistry``)."""

    def set_stream_status(self, name: str, status: StreamStatus) -> None: ...

    def forget_stream(self, name: str) -> None: ...


def coarse_status(raw: str) -> StreamStatus:
    """Map a Lightstreamer client status string to the contract's status."""
    if raw.startswith("CONNECTED:"):
        if raw == "CONNECTED:STREAM-SENSING":
            return StreamStatus.CONNECTING
        return StreamStatus.CONNECTED
    if raw == "STALLED":
        return StreamStatus.STALLED
    if raw.startswith("DISCONNECTED"):
        return StreamStatus.DISCONNECTED
    return StreamStatus.CONNECTING


# -- lag ---------------------------------------------------------------------


def lag_from_epoch_ms(value: object, now: float) -> float | None:
    """Seconds from an epoch-milliseconds timestamp to ``now`` (may be < 0)."""
    try:
        millis = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return now - millis / 1000.0


def lag_from_uk_time(value: object, now: float) -> float | None:
    """Seconds from a UK-local ``HH:MM:SS`` to ``now``, nearest calendar day."""
    if not isinstance(value, str) or len(value) != 8 or value[2::3] != "::":
        return None
    try:
        hour, minute, second = int(value[:2]), int(value[3:5]), int(value[6:])
        today = datetime.fromtimestamp(now, _LONDON).date()
        best: float | None = None
        for days in (-1, 0, 1):
            day = today + timedelta(days=days)
            stamp = datetime(
                day.year, day.month, day.day, hour, minute, second, tzinfo=_LONDON
            ).timestamp()
            lag = now - stamp
            if best is None or abs(lag) < abs(best):
                best = lag
        return best
    except ValueError:
        return None


_LAG_PARSERS: dict[str, Callable[[object, float], float | None]] = {
    "UTM": lag_from_epoch_ms,
    "TIMESTAMP": lag_from_epoch_ms,
    "UPDATE_TIME": lag_from_uk_time,
}


class _LagBuffer:
    """Decimating buffer of lag samples of one item kind."""

    __slots__ = ("samples", "stride")

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.stride = 1

    def add(self, lag: float) -> None:
        samples = self.samples
        samples.append(lag)
        if len(samples) >= LAG_BUFFER:
            # Keep an even spread over the interval instead of its start.
            del samples[::2]
            self.stride *= 2

    def drain(self) -> list[float]:
        samples, self.samples = self.samples, []
        # Start the next interval near this one's rate: halving (not resetting)
        # the stride keeps a busy stream from sampling every update again.
        self.stride = max(1, self.stride // 2)
        return samples


# -- subscriptions -------------------------------------------------------------


class ItemSlot:
    """Counters of one item of one subscription; the per-update hot path."""

    __slots__ = (
        "kind", "key", "count", "time_field", "time_index", "lag_buffer", "parse"
    )

    def __init__(
        self,
        kind: str,
        key: tuple[str, str, str | None],
        fields: Sequence[str],
        lag: _LagBuffer | None,
    ) -> None:
        self.kind = kind
        self.key = key
        self.count = 0
        field = TIME_FIELDS.get(kind)
        self.time_field = field if field in fields else None
        self.time_index = list(fields).index(field) if self.time_field else -1
        #: Where sampled lags go; None when the item carries no timestamp.
        self.lag_buffer = lag if self.time_field else None
        self.parse = _LAG_PARSERS.get(field or "")

    def hit(self) -> bool:
        """Count one update; True when its lag should be sampled."""
        self.count += 1
        lag = self.lag_buffer
        return lag is not None and self.count % lag.stride == 0


class SubscriptionView:
    """What the monitor knows of one subscription: kind, mode, item slots."""

    __slots__ = ("kind", "mode", "slots", "active", "__weakref__")

    def __init__(self, kind: str, mode: str, slots: list[ItemSlot]) -> None:
        self.kind = kind
        self.mode = mode
        self.slots = slots
        self.active = False

    def slot(self, position: int) -> ItemSlot | None:
        """Slot of a 1-based item position, or None when out of range."""
        if 0 < position <= len(self.slots):
            return self.slots[position - 1]
        return None


# -- the monitor -------------------------------------------------------------


class StreamMonitor:
    """Aggregates one Lightstreamer client's stream activity in plain Python.

    Thread-safe for one writer (the SDK's event thread or an asyncio loop) and
    concurrent readers (the metric collection thread).
    """

    def __init__(
        self,
        *,
        epics: EpicPolicy | None = None,
        stall_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        deals: DealMetrics | None = None,
        emit: Callable[..., None] = emit_event,
        name: str = "lightstreamer",
        health: HealthSink | None = None,
    ) -> None:
        self.name = name
        self._health = health
        self._health_on = True
        self._epics = epics or EpicPolicy()
        self.stall_seconds = stall_seconds
        self.clock = clock
        self._wall_clock = wall_clock
        self._deals = deals
        self._emit = emit
        self._lock = threading.Lock()
        self._status_lock = threading.Lock()

        self.raw_status = "DISCONNECTED"
        self.reported_status = StreamStatus.DISCONNECTED
        self.last_message: float | None = None
        self.reconnects = 0
        self.lag_clamped = 0
        self._was_lost = False
        self._views: dict[int, SubscriptionView] = {}
        self._retired_updates: dict[tuple[str, str, str | None], int] = {}
        self.lost: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self._lag: dict[str, _LagBuffer] = {}

    # ---- subscriptions

    def subscription(
        self, items: Iterable[object], fields: Iterable[object], mode: object
    ) -> SubscriptionView:
        """Describe a subscription (item names never leave this call)."""
        field_names = [str(f) for f in fields]
        mode_label = mode if mode in _MODES else OTHER
        infos = [classify(item) for item in items]
        slots = []
        for info in infos:
            epic = self._epics.label(info.epic)
            key = (info.kind, str(mode_label), epic)
            buffer = self._lag_buffer(info.kind) if info.kind in TIME_FIELDS else None
            slots.append(ItemSlot(info.kind, key, field_names, buffer))
        kind = infos[0].kind if infos else OTHER
        view = SubscriptionView(kind, str(mode_label), slots)
        with self._lock:
            self._views[id(view)] = view
        return view

    def subscribed(self, view: SubscriptionView) -> None:
        """The server confirmed the subscription (SUBOK / onSubscription)."""
        view.active = True
        self.touch()

    def unsubscribed(self, view: SubscriptionView) -> None:
        """The subscription is no longer active (UNSUB / onUnsubscription)."""
        view.active = False

    def forget(self, view: SubscriptionView) -> None:
        """The application dropped the subscription: fold its counts away."""
        view.active = False
        with self._lock:
            if self._views.pop(id(view), None) is None:
                return
            for slot in view.slots:
                retired = self._retired_updates
                retired[slot.key] = retired.get(slot.key, 0) + slot.count

    def _lag_buffer(self, kind: str) -> _LagBuffer:
        buffer = self._lag.get(kind)
        if buffer is None:
            buffer = self._lag.setdefault(kind, _LagBuffer())
        return buffer

    # ---- per message

    def touch(self) -> None:
        """Any message arrived (data, PROBE, ...): restart the silence."""
        self.last_message = self.clock()

    def lag(self, slot: ItemSlot, value: object) -> None:
        """Sample the lag of a timestamp value of ``slot``'s time field."""
        parse = slot.parse
        buffer = slot.lag_buffer
        if parse is None or buffer is None:
            return
        lag = parse(value, self._wall_clock())
        if lag is None:
            return
        if lag < 0.0:
            self.lag_clamped += 1
            lag = 0.0
        buffer.add(lag)

    def lost_updates(self, slot_kind: str, count: int) -> None:
        """The server dropped ``count`` updates of an item of this kind."""
        self.lost[slot_kind] = self.lost.get(slot_kind, 0) + max(int(count), 0)

    def error(self, code: object) -> None:
        """A server, session or subscription error with a TLCP code."""
        label = str(code) if isinstance(code, int) else _code_label(code)
        self.errors[label] = self.errors.get(label, 0) + 1

    def trade_fields(self, confirms: object, opu: object = None) -> None:
        """A TRADE update: count and time a streamed deal confirmation."""
        if self._deals is None or not isinstance(confirms, str) or not confirms:
            return
        confirmation = confirmation_from(load_json_object(confirms))
        if confirmation is not None:
            self._deals.record(confirmation, ConfirmationSource.STREAM)

    # ---- status

    def status(self, raw: str) -> None:
        """The client reported a status string (SDK form)."""
        coarse = coarse_status(raw)
        if coarse is StreamStatus.CONNECTING:
            self._health_on = True
        elif coarse is StreamStatus.CONNECTED:
            if self._was_lost:
                self.reconnects += 1
            self._was_lost = False
            self.touch()
        elif raw in ("DISCONNECTED:WILL-RETRY", "DISCONNECTED:TRYING-RECOVERY"):
            self._was_lost = True
        elif raw == "DISCONNECTED":
            self._was_lost = False
        self.raw_status = raw
        self.poll()

    def current_status(self) -> StreamStatus:
        """The coarse status now, stall detection included."""
        coarse = coarse_status(self.raw_status)
        if coarse is StreamStatus.CONNECTED and self.silence() > self.stall_seconds:
            return StreamStatus.STALLED
        return coarse

    def silence(self) -> float:
        """Seconds since the last message, 0 before any."""
        last = self.last_message
        return 0.0 if last is None else max(self.clock() - last, 0.0)

    def poll(self) -> StreamStatus:
        """Re-evaluate the status; on a change, emit an event and tell health."""
        status = self.current_status()
        if status is self.reported_status:
            return status
        # The SDK thread, the watchdog and a collection may poll at once.
        with self._status_lock:
            if status is self.reported_status:
                return status
            self.reported_status = status
            self._status_event(status)
            self._report_health(status)
        return status

    def closed_by_application(self) -> None:
        """The application closed the session on purpose: leave ``/readyz``.

        The status still moves to ``disconnected``; the stream comes back to
        the health registry when it connects again.
        """
        self._health_on = False
        health = self._health
        if health is None:
            return
        try:
            health.forget_stream(self.name)
        except Exception:  # health reporting must never break the stream
            _log.debug("could not withdraw stream %s from health", self.name,
                       exc_info=True)

    def _report_health(self, status: StreamStatus) -> None:
        health = self._health
        if health is None or not self._health_on:
            return
        try:
            health.set_stream_status(self.name, status)
        except Exception:  # health reporting must never break the stream
            _log.debug("could not report stream %s to health", self.name,
                       exc_info=True)

    def _status_event(self, status: StreamStatus) -> None:
        severity = (
            SeverityNumber.WARN
            if status in (StreamStatus.STALLED, StreamStatus.DISCONNECTED)
            else SeverityNumber.INFO
        )
        attributes = {
            names.IG_STREAM_STATUS: status.value,
            names.IG_STREAM_STATUS_DETAIL: self.raw_status,
        }
        _log.info("Lightstreamer stream %s (%s)", status.value, self.raw_status)
        self._emit(
            names.EVENT_STREAM_STATUS_CHANGE, severity, attributes,
            body=f"stream {status.value}",
        )

    # ---- reading (collection thread)

    def views(self) -> list[SubscriptionView]:
        with self._lock:
            return list(self._views.values())

    def update_counts(self) -> dict[tuple[str, str, str | None], int]:
        """Cumulative updates by (kind, mode, epic label)."""
        with self._lock:
            totals = self._retired_updates.copy()
            views = list(self._views.values())
        for view in views:
            for slot in view.slots:
                totals[slot.key] = totals.get(slot.key, 0) + slot.count
        return totals

    def active_subscriptions(self) -> dict[str, int]:
        """Active subscriptions by item kind."""
        counts: dict[str, int] = {}
        for view in self.views():
            if view.active:
                counts[view.kind] = counts.get(view.kind, 0) + 1
        return counts

    def drain_lag(self) -> Iterator[tuple[str, list[float]]]:
        """Take the buffered lag samples, by kind."""
        for kind, buffer in list(self._lag.items()):
            samples = buffer.drain()
            if samples:
                yield kind, samples


def _evenly(samples: list[float], limit: int) -> list[float]:
    """At most ``limit`` samples, spread evenly over the list."""
    if len(samples) <= limit:
        return samples
    step = len(samples) / limit
    return [samples[int(index * step)] for index in range(limit)]


def _code_label(code: object) -> str:
    try:
        return str(int(code))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return OTHER


# -- export ----------------------------------------------------------------------


class StreamExporter:
    """Observable instruments over every live monitor of one MeterProvider."""

    def __init__(self, meter_provider: MeterProvider) -> None:
        meter = meter_provider.get_meter(names.SCOPE, __version__)
        self.deals = DealMetrics(meter)
        self._monitors: weakref.WeakSet[StreamMonitor] = weakref.WeakSet()
        self._retired_state: list[tuple[weakref.ref, _Totals]] = []
        self._retired = _Totals()
        self._lock = threading.Lock()
        self._watchdog = StallWatchdog(self)
        spec = names.STREAM_UPDATE_LAG
        self._lag = meter.create_histogram(
            spec.name, spec.unit, spec.description,
            explicit_bucket_boundaries_advisory=list(spec.buckets or ()),
        )
        self._observe(meter, names.STREAM_UPDATES, self._updates, "counter")
        self._observe(meter, names.STREAM_STATUS, self._status, "gauge")
        self._observe(meter, names.STREAM_SILENCE, self._silence, "gauge")
        self._observe(meter, names.STREAM_RECONNECTS, self._reconnects, "counter")
        self._observe(meter, names.STREAM_SUBSCRIPTIONS, self._subs, "updown")
        self._observe(meter, names.STREAM_LOST_UPDATES, self._lost, "counter")
        self._observe(meter, names.STREAM_ERRORS, self._errors, "counter")

    @staticmethod
    def _observe(meter, spec: names.Instrument, callback, kind: str) -> None:
        factory = {
            "counter": meter.create_observable_counter,
            "gauge": meter.create_observable_gauge,
            "updown": meter.create_observable_up_down_counter,
        }[kind]
        factory(spec.name, [_guarded(callback)], spec.unit, spec.description)

    def add(self, monitor: StreamMonitor) -> None:
        """Export ``monitor`` until it is garbage collected."""
        with self._lock:
            self._monitors.add(monitor)
            totals = _Totals.of(monitor)
            self._retired_state.append((weakref.ref(monitor), totals))
        self._watchdog.ensure_running()

    def poll_all(self) -> int:
        """Re-evaluate every live monitor's status; how many there are."""
        monitors = self._live()
        for monitor in monitors:
            monitor.poll()
        return len(monitors)

    def poll_interval(self) -> float:
        """How often the watchdog polls: a quarter of the shortest stall time."""
        stalls = [m.stall_seconds for m in self._live()]
        shortest = min(stalls, default=4.0)
        return min(max(shortest / 4.0, 0.05), 1.0)

    def _live(self) -> list[StreamMonitor]:
        with self._lock:
            self._fold_dead()
            return list(self._monitors)

    def _fold_dead(self) -> None:
        # A dead monitor's cumulative counts move to the retired totals, so
        # counters never go down when a client is garbage collected.
        keep = []
        for ref, totals in self._retired_state:
            if ref() is None:
                self._retired.merge(totals)
            else:
                keep.append((ref, totals))
        self._retired_state = keep

    def _snapshot_totals(self) -> _Totals:
        monitors = self._live()
        totals = _Totals()
        totals.merge(self._retired)
        with self._lock:
            states = list(self._retired_state)
        for ref, state in states:
            monitor = ref()
            if monitor is not None:
                state.refresh(monitor)
                totals.merge(state)
        del monitors
        return totals

    # ---- callbacks

    def _updates(self, options: CallbackOptions) -> Iterator[Observation]:
        totals = self._snapshot_totals()
        # Lag samples are recorded here, inside the collection, so they are
        # part of the same export.
        by_kind: dict[str, list[float]] = {}
        for monitor in self._live():
            for kind, samples in monitor.drain_lag():
                by_kind.setdefault(kind, []).extend(samples)
        for kind, samples in by_kind.items():
            attributes = {names.IG_STREAM_ITEM_KIND: kind}
            for lag in _evenly(samples, LAG_RECORDS_PER_COLLECTION):
                self._lag.record(lag, attributes)
        for (kind, mode, epic), count in totals.updates.items():
            attributes = {names.IG_STREAM_ITEM_KIND: kind, names.IG_STREAM_MODE: mode}
            if epic is not None:
                attributes[names.IG_STREAM_EPIC] = epic
            yield Observation(count, attributes)

    def _status(self, options: CallbackOptions) -> Iterator[Observation]:
        monitors = self._live()
        if not monitors:
            return
        counts = dict.fromkeys(_STATUSES, 0)
        for monitor in monitors:
            counts[monitor.poll()] += 1
        for status, count in counts.items():
            yield Observation(count, {names.IG_STREAM_STATUS: status.value})

    def _silence(self, options: CallbackOptions) -> Iterator[Observation]:
        silences = [
            m.silence()
            for m in self._live()
            if coarse_status(m.raw_status) is StreamStatus.CONNECTED
        ]
        if silences:
            yield Observation(max(silences))

    def _reconnects(self, options: CallbackOptions) -> Iterator[Observation]:
        yield Observation(self._snapshot_totals().reconnects)

    def _subs(self, options: CallbackOptions) -> Iterator[Observation]:
        counts: dict[str, int] = {}
        for monitor in self._live():
            for kind, count in monitor.active_subscriptions().items():
                counts[kind] = counts.get(kind, 0) + count
        for kind in (*names.STREAM_ITEM_KINDS, OTHER):
            if kind in counts or self._monitors:
                count = counts.get(kind, 0)
                yield Observation(count, {names.IG_STREAM_ITEM_KIND: kind})

    def _lost(self, options: CallbackOptions) -> Iterator[Observation]:
        for kind, count in self._snapshot_totals().lost.items():
            yield Observation(count, {names.IG_STREAM_ITEM_KIND: kind})

    def _errors(self, options: CallbackOptions) -> Iterator[Observation]:
        for code, count in self._snapshot_totals().errors.items():
            yield Observation(count, {names.IG_STREAM_ERROR_CODE: code})


class StallWatchdog:
    """A daemon thread that polls live monitors so stalls show promptly.

    Without it a stall would be noticed only at the next metric collection
    (a minute apart by default) or the next status change. It runs while at
    least one monitor is alive and stops by itself after the last one.
    """

    def __init__(self, exporter: StreamExporter) -> None:
        self._exporter = weakref.ref(exporter)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def ensure_running(self) -> None:
        """Start the thread unless it runs already."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(
                target=self._run, name="ig-otel-stream-watchdog", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            exporter = self._exporter()
            if exporter is None:
                return
            try:
                if exporter.poll_all() == 0:
                    with self._lock:
                        self._thread = None
                    return
                interval = exporter.poll_interval()
            except Exception:  # never let the watchdog die noisily
                _log.debug("stream watchdog poll failed", exc_info=True)
                interval = 1.0
            del exporter
            time.sleep(interval)


class _Totals:
    """Cumulative counts of one monitor (kept after it dies) or of many."""

    __slots__ = ("updates", "lost", "errors", "reconnects")

    def __init__(self) -> None:
        self.updates: dict[tuple[str, str, str | None], int] = {}
        self.lost: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.reconnects = 0

    @classmethod
    def of(cls, monitor: StreamMonitor) -> _Totals:
        totals = cls()
        totals.refresh(monitor)
        return totals

    def refresh(self, monitor: StreamMonitor) -> None:
        self.updates = monitor.update_counts()
        self.lost = monitor.lost.copy()
        self.errors = monitor.errors.copy()
        self.reconnects = monitor.reconnects

    def merge(self, other: _Totals) -> None:
        for target, source in (
            (self.updates, other.updates),
            (self.lost, other.lost),
            (self.errors, other.errors),
        ):
            for key, value in source.items():
                target[key] = target.get(key, 0) + value  # type: ignore[index]
        self.reconnects += other.reconnects


def _guarded(callback):
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        try:
            return list(callback(options))
        except Exception:  # a bug here must not break the whole collection
            _log.exception("stream metrics callback failed")
            return []

    return observe


_EXPORTERS: weakref.WeakKeyDictionary[object, StreamExporter] = (
    weakref.WeakKeyDictionary()
)
_EXPORTERS_LOCK = threading.Lock()


def exporter_for(meter_provider: MeterProvider) -> StreamExporter:
    """The one exporter of ``meter_provider``, created on first use."""
    with _EXPORTERS_LOCK:
        exporter = _EXPORTERS.get(meter_provider)
        if exporter is None:
            exporter = StreamExporter(meter_provider)
            _EXPORTERS[meter_provider] = exporter
        return exporter


class StreamInstrumentation:
    """What adapters share: exporter, epic policy, tracer and thresholds."""

    def __init__(
        self,
        config: Config | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        health: HealthSink | None = None,
    ) -> None:
        config = config or Config()
        provider = meter_provider or metrics.get_meter_provider()
        self.exporter = exporter_for(provider)
        self.epics = EpicPolicy(config.stream_epics, config.stream_epic_limit)
        self.stall_seconds = config.stream_stall_seconds
        self.capture_deals = config.capture_deals
        self.tracer = trace.get_tracer(names.SCOPE, __version__, tracer_provider)
        self.health = health if health is not None else _default_health()
        self.enabled = True

    def new_monitor(self, kind: str = "lightstreamer") -> StreamMonitor:
        """A monitor exported by this instrumentation's meter provider.

        Its health name is ``kind`` and a process-wide sequence number, for
        example ``lightstreamer-1`` or ``tlcp-2``.
        """
        monitor = StreamMonitor(
            epics=self.epics,
            stall_seconds=self.stall_seconds,
            deals=self.exporter.deals,
            name=f"{kind}-{next(_MONITOR_NUMBERS)}",
            health=self.health,
        )
        self.exporter.add(monitor)
        return monitor


_MONITOR_NUMBERS = itertools.count(1)


def _default_health() -> HealthSink | None:
    try:
        from ig_otel._health import default_registry

        return default_registry()
    except Exception:  # health is optional; the stream works without it
        _log.debug("no health registry for streams", exc_info=True)
        return None

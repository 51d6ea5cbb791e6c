"""Deals: references, confirmations and the time a confirmation takes.

A dealing call (open, amend or close a position or working order) answers
at once with a deal reference; whether IG accepted the deal is known only
from its confirmation, polled over REST (``GET /confirms/{dealReference}``)
or pushed on the stream (``CONFIRMS`` on the ``TRADE`` item). The
:data:`TRACKER` remembers when each reference was handed out so both paths
can measure confirmation latency; it is bounded and forgets old references.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import Meter

from ig_otel import _telemetry as names
from ig_otel._events import SeverityNumber, emit_event
from ig_otel._telemetry import ConfirmationSource, create_instrument

__all__ = [
    "TRACKER",
    "Confirmation",
    "DealMetrics",
    "DealTracker",
    "confirmation_from",
    "deal_reference_from",
]

_MAX_JSON = 65536


@dataclass(frozen=True)
class Confirmation:
    """The parts of a deal confirmation worth telemetry."""

    deal_reference: str | None
    deal_id: str | None
    deal_status: str | None
    reason: str | None
    epic: str | None
    status: str | None

    @property
    def rejected(self) -> bool:
        return self.deal_status == "REJECTED"


def load_json_object(body: bytes | str | None) -> Mapping[str, Any] | None:
    """A JSON object from a small body, or None."""
    if not body or len(body) > _MAX_JSON:
        return None
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return document if isinstance(document, dict) else None


def deal_reference_from(document: Mapping[str, Any] | None) -> str | None:
    """The deal reference of a dealing response body."""
    return _text(document, "dealReference")


def confirmation_from(document: Mapping[str, Any] | None) -> Confirmation | None:
    """The confirmation in a ``/confirms`` body or a ``CONFIRMS`` value."""
    status = _text(document, "dealStatus")
    if document is None or status is None:
        return None
    return Confirmation(
        deal_reference=_text(document, "dealReference"),
        deal_id=_text(document, "dealId"),
        deal_status=status,
        reason=_text(document, "reason"),
        epic=_text(document, "epic"),
        status=_text(document, "status"),
    )


def _text(document: Mapping[str, Any] | None, key: str) -> str | None:
    if document is None:
        return None
    value = document.get(key)
    return value if isinstance(value, str) and value else None


class DealTracker:
    """When each deal reference was handed out, to time its confirmations.

    Thread-safe and bounded: at most ``capacity`` references, each kept at
    most ``max_age`` seconds. Each source measures one latency per reference.

    A streamed confirmation can be seen before the dealing response that
    carries its reference has been read (both arrive on their own
    connections). Such an early confirmation is remembered, and
    :meth:`sent` answers it with a latency of 0: it was, as far as the
    program can tell, immediate.
    """

    def __init__(
        self,
        capacity: int = 1024,
        max_age: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._capacity = capacity
        self._max_age = max_age
        self._clock = clock
        self._sent: OrderedDict[str, tuple[float, set[str]]] = OrderedDict()
        self._early: OrderedDict[str, tuple[float, set[str]]] = OrderedDict()
        self._lock = threading.Lock()

    def sent(self, deal_reference: str) -> list[tuple[str, float]]:
        """Note that a dealing response just gave ``deal_reference``.

        Returns:
            ``(source, latency)`` for each confirmation that came first.
        """
        now = self._clock()
        with self._lock:
            early = self._early.pop(deal_reference, None)
            sources = set(early[1]) if early else set()
            self._sent[deal_reference] = (now, sources)
            self._sent.move_to_end(deal_reference)
            self._forget_old(now)
        return [(source, 0.0) for source in sorted(sources)]

    def confirmed(self, deal_reference: str, source: str) -> float | None:
        """Seconds since the reference was sent; None if unknown or timed.

        Only the first confirmation from each source gets a latency.
        """
        now = self._clock()
        with self._lock:
            entry = self._sent.get(deal_reference)
            if entry is None:
                self._remember_early(deal_reference, source, now)
                return None
            sent_at, sources = entry
            if source in sources:
                return None
            sources.add(source)
            return max(now - sent_at, 0.0)

    def clear(self) -> None:
        """Forget every reference (tests reuse a seeded simulator's ids)."""
        with self._lock:
            self._sent.clear()
            self._early.clear()

    def _remember_early(self, deal_reference: str, source: str, now: float) -> None:
        entry = self._early.setdefault(deal_reference, (now, set()))
        entry[1].add(source)
        self._forget_old(now)

    def _forget_old(self, now: float) -> None:
        for table in (self._sent, self._early):
            while len(table) > self._capacity:
                table.popitem(last=False)
            while table:
                oldest = next(iter(table.values()))[0]
                if now - oldest <= self._max_age:
                    break
                table.popitem(last=False)


#: The process-wide tracker shared by REST and stream instrumentation.
TRACKER = DealTracker()


class DealMetrics:
    """Records confirmations into the contract's instruments."""

    def __init__(self, meter: Meter, capture_deals: bool = True) -> None:
        self._count = create_instrument(meter, names.DEAL_CONFIRMATIONS)
        self._latency = create_instrument(meter, names.DEAL_CONFIRMATION_LATENCY)
        self._capture_deals = capture_deals

    def record(
        self,
        confirmation: Confirmation,
        source: ConfirmationSource,
        tracker: DealTracker = TRACKER,
    ) -> None:
        """Count one confirmation and time it if its reference is known."""
        attributes = {
            names.IG_DEAL_STATUS: confirmation.deal_status or "UNKNOWN",
            names.IG_DEAL_REASON: confirmation.reason or "UNKNOWN",
            names.IG_CONFIRMATION_SOURCE: source.value,
        }
        self._count.add(1, attributes)

        if confirmation.deal_reference:
            latency = tracker.confirmed(confirmation.deal_reference, source.value)
            if latency is not None:
                self.record_latency(source.value, latency)

        if confirmation.rejected:
            self._emit_rejected(confirmation, source)

    def record_latency(self, source: str, latency: float) -> None:
        """Record one confirmation latency for ``source`` (``rest``/``stream``)."""
        self._latency.record(latency, {names.IG_CONFIRMATION_SOURCE: source})

    def _emit_rejected(
        self, confirmation: Confirmation, source: ConfirmationSource
    ) -> None:
        attributes = {
            names.IG_DEAL_REASON: confirmation.reason or "UNKNOWN",
            names.IG_CONFIRMATION_SOURCE: source.value,
        }
        if self._capture_deals and confirmation.deal_reference:
            attributes[names.IG_DEAL_REFERENCE] = confirmation.deal_reference
        if self._capture_deals and confirmation.epic:
            attributes[names.IG_EPIC] = confirmation.epic
        emit_event(
            names.EVENT_DEAL_REJECTED, SeverityNumber.WARN, attributes,
            body=f"IG rejected a deal: {confirmation.reason or 'no reason given'}",
        )

"""Circuit breakers on pybreaker, safe for asyncio, reporting themselves.

pybreaker keeps the state (closed, open, half-open), the counters and the
time the breaker opened, in memory or in Redis, and tells listeners about
transitions. Alone it miscounts coroutines, lets every concurrent caller
through while half-open, and lets results that arrive after a transition
trip the breaker again. :class:`CircuitBreaker` therefore splits each call
into two non-blocking steps around it, usable from threads and coroutines
alike:

* :meth:`CircuitBreaker.admit` lets the call through or raises
  :class:`~ig_otel._exceptions.CircuitOpenError`; it moves an open breaker
  to half-open once the reset timeout has passed, and hands out at most
  ``half_open_calls`` trial permits at once;
* :meth:`CircuitBreaker.record` settles a permit with an outcome. Every
  permit carries the generation of the state it was issued in; a result
  from an older generation is counted as ``ignored`` and changes nothing.

Each breaker reports ``ig.circuit_breaker.state`` (1 for the current state,
0 for the others), ``ig.circuit_breaker.transitions``,
``ig.circuit_breaker.calls`` and an ``ig.circuit_breaker.state_change``
event per real transition (never one from a state to itself).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import pybreaker
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from ig_otel import _telemetry as tm
from ig_otel._events import SeverityNumber, emit_event
from ig_otel._exceptions import CircuitOpenError
from ig_otel._telemetry import BreakerOutcome, BreakerState

__all__ = ["BreakerPermit", "CircuitBreaker"]

_log = logging.getLogger(__name__)

T = TypeVar("T")

_FROM_PYBREAKER = {
    pybreaker.STATE_CLOSED: BreakerState.CLOSED,
    pybreaker.STATE_OPEN: BreakerState.OPEN,
    pybreaker.STATE_HALF_OPEN: BreakerState.HALF_OPEN,
}

_SEVERITY = {
    BreakerState.OPEN: SeverityNumber.ERROR,
    BreakerState.HALF_OPEN: SeverityNumber.WARN,
    BreakerState.CLOSED: SeverityNumber.INFO,
}


@dataclass(frozen=True)
class BreakerPermit:
    """Leave to make one call, to be settled with :meth:`CircuitBreaker.record`.

    Attributes:
        breaker: Name of the breaker that issued it.
        generation: State generation it was issued in.
        trial: Whether it is one of the half-open trial calls.
    """

    breaker: str
    generation: int
    trial: bool


class _ClockedPyBreaker(pybreaker.CircuitBreaker):
    """pybreaker's breaker with the opening time read from an injected clock."""

    def __init__(self, clock: Callable[[], float], **kwargs: Any) -> None:
        self._clock = clock
        super().__init__(**kwargs)

    def open(self) -> bool:
        with self._lock:
            opened = datetime.fromtimestamp(self._clock(), timezone.utc)
            self._state_storage.opened_at = opened
            self.state = self._state_storage.state = pybreaker.STATE_OPEN
            return self._throw_new_error_on_trip


class _Listener(pybreaker.CircuitBreakerListener):
    """Forwards pybreaker's transitions; never raises into pybreaker."""

    def __init__(self, owner: CircuitBreaker) -> None:
        self._owner = weakref.ref(owner)

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        owner = self._owner()
        if owner is None or old_state is None:
            return
        try:
            owner._on_transition(old_state.name, new_state.name)
        except Exception:  # telemetry must not break the guarded call
            _log.debug("breaker transition handling failed", exc_info=True)


class CircuitBreaker:
    """A named circuit breaker for sync and asyncio callers.

    Args:
        name: Breaker name (``ig.circuit_breaker.name``), e.g. ``trading``.
        fail_max: Consecutive failures that open the breaker.
        reset_timeout: Seconds an open breaker refuses calls before trials.
        success_threshold: Consecutive trial successes that close it.
        half_open_calls: Trial calls allowed at once while half-open.
        exclude: Exception types or predicates that are not failures
            (pybreaker's ``exclude``); they count as ``ignored``.
        storage: A pybreaker storage; ``CircuitRedisStorage`` shares the
            state between processes (one namespace per breaker).
        clock: Wall-clock seconds (``time.time``); injected by tests.
        meter_provider: Where the breaker's metrics go (global by default).
    """

    def __init__(
        self,
        name: str,
        *,
        fail_max: int = 5,
        reset_timeout: float = 30.0,
        success_threshold: int = 1,
        half_open_calls: int = 1,
        exclude: Iterable[type[BaseException] | Callable[[Any], bool]] = (),
        storage: pybreaker.CircuitBreakerStorage | None = None,
        clock: Callable[[], float] = time.time,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.name = name
        self.half_open_calls = half_open_calls
        self._clock = clock
        self._lock = threading.RLock()
        self._generation = 0
        self._trials = 0
        self._forced_open = False
        self._telemetry = _BreakerTelemetry.for_provider(meter_provider)
        self._cb = _ClockedPyBreaker(
            clock,
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            success_threshold=success_threshold,
            exclude=list(exclude),
            listeners=[_Listener(self)],
            state_storage=storage,
            name=name,
        )
        self._telemetry.register(self)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self.state.value}>"

    # -- readings -----------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """State as stored (an expired open breaker stays open until a call)."""
        return _FROM_PYBREAKER.get(self._cb.current_state, BreakerState.CLOSED)

    @property
    def fail_counter(self) -> int:
        """Consecutive failures counted so far."""
        return self._cb.fail_counter

    @property
    def reset_timeout(self) -> float:
        """Seconds an open breaker refuses calls."""
        return float(self._cb.reset_timeout)

    @property
    def forced_open(self) -> bool:
        """Whether :meth:`force_open` holds the breaker open."""
        return self._forced_open

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a trial call through (0 if not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        if self._forced_open:
            return self.reset_timeout
        opened_at = self._cb._state_storage.opened_at
        if opened_at is None:
            return 0.0
        due = opened_at.timestamp() + self.reset_timeout
        return max(due - self._clock(), 0.0)

    # -- admission ------------------------------------------------------------

    def admit(self) -> BreakerPermit:
        """Let one call through, or refuse it.

        Raises:
            CircuitOpenError: The breaker is open, or half-open with all its
                trial permits handed out.
        """
        with self._lock:
            state = self._synced_state()
            if state is BreakerState.OPEN:
                wait = self.retry_after()
                if self._forced_open or wait > 0.0:
                    self._reject(wait)
                self._cb.half_open()
                state = BreakerState.HALF_OPEN

            if state is BreakerState.HALF_OPEN:
                if self._trials >= self.half_open_calls:
                    self._reject(self.reset_timeout)
                self._trials += 1
                return BreakerPermit(self.name, self._generation, True)
            return BreakerPermit(self.name, self._generation, False)

    def record(self, permit: BreakerPermit, outcome: BreakerOutcome) -> None:
        """Settle a permit; late permits are counted ``ignored``. Never raises."""
        try:
            counted = self._settle(permit, BreakerOutcome(outcome))
            self._telemetry.count_call(self.name, counted)
        except Exception:  # the caller's own result must come through untouched
            _log.warning("breaker %s could not record a call", self.name, exc_info=True)

    def release(self, permit: BreakerPermit) -> None:
        """Give a permit back unused (the call was never made)."""
        with self._lock:
            if permit.trial and permit.generation == self._generation:
                self._trials = max(self._trials - 1, 0)

    def is_failure(self, error: BaseException) -> bool:
        """Whether an exception counts against the breaker (pybreaker's rule)."""
        return bool(self._cb.is_system_error(error))

    # -- manual control -----------------------------------------------------

    def force_open(self) -> None:
        """Hold the breaker open, refusing every call, until :meth:`force_close`."""
        with self._lock:
            self._forced_open = True
            if self._synced_state() is not BreakerState.OPEN:
                self._cb.open()

    def force_close(self) -> None:
        """Close the breaker now and resume normal counting."""
        with self._lock:
            self._forced_open = False
            if self._synced_state() is not BreakerState.CLOSED:
                self._cb.close()
            self._cb._state_storage.reset_counter()

    # -- convenience wrappers -----------------------------------------------

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``func`` through the breaker; its exceptions pass unchanged."""
        with self.guarding():
            return func(*args, **kwargs)

    async def acall(
        self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
    ) -> T:
        """Await ``func(*args, **kwargs)`` through the breaker."""
        with self.guarding():
            return await func(*args, **kwargs)

    @contextlib.contextmanager
    def guarding(self) -> Iterator[BreakerPermit]:
        """Context manager around one call (sync or async body)."""
        permit = self.admit()
        try:
            yield permit
        except BaseException as error:
            self.record(permit, self._classify(error))
            raise
        self.record(permit, BreakerOutcome.SUCCESS)

    # -- internals ----------------------------------------------------------

    def _classify(self, error: BaseException) -> BreakerOutcome:
        if not isinstance(error, Exception):
            return BreakerOutcome.IGNORED
        if self.is_failure(error):
            return BreakerOutcome.FAILURE
        return BreakerOutcome.IGNORED

    def _synced_state(self) -> BreakerState:
        # Reading pybreaker's ``state`` notices changes made by other
        # processes sharing the storage, and reports them as transitions.
        return _FROM_PYBREAKER.get(self._cb.state.name, BreakerState.CLOSED)

    def _reject(self, retry_after: float) -> None:
        self._telemetry.count_call(self.name, BreakerOutcome.REJECTED)
        if math.isinf(retry_after):
            retry_after = self.reset_timeout
        raise CircuitOpenError(self.name, retry_after)

    def _settle(self, permit: BreakerPermit, outcome: BreakerOutcome) -> BreakerOutcome:
        with self._lock:
            state = self._synced_state()
            if permit.generation != self._generation or self._forced_open:
                return BreakerOutcome.IGNORED
            if permit.trial:
                self._trials = max(self._trials - 1, 0)
            if outcome is BreakerOutcome.SUCCESS:
                self._on_success(state)
            elif outcome is BreakerOutcome.FAILURE:
                self._on_failure(state)
            return outcome

    def _on_success(self, state: BreakerState) -> None:
        storage = self._cb._state_storage
        storage.reset_counter()
        if state is BreakerState.HALF_OPEN:
            storage.increment_success_counter()
            if storage.success_counter >= self._cb.success_threshold:
                self._cb.close()

    def _on_failure(self, state: BreakerState) -> None:
        storage = self._cb._state_storage
        if state is BreakerState.HALF_OPEN:
            self._cb.open()
            return
        storage.increment_counter()
        if state is BreakerState.CLOSED and storage.counter >= self._cb.fail_max:
            self._cb.open()

    def _on_transition(self, old_name: str, new_name: str) -> None:
        old = _FROM_PYBREAKER.get(old_name)
        new = _FROM_PYBREAKER.get(new_name)
        if old is None or new is None or old is new:
            return
        self._generation += 1
        self._trials = 0
        _log.info("circuit breaker %s: %s -> %s", self.name, old.value, new.value)
        self._telemetry.transition(self.name, old, new, self.retry_after())


class _BreakerTelemetry(tm.ProviderBound):
    """Instruments shared by every breaker reporting to one meter provider."""

    def __init__(self, provider: MeterProvider) -> None:
        super().__init__(provider)
        self._breakers: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()
        tm.create_instrument(self.meter, tm.BREAKER_STATE, [self._observe])
        self._transitions = tm.create_instrument(self.meter, tm.BREAKER_TRANSITIONS)
        self._calls = tm.create_instrument(self.meter, tm.BREAKER_CALLS)

    def register(self, breaker: CircuitBreaker) -> None:
        self._breakers.add(breaker)

    def count_call(self, name: str, outcome: BreakerOutcome) -> None:
        self._calls.add(
            1, {tm.IG_BREAKER_NAME: name, tm.IG_BREAKER_OUTCOME: outcome.value}
        )

    def transition(
        self, name: str, old: BreakerState, new: BreakerState, retry_after: float
    ) -> None:
        attributes = {
            tm.IG_BREAKER_NAME: name,
            tm.IG_BREAKER_FROM: old.value,
            tm.IG_BREAKER_TO: new.value,
        }
        self._transitions.add(1, attributes)
        body = f"circuit breaker {name} went from {old.value} to {new.value}"
        if new is BreakerState.OPEN:
            body += f"; trial call in {retry_after:.1f} s"
        emit_event(tm.EVENT_BREAKER_STATE_CHANGE, _SEVERITY[new], attributes, body)

    def _observe(self, options: CallbackOptions) -> Iterator[Observation]:
        for breaker in list(self._breakers):
            try:
                current = breaker.state
            except Exception:  # a storage outage must not break collection
                _log.debug("could not read breaker %s", breaker.name, exc_info=True)
                continue
            for state in BreakerState:
                attributes = {
                    tm.IG_BREAKER_NAME: breaker.name,
                    tm.IG_BREAKER_STATE: state.value,
                }
                yield Observation(1 if state is current else 0, attributes)

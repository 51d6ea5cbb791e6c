"""The guard around each IG REST call: breaker, then allowance limiter.

:class:`Guard` is the one object the REST instrumentation and the pooled
transports (:mod:`ig_otel._pool`) call around an IG request::

    admission = guard.admit(Allowance.TRADING)       # may wait or raise
    ... send the request ...
    guard.settle(admission, status_code=503, error_code=None, error=None)

``admit`` asks the endpoint group's circuit breaker first (a refused call
spends no allowance), then the allowance limiter. ``settle`` never raises:
it classifies the answer for the breaker (5xx, timeouts and transport errors
are failures; IG's 403 allowance errors are neither failure nor success and
drain the matching limiter budget), and notes the result for the health
endpoints.

Limiter modes: ``off`` (no accounting), ``observe`` (account and report
``ig.allowance.utilization``, never delay) and ``enforce`` (wait up to
``max_wait`` seconds for the allowance, or fail fast with
:class:`~ig_otel._exceptions.AllowanceExhaustedError` when the wait would be
longer).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from ig_otel import _telemetry as tm
from ig_otel._breaker import BreakerPermit, CircuitBreaker
from ig_otel._config import Config
from ig_otel._events import SeverityNumber, emit_event
from ig_otel._exceptions import AllowanceExhaustedError
from ig_otel._health import HealthRegistry, default_registry
from ig_otel._limiter import (
    BUDGET_ALLOWANCE,
    EXCEEDED_CODES,
    AllowanceLimits,
    Decision,
    LocalAllowanceBook,
    budgets_for,
)
from ig_otel._telemetry import Allowance, BreakerOutcome

__all__ = [
    "DEFAULT_BREAKER_GROUPS",
    "Admission",
    "AllowanceLimiter",
    "Guard",
    "build_guard",
    "classify_outcome",
]

_log = logging.getLogger(__name__)

#: Endpoint group (breaker name) of each allowance class.
DEFAULT_BREAKER_GROUPS: Mapping[Allowance, str] = {
    Allowance.SESSION: "session",
    Allowance.TRADING: "trading",
    Allowance.NON_TRADING: "non_trading",
    Allowance.HISTORICAL: "historical",
}

#: Longest a single wait loop may spin, whatever the clock says.
_MAX_WAIT_ROUNDS = 10_000


class AllowanceBook(Protocol):
    """What the limiter needs from a store of budgets (local or shared)."""

    limits: AllowanceLimits

    def acquire(
        self, budgets: tuple[str, ...], points: int, *, enforce: bool
    ) -> Decision: ...

    def drain(self, budgets: tuple[str, ...]) -> None: ...

    def utilization(self) -> dict[str, float]: ...

    def set_limits(self, limits: AllowanceLimits) -> None: ...


@dataclass(frozen=True)
class Admission:
    """A call let through by :meth:`Guard.admit`; settle it exactly once.

    Attributes:
        allowance: Allowance class of the call.
        points: Allowance points it spent.
        breaker: The breaker that let it through, if any.
        permit: That breaker's permit.
        waited: Seconds it waited for its allowance.
    """

    allowance: Allowance
    points: int = 1
    breaker: CircuitBreaker | None = None
    permit: BreakerPermit | None = None
    waited: float = 0.0


def classify_outcome(
    status_code: int | None, error_code: str | None, error: BaseException | None
) -> BreakerOutcome:
    """What an IG answer means to a circuit breaker.

    Failures: 5xx answers, timeouts and transport errors. Ignored: IG's 403
    allowance errors and interrupted calls (cancellation, KeyboardInterrupt).
    Everything else, 4xx business errors included, is a success: IG answered.
    """
    if error is not None:
        if not isinstance(error, Exception):
            return BreakerOutcome.IGNORED
        return BreakerOutcome.FAILURE
    if status_code is None:
        return BreakerOutcome.IGNORED
    if status_code >= 500:
        return BreakerOutcome.FAILURE
    if status_code == 403 and error_code in EXCEEDED_CODES:
        return BreakerOutcome.IGNORED
    return BreakerOutcome.SUCCESS


class AllowanceLimiter:
    """IG allowance limiting in ``observe`` or ``enforce`` mode, with telemetry.

    Args:
        book: Where budgets are kept (:class:`LocalAllowanceBook`, or the
            Redis-shared book).
        mode: ``observe`` or ``enforce``.
        max_wait: Longest wait in ``enforce`` mode, in seconds; 0 fails fast.
        clock: Monotonic seconds, for measuring waits.
        sleep: Blocking sleep used by sync callers (injected by tests).
        meter_provider: Where the limiter's metrics go (global by default).
    """

    def __init__(
        self,
        book: AllowanceBook,
        *,
        mode: str = "observe",
        max_wait: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if mode not in ("observe", "enforce"):
            raise ValueError("a limiter's mode is observe or enforce")
        self.book = book
        self.mode = mode
        self.max_wait = max_wait
        self._clock = clock
        self._sleep = sleep
        self._telemetry = _LimiterTelemetry.for_provider(meter_provider)
        self._telemetry.register(self)

    @property
    def enforcing(self) -> bool:
        """Whether calls wait or fail when their allowance is spent."""
        return self.mode == "enforce"

    def acquire(self, allowance: Allowance, points: int = 1) -> float:
        """Spend the allowance of one call; return the seconds waited.

        Raises:
            AllowanceExhaustedError: enforce mode, and the wait would be longer
                than ``max_wait``.
        """
        budgets = budgets_for(allowance)
        started = self._clock()
        for _ in range(_MAX_WAIT_ROUNDS):
            pause = self._try(allowance, budgets, points, started)
            if pause is None:
                return self._admitted(allowance, started)
            self._sleep(pause)
        return self._give_up(allowance, self.max_wait)

    async def acquire_async(self, allowance: Allowance, points: int = 1) -> float:
        """Async twin of :meth:`acquire`; waits with ``asyncio.sleep``."""
        budgets = budgets_for(allowance)
        started = self._clock()
        for _ in range(_MAX_WAIT_ROUNDS):
            pause = self._try(allowance, budgets, points, started)
            if pause is None:
                return self._admitted(allowance, started)
            await asyncio.sleep(pause)
        return self._give_up(allowance, self.max_wait)

    def drain(self, error_code: str) -> None:
        """IG said an allowance is spent: mark its budget full for a window."""
        budgets = EXCEEDED_CODES.get(error_code)
        if budgets:
            self.book.drain(budgets)
            _log.warning("IG reports its allowance spent (%s)", error_code)

    def utilization(self) -> dict[str, float]:
        """Share of each budget in use now, by budget name."""
        return self.book.utilization()

    def _try(
        self,
        allowance: Allowance,
        budgets: tuple[str, ...],
        points: int,
        started: float,
    ) -> float | None:
        # None: admitted. A number: how long to sleep before asking again.
        # Session calls (login, refresh, logout) spend the budget but are never
        # held back: refusing a logout or a re-login would only make things worse.
        enforce = self.enforcing and allowance is not Allowance.SESSION
        decision = self.book.acquire(budgets, points, enforce=enforce)
        if decision.admitted:
            return None
        left = started + self.max_wait - self._clock()
        if decision.retry_after > left:
            self._give_up(allowance, decision.retry_after)
        return max(decision.retry_after, 0.001)

    def _admitted(self, allowance: Allowance, started: float) -> float:
        waited = max(self._clock() - started, 0.0)
        if self.enforcing:
            self._telemetry.waited(allowance, waited)
        return waited

    def _give_up(self, allowance: Allowance, retry_after: float) -> Any:
        self._telemetry.rejected(allowance, retry_after)
        raise AllowanceExhaustedError(allowance.value, retry_after)


class Guard:
    """Breakers and allowance limiter in front of IG REST calls.

    Args:
        limiter: The allowance limiter, or None for no limiting (mode off).
        breakers: Breaker of each allowance class; classes not in the
            mapping are not broken.
        health: Registry the guard reports its readings to.
    """

    def __init__(
        self,
        limiter: AllowanceLimiter | None = None,
        breakers: Mapping[Allowance, CircuitBreaker] | None = None,
        *,
        health: HealthRegistry | None = None,
    ) -> None:
        self.limiter = limiter
        self.breakers: dict[Allowance, CircuitBreaker] = dict(breakers or {})
        self.health = health if health is not None else default_registry()
        self.health.watch_guard(self)

    def breaker_for(self, allowance: Allowance) -> CircuitBreaker | None:
        """The breaker guarding an allowance class, if any."""
        return self.breakers.get(Allowance(allowance))

    def admit(self, allowance: Allowance, *, points: int = 1) -> Admission:
        """Let one call through; may block in enforce mode.

        Raises:
            CircuitOpenError: the endpoint group's breaker refuses the call.
            AllowanceExhaustedError: enforce mode, allowance spent too long.
        """
        allowance = Allowance(allowance)
        breaker, permit = self._admit_breaker(allowance)
        waited = 0.0
        if self.limiter is not None:
            try:
                waited = self.limiter.acquire(allowance, points)
            except BaseException:
                self._release(breaker, permit)
                raise
        return Admission(allowance, points, breaker, permit, waited)

    async def admit_async(self, allowance: Allowance, *, points: int = 1) -> Admission:
        """Async twin of :meth:`admit`; waits without blocking the loop."""
        allowance = Allowance(allowance)
        breaker, permit = self._admit_breaker(allowance)
        waited = 0.0
        if self.limiter is not None:
            try:
                waited = await self.limiter.acquire_async(allowance, points)
            except BaseException:
                self._release(breaker, permit)
                raise
        return Admission(allowance, points, breaker, permit, waited)

    def settle(
        self,
        admission: Admission,
        *,
        status_code: int | None,
        error_code: str | None,
        error: BaseException | None,
    ) -> None:
        """Report how an admitted call ended. Never raises."""
        try:
            self._settle(admission, status_code, error_code, error)
        except Exception:  # the caller's result must come through untouched
            _log.warning("ig-otel could not settle an IG call", exc_info=True)

    def _settle(
        self,
        admission: Admission,
        status_code: int | None,
        error_code: str | None,
        error: BaseException | None,
    ) -> None:
        outcome = classify_outcome(status_code, error_code, error)
        if admission.breaker is not None and admission.permit is not None:
            admission.breaker.record(admission.permit, outcome)
        if status_code == 403 and error_code and self.limiter is not None:
            self.limiter.drain(error_code)
        if outcome is BreakerOutcome.SUCCESS:
            self.health.rest_succeeded()
        elif outcome is BreakerOutcome.FAILURE:
            self.health.rest_failed()

    def _admit_breaker(
        self, allowance: Allowance
    ) -> tuple[CircuitBreaker | None, BreakerPermit | None]:
        breaker = self.breakers.get(allowance)
        if breaker is None:
            return None, None
        return breaker, breaker.admit()

    @staticmethod
    def _release(breaker: CircuitBreaker | None, permit: BreakerPermit | None) -> None:
        if breaker is not None and permit is not None:
            breaker.release(permit)


def build_breakers(
    config: Config,
    *,
    groups: Mapping[Allowance, str] | None = None,
    meter_provider: MeterProvider | None = None,
    redis_client: Any = None,
    clock: Callable[[], float] = time.time,
) -> dict[Allowance, CircuitBreaker]:
    """One breaker per endpoint group, configured from ``config``.

    Allowance classes mapped to the same group share one breaker. With a
    Redis client the breaker state is shared through pybreaker's
    ``CircuitRedisStorage``, one namespace per breaker.
    """
    by_group: dict[str, CircuitBreaker] = {}
    result: dict[Allowance, CircuitBreaker] = {}
    for allowance, group in (groups or DEFAULT_BREAKER_GROUPS).items():
        if group not in by_group:
            by_group[group] = CircuitBreaker(
                group,
                fail_max=config.breaker_fail_max,
                reset_timeout=config.breaker_reset_timeout,
                success_threshold=config.breaker_success_threshold,
                half_open_calls=config.breaker_half_open_calls,
                storage=_breaker_storage(group, redis_client),
                clock=clock,
                meter_provider=meter_provider,
            )
        result[Allowance(allowance)] = by_group[group]
    return result


def build_guard(
    config: Config,
    *,
    meter_provider: MeterProvider | None = None,
    redis_client: Any = None,
    breakers: bool,
    limits: AllowanceLimits | None = None,
    breaker_groups: Mapping[Allowance, str] | None = None,
    health: HealthRegistry | None = None,
) -> Guard:
    """A guard configured from ``OTEL_PYTHON_IG_*`` settings.

    Args:
        config: Parsed configuration (:func:`ig_otel._config.load_config`).
        meter_provider: Where metrics go (global by default).
        redis_client: A redis-py client; by default one is made from
            ``config.redis_url`` when set. Limiter (and breaker) state then
            lives in Redis.
        breakers: Whether to add circuit breakers.
        limits: Base allowance limits (IG's published ones by default);
            ``config.allowances`` overrides apply on top.
        breaker_groups: Endpoint group of each allowance class.
        health: Health registry to report to (the process default).
    """
    if redis_client is None and config.redis_url:
        redis_client = _redis_from_url(config.redis_url)
    limiter = None
    if config.rate_limit_mode != "off":
        base = (limits or AllowanceLimits()).with_overrides(config.allowances)
        limiter = AllowanceLimiter(
            _make_book(base, redis_client),
            mode=config.rate_limit_mode,
            max_wait=config.rate_limit_max_wait,
            meter_provider=meter_provider,
        )
    guard_breakers = None
    if breakers:
        guard_breakers = build_breakers(
            config,
            groups=breaker_groups,
            meter_provider=meter_provider,
            redis_client=redis_client,
        )
    return Guard(limiter, guard_breakers, health=health)


def _make_book(limits: AllowanceLimits, redis_client: Any) -> AllowanceBook:
    if redis_client is None:
        return LocalAllowanceBook(limits)
    from ig_otel._redis_limiter import SharedAllowanceBook

    return SharedAllowanceBook(redis_client, limits)


def _breaker_storage(group: str, redis_client: Any) -> Any:
    if redis_client is None:
        return None
    from ig_otel._redis_limiter import shared_breaker_storage

    return shared_breaker_storage(redis_client, group)


def _redis_from_url(url: str) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # Short timeouts and no client-side retries: a Redis outage must degrade
    # to local limiting at once, not stall IG calls while redis-py backs off.
    return redis.Redis.from_url(
        url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )


_default_lock = threading.Lock()
_default_guard: list[Guard] = []


def default_guard() -> Guard:
    """The process-wide guard used by transports built without one.

    Built on first use from the ``OTEL_PYTHON_IG_*`` variables, with
    breakers, so every pooled transport of a process shares one set of
    breakers and one allowance book.
    """
    from ig_otel._config import load_config

    with _default_lock:
        if not _default_guard:
            _default_guard.append(build_guard(load_config(), breakers=True))
        return _default_guard[0]


def set_default_guard(guard: Guard | None) -> None:
    """Replace (or, with None, forget) the process-wide guard."""
    with _default_lock:
        _default_guard.clear()
        if guard is not None:
            _default_guard.append(guard)


class _LimiterTelemetry(tm.ProviderBound):
    """Instruments shared by every limiter reporting to one meter provider."""

    def __init__(self, provider: MeterProvider) -> None:
        super().__init__(provider)
        self._limiters: weakref.WeakSet[AllowanceLimiter] = weakref.WeakSet()
        tm.create_instrument(self.meter, tm.ALLOWANCE_UTILIZATION, [self._observe])
        self._wait = tm.create_instrument(self.meter, tm.LIMITER_WAIT_DURATION)
        self._rejections = tm.create_instrument(self.meter, tm.LIMITER_REJECTIONS)

    def register(self, limiter: AllowanceLimiter) -> None:
        self._limiters.add(limiter)

    def waited(self, allowance: Allowance, seconds: float) -> None:
        self._wait.record(seconds, {tm.IG_ALLOWANCE: allowance.value})

    def rejected(self, allowance: Allowance, retry_after: float) -> None:
        attributes = {tm.IG_ALLOWANCE: allowance.value}
        self._rejections.add(1, attributes)
        _log.warning(
            "IG %s allowance spent; call refused, retry in %.1f s",
            allowance.value, retry_after,
        )
        emit_event(
            tm.EVENT_LIMITER_REJECTED,
            SeverityNumber.WARN,
            {**attributes, tm.IG_LIMITER_RETRY_AFTER: round(retry_after, 3)},
            f"IG {allowance.value} allowance spent; retry in {retry_after:.1f} s",
        )

    def _observe(self, options: CallbackOptions) -> Iterator[Observation]:
        for limiter in list(self._limiters):
            try:
                shares = limiter.utilization()
            except Exception:  # a store outage must not break collection
                _log.debug("could not read allowance utilization", exc_info=True)
                continue
            for budget, share in shares.items():
                allowance, scope = BUDGET_ALLOWANCE[budget]
                attributes = {
                    tm.IG_ALLOWANCE: allowance.value,
                    tm.IG_LIMITER_MODE: limiter.mode,
                }
                if scope is not None:
                    attributes[tm.IG_ALLOWANCE_SCOPE] = scope
                yield Observation(share, attributes)

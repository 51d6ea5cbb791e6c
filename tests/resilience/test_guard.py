"""The guard: breakers, allowance modes, 403 drain, telemetry, health readings."""

from __future__ import annotations

from typing import Any

import pytest

from ig_otel._breaker import CircuitBreaker
from ig_otel._config import load_config
from ig_otel._exceptions import AllowanceExhaustedError, CircuitOpenError
from ig_otel._guard import AllowanceLimiter, Guard, build_guard, classify_outcome
from ig_otel._health import HealthRegistry
from ig_otel._limiter import AllowanceLimits, LocalAllowanceBook
from ig_otel._telemetry import (
    ALLOWANCE_UTILIZATION,
    EVENT_LIMITER_REJECTED,
    IG_ALLOWANCE,
    IG_ALLOWANCE_SCOPE,
    LIMITER_REJECTIONS,
    LIMITER_WAIT_DURATION,
    Allowance,
    BreakerOutcome,
    BreakerState,
)

EXCEEDED_ACCOUNT = "error.public-api.exceeded-account-allowance"
EXCEEDED_TRADING = "error.public-api.exceeded-account-trading-allowance"


def limiter(clock, fresh_metrics, mode: str, max_wait: float = 0.0, **limits):
    book = LocalAllowanceBook(AllowanceLimits(window=10.0, **limits), clock)
    return AllowanceLimiter(
        book, mode=mode, max_wait=max_wait, clock=clock, sleep=clock.sleep,
        meter_provider=fresh_metrics.provider,
    )


def guard_with(clock, fresh_metrics, lim=None, breaker=None) -> Guard:
    breakers = {Allowance.TRADING: breaker} if breaker else None
    return Guard(lim, breakers, health=HealthRegistry(clock=clock))


def utilization(fresh_metrics) -> dict[tuple[str, str | None], float]:
    return {
        (p.attributes[IG_ALLOWANCE], p.attributes.get(IG_ALLOWANCE_SCOPE)): p.value
        for p in fresh_metrics.points(ALLOWANCE_UTILIZATION.name)
    }


@pytest.mark.parametrize(
    ("status", "code", "error", "outcome"),
    [
        (200, None, None, BreakerOutcome.SUCCESS),
        (400, "invalid.input", None, BreakerOutcome.SUCCESS),
        (403, EXCEEDED_TRADING, None, BreakerOutcome.IGNORED),
        (403, "error.security.api-key-invalid", None, BreakerOutcome.SUCCESS),
        (500, "system.error", None, BreakerOutcome.FAILURE),
        (503, None, None, BreakerOutcome.FAILURE),
        (None, None, TimeoutError("read"), BreakerOutcome.FAILURE),
        (None, None, ConnectionResetError(), BreakerOutcome.FAILURE),
        (None, None, KeyboardInterrupt(), BreakerOutcome.IGNORED),
    ],
)
def test_outcome_classification(status, code, error, outcome) -> None:
    assert classify_outcome(status, code, error) is outcome


def test_observe_mode_never_delays_and_reports_utilization_above_one(
    clock, fresh_metrics
):
    guard = guard_with(clock, fresh_metrics, limiter(clock, fresh_metrics, "observe",
                                                      trading=4))
    admissions = [guard.admit(Allowance.TRADING) for _ in range(6)]
    assert all(a.waited == 0.0 for a in admissions)
    assert clock.now == 1_000.0
    assert utilization(fresh_metrics)[("trading", None)] == pytest.approx(1.5)


def test_enforce_mode_waits_for_the_window_to_free(clock, fresh_metrics):
    lim = limiter(clock, fresh_metrics, "enforce", max_wait=30.0, trading=2)
    guard = guard_with(clock, fresh_metrics, lim)
    stamps = []
    for _ in range(5):
        guard.admit(Allowance.TRADING)
        stamps.append(clock.now - 1_000.0)
    assert stamps == [0.0, 0.0, 10.0, 10.0, 20.0]
    waits = fresh_metrics.points(LIMITER_WAIT_DURATION.name)
    assert waits[0].count == 5 and waits[0].sum == pytest.approx(20.0)


def test_enforce_mode_fails_fast_when_the_wait_is_too_long(
    clock, fresh_metrics, telemetry
):
    lim = limiter(clock, fresh_metrics, "enforce", max_wait=5.0, trading=1)
    guard = guard_with(clock, fresh_metrics, lim)
    guard.admit(Allowance.TRADING)
    with pytest.raises(AllowanceExhaustedError) as caught:
        guard.admit(Allowance.TRADING)
    assert caught.value.allowance == "trading"
    assert caught.value.retry_after == pytest.approx(10.0)
    assert clock.now == 1_000.0
    rejections = fresh_metrics.points(LIMITER_REJECTIONS.name)
    assert [(p.attributes[IG_ALLOWANCE], p.value) for p in rejections] == [
        ("trading", 1)
    ]
    assert len(telemetry.events(EVENT_LIMITER_REJECTED)) == 1


def test_non_trading_utilization_reports_app_and_account_scopes(clock, fresh_metrics):
    lim = limiter(clock, fresh_metrics, "observe",
                  non_trading_app=4, non_trading_account=2)
    guard = guard_with(clock, fresh_metrics, lim)
    guard.admit(Allowance.NON_TRADING)
    shares = utilization(fresh_metrics)
    assert shares[("non_trading", "app")] == pytest.approx(0.25)
    assert shares[("non_trading", "account")] == pytest.approx(0.5)


def test_allowance_403_drains_the_matching_budget(clock, fresh_metrics):
    lim = limiter(clock, fresh_metrics, "enforce", max_wait=0.0,
                  non_trading_account=30)
    guard = guard_with(clock, fresh_metrics, lim)
    admission = guard.admit(Allowance.NON_TRADING)
    guard.settle(admission, status_code=403, error_code=EXCEEDED_ACCOUNT, error=None)
    with pytest.raises(AllowanceExhaustedError):
        guard.admit(Allowance.NON_TRADING)
    guard.admit(Allowance.TRADING)
    clock.advance(10.0)
    guard.admit(Allowance.NON_TRADING)


def test_allowance_403_does_not_open_the_breaker(clock, fresh_metrics):
    breaker = CircuitBreaker("trading", fail_max=1, clock=clock,
                             meter_provider=fresh_metrics.provider)
    guard = guard_with(clock, fresh_metrics, None, breaker)
    for _ in range(3):
        admission = guard.admit(Allowance.TRADING)
        guard.settle(admission, status_code=403, error_code=EXCEEDED_TRADING,
                     error=None)
    assert breaker.state is BreakerState.CLOSED
    admission = guard.admit(Allowance.TRADING)
    guard.settle(admission, status_code=502, error_code=None, error=None)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError):
        guard.admit(Allowance.TRADING)


def test_breaker_refusal_spends_no_allowance(clock, fresh_metrics):
    breaker = CircuitBreaker("trading", clock=clock,
                             meter_provider=fresh_metrics.provider)
    lim = limiter(clock, fresh_metrics, "enforce", trading=1)
    guard = guard_with(clock, fresh_metrics, lim, breaker)
    breaker.force_open()
    with pytest.raises(CircuitOpenError):
        guard.admit(Allowance.TRADING)
    breaker.force_close()
    guard.admit(Allowance.TRADING)


def test_limiter_refusal_gives_back_the_half_open_trial(clock, fresh_metrics):
    breaker = CircuitBreaker("trading", fail_max=1, reset_timeout=5.0, clock=clock,
                             meter_provider=fresh_metrics.provider)
    lim = limiter(clock, fresh_metrics, "enforce", trading=1)
    guard = guard_with(clock, fresh_metrics, lim, breaker)
    guard.settle(guard.admit(Allowance.TRADING), status_code=500, error_code=None,
                 error=None)
    clock.advance(5.0)
    with pytest.raises(AllowanceExhaustedError):
        guard.admit(Allowance.TRADING)
    clock.advance(5.0)
    admission = guard.admit(Allowance.TRADING)
    assert admission.permit is not None and admission.permit.trial


def test_settle_never_raises(clock, fresh_metrics):
    guard = guard_with(clock, fresh_metrics, None)
    not_an_admission: Any = object()
    guard.settle(not_an_admission, status_code=200, error_code=None, error=None)


def test_build_guard_reads_configuration(fresh_metrics):
    config = load_config(
        {
            "OTEL_PYTHON_IG_RATE_LIMIT_MODE": "enforce",
            "OTEL_PYTHON_IG_ALLOWANCES": "trading=7",
            "OTEL_PYTHON_IG_BREAKER_FAIL_MAX": "2",
            "OTEL_PYTHON_IG_BREAKER_HALF_OPEN_CALLS": "3",
        }
    )
    guard = build_guard(config, meter_provider=fresh_metrics.provider, breakers=True,
                        health=HealthRegistry())
    assert guard.limiter is not None and guard.limiter.enforcing
    assert guard.limiter.book.limits.trading == 7
    names = {b.name for b in guard.breakers.values()}
    assert names == {"session", "trading", "non_trading", "historical"}
    assert guard.breakers[Allowance.TRADING].half_open_calls == 3


def test_build_guard_without_breakers_and_mode_off_guards_nothing(fresh_metrics):
    config = load_config({"OTEL_PYTHON_IG_RATE_LIMIT_MODE": "off"})
    guard = build_guard(config, meter_provider=fresh_metrics.provider,
                        breakers=False, health=HealthRegistry())
    assert guard.limiter is None and guard.breakers == {}
    guard.settle(guard.admit(Allowance.TRADING), status_code=200, error_code=None,
                 error=None)


async def test_async_admission_waits_without_blocking(fresh_metrics):
    config = load_config({"OTEL_PYTHON_IG_RATE_LIMIT_MODE": "enforce"})
    guard = build_guard(config, meter_provider=fresh_metrics.provider,
                        breakers=True, health=HealthRegistry(),
                        limits=AllowanceLimits(trading=2, window=0.2))
    admissions = [await guard.admit_async(Allowance.TRADING) for _ in range(3)]
    assert admissions[2].waited > 0.1
    for admission in admissions:
        guard.settle(admission, status_code=200, error_code=None, error=None)


def test_enforce_mode_counts_session_calls_but_never_holds_them_back():
    from ig_otel._config import load_config
    from ig_otel._guard import build_guard
    from ig_otel._limiter import AllowanceLimits
    from ig_otel._telemetry import Allowance

    config = load_config({}, rate_limit_mode="enforce", rate_limit_max_wait=0)
    limits = AllowanceLimits(non_trading_account=2, non_trading_app=2, window=60)
    guard = build_guard(config, breakers=False, limits=limits)
    for _ in range(2):
        guard.admit(Allowance.NON_TRADING)
    for _ in range(3):
        guard.admit(Allowance.SESSION)
    usage = guard.limiter.utilization()
    assert max(usage.values()) > 1

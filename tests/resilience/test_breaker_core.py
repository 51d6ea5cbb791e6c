"""The circuit breaker on pybreaker, driven by a fake clock."""

from __future__ import annotations

import asyncio

import pybreaker
import pytest

from ig_otel._breaker import CircuitBreaker
from ig_otel._exceptions import CircuitOpenError
from ig_otel._telemetry import (
    BREAKER_CALLS,
    BREAKER_STATE,
    BREAKER_TRANSITIONS,
    EVENT_BREAKER_STATE_CHANGE,
    IG_BREAKER_FROM,
    IG_BREAKER_NAME,
    IG_BREAKER_OUTCOME,
    IG_BREAKER_STATE,
    IG_BREAKER_TO,
    BreakerOutcome,
    BreakerState,
)

S, F, IGN = BreakerOutcome.SUCCESS, BreakerOutcome.FAILURE, BreakerOutcome.IGNORED


def make(clock, fresh_metrics, name: str = "trading", **kwargs) -> CircuitBreaker:
    options = {"fail_max": 3, "reset_timeout": 10.0, **kwargs}
    return CircuitBreaker(
        name, clock=clock, meter_provider=fresh_metrics.provider, **options
    )


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record(breaker.admit(), F)


def transitions(fresh_metrics) -> dict[tuple[str, str], int]:
    return {
        (p.attributes[IG_BREAKER_FROM], p.attributes[IG_BREAKER_TO]): p.value
        for p in fresh_metrics.points(BREAKER_TRANSITIONS.name)
    }


def test_breaker_opens_after_fail_max_consecutive_failures(clock, fresh_metrics):
    breaker = make(clock, fresh_metrics)
    fail(breaker, 2)
    breaker.record(breaker.admit(), S)
    fail(breaker, 2)
    assert breaker.state is BreakerState.CLOSED
    fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN


def test_open_breaker_rejects_fast_with_retry_after(clock, fresh_metrics):
    breaker = make(clock, fresh_metrics)
    fail(breaker, 3)
    clock.advance(4.0)
    with pytest.raises(CircuitOpenError) as caught:
        breaker.admit()
    assert caught.value.breaker == "trading"
    assert caught.value.retry_after == pytest.approx(6.0)
    assert isinstance(caught.value, pybreaker.CircuitBreakerError)


def test_trial_call_goes_through_after_reset_timeout_and_closes(clock, fresh_metrics):
    breaker = make(clock, fresh_metrics)
    fail(breaker, 3)
    clock.advance(10.0)
    permit = breaker.admit()
    assert permit.trial and breaker.state is BreakerState.HALF_OPEN
    breaker.record(permit, S)
    assert breaker.state is BreakerState.CLOSED
    assert transitions(fresh_metrics) == {
        ("closed", "open"): 1, ("open", "half_open"): 1, ("half_open", "closed"): 1
    }


def test_half_open_admits_only_the_configured_trial_calls(clock, fresh_metrics):
    breaker = make(clock, fresh_metrics, half_open_calls=2, success_threshold=3)
    fail(breaker, 3)
    clock.advance(10.0)
    first, second = breaker.admit(), breaker.admit()
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    breaker.record(first, S)
    third = breaker.admit()
    breaker.record(second, S)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record(third, S)
    assert breaker.state is BreakerState.CLOSED


def test_failed_trial_reopens_for_a_new_reset_timeout(clock, fresh_metrics):
    breaker = make(clock, fresh_metrics)
    fail(breaker, 3)
    clock.advance(10.0)
    breaker.record(breaker.admit(), F)
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after() == pytest.approx(10.0)


def test_late_results_after_a_state_change_are_ignored(clock, fresh_metrics):
    breaker = make(clock, fresh_metrics)
    slow = [breaker.admit() for _ in range(5)]
    for permit in slow[:3]:
        breaker.record(permit, F)
    assert breaker.state is BreakerState.OPEN
    opened_retry = breaker.retry_after()
    clock.advance(1.0)
    # the stragglers neither re-trip the breaker nor extend its open time
    for permit in slow[3:]:
        breaker.record(permit, F)
    assert breaker.retry_after() == pytest.approx(opened_retry - 1.0)
    assert transitions(fresh_metrics) == {("closed", "open"): 1}
    outcomes = {
        p.attributes[IG_BREAKER_OUTCOME]: p.value
        for p in fresh_metrics.points(BREAKER_CALLS.name)
    }
    assert outcomes == {"failure": 3, "ignored": 2}


def test_late_success_from_before_opening_does_not_close(clock, fresh_metrics):
    breaker = make(clock, fresh_metrics)
    early = breaker.admit()
    fail(breaker, 3)
    clock.advance(10.0)
    trial = breaker.admit()
    breaker.record(early, S)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record(trial, S)
    assert breaker.state is BreakerState.CLOSED


def test_ignored_outcome_neither_counts_nor_resets(clock, fresh_metrics):
    breaker = make(clock, fresh_metrics)
    fail(breaker, 2)
    breaker.record(breaker.admit(), IGN)
    assert breaker.fail_counter == 2
    fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN


def test_force_open_holds_until_force_close(clock, fresh_metrics):
    breaker = make(clock, fresh_metrics)
    breaker.force_open()
    clock.advance(1_000.0)
    with pytest.raises(CircuitOpenError):
        breaker.admit()
    breaker.force_close()
    assert breaker.state is BreakerState.CLOSED
    breaker.record(breaker.admit(), S)


def test_force_open_twice_emits_one_transition(clock, fresh_metrics, telemetry):
    breaker = make(clock, fresh_metrics, name="force-twice")
    breaker.force_open()
    breaker.force_open()
    breaker.force_close()
    breaker.force_close()
    assert transitions(fresh_metrics) == {("closed", "open"): 1, ("open", "closed"): 1}
    events = telemetry.events(EVENT_BREAKER_STATE_CHANGE)
    mine = [e for e in events if e.attributes[IG_BREAKER_NAME] == "force-twice"]
    assert [(e.attributes[IG_BREAKER_TO], e.severity_text) for e in mine] == [
        ("open", "ERROR"), ("closed", "INFO")
    ]


def test_state_change_events_carry_severity_per_state(clock, fresh_metrics, telemetry):
    breaker = make(clock, fresh_metrics, name="severity")
    fail(breaker, 3)
    clock.advance(10.0)
    breaker.record(breaker.admit(), S)
    events = telemetry.events(EVENT_BREAKER_STATE_CHANGE)
    assert [(e.attributes[IG_BREAKER_TO], e.severity_text) for e in events] == [
        ("open", "ERROR"), ("half_open", "WARN"), ("closed", "INFO")
    ]


def test_state_gauge_reports_one_for_current_state(clock, fresh_metrics):
    breaker = make(clock, fresh_metrics, name="gauge")
    fail(breaker, 3)
    values = {
        p.attributes[IG_BREAKER_STATE]: p.value
        for p in fresh_metrics.points(BREAKER_STATE.name)
        if p.attributes[IG_BREAKER_NAME] == "gauge"
    }
    assert values == {"closed": 0, "open": 1, "half_open": 0}


def test_rejections_are_counted(clock, fresh_metrics):
    breaker = make(clock, fresh_metrics)
    fail(breaker, 3)
    for _ in range(4):
        with pytest.raises(CircuitOpenError):
            breaker.admit()
    rejected = [
        p.value for p in fresh_metrics.points(BREAKER_CALLS.name)
        if p.attributes[IG_BREAKER_OUTCOME] == "rejected"
    ]
    assert rejected == [4]


def test_excluded_exceptions_are_ignored_by_call(clock, fresh_metrics):
    breaker = make(clock, fresh_metrics, exclude=[KeyError])
    for _ in range(5):
        with pytest.raises(KeyError):
            breaker.call(lambda: {}["missing"])
    assert breaker.state is BreakerState.CLOSED
    for _ in range(3):
        with pytest.raises(ZeroDivisionError):
            breaker.call(lambda: 1 / 0)
    assert breaker.state is BreakerState.OPEN


async def test_coroutines_are_counted_when_awaited(clock, fresh_metrics):
    breaker = make(clock, fresh_metrics)

    async def broken() -> None:
        await asyncio.sleep(0)
        raise ConnectionError("down")

    for _ in range(3):
        with pytest.raises(ConnectionError):
            await breaker.acall(broken)
    assert breaker.state is BreakerState.OPEN


async def test_concurrent_half_open_coroutines_get_one_trial(clock, fresh_metrics):
    breaker = make(clock, fresh_metrics)
    fail(breaker, 3)
    clock.advance(10.0)
    gate = asyncio.Event()

    async def trial() -> str:
        await gate.wait()
        return "ok"

    tasks = [asyncio.create_task(breaker.acall(trial)) for _ in range(10)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results.count("ok") == 1
    assert sum(isinstance(r, CircuitOpenError) for r in results) == 9
    assert breaker.state is BreakerState.CLOSED


async def test_cancelled_call_is_ignored(clock, fresh_metrics):
    breaker = make(clock, fresh_metrics, fail_max=1)

    async def hang() -> None:
        await asyncio.sleep(3600)

    task = asyncio.create_task(breaker.acall(hang))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is BreakerState.CLOSED

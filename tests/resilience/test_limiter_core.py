"""The sliding-window allowance core, driven by a fake clock."""

from __future__ import annotations

import random
from bisect import bisect_left

import pytest

from ig_otel._limiter import (
    AllowanceLimits,
    Budget,
    LocalAllowanceBook,
    SlidingWindowLog,
    budgets_for,
)
from ig_otel._telemetry import Allowance


def max_in_any_window(stamps: list[float], window: float) -> int:
    """Most admissions inside any half-open interval [s, s + window)."""
    stamps = sorted(stamps)
    best = 0
    for i, start in enumerate(stamps):
        best = max(best, bisect_left(stamps, start + window) - i)
    return best


def test_window_admits_limit_then_refuses_with_retry_after() -> None:
    log = SlidingWindowLog(limit=3, window=60.0)
    assert [log.try_admit(t, 1) for t in (0.0, 10.0, 20.0)] == [0.0, 0.0, 0.0]
    assert log.try_admit(30.0, 1) == pytest.approx(30.0)
    assert log.try_admit(59.9, 1) == pytest.approx(0.1)
    assert log.try_admit(60.0, 1) == 0.0


@pytest.mark.parametrize("seed", range(20))
def test_window_never_admits_more_than_limit_in_any_rolling_window(seed: int) -> None:
    rng = random.Random(seed)
    limit, window = rng.randint(1, 12), rng.choice([1.0, 5.0, 60.0])
    log = SlidingWindowLog(limit, window)
    now, admitted = 0.0, []
    for _ in range(2_000):
        # bursts of near-simultaneous calls with random gaps between them
        now += rng.choice([0.0, 0.0, 0.001, rng.random() * window / 3])
        if log.try_admit(now, 1) == 0.0:
            admitted.append(now)
    assert max_in_any_window(admitted, window) == limit


def test_waiting_exactly_retry_after_always_fits() -> None:
    rng = random.Random(7)
    log = SlidingWindowLog(limit=5, window=10.0)
    now, admitted = 0.0, 0
    for _ in range(500):
        points = rng.randint(1, 5)
        wait = log.try_admit(now, points)
        if wait:
            now += wait
            assert log.try_admit(now, points) == 0.0
        admitted += 1
        now += rng.random()
    assert admitted == 500


def test_weighted_points_are_all_or_nothing() -> None:
    log = SlidingWindowLog(limit=10_000, window=7 * 86400.0)
    assert log.try_admit(0.0, 9_000) == 0.0
    assert log.try_admit(1.0, 2_000) > 0.0
    assert log.usage(1.0) == 9_000
    assert log.try_admit(2.0, 1_000) == 0.0


def test_request_larger_than_limit_never_fits() -> None:
    assert SlidingWindowLog(5, 1.0).wait_for(0.0, 6) == float("inf")


def test_drain_marks_budget_spent_for_a_full_window() -> None:
    log = SlidingWindowLog(limit=30, window=60.0)
    log.try_admit(0.0, 1)
    log.drain(5.0)
    assert log.utilization(5.0) == 1.0
    assert log.try_admit(64.9, 1) > 0.0
    assert log.try_admit(65.0, 1) == 0.0


def test_observe_records_beyond_limit_so_utilization_exceeds_one(clock) -> None:
    book = LocalAllowanceBook(AllowanceLimits(trading=4, window=10.0), clock)
    for _ in range(6):
        assert book.acquire(budgets_for(Allowance.TRADING), 1, enforce=False).admitted
    assert book.utilization()[Budget.TRADING] == pytest.approx(1.5)


def test_non_trading_takes_app_and_account_budget_together(clock) -> None:
    limits = AllowanceLimits(non_trading_app=5, non_trading_account=3, window=10.0)
    book = LocalAllowanceBook(limits, clock)
    nt = budgets_for(Allowance.NON_TRADING)
    results = [book.acquire(nt, 1, enforce=True).admitted for _ in range(4)]
    assert results == [True, True, True, False]
    # the refused call spent nothing from the app budget either
    assert book.utilization()[Budget.NON_TRADING_APP] == pytest.approx(3 / 5)


def test_session_calls_count_as_non_trading(clock) -> None:
    book = LocalAllowanceBook(AllowanceLimits(non_trading_account=1), clock)
    assert book.acquire(budgets_for(Allowance.SESSION), 1, enforce=True).admitted
    nt = budgets_for(Allowance.NON_TRADING)
    assert not book.acquire(nt, 1, enforce=True).admitted


def test_refusal_reports_the_longest_wait_of_its_budgets(clock) -> None:
    limits = AllowanceLimits(non_trading_app=2, non_trading_account=1, window=10.0)
    book = LocalAllowanceBook(limits, clock)
    nt = budgets_for(Allowance.NON_TRADING)
    book.acquire(nt, 1, enforce=True)
    clock.advance(4.0)
    decision = book.acquire(nt, 1, enforce=True)
    assert not decision.admitted
    assert decision.retry_after == pytest.approx(6.0)


def test_limits_read_from_operations_application_body() -> None:
    body = {
        "allowanceApplicationOverall": 60,
        "allowanceAccountOverall": 60,
        "allowanceAccountTrading": 100,
        "allowanceAccountHistoricalData": 10000,
        "concurrentSubscriptionsLimit": 40,
    }
    limits = AllowanceLimits.from_application(body, base=AllowanceLimits(window=5.0))
    assert limits.non_trading_account == 60
    assert limits.window == 5.0


def test_set_limits_keeps_spent_points(clock) -> None:
    book = LocalAllowanceBook(AllowanceLimits(trading=10), clock)
    for _ in range(5):
        book.acquire((Budget.TRADING,), 1, enforce=True)
    book.set_limits(AllowanceLimits(trading=5))
    assert not book.acquire((Budget.TRADING,), 1, enforce=True).admitted


def test_unknown_override_key_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown allowance keys: bogus"):
        AllowanceLimits().with_overrides({"bogus": 1})

"""IG allowance accounting: an exact sliding-window log, with no I/O.

IG counts requests per rolling minute (and historical price points per
week) and answers 403 once a budget is spent. A token bucket that starts
full lets through up to about twice its limit inside one window, so this
core keeps a log of every admission instead: a call is admitted only when
the points logged in the last ``window`` seconds plus its own fit in the
limit. That holds for *any* rolling window, not just aligned ones.

The core takes the time as an argument (seconds on any monotonic scale),
so tests drive it with a fake clock; adapters (:mod:`ig_otel._guard`, the
Redis store in :mod:`ig_otel._redis_limiter`) add waiting, telemetry and
sharing.

Budgets of one allowance class::

    trading       account trading budget              (100 / minute)
    non_trading   app budget AND account budget        (60 and 30 / minute)
    session       counted as non_trading
    historical    account historical points            (10,000 / week)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ig_otel._telemetry import Allowance

__all__ = [
    "AllowanceLimits",
    "Budget",
    "Decision",
    "LocalAllowanceBook",
    "SlidingWindowLog",
    "budgets_for",
]

MINUTE = 60.0
WEEK = 7 * 24 * 3600.0


class Budget:
    """Names of the budgets IG keeps, one sliding window each."""

    TRADING = "trading"
    NON_TRADING_APP = "non_trading_app"
    NON_TRADING_ACCOUNT = "non_trading_account"
    HISTORICAL = "historical"

    ALL = (TRADING, NON_TRADING_APP, NON_TRADING_ACCOUNT, HISTORICAL)


_BUDGETS_BY_ALLOWANCE: dict[Allowance, tuple[str, ...]] = {
    Allowance.TRADING: (Budget.TRADING,),
    Allowance.NON_TRADING: (Budget.NON_TRADING_APP, Budget.NON_TRADING_ACCOUNT),
    Allowance.SESSION: (Budget.NON_TRADING_APP, Budget.NON_TRADING_ACCOUNT),
    Allowance.HISTORICAL: (Budget.HISTORICAL,),
}

#: The allowance a budget reports under (``ig.allowance``) and its scope.
BUDGET_ALLOWANCE: dict[str, tuple[Allowance, str | None]] = {
    Budget.TRADING: (Allowance.TRADING, None),
    Budget.NON_TRADING_APP: (Allowance.NON_TRADING, "app"),
    Budget.NON_TRADING_ACCOUNT: (Allowance.NON_TRADING, "account"),
    Budget.HISTORICAL: (Allowance.HISTORICAL, None),
}

#: IG error codes that say a budget is spent (HTTP 403).
EXCEEDED_CODES: dict[str, tuple[str, ...]] = {
    "error.public-api.exceeded-api-key-allowance": (Budget.NON_TRADING_APP,),
    "error.public-api.exceeded-account-allowance": (Budget.NON_TRADING_ACCOUNT,),
    "error.public-api.exceeded-account-trading-allowance": (Budget.TRADING,),
    "error.public-api.exceeded-account-historical-data-allowance": (
        Budget.HISTORICAL,
    ),
}


def budgets_for(allowance: Allowance) -> tuple[str, ...]:
    """Budgets one call of an allowance class spends, all or none."""
    return _BUDGETS_BY_ALLOWANCE[Allowance(allowance)]


@dataclass(frozen=True)
class AllowanceLimits:
    """Size of each IG budget and the length of its window.

    Defaults are IG's published live allowances. Windows are configurable so
    tests and rehearsals can use seconds instead of minutes.

    Attributes:
        trading: Trading requests per window, per account.
        non_trading_app: Non-trading requests per window, per API key.
        non_trading_account: Non-trading requests per window, per account.
        historical: Historical price points per historical window.
        window: Length of the request windows, in seconds.
        historical_window: Length of the historical window, in seconds.
    """

    trading: int = 100
    non_trading_app: int = 60
    non_trading_account: int = 30
    historical: int = 10_000
    window: float = MINUTE
    historical_window: float = WEEK

    def limit(self, budget: str) -> int:
        """Points one window of ``budget`` holds."""
        return int(getattr(self, budget))

    def window_of(self, budget: str) -> float:
        """Seconds a spent point of ``budget`` stays in its window."""
        if budget == Budget.HISTORICAL:
            return self.historical_window
        return self.window

    def with_overrides(self, overrides: Mapping[str, int]) -> AllowanceLimits:
        """A copy with some limits replaced (keys are :class:`Budget` names)."""
        unknown = set(overrides) - set(Budget.ALL)
        if unknown:
            raise ValueError(f"unknown allowance keys: {', '.join(sorted(unknown))}")
        return replace(self, **{k: int(v) for k, v in overrides.items()})

    @classmethod
    def from_application(
        cls, body: Mapping[str, Any], *, base: AllowanceLimits | None = None
    ) -> AllowanceLimits:
        """Limits from a ``GET /operations/application`` response body.

        Fields missing from the body keep the values of ``base`` (or the
        published defaults).
        """
        fields = {
            "allowanceAccountTrading": Budget.TRADING,
            "allowanceApplicationOverall": Budget.NON_TRADING_APP,
            "allowanceAccountOverall": Budget.NON_TRADING_ACCOUNT,
            "allowanceAccountHistoricalData": Budget.HISTORICAL,
        }
        found = {
            budget: int(body[name])
            for name, budget in fields.items()
            if isinstance(body.get(name), int) and body[name] > 0
        }
        return (base or cls()).with_overrides(found)


@dataclass(frozen=True)
class Decision:
    """Result of asking for an allowance.

    Attributes:
        admitted: Whether the points were logged.
        retry_after: Seconds until the request would fit (0 when admitted).
        usage: Points in each budget's window after the decision.
        at: When the book decided, on the book's own clock.
    """

    admitted: bool
    retry_after: float = 0.0
    usage: Mapping[str, int] = field(default_factory=dict)
    at: float = 0.0


class SlidingWindowLog:
    """Points admitted in the last ``window`` seconds, exactly.

    A point logged at time ``t`` counts until ``t + window``; so in any
    half-open interval of length ``window`` at most ``limit`` points are
    admitted by :meth:`try_admit`. :meth:`record` logs without checking
    (observe mode), so usage may go above the limit there.
    """

    __slots__ = ("_entries", "_used", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a window needs a limit of at least 1 and a length > 0")
        self.limit = limit
        self.window = window
        self._entries: deque[tuple[float, int]] = deque()
        self._used = 0

    def usage(self, now: float) -> int:
        """Points still inside the window at ``now``."""
        self._expire(now)
        return self._used

    def utilization(self, now: float) -> float:
        """Usage as a share of the limit (above 1 when overrun)."""
        return self.usage(now) / self.limit

    def wait_for(self, now: float, points: int) -> float:
        """Seconds until ``points`` would fit; 0 if they fit now.

        A request larger than the whole limit never fits: ``inf``.
        """
        self._expire(now)
        if points > self.limit:
            return float("inf")
        excess = self._used + points - self.limit
        if excess <= 0:
            return 0.0
        # The oldest entries leave first: find the one whose expiry frees enough.
        freed = 0
        for stamp, spent in self._entries:
            freed += spent
            if freed >= excess:
                return max(stamp + self.window - now, 0.0)
        return self.window

    def record(self, now: float, points: int) -> None:
        """Log ``points`` at ``now`` whether or not they fit."""
        self._expire(now)
        if self._entries and now < self._entries[-1][0]:
            now = self._entries[-1][0]
        self._entries.append((now, points))
        self._used += points

    def try_admit(self, now: float, points: int) -> float:
        """Log ``points`` if they fit; return 0, or the seconds to wait."""
        wait = self.wait_for(now, points)
        if wait == 0.0:
            self.record(now, points)
        return wait

    def drain(self, now: float) -> None:
        """Mark the budget spent from ``now`` for one full window.

        IG said the budget is gone, so older entries, which would leave the
        window sooner, are replaced by one entry that fills it until
        ``now + window``.
        """
        self._expire(now)
        if self._entries and now < self._entries[-1][0]:
            now = self._entries[-1][0]
        spent = max(self._used, self.limit)
        self._entries.clear()
        self._entries.append((now, spent))
        self._used = spent

    def _expire(self, now: float) -> None:
        entries = self._entries
        horizon = now - self.window
        while entries and entries[0][0] <= horizon:
            self._used -= entries.popleft()[1]


class LocalAllowanceBook:
    """All IG budgets of one process, checked and spent atomically.

    Thread-safe: one lock covers every budget, so a non-trading call takes
    from the app and the account budget together or from neither. The clock
    is read under that lock, so log entries are stamped in admission order.

    Args:
        limits: Budget sizes and windows.
        clock: Seconds on a monotonic scale (``time.monotonic`` by default).
    """

    def __init__(
        self,
        limits: AllowanceLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self.clock = clock
        self._limits = limits or AllowanceLimits()
        self._logs = {budget: self._new_log(budget) for budget in Budget.ALL}

    @property
    def limits(self) -> AllowanceLimits:
        """Limits in force."""
        return self._limits

    def set_limits(self, limits: AllowanceLimits) -> None:
        """Change the limits, keeping what was already spent."""
        with self._lock:
            self._limits = limits
            for budget, log in self._logs.items():
                log.limit = limits.limit(budget)
                log.window = limits.window_of(budget)

    def acquire(
        self, budgets: tuple[str, ...], points: int, *, enforce: bool
    ) -> Decision:
        """Spend ``points`` from every budget in ``budgets``, or from none.

        With ``enforce`` false the points are always logged (observe mode)
        and the decision is always an admission.
        """
        with self._lock:
            now = self.clock()
            logs = [self._logs[b] for b in budgets]
            # Observe mode never waits: skip the search, which grows with overrun.
            if enforce:
                wait = max((log.wait_for(now, points) for log in logs), default=0.0)
                if wait > 0.0:
                    return Decision(False, wait, self._usage(budgets, now), now)
            for log in logs:
                log.record(now, points)
            return Decision(True, 0.0, self._usage(budgets, now), now)

    def drain(self, budgets: tuple[str, ...]) -> None:
        """Mark budgets spent for a full window (IG said they are)."""
        with self._lock:
            now = self.clock()
            for budget in budgets:
                self._logs[budget].drain(now)

    def utilization(self) -> dict[str, float]:
        """Share of each budget in use now."""
        with self._lock:
            now = self.clock()
            return {b: log.utilization(now) for b, log in self._logs.items()}

    def _usage(self, budgets: tuple[str, ...], now: float) -> dict[str, int]:
        return {b: self._logs[b].usage(now) for b in budgets}

    def _new_log(self, budget: str) -> SlidingWindowLog:
        return SlidingWindowLog(
            self._limits.limit(budget), self._limits.window_of(budget)
        )

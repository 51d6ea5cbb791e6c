"""IG allowances: rolling per-minute request windows and weekly price points.

Pure bookkeeping with the clock passed in. IG publishes four limits (per
application non-trading, per account trading, per account non-trading,
weekly historical price points) and answers 403 with a code naming the one
that is spent. Windows here slide over the last 60 seconds, as trading-ig
assumes; a refused request is not counted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

__all__ = [
    "APP_ALLOWANCE_EXCEEDED",
    "ACCOUNT_ALLOWANCE_EXCEEDED",
    "AllowanceBook",
    "AllowanceLimits",
    "HISTORICAL_ALLOWANCE_EXCEEDED",
    "PointsAllowance",
    "RollingWindow",
    "TRADING_ALLOWANCE_EXCEEDED",
]

APP_ALLOWANCE_EXCEEDED = "error.public-api.exceeded-api-key-allowance"
ACCOUNT_ALLOWANCE_EXCEEDED = "error.public-api.exceeded-account-allowance"
TRADING_ALLOWANCE_EXCEEDED = "error.public-api.exceeded-account-trading-allowance"
HISTORICAL_ALLOWANCE_EXCEEDED = (
    "error.public-api.exceeded-account-historical-data-allowance"
)

MINUTE = 60.0
WEEK = 7 * 24 * 3600.0


@dataclass(frozen=True)
class AllowanceLimits:
    """IG's published LIVE limits (requests per minute, points per week).

    Attributes:
        app_non_trading: Non-trading requests per minute for one API key.
        account_trading: Trading requests per minute for one account.
        account_non_trading: Non-trading requests per minute for one account.
        historical_points: Price points per week for one key and account.
        subscriptions: Concurrent stream subscriptions (reported only).
    """

    app_non_trading: int = 60
    account_trading: int = 100
    account_non_trading: int = 30
    historical_points: int = 10_000
    subscriptions: int = 40

    def with_overrides(self, **overrides: int | None) -> AllowanceLimits:
        """A copy with the given limits replaced (None values are ignored)."""
        changes = {key: value for key, value in overrides.items() if value is not None}
        return replace(self, **changes)


class RollingWindow:
    """Requests accepted in the last ``window`` seconds, against a limit."""

    __slots__ = ("window", "_stamps")

    def __init__(self, window: float = MINUTE) -> None:
        self.window = window
        self._stamps: deque[float] = deque()

    def used(self, now: float) -> int:
        """How many requests the window holds at ``now``."""
        horizon = now - self.window
        stamps = self._stamps
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        return len(stamps)

    def allows(self, limit: int, now: float) -> bool:
        """Whether one more request fits under ``limit``."""
        return self.used(now) < limit

    def record(self, now: float) -> None:
        """Count one accepted request."""
        self._stamps.append(now)

    def retry_after(self, now: float) -> float:
        """Seconds until the oldest counted request leaves the window."""
        if not self._stamps:
            return 0.0
        return max(0.0, self._stamps[0] + self.window - now)


class PointsAllowance:
    """Weekly historical price points: spent by points returned, reset weekly."""

    __slots__ = ("period", "_start", "_spent")

    def __init__(self, start: float, period: float = WEEK) -> None:
        self.period = period
        self._start = start
        self._spent = 0

    def _roll(self, now: float) -> None:
        if now - self._start >= self.period:
            elapsed = (now - self._start) // self.period
            self._start += elapsed * self.period
            self._spent = 0

    def remaining(self, total: int, now: float) -> int:
        """Points left in the current period."""
        self._roll(now)
        return max(0, total - self._spent)

    def spend(self, points: int, now: float) -> None:
        """Take ``points`` (never below zero remaining)."""
        self._roll(now)
        self._spent += max(0, points)

    def expiry(self, now: float) -> int:
        """Whole seconds until the period resets (IG's ``allowanceExpiry``)."""
        self._roll(now)
        return int(self._start + self.period - now)


class AllowanceBook:
    """Every allowance of the simulator, keyed by API key and account id.

    ``check_*`` methods answer the IG error code of the spent allowance, or
    None after recording the request.
    """

    def __init__(self, limits: AllowanceLimits | None = None) -> None:
        self.limits = limits or AllowanceLimits()
        self._app: dict[str, RollingWindow] = {}
        self._account: dict[str, RollingWindow] = {}
        self._trading: dict[str, RollingWindow] = {}
        self._points: dict[tuple[str, str], PointsAllowance] = {}

    @staticmethod
    def _window(table: dict[str, RollingWindow], key: str) -> RollingWindow:
        window = table.get(key)
        if window is None:
            window = table[key] = RollingWindow()
        return window

    def check_non_trading(
        self, api_key: str, account_id: str, now: float, limits: AllowanceLimits
    ) -> str | None:
        """Count one non-trading request, or the code of the spent allowance."""
        account = self._window(self._account, account_id)
        if not account.allows(limits.account_non_trading, now):
            return ACCOUNT_ALLOWANCE_EXCEEDED
        app = self._window(self._app, api_key)
        if not app.allows(limits.app_non_trading, now):
            return APP_ALLOWANCE_EXCEEDED
        account.record(now)
        app.record(now)
        return None

    def check_trading(
        self, account_id: str, now: float, limits: AllowanceLimits
    ) -> str | None:
        """Count one trading request, or the trading allowance code."""
        trading = self._window(self._trading, account_id)
        if not trading.allows(limits.account_trading, now):
            return TRADING_ALLOWANCE_EXCEEDED
        trading.record(now)
        return None

    def points(self, api_key: str, account_id: str, now: float) -> PointsAllowance:
        """The weekly points allowance of one key and account."""
        key = (api_key, account_id)
        allowance = self._points.get(key)
        if allowance is None:
            allowance = self._points[key] = PointsAllowance(now)
        return allowance

    def usage(self, now: float) -> dict[str, dict[str, int]]:
        """Requests counted in the current minute, per allowance and key."""
        return {
            "app_non_trading": {k: w.used(now) for k, w in self._app.items()},
            "account_non_trading": {k: w.used(now) for k, w in self._account.items()},
            "account_trading": {k: w.used(now) for k, w in self._trading.items()},
        }

    def reset(self) -> None:
        """Forget every counted request and spent point."""
        self._app.clear()
        self._account.clear()
        self._trading.clear()
        self._points.clear()

"""IG allowance budgets (and breaker state) shared between processes in Redis.

Several bots on one API key or account share one set of IG budgets, so
their limiter must too. :class:`SharedAllowanceBook` keeps each budget as a
sliding-window log in a Redis sorted set (score: admission time in ms,
member: a unique id and the points spent) plus a running sum, and checks
and spends every budget of a call in one Lua script, so admissions are
atomic across processes and exact over any rolling window. Time comes from
the Redis server (``TIME``), so hosts with skewed clocks still agree.

When Redis cannot be reached the book logs ONE warning and limits locally
(the local book has mirrored this process's own admissions, so it starts
from what this process spent); it tries Redis again every few seconds and
logs once more, at INFO, when shared limiting is back. During the outage
each process only knows its own traffic, so several processes together can
exceed the budget.

Keys share one hash tag, ``{ig_otel:<namespace>}``, so the script also runs
on Redis Cluster.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pybreaker

from ig_otel._limiter import AllowanceLimits, Budget, Decision, LocalAllowanceBook

__all__ = ["SharedAllowanceBook", "shared_breaker_storage"]

_log = logging.getLogger(__name__)

# Every budget takes two keys (log, sum) and two arguments (limit, window in ms).
# Entries whose score is at or before now - window have left the window.
_EXPIRE = """
local function expire(log, sum, horizon)
  local old = redis.call('ZRANGEBYSCORE', log, '-inf', horizon)
  if #old > 0 then
    local freed = 0
    for _, member in ipairs(old) do
      freed = freed + tonumber(string.match(member, ':(%d+)$'))
    end
    redis.call('ZREMRANGEBYSCORE', log, '-inf', horizon)
    redis.call('DECRBY', sum, freed)
  end
  return tonumber(redis.call('GET', sum) or '0')
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

_ACQUIRE = _EXPIRE + """
local points = tonumber(ARGV[1])
local enforce = ARGV[2] == '1'
local member = ARGV[3] .. ':' .. ARGV[1]
local count = #KEYS / 2
local used = {}
local wait = 0
for i = 1, count do
  local log, sum = KEYS[2 * i - 1], KEYS[2 * i]
  local limit, window = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  used[i] = expire(log, sum, now - window)
  local excess = used[i] + points - limit
  if enforce and points > limit then
    wait = -1
  elseif enforce and excess > 0 and wait >= 0 then
    local entries = redis.call('ZRANGE', log, 0, -1, 'WITHSCORES')
    local freed, due = 0, window
    for j = 1, #entries, 2 do
      freed = freed + tonumber(string.match(entries[j], ':(%d+)$'))
      if freed >= excess then
        due = tonumber(entries[j + 1]) + window - now
        break
      end
    end
    if due < 1 then due = 1 end
    if due > wait then wait = due end
  end
end
if wait ~= 0 then
  return {0, wait, now, unpack(used)}
end
for i = 1, count do
  local log, sum = KEYS[2 * i - 1], KEYS[2 * i]
  local window = tonumber(ARGV[3 + 2 * i])
  redis.call('ZADD', log, now, member)
  used[i] = redis.call('INCRBY', sum, points)
  redis.call('PEXPIRE', log, window)
  redis.call('PEXPIRE', sum, window)
end
return {1, 0, now, unpack(used)}
"""

_DRAIN = _EXPIRE + """
local count = #KEYS / 2
for i = 1, count do
  local log, sum = KEYS[2 * i - 1], KEYS[2 * i]
  local limit, window = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  local spent = math.max(expire(log, sum, now - window), limit)
  redis.call('DEL', log)
  redis.call('ZADD', log, now, ARGV[3] .. ':' .. spent)
  redis.call('SET', sum, spent, 'PX', window)
  redis.call('PEXPIRE', log, window)
end
return count
"""

_USAGE = _EXPIRE + """
local used = {}
for i = 1, #KEYS / 2 do
  local window = tonumber(ARGV[3 + 2 * i])
  used[i] = expire(KEYS[2 * i - 1], KEYS[2 * i], now - window)
end
return used
"""


class SharedAllowanceBook:
    """IG budgets in Redis, shared by every process using the same namespace.

    Args:
        client: A redis-py ``Redis`` client (short socket timeouts advised).
        limits: Budget sizes and windows; every process must agree on them.
        namespace: Separates budgets of different API keys or accounts. Use
            a role name or a hash, never a raw account id or API key.
        retry_interval: Seconds between attempts to reach Redis again after
            an outage.
        clock: Monotonic seconds, for the local fallback and retry timing.
    """

    def __init__(
        self,
        client: Any,
        limits: AllowanceLimits | None = None,
        *,
        namespace: str = "default",
        retry_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._local = LocalAllowanceBook(limits, clock)
        self._prefix = f"{{ig_otel:{namespace}}}:allowance"
        self._retry_interval = retry_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._degraded = False
        self._retry_at = 0.0
        self._acquire = client.register_script(_ACQUIRE)
        self._drain = client.register_script(_DRAIN)
        self._usage = client.register_script(_USAGE)

    @property
    def limits(self) -> AllowanceLimits:
        """Limits in force."""
        return self._local.limits

    @property
    def degraded(self) -> bool:
        """Whether Redis is unreachable and limiting is local."""
        return self._degraded

    def set_limits(self, limits: AllowanceLimits) -> None:
        """Change the limits (also of the local fallback)."""
        self._local.set_limits(limits)

    def acquire(
        self, budgets: tuple[str, ...], points: int, *, enforce: bool
    ) -> Decision:
        """Spend ``points`` from every budget, atomically across processes."""
        if self._redis_usable():
            keys, args = self._script_input(budgets, points, enforce)
            try:
                reply = self._acquire(keys=keys, args=args)
            except Exception as error:
                self._went_down(error)
            else:
                self._came_back()
                return self._decision(budgets, points, reply)
        return self._local.acquire(budgets, points, enforce=enforce)

    def drain(self, budgets: tuple[str, ...]) -> None:
        """Mark budgets spent for a full window, for every process."""
        self._local.drain(budgets)
        if not self._redis_usable():
            return
        keys, args = self._script_input(budgets, 0, False)
        try:
            self._drain(keys=keys, args=args)
        except Exception as error:
            self._went_down(error)
        else:
            self._came_back()

    def utilization(self) -> dict[str, float]:
        """Share of each budget in use, as Redis (or the fallback) sees it."""
        if self._redis_usable():
            budgets = Budget.ALL
            keys, args = self._script_input(budgets, 0, False)
            try:
                used = self._usage(keys=keys, args=args)
            except Exception as error:
                self._went_down(error)
            else:
                self._came_back()
                pairs = zip(budgets, used, strict=True)
                return {b: int(u) / self.limits.limit(b) for b, u in pairs}
        return self._local.utilization()

    def _decision(
        self, budgets: tuple[str, ...], points: int, reply: list[Any]
    ) -> Decision:
        admitted, wait_ms, now_ms, *used = (int(x) for x in reply)
        usage = dict(zip(budgets, used, strict=True))
        at = now_ms / 1000.0
        if admitted:
            # Mirror our own spending locally: the fallback starts from it.
            self._local.acquire(budgets, points, enforce=False)
            return Decision(True, 0.0, usage, at)
        wait = float("inf") if wait_ms < 0 else wait_ms / 1000.0
        return Decision(False, wait, usage, at)

    def _script_input(
        self, budgets: tuple[str, ...], points: int, enforce: bool
    ) -> tuple[list[str], list[Any]]:
        limits = self.limits
        keys: list[str] = []
        args: list[Any] = [points, 1 if enforce else 0, uuid.uuid4().hex]
        for budget in budgets:
            keys += [f"{self._prefix}:{budget}:log", f"{self._prefix}:{budget}:sum"]
            window_ms = max(int(limits.window_of(budget) * 1000), 1)
            args += [limits.limit(budget), window_ms]
        return keys, args

    def _redis_usable(self) -> bool:
        with self._lock:
            return not self._degraded or self._clock() >= self._retry_at

    def _went_down(self, error: BaseException) -> None:
        with self._lock:
            self._retry_at = self._clock() + self._retry_interval
            if self._degraded:
                return
            self._degraded = True
        _log.warning(
            "Redis unreachable (%s); IG allowances are limited per process "
            "until it is back", type(error).__name__,
        )

    def _came_back(self) -> None:
        with self._lock:
            if not self._degraded:
                return
            self._degraded = False
        _log.info("Redis reachable again; IG allowances are shared again")


class _OncePerOutageLogger:
    """Stands in for pybreaker's storage logger: one warning, then debug."""

    def __init__(self, interval: float = 60.0) -> None:
        self._interval = interval
        self._next = 0.0

    def exception(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + self._interval
            _log.warning("shared breaker state unavailable: " + message, *args)
        else:
            _log.debug("shared breaker state unavailable: " + message, *args)


class _SharedBreakerStorage(pybreaker.CircuitRedisStorage):
    logger = _OncePerOutageLogger()  # type: ignore[assignment]


def shared_breaker_storage(
    client: Any, breaker: str
) -> pybreaker.CircuitBreakerStorage:
    """pybreaker Redis storage for one breaker, in its own namespace.

    Falls back to in-memory state (with one warning) when Redis cannot be
    reached at start.
    """
    try:
        return _SharedBreakerStorage(
            pybreaker.STATE_CLOSED, client, namespace=f"ig_otel:breaker:{breaker}"
        )
    except Exception as error:
        _log.warning(
            "Redis unreachable (%s); breaker %s keeps its state in this process",
            type(error).__name__, breaker,
        )
        return pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)

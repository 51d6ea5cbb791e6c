"""Budgets and breaker state shared through a real Redis server."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time

import pytest

from ig_otel._breaker import CircuitBreaker
from ig_otel._limiter import AllowanceLimits, Budget
from ig_otel._redis_limiter import SharedAllowanceBook, shared_breaker_storage
from ig_otel._telemetry import BreakerOutcome, BreakerState

from .test_limiter_core import max_in_any_window

redis = pytest.importorskip("redis")

LIMIT, WINDOW, DURATION = 5, 0.5, 2.0

BOT = textwrap.dedent(
    """
    import json, sys, time
    import redis
    from ig_otel._limiter import AllowanceLimits
    from ig_otel._redis_limiter import SharedAllowanceBook

    port, limit, window, duration = sys.argv[1:5]
    client = redis.Redis(port=int(port), socket_timeout=2)
    book = SharedAllowanceBook(
        client, AllowanceLimits(trading=int(limit), window=float(window)),
        namespace="shared-test",
    )
    stamps, deadline = [], time.monotonic() + float(duration)
    for _ in range(100_000):
        if time.monotonic() >= deadline:
            break
        decision = book.acquire(("trading",), 1, enforce=True)
        if decision.admitted:
            stamps.append(decision.at)
        else:
            time.sleep(min(decision.retry_after, 0.05))
    print(json.dumps(stamps))
    """
)


def client_for(server):
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(
        port=server.port, socket_timeout=0.3, socket_connect_timeout=0.3,
        retry=Retry(NoBackoff(), 0),
    )


def test_two_processes_never_exceed_one_shared_budget(redis_server):
    args = [str(redis_server.port), str(LIMIT), str(WINDOW), str(DURATION)]
    bots = [
        subprocess.Popen(
            [sys.executable, "-c", BOT, *args], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [bot.communicate(timeout=30)[0] for bot in bots]
    assert [bot.returncode for bot in bots] == [0, 0]
    per_bot = [json.loads(output) for output in outputs]
    stamps = [stamp for bot in per_bot for stamp in bot]

    assert all(per_bot), "both processes got some of the budget"
    assert max_in_any_window(stamps, WINDOW) <= LIMIT
    # busy for the whole run: close to LIMIT per window, together
    assert len(stamps) >= LIMIT * (DURATION / WINDOW) * 0.75


def test_redis_outage_degrades_to_local_limiting_and_recovers(redis_server, caplog):
    limits = AllowanceLimits(trading=3, window=5.0)
    book = SharedAllowanceBook(client_for(redis_server), limits, retry_interval=0.2)
    trading = (Budget.TRADING,)
    assert book.acquire(trading, 1, enforce=True).admitted

    redis_server.stop()
    with caplog.at_level(logging.INFO, logger="ig_otel._redis_limiter"):
        # the local fallback still limits, starting from what we spent
        answers = [book.acquire(trading, 1, enforce=True).admitted for _ in range(5)]
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            book.acquire(trading, 1, enforce=True)
            book.utilization()
            time.sleep(0.05)
        assert book.degraded
        assert answers == [True, True, False, False, False]

        redis_server.start()
        deadline = time.monotonic() + 5.0
        while book.degraded and time.monotonic() < deadline:
            book.acquire(trading, 1, enforce=False)
            time.sleep(0.05)
    assert not book.degraded

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Redis unreachable" in warnings[0].getMessage()
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == ["Redis reachable again; IG allowances are shared again"]


def test_drain_is_seen_by_every_process(redis_server):
    limits = AllowanceLimits(non_trading_account=10, window=30.0)
    first = SharedAllowanceBook(client_for(redis_server), limits)
    second = SharedAllowanceBook(client_for(redis_server), limits)
    budgets = (Budget.NON_TRADING_APP, Budget.NON_TRADING_ACCOUNT)
    assert first.acquire(budgets, 1, enforce=True).admitted
    first.drain((Budget.NON_TRADING_ACCOUNT,))
    decision = second.acquire(budgets, 1, enforce=True)
    assert not decision.admitted and decision.retry_after > 29.0
    assert second.utilization()[Budget.NON_TRADING_ACCOUNT] == 1.0
    assert second.utilization()[Budget.NON_TRADING_APP] == pytest.approx(1 / 60)


def test_breaker_state_is_shared_through_redis(redis_server, fresh_metrics):
    def breaker() -> CircuitBreaker:
        storage = shared_breaker_storage(client_for(redis_server), "trading")
        return CircuitBreaker(
            "trading", fail_max=2, reset_timeout=30.0, storage=storage,
            meter_provider=fresh_metrics.provider,
        )

    here, there = breaker(), breaker()
    for _ in range(2):
        here.record(here.admit(), BreakerOutcome.FAILURE)
    assert here.state is BreakerState.OPEN
    assert there.state is BreakerState.OPEN
    with pytest.raises(Exception, match="open"):
        there.admit()
    there.force_close()
    assert here.state is BreakerState.CLOSED
    # other namespaces are untouched
    other = shared_breaker_storage(client_for(redis_server), "non_trading")
    assert other.state == "closed"

"""Breakers and allowance limits against the IG simulator's fault scenarios."""

from __future__ import annotations

import time

import httpx
import pytest

from ig_otel._config import load_config
from ig_otel._exceptions import AllowanceExhaustedError, CircuitOpenError
from ig_otel._guard import build_guard
from ig_otel._health import HealthRegistry
from ig_otel._limiter import AllowanceLimits
from ig_otel._pool import IGTransport
from ig_otel._telemetry import (
    ALLOWANCE_UTILIZATION,
    IG_ALLOWANCE,
    IG_ALLOWANCE_SCOPE,
    Allowance,
    BreakerState,
)
from ig_otel.simulator import Simulator

EXHAUSTED = AllowanceLimits(
    non_trading_app=10, non_trading_account=5, trading=5, historical=200
)


def logged_in(sim: Simulator, transport: IGTransport) -> httpx.Client:
    client = httpx.Client(
        transport=transport, base_url=sim.rest_url, timeout=5,
        headers={"X-IG-API-KEY": sim.api_key, "VERSION": "2"},
    )
    response = client.post(
        "/session", json={"identifier": sim.username, "password": sim.password}
    )
    assert response.status_code == 200, response.text
    client.headers["CST"] = response.headers["CST"]
    client.headers["X-SECURITY-TOKEN"] = response.headers["X-SECURITY-TOKEN"]
    return client


def test_outage_opens_breaker_rejects_fast_and_closes_after_recovery(fresh_metrics):
    config = load_config(
        {"OTEL_PYTHON_IG_RATE_LIMIT_MODE": "off"},
        breaker_fail_max=3, breaker_reset_timeout=0.5,
    )
    guard = build_guard(config, meter_provider=fresh_metrics.provider,
                        breakers=True, health=HealthRegistry())
    breaker = guard.breakers[Allowance.NON_TRADING]
    with Simulator(seed=3) as sim:
        client = logged_in(sim, IGTransport(guard))
        outage_seconds = 1.5
        sim.set_scenario("outage", seconds=outage_seconds)
        outage_ends = time.monotonic() + outage_seconds

        assert [client.get("/accounts").status_code for _ in range(3)] == [503] * 3
        assert breaker.state is BreakerState.OPEN
        served = sim.stats.requests.total()
        with pytest.raises(CircuitOpenError) as caught:
            client.get("/accounts")
        assert 0 < caught.value.retry_after <= 0.5
        assert sim.stats.requests.total() == served, "refused without a request"

        trial_sent = closed_at = None
        deadline = time.monotonic() + outage_seconds + 6.0
        while closed_at is None and time.monotonic() < deadline:
            try:
                response = client.get("/accounts")
            except CircuitOpenError:
                time.sleep(0.05)
                continue
            trial_sent = trial_sent or time.monotonic()
            if response.status_code == 200:
                closed_at = time.monotonic()
        client.close()

    assert trial_sent is not None
    assert closed_at is not None and closed_at - outage_ends < 5.0
    assert breaker.state is BreakerState.CLOSED


def bot_run(mode: str, fresh_metrics) -> tuple[list[int], int, dict]:
    """20 quick non-trading calls under the allowance-exhaustion scenario."""
    config = load_config({"OTEL_PYTHON_IG_RATE_LIMIT_MODE": mode},
                         rate_limit_max_wait=0.0)
    guard = build_guard(config, meter_provider=fresh_metrics.provider,
                        breakers=True, limits=EXHAUSTED, health=HealthRegistry())
    statuses: list[int] = []
    with Simulator(seed=4, scenarios=["allowance-exhaustion"]) as sim:
        client = logged_in(sim, IGTransport(guard))
        for _ in range(20):
            try:
                statuses.append(client.get("/accounts").status_code)
            except AllowanceExhaustedError:
                statuses.append(0)
        client.close()
        forbidden = sim.forbidden_sent
    shares = {
        (p.attributes[IG_ALLOWANCE], p.attributes.get(IG_ALLOWANCE_SCOPE)): p.value
        for p in fresh_metrics.points(ALLOWANCE_UTILIZATION.name)
    }
    return statuses, forbidden, shares


def test_enforce_mode_keeps_the_bot_inside_the_allowance(fresh_metrics):
    statuses, forbidden, shares = bot_run("enforce", fresh_metrics)
    assert forbidden == 0 and 403 not in statuses
    assert statuses.count(200) >= 3
    assert shares[("non_trading", "account")] <= 1.0


def test_observe_mode_lets_the_bot_overrun_and_shows_it(fresh_metrics):
    statuses, forbidden, shares = bot_run("observe", fresh_metrics)
    assert 0 not in statuses, "observe mode never refuses"
    assert forbidden > 0 and statuses.count(403) == forbidden
    assert shares[("non_trading", "account")] > 1.0

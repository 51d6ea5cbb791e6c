"""Health documents from real readings, and the tiny health server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from ig_otel._breaker import CircuitBreaker
from ig_otel._guard import AllowanceLimiter, Guard
from ig_otel._health import HEALTH_MEDIA_TYPE, HealthRegistry, HealthServer
from ig_otel._limiter import AllowanceLimits, LocalAllowanceBook
from ig_otel._telemetry import HEALTH_STATUS, IG_HEALTH_CHECK, Allowance, StreamStatus


@pytest.fixture
def setup(clock, fresh_metrics):
    registry = HealthRegistry(clock=clock, meter_provider=fresh_metrics.provider)
    breakers = {
        allowance: CircuitBreaker(
            allowance.value, fail_max=1, clock=clock,
            meter_provider=fresh_metrics.provider,
        )
        for allowance in (Allowance.TRADING, Allowance.NON_TRADING)
    }
    book = LocalAllowanceBook(AllowanceLimits(historical=10, window=10.0), clock)
    limiter = AllowanceLimiter(book, meter_provider=fresh_metrics.provider)
    guard = Guard(limiter, breakers, health=registry)
    return registry, guard


def get(url: str) -> tuple[int, dict, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, dict(response.headers), json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.load(error)


def test_all_closed_and_quiet_is_pass(setup):
    registry, guard = setup
    guard.settle(guard.admit(Allowance.TRADING), status_code=200, error_code=None,
                 error=None)
    document = registry.readiness()
    assert document["status"] == "pass"
    reading = document["checks"]["ig-trading:circuitBreaker"][0]
    assert reading["observedValue"] == "closed"
    assert reading["time"].endswith("Z")
    assert "ig-rest:lastSuccess" in document["checks"]


def test_open_trading_breaker_fails_readiness(setup):
    registry, guard = setup
    guard.settle(guard.admit(Allowance.TRADING), status_code=503, error_code=None,
                 error=None)
    document = registry.readiness()
    assert document["status"] == "fail"
    assert document["checks"]["ig-trading:circuitBreaker"][0]["status"] == "fail"
    assert document["checks"]["ig-rest:lastFailure"][0]["status"] == "warn"


def test_other_open_breaker_only_warns(setup):
    registry, guard = setup
    guard.breakers[Allowance.NON_TRADING].force_open()
    assert registry.readiness()["status"] == "warn"


def test_spent_historical_allowance_warns(setup):
    registry, guard = setup
    guard.admit(Allowance.HISTORICAL, points=10)
    document = registry.readiness()
    assert document["status"] == "warn"
    reading = document["checks"]["ig-allowance-historical:utilization"][0]
    assert reading["observedValue"] == 1.0 and reading["status"] == "warn"


def test_stream_not_connected_warns(setup):
    registry, _ = setup
    registry.set_stream_status("prices", StreamStatus.CONNECTED)
    assert registry.readiness()["status"] == "pass"
    registry.set_stream_status("prices", StreamStatus.STALLED)
    assert registry.readiness()["checks"]["ig-stream-prices:status"][0][
        "status"] == "warn"


def test_health_gauge_reports_each_check(setup, fresh_metrics):
    registry, guard = setup
    guard.breakers[Allowance.TRADING].force_open()
    values = {
        p.attributes[IG_HEALTH_CHECK]: p.value
        for p in fresh_metrics.points(HEALTH_STATUS.name)
    }
    assert values["readyz"] == 2
    assert values["ig-trading:circuitBreaker"] == 2
    assert values["ig-non_trading:circuitBreaker"] == 0


def test_server_answers_health_json_with_status_codes(setup):
    registry, guard = setup
    with HealthServer(registry=registry, max_age=3) as server:
        status, headers, body = get(server.url + "/livez")
        assert status == 200 and body["status"] == "pass"
        assert headers["Content-Type"] == HEALTH_MEDIA_TYPE
        assert headers["Cache-Control"] == "max-age=3"

        assert get(server.url + "/readyz")[0] == 200
        guard.breakers[Allowance.TRADING].force_open()
        status, _, body = get(server.url + "/readyz")
        assert status == 503 and body["status"] == "fail"
        assert get(server.url + "/healthz")[0] == 503
        assert get(server.url + "/livez")[0] == 200
        assert get(server.url + "/nope")[0] == 404

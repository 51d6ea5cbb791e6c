"""Pooled transports against a local keep-alive TLS server."""

from __future__ import annotations

import httpx
import pytest
import requests

from ig_otel._breaker import CircuitBreaker
from ig_otel._exceptions import AllowanceExhaustedError, CircuitOpenError
from ig_otel._guard import AllowanceLimiter, Guard
from ig_otel._health import HealthRegistry
from ig_otel._limiter import AllowanceLimits, LocalAllowanceBook
from ig_otel._pool import (
    GUARDED_ATTRIBUTE,
    GUARDED_EXTENSION,
    IGAsyncTransport,
    IGHTTPAdapter,
    IGTransport,
    guard_session,
)
from ig_otel._telemetry import (
    HTTP_CONNECTIONS_CREATED,
    SERVER_ADDRESS,
    Allowance,
    BreakerState,
)

from .tls_server import tls_server

EXCEEDED_ACCOUNT = "error.public-api.exceeded-account-allowance"


@pytest.fixture
def server(tmp_path):
    with tls_server(tmp_path) as running:
        yield running


@pytest.fixture
def guard(fresh_metrics) -> Guard:
    book = LocalAllowanceBook(AllowanceLimits(non_trading_account=1000))
    limiter = AllowanceLimiter(
        book, mode="enforce", max_wait=0.0, meter_provider=fresh_metrics.provider
    )
    breaker = CircuitBreaker(
        "non_trading", fail_max=2, reset_timeout=60.0,
        meter_provider=fresh_metrics.provider,
    )
    return Guard(limiter, {Allowance.NON_TRADING: breaker}, health=HealthRegistry())


def connections(fresh_metrics) -> int:
    points = fresh_metrics.points(HTTP_CONNECTIONS_CREATED.name)
    assert all(p.attributes[SERVER_ADDRESS] == "127.0.0.1" for p in points)
    return sum(p.value for p in points)


def test_httpx_transport_reuses_one_connection(server, guard, fresh_metrics):
    transport = IGTransport(
        guard, meter_provider=fresh_metrics.provider, verify=server.client_context
    )
    with httpx.Client(transport=transport, base_url=server.url) as client:
        responses = [client.get("/markets/CS.D.EURUSD.CFD.IP") for _ in range(10)]
    assert [r.status_code for r in responses] == [200] * 10
    assert responses[0].request.extensions[GUARDED_EXTENSION] is True
    assert connections(fresh_metrics) == 1


def test_httpx_transport_keeps_a_callers_trace_callback(server, guard, fresh_metrics):
    seen = []
    transport = IGTransport(
        guard, meter_provider=fresh_metrics.provider, verify=server.client_context
    )
    with httpx.Client(transport=transport, base_url=server.url) as client:
        client.get("/accounts", extensions={"trace": lambda e, i: seen.append(e)})
    assert "connection.connect_tcp.started" in seen


def test_httpx_transport_opens_breaker_on_5xx(server, guard, fresh_metrics):
    transport = IGTransport(
        guard, meter_provider=fresh_metrics.provider, verify=server.client_context
    )
    with httpx.Client(transport=transport, base_url=server.url) as client:
        assert client.get("/status/503").status_code == 503
        assert client.get("/status/500").status_code == 500
        with pytest.raises(CircuitOpenError):
            client.get("/accounts")
    assert guard.breakers[Allowance.NON_TRADING].state is BreakerState.OPEN


def test_httpx_transport_drains_on_allowance_403(server, guard, fresh_metrics):
    transport = IGTransport(
        guard, meter_provider=fresh_metrics.provider, verify=server.client_context
    )
    with httpx.Client(transport=transport, base_url=server.url) as client:
        response = client.get(f"/ig-error/403/{EXCEEDED_ACCOUNT}")
        assert response.json() == {"errorCode": EXCEEDED_ACCOUNT}
        with pytest.raises(AllowanceExhaustedError):
            client.get("/accounts")
    assert guard.breakers[Allowance.NON_TRADING].state is BreakerState.CLOSED


async def test_async_transport_reuses_one_connection(server, guard, fresh_metrics):
    transport = IGAsyncTransport(
        guard, meter_provider=fresh_metrics.provider, verify=server.client_context
    )
    async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
        for _ in range(5):
            assert (await client.get("/positions")).status_code == 200
        response = await client.get(f"/ig-error/403/{EXCEEDED_ACCOUNT}")
        assert response.json()["errorCode"] == EXCEEDED_ACCOUNT
        with pytest.raises(AllowanceExhaustedError):
            await client.get("/positions")
    assert connections(fresh_metrics) == 1


def test_requests_adapter_reuses_one_connection(server, guard, fresh_metrics):
    session = requests.Session()
    adapter = IGHTTPAdapter(guard, meter_provider=fresh_metrics.provider)
    session.mount("https://", adapter)
    with session:
        responses = [
            session.get(server.url + "/accounts", verify=server.ca_path)
            for _ in range(10)
        ]
    assert [r.status_code for r in responses] == [200] * 10
    assert getattr(responses[0].request, GUARDED_ATTRIBUTE) is True
    assert GUARDED_ATTRIBUTE not in responses[0].request.headers
    assert connections(fresh_metrics) == 1


def test_guard_session_mounts_the_adapter_and_drains_on_403(
    server, guard, fresh_metrics
):
    session = guard_session(requests.Session(), guard,
                            meter_provider=fresh_metrics.provider)
    assert isinstance(session.get_adapter(server.url), IGHTTPAdapter)
    with session:
        url = f"{server.url}/ig-error/403/{EXCEEDED_ACCOUNT}"
        response = session.get(url, verify=server.ca_path)
        assert response.json() == {"errorCode": EXCEEDED_ACCOUNT}
        with pytest.raises(AllowanceExhaustedError):
            session.get(server.url + "/accounts", verify=server.ca_path)

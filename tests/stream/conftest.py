"""Fixtures for stream instrumentation tests: the IG simulator on loopback.

Every adapter test runs the unmodified client (SDK 2.x, SDK 1.0.x through
trading-ig, or ``websockets``) against the project's simulator, with
``IGInstrumentor`` on exactly as ``opentelemetry-instrument`` would turn it
on: REST calls made with requests or httpx are enriched and stream sessions
are observed. The only other server is :mod:`.replay`, for the one thing the
simulator never sends (``OV``, lost updates).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from ig_otel import IGInstrumentor
from ig_otel._health import default_registry
from ig_otel.simulator import Simulator
from support import wait_for as wait_for

EPIC = "CS.D.EURUSD.MINI.IP"
#: Seconds of silence after which a connected stream reports ``stalled``.
STALL_SECONDS = 0.6


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """A running simulator: 1 s keepalive, 20 ticks per second per epic."""
    with Simulator(seed=11, keepalive_ms=1000, updates_per_second=20) as sim:
        yield sim


@dataclass
class Instrumented:
    """What an instrumented test reads: its metrics and the Python logs."""

    metrics: Any
    logs: pytest.LogCaptureFixture

    def points(self, name: str) -> list:
        return self.metrics.points(name)

    def value(self, name: str, **attributes: Any) -> float:
        return value_of(self.points(name), **attributes)


@pytest.fixture
def instrumented(telemetry, fresh_metrics, caplog) -> Iterator[Instrumented]:
    """``IGInstrumentor`` on: REST (requests, httpx) and both stream adapters."""
    caplog.set_level(logging.DEBUG, logger="ig_otel")
    instrumentor = IGInstrumentor()
    instrumentor.instrument(
        hosts=("127.0.0.1",),
        rate_limit_mode="off",
        stream_stall_seconds=STALL_SECONDS,
        stream_epics=("*",),
        tracer_provider=telemetry.tracer_provider,
        meter_provider=fresh_metrics.provider,
    )
    yield Instrumented(fresh_metrics, caplog)
    instrumentor.uninstrument()


def login(sim: Simulator) -> requests.Session:
    """A ``requests`` session logged in (v2) with CST and X-SECURITY-TOKEN."""
    session = requests.Session()
    session.headers.update({
        "X-IG-API-KEY": sim.api_key,
        "Content-Type": "application/json",
        "Accept": "application/json; charset=UTF-8",
        "VERSION": "2",
    })
    body = json.dumps({"identifier": sim.username, "password": sim.password})
    response = session.post(sim.rest_url + "/session", data=body, timeout=5)
    assert response.status_code == 200, response.text
    session.headers["CST"] = response.headers["CST"]
    session.headers["X-SECURITY-TOKEN"] = response.headers["X-SECURITY-TOKEN"]
    return session


def ls_password(session: requests.Session) -> str:
    """The Lightstreamer password IG expects: ``CST-...|XST-...``."""
    cst, xst = session.headers["CST"], session.headers["X-SECURITY-TOKEN"]
    return f"CST-{cst}|XST-{xst}"


def open_position(session: requests.Session, sim: Simulator) -> str:
    """Open a MARKET position over REST; the deal reference."""
    body = json.dumps({
        "currencyCode": "USD", "direction": "BUY", "epic": EPIC, "expiry": "-",
        "forceOpen": True, "guaranteedStop": False, "orderType": "MARKET",
        "size": 1, "trailingStop": False,
    })
    session.headers["VERSION"] = "2"
    response = session.post(sim.rest_url + "/positions/otc", data=body, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["dealReference"]


def secrets_of(sim: Simulator, session: requests.Session) -> list[str]:
    """Every secret a stream test handles: none may reach telemetry or logs."""
    return [
        session.headers["CST"], session.headers["X-SECURITY-TOKEN"],
        sim.password, sim.api_key, sim.account_id,
    ]


def assert_no_secrets(telemetry, instrumented: Instrumented, secrets) -> None:
    """No secret in any span, metric point, OTel log record or Python log."""
    texts = [span.to_json() for span in telemetry.finished_spans()]
    texts += [
        f"{item.log_record.attributes} {item.log_record.body}"
        for item in telemetry.logs.get_finished_logs()
    ]
    data = instrumented.metrics.reader.get_metrics_data()
    texts.append(data.to_json() if data else "")
    texts.append(instrumented.logs.text)
    for text in texts:
        for secret in secrets:
            assert secret not in text



def value_of(points, **attributes: Any) -> float:
    """Sum of the values of data points whose attributes include these."""
    total = 0.0
    for point in points:
        if all(point.attributes.get(k) == v for k, v in attributes.items()):
            total += point.value
    return total


def stream_health() -> dict[str, str]:
    """``/readyz`` stream checks of the default registry: name to status."""
    checks = default_registry().readiness()["checks"]
    return {
        readings[0]["componentId"]: readings[0]["observedValue"]
        for key, readings in checks.items()
        if key.startswith("ig-stream-")
    }

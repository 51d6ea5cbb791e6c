"""Fixtures for simulator tests: a running simulator and logged-in clients.

``simulator`` starts a fresh :class:`Simulator` on an ephemeral loopback port
(its own thread and event loop) with a short stream keepalive, so stalls and
reconnects show within seconds. ``rest`` is a ``requests`` session already
logged in (v2) against it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from ig_otel.simulator import Simulator
from support import wait_for as wait_for

EPIC = "CS.D.EURUSD.MINI.IP"


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """A running simulator (seed 7, 1 s keepalive, 10 ticks/s)."""
    with Simulator(seed=7, keepalive_ms=1000, updates_per_second=10) as sim:
        yield sim


def login(sim: Simulator, version: str = "2") -> requests.Session:
    """A ``requests`` session logged in with CST/X-SECURITY-TOKEN headers."""
    session = requests.Session()
    session.headers.update({
        "X-IG-API-KEY": sim.api_key,
        "Content-Type": "application/json",
        "Accept": "application/json; charset=UTF-8",
        "VERSION": version,
    })
    response = session.post(sim.rest_url + "/session", timeout=5, data=json.dumps(
        {"identifier": sim.username, "password": sim.password}))
    assert response.status_code == 200, response.text
    session.headers.update({
        "CST": response.headers["CST"],
        "X-SECURITY-TOKEN": response.headers["X-SECURITY-TOKEN"],
    })
    session.login_body = response.json()  # type: ignore[attr-defined]
    return session


@pytest.fixture
def rest(simulator: Simulator) -> Iterator[requests.Session]:
    """A logged-in ``requests`` session against ``simulator``."""
    session = login(simulator)
    yield session
    session.close()


def market_order(direction: str = "BUY", size: float = 1.0, **extra: Any) -> str:
    """The JSON body trading-ig sends for a MARKET position (nulls included)."""
    body = {
        "currencyCode": "USD", "direction": direction, "epic": EPIC, "expiry": "-",
        "forceOpen": True, "guaranteedStop": False, "level": None,
        "limitDistance": None, "limitLevel": None, "orderType": "MARKET",
        "quoteId": None, "size": size, "stopDistance": None, "stopLevel": None,
        "trailingStop": False, "trailingStopIncrement": None,
    }
    body.update(extra)
    return json.dumps(body)


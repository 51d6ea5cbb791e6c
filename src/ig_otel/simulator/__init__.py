"""A protocol-faithful IG simulator: REST trading API and Lightstreamer.

Point a bot (trading-ig, httpx, requests, the Lightstreamer SDKs or raw
TLCP) at it to rehearse outages, throttling and stream stalls::

    from ig_otel.simulator import Simulator

    with Simulator(seed=1) as sim:
        ...  # REST at sim.rest_url, Lightstreamer at sim.stream_url
        sim.set_scenario("outage", seconds=5)

Run it from the command line with ``ig-otel simulate``; list the fault
scenarios with ``ig-otel scenarios``.
"""

from __future__ import annotations

from ig_otel.simulator._allowance import AllowanceLimits
from ig_otel.simulator._market import DEFAULT_INSTRUMENTS, Instrument
from ig_otel.simulator._scenarios import SCENARIOS, ScenarioError, ScenarioSpec
from ig_otel.simulator._server import Simulator, Stats

__all__ = [
    "DEFAULT_INSTRUMENTS",
    "SCENARIOS",
    "AllowanceLimits",
    "Instrument",
    "ScenarioError",
    "ScenarioSpec",
    "Simulator",
    "Stats",
]

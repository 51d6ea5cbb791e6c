"""Pooled IG transports versus a new connection per call, over loopback TLS.

Run: ``pytest benchmarks/bench_pool.py --benchmark-enable``. Each arm sends
the same GET to a local keep-alive HTTPS server (trustme certificate) with
one shared ``SSLContext``; ``extra_info`` records the new connections
counted by ``ig.http.connections.created`` (pooled arms) or by httpcore's
trace events (unpooled arms).
"""

from __future__ import annotations

import httpx
import pytest
import requests
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from ig_otel._config import load_config
from ig_otel._guard import build_guard
from ig_otel._health import HealthRegistry
from ig_otel._pool import IGHTTPAdapter, IGTransport
from ig_otel._telemetry import HTTP_CONNECTIONS_CREATED
from resilience.tls_server import tls_server

ROUNDS, ITERATIONS = 200, 1
PATH = "/markets/CS.D.EURUSD.CFD.IP"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with tls_server(tmp_path_factory.mktemp("tls")) as running:
        yield running


@pytest.fixture
def metered():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


def created(reader: InMemoryMetricReader) -> int:
    data = reader.get_metrics_data()
    total = 0
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == HTTP_CONNECTIONS_CREATED.name:
                    total += sum(p.value for p in metric.data.data_points)
    return total


def guard_for(provider):
    # observe mode with breakers: the default cost of a guarded call
    config = load_config({"OTEL_PYTHON_IG_RATE_LIMIT_MODE": "observe"})
    return build_guard(config, meter_provider=provider, breakers=True,
                       health=HealthRegistry())


def run(benchmark, call) -> None:
    benchmark.pedantic(call, rounds=ROUNDS, iterations=ITERATIONS, warmup_rounds=5)


def test_httpx_new_connection_per_call(benchmark, server):
    connects = []

    def trace(event: str, info: dict) -> None:
        if event == "connection.connect_tcp.started":
            connects.append(1)

    def call() -> None:
        with httpx.Client(verify=server.client_context) as client:
            client.get(server.url + PATH, extensions={"trace": trace})

    run(benchmark, call)
    benchmark.extra_info["new_connections"] = len(connects)


def test_httpx_pooled_ig_transport(benchmark, server, metered):
    provider, reader = metered
    transport = IGTransport(guard_for(provider), meter_provider=provider,
                            verify=server.client_context)
    with httpx.Client(transport=transport) as client:
        run(benchmark, lambda: client.get(server.url + PATH))
    benchmark.extra_info["new_connections"] = created(reader)


def test_requests_new_connection_per_call(benchmark, server):
    connects = []

    def call() -> None:
        with requests.Session() as session:
            session.get(server.url + PATH, verify=server.ca_path)
            pools = session.get_adapter(server.url).poolmanager.pools
            # urllib3's pool container refuses plain iteration; keys() is its API
            keys = pools.keys()
            connects.extend(pools[key].num_connections for key in keys)

    run(benchmark, call)
    benchmark.extra_info["new_connections"] = sum(connects)


def test_requests_pooled_ig_adapter(benchmark, server, metered):
    provider, reader = metered
    with requests.Session() as session:
        adapter = IGHTTPAdapter(guard_for(provider), meter_provider=provider)
        session.mount("https://", adapter)
        run(benchmark, lambda: session.get(server.url + PATH, verify=server.ca_path))
    benchmark.extra_info["new_connections"] = created(reader)

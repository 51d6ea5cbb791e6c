"""What ig-otel's enrichment costs on top of the contrib HTTP instrumentation.

Four arms run interleaved in one process: no instrumentation, contrib
alone, contrib plus ig-otel's enrichment (allowance limiter off), and
contrib plus ig-otel as configured by default (limiter observing). The
figure that matters is ig-otel's share of the instrumentation overhead:
(contrib+ig - contrib) / (contrib - plain). Each round ends with a metric
collection whose time counts, since ig-otel records its histogram points
at collection time.
Each arm's figure is the fastest of its rounds, which filters out the
scheduling noise a 2-core machine adds.

httpx runs through its real transport and httpcore pool over a canned
in-memory network backend, so the comparison is pure CPU; requests runs
against a loopback server in another process (keep-alive).

Run: pytest benchmarks/bench_rest.py --benchmark-enable -s
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpcore
import httpx
import pytest
import requests
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from ig_otel import IGInstrumentor

SERVER = """
import sys, threading
sys.path[:0] = [{rest!r}]
from http.server import ThreadingHTTPServer
from ig_stub import StubHandler
server = ThreadingHTTPServer(("127.0.0.1", 0), StubHandler)
print(server.server_port, flush=True)
server.serve_forever()
"""

CALLS_PER_ROUND = 200
ROUNDS = 15

ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Content-Length: 16\r\n\r\n{\"accounts\": []}"
)


class _CannedStream(httpcore.NetworkStream):
    """Answers every request written to it with the same IG response."""

    def __init__(self) -> None:
        self._pending = b""

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer.endswith(b"\r\n\r\n") or not buffer.startswith(b"GET"):
            self._pending = ANSWER

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        chunk, self._pending = self._pending, b""
        return chunk

    def close(self) -> None:
        return None

    def get_extra_info(self, info: str) -> None:
        return None


class _CannedBackend(httpcore.NetworkBackend):
    def connect_tcp(self, host, port, timeout=None, local_address=None,
                    socket_options=None) -> httpcore.NetworkStream:
        return _CannedStream()


def _canned_client() -> httpx.Client:
    transport = httpx.HTTPTransport()
    transport._pool = httpcore.ConnectionPool(network_backend=_CannedBackend())
    return httpx.Client(transport=transport)


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    from conftest import TESTS

    code = SERVER.format(rest=str(TESTS / "rest"))
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}/gateway/deal"
    finally:
        process.kill()
        process.wait(timeout=10)
        process.stdout.close()


class _DroppingExporter(SpanExporter):
    """Exports nowhere: keeping spans would slow later rounds (GC)."""

    def export(self, spans) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class Arms:
    """Switches instrumentation between the three arms."""

    def __init__(self) -> None:
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(
            BatchSpanProcessor(_DroppingExporter())
        )
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.contrib = [HTTPXClientInstrumentor(), RequestsInstrumentor()]
        self.ig = IGInstrumentor()

    def set(self, arm: str) -> None:
        self.off()
        if arm.startswith("contrib"):
            for instrumentor in self.contrib:
                instrumentor.instrument(
                    tracer_provider=self.tracer_provider,
                    meter_provider=self.meter_provider,
                )
        if arm.startswith("contrib+ig"):
            self.ig.instrument(
                hosts=("127.0.0.1",), tracer_provider=self.tracer_provider,
                meter_provider=self.meter_provider,
                rate_limit_mode="observe" if arm.endswith("observe") else "off",
            )

    def off(self) -> None:
        for instrumentor in (*self.contrib, self.ig):
            if instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()


def _per_call_seconds(call: Callable[[], object], arms: Arms) -> float:
    start = time.perf_counter()
    for _ in range(CALLS_PER_ROUND):
        call()
    arms.reader.get_metrics_data()
    return (time.perf_counter() - start) / CALLS_PER_ROUND


def _measure(arms: Arms, call: Callable[[], object]) -> dict[str, float]:
    samples: dict[str, list[float]] = {
        arm: [] for arm in ("plain", "contrib", "contrib+ig", "contrib+ig-observe")
    }
    for arm in samples:
        arms.set(arm)
        _per_call_seconds(call, arms)
    for _ in range(ROUNDS):
        for arm in samples:
            arms.set(arm)
            samples[arm].append(_per_call_seconds(call, arms))
    arms.off()
    return {arm: min(values) for arm, values in samples.items()}


def _report(benchmark, label: str, best: dict[str, float]) -> None:
    contrib_cost = best["contrib"] - best["plain"]
    benchmark.extra_info.update({
        f"{arm}_us": round(value * 1e6, 1) for arm, value in best.items()
    })
    lines = [
        f"\n{label}: plain {best['plain'] * 1e6:.0f} us, contrib "
        f"{best['contrib'] * 1e6:.0f} us per call (contrib overhead "
        f"{contrib_cost * 1e6:.1f} us)"
    ]
    for arm in ("contrib+ig", "contrib+ig-observe"):
        ig_cost = best[arm] - best["contrib"]
        share = ig_cost / contrib_cost if contrib_cost > 0 else float("nan")
        benchmark.extra_info[f"{arm}_share_of_contrib_overhead"] = round(share, 3)
        lines.append(
            f"  {arm}: {best[arm] * 1e6:.0f} us; ig-otel adds "
            f"{ig_cost * 1e6:.1f} us = {share:.1%} of the contrib overhead"
        )
    sys.stdout.write("\n".join(lines) + "\n")


@pytest.mark.benchmark(group="rest")
def test_requests_enrichment_overhead(benchmark, stub_url):
    arms = Arms()
    session = requests.Session()
    headers = {"X-IG-API-KEY": "k", "VERSION": "2"}

    def call():
        return session.get(f"{stub_url}/accounts", headers=headers)

    best = _measure(arms, call)
    arms.set("contrib+ig")
    benchmark.pedantic(call, rounds=200, iterations=1)
    arms.off()
    session.close()
    _report(benchmark, "requests", best)


@pytest.mark.benchmark(group="rest")
def test_httpx_enrichment_overhead(benchmark):
    arms = Arms()
    client = _canned_client()
    headers = {"X-IG-API-KEY": "k", "VERSION": "2"}

    def call():
        return client.get("http://127.0.0.1/gateway/deal/accounts", headers=headers)

    best = _measure(arms, call)
    arms.set("contrib+ig")
    benchmark.pedantic(call, rounds=200, iterations=1)
    arms.off()
    client.close()
    _report(benchmark, "httpx", best)

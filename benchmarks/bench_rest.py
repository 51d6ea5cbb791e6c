"""What ig-otel's enrichment costs on top of the contrib HTTP instrumentation.

Four arms run interleaved in one process: no instrumentation, contrib
alone, contrib plus ig-otel's enrichment (allowance limiter off), and
contrib plus ig-otel as configured by default (limiter observing). The
figure that matters is ig-otel's share of the instrumentation overhead:
(contrib+ig - contrib) / (contrib - plain). Each round ends with a metric
collection whose time counts, since ig-otel records its histogram points
at collection time.
Each round runs every arm once, in a rotating order; the reported figures
are medians over rounds, and the share is the median of the per-round
shares, which cancels the slow drifts a busy 2-core machine adds.

Both clients run their real code paths (httpx's transport and httpcore pool,
requests' Session and HTTPAdapter) over a canned in-memory network that
answers every request at once, so the comparison is CPU, not sockets.

Run: pytest benchmarks/bench_rest.py --benchmark-enable -s
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from collections.abc import Callable

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
from requests.adapters import HTTPAdapter
from urllib3 import HTTPResponse

from ig_otel import IGInstrumentor

CALLS_PER_ROUND = 200
ROUNDS = 24

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


class _CannedPool:
    """Stands in for urllib3's connection pool: every request gets ANSWER."""

    def urlopen(self, method: str, url: str, **kwargs: object) -> HTTPResponse:
        head, body = ANSWER.split(b"\r\n\r\n", 1)
        return HTTPResponse(
            body=io.BytesIO(body), status=200, preload_content=False,
            decode_content=False, request_method=method,
            headers={"Content-Type": "application/json",
                     "Content-Length": str(len(body))},
        )


class _CannedAdapter(HTTPAdapter):
    def get_connection_with_tls_context(self, *args: object, **kwargs: object):
        return _CannedPool()


def _canned_session() -> requests.Session:
    session = requests.Session()
    session.mount("http://", _CannedAdapter())
    return session


def _canned_client() -> httpx.Client:
    transport = httpx.HTTPTransport()
    transport._pool = httpcore.ConnectionPool(network_backend=_CannedBackend())
    return httpx.Client(transport=transport)


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


ARMS = ("plain", "contrib", "contrib+ig", "contrib+ig-observe")


def _measure(arms: Arms, call: Callable[[], object]) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for arm in ARMS:
        arms.set(arm)
        _per_call_seconds(call, arms)
    for round_number in range(ROUNDS):
        order = ARMS[round_number % 4:] + ARMS[:round_number % 4]
        for arm in order:
            arms.set(arm)
            samples[arm].append(_per_call_seconds(call, arms))
    arms.off()
    return samples


def _report(benchmark, label: str, samples: dict[str, list[float]]) -> None:
    median = {arm: statistics.median(values) for arm, values in samples.items()}
    contrib_cost = median["contrib"] - median["plain"]
    benchmark.extra_info.update({
        f"{arm}_us": round(value * 1e6, 1) for arm, value in median.items()
    })
    lines = [
        f"\n{label}: plain {median['plain'] * 1e6:.0f} us, contrib "
        f"{median['contrib'] * 1e6:.0f} us per call (contrib overhead "
        f"{contrib_cost * 1e6:.1f} us)"
    ]
    for arm in ("contrib+ig", "contrib+ig-observe"):
        shares = [
            (ig - contrib) / (contrib - plain)
            for plain, contrib, ig in zip(
                samples["plain"], samples["contrib"], samples[arm], strict=True
            )
            if contrib > plain
        ]
        share = statistics.median(shares) if shares else float("nan")
        added = median[arm] - median["contrib"]
        benchmark.extra_info[f"{arm}_share_of_contrib_overhead"] = round(share, 3)
        lines.append(
            f"  {arm}: {median[arm] * 1e6:.0f} us; ig-otel adds "
            f"{added * 1e6:.1f} us, median share {share:.1%} of the contrib overhead"
        )
    sys.stdout.write("\n".join(lines) + "\n")


URL = "http://127.0.0.1/gateway/deal/accounts"
HEADERS = {"X-IG-API-KEY": "k", "VERSION": "2"}
CLIENTS = {"requests": _canned_session, "httpx": _canned_client}


@pytest.mark.benchmark(group="rest")
@pytest.mark.parametrize("label", sorted(CLIENTS))
def test_enrichment_overhead(benchmark, label):
    arms = Arms()
    client = CLIENTS[label]()

    def call():
        return client.get(URL, headers=HEADERS)

    samples = _measure(arms, call)
    arms.set("contrib+ig")
    benchmark.pedantic(call, rounds=200, iterations=1)
    arms.off()
    client.close()
    _report(benchmark, label, samples)

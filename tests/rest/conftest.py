"""Fixtures for the REST adapter tests: the IG stub and the instrumentor."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest
from ig_stub import StubHandler

from ig_otel import IGInstrumentor


@pytest.fixture(scope="session")
def ig_stub() -> Iterator[str]:
    """Base URL ``http://127.0.0.1:PORT/gateway/deal`` of the stub."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/gateway/deal"
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["ig-only", "contrib-first", "ig-first"])
def instrumented(request, telemetry, fresh_metrics):
    """IGInstrumentor on, alone or with the contrib instrumentors in both orders."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    contrib = [HTTPXClientInstrumentor(), RequestsInstrumentor()]
    ig = IGInstrumentor()
    ig_kwargs = dict(
        hosts=("127.0.0.1",), meter_provider=fresh_metrics.provider,
        tracer_provider=telemetry.tracer_provider, rate_limit_mode="off",
    )
    if request.param == "contrib-first":
        for instrumentor in contrib:
            instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    ig.instrument(**ig_kwargs)
    if request.param == "ig-first":
        for instrumentor in contrib:
            instrumentor.instrument(tracer_provider=telemetry.tracer_provider)
    yield request.param
    ig.uninstrument()
    for instrumentor in contrib:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()

"""Stream instrumentation overhead: the same raw TLCP client, with and without.

A ``websockets`` server on loopback (its own thread) answers a session and one
``PRICE`` subscription with N ``U`` lines, one per WebSocket message, with
live ``TIMESTAMP``s. The client is a plain ``websockets`` asyncio client that
reads every message and parses it with the codec, as a raw TLCP bot would.
Both variants run in one session; compare the ``updates/s`` lines.

Run: ``pytest benchmarks/bench_stream.py --benchmark-enable --benchmark-only``
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from ig_otel import _tlcp as tlcp
from ig_otel import _websockets
from ig_otel._config import Config

UPDATES = 5_000
SUBPROTOCOL = tlcp.SUBPROTOCOLS[1]
RESULTS: dict[str, float] = {}


async def _serve_session(ws) -> None:
    async for message in ws:
        for request in tlcp.parse_requests(message):
            if not isinstance(request, tlcp.Request):
                continue
            if request.name == "wsok":
                await ws.send(tlcp.join_lines([tlcp.encode_wsok()]))
            elif request.name == "create_session":
                await ws.send(tlcp.join_lines([tlcp.encode_conok("S1", 50000, 5000)]))
            elif request.name == "control":
                await ws.send(tlcp.join_lines([tlcp.encode_subok(1, 1, 3)]))
                await _stream(ws)


async def _stream(ws) -> None:
    previous = None
    for index in range(UPDATES):
        values = [f"1.{1000 + index % 500}", f"1.{1002 + index % 500}",
                  str(int(time.time() * 1000))]
        line = tlcp.encode_update(1, 1, previous, values)
        previous = values
        await ws.send(line + "\r\n")


async def _start():
    return await serve(_serve_session, "127.0.0.1", 0, subprotocols=[SUBPROTOCOL])


class Server:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    def __enter__(self) -> Server:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(_start(), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        self.server.close()
        closing = self.server.wait_closed()
        asyncio.run_coroutine_threadsafe(closing, self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def _client(port: int) -> int:
    url = f"ws://127.0.0.1:{port}/lightstreamer"
    reader = tlcp.NotificationReader()
    seen = 0
    async with connect(url, subprotocols=[SUBPROTOCOL]) as ws:
        await ws.send(tlcp.encode_request("wsok"))
        await ws.send(tlcp.encode_request("create_session", {"LS_cid": "bench"}))
        add = {"LS_reqId": 1, "LS_op": "add", "LS_subId": 1, "LS_mode": "MERGE",
               "LS_group": "PRICE:ACC1:CS.D.EURUSD.MINI.IP",
               "LS_schema": "BIDPRICE1 ASKPRICE1 TIMESTAMP"}
        await ws.send(tlcp.encode_request("control", add))
        async for message in ws:
            for event in reader.feed(message):
                if event.tag == "U":
                    seen += 1
            if seen >= UPDATES:
                break
    return seen


@pytest.fixture(scope="module")
def server():
    with Server() as running:
        yield running


def _run(benchmark, server, label: str) -> None:
    result = benchmark.pedantic(
        lambda: asyncio.run(_client(server.port)), rounds=8, warmup_rounds=1
    )
    assert result == UPDATES
    rate = UPDATES / benchmark.stats.stats.median
    RESULTS[label] = rate
    benchmark.extra_info["updates/s"] = round(rate)
    sys.stdout.write(f"\n{label}: {rate:,.0f} updates/s")
    if len(RESULTS) == 2:
        ratio = RESULTS["instrumented"] / RESULTS["plain"]
        sys.stdout.write(f"\ninstrumented/plain throughput: {ratio:.3f}\n")


def test_plain_client(benchmark, server):
    _run(benchmark, server, "plain")


def test_instrumented_client(benchmark, server):
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    _websockets.instrument(Config(), meter_provider=provider)
    try:
        _run(benchmark, server, "instrumented")
        reader.get_metrics_data()
    finally:
        _websockets.uninstrument()
        provider.shutdown()

"""Stream instrumentation overhead: the same client, with and without it.

The server is ``tests/stream/replay.py`` in a process of its own: every
``PRICE`` update (one per WebSocket message, with a ``TIMESTAMP``) is encoded
into frames before the client connects and goes out in one ``sendall``, so
the time measured is the client's: receiving, decoding and handling updates.

Two clients, each run plain and then instrumented in the same session:

* raw TLCP over ``websockets`` (asyncio): reads every message and parses it
  with the codec, as a hand-written bot does;
* the Lightstreamer SDK 2.x: a subscription listener that counts updates.

Run: ``pytest benchmarks/bench_stream.py`` and read the ``instrumented/plain``
lines (the target is at least 0.95).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from websockets.asyncio.client import connect

from ig_otel import _lightstreamer, _websockets
from ig_otel import _tlcp as tlcp
from ig_otel._config import Config

RAW_UPDATES = 20_000
SDK_UPDATES = 5_000
ROUNDS = 7
SUBPROTOCOL = tlcp.SUBPROTOCOLS[1]
ITEM = "PRICE:ACC1:CS.D.EURUSD.MINI.IP"
FIELDS = ["BIDPRICE1", "ASKPRICE1", "TIMESTAMP"]
RESULTS: dict[str, float] = {}

_SERVER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from stream.replay import ReplayServer, encode_frames, price_updates
count = int(sys.argv[2])
stamp = int(time.time() * 1000)
server = ReplayServer(encode_frames(price_updates(count, stamp_ms=stamp)))
print(server.port, flush=True)
server.serve_forever()
"""


@pytest.fixture(scope="module")
def replay_ports() -> Iterator[dict[str, int]]:
    """One replay server process per client kind (they differ in N)."""
    tests = str(Path(__file__).resolve().parent.parent / "tests")
    processes = []
    ports = {}
    try:
        for kind, count in (("raw", RAW_UPDATES), ("sdk", SDK_UPDATES)):
            process = subprocess.Popen(
                [sys.executable, "-c", _SERVER, tests, str(count)],
                stdout=subprocess.PIPE, text=True, env={**os.environ},
            )
            processes.append(process)
            assert process.stdout is not None
            ports[kind] = int(process.stdout.readline())
        yield ports
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
            if process.stdout is not None:
                process.stdout.close()


# -- raw TLCP over websockets ----------------------------------------------------


async def _raw_client(port: int) -> int:
    url = f"ws://127.0.0.1:{port}/lightstreamer"
    reader = tlcp.NotificationReader()
    seen = 0
    async with connect(url, subprotocols=[SUBPROTOCOL]) as ws:
        await ws.send(tlcp.encode_request("wsok"))
        await ws.send(tlcp.encode_request("create_session", {"LS_cid": "bench"}))
        add = {"LS_reqId": 1, "LS_op": "add", "LS_subId": 1, "LS_mode": "MERGE",
               "LS_group": ITEM, "LS_schema": " ".join(FIELDS)}
        await ws.send(tlcp.encode_request("control", add))
        async for message in ws:
            for event in reader.feed(message):
                if event.tag == "U":
                    seen += 1
            if seen >= RAW_UPDATES:
                break
    return seen


def _run_raw(port: int) -> int:
    return asyncio.run(_raw_client(port))


# -- SDK 2.x -------------------------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.count = 0
        self.done = threading.Event()

    def onItemUpdate(self, update) -> None:
        self.count += 1
        if self.count >= SDK_UPDATES:
            self.done.set()


def _run_sdk(port: int) -> int:
    from lightstreamer.client import LightstreamerClient, Subscription

    client = LightstreamerClient(f"http://127.0.0.1:{port}", None)
    client.connect()
    subscription = Subscription("MERGE", [ITEM], FIELDS)
    subscription.setDataAdapter("Pricing")
    counter = _Counter()
    subscription.addListener(counter)
    client.subscribe(subscription)
    finished = counter.done.wait(60)
    client.disconnect()
    assert finished, f"only {counter.count} updates"
    return counter.count


# -- the measurements -------------------------------------------------------------


def _measure(benchmark, label: str, run, port: int, expected: int) -> None:
    result = benchmark.pedantic(lambda: run(port), rounds=ROUNDS, warmup_rounds=1)
    assert result >= expected
    rate = expected / benchmark.stats.stats.median
    RESULTS[label] = rate
    benchmark.extra_info["updates/s"] = round(rate)
    sys.stdout.write(f"\n{label}: {rate:,.0f} updates/s")
    client = label.split()[0]
    plain, instrumented = f"{client} plain", f"{client} instrumented"
    if plain in RESULTS and instrumented in RESULTS:
        ratio = RESULTS[instrumented] / RESULTS[plain]
        benchmark.extra_info["instrumented/plain"] = round(ratio, 3)
        sys.stdout.write(f"\n{client} instrumented/plain throughput: {ratio:.3f}\n")


@pytest.fixture
def metrics_provider() -> Iterator[MeterProvider]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    # Collect once, as an exporter would, so export cost is not skipped.
    reader.get_metrics_data()
    provider.shutdown()


def test_raw_plain(benchmark, replay_ports):
    _measure(benchmark, "raw plain", _run_raw, replay_ports["raw"], RAW_UPDATES)


def test_raw_instrumented(benchmark, replay_ports, metrics_provider):
    _websockets.instrument(Config(), meter_provider=metrics_provider)
    try:
        _measure(benchmark, "raw instrumented", _run_raw, replay_ports["raw"],
                 RAW_UPDATES)
    finally:
        _websockets.uninstrument()


def test_sdk_plain(benchmark, replay_ports):
    pytest.importorskip("lightstreamer.client")
    _measure(benchmark, "sdk plain", _run_sdk, replay_ports["sdk"], SDK_UPDATES)


def test_sdk_instrumented(benchmark, replay_ports, metrics_provider):
    pytest.importorskip("lightstreamer.client")
    _lightstreamer.instrument(Config(), meter_provider=metrics_provider)
    try:
        _measure(benchmark, "sdk instrumented", _run_sdk, replay_ports["sdk"],
                 SDK_UPDATES)
    finally:
        _lightstreamer.uninstrument()

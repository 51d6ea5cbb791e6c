"""Stream instrumentation overhead: the same client, with and without it.

The server is ``tests/stream/replay.py`` in a process of its own: every
``PRICE`` update (one per WebSocket message, with a ``TIMESTAMP``) is encoded
into frames before the client connects and goes out in one ``sendall``, so
the time measured is the client's: receiving, decoding and handling updates.

Two clients, each run plain and instrumented in turns within one test (the
order swapping every round), so both arms see the same machine state; each
arm's best and median run are reported, and the ratio of the best runs is the
one to read (on a busy 2-core machine the medians carry scheduling noise):

* raw TLCP over ``websockets`` (asyncio): reads every message and parses it
  with the codec, as a hand-written bot does;
* the Lightstreamer SDK 2.x: a subscription listener that counts updates.

Run: ``pytest benchmarks/bench_stream.py -s`` and read the
``instrumented/plain`` lines (the target is at least 0.95).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
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
ROUNDS = 9
SUBPROTOCOL = tlcp.SUBPROTOCOLS[1]
ITEM = "PRICE:ACC1:CS.D.EURUSD.MINI.IP"
FIELDS = ["BIDPRICE1", "ASKPRICE1", "TIMESTAMP"]

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


def _timed(run, port: int, expected: int) -> float:
    started = time.perf_counter()
    result = run(port)
    elapsed = time.perf_counter() - started
    assert result >= expected
    return elapsed


def _instrumented(adapter, run, port: int, expected: int) -> float:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    adapter.instrument(Config(), meter_provider=provider)
    try:
        elapsed = _timed(run, port, expected)
        # Collect once, as an exporter would, inside the timed arm's cost.
        started = time.perf_counter()
        reader.get_metrics_data()
        elapsed += time.perf_counter() - started
    finally:
        adapter.uninstrument()
        provider.shutdown()
    return elapsed


def _compare(benchmark, client: str, adapter, run, port: int, expected: int):
    times: dict[str, list[float]] = {"plain": [], "instrumented": []}

    def one_round() -> None:
        arms = [
            ("plain", lambda: _timed(run, port, expected)),
            ("instrumented", lambda: _instrumented(adapter, run, port, expected)),
        ]
        if len(times["plain"]) % 2:
            arms.reverse()
        for arm, measure in arms:
            times[arm].append(measure())

    # One untimed warm-up of each arm (imports, first connections).
    _timed(run, port, expected)
    _instrumented(adapter, run, port, expected)
    benchmark.pedantic(one_round, rounds=ROUNDS)
    report = {}
    for arm, values in times.items():
        report[arm] = (expected / min(values), expected / statistics.median(values))
        sys.stdout.write(f"\n{client} {arm}: best {report[arm][0]:,.0f} updates/s, "
                         f"median {report[arm][1]:,.0f} updates/s")
    best = report["instrumented"][0] / report["plain"][0]
    median = report["instrumented"][1] / report["plain"][1]
    benchmark.extra_info["instrumented/plain best"] = round(best, 3)
    benchmark.extra_info["instrumented/plain median"] = round(median, 3)
    sys.stdout.write(f"\n{client} instrumented/plain throughput: best {best:.3f}, "
                     f"median {median:.3f}\n")


def test_raw_websockets_overhead(benchmark, replay_ports):
    _compare(benchmark, "raw", _websockets, _run_raw, replay_ports["raw"],
             RAW_UPDATES)


def test_sdk_listener_overhead(benchmark, replay_ports):
    pytest.importorskip("lightstreamer.client")
    _compare(benchmark, "sdk", _lightstreamer, _run_sdk, replay_ports["sdk"],
             SDK_UPDATES)

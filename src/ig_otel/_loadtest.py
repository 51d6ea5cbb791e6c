"""``ig-otel loadtest``: many simulated bots, instrumentation off then on.

Three processes, so the simulator and the measured client never share a GIL:

* the **server**: the IG simulator with allowances raised out of the way
  (``python -m ig_otel._loadtest serve``); it stops when its stdin closes;
* one **client** per phase (``python -m ig_otel._loadtest client``): N bots
  on one asyncio loop, each with its own ``httpx.AsyncClient`` and its own
  raw TLCP session over ``websockets``, following the "normal trading
  volume" profile scaled by ``--rate``. The ``on`` phase runs the same load
  with :class:`~ig_otel.IGInstrumentor` and real SDK providers (batch span
  and log processors, a periodic metric reader) whose exporters count and
  drop, so export work is done but nothing leaves the machine;
* the **orchestrator** (``ig-otel loadtest``): starts both, relays progress
  lines, and reports throughput, REST latency, instrumentation overhead and
  the client's memory over time.

The pure parts (profile scheduling, percentiles, memory slope, report
building and formatting) take plain values and do no I/O.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "LoadProfile",
    "NORMAL_PROFILE",
    "build_report",
    "format_report",
    "memory_growth",
    "percentile",
    "plan_actions",
    "run_loadtest",
]

#: Credentials of the load-test simulator (a local simulator, not a secret).
LOAD_USER = "load_user"
LOAD_PASSWORD = "load-password"
LOAD_API_KEY = "load-api-key"
#: Allowances high enough that the simulator never throttles the load.
UNLIMITED = 1_000_000_000

PHASES = ("off", "on")


# -- pure: profile and schedule ---------------------------------------------


@dataclass(frozen=True)
class LoadProfile:
    """One bot's "normal trading volume" (protocol reference, section 7).

    Attributes:
        epics: Markets streamed as ``PRICE`` items (MERGE).
        ticks_per_second: Price updates per second per epic (busy FX hours).
        polls_per_minute: Non-trading REST calls per minute.
        deals_per_minute: Dealing calls per minute, each followed by one
            ``GET /confirms``; bots alternate opening and closing.
        history_points: Warm-up price points fetched once per epic.
    """

    epics: tuple[str, ...] = (
        "CS.D.EURUSD.MINI.IP", "CS.D.GBPUSD.MINI.IP", "CS.D.USDJPY.MINI.IP",
        "IX.D.FTSE.DAILY.IP", "IX.D.DAX.DAILY.IP",
    )
    ticks_per_second: float = 4.0
    polls_per_minute: float = 15.0
    deals_per_minute: float = 3.0
    history_points: int = 10
    traded_epic: str = "CS.D.EURUSD.MINI.IP"
    deal_size: float = 0.1

    def rest_calls_per_second(self, rate: float = 1.0) -> float:
        """Steady-state REST calls per second of one bot."""
        return rate * (self.polls_per_minute + 2 * self.deals_per_minute) / 60.0

    def updates_per_second(self, rate: float = 1.0) -> float:
        """Price updates per second one bot receives (at most)."""
        return rate * self.ticks_per_second * len(self.epics)


NORMAL_PROFILE = LoadProfile()


def plan_actions(
    profile: LoadProfile, rate: float, duration: float, offset: float = 0.0
) -> list[tuple[float, str]]:
    """A bot's steady-state actions: ``(seconds from start, "poll"|"deal")``.

    Polls and deals are two evenly spaced streams, shifted by ``offset`` (a
    fraction of each interval, 0-1) so many bots spread their calls.
    """
    if rate <= 0 or duration <= 0:
        return []
    actions: list[tuple[float, str]] = []
    for per_minute, kind in ((profile.polls_per_minute, "poll"),
                             (profile.deals_per_minute, "deal")):
        if per_minute <= 0:
            continue
        interval = 60.0 / (per_minute * rate)
        moment = (offset % 1.0) * interval
        while moment < duration:
            actions.append((moment, kind))
            moment += interval
    actions.sort()
    return actions


# -- pure: statistics ---------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0-1) with linear interpolation; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * min(max(q, 0.0), 1.0)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def memory_growth(
    samples: Sequence[tuple[float, float]], warmup: float
) -> dict[str, float | None]:
    """Growth of RSS after warm-up from ``(seconds, MiB)`` samples.

    Answers the first and last post-warm-up readings, their difference, and
    the least-squares slope in MiB per minute (None with fewer than 3
    samples after warm-up).
    """
    after = [(t, mb) for t, mb in samples if t >= warmup]
    if not after:
        return {"first_mb": None, "last_mb": None, "growth_mb": None,
                "slope_mb_per_min": None, "samples": 0}
    first, last = after[0][1], after[-1][1]
    slope = None
    if len(after) >= 3:
        mean_t = sum(t for t, _ in after) / len(after)
        mean_m = sum(m for _, m in after) / len(after)
        spread = sum((t - mean_t) ** 2 for t, _ in after)
        if spread > 0:
            slope = 60.0 * sum((t - mean_t) * (m - mean_m) for t, m in after) / spread
    return {"first_mb": round(first, 2), "last_mb": round(last, 2),
            "growth_mb": round(last - first, 2),
            "slope_mb_per_min": None if slope is None else round(slope, 3),
            "samples": len(after)}


def _ratio(on: float | None, off: float | None) -> float | None:
    if on is None or off is None or off <= 0:
        return None
    return round(on / off, 3)


def build_report(
    settings: Mapping[str, Any], phases: Mapping[str, Mapping[str, Any]],
    server: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The load-test report: settings, each phase, and on/off ratios."""
    off, on = phases.get("off", {}), phases.get("on", {})
    latency_on, latency_off = on.get("latency_ms", {}), off.get("latency_ms", {})
    overhead = {
        "cpu_seconds": _ratio(on.get("cpu_seconds"), off.get("cpu_seconds")),
        "latency_p50": _ratio(latency_on.get("p50"), latency_off.get("p50")),
        "latency_p95": _ratio(latency_on.get("p95"), latency_off.get("p95")),
        "rest_throughput": _ratio(on.get("rest_per_s"), off.get("rest_per_s")),
        "update_throughput": _ratio(on.get("updates_per_s"),
                                    off.get("updates_per_s")),
        "price_update_throughput": _ratio(on.get("price_updates_per_s"),
                                          off.get("price_updates_per_s")),
    }
    return {"settings": dict(settings), "phases": {k: dict(v) for k, v in
                                                   phases.items()},
            "overhead_on_vs_off": overhead, "server": dict(server or {})}


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def format_report(report: Mapping[str, Any]) -> list[str]:
    """Readable lines for a report from :func:`build_report`."""
    settings = report["settings"]
    lines = [
        f"load test: {settings['bots']} bots x rate {settings['rate']} "
        f"= {settings['bots'] * settings['rate']:g}x normal volume, "
        f"{settings['duration']:g} s per phase (warm-up {settings['warmup']:g} s)"
        + (f", scenario {settings['scenario']}" if settings.get("scenario") else ""),
        f"target per phase: {_num(settings['target_rest_per_s'])} REST calls/s, "
        f"up to {_num(settings['target_updates_per_s'], 0)} price updates/s "
        "(TRADE and ACCOUNT updates come on top: the bots share one account, "
        "so every deal streams to every bot)",
        "",
        f"{'phase':<6}{'REST/s':>9}{'updates/s':>11}{'prices/s':>10}"
        f"{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p99 ms':>9}{'errors':>8}{'CPU s':>8}{'RSS MiB':>9}{'growth':>8}"
        f"{'MiB/min':>9}",
    ]
    for name in PHASES:
        phase = report["phases"].get(name)
        if not phase:
            continue
        latency = phase.get("latency_ms", {})
        memory = phase.get("memory", {})
        lines.append(
            f"{name:<6}{_num(phase.get('rest_per_s')):>9}"
            f"{_num(phase.get('updates_per_s'), 0):>11}"
            f"{_num(phase.get('price_updates_per_s'), 0):>10}"
            f"{_num(latency.get('p50')):>9}{_num(latency.get('p95')):>9}"
            f"{_num(latency.get('p99')):>9}{phase.get('error_count', 0):>8}"
            f"{_num(phase.get('cpu_seconds')):>8}{_num(memory.get('last_mb')):>9}"
            f"{_num(memory.get('growth_mb')):>8}"
            f"{_num(memory.get('slope_mb_per_min'), 2):>9}"
        )
    overhead = report["overhead_on_vs_off"]
    lines += [
        "",
        "instrumentation on/off: CPU x" + _num(overhead["cpu_seconds"], 2)
        + ", REST p50 x" + _num(overhead["latency_p50"], 2)
        + ", p95 x" + _num(overhead["latency_p95"], 2)
        + ", REST throughput x" + _num(overhead["rest_throughput"], 3)
        + ", price updates x" + _num(overhead["price_update_throughput"], 3)
        + ", all updates x" + _num(overhead["update_throughput"], 3),
    ]
    for name in PHASES:
        errors = report["phases"].get(name, {}).get("errors") or {}
        if errors:
            text = ", ".join(f"{k} {v}" for k, v in sorted(errors.items()))
            lines.append(f"errors ({name}): {text}")
    return lines


# -- client: the bots ---------------------------------------------------------


@dataclass
class ClientSettings:
    """What one client process runs."""

    base_url: str
    bots: int
    rate: float
    duration: float
    warmup: float
    instrument: bool
    profile: LoadProfile = field(default_factory=LoadProfile)


class Tally:
    """Counters shared by the bots of one client (one event loop, no locks)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.window_start: float | None = None
        self.rest_calls = 0
        self.updates = 0
        self.price_updates = 0
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.deals: Counter[str] = Counter()
        self.bots_ready = 0

    def measuring(self) -> bool:
        return self.window_start is not None

    def rest(self, seconds: float, error: str | None) -> None:
        if not self.measuring():
            return
        self.rest_calls += 1
        self.latencies.append(seconds)
        if error:
            self.errors[error] += 1

    def deal(self, status: str) -> None:
        if self.measuring():
            self.deals[status] += 1

    def error(self, kind: str) -> None:
        if self.measuring():
            self.errors[kind] += 1


class LoadBot:
    """One simulated bot: REST over ``httpx.AsyncClient``, raw TLCP stream."""

    def __init__(self, settings: ClientSettings, index: int, tally: Tally) -> None:
        self.settings = settings
        self.index = index
        self.tally = tally
        self.profile = settings.profile
        # Every bot trades the smallest EUR/USD deal: they share one account,
        # whose margin must cover a position per bot.
        self.epic = self.profile.traded_epic
        self.open_deal: str | None = None
        self.poll_turn = 0

    async def run(self, stop: asyncio.Event) -> None:
        import httpx

        base = self.settings.base_url + "/gateway/deal"
        headers = {"X-IG-API-KEY": LOAD_API_KEY, "VERSION": "2",
                   "Content-Type": "application/json"}
        async with httpx.AsyncClient(base_url=base, headers=headers,
                                     timeout=10.0) as http:
            if not await self._start(http):
                return
            stream = asyncio.create_task(self._stream(http, stop))
            try:
                await self._steady(http, stop)
            finally:
                stream.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await stream

    async def _call(self, http: Any, method: str, path: str, version: str = "1",
                    body: Any = None, override: str | None = None) -> Any:
        headers = {"VERSION": version}
        if override:
            headers["_method"] = override
        started = time.perf_counter()
        try:
            response = await http.request(method, path, headers=headers, json=body)
        except Exception as error:
            self.tally.rest(time.perf_counter() - started, type(error).__name__)
            return None
        error = f"HTTP {response.status_code}" if response.status_code >= 400 else None
        self.tally.rest(time.perf_counter() - started, error)
        return response

    async def _start(self, http: Any) -> bool:
        response = await self._call(http, "POST", "/session", "2", {
            "identifier": LOAD_USER, "password": LOAD_PASSWORD})
        if response is None or response.status_code != 200:
            self.tally.errors["login failed"] += 1
            return False
        http.headers["CST"] = response.headers["CST"]
        http.headers["X-SECURITY-TOKEN"] = response.headers["X-SECURITY-TOKEN"]
        self.account = response.json()["currentAccountId"]
        for epic in self.profile.epics:
            await self._call(http, "GET", f"/markets/{epic}", "3")
        await self._call(http, "GET", f"/prices/{self.epic}?resolution=MINUTE"
                         f"&max={self.profile.history_points}&pageSize=0", "3")
        return True

    async def _steady(self, http: Any, stop: asyncio.Event) -> None:
        settings = self.settings
        offset = (self.index + 0.5) / max(settings.bots, 1)
        # Plan past the end: the client stops the bots, the plan never does.
        horizon = settings.warmup + settings.duration + 10.0
        plan = plan_actions(self.profile, settings.rate, horizon, offset)
        started = time.monotonic()
        for moment, kind in plan:
            delay = started + moment - time.monotonic()
            if delay > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            if kind == "poll":
                await self._poll(http)
            else:
                await self._deal(http)
        await stop.wait()

    async def _poll(self, http: Any) -> None:
        self.poll_turn += 1
        turn = self.poll_turn % 4
        if turn == 0:
            await self._call(http, "GET", "/positions", "2")
        elif turn == 1:
            await self._call(http, "GET", f"/markets/{self.epic}", "3")
        elif turn == 2:
            await self._call(http, "GET", "/workingorders", "2")
        else:
            await self._call(http, "GET", "/accounts", "1")

    async def _deal(self, http: Any) -> None:
        if self.open_deal is None:
            response = await self._call(http, "POST", "/positions/otc", "2", {
                "epic": self.epic, "expiry": "-", "direction": "BUY",
                "size": self.profile.deal_size,
                "orderType": "MARKET", "currencyCode": "USD", "forceOpen": True,
                "guaranteedStop": False, "trailingStop": False})
        else:
            response = await self._call(http, "POST", "/positions/otc", "1", {
                "dealId": self.open_deal, "direction": "SELL",
                "size": self.profile.deal_size,
                "orderType": "MARKET"}, override="DELETE")
        if response is None or response.status_code != 200:
            return
        reference = response.json().get("dealReference")
        confirm = await self._call(http, "GET", f"/confirms/{reference}", "1")
        if confirm is None or confirm.status_code != 200:
            return
        document = confirm.json()
        self.tally.deal(str(document.get("dealStatus")))
        if self.open_deal is None and document.get("dealStatus") == "ACCEPTED":
            self.open_deal = document.get("dealId")
        elif self.open_deal is not None:
            self.open_deal = None

    async def _stream(self, http: Any, stop: asyncio.Event) -> None:
        from websockets.asyncio.client import connect

        from ig_otel import _tlcp as tlcp

        url = self.settings.base_url.replace("http://", "ws://") + "/lightstreamer"
        password = (f"CST-{http.headers['CST']}|"
                    f"XST-{http.headers['X-SECURITY-TOKEN']}")
        reader = tlcp.NotificationReader()
        try:
            async with connect(url, subprotocols=[tlcp.SUBPROTOCOLS[1]],
                               open_timeout=10, max_queue=None) as ws:
                await ws.send(tlcp.encode_request("wsok"))
                await ws.send(tlcp.encode_request("create_session", {
                    "LS_cid": "loadtest", "LS_send_sync": "false",
                    "LS_password": password, "LS_cause": "api"}))
                await ws.send(tlcp.encode_request("control", *self._subscriptions()))
                self.tally.bots_ready += 1
                async for message in ws:
                    count = prices = 0
                    for event in reader.feed(message):
                        if event.tag == "U":
                            count += 1
                            prices += event.sub_id == 1
                    if self.tally.measuring():
                        self.tally.updates += count
                        self.tally.price_updates += prices
                    if stop.is_set():
                        return
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.tally.error(f"stream {type(error).__name__}")

    def _subscriptions(self) -> list[dict[str, object]]:
        account = self.account
        items = [f"PRICE:{account}:{epic}" for epic in self.profile.epics]
        return [
            {"LS_reqId": 1, "LS_op": "add", "LS_subId": 1, "LS_mode": "MERGE",
             "LS_data_adapter": "Pricing", "LS_group": " ".join(items),
             "LS_schema": "BIDPRICE1 ASKPRICE1 TIMESTAMP", "LS_snapshot": "true",
             "LS_ack": "false"},
            {"LS_reqId": 2, "LS_op": "add", "LS_subId": 2, "LS_mode": "DISTINCT",
             "LS_group": f"TRADE:{account}", "LS_schema": "CONFIRMS OPU WOU",
             "LS_snapshot": "false", "LS_ack": "false"},
            {"LS_reqId": 3, "LS_op": "add", "LS_subId": 3, "LS_mode": "MERGE",
             "LS_group": f"ACCOUNT:{account}", "LS_schema": "PNL AVAILABLE_CASH",
             "LS_snapshot": "true", "LS_ack": "false"},
        ]


def _rss_mb() -> float:
    # Resident set size now (Linux /proc); peak RSS elsewhere.
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1048576
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _emit(kind: str, **data: Any) -> None:
    print(json.dumps({"kind": kind, **data}), flush=True)


class _CountingExporters:
    """Span, metric and log exporters that count what they get and drop it."""

    def __init__(self) -> None:
        from opentelemetry.sdk._logs.export import (
            LogRecordExporter,
            LogRecordExportResult,
        )
        from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

        counts: Counter[str] = Counter()
        self.counts = counts

        class Spans(SpanExporter):
            def export(self, spans: Any) -> Any:
                counts["spans"] += len(spans)
                return SpanExportResult.SUCCESS

        class Metrics(MetricExporter):
            def export(self, metrics_data: Any, timeout_millis: float = 10_000,
                       **kwargs: Any) -> Any:
                counts["metric_exports"] += 1
                return MetricExportResult.SUCCESS

            def force_flush(self, timeout_millis: float = 10_000) -> bool:
                return True

            def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
                return None

        class Logs(LogRecordExporter):
            def export(self, batch: Any) -> Any:
                counts["log_records"] += len(batch)
                return LogRecordExportResult.SUCCESS

            def force_flush(self, timeout_millis: int = 30_000) -> bool:
                return True

            def shutdown(self) -> None:
                return None

        self.spans, self.metrics, self.logs = Spans(), Metrics(), Logs()


def _instrument(base_url: str) -> tuple[Callable[[], None], Counter[str]]:
    """Real SDK providers with counting exporters, and ig-otel on."""
    from opentelemetry import _logs, metrics, trace
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from ig_otel import IGInstrumentor

    exporters = _CountingExporters()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(exporters.spans))
    reader = PeriodicExportingMetricReader(exporters.metrics,
                                           export_interval_millis=5000)
    meter_provider = MeterProvider(metric_readers=[reader])
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(exporters.logs))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    _logs.set_logger_provider(logger_provider)
    host = base_url.split("://", 1)[1]
    instrumentor = IGInstrumentor()
    instrumentor.instrument(hosts=(host,), tracer_provider=tracer_provider,
                            meter_provider=meter_provider)

    def shutdown() -> None:
        instrumentor.uninstrument()
        tracer_provider.shutdown()
        meter_provider.shutdown()
        logger_provider.shutdown()

    return shutdown, exporters.counts


async def _run_bots(settings: ClientSettings) -> dict[str, Any]:
    tally = Tally(time.monotonic)
    stop = asyncio.Event()
    started = time.monotonic()
    rss: list[tuple[float, float]] = []
    bots = [LoadBot(settings, i, tally) for i in range(settings.bots)]
    tasks = []
    # Start bots spread over at most 2 s so logins do not arrive as one burst.
    for bot in bots:
        tasks.append(asyncio.create_task(bot.run(stop)))
        await asyncio.sleep(min(2.0 / max(settings.bots, 1), 0.05))
    measure_from = started + settings.warmup
    window_cpu = 0.0
    next_progress = started + 5.0
    last_calls = last_updates = 0
    last_time = time.monotonic()
    end = started + settings.warmup + settings.duration
    while time.monotonic() < end:
        await asyncio.sleep(1.0)
        now = time.monotonic()
        rss.append((round(now - started, 2), _rss_mb()))
        if tally.window_start is None and now >= measure_from:
            tally.window_start = now
            window_cpu = time.process_time()
        if now >= next_progress:
            span = max(now - last_time, 1e-9)
            _emit("progress", t=round(now - started, 1),
                  measuring=tally.measuring(), ready=tally.bots_ready,
                  rest_per_s=round((tally.rest_calls - last_calls) / span, 1),
                  updates_per_s=round((tally.updates - last_updates) / span, 1),
                  rss_mb=round(rss[-1][1], 1), errors=sum(tally.errors.values()))
            last_calls, last_updates, last_time = tally.rest_calls, tally.updates, now
            next_progress = now + 5.0
    window = time.monotonic() - (tally.window_start or started)
    cpu = time.process_time() - window_cpu
    stop.set()
    _, pending = await asyncio.wait(tasks, timeout=5.0)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5.0)
    return {
        "bots": settings.bots, "bots_streaming": tally.bots_ready,
        "measured_seconds": round(window, 2),
        "rest_calls": tally.rest_calls,
        "rest_per_s": round(tally.rest_calls / window, 2),
        "updates": tally.updates, "updates_per_s": round(tally.updates / window, 1),
        "price_updates_per_s": round(tally.price_updates / window, 1),
        "latency_ms": {f"p{int(q * 100)}": _ms(percentile(tally.latencies, q))
                       for q in (0.5, 0.95, 0.99)}
        | {"max": _ms(max(tally.latencies, default=None))},
        "errors": dict(tally.errors), "error_count": sum(tally.errors.values()),
        "deals": dict(tally.deals),
        "cpu_seconds": round(cpu, 2),
        "cpu_share": round(cpu / window, 3),
        "rss_mb": [(t, round(mb, 2)) for t, mb in rss],
        "memory": memory_growth(rss, settings.warmup),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def client_main(settings: ClientSettings) -> int:
    """Run one phase and print its result as the last JSON line."""
    shutdown: Callable[[], None] | None = None
    counts: Counter[str] = Counter()
    if settings.instrument:
        shutdown, counts = _instrument(settings.base_url)
    try:
        result = asyncio.run(_run_bots(settings))
    except KeyboardInterrupt:
        return 130
    finally:
        if shutdown is not None:
            shutdown()
    result["exported"] = dict(counts)
    _emit("result", phase="on" if settings.instrument else "off", **result)
    return 0


# -- server -------------------------------------------------------------------


def serve_main(updates_per_second: float, scenarios: Sequence[str], seed: int) -> int:
    """Serve the simulator until stdin closes; the first line names its URL."""
    from ig_otel.simulator import AllowanceLimits, Simulator

    limits = AllowanceLimits(app_non_trading=UNLIMITED, account_trading=UNLIMITED,
                             account_non_trading=UNLIMITED,
                             historical_points=UNLIMITED)
    simulator = Simulator(scenarios=scenarios, seed=seed, limits=limits,
                          updates_per_second=updates_per_second,
                          username=LOAD_USER, password=LOAD_PASSWORD,
                          api_key=LOAD_API_KEY)
    try:
        with simulator:
            _emit("serving", base_url=simulator.base_url)
            sys.stdin.read()
    except KeyboardInterrupt:
        return 130
    return 0


# -- orchestrator -------------------------------------------------------------


class _Child:
    """A child process whose stdout JSON lines are read with a timeout."""

    def __init__(self, args: list[str], stdin: bool = False) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ig_otel._loadtest", *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def messages(self, deadline: float) -> Iterator[dict[str, Any]]:
        """JSON messages until the child ends or ``deadline`` passes."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("a load-test process did not answer in time")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                return
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict):
                    yield message

    def stop(self) -> None:
        process = self.process
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


@dataclass(frozen=True)
class LoadSettings:
    """What ``ig-otel loadtest`` was asked to do."""

    bots: int = 10
    duration: float = 30.0
    rate: float = 1.0
    warmup: float = 5.0
    scenario: str | None = None
    seed: int = 0


def _server_stats(base_url: str) -> dict[str, Any]:
    import httpx

    try:
        stats = httpx.get(base_url + "/_sim/state", timeout=10).json()["stats"]
    except Exception as error:
        return {"error": type(error).__name__}
    return {"requests": sum(stats["requests"].values()),
            "statuses": stats["statuses"], "updates_sent": stats["updates_sent"],
            "stream_sessions": stats["stream_sessions"]}


def _say(line: str) -> None:
    print(line, flush=True)


def _run_phase(base_url: str, settings: LoadSettings, phase: str) -> dict[str, Any]:
    child = _Child(["client", "--url", base_url, "--bots", str(settings.bots),
                    "--rate", str(settings.rate), "--duration", str(settings.duration),
                    "--warmup", str(settings.warmup), "--instrument", phase])
    result: dict[str, Any] = {}
    deadline = time.monotonic() + settings.warmup + settings.duration + 60.0
    try:
        for message in child.messages(deadline):
            if message.get("kind") == "progress":
                state = "measuring" if message["measuring"] else "warming up"
                _say(f"  [{phase:>3} {message['t']:6.1f}s] {state:<10} "
                     f"streams {message['ready']}/{settings.bots}  "
                     f"REST {message['rest_per_s']:7.1f}/s  "
                     f"updates {message['updates_per_s']:8.1f}/s  "
                     f"RSS {message['rss_mb']:6.1f} MiB  errors {message['errors']}")
            elif message.get("kind") == "result":
                result = message
    finally:
        child.stop()
    if not result:
        raise RuntimeError(f"the {phase} phase ended without a result")
    result.pop("kind", None)
    return result


def run_loadtest(settings: LoadSettings, json_path: str | None = None) -> int:
    """Run both phases against a simulator process; answers the exit status."""
    profile = NORMAL_PROFILE
    ticks = profile.ticks_per_second * settings.rate
    serve_args = ["serve", "--updates-per-second", str(ticks), "--seed",
                  str(settings.seed)]
    if settings.scenario:
        serve_args += ["--scenario", settings.scenario]
    server = _Child(serve_args, stdin=True)
    try:
        base_url = ""
        for message in server.messages(time.monotonic() + 20):
            if message.get("kind") == "serving":
                base_url = message["base_url"]
                break
        if not base_url:
            raise RuntimeError("the simulator process did not start")
        _say(f"simulator process {server.process.pid} at {base_url}; "
             f"{settings.bots} bots x rate {settings.rate:g}, "
             f"{settings.duration:g} s per phase after {settings.warmup:g} s warm-up")
        phases = {}
        for phase in PHASES:
            _say(f"phase {phase}: instrumentation {phase.upper()}")
            phases[phase] = _run_phase(base_url, settings, phase)
        server_stats = _server_stats(base_url)
    finally:
        server.stop()
    report = build_report(
        {**asdict(settings), "target_rest_per_s":
         round(settings.bots * profile.rest_calls_per_second(settings.rate), 2),
         "target_updates_per_s":
         round(settings.bots * profile.updates_per_second(settings.rate), 1),
         "profile": asdict(profile), "cores": os.cpu_count(),
         "server": "separate process (python -m ig_otel._loadtest serve)"},
        phases, server_stats)
    _say("")
    for line in format_report(report):
        _say(line)
    if json_path:
        with open(json_path, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
        _say(f"report written to {json_path}")
    failed = [p for p, r in phases.items() if not r.get("rest_calls")
              or not r.get("updates")]
    if failed:
        print(f"ig-otel loadtest: no REST calls or no updates in phase "
              f"{', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


# -- entry point of the child processes ---------------------------------------


def _child_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ig_otel._loadtest")
    sub = parser.add_subparsers(dest="role", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--updates-per-second", type=float, default=4.0)
    serve.add_argument("--scenario", action="append", default=[])
    serve.add_argument("--seed", type=int, default=0)
    client = sub.add_parser("client")
    client.add_argument("--url", required=True)
    client.add_argument("--bots", type=int, required=True)
    client.add_argument("--rate", type=float, required=True)
    client.add_argument("--duration", type=float, required=True)
    client.add_argument("--warmup", type=float, required=True)
    client.add_argument("--instrument", choices=PHASES, required=True)
    return parser


def _child_main(argv: Sequence[str] | None = None) -> int:
    args = _child_parser().parse_args(argv)
    if args.role == "serve":
        return serve_main(args.updates_per_second, args.scenario, args.seed)
    return client_main(ClientSettings(
        base_url=args.url, bots=args.bots, rate=args.rate, duration=args.duration,
        warmup=args.warmup, instrument=args.instrument == "on"))


if __name__ == "__main__":
    sys.exit(_child_main())

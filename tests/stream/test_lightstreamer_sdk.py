"""The unmodified Lightstreamer SDK 2.x against the simulator, instrumented."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ig_otel import _lightstreamer
from ig_otel import _telemetry as names

from .conftest import (
    EPIC,
    STALL_SECONDS,
    assert_no_secrets,
    login,
    ls_password,
    open_position,
    secrets_of,
    stream_health,
    wait_for,
)

ls = pytest.importorskip("lightstreamer.client")
pytestmark = pytest.mark.ls2

TICK_FIELDS = ["BID", "OFR", "LTV", "UTM"]


class Recorder:
    """The application's own client and subscription listener."""

    def __init__(self) -> None:
        self.statuses: list[str] = []
        self.updates = 0
        self.values: list[dict[str, Any]] = []
        self.subscribed = threading.Event()
        self.unsubscribed = threading.Event()

    def onStatusChange(self, status: str) -> None:
        self.statuses.append(status)

    def onItemUpdate(self, update: Any) -> None:
        self.updates += 1
        self.values.append(dict(update.getChangedFields()))

    def onSubscription(self) -> None:
        self.subscribed.set()

    def onUnsubscription(self) -> None:
        self.unsubscribed.set()

    @property
    def status(self) -> str:
        return self.statuses[-1] if self.statuses else ""


def connect(sim, password: str, *, fast_retries: bool = False):
    client = ls.LightstreamerClient(sim.stream_url, None)
    client.connectionDetails.setPassword(password)
    if fast_retries:
        options = client.connectionOptions
        options.setRetryDelay(200)
        options.setFirstRetryMaxDelay(100)
    recorder = Recorder()
    client.addListener(recorder)
    client.connect()
    return client, recorder


def subscribe(client, mode: str, item: str, fields: list[str], adapter=None):
    subscription = ls.Subscription(mode, [item], fields)
    if adapter:
        subscription.setDataAdapter(adapter)
    recorder = Recorder()
    subscription.addListener(recorder)
    client.subscribe(subscription)
    return subscription, recorder


def disconnect(client, recorder: Recorder) -> None:
    client.disconnect()
    wait_for(lambda: recorder.status == "DISCONNECTED", timeout=5)


def monitor_of(client):
    return _lightstreamer._clients[client].monitor


def test_updates_lag_status_subscriptions_and_spans_of_a_session(
    simulator, instrumented, telemetry
):
    rest = login(simulator)
    client, status = connect(simulator, ls_password(rest))
    price, prices = subscribe(
        client, "MERGE", f"PRICE:{simulator.account_id}:{EPIC}",
        ["BIDPRICE1", "ASKPRICE1", "TIMESTAMP"], adapter="Pricing",
    )
    tick, ticks = subscribe(client, "DISTINCT", f"CHART:{EPIC}:TICK", TICK_FIELDS)
    try:
        wait_for(lambda: prices.updates >= 10 and ticks.updates >= 10)
        assert instrumented.value(
            names.STREAM_STATUS.name, **{names.IG_STREAM_STATUS: "connected"}
        ) == 1
        subscriptions = instrumented.points(names.STREAM_SUBSCRIPTIONS.name)
        assert {p.attributes[names.IG_STREAM_ITEM_KIND]: p.value
                for p in subscriptions if p.value} == {"PRICE": 1, "CHART_TICK": 1}
        assert client.getListeners() == [status]
        assert price.getListeners() == [prices]
        name = monitor_of(client).name
        assert stream_health()[name] == "connected"

        # Unsubscribed, both listeners have seen every update: counts agree.
        client.unsubscribe(price)
        client.unsubscribe(tick)
        assert prices.unsubscribed.wait(5) and ticks.unsubscribed.wait(5)
        updates = instrumented.points(names.STREAM_UPDATES.name)
        by_kind = {p.attributes[names.IG_STREAM_ITEM_KIND]: p for p in updates}
        assert by_kind["PRICE"].value == prices.updates
        assert by_kind["CHART_TICK"].value == ticks.updates
        assert by_kind["PRICE"].attributes[names.IG_STREAM_EPIC] == EPIC
        assert by_kind["CHART_TICK"].attributes[names.IG_STREAM_MODE] == "DISTINCT"
        lags = {p.attributes[names.IG_STREAM_ITEM_KIND]: p
                for p in instrumented.points(names.STREAM_UPDATE_LAG.name)}
        assert lags["PRICE"].count >= 10 and lags["CHART_TICK"].count >= 10
        for lag in lags.values():
            assert 0.0 <= lag.sum / lag.count < 1.0
    finally:
        disconnect(client, status)

    # Closed on purpose: disconnected, and no longer part of readiness.
    assert instrumented.value(
        names.STREAM_STATUS.name, **{names.IG_STREAM_STATUS: "disconnected"}
    ) == 1
    assert name not in stream_health()
    spans = telemetry.finished_spans()
    [session] = [s for s in spans if s.name == names.SPAN_STREAM_SESSION]
    assert session.attributes[names.IG_STREAM_STATUS] == "connected"
    assert session.attributes[names.SERVER_ADDRESS] == "127.0.0.1"
    subscribes = [s for s in spans if s.name == names.SPAN_STREAM_SUBSCRIBE]
    assert sorted(s.attributes[names.IG_STREAM_ITEM_KIND] for s in subscribes) == [
        "CHART_TICK", "PRICE"]
    assert_no_secrets(telemetry, instrumented, secrets_of(simulator, rest))


def test_stream_stall_moves_silence_status_and_readiness(
    simulator, instrumented, telemetry
):
    rest = login(simulator)
    client, status = connect(simulator, ls_password(rest))
    _, ticks = subscribe(client, "DISTINCT", f"CHART:{EPIC}:TICK", TICK_FIELDS)
    try:
        wait_for(lambda: ticks.updates >= 3)
        name = monitor_of(client).name
        simulator.set_scenario("stream-stall")
        # The watchdog notices the silence; no metric collection is needed.
        wait_for(lambda: stream_health().get(name) == "stalled", timeout=5)
        events = telemetry.events(names.EVENT_STREAM_STATUS_CHANGE)
        stalled = [e for e in events
                   if e.attributes[names.IG_STREAM_STATUS] == "stalled"]
        assert stalled and stalled[0].severity_text == "WARN"
        [silence] = instrumented.points(names.STREAM_SILENCE.name)
        assert silence.value > STALL_SECONDS
        assert instrumented.value(
            names.STREAM_STATUS.name, **{names.IG_STREAM_STATUS: "stalled"}
        ) == 1
        assert default_readiness_warns(name)

        simulator.clear_scenario("stream-stall")
        wait_for(lambda: stream_health().get(name) == "connected", timeout=10)
        assert instrumented.value(
            names.STREAM_STATUS.name, **{names.IG_STREAM_STATUS: "connected"}
        ) == 1
    finally:
        disconnect(client, status)


def default_readiness_warns(name: str) -> bool:
    from ig_otel._health import default_registry

    document = default_registry().readiness()
    return document["status"] == "warn" and f"ig-stream-{name}:status" in (
        document["output"])


def test_ended_sessions_and_a_reconnect_storm_count_reconnects(
    simulator, instrumented, telemetry
):
    rest = login(simulator)
    client, status = connect(simulator, ls_password(rest), fast_retries=True)
    _, ticks = subscribe(client, "DISTINCT", f"CHART:{EPIC}:TICK", TICK_FIELDS)
    try:
        wait_for(lambda: ticks.updates >= 2)
        assert simulator.end_stream_sessions(48) == 1

        def reconnects() -> float:
            points = instrumented.points(names.STREAM_RECONNECTS.name)
            return points[0].value if points else 0

        wait_for(lambda: reconnects() >= 1 and status.status.startswith(
            "CONNECTED:"), timeout=10)
        simulator.set_scenario("reconnect-storm", count=2, after_seconds=0.1)
        assert simulator.end_stream_sessions(48) == 1
        wait_for(lambda: reconnects() >= 4 and status.status.startswith(
            "CONNECTED:"), timeout=15)
        assert status.statuses.count("DISCONNECTED:WILL-RETRY") == reconnects()
        count = ticks.updates
        wait_for(lambda: ticks.updates > count)
    finally:
        disconnect(client, status)
    sessions = [s for s in telemetry.finished_spans()
                if s.name == names.SPAN_STREAM_SESSION]
    assert len(sessions) >= 5


def test_deal_confirmed_on_the_stream_has_stream_latency(
    simulator, instrumented, telemetry
):
    rest = login(simulator)
    client, status = connect(simulator, ls_password(rest))
    _, trades = subscribe(client, "DISTINCT", f"TRADE:{simulator.account_id}",
                          ["CONFIRMS", "OPU", "WOU"])
    try:
        assert trades.subscribed.wait(5)
        simulator.set_scenario("slow-confirms", rest_seconds=0.0,
                               stream_seconds=0.3)
        open_position(rest, simulator)
        wait_for(lambda: any("CONFIRMS" in v and v["CONFIRMS"]
                             for v in trades.values))
        simulator.clear_scenario("slow-confirms")
        simulator.set_scenario("rejected-deals", reasons="MARKET_CLOSED")
        open_position(rest, simulator)
        # The rejected event comes last of what one confirmation records.
        wait_for(lambda: telemetry.events(names.EVENT_DEAL_REJECTED))
    finally:
        disconnect(client, status)

    confirmations = instrumented.points(names.DEAL_CONFIRMATIONS.name)
    assert {(p.attributes[names.IG_DEAL_STATUS],
             p.attributes[names.IG_CONFIRMATION_SOURCE]): p.value
            for p in confirmations} == {("ACCEPTED", "stream"): 1,
                                        ("REJECTED", "stream"): 1}
    [latency] = instrumented.points(names.DEAL_CONFIRMATION_LATENCY.name)
    assert latency.attributes == {names.IG_CONFIRMATION_SOURCE: "stream"}
    assert latency.count == 2
    assert latency.max >= 0.3
    [rejected] = telemetry.events(names.EVENT_DEAL_REJECTED)
    assert rejected.attributes[names.IG_DEAL_REASON] == "MARKET_CLOSED"
    assert_no_secrets(telemetry, instrumented, secrets_of(simulator, rest))


def test_malformed_frames_leave_the_counts_exact(simulator, instrumented):
    simulator.set_scenario("malformed-frames", probability=1.0)
    rest = login(simulator)
    client, status = connect(simulator, ls_password(rest))
    subscription, ticks = subscribe(client, "DISTINCT", f"CHART:{EPIC}:TICK",
                                    TICK_FIELDS)
    try:
        wait_for(lambda: ticks.updates >= 5)
        client.unsubscribe(subscription)
        assert ticks.unsubscribed.wait(5)
        assert instrumented.value(names.STREAM_UPDATES.name) == ticks.updates
        assert status.status == "CONNECTED:WS-STREAMING"
    finally:
        disconnect(client, status)


def test_a_failing_watcher_never_reaches_the_application(
    simulator, instrumented, monkeypatch
):
    monkeypatch.setattr(_lightstreamer._patches, "_warned", set())
    rest = login(simulator)
    client, status = connect(simulator, ls_password(rest))
    subscription, ticks = subscribe(client, "MERGE", f"MARKET:{EPIC}",
                                    ["BID", "UPDATE_TIME"])
    try:
        wait_for(lambda: ticks.updates >= 2)
        watch = _lightstreamer._clients[client]._subscriptions[subscription]
        watch._view = None  # every later update now fails inside the watcher
        count = ticks.updates
        wait_for(lambda: ticks.updates >= count + 3)
        assert status.status == "CONNECTED:WS-STREAMING"
        assert "update listener failed" in instrumented.logs.text
    finally:
        disconnect(client, status)

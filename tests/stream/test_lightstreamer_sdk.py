"""The Lightstreamer SDK (unmodified) against a TLCP server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ig_otel import _lightstreamer
from ig_otel import _telemetry as names
from ig_otel._config import Config
from ig_otel._deals import TRACKER

from .conftest import ACCOUNT, PASSWORD, value_of, wait_for

ls = pytest.importorskip("lightstreamer.client")
SECRETS = ("secretcst123", "secretxst456", ACCOUNT, PASSWORD)


@pytest.fixture
def instrumented(telemetry, fresh_metrics) -> Iterator:
    config = Config(stream_stall_seconds=0.6, stream_epics=("*",))
    _lightstreamer.instrument(
        config,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=fresh_metrics.provider,
    )
    yield fresh_metrics
    _lightstreamer.uninstrument()


class Recorder:
    def __init__(self) -> None:
        self.statuses: list[str] = []
        self.updates = 0
        self.subscribed = False

    def onStatusChange(self, status):
        self.statuses.append(status)

    def onItemUpdate(self, update):
        self.updates += 1

    def onSubscription(self):
        self.subscribed = True


def connect(server, recorder):
    client = ls.LightstreamerClient(server.url, None)
    client.connectionDetails.setPassword(PASSWORD)
    client.connectionDetails.setUser(ACCOUNT)
    client.addListener(recorder)
    client.connect()
    return client


def price_subscription(recorder):
    subscription = ls.Subscription(
        "MERGE",
        [f"PRICE:{ACCOUNT}:CS.D.EURUSD.MINI.IP"],
        ["BIDPRICE1", "ASKPRICE1", "TIMESTAMP"],
    )
    subscription.setDataAdapter("Pricing")
    subscription.addListener(recorder)
    return subscription


def no_secrets(telemetry, metrics) -> None:
    texts = [str(span.to_json()) for span in telemetry.finished_spans()]
    texts += [
        f"{item.log_record.attributes} {item.log_record.body}"
        for item in telemetry.logs.get_finished_logs()
    ]
    data = metrics.reader.get_metrics_data()
    texts.append(data.to_json() if data else "")
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def test_updates_lag_status_and_spans_of_an_sdk_session(
    tlcp_server, instrumented, telemetry
):
    tlcp_server.script.updates = 20
    recorder = Recorder()
    client = connect(tlcp_server, recorder)
    subscription = price_subscription(recorder)
    client.subscribe(subscription)
    try:
        assert wait_for(lambda: recorder.updates >= 20)
        points = instrumented.points(names.STREAM_UPDATES.name)
        assert value_of(points, **{names.IG_STREAM_ITEM_KIND: "PRICE"}) == 20
        assert value_of(points, **{names.IG_STREAM_EPIC: "CS.D.EURUSD.MINI.IP"}) == 20
        [lag] = instrumented.points(names.STREAM_UPDATE_LAG.name)
        assert lag.count == 20
        assert 0.0 <= lag.sum / lag.count < 1.0
        status = instrumented.points(names.STREAM_STATUS.name)
        assert value_of(status, **{names.IG_STREAM_STATUS: "connected"}) == 1
        subs = instrumented.points(names.STREAM_SUBSCRIPTIONS.name)
        assert value_of(subs, **{names.IG_STREAM_ITEM_KIND: "PRICE"}) == 1
        assert client.getListeners() == [recorder]
        assert subscription.getListeners() == [recorder]
    finally:
        client.unsubscribe(subscription)
        client.disconnect()

    spans = {span.name: span for span in telemetry.finished_spans()}
    session = spans[names.SPAN_STREAM_SESSION]
    assert session.attributes[names.IG_STREAM_STATUS] == "connected"
    assert session.attributes[names.SERVER_ADDRESS] == "127.0.0.1"
    subscribe = spans[names.SPAN_STREAM_SUBSCRIBE]
    assert subscribe.attributes[names.IG_STREAM_ITEM_KIND] == "PRICE"
    assert subscribe.end_time - subscribe.start_time < 5e9
    events = telemetry.events(names.EVENT_STREAM_STATUS_CHANGE)
    assert "connected" in [e.attributes[names.IG_STREAM_STATUS] for e in events]
    no_secrets(telemetry, instrumented)


def test_a_silent_stream_is_reported_stalled(tlcp_server, instrumented, telemetry):
    tlcp_server.script.updates = 1
    recorder = Recorder()
    client = connect(tlcp_server, recorder)
    client.subscribe(price_subscription(recorder))
    try:
        assert wait_for(lambda: recorder.updates >= 1)
        tlcp_server.script.stall = True

        def stalled():
            points = instrumented.points(names.STREAM_STATUS.name)
            return value_of(points, **{names.IG_STREAM_STATUS: "stalled"}) == 1

        assert wait_for(stalled, timeout=5)
        [silence] = instrumented.points(names.STREAM_SILENCE.name)
        assert silence.value > 0.6
        events = telemetry.events(names.EVENT_STREAM_STATUS_CHANGE)
        stalled_events = [
            e for e in events if e.attributes[names.IG_STREAM_STATUS] == "stalled"
        ]
        assert stalled_events and stalled_events[0].severity_text == "WARN"
    finally:
        client.disconnect()


def test_server_ending_the_session_counts_a_reconnect(
    tlcp_server, instrumented, telemetry
):
    tlcp_server.script.updates = 3
    tlcp_server.script.end_after_updates = 2
    recorder = Recorder()
    client = connect(tlcp_server, recorder)
    client.subscribe(price_subscription(recorder))
    try:
        def reconnected():
            points = instrumented.points(names.STREAM_RECONNECTS.name)
            return points and points[0].value >= 1

        assert wait_for(reconnected, timeout=15)
        assert "DISCONNECTED:WILL-RETRY" in recorder.statuses
        errors = instrumented.points(names.STREAM_ERRORS.name)
        assert value_of(errors, **{names.IG_STREAM_ERROR_CODE: "48"}) >= 0
    finally:
        tlcp_server.script.end_after_updates = None
        client.disconnect()
    sessions = [
        s for s in telemetry.finished_spans() if s.name == names.SPAN_STREAM_SESSION
    ]
    assert len(sessions) >= 2


def test_streamed_confirms_give_confirmation_latency(
    tlcp_server, instrumented, telemetry
):
    tlcp_server.script.deal_reference = "SDKREF00001"
    tlcp_server.script.deal_status = "REJECTED"
    TRACKER.sent("SDKREF00001")
    recorder = Recorder()
    client = connect(tlcp_server, recorder)
    subscription = ls.Subscription(
        "DISTINCT", [f"TRADE:{ACCOUNT}"], ["CONFIRMS", "OPU", "WOU"]
    )
    subscription.addListener(recorder)
    client.subscribe(subscription)
    try:
        assert wait_for(lambda: recorder.updates >= 1)

        def confirmed():
            return instrumented.points(names.DEAL_CONFIRMATION_LATENCY.name)

        assert wait_for(confirmed)
        [latency] = instrumented.points(names.DEAL_CONFIRMATION_LATENCY.name)
        assert latency.attributes == {names.IG_CONFIRMATION_SOURCE: "stream"}
        counts = instrumented.points(names.DEAL_CONFIRMATIONS.name)
        assert value_of(counts, **{names.IG_DEAL_STATUS: "REJECTED"}) == 1
        rejected = telemetry.events(names.EVENT_DEAL_REJECTED)
        assert rejected[0].attributes[names.IG_DEAL_REASON] == "MARKET_CLOSED"
    finally:
        client.disconnect()
    no_secrets(telemetry, instrumented)


def test_a_failing_listener_path_never_reaches_the_application(
    tlcp_server, instrumented
):
    recorder = Recorder()
    client = connect(tlcp_server, recorder)
    subscription = ls.Subscription("MERGE", ["MARKET:CS.D.EURUSD.MINI.IP"], ["BID"])
    subscription.addListener(recorder)
    subscription_watch = None
    client.subscribe(subscription)
    try:
        assert wait_for(lambda: recorder.updates >= 5)
        watch = _lightstreamer._clients[client]
        subscription_watch = watch._subscriptions[subscription]
        subscription_watch._view = None  # every later update now fails inside
        before = recorder.updates
        tlcp_server.script.updates = 3
        client.unsubscribe(subscription)
        client.subscribe(subscription)
        assert wait_for(lambda: recorder.updates >= before + 3)
        assert recorder.statuses[-1] == "CONNECTED:WS-STREAMING"
    finally:
        client.disconnect()

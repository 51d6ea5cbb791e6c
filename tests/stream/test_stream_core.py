"""Pure-core tests of the stream monitor: fake clocks, no sockets, no sleeps."""

from __future__ import annotations

import gc
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from ig_otel import _telemetry as names
from ig_otel._items import OTHER, EpicPolicy, classify
from ig_otel._stream import (
    LAG_BUFFER,
    LAG_RECORDS_PER_COLLECTION,
    StreamExporter,
    StreamMonitor,
    coarse_status,
    lag_from_epoch_ms,
    lag_from_uk_time,
)
from ig_otel._telemetry import StreamStatus

LONDON = ZoneInfo("Europe/London")


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def events_sink():
    emitted = []

    def emit(name, severity, attributes, body=None):
        emitted.append((name, severity, dict(attributes)))

    return emitted, emit


def epoch(year, month, day, hour, minute, second, zone=LONDON) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=zone).timestamp()


# -- items ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind", "epic"),
    [
        ("PRICE:ABC123:CS.D.EURUSD.MINI.IP", "PRICE", "CS.D.EURUSD.MINI.IP"),
        ("MARKET:IX.D.FTSE.DAILY.IP", "MARKET", "IX.D.FTSE.DAILY.IP"),
        ("L1:IX.D.FTSE.DAILY.IP", "MARKET", "IX.D.FTSE.DAILY.IP"),
        ("CHART:CS.D.EURUSD.MINI.IP:TICK", "CHART_TICK", "CS.D.EURUSD.MINI.IP"),
        ("CHART:CS.D.EURUSD.MINI.IP:1MINUTE", "CHART", "CS.D.EURUSD.MINI.IP"),
        ("ACCOUNT:ABC123", "ACCOUNT", None),
        ("TRADE:ABC123", "TRADE", None),
        ("CHART:X:FORTNIGHT", OTHER, None),
        ("ABC123", OTHER, None),
        ("PRICE:ABC123", OTHER, None),
        (None, OTHER, None),
    ],
)
def test_item_names_become_kind_and_epic_only(name, kind, epic):
    info = classify(name)
    assert (info.kind, info.epic) == (kind, epic)
    assert "ABC123" not in repr(info)


def test_epics_are_no_attribute_unless_configured():
    assert EpicPolicy().label("CS.D.EURUSD.MINI.IP") is None


def test_epic_list_admits_only_listed_epics():
    policy = EpicPolicy(["CS.D.EURUSD.MINI.IP"], limit=5)
    assert policy.label("CS.D.EURUSD.MINI.IP") == "CS.D.EURUSD.MINI.IP"
    assert policy.label("IX.D.FTSE.DAILY.IP") == OTHER
    assert policy.label(None) is None  # ACCOUNT, TRADE: no epic attribute


def test_epic_wildcard_is_capped_by_the_limit():
    policy = EpicPolicy(["*"], limit=2)
    labels = [policy.label(f"EPIC.{i}") for i in range(4)]
    assert labels == ["EPIC.0", "EPIC.1", OTHER, OTHER]
    assert policy.label("EPIC.0") == "EPIC.0"


# -- lag -----------------------------------------------------------------------


def test_epoch_millisecond_lag():
    assert lag_from_epoch_ms("1658218747365", 1658218747.865) == pytest.approx(0.5)
    assert lag_from_epoch_ms("v5", 1.0) is None
    assert lag_from_epoch_ms(None, 1.0) is None


def test_uk_time_in_winter_is_gmt():
    now = epoch(2025, 1, 15, 12, 0, 3)
    assert lag_from_uk_time("12:00:00", now) == pytest.approx(3.0)


def test_uk_time_in_summer_is_bst():
    now = datetime(2025, 7, 15, 11, 0, 2, tzinfo=ZoneInfo("UTC")).timestamp()
    assert lag_from_uk_time("12:00:00", now) == pytest.approx(2.0)


def test_uk_time_just_before_midnight_read_after_midnight():
    now = epoch(2025, 7, 16, 0, 0, 1)
    assert lag_from_uk_time("23:59:59", now) == pytest.approx(2.0)


def test_uk_time_slightly_ahead_across_midnight_is_negative():
    now = epoch(2025, 7, 15, 23, 59, 59)
    assert lag_from_uk_time("00:00:01", now) == pytest.approx(-2.0)


def test_uk_time_across_the_spring_clock_change():
    # 2025-03-30 01:00 GMT the clocks went forward to 02:00 BST.
    now = epoch(2025, 3, 30, 3, 0, 0)
    assert lag_from_uk_time("00:59:00", now) == pytest.approx(61 * 60.0)


@pytest.mark.parametrize("value", ["25:00:00", "1200:00", "", None, "ab:cd:ef"])
def test_bad_uk_times_are_skipped(value):
    assert lag_from_uk_time(value, 1.0e9) is None


def test_negative_lag_is_clamped_and_counted():
    wall = FakeClock(1000.0)
    monitor = StreamMonitor(wall_clock=wall, emit=lambda *a, **k: None)
    view = monitor.subscription(["PRICE:ABC123:EPIC.A"], ["BID", "TIMESTAMP"], "MERGE")
    slot = view.slot(1)
    monitor.lag(slot, "1000500")
    monitor.lag(slot, "999000")
    assert dict(monitor.drain_lag()) == {"PRICE": [0.0, 1.0]}
    assert monitor.lag_clamped == 1


def test_lag_buffer_decimates_and_widens_its_stride():
    wall = FakeClock(2000.0)
    monitor = StreamMonitor(wall_clock=wall, emit=lambda *a, **k: None)
    view = monitor.subscription(["CHART:E.P:TICK"], ["BID", "UTM"], "DISTINCT")
    slot = view.slot(1)
    sampled = 0
    for _ in range(4 * LAG_BUFFER):
        if slot.hit():
            sampled += 1
            monitor.lag(slot, "1999000")
    samples = dict(monitor.drain_lag())["CHART_TICK"]
    assert len(samples) < LAG_BUFFER
    assert sampled < 4 * LAG_BUFFER
    assert slot.count == 4 * LAG_BUFFER
    # The next interval starts at half the stride it ended with, not at 1.
    following = sum(slot.hit() for _ in range(4 * LAG_BUFFER))
    assert 0 < following < 4 * LAG_BUFFER


# -- status ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("CONNECTING", StreamStatus.CONNECTING),
        ("CONNECTED:STREAM-SENSING", StreamStatus.CONNECTING),
        ("CONNECTED:WS-STREAMING", StreamStatus.CONNECTED),
        ("CONNECTED:HTTP-POLLING", StreamStatus.CONNECTED),
        ("STALLED", StreamStatus.STALLED),
        ("DISCONNECTED:WILL-RETRY", StreamStatus.DISCONNECTED),
        ("DISCONNECTED:TRYING-RECOVERY", StreamStatus.DISCONNECTED),
        ("DISCONNECTED", StreamStatus.DISCONNECTED),
    ],
)
def test_sdk_status_strings_map_to_coarse_status(raw, status):
    assert coarse_status(raw) is status


def test_connected_stream_silent_past_the_threshold_is_stalled():
    clock = FakeClock()
    emitted, emit = events_sink()
    monitor = StreamMonitor(stall_seconds=5, clock=clock, emit=emit)
    monitor.status("CONNECTING")
    monitor.status("CONNECTED:WS-STREAMING")
    clock.now += 4.9
    assert monitor.poll() is StreamStatus.CONNECTED
    clock.now += 0.2
    assert monitor.silence() == pytest.approx(5.1)
    assert monitor.poll() is StreamStatus.STALLED
    monitor.touch()
    assert monitor.poll() is StreamStatus.CONNECTED
    statuses = [e[2][names.IG_STREAM_STATUS] for e in emitted]
    assert statuses == ["connecting", "connected", "stalled", "connected"]
    severities = [e[1].name for e in emitted]
    assert severities == ["INFO", "INFO", "WARN", "INFO"]
    assert emitted[2][2][names.IG_STREAM_STATUS_DETAIL] == "CONNECTED:WS-STREAMING"


def test_reconnect_is_connected_after_a_retrying_disconnect():
    monitor = StreamMonitor(clock=FakeClock(), emit=lambda *a, **k: None)
    for raw in (
        "CONNECTING", "CONNECTED:WS-STREAMING", "DISCONNECTED:WILL-RETRY",
        "CONNECTING", "CONNECTED:WS-STREAMING", "DISCONNECTED:TRYING-RECOVERY",
        "CONNECTED:HTTP-POLLING", "DISCONNECTED", "CONNECTING",
        "CONNECTED:WS-STREAMING",
    ):
        monitor.status(raw)
    assert monitor.reconnects == 2


# -- aggregation and export -------------------------------------------------------


def make_monitor(clock=None, epics=None):
    return StreamMonitor(
        clock=clock or FakeClock(),
        epics=epics,
        wall_clock=FakeClock(1_700_000_000.0),
        emit=lambda *a, **k: None,
    )


def test_updates_are_counted_by_kind_mode_and_allowed_epic(fresh_metrics):
    exporter = StreamExporter(fresh_metrics.provider)
    monitor = make_monitor(epics=EpicPolicy(["*"], limit=1))
    exporter.add(monitor)
    view = monitor.subscription(
        ["PRICE:ABC123:EPIC.A", "PRICE:ABC123:EPIC.B"], ["BID", "TIMESTAMP"], "MERGE"
    )
    for _ in range(3):
        view.slot(1).hit()
    view.slot(2).hit()

    points = fresh_metrics.points(names.STREAM_UPDATES.name)
    by_epic = {p.attributes[names.IG_STREAM_EPIC]: p.value for p in points}
    assert by_epic == {"EPIC.A": 3, OTHER: 1}
    assert {p.attributes[names.IG_STREAM_ITEM_KIND] for p in points} == {"PRICE"}
    assert {p.attributes[names.IG_STREAM_MODE] for p in points} == {"MERGE"}
    assert all("ABC123" not in str(p.attributes) for p in points)


def test_observable_export_of_every_aggregate(fresh_metrics):
    clock = FakeClock()
    exporter = StreamExporter(fresh_metrics.provider)
    monitor = make_monitor(clock)
    exporter.add(monitor)
    monitor.status("CONNECTED:WS-STREAMING")
    view = monitor.subscription(["MARKET:EPIC.A"], ["BID", "UPDATE_TIME"], "MERGE")
    monitor.subscribed(view)
    monitor.lost_updates("MARKET", 4)
    monitor.error(21)
    monitor.error("65")
    slot = view.slot(1)
    slot.hit()
    monitor.lag(slot, "1699999999500")  # not HH:MM:SS: skipped
    chart = monitor.subscription(["CHART:EPIC.A:TICK"], ["UTM"], "DISTINCT")
    chart.slot(1).hit()
    monitor.lag(chart.slot(1), "1699999999500")
    clock.now += 3.0

    data = {
        spec.name: fresh_metrics.points(spec.name)
        for spec in (names.STREAM_UPDATES,)
    }
    assert sum(p.value for p in data[names.STREAM_UPDATES.name]) == 2
    lag = fresh_metrics.points(names.STREAM_UPDATE_LAG.name)
    assert lag == [] or lag[0].count == 1
    silence = fresh_metrics.points(names.STREAM_SILENCE.name)
    assert silence[0].value == pytest.approx(3.0)
    status = {
        p.attributes[names.IG_STREAM_STATUS]: p.value
        for p in fresh_metrics.points(names.STREAM_STATUS.name)
    }
    assert status == {"connecting": 0, "connected": 1, "stalled": 0, "disconnected": 0}
    subs = {
        p.attributes[names.IG_STREAM_ITEM_KIND]: p.value
        for p in fresh_metrics.points(names.STREAM_SUBSCRIPTIONS.name)
    }
    assert subs["MARKET"] == 1 and subs["CHART_TICK"] == 0
    lost = fresh_metrics.points(names.STREAM_LOST_UPDATES.name)
    assert [(p.attributes[names.IG_STREAM_ITEM_KIND], p.value) for p in lost] == [
        ("MARKET", 4)
    ]
    errors = {
        p.attributes[names.IG_STREAM_ERROR_CODE]: p.value
        for p in fresh_metrics.points(names.STREAM_ERRORS.name)
    }
    assert errors == {"21": 1, "65": 1}


def test_lag_samples_reach_the_histogram_in_the_same_collection(fresh_metrics):
    exporter = StreamExporter(fresh_metrics.provider)
    monitor = make_monitor()
    exporter.add(monitor)
    view = monitor.subscription(["CHART:EPIC.A:TICK"], ["UTM"], "DISTINCT")
    for millis in ("1699999999500", "1699999998000"):
        view.slot(1).hit()
        monitor.lag(view.slot(1), millis)

    [point] = fresh_metrics.points(names.STREAM_UPDATE_LAG.name)
    assert point.count == 2
    assert point.sum == pytest.approx(2.5)
    assert point.attributes == {names.IG_STREAM_ITEM_KIND: "CHART_TICK"}


def test_many_streams_record_a_bounded_number_of_lag_points(fresh_metrics):
    exporter = StreamExporter(fresh_metrics.provider)
    monitors = [make_monitor() for _ in range(12)]
    for monitor in monitors:
        exporter.add(monitor)
        view = monitor.subscription(["CHART:EPIC.A:TICK"], ["UTM"], "DISTINCT")
        for _ in range(LAG_BUFFER - 1):
            view.slot(1).hit()
            monitor.lag(view.slot(1), "1699999999500")

    [point] = fresh_metrics.points(names.STREAM_UPDATE_LAG.name)
    assert point.count == LAG_RECORDS_PER_COLLECTION
    assert 12 * (LAG_BUFFER - 1) > LAG_RECORDS_PER_COLLECTION


def test_counts_of_a_collected_monitor_are_kept(fresh_metrics):
    exporter = StreamExporter(fresh_metrics.provider)
    monitor = make_monitor()
    exporter.add(monitor)
    view = monitor.subscription(["TRADE:ABC123"], ["CONFIRMS"], "DISTINCT")
    view.slot(1).hit()
    monitor.error(1)
    assert sum(p.value for p in fresh_metrics.points(names.STREAM_UPDATES.name)) == 1

    del monitor, view
    gc.collect()
    assert sum(p.value for p in fresh_metrics.points(names.STREAM_UPDATES.name)) == 1
    assert fresh_metrics.points(names.STREAM_STATUS.name) == []


def test_forgotten_subscription_keeps_its_update_count():
    monitor = make_monitor()
    view = monitor.subscription(["ACCOUNT:ABC123"], ["PNL"], "MERGE")
    view.slot(1).hit()
    monitor.forget(view)
    assert monitor.update_counts() == {("ACCOUNT", "MERGE", None): 1}
    assert monitor.views() == []


def test_streamed_confirmation_is_counted_and_timed(fresh_metrics):
    from ig_otel._deals import TRACKER

    exporter = StreamExporter(fresh_metrics.provider)
    monitor = StreamMonitor(deals=exporter.deals, emit=lambda *a, **k: None)
    TRACKER.sent("CORE-REF-1")
    monitor.trade_fields('{"dealReference":"CORE-REF-1","dealStatus":"ACCEPTED",'
                         '"reason":"SUCCESS"}')
    monitor.trade_fields("not json")
    [count] = fresh_metrics.points(names.DEAL_CONFIRMATIONS.name)
    assert count.attributes[names.IG_CONFIRMATION_SOURCE] == "stream"
    assert count.attributes[names.IG_DEAL_STATUS] == "ACCEPTED"
    [latency] = fresh_metrics.points(names.DEAL_CONFIRMATION_LATENCY.name)
    assert latency.count == 1


# -- health ---------------------------------------------------------------------


class FakeHealth:
    def __init__(self, fail: bool = False) -> None:
        self.statuses: list[tuple[str, StreamStatus]] = []
        self.forgotten: list[str] = []
        self.fail = fail

    def set_stream_status(self, name: str, status: StreamStatus) -> None:
        if self.fail:
            raise RuntimeError("registry is broken")
        self.statuses.append((name, status))

    def forget_stream(self, name: str) -> None:
        if self.fail:
            raise RuntimeError("registry is broken")
        self.forgotten.append(name)


def test_status_changes_reach_health_under_the_monitor_name():
    clock = FakeClock()
    health = FakeHealth()
    monitor = StreamMonitor(stall_seconds=5, clock=clock, emit=lambda *a, **k: None,
                            name="lightstreamer-7", health=health)
    monitor.status("CONNECTING")
    monitor.status("CONNECTED:WS-STREAMING")
    clock.now += 6
    monitor.poll()
    monitor.poll()
    assert health.statuses == [
        ("lightstreamer-7", StreamStatus.CONNECTING),
        ("lightstreamer-7", StreamStatus.CONNECTED),
        ("lightstreamer-7", StreamStatus.STALLED),
    ]


def test_a_stream_closed_on_purpose_leaves_health_until_it_connects_again():
    health = FakeHealth()
    monitor = StreamMonitor(clock=FakeClock(), emit=lambda *a, **k: None,
                            name="tlcp-1", health=health)
    monitor.status("CONNECTED:WS-STREAMING")
    monitor.closed_by_application()
    monitor.status("DISCONNECTED")
    assert health.forgotten == ["tlcp-1"]
    assert health.statuses == [("tlcp-1", StreamStatus.CONNECTED)]
    monitor.status("CONNECTING")
    assert health.statuses[-1] == ("tlcp-1", StreamStatus.CONNECTING)


def test_a_failing_health_registry_never_reaches_the_stream():
    monitor = StreamMonitor(clock=FakeClock(), emit=lambda *a, **k: None,
                            health=FakeHealth(fail=True))
    monitor.status("CONNECTED:WS-STREAMING")
    monitor.closed_by_application()
    assert monitor.reported_status is StreamStatus.CONNECTED

"""trading-ig's streaming service (SDK 1.0.x), unmodified, instrumented.

Run in the tig environment: ``/tmp/venvs/tig/bin/pytest -m tig tests/stream``.

SDK 1.0.3 opens its WebSocket with ``aiohttp`` and ``ssl=None``, which
aiohttp deprecates with a ``DeprecationWarning``. Under ``filterwarnings =
error`` that warning is raised inside the SDK's connection task, the session
never opens and no update ever arrives, instrumented or not: hence the marker
below. The instrumentation itself needs nothing special for 1.0.x.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from ig_otel import _lightstreamer
from ig_otel import _telemetry as names

from .conftest import EPIC, assert_no_secrets, stream_health, wait_for

pytestmark = [
    pytest.mark.tig,
    pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning"),
]


@pytest.fixture
def trading_ig(simulator, monkeypatch):
    """The ``trading_ig`` package with its demo base URL on the simulator."""
    rest = pytest.importorskip("trading_ig.rest")
    monkeypatch.setitem(rest.D_BASE_URL, "demo", simulator.rest_url)
    return pytest.importorskip("trading_ig")


@pytest.fixture
def service(trading_ig, simulator, instrumented):
    ig = trading_ig.IGService(simulator.username, simulator.password,
                              simulator.api_key, acc_type="demo",
                              acc_number=simulator.account_id)
    yield ig
    ig.session.close()


class Listener:
    """The application's subscription listener."""

    def __init__(self) -> None:
        self.updates = 0
        self.changed: list[dict[str, Any]] = []
        self.subscribed = threading.Event()
        self.unsubscribed = threading.Event()

    def onSubscription(self) -> None:
        self.subscribed.set()

    def onUnsubscription(self) -> None:
        self.unsubscribed.set()

    def onItemUpdate(self, update: Any) -> None:
        self.updates += 1
        self.changed.append(dict(update.getChangedFields()))

    def confirm(self, reference: str) -> dict | None:
        for fields in self.changed:
            value = fields.get("CONFIRMS")
            if value and json.loads(value).get("dealReference") == reference:
                return json.loads(value)
        return None


def subscribe(stream, mode: str, item: str, fields: list[str], adapter=None):
    from lightstreamer.client import Subscription

    subscription = Subscription(mode, [item], fields)
    if adapter:
        subscription.setDataAdapter(adapter)
    listener = Listener()
    subscription.addListener(listener)
    stream.subscribe(subscription)
    return subscription, listener


def test_ig_stream_service_prices_trades_and_deal_confirmation(
    trading_ig, service, simulator, instrumented, telemetry
):
    stream = trading_ig.IGStreamService(service)
    stream.create_session(version="2")
    price, prices = subscribe(
        stream, "MERGE", f"PRICE:{simulator.account_id}:{EPIC}",
        ["BIDPRICE1", "ASKPRICE1", "TIMESTAMP"], adapter="Pricing")
    trade, trades = subscribe(stream, "DISTINCT", f"TRADE:{simulator.account_id}",
                              ["CONFIRMS", "OPU", "WOU"])
    name = _lightstreamer._clients[stream.ls_client].monitor.name
    try:
        assert trades.subscribed.wait(5)
        wait_for(lambda: prices.updates >= 5)
        assert stream_health()[name] == "connected"
        opened = service.create_open_position(
            currency_code="USD", direction="BUY", epic=EPIC, expiry="-",
            force_open=True, guaranteed_stop=False, level=None,
            limit_distance=None, limit_level=None, order_type="MARKET",
            quote_id=None, size=1, stop_distance=None, stop_level=None,
            trailing_stop=False, trailing_stop_increment=None)
        reference = opened["dealReference"]
        wait_for(lambda: trades.confirm(reference))

        stream.unsubscribe(price)
        stream.unsubscribe(trade)
        assert prices.unsubscribed.wait(5) and trades.unsubscribed.wait(5)
        updates = {p.attributes[names.IG_STREAM_ITEM_KIND]: p.value
                   for p in instrumented.points(names.STREAM_UPDATES.name)}
        assert updates == {"PRICE": prices.updates, "TRADE": trades.updates}
        [lag] = instrumented.points(names.STREAM_UPDATE_LAG.name)
        assert lag.attributes == {names.IG_STREAM_ITEM_KIND: "PRICE"}
        assert lag.count >= 5 and 0.0 <= lag.sum / lag.count < 1.0
        assert instrumented.value(
            names.STREAM_STATUS.name, **{names.IG_STREAM_STATUS: "connected"}) == 1
    finally:
        stream.disconnect()
    service.logout()

    # trading-ig also GETs /confirms: each source is timed once.
    latency = {p.attributes[names.IG_CONFIRMATION_SOURCE]: p.count
               for p in instrumented.points(names.DEAL_CONFIRMATION_LATENCY.name)}
    assert latency["stream"] == 1
    assert instrumented.value(
        names.DEAL_CONFIRMATIONS.name,
        **{names.IG_CONFIRMATION_SOURCE: "stream", names.IG_DEAL_STATUS: "ACCEPTED"},
    ) == 1
    wait_for(lambda: name not in stream_health(), timeout=5)
    secrets = [simulator.password, simulator.api_key, simulator.account_id]
    secrets += [value for key, value in service.session.headers.items()
                if key in ("CST", "X-SECURITY-TOKEN")]
    assert_no_secrets(telemetry, instrumented, secrets)


def test_sdk_1_0_x_end_48_counts_a_reconnect_and_a_stall_shows(
    trading_ig, service, simulator, instrumented
):
    stream = trading_ig.IGStreamService(service)
    stream.create_session(version="2")
    _, ticks = subscribe(stream, "DISTINCT", f"CHART:{EPIC}:TICK", ["BID", "UTM"])
    name = _lightstreamer._clients[stream.ls_client].monitor.name
    try:
        wait_for(lambda: ticks.updates >= 2)
        assert simulator.end_stream_sessions(48) == 1

        def reconnects() -> float:
            points = instrumented.points(names.STREAM_RECONNECTS.name)
            return points[0].value if points else 0

        wait_for(lambda: reconnects() == 1, timeout=10)
        count = ticks.updates
        wait_for(lambda: ticks.updates > count)

        simulator.set_scenario("stream-stall")
        wait_for(lambda: stream_health().get(name) == "stalled", timeout=5)
        [silence] = instrumented.points(names.STREAM_SILENCE.name)
        assert silence.value > 0.5
        simulator.clear_scenario("stream-stall")
        wait_for(lambda: stream_health().get(name) == "connected", timeout=10)
    finally:
        stream.disconnect()
    service.logout()

"""The unmodified trading-ig (REST + streaming with SDK 1.0.3) against the simulator.

Run in the tig environment: ``/tmp/venvs/tig/bin/pytest -m tig tests/simulator``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from ig_otel.simulator import Simulator

from .conftest import EPIC, wait_for

pytestmark = [
    pytest.mark.tig,
    # SDK 1.0.3 passes ssl=None to aiohttp, which aiohttp deprecates.
    pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning"),
]


@pytest.fixture
def tig(simulator: Simulator, monkeypatch: pytest.MonkeyPatch):
    """The ``trading_ig`` package with its demo base URL on the simulator."""
    rest = pytest.importorskip("trading_ig.rest")
    monkeypatch.setitem(rest.D_BASE_URL, "demo", simulator.rest_url)
    return pytest.importorskip("trading_ig")


@pytest.fixture
def service(tig, simulator: Simulator) -> Iterator[object]:
    """An ``IGService`` for the simulator's credentials (not yet logged in)."""
    ig = tig.IGService(simulator.username, simulator.password, simulator.api_key,
                       acc_type="demo", acc_number=simulator.account_id)
    yield ig
    ig.session.close()


class TradeListener:
    """Collects TRADE field values as the SDK 1.0.3 delivers them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []
        self.subscribed = threading.Event()

    def onSubscription(self) -> None:
        self.subscribed.set()

    def onItemUpdate(self, update) -> None:
        for name, value in update.getChangedFields().items():
            if value:
                self.events.append((name, json.loads(value)))

    def find(self, name: str, **match: str) -> dict | None:
        for field_name, payload in self.events:
            if field_name == name and all(payload.get(k) == v
                                          for k, v in match.items()):
                return payload
        return None


def test_trading_ig_full_flow_rest_and_stream(tig, service, simulator: Simulator):
    from lightstreamer.client import Subscription
    from trading_ig.streamer.manager import StreamingManager

    stream = tig.IGStreamService(service)
    stream.create_session(version="2")
    manager = StreamingManager(stream)
    try:
        accounts = service.fetch_accounts()
        assert [a["accountId"] for a in accounts["accounts"]] == [
            simulator.account_id, simulator.second_account_id]

        manager.start_tick_subscription(EPIC)
        ticker = manager.ticker(EPIC, timeout_length=3)
        assert ticker.bid > 0
        wait_for(lambda: isinstance(ticker.last_traded_volume, int)
                 and ticker.timestamp is not None, timeout=5)

        listener = TradeListener()
        trade = Subscription("DISTINCT", [f"TRADE:{simulator.account_id}"],
                             ["CONFIRMS", "OPU", "WOU"])
        trade.addListener(listener)
        stream.subscribe(trade)
        assert listener.subscribed.wait(5)

        opened = service.create_open_position(
            currency_code="USD", direction="BUY", epic=EPIC, expiry="-",
            force_open=True, guaranteed_stop=False, level=None, limit_distance=None,
            limit_level=None, order_type="MARKET", quote_id=None, size=1,
            stop_distance=None, stop_level=None, trailing_stop=False,
            trailing_stop_increment=None)
        assert opened["dealStatus"] == "ACCEPTED"
        deal_id = opened["dealId"]
        positions = service.fetch_open_positions()
        assert [p["position"]["dealId"] for p in positions["positions"]] == [deal_id]

        reference = opened["dealReference"]
        wait_for(lambda: listener.find("OPU", dealReference=reference,
                                       status="OPEN"), timeout=5)
        assert listener.find("CONFIRMS", dealReference=reference,
                             dealStatus="ACCEPTED")

        closed = service.close_open_position(
            deal_id=deal_id, direction="SELL", epic=None, expiry=None, level=None,
            order_type="MARKET", quote_id=None, size=1)
        assert closed["dealStatus"] == "ACCEPTED"
        assert closed["status"] == "CLOSED"
        wait_for(lambda: listener.find("OPU", dealId=deal_id, status="DELETED"),
                 timeout=5)
        assert service.fetch_open_positions()["positions"] == []
    finally:
        manager.stop_subscriptions()
    service.logout()
    assert simulator.requests_served["DELETE /session"] == 1
    assert simulator.snapshot()["rest_sessions"] == 0


def test_trading_ig_working_order_and_history(tig, service, simulator: Simulator):
    service.create_session()
    created = service.create_working_order(
        currency_code="USD", direction="BUY", epic=EPIC, order_type="LIMIT",
        expiry="-", guaranteed_stop=False, time_in_force="GOOD_TILL_CANCELLED",
        size=1, level=1.0, limit_distance=None, limit_level=None,
        stop_distance=None, stop_level=None)
    assert created["dealStatus"] == "ACCEPTED"
    orders = service.fetch_working_orders()["workingOrders"]
    assert orders[0]["workingOrderData"]["dealId"] == created["dealId"]
    deleted = service.delete_working_order(created["dealId"])
    assert deleted["status"] == "DELETED"

    prices = service.fetch_historical_prices_by_epic(EPIC, numpoints=5, wait=0)
    assert len(prices["prices"]) == 5
    assert prices["metadata"]["allowance"]["remainingAllowance"] == 9995
    ranged = service.fetch_historical_prices_by_epic_and_date_range(
        EPIC, "HOUR", "2024-01-01 00:00:00", "2024-01-01 03:00:00")
    assert len(ranged["prices"]) == 4
    assert ranged["allowance"]["remainingAllowance"] == 9991
    activity = service.fetch_account_activity(from_date=None)
    assert len(activity["activities"]) >= 2
    assert service.fetch_market_by_epic(EPIC)["instrument"]["epic"] == EPIC
    sentiment = service.fetch_client_sentiment_by_instrument(["EURUSD", "FT100"])
    assert len(sentiment["clientSentiments"]) == 2
    service.logout()


def test_trading_ig_v3_oauth_and_encrypted_login(tig, service, simulator):
    pytest.importorskip("Crypto")
    session = service.create_session(encryption=True, version="2")
    assert session["currentAccountId"] == simulator.account_id
    service.logout()

    v3 = tig.IGService(simulator.username, simulator.password, simulator.api_key,
                       acc_type="demo", acc_number=simulator.account_id)
    body = v3.create_session(version="3")
    assert body["oauthToken"]["token_type"] == "Bearer"
    assert v3.read_session(fetch_session_tokens="true")["accountId"] == (
        simulator.account_id)
    assert "CST" in v3.session.headers
    v3.refresh_session()
    assert v3.fetch_accounts()["accounts"]
    v3.session.close()


def test_trading_ig_switch_account_and_bad_login(tig, service, simulator):
    service.create_session()
    switched = service.switch_account(simulator.second_account_id, False)
    assert switched["dealingEnabled"] is True
    assert service.read_session()["accountId"] == simulator.second_account_id
    service.logout()

    wrong = tig.IGService(simulator.username, "wrong", simulator.api_key,
                          acc_type="demo")
    with pytest.raises(tig.rest.IGException, match="invalid-details"):
        wrong.create_session()
    wrong.session.close()


def test_sdk_1_0_3_is_accepted_while_ig_rejects_tlcp_2_5(tig, service, simulator):
    from .lsclient import connect, disconnect, ls_password, subscribe

    simulator.set_scenario("ig-rejects-tlcp-2.5")
    service.create_session()
    client, status = connect(simulator, ls_password(service.session))
    try:
        _, ticks = subscribe(client, "DISTINCT", [f"CHART:{EPIC}:TICK"],
                             ["BID", "OFR", "UTM"])
        wait_for(lambda: ticks.updates, timeout=5)
        assert status.server_errors == []
    finally:
        disconnect(client, status)


def test_sdk_1_0_3_recreates_its_session_after_end_48(tig, service, simulator):
    from .lsclient import connect, disconnect, ls_password, subscribe

    service.create_session()
    client, status = connect(simulator, ls_password(service.session))
    try:
        _, ticks = subscribe(client, "DISTINCT", [f"CHART:{EPIC}:TICK"],
                             ["BID", "OFR", "UTM"])
        wait_for(lambda: ticks.updates, timeout=5)
        assert simulator.end_stream_sessions() == 1
        count = len(ticks.updates)
        wait_for(lambda: simulator.stats.stream_sessions == 2
                 and len(ticks.updates) > count, timeout=10)
        assert "DISCONNECTED:WILL-RETRY" in status.statuses
    finally:
        disconnect(client, status)

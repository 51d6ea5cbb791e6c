"""Pure cores of the simulator: allowances, market model, scenarios, state."""

from __future__ import annotations

import random

import pytest

from ig_otel.simulator._allowance import (
    ACCOUNT_ALLOWANCE_EXCEEDED,
    APP_ALLOWANCE_EXCEEDED,
    TRADING_ALLOWANCE_EXCEEDED,
    AllowanceBook,
    AllowanceLimits,
    PointsAllowance,
    RollingWindow,
)
from ig_otel.simulator._items import parse_item, render_tick
from ig_otel.simulator._market import MarketModel
from ig_otel.simulator._scenarios import SCENARIOS, ScenarioBook, ScenarioError
from ig_otel.simulator._state import Account, IGError, IGState

EPIC = "CS.D.EURUSD.MINI.IP"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rolling_window_frees_a_slot_sixty_seconds_after_each_request():
    window = RollingWindow()
    for second in range(3):
        window.record(100.0 + second)
    assert not window.allows(3, 130.0)
    assert window.retry_after(130.0) == pytest.approx(30.0)
    assert window.allows(3, 160.0)
    assert window.used(161.5) == 1


def test_non_trading_allowance_reports_account_then_app_code():
    book = AllowanceBook()
    limits = AllowanceLimits(app_non_trading=3, account_non_trading=2)
    assert book.check_non_trading("key", "A1", 0.0, limits) is None
    assert book.check_non_trading("key", "A1", 0.0, limits) is None
    spent = book.check_non_trading("key", "A1", 0.0, limits)
    assert spent == ACCOUNT_ALLOWANCE_EXCEEDED
    assert book.check_non_trading("key", "A2", 0.0, limits) is None
    assert book.check_non_trading("key", "A3", 0.0, limits) == APP_ALLOWANCE_EXCEEDED
    assert book.check_non_trading("key", "A3", 60.0, limits) is None


def test_trading_allowance_is_per_account_and_refused_calls_do_not_count():
    book = AllowanceBook()
    limits = AllowanceLimits(account_trading=1)
    assert book.check_trading("A1", 0.0, limits) is None
    for _ in range(5):
        assert book.check_trading("A1", 1.0, limits) == TRADING_ALLOWANCE_EXCEEDED
    assert book.check_trading("A2", 1.0, limits) is None
    assert book.check_trading("A1", 60.0, limits) is None


def test_points_allowance_spends_points_and_resets_weekly():
    points = PointsAllowance(start=0.0)
    points.spend(9_990, 10.0)
    assert points.remaining(10_000, 10.0) == 10
    assert points.expiry(10.0) == 7 * 24 * 3600 - 10
    assert points.remaining(10_000, 7 * 24 * 3600 + 1.0) == 10_000


def test_market_walk_is_deterministic_for_a_seed_and_differs_across_seeds():
    def walk(seed: int) -> list[float]:
        market = MarketModel(seed)
        return [market.advance(EPIC, 1_000 * i).bid for i in range(50)]

    assert walk(3) == walk(3)
    assert walk(3) != walk(4)


def test_market_quote_has_spread_day_stats_and_candles():
    market = MarketModel(1)
    quotes = [market.advance(EPIC, 1_700_000_000_000 + 400 * i) for i in range(10)]
    last = quotes[-1]
    assert last.offer > last.bid
    assert last.day_low <= last.mid <= last.day_high
    current, closed = market.candle(EPIC, "SECOND")
    assert current is not None and closed is not None
    assert closed.ticks >= 1 and current.start_ms % 1000 == 0


def test_history_is_deterministic_and_sized():
    market = MarketModel(5)
    first = market.history(EPIC, "MINUTE", 1_700_000_000_000, 30)
    again = MarketModel(5).history(EPIC, "MINUTE", 1_700_000_000_000, 30)
    assert first == again and len(first) == 30
    assert first[0]["snapshotTimeUTC"] < first[-1]["snapshotTimeUTC"]


def test_tick_values_use_integers_for_utm_ltv_ttv():
    quote = MarketModel(0).advance(EPIC, 1_700_000_000_123)
    names = ["UTM", "LTV", "TTV", "LTP", "BID"]
    values = dict(zip(names, render_tick(quote, names), strict=True))
    assert values["UTM"] == "1700000000123"
    assert values["LTV"].isdigit() and values["TTV"].isdigit()
    assert values["LTP"] is None
    assert values["BID"] == f"{quote.bid:.5f}"


def test_item_names_parse_only_for_known_epics_and_own_accounts():
    market = MarketModel(0)
    assert parse_item(f"PRICE:ABC123:{EPIC}", ["ABC123"], market).kind == "PRICE"
    assert parse_item(f"CHART:{EPIC}:TICK", [], market).kind == "CHART_TICK"
    assert parse_item(f"CHART:{EPIC}:5MINUTE", [], market).scale == "5MINUTE"
    assert parse_item("TRADE:OTHER", ["ABC123"], market) is None
    assert parse_item(f"CHART:{EPIC}:DAY", [], market) is None
    assert parse_item("MARKET:UNKNOWN.EPIC", [], market) is None


def test_every_scenario_has_a_description_and_resolves_its_defaults():
    for name, spec in SCENARIOS.items():
        assert spec.description and "\n" not in spec.description
        assert spec.resolve({}) == dict(spec.params), name


def test_scenario_rejects_unknown_names_params_and_bad_types():
    book = ScenarioBook(FakeClock(), random.Random(0))
    with pytest.raises(ScenarioError, match="unknown scenario"):
        book.activate("nope")
    with pytest.raises(ScenarioError, match="no parameter"):
        book.activate("outage", minutes=3)
    with pytest.raises(ScenarioError, match="must be a float"):
        book.activate("outage", seconds="soon")
    with pytest.raises(ScenarioError, match="mode"):
        book.activate("stream-disconnect", mode="explode")


def test_outage_lasts_its_window_then_recovers():
    clock = FakeClock()
    book = ScenarioBook(clock, random.Random(0))
    book.activate("outage", seconds=5, status="500")
    assert book.rest_outage() == (500, "system.error")
    clock.now += 5
    assert book.rest_outage() is None


def test_outage_with_zero_seconds_lasts_until_cleared():
    clock = FakeClock()
    book = ScenarioBook(clock, random.Random(0))
    book.activate("outage", seconds=0)
    clock.now += 3600
    assert book.rest_outage() == (503, "system.error")
    assert book.deactivate("outage")
    assert book.rest_outage() is None


def test_random_decisions_are_reproducible_for_a_seed():
    def decisions(seed: int) -> list[object]:
        book = ScenarioBook(FakeClock(), random.Random(seed))
        book.activate("latency")
        book.activate("rejected-deals", probability=0.5)
        book.activate("malformed-frames", probability=0.5)
        return [(book.rest_delay(), book.reject_reason(), book.garbage_line())
                for _ in range(20)]

    assert decisions(1) == decisions(1)
    assert decisions(1) != decisions(2)


def test_scenarios_combine_and_each_applies():
    clock = FakeClock()
    book = ScenarioBook(clock, random.Random(0))
    book.activate("slow-confirms", rest_seconds=2, stream_seconds=1)
    book.activate("allowance-exhaustion", account_trading=2)
    book.activate("reconnect-storm", count=2)
    assert book.confirm_hidden(1.0) and not book.confirm_hidden(2.5)
    assert book.confirm_stream_delay() == 1.0
    assert book.allowance_overrides()["account_trading"] == 2
    assert [book.storm_end(), book.storm_end(), book.storm_end()] == [0.2, 0.2, None]


def test_stream_scenarios_decide_stall_cut_and_protocol():
    clock = FakeClock()
    book = ScenarioBook(clock, random.Random(0))
    book.activate("stream-stall", seconds=2)
    book.activate("stream-disconnect", after_seconds=1, mode="loop")
    book.activate("ig-rejects-tlcp-2.5")
    assert book.stream_stalled()
    assert book.stream_cut(0.5) is None and book.stream_cut(1.5) == "loop"
    assert book.rejects_protocol("TLCP-2.5.0.lightstreamer.com")
    assert not book.rejects_protocol("TLCP-2.4.0.lightstreamer.com")
    clock.now += 2
    assert not book.stream_stalled()


def _state(clock: FakeClock) -> IGState:
    return IGState(MarketModel(0), clock, lambda: 1_700_000_000.0, random.Random(0),
                   username="u", password="p", api_key="k",
                   accounts=[Account("A1", "CFD", "CFD"), Account("A2", "SB",
                                                                   "SPREADBET")])


ORDER = {"currencyCode": "USD", "direction": "BUY", "epic": EPIC, "expiry": "-",
         "forceOpen": True, "guaranteedStop": False, "orderType": "MARKET",
         "size": 1, "level": None, "quoteId": None}


def test_open_position_yields_confirm_then_opu_and_a_position():
    state = _state(FakeClock())
    outcome = state.open_position("A1", ORDER)
    assert outcome.confirm["dealStatus"] == "ACCEPTED"
    assert [name for name, _ in outcome.events] == ["CONFIRMS", "OPU"]
    assert outcome.events[1][1]["status"] == "OPEN"
    assert [p["position"]["dealId"] for p in state.open_positions("A1", "2")] == [
        outcome.confirm["dealId"]]


@pytest.mark.parametrize(("change", "code"), [
    ({"level": 1.1}, "invalid.request.orderType.market.level"),
    ({"forceOpen": "false", "stopDistance": 10}, "invalid.request.forceOpen"),
    ({"orderType": "LIMIT"}, "invalid.request.level"),
    ({"direction": "UP"}, "invalid.request.direction"),
    ({"size": "lots"}, "invalid.request.size"),
    ({"stopLevel": 1.0, "stopDistance": 5}, "validation.mutual-exclusive-value."
                                            "request.stopLevel"),
    ({"trailingStop": "true", "stopDistance": 5}, "invalid.request.trailingStop"),
])
def test_open_position_validation_errors(change, code):
    state = _state(FakeClock())
    with pytest.raises(IGError) as raised:
        state.open_position("A1", {**ORDER, **change})
    assert (raised.value.status, raised.value.code) == (400, code)


def test_string_booleans_and_nulls_are_accepted_as_trading_ig_sends_them():
    state = _state(FakeClock())
    outcome = state.open_position("A1", {**ORDER, "forceOpen": "true",
                                         "guaranteedStop": "false",
                                         "limitDistance": 20, "stopLevel": None})
    assert outcome.confirm["dealStatus"] == "ACCEPTED"
    assert outcome.confirm["limitLevel"] > outcome.confirm["level"]


def test_natural_rejections_minimum_size_funds_and_closed_market():
    state = _state(FakeClock())
    assert state.open_position("A1", {**ORDER, "size": 0.01}).confirm["reason"] == (
        "MINIMUM_ORDER_SIZE_ERROR")
    big = {**ORDER, "epic": "CS.D.BITCOIN.CFD.IP", "size": 5}
    assert state.open_position("A1", big).confirm["reason"] == "INSUFFICIENT_FUNDS"
    state.market.status[EPIC] = "CLOSED"
    rejected = state.open_position("A1", ORDER)
    assert rejected.confirm["reason"] == "MARKET_CLOSED"
    assert [name for name, _ in rejected.events] == ["CONFIRMS"]


def test_confirm_expires_after_a_minute():
    clock = FakeClock()
    state = _state(clock)
    reference = state.open_position("A1", ORDER).deal_reference
    assert state.confirm(reference)[1]["dealReference"] == reference
    clock.now += 61
    with pytest.raises(IGError, match="deal-not-found"):
        state.confirm(reference)


def test_close_position_partially_then_fully():
    state = _state(FakeClock())
    deal_id = state.open_position("A1", {**ORDER, "size": 2}).confirm["dealId"]
    close = {"dealId": deal_id, "direction": "SELL", "orderType": "MARKET",
             "size": 1, "epic": None, "expiry": None, "level": None}
    partial = state.close_position("A1", close)
    assert partial.confirm["status"] == "PARTIALLY_CLOSED"
    assert partial.events[1][1]["status"] == "UPDATED"
    full = state.close_position("A1", close)
    assert full.confirm["status"] == "CLOSED"
    assert full.events[1][1]["status"] == "DELETED"
    assert state.open_positions("A1", "2") == []
    again = state.close_position("A1", close)
    assert again.confirm["reason"] == "POSITION_NOT_AVAILABLE_TO_CLOSE"


def test_close_requires_exactly_one_of_deal_id_and_epic():
    state = _state(FakeClock())
    base = {"direction": "SELL", "orderType": "MARKET", "size": 1}
    with pytest.raises(IGError, match="mutual-exclusive"):
        state.close_position("A1", {**base, "dealId": "D", "epic": EPIC,
                                    "expiry": "-"})
    with pytest.raises(IGError, match="null-conditional"):
        state.close_position("A1", base)


def test_tokens_authenticate_until_logout_and_switch_changes_account_token():
    state = _state(FakeClock())
    session = state.login("k")
    assert state.session_for(session.cst, session.xst) is session
    with pytest.raises(IGError, match="account-token-invalid"):
        state.session_for(session.cst, "wrong")
    old_xst = session.xst
    assert state.switch(session, "A2") != old_xst
    assert state.stream_session(f"CST-{session.cst}|XST-{session.xst}") is session
    state.logout(session)
    with pytest.raises(IGError, match="client-token-invalid"):
        state.session_for(session.cst, session.xst)

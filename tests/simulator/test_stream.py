"""The simulator's Lightstreamer server, seen by SDK 2.x and by raw TLCP."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ig_otel import _tlcp
from ig_otel.simulator import Simulator

from .conftest import EPIC, market_order, wait_for
from .lsclient import connect, disconnect, ls_password, subscribe

pytestmark = pytest.mark.ls2

TICK_FIELDS = ["BID", "OFR", "LTP", "LTV", "TTV", "UTM", "DAY_OPEN_MID",
               "DAY_NET_CHG_MID", "DAY_PERC_CHG_MID", "DAY_HIGH", "DAY_LOW"]


def test_sdk_subscribes_receives_and_unsubscribes(simulator, rest):
    client, status = connect(simulator, ls_password(rest))
    try:
        wait_for(lambda: status.status == "CONNECTED:WS-STREAMING", timeout=5)
        price, prices = subscribe(
            client, "MERGE", [f"PRICE:{simulator.account_id}:{EPIC}"],
            ["BIDPRICE1", "ASKPRICE1", "TIMESTAMP", "DLG_FLAG"], adapter="Pricing")
        tick, ticks = subscribe(client, "DISTINCT", [f"CHART:{EPIC}:TICK"],
                                TICK_FIELDS)
        wait_for(lambda: len(prices.updates) >= 3 and len(ticks.updates) >= 3)

        item, first, snapshot = prices.updates[0]
        assert item == f"PRICE:{simulator.account_id}:{EPIC}"
        assert snapshot is True
        assert float(first["ASKPRICE1"]) > float(first["BIDPRICE1"])
        assert first["TIMESTAMP"].isdigit() and len(first["TIMESTAMP"]) == 13
        assert first["DLG_FLAG"] == "DEAL"
        assert ticks.snapshot_ends == [f"CHART:{EPIC}:TICK"]
        # The SDK reports only values that differ from the previous update.
        assert all(u[1].get("LTV", "1").isdigit() and u[1]["UTM"].isdigit()
                   for u in ticks.updates)

        client.unsubscribe(price)
        client.unsubscribe(tick)
        assert prices.unsubscribed.wait(5) and ticks.unsubscribed.wait(5)
        wait_for(lambda: not any(simulator.snapshot()["stream_sessions"][0]
                                 ["subscriptions"].values()), timeout=5)
    finally:
        disconnect(client, status)
    assert status.server_errors == []


def test_sdk_gets_trade_confirms_then_opu_for_a_rest_deal(simulator, rest):
    client, status = connect(simulator, ls_password(rest))
    try:
        _, trades = subscribe(client, "DISTINCT", [f"TRADE:{simulator.account_id}"],
                              ["CONFIRMS", "OPU", "WOU"])
        assert trades.subscribed.wait(5)
        reference = rest.post(simulator.rest_url + "/positions/otc",
                              data=market_order(), timeout=5).json()["dealReference"]
        wait_for(lambda: len(trades.updates) >= 2, timeout=5)
        (_, confirms, _), (_, opu, _) = trades.updates[:2]
        assert list(confirms) == ["CONFIRMS", "OPU", "WOU"]
        assert json.loads(confirms["CONFIRMS"])["dealReference"] == reference
        assert list(opu) == ["OPU"]
        assert json.loads(opu["OPU"])["status"] == "OPEN"
    finally:
        disconnect(client, status)


def test_sdk_candles_market_and_account_items(simulator, rest):
    client, status = connect(simulator, ls_password(rest))
    try:
        _, candles = subscribe(client, "MERGE", [f"CHART:{EPIC}:SECOND"],
                               ["BID_CLOSE", "UTM", "CONS_END", "CONS_TICK_COUNT"])
        _, markets = subscribe(client, "MERGE", [f"MARKET:{EPIC}", "MARKET:IX.D."
                                                 "FTSE.DAILY.IP"],
                               ["BID", "OFFER", "UPDATE_TIME", "MARKET_STATE"])
        _, account = subscribe(client, "MERGE", [f"ACCOUNT:{simulator.account_id}"],
                               ["PNL", "AVAILABLE_TO_DEAL", "EQUITY"])
        wait_for(lambda: any(u[1].get("CONS_END") == "1" for u in candles.updates),
                 timeout=5)
        wait_for(lambda: {u[0] for u in markets.updates} == {
            f"MARKET:{EPIC}", "MARKET:IX.D.FTSE.DAILY.IP"})
        wait_for(lambda: account.updates)
        update_time = markets.updates[0][1]["UPDATE_TIME"]
        assert len(update_time) == 8 and update_time.count(":") == 2
        assert account.updates[0][1]["AVAILABLE_TO_DEAL"] == "10000.00"
    finally:
        disconnect(client, status)


def test_sdk_subscription_errors_for_bad_items_schema_and_mode(simulator, rest):
    client, status = connect(simulator, ls_password(rest))
    try:
        _, bad_item = subscribe(client, "MERGE", ["MARKET:NO.SUCH.EPIC"], ["BID"])
        _, bad_field = subscribe(client, "MERGE", [f"MARKET:{EPIC}"],
                                 ["BID", "NOT_A_FIELD"])
        _, bad_mode = subscribe(client, "MERGE", [f"TRADE:{simulator.account_id}"],
                                ["OPU"])
        _, no_adapter = subscribe(client, "MERGE",
                                  [f"PRICE:{simulator.account_id}:{EPIC}"],
                                  ["BIDPRICE1"])
        wait_for(lambda: bad_item.errors and bad_field.errors and bad_mode.errors
                 and no_adapter.errors)
        assert bad_item.errors[0][0] == 21
        assert bad_field.errors[0][0] == 23
        assert bad_mode.errors[0][0] == 24
        assert no_adapter.errors[0][0] == 21
        assert status.status == "CONNECTED:WS-STREAMING"
    finally:
        disconnect(client, status)


def test_sdk_bad_password_gets_conerr_1_and_no_retry(simulator):
    client, status = connect(simulator, "CST-nope|XST-nope")
    wait_for(lambda: status.server_errors, timeout=5)
    assert status.server_errors[0][0] == 1
    time.sleep(0.5)
    assert status.status == "DISCONNECTED"
    assert simulator.stats.stream_auth_failures == 1
    client.disconnect()


# -- raw TLCP over websockets --------------------------------------------------


@contextlib.contextmanager
def _raw_ws(sim: Simulator, protocol: str | None = None) -> Iterator[Any]:
    from websockets.sync.client import connect as ws_connect

    url = sim.stream_url.replace("http", "ws") + "/lightstreamer"
    with ws_connect(url, subprotocols=[protocol or _tlcp.SUBPROTOCOLS[1]],
                    open_timeout=5) as ws:
        yield ws


@contextlib.contextmanager
def _raw_session(sim: Simulator, password: str) -> Iterator[Any]:
    with _raw_ws(sim) as ws:
        ws.send("wsok")
        ws.send(_tlcp.encode_request("create_session", {
            "LS_cid": "test", "LS_send_sync": "false", "LS_cause": "api",
            "LS_password": password}))
        yield ws


def _read_lines(ws, until: str, timeout: float = 5.0) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        assert "\n" not in message.replace("\r\n", "")
        lines.extend(_tlcp.split_message(message))
        if any(line.startswith(until) for line in lines):
            return lines
    raise AssertionError(f"no {until} in {lines}")


def test_raw_tlcp_wsok_precedes_conok_and_subok_counts_match(simulator, rest):
    with _raw_session(simulator, ls_password(rest)) as ws:
        lines = _read_lines(ws, "CONOK")
        assert lines[0] == "WSOK" and lines[1].startswith("CONOK,")
        assert ws.subprotocol == _tlcp.SUBPROTOCOLS[1]
        conok = _tlcp.parse_notification(lines[1])
        assert conok.int_arg(2) == 1000 and conok.args[3] == "*"

        ws.send(_tlcp.encode_request("control", {
            "LS_reqId": 1, "LS_op": "add", "LS_subId": 1, "LS_mode": "MERGE",
            "LS_group": f"MARKET:{EPIC} MARKET:IX.D.FTSE.DAILY.IP",
            "LS_schema": "BID OFFER UPDATE_TIME", "LS_snapshot": "true",
            "LS_ack": "false"}, {
            "LS_reqId": 2, "LS_op": "add", "LS_subId": 2, "LS_mode": "DISTINCT",
            "LS_group": f"CHART:{EPIC}:TICK", "LS_schema": " ".join(TICK_FIELDS),
            "LS_snapshot": "true", "LS_ack": "false"}))
        lines = _read_lines(ws, "EOS,2")
        assert "SUBOK,1,2,3" in lines and "SUBOK,2,1,11" in lines
        assert not any(line.startswith("REQOK") for line in lines)
        updates = [line for line in lines if line.startswith("U,1,")]
        assert {u.split(",")[2] for u in updates} == {"1", "2"}


def test_raw_tlcp_probes_faster_than_keepalive_when_idle(simulator, rest):
    with _raw_session(simulator, ls_password(rest)) as ws:
        _read_lines(ws, "CONOK")
        started = time.monotonic()
        _read_lines(ws, "PROBE", timeout=2.0)
        assert time.monotonic() - started < 1.0


def test_raw_tlcp_bad_requests_get_errors_and_server_keeps_serving(simulator, rest):
    with _raw_session(simulator, ls_password(rest)) as ws:
        _read_lines(ws, "CONOK")
        ws.send(_tlcp.encode_request("control", {
            "LS_reqId": 5, "LS_op": "delete", "LS_subId": 99, "LS_ack": "false"}))
        assert "REQERR,5,19,Subscription%20not%20found" in _read_lines(ws, "REQERR")
        ws.send("garbage_request\r\nx=1")
        assert any(line.startswith("ERROR,67") for line in _read_lines(ws, "ERROR"))
        ws.send(b"\x00\x01")
    with _raw_session(simulator, ls_password(rest)) as again:
        assert _read_lines(again, "CONOK")[1].startswith("CONOK")


def test_raw_tlcp_loop_then_bind_session_keeps_subscriptions(simulator, rest):
    with _raw_session(simulator, ls_password(rest)) as ws:
        session_id = _tlcp.parse_notification(_read_lines(ws, "CONOK")[1]).args[0]
        ws.send(_tlcp.encode_request("control", {
            "LS_reqId": 1, "LS_op": "add", "LS_subId": 1, "LS_mode": "MERGE",
            "LS_group": f"MARKET:{EPIC}", "LS_schema": "BID OFFER",
            "LS_snapshot": "true", "LS_ack": "false"}))
        _read_lines(ws, "U,1,1")
        ws.send(_tlcp.encode_request("control", {
            "LS_reqId": 2, "LS_op": "force_rebind", "LS_cause": "test"}))
        _read_lines(ws, "LOOP")

    with _raw_ws(simulator, _tlcp.SUBPROTOCOLS[0]) as rebound:
        rebound.send("wsok")
        rebound.send(_tlcp.encode_request("bind_session", {
            "LS_session": session_id, "LS_keepalive_millis": 1000,
            "LS_send_sync": "false", "LS_cause": "ws.loop"}))
        lines = _read_lines(rebound, "U,1,1")
        assert f"CONOK,{session_id},50000,1000,*" in lines


def test_http_recovery_bind_is_refused_fast(simulator):
    import requests

    response = requests.post(
        simulator.stream_url + "/lightstreamer/bind_session.txt?LS_protocol=TLCP-2.5.0",
        data="LS_session=S1&LS_recovery_from=3&LS_polling=true", timeout=5)
    assert response.status_code == 200
    assert response.text.startswith("CONERR,20,")

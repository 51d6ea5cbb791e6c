"""Each fault scenario, observed from the client side."""

from __future__ import annotations

import json
import time

import pytest
import requests

from ig_otel import _tlcp
from ig_otel.simulator import Simulator

from .conftest import EPIC, market_order, wait_for
from .lsclient import connect, disconnect, ls_password, subscribe


def _open(sim: Simulator, rest: requests.Session) -> str:
    response = rest.post(sim.rest_url + "/positions/otc", data=market_order(),
                         timeout=5)
    assert response.status_code == 200
    return response.json()["dealReference"]


def test_latency_holds_answers_at_least_the_spike(simulator, rest):
    simulator.set_scenario("latency", mean_ms=0, jitter_ms=0, spike_ms=300,
                           spike_probability=1.0)
    started = time.monotonic()
    assert rest.get(simulator.rest_url + "/accounts", timeout=5).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_outage_gives_5xx_until_recovered_on_demand(simulator, rest):
    simulator.set_scenario("outage", seconds=0, status=503)
    failed = rest.get(simulator.rest_url + "/accounts", timeout=5)
    assert (failed.status_code, failed.json()) == (503, {"errorCode": "system.error"})
    simulator.clear_scenario("outage")
    assert rest.get(simulator.rest_url + "/accounts", timeout=5).status_code == 200


def test_outage_window_ends_by_itself(simulator, rest):
    simulator.set_scenario("outage", seconds=0.5, status=500)
    assert rest.get(simulator.rest_url + "/accounts", timeout=5).status_code == 500
    wait_for(lambda: rest.get(simulator.rest_url + "/accounts",
                              timeout=5).status_code == 200, timeout=5)


def test_admin_endpoint_switches_scenarios(simulator, rest):
    admin = simulator.admin_url + "/scenarios"
    listed = requests.get(admin, timeout=5).json()
    assert "outage" in listed["available"] and listed["active"] == []
    created = requests.post(admin, json={"name": "outage",
                                         "params": {"seconds": 0}}, timeout=5)
    assert created.json()["params"]["seconds"] == 0.0
    assert rest.get(simulator.rest_url + "/accounts", timeout=5).status_code == 503
    assert requests.delete(admin + "/outage", timeout=5).json() == {"removed": True}
    assert rest.get(simulator.rest_url + "/accounts", timeout=5).status_code == 200
    bad = requests.post(admin, json={"name": "nope"}, timeout=5)
    assert bad.status_code == 400 and "unknown scenario" in bad.json()["error"]
    requests.post(admin, json={"name": "latency"}, timeout=5)
    assert requests.delete(admin, timeout=5).json() == {"active": []}
    state = requests.get(simulator.admin_url + "/state", timeout=5).json()
    assert state["rest_sessions"] == 1


def test_allowance_exhaustion_brings_403s_fast(simulator, rest):
    simulator.set_scenario("allowance-exhaustion", account_non_trading=2)
    statuses = [rest.get(simulator.rest_url + "/accounts", timeout=5)
                for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 403]
    assert statuses[-1].json()["errorCode"] == (
        "error.public-api.exceeded-account-allowance")
    simulator.clear_scenario("allowance-exhaustion")
    assert rest.get(simulator.rest_url + "/accounts", timeout=5).status_code == 200


def test_slow_confirms_404_first_then_the_confirm(simulator, rest):
    simulator.set_scenario("slow-confirms", rest_seconds=0.5, stream_seconds=0)
    reference = _open(simulator, rest)
    url = f"{simulator.rest_url}/confirms/{reference}"
    assert rest.get(url, timeout=5).json() == {
        "errorCode": "error.confirms.deal-not-found"}
    confirm = wait_for(lambda: rest.get(url, timeout=5).status_code == 200, timeout=5)
    assert confirm


@pytest.mark.ls2
def test_slow_confirms_delay_the_streamed_confirms(simulator, rest):
    simulator.set_scenario("slow-confirms", rest_seconds=0, stream_seconds=0.8)
    client, status = connect(simulator, ls_password(rest))
    try:
        _, trades = subscribe(client, "DISTINCT", [f"TRADE:{simulator.account_id}"],
                              ["CONFIRMS", "OPU", "WOU"])
        assert trades.subscribed.wait(5)
        _open(simulator, rest)
        time.sleep(0.3)
        assert trades.updates == []
        wait_for(lambda: len(trades.updates) == 2, timeout=5)
    finally:
        disconnect(client, status)


def test_rejected_deals_carry_ig_reasons(simulator, rest):
    simulator.set_scenario("rejected-deals", reasons="INSUFFICIENT_FUNDS")
    reference = _open(simulator, rest)
    confirm = rest.get(f"{simulator.rest_url}/confirms/{reference}", timeout=5).json()
    assert (confirm["dealStatus"], confirm["reason"]) == ("REJECTED",
                                                          "INSUFFICIENT_FUNDS")
    assert rest.get(simulator.rest_url + "/positions", timeout=5).json() == {
        "positions": []}


def test_confirm_405_answers_html(simulator, rest):
    reference = _open(simulator, rest)
    simulator.set_scenario("confirm-405", probability=1.0)
    response = rest.get(f"{simulator.rest_url}/confirms/{reference}", timeout=5)
    assert response.status_code == 405
    assert response.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        json.loads(response.text)


@pytest.mark.ls2
def test_stream_stall_sends_nothing_and_the_sdk_tries_recovery(simulator, rest):
    client, status = connect(simulator, ls_password(rest))
    try:
        _, prices = subscribe(client, "MERGE", [f"MARKET:{EPIC}"], ["BID", "OFFER"])
        wait_for(lambda: prices.updates)
        simulator.set_scenario("stream-stall")
        wait_for(lambda: "DISCONNECTED:TRYING-RECOVERY" in status.statuses,
                 timeout=10)
        simulator.clear_scenario("stream-stall")
        count = len(prices.updates)
        wait_for(lambda: status.status == "CONNECTED:WS-STREAMING"
                 and len(prices.updates) > count, timeout=15)
        assert simulator.stats.stream_sessions >= 2
    finally:
        disconnect(client, status)


def test_a_subscription_made_during_a_stall_is_answered_when_it_ends(
    simulator, rest
):
    from websockets.sync.client import connect as ws_connect

    simulator.set_scenario("stream-stall")
    url = simulator.stream_url.replace("http", "ws") + "/lightstreamer"
    reader = _tlcp.NotificationReader()
    tags: list[str] = []
    with ws_connect(url, subprotocols=[_tlcp.SUBPROTOCOLS[1]], open_timeout=5) as ws:
        ws.send("wsok")
        ws.send(_tlcp.encode_request("create_session", {
            "LS_cid": "t", "LS_password": ls_password(rest)}))
        ws.send(_tlcp.encode_request("control", {
            "LS_reqId": "1", "LS_op": "add", "LS_subId": "1", "LS_mode": "MERGE",
            "LS_group": f"MARKET:{EPIC}", "LS_schema": "BID OFFER",
            "LS_snapshot": "true", "LS_ack": "false"}))
        time.sleep(0.5)
        simulator.clear_scenario("stream-stall")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "U" not in tags:
            for event in reader.feed(ws.recv(timeout=2)):
                tags.append(getattr(event, "tag", "U"))
    assert "SUBOK" in tags
    assert "U" in tags


@pytest.mark.ls2
@pytest.mark.parametrize("mode", ["end", "loop", "close"])
def test_stream_disconnect_and_the_sdk_comes_back(simulator, rest, mode):
    simulator.set_scenario("stream-disconnect", after_seconds=0.5, mode=mode)
    client, status = connect(simulator, ls_password(rest))
    try:
        _, prices = subscribe(client, "MERGE", [f"MARKET:{EPIC}"], ["BID", "OFFER"])
        wait_for(lambda: simulator.stats.stream_cuts >= 1, timeout=5)
        simulator.clear_scenario("stream-disconnect")
        count = len(prices.updates)
        wait_for(lambda: status.status == "CONNECTED:WS-STREAMING"
                 and len(prices.updates) > count + 2, timeout=15)
        assert simulator.stats.ws_connections >= 2
    finally:
        disconnect(client, status)


@pytest.mark.ls2
def test_reconnect_storm_ends_new_sessions_then_lets_one_live(simulator, rest):
    simulator.set_scenario("reconnect-storm", count=2, after_seconds=0.1)
    client, status = connect(simulator, ls_password(rest))
    try:
        _, prices = subscribe(client, "MERGE", [f"MARKET:{EPIC}"], ["BID"])
        wait_for(lambda: simulator.stats.stream_sessions >= 3, timeout=15)
        wait_for(lambda: status.status == "CONNECTED:WS-STREAMING"
                 and prices.updates, timeout=10)
        assert status.statuses.count("DISCONNECTED:WILL-RETRY") >= 2
    finally:
        disconnect(client, status)


@pytest.mark.ls2
def test_malformed_frames_reach_the_client_which_keeps_streaming(simulator, rest):
    simulator.set_scenario("malformed-frames", probability=1.0)
    client, status = connect(simulator, ls_password(rest))
    try:
        _, prices = subscribe(client, "MERGE", [f"MARKET:{EPIC}"], ["BID"])
        wait_for(lambda: len(prices.updates) >= 5, timeout=5)
        assert status.server_errors == []
    finally:
        disconnect(client, status)


def test_malformed_frames_are_visible_to_a_tlcp_reader(simulator, rest):
    from websockets.sync.client import connect as ws_connect

    simulator.set_scenario("malformed-frames", probability=1.0)
    url = simulator.stream_url.replace("http", "ws") + "/lightstreamer"
    reader = _tlcp.NotificationReader()
    with ws_connect(url, subprotocols=[_tlcp.SUBPROTOCOLS[1]], open_timeout=5) as ws:
        ws.send("wsok")
        ws.send(_tlcp.encode_request("create_session", {
            "LS_cid": "t", "LS_password": ls_password(rest)}))
        events = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
                isinstance(e, _tlcp.Malformed) or
                (isinstance(e, _tlcp.Notification) and e.tag not in (
                    "WSOK", "CONOK", "SERVNAME", "CONS", "PROBE")) for e in events):
            events.extend(reader.feed(ws.recv(timeout=2)))
    assert any(isinstance(e, _tlcp.Malformed) or e.tag not in (
        "WSOK", "CONOK", "SERVNAME", "CONS", "PROBE") for e in events)


@pytest.mark.ls2
def test_ig_rejects_tlcp_2_5_with_conerr_65(simulator, rest):
    simulator.set_scenario("ig-rejects-tlcp-2.5")
    client, status = connect(simulator, ls_password(rest))
    wait_for(lambda: status.server_errors, timeout=5)
    assert status.server_errors[0][0] == 65
    assert "2.5.0" in status.server_errors[0][1]
    client.disconnect()

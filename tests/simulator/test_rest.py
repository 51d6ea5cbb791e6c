"""The simulator's REST API over loopback, with requests and httpx."""

from __future__ import annotations

import json

import httpx
import pytest
import requests

from ig_otel.simulator import AllowanceLimits, Simulator

from .conftest import EPIC, login, market_order


def test_login_v2_returns_tokens_and_stream_endpoint(simulator, rest):
    body = rest.login_body
    assert body["currentAccountId"] == simulator.account_id
    assert body["lightstreamerEndpoint"] == simulator.stream_url
    assert not body["lightstreamerEndpoint"].endswith("/lightstreamer")
    assert {a["accountId"] for a in body["accounts"]} == {
        simulator.account_id, simulator.second_account_id}


@pytest.mark.parametrize(("headers", "body", "status", "code"), [
    ({}, {"identifier": "sim_user", "password": "sim-password"}, 400,
     "error.security.api-key-missing"),
    ({"X-IG-API-KEY": "wrong"}, {"identifier": "sim_user",
                                 "password": "sim-password"},
     403, "error.security.api-key-invalid"),
    ({"X-IG-API-KEY": "sim-api-key-0001"}, {"identifier": "sim_user",
                                            "password": "nope"},
     401, "error.security.invalid-details"),
])
def test_login_errors(simulator, headers, body, status, code):
    response = requests.post(simulator.rest_url + "/session", json=body,
                             headers=headers, timeout=5)
    assert (response.status_code, response.json()) == (status, {"errorCode": code})


@pytest.mark.parametrize(("headers", "code"), [
    ({}, "error.security.client-token-missing"),
    ({"CST": "bogus", "X-SECURITY-TOKEN": "x"}, "error.security.client-token-invalid"),
    ({"Authorization": "Bearer bogus", "IG-ACCOUNT-ID": "ABC123"},
     "error.security.oauth-token-invalid"),
])
def test_bad_tokens_get_401_codes(simulator, headers, code):
    response = httpx.get(simulator.rest_url + "/accounts", timeout=5,
                         headers={"X-IG-API-KEY": simulator.api_key, **headers})
    assert response.status_code == 401
    assert response.json()["errorCode"] == code


def test_wrong_account_token_is_rejected(simulator, rest):
    response = rest.get(simulator.rest_url + "/accounts",
                        headers={"X-SECURITY-TOKEN": "other"}, timeout=5)
    assert response.json() == {"errorCode": "error.security.account-token-invalid"}


def test_method_override_routes_post_as_delete(simulator, rest):
    response = rest.post(simulator.rest_url + "/session", data="{}",
                         headers={"_method": "DELETE", "VERSION": "1"}, timeout=5)
    assert response.status_code == 204
    assert simulator.requests_served["DELETE /session"] == 1
    assert rest.get(simulator.rest_url + "/accounts", timeout=5).status_code == 401


def test_open_position_appears_in_positions_and_confirm(simulator, rest):
    reference = rest.post(simulator.rest_url + "/positions/otc", data=market_order(),
                          timeout=5).json()["dealReference"]
    confirm = rest.get(f"{simulator.rest_url}/confirms/{reference}", timeout=5,
                       headers={"VERSION": "1"}).json()
    assert confirm["dealStatus"] == "ACCEPTED" and confirm["reason"] == "SUCCESS"
    positions = rest.get(simulator.rest_url + "/positions", timeout=5).json()
    assert positions["positions"][0]["position"]["dealId"] == confirm["dealId"]
    single = rest.get(f"{simulator.rest_url}/positions/{confirm['dealId']}",
                      timeout=5).json()
    assert single["market"]["epic"] == EPIC
    amend = rest.put(f"{simulator.rest_url}/positions/otc/{confirm['dealId']}",
                     data=json.dumps({"stopLevel": 1.0, "limitLevel": 2.0,
                                      "guaranteedStop": "false",
                                      "trailingStop": "false"}), timeout=5)
    amended = rest.get(f"{simulator.rest_url}/confirms/"
                       f"{amend.json()['dealReference']}", timeout=5).json()
    assert amended["status"] == "AMENDED"
    snapshot = simulator.snapshot()
    assert snapshot["positions"][0]["position"]["stopLevel"] == 1.0


def test_unknown_confirm_and_position_are_404(simulator, rest):
    assert rest.get(simulator.rest_url + "/confirms/NOPE", timeout=5).json() == {
        "errorCode": "error.confirms.deal-not-found"}
    assert rest.get(simulator.rest_url + "/positions/DIAAAANOPE", timeout=5).json() == {
        "errorCode": "error.position.notfound"}


@pytest.mark.parametrize(("data", "code"), [
    ("{not json", "invalid.input"),
    ("[1, 2]", "invalid.input"),
    (market_order(level=1.2), "invalid.request.orderType.market.level"),
    (market_order(forceOpen=False, limitDistance=10), "invalid.request.forceOpen"),
    (market_order(epic="bad epic"), "invalid.request.epic"),
])
def test_bad_dealing_bodies_get_400(simulator, rest, data, code):
    response = rest.post(simulator.rest_url + "/positions/otc", data=data, timeout=5)
    assert (response.status_code, response.json()["errorCode"]) == (400, code)


def test_unknown_endpoints_are_404_invalid_url(simulator, rest):
    for path in ("/nothing", "/positions/otc/a/b/c", "/markets/x/y/z"):
        response = rest.get(simulator.rest_url + path, timeout=5)
        assert response.json() == {"errorCode": "invalid.url"}, path
    assert requests.get(simulator.base_url + "/elsewhere", timeout=5).status_code == 404


def test_prices_v3_reports_allowance_and_page_data(simulator, rest):
    response = rest.get(f"{simulator.rest_url}/prices/{EPIC}", timeout=5,
                        headers={"VERSION": "3"},
                        params={"resolution": "MINUTE", "max": 30, "pageSize": 20,
                                "pageNumber": 2})
    body = response.json()
    assert len(body["prices"]) == 10
    assert body["metadata"]["pageData"] == {"pageSize": 20, "pageNumber": 2,
                                            "totalPages": 2}
    allowance = body["metadata"]["allowance"]
    assert allowance["remainingAllowance"] == 9_990
    assert allowance["totalAllowance"] == 10_000
    assert 0 < allowance["allowanceExpiry"] <= 7 * 24 * 3600


def test_prices_v2_num_points_and_v1_date_range_shapes(simulator, rest):
    v2 = rest.get(f"{simulator.rest_url}/prices/{EPIC}/MINUTE/7", timeout=5).json()
    assert len(v2["prices"]) == 7 and "allowance" in v2
    v1 = rest.get(f"{simulator.rest_url}/prices/{EPIC}/HOUR", timeout=5,
                  headers={"VERSION": "1"},
                  params={"startdate": "2024:01:01-00:00:00",
                          "enddate": "2024:01:01-02:00:00"}).json()
    assert len(v1["prices"]) == 3
    assert v1["allowance"]["remainingAllowance"] == 10_000 - 10


def test_markets_search_navigation_sentiment_watchlists(simulator, rest):
    url = simulator.rest_url
    market = rest.get(f"{url}/markets/{EPIC}", headers={"VERSION": "3"},
                      timeout=5).json()
    assert market["snapshot"]["offer"] > market["snapshot"]["bid"]
    many = rest.get(f"{url}/markets", params={"epics": f"{EPIC},IX.D.FTSE.DAILY.IP"},
                    timeout=5).json()
    assert len(many["marketDetails"]) == 2
    assert rest.get(f"{url}/markets", params={"searchTerm": "ftse"},
                    timeout=5).json()["markets"][0]["epic"] == "IX.D.FTSE.DAILY.IP"
    nodes = rest.get(f"{url}/marketnavigation", timeout=5).json()["nodes"]
    assert rest.get(f"{url}/marketnavigation/{nodes[0]['id']}",
                    timeout=5).json()["markets"]
    assert rest.get(f"{url}/clientsentiment/?marketIds=EURUSD,FT100",
                    timeout=5).json()["clientSentiments"][1]["marketId"] == "FT100"
    assert rest.get(f"{url}/clientsentiment/EURUSD", timeout=5).json()[
        "marketId"] == "EURUSD"
    created = rest.post(f"{url}/watchlists", timeout=5,
                        data=json.dumps({"name": "mine", "epics": [EPIC]})).json()
    watchlist = created["watchlistId"]
    rest.put(f"{url}/watchlists/{watchlist}", data=json.dumps(
        {"epic": "IX.D.FTSE.DAILY.IP"}), timeout=5)
    assert len(rest.get(f"{url}/watchlists/{watchlist}",
                        timeout=5).json()["markets"]) == 2
    deleted = rest.post(f"{url}/watchlists/{watchlist}", data="{}", timeout=5,
                        headers={"_method": "DELETE"})
    assert deleted.json() == {"status": "SUCCESS"}


def test_applications_report_the_configured_limits(simulator, rest):
    apps = rest.get(simulator.rest_url + "/operations/application", timeout=5,
                    headers={"VERSION": "1"}).json()
    assert apps[0]["allowanceAccountOverall"] == 30
    assert apps[0]["allowanceAccountTrading"] == 100
    assert apps[0]["apiKey"] == simulator.api_key


def test_non_trading_allowance_gives_403_account_code_and_sessions_are_free():
    limits = AllowanceLimits(account_non_trading=3, account_trading=2)
    with Simulator(limits=limits) as sim:
        session = login(sim)
        codes = [session.get(sim.rest_url + "/accounts", timeout=5).status_code
                 for _ in range(4)]
        assert codes == [200, 200, 200, 403]
        assert session.get(sim.rest_url + "/accounts", timeout=5).json() == {
            "errorCode": "error.public-api.exceeded-account-allowance"}
        assert session.get(sim.rest_url + "/session", timeout=5).status_code == 200

        trading = [session.post(sim.rest_url + "/positions/otc", timeout=5,
                                data=market_order()) for _ in range(3)]
        assert [r.status_code for r in trading] == [200, 200, 403]
        assert trading[-1].json()["errorCode"] == (
            "error.public-api.exceeded-account-trading-allowance")
        assert sim.forbidden_sent == 3


def test_historical_points_run_out_with_403():
    with Simulator(limits=AllowanceLimits(historical_points=15)) as sim:
        session = login(sim)
        url = f"{sim.rest_url}/prices/{EPIC}/MINUTE/10"
        first = session.get(url, timeout=5)
        assert first.json()["allowance"]["remainingAllowance"] == 5
        second = session.get(url, timeout=5)
        assert (second.status_code, second.json()["errorCode"]) == (
            403, "error.public-api.exceeded-account-historical-data-allowance")


def test_api_key_allowance_is_shared_across_accounts():
    limits = AllowanceLimits(app_non_trading=2, account_non_trading=10)
    with Simulator(limits=limits) as sim:
        first = login(sim)
        second = login(sim)
        switched = second.put(sim.rest_url + "/session", timeout=5,
                              headers={"VERSION": "1"},
                              data=json.dumps({"accountId": sim.second_account_id}))
        second.headers["X-SECURITY-TOKEN"] = switched.headers["X-SECURITY-TOKEN"]
        assert first.get(sim.rest_url + "/accounts", timeout=5).status_code == 200
        assert first.get(sim.rest_url + "/accounts", timeout=5).status_code == 200
        third = second.get(sim.rest_url + "/accounts", timeout=5)
        assert third.json()["errorCode"] == (
            "error.public-api.exceeded-api-key-allowance")


def test_v3_oauth_login_bearer_refresh_and_session_tokens(simulator):
    client = httpx.Client(base_url=simulator.rest_url, timeout=5, headers={
        "X-IG-API-KEY": simulator.api_key, "VERSION": "3"})
    with client:
        login = client.post("/session", json={"identifier": simulator.username,
                                              "password": simulator.password})
        body = login.json()
        token = body["oauthToken"]
        assert "CST" not in login.headers and token["expires_in"] == "60"
        auth = {"Authorization": f"Bearer {token['access_token']}",
                "IG-ACCOUNT-ID": body["accountId"], "VERSION": "1"}
        assert client.get("/accounts", headers=auth).status_code == 200
        tokens = client.get("/session", params={"fetchSessionTokens": "true"},
                            headers=auth)
        assert tokens.headers["CST"] and tokens.headers["X-SECURITY-TOKEN"]
        refreshed = client.post("/session/refresh-token", headers={"VERSION": "1"},
                                json={"refresh_token": token["refresh_token"]})
        assert refreshed.json()["access_token"] != token["access_token"]
        assert client.get("/accounts", headers=auth).status_code == 401


def test_encryption_key_is_a_real_rsa_key_usable_for_login(simulator):
    serialization = pytest.importorskip(
        "cryptography.hazmat.primitives.serialization")
    from base64 import b64decode, b64encode

    from cryptography.hazmat.primitives.asymmetric import padding

    headers = {"X-IG-API-KEY": simulator.api_key}
    key = httpx.get(simulator.rest_url + "/session/encryptionKey", headers=headers,
                    timeout=5).json()
    public = serialization.load_der_public_key(b64decode(key["encryptionKey"]))
    message = b64encode(f"{simulator.password}|{key['timeStamp']}".encode())
    encrypted = b64encode(public.encrypt(message, padding.PKCS1v15())).decode()
    response = httpx.post(simulator.rest_url + "/session", headers=headers, timeout=5,
                          json={"identifier": simulator.username,
                                "password": encrypted, "encryptedPassword": True})
    assert response.status_code == 200 and response.headers["CST"]


def test_activity_and_transactions_paginate(simulator, rest):
    url = simulator.rest_url
    reference = rest.post(url + "/positions/otc", data=market_order(),
                          timeout=5).json()["dealReference"]
    deal_id = rest.get(f"{url}/confirms/{reference}", timeout=5).json()["dealId"]
    rest.post(url + "/positions/otc", headers={"_method": "DELETE"}, timeout=5,
              data=json.dumps({"dealId": deal_id, "direction": "SELL", "size": 1,
                               "orderType": "MARKET"}))
    v3 = rest.get(url + "/history/activity/", headers={"VERSION": "3"},
                  timeout=5).json()
    assert len(v3["activities"]) == 2 and v3["metadata"]["paging"]["next"] is None
    v2 = rest.get(url + "/history/activity/", headers={"VERSION": "2"}, timeout=5,
                  params={"pageSize": 1, "pageNumber": 1}).json()
    assert v2["metadata"]["pageData"] == {"pageSize": 1, "pageNumber": 1,
                                          "totalPages": 2}
    transactions = rest.get(url + "/history/transactions", timeout=5,
                            headers={"VERSION": "2"}).json()
    assert transactions["transactions"][0]["reference"] == reference


async def test_async_context_manager_serves_inside_a_running_loop():
    async with Simulator(seed=2) as sim, httpx.AsyncClient(timeout=5) as client:
        response = await client.post(sim.rest_url + "/session",
                                     headers={"X-IG-API-KEY": sim.api_key},
                                     json={"identifier": sim.username,
                                           "password": sim.password})
        assert response.status_code == 200
        sim.set_scenario("outage", seconds=0)
        failed = await client.get(sim.rest_url + "/accounts")
        assert failed.status_code == 503
        sim.clear_scenarios()

"""A raw TLCP client on ``websockets`` (unmodified) against the simulator."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect

from ig_otel import _telemetry as names
from ig_otel import _tlcp as tlcp
from ig_otel import _websockets
from ig_otel.simulator import Simulator

from .conftest import (
    EPIC,
    STALL_SECONDS,
    assert_no_secrets,
    login,
    ls_password,
    secrets_of,
    stream_health,
)
from .replay import ReplayServer

SUBPROTOCOL = tlcp.SUBPROTOCOLS[1]


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://") + "/lightstreamer"


class RawClient:
    """What a hand-written TLCP bot does: session, subscriptions, reading."""

    def __init__(self, ws, password: str) -> None:
        self.ws = ws
        self.password = password
        self.reader = tlcp.NotificationReader()
        self.updates: dict[int, int] = {}
        self.events: list[tlcp.Event] = []
        self.session_id = ""

    async def open(self, old_session: str = "") -> str:
        await self.ws.send(tlcp.encode_request("wsok"))
        create = {"LS_cid": "raw", "LS_send_sync": "false",
                  "LS_password": self.password}
        if old_session:
            create["LS_old_session"] = old_session
        await self.ws.send(tlcp.encode_request("create_session", create))
        await self.read_until(lambda e: e.tag == "CONOK")
        return self.session_id

    async def read_until(self, done, timeout: float = 10.0) -> tlcp.Event:
        # Whole messages only: the instrumentation sees whole messages too.
        async with asyncio.timeout(timeout):
            while True:
                found = None
                for event in self.reader.feed(await self.ws.recv()):
                    self.events.append(event)
                    if isinstance(event, tlcp.Update):
                        self.updates[event.sub_id] = (
                            self.updates.get(event.sub_id, 0) + 1)
                    elif event.tag == "CONOK":
                        self.session_id = event.args[0]
                    if found is None and done(event):
                        found = event
                if found is not None:
                    return found

    async def read_for(self, seconds: float) -> None:
        try:
            await self.read_until(lambda event: False, timeout=seconds)
        except TimeoutError:
            return


def add(req_id, sub_id, mode, items, fields, adapter=None):
    params = {
        "LS_reqId": req_id, "LS_op": "add", "LS_subId": sub_id, "LS_mode": mode,
        "LS_group": " ".join(items), "LS_schema": " ".join(fields),
        "LS_snapshot": "true",
    }
    if adapter:
        params["LS_data_adapter"] = adapter
    return params


def unsub(req_id, sub_id):
    return {"LS_reqId": req_id, "LS_op": "delete", "LS_subId": sub_id}


async def test_updates_lag_subscriptions_and_errors(
    simulator: Simulator, instrumented, telemetry
):
    rest = login(simulator)
    async with connect(ws_url(simulator.stream_url),
                       subprotocols=[SUBPROTOCOL]) as ws:
        client = RawClient(ws, ls_password(rest))
        await client.open()
        await ws.send(tlcp.encode_request(
            "control",
            add(1, 1, "DISTINCT", [f"CHART:{EPIC}:TICK"], ["BID", "OFR", "UTM"]),
            add(2, 2, "MERGE", [f"MARKET:{EPIC}"], ["BID", "UPDATE_TIME"]),
            add(3, 3, "MERGE", ["MARKET:NO.SUCH.EPIC"], ["BID"]),
        ))
        await client.read_until(
            lambda e: client.updates.get(1, 0) >= 10 and client.updates.get(2, 0) >= 2)
        assert instrumented.value(
            names.STREAM_STATUS.name, **{names.IG_STREAM_STATUS: "connected"}) == 1
        subscriptions = instrumented.points(names.STREAM_SUBSCRIPTIONS.name)
        assert {p.attributes[names.IG_STREAM_ITEM_KIND]: p.value
                for p in subscriptions if p.value} == {"CHART_TICK": 1, "MARKET": 1}
        assert instrumented.value(
            names.STREAM_ERRORS.name, **{names.IG_STREAM_ERROR_CODE: "21"}) == 1
        assert "connected" in stream_health().values()

        # After UNSUB nothing more arrives: the counts must match exactly.
        await ws.send(tlcp.encode_request("control", unsub(4, 1), unsub(5, 2)))
        unsubscribed: set[str] = set()

        def both_gone(event) -> bool:
            if getattr(event, "tag", "") == "UNSUB":
                unsubscribed.add(event.args[0])
            return unsubscribed == {"1", "2"}

        await client.read_until(both_gone)
        updates = {p.attributes[names.IG_STREAM_ITEM_KIND]: p.value
                   for p in instrumented.points(names.STREAM_UPDATES.name)}
        assert updates == {"CHART_TICK": client.updates[1],
                           "MARKET": client.updates[2]}
        lags = {p.attributes[names.IG_STREAM_ITEM_KIND]: p
                for p in instrumented.points(names.STREAM_UPDATE_LAG.name)}
        assert lags["CHART_TICK"].count == client.updates[1]
        assert 0.0 <= lags["CHART_TICK"].sum / lags["CHART_TICK"].count < 1.0
        assert lags["MARKET"].count >= 1
        assert 0.0 <= lags["MARKET"].max < 3.0  # UPDATE_TIME has 1 s resolution

    assert instrumented.value(
        names.STREAM_STATUS.name, **{names.IG_STREAM_STATUS: "disconnected"}) == 1
    spans = [s.name for s in telemetry.finished_spans()]
    assert spans.count(names.SPAN_STREAM_SUBSCRIBE) == 3
    assert spans.count(names.SPAN_STREAM_SESSION) == 1
    assert_no_secrets(telemetry, instrumented, secrets_of(simulator, rest))


async def test_stream_stall_moves_silence_status_and_readiness(
    simulator: Simulator, instrumented, telemetry
):
    rest = login(simulator)
    async with connect(ws_url(simulator.stream_url),
                       subprotocols=[SUBPROTOCOL]) as ws:
        client = RawClient(ws, ls_password(rest))
        await client.open()
        await ws.send(tlcp.encode_request(
            "control", add(1, 1, "DISTINCT", [f"CHART:{EPIC}:TICK"], ["BID", "UTM"])))
        await client.read_until(lambda e: client.updates.get(1, 0) >= 2)
        simulator.set_scenario("stream-stall")
        # Nothing arrives; the watchdog alone turns the status to stalled.
        await client.read_for(STALL_SECONDS + 0.6)
        assert "stalled" in stream_health().values()
        [silence] = instrumented.points(names.STREAM_SILENCE.name)
        assert silence.value > STALL_SECONDS
        events = telemetry.events(names.EVENT_STREAM_STATUS_CHANGE)
        assert [e.attributes[names.IG_STREAM_STATUS] for e in events] == [
            "connecting", "connected", "stalled"]

        simulator.clear_scenario("stream-stall")
        count = client.updates[1]
        await client.read_until(lambda e: client.updates[1] > count)
        assert instrumented.value(
            names.STREAM_STATUS.name, **{names.IG_STREAM_STATUS: "connected"}) == 1


async def test_a_session_ended_by_the_server_and_recreated_is_one_stream(
    simulator: Simulator, instrumented
):
    rest = login(simulator)
    url = ws_url(simulator.stream_url)
    async with connect(url, subprotocols=[SUBPROTOCOL]) as ws:
        client = RawClient(ws, ls_password(rest))
        old = await client.open()
        await ws.send(tlcp.encode_request(
            "control", add(1, 1, "DISTINCT", [f"CHART:{EPIC}:TICK"], ["BID", "UTM"])))
        await client.read_until(lambda e: client.updates.get(1, 0) >= 2)
        assert simulator.end_stream_sessions(48) == 1
        end = await client.read_until(lambda e: getattr(e, "tag", "") == "END")
        assert end.args[0] == "48"
    assert "disconnected" in stream_health().values()

    async with connect(url, subprotocols=[SUBPROTOCOL]) as ws:
        again = RawClient(ws, ls_password(rest))
        await again.open(old_session=old)
        await ws.send(tlcp.encode_request(
            "control", add(1, 1, "DISTINCT", [f"CHART:{EPIC}:TICK"], ["BID", "UTM"])))
        await again.read_until(lambda e: again.updates.get(1, 0) >= 2)
        [reconnects] = instrumented.points(names.STREAM_RECONNECTS.name)
        assert reconnects.value == 1
        assert instrumented.value(
            names.STREAM_ERRORS.name, **{names.IG_STREAM_ERROR_CODE: "48"}) == 1
        assert instrumented.value(
            names.STREAM_STATUS.name, **{names.IG_STREAM_STATUS: "connected"}) == 1


async def test_deal_over_httpx_confirmed_on_the_stream(
    simulator: Simulator, instrumented, telemetry
):
    rest = login(simulator)
    async with connect(ws_url(simulator.stream_url),
                       subprotocols=[SUBPROTOCOL]) as ws:
        client = RawClient(ws, ls_password(rest))
        await client.open()
        await ws.send(tlcp.encode_request("control", add(
            1, 1, "DISTINCT", [f"TRADE:{simulator.account_id}"],
            ["CONFIRMS", "OPU", "WOU"])))
        await client.read_until(lambda e: getattr(e, "tag", "") == "SUBOK")
        async with httpx.AsyncClient(headers=dict(rest.headers)) as http:
            response = await http.post(simulator.rest_url + "/positions/otc", json={
                "currencyCode": "USD", "direction": "BUY", "epic": EPIC,
                "expiry": "-", "forceOpen": True, "guaranteedStop": False,
                "orderType": "MARKET", "size": 1, "trailingStop": False,
            })
        reference = response.json()["dealReference"]
        confirm = await client.read_until(
            lambda e: isinstance(e, tlcp.Update) and "dealReference" in e.raw)
        assert json.loads(confirm.raw.split("|")[0])["dealReference"] == reference

    [latency] = instrumented.points(names.DEAL_CONFIRMATION_LATENCY.name)
    assert latency.attributes == {names.IG_CONFIRMATION_SOURCE: "stream"}
    assert latency.count == 1
    assert instrumented.value(
        names.DEAL_CONFIRMATIONS.name, **{names.IG_DEAL_STATUS: "ACCEPTED"}) == 1
    post = [s for s in telemetry.finished_spans()
            if s.name == "POST /positions/otc"]
    assert post and post[0].attributes[names.IG_DEAL_REFERENCE] == reference
    assert_no_secrets(telemetry, instrumented, secrets_of(simulator, rest))


@pytest.fixture
def lost_updates_server():
    # The simulator never drops updates, so it never sends OV: play one here.
    server = ReplayServer([
        tlcp.join_lines(["U,1,1,1.1|1.2|1700000000000"]),
        tlcp.join_lines([tlcp.encode_ov(1, 1, 3), "U,1,1,1.3||1700000000001"]),
    ]).start()
    yield server
    server.stop()


async def test_lost_updates_are_counted_by_kind(lost_updates_server, instrumented):
    async with connect(ws_url(lost_updates_server.url),
                       subprotocols=[SUBPROTOCOL]) as ws:
        client = RawClient(ws, "CST-x|XST-y")
        await client.open()
        await ws.send(tlcp.encode_request("control", add(
            1, 1, "MERGE", [f"PRICE:ACC1:{EPIC}"],
            ["BIDPRICE1", "ASKPRICE1", "TIMESTAMP"], adapter="Pricing")))
        await client.read_until(lambda e: client.updates.get(1, 0) >= 2)
    assert instrumented.value(
        names.STREAM_LOST_UPDATES.name, **{names.IG_STREAM_ITEM_KIND: "PRICE"}) == 3
    assert instrumented.value(names.STREAM_UPDATES.name) == 2


async def test_websocket_connections_that_are_not_tlcp_are_left_alone(
    instrumented,
):
    from websockets.asyncio.server import serve

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async with serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/chat") as ws:
            await ws.send("create_session\r\nLS_cid=x")
            assert await ws.recv() == "create_session\r\nLS_cid=x"
            assert getattr(ws, _websockets._ATTRIBUTE) is None
    assert instrumented.points(names.STREAM_UPDATES.name) == []
    assert instrumented.points(names.STREAM_STATUS.name) == []

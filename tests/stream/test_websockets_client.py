"""A raw TLCP client on ``websockets`` (unmodified) against a loopback server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect

from ig_otel import _telemetry as names
from ig_otel import _tlcp as tlcp
from ig_otel import _websockets
from ig_otel._config import Config
from ig_otel._deals import TRACKER

from .conftest import ACCOUNT, PASSWORD, value_of


@pytest.fixture
def instrumented(telemetry, fresh_metrics) -> Iterator:
    _websockets.instrument(
        Config(stream_stall_seconds=30),
        tracer_provider=telemetry.tracer_provider,
        meter_provider=fresh_metrics.provider,
    )
    yield fresh_metrics
    _websockets.uninstrument()


def ws_url(server) -> str:
    return server.url.replace("http://", "ws://") + "/lightstreamer"


async def open_session(ws) -> str:
    await ws.send(tlcp.encode_request("wsok"))
    create = {"LS_cid": "raw", "LS_send_sync": "false", "LS_password": PASSWORD}
    await ws.send(tlcp.encode_request("create_session", create))
    while True:
        for event in tlcp.NotificationReader().feed(await ws.recv()):
            if event.tag == "CONOK":
                return event.args[0]


def add(req_id, sub_id, mode, items, fields):
    return {
        "LS_reqId": req_id, "LS_op": "add", "LS_subId": sub_id, "LS_mode": mode,
        "LS_group": " ".join(items), "LS_schema": " ".join(fields),
        "LS_snapshot": "true", "LS_ack": "false",
    }


async def read_updates(ws, count: int) -> list:
    updates = []
    async with asyncio.timeout(10):
        async for message in ws:
            for event in tlcp.NotificationReader().feed(message):
                if event.tag == "U":
                    updates.append(event)
            if len(updates) >= count:
                return updates
    return updates


async def test_raw_client_updates_lag_subscriptions_and_errors(
    tlcp_server, instrumented, telemetry
):
    tlcp_server.script.updates = 10
    tlcp_server.script.lost = 3
    async with connect(ws_url(tlcp_server), subprotocols=[tlcp.SUBPROTOCOLS[1]]) as ws:
        await open_session(ws)
        await ws.send(tlcp.encode_request(
            "control",
            add(1, 1, "DISTINCT", ["CHART:CS.D.EURUSD.MINI.IP:TICK"], ["BID", "UTM"]),
            add(2, 2, "MERGE", ["MARKET:IX.D.FTSE.DAILY.IP"], ["BID", "UPDATE_TIME"]),
            add(3, 3, "MERGE", ["9999"], ["BID"]),
        ))
        updates = await read_updates(ws, 20)
        assert len(updates) == 20

        points = instrumented.points(names.STREAM_UPDATES.name)
        assert value_of(points, **{names.IG_STREAM_ITEM_KIND: "CHART_TICK"}) == 10
        assert value_of(points, **{names.IG_STREAM_ITEM_KIND: "MARKET"}) == 10
        lag = {
            p.attributes[names.IG_STREAM_ITEM_KIND]: p
            for p in instrumented.points(names.STREAM_UPDATE_LAG.name)
        }
        assert lag["CHART_TICK"].count == 10
        assert 0 <= lag["CHART_TICK"].sum / 10 < 1.0
        assert lag["MARKET"].count >= 1
        status = instrumented.points(names.STREAM_STATUS.name)
        assert value_of(status, **{names.IG_STREAM_STATUS: "connected"}) == 1
        subs = instrumented.points(names.STREAM_SUBSCRIPTIONS.name)
        assert value_of(subs, **{names.IG_STREAM_ITEM_KIND: "MARKET"}) == 1
        lost = instrumented.points(names.STREAM_LOST_UPDATES.name)
        assert value_of(lost, **{names.IG_STREAM_ITEM_KIND: "CHART_TICK"}) == 3
        errors = instrumented.points(names.STREAM_ERRORS.name)
        assert value_of(errors, **{names.IG_STREAM_ERROR_CODE: "21"}) == 1

    statuses = instrumented.points(names.STREAM_STATUS.name)
    assert value_of(statuses, **{names.IG_STREAM_STATUS: "disconnected"}) == 1
    spans = [s.name for s in telemetry.finished_spans()]
    assert spans.count(names.SPAN_STREAM_SUBSCRIBE) == 3
    assert names.SPAN_STREAM_SESSION in spans
    for span in telemetry.finished_spans():
        text = span.to_json()
        assert "secretcst123" not in text and ACCOUNT not in text


async def test_raw_client_confirms_on_trade_item(tlcp_server, instrumented):
    tlcp_server.script.deal_reference = "RAWREF0001"
    TRACKER.sent("RAWREF0001")
    async with connect(ws_url(tlcp_server)) as ws:
        await open_session(ws)
        await ws.send(tlcp.encode_request(
            "control",
            add(1, 1, "DISTINCT", [f"TRADE:{ACCOUNT}"], ["CONFIRMS", "OPU", "WOU"]),
        ))
        [update] = await read_updates(ws, 1)
        assert json.loads(update.raw.split("|")[0])["dealReference"] == "RAWREF0001"
    [latency] = instrumented.points(names.DEAL_CONFIRMATION_LATENCY.name)
    assert latency.attributes == {names.IG_CONFIRMATION_SOURCE: "stream"}


async def test_non_tlcp_connections_are_left_alone(tlcp_server, instrumented):
    url = tlcp_server.url.replace("http://", "ws://") + "/lightstreamer"
    async with connect(url) as ws:
        await ws.send("wsok")
        assert await ws.recv() == "WSOK\r\n"
    assert _websockets._watches  # TLCP by path: observed
    assert instrumented.points(names.STREAM_UPDATES.name) == []

"""Fixtures for stream instrumentation tests: a TLCP server on loopback.

``tlcp_server`` is a small, honest TLCP-over-WebSocket server built on the
project's codec (aiohttp, its own thread): it answers ``wsok``,
``create_session``/``bind_session``, ``control`` add/delete/destroy, streams
a scripted number of updates per item with live server timestamps, keeps
the session alive with PROBEs, and can go silent (``stall``) or push a
``CONFIRMS`` on ``TRADE`` items for a given deal reference.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from aiohttp import WSMsgType, web

from ig_otel import _tlcp as tlcp

PASSWORD = "CST-secretcst123|XST-secretxst456"
ACCOUNT = "ABC123"


@dataclass
class Script:
    """What the server does for each subscribed item."""

    updates: int = 5
    stall: bool = False
    deal_reference: str | None = None
    deal_status: str = "ACCEPTED"
    lost: int = 0
    end_after_updates: int | None = None
    sessions: int = 0
    requests: list[str] = field(default_factory=list)


def _value(name: str, index: int) -> str:
    now = time.time()
    if name in ("UTM", "TIMESTAMP"):
        return str(int(now * 1000) - 50)
    if name == "UPDATE_TIME":
        return datetime.fromtimestamp(now - 1, ZoneInfo("Europe/London")).strftime(
            "%H:%M:%S"
        )
    if name in ("LTV", "TTV"):
        return str(index + 1)
    return f"1.{1000 + index}"


class TlcpServer:
    """A TLCP server on 127.0.0.1; ``url`` is what the SDK connects to."""

    def __init__(self) -> None:
        self.script = Script()
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._sockets: set[web.WebSocketResponse] = set()
        self._tasks: set[asyncio.Task] = set()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/lightstreamer", self._ws)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        assert self._runner is not None
        for task in list(self._tasks):
            task.cancel()
        for ws in list(self._sockets):
            await asyncio.wait_for(ws.close(), 2)
        await asyncio.wait_for(self._runner.cleanup(), 5)

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=tlcp.SUBPROTOCOLS, heartbeat=None)
        await ws.prepare(request)
        self._sockets.add(ws)
        probe = asyncio.create_task(self._probe(ws))
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    break
                self.script.requests.append(message.data)
                for req in tlcp.parse_requests(message.data):
                    if isinstance(req, tlcp.Request):
                        await self._answer(ws, req)
        finally:
            probe.cancel()
            self._sockets.discard(ws)
        return ws

    async def _probe(self, ws: web.WebSocketResponse) -> None:
        while not ws.closed:
            await asyncio.sleep(0.2)
            if not self.script.stall and not ws.closed:
                await ws.send_str(tlcp.join_lines([tlcp.encode_probe()]))

    async def _answer(self, ws: web.WebSocketResponse, req: tlcp.Request) -> None:
        if req.name == "wsok":
            await ws.send_str(tlcp.join_lines([tlcp.encode_wsok()]))
        elif req.name in ("create_session", "bind_session"):
            self.script.sessions += 1
            session = req.params.get("LS_session") or f"S{self.script.sessions}"
            lines = [tlcp.encode_conok(session, 50000, 1000), tlcp.encode_cons()]
            await ws.send_str(tlcp.join_lines(lines))
        elif req.name == "control":
            await self._control(ws, req.params)

    async def _control(self, ws: web.WebSocketResponse, params: dict) -> None:
        op = params.get("LS_op")
        if op == "destroy":
            await ws.close()
            return
        sub = int(params.get("LS_subId", "0"))
        if op == "delete":
            await ws.send_str(tlcp.join_lines([tlcp.encode_unsub(sub)]))
            return
        if op != "add":
            return
        items = params["LS_group"].split(" ")
        fields = params["LS_schema"].split(" ")
        if any(not item.split(":")[0].isalpha() for item in items):
            line = tlcp.encode_reqerr(int(params["LS_reqId"]), 21, "Invalid group")
            await ws.send_str(tlcp.join_lines([line]))
            return
        lines = [tlcp.encode_subok(sub, len(items), len(fields))]
        await ws.send_str(tlcp.join_lines(lines))
        self._spawn(self._stream(ws, sub, items, fields, params))

    async def _stream(self, ws, sub, items, fields, params) -> None:
        script = self.script
        previous: dict[int, list] = {}
        for index in range(script.updates):
            if script.stall or ws.closed:
                return
            lines = []
            for pos, item in enumerate(items, start=1):
                if item.startswith("TRADE:"):
                    lines.extend(self._trade(sub, pos, fields, index))
                    continue
                values = [_value(name, index) for name in fields]
                lines.append(tlcp.encode_update(sub, pos, previous.get(pos), values))
                previous[pos] = values
            if params.get("LS_mode") == "DISTINCT" and index == 0:
                lines.extend(tlcp.encode_eos(sub, pos) for pos in range(1, 2))
            if script.lost and index == 0:
                lines.append(tlcp.encode_ov(sub, 1, script.lost))
            await ws.send_str(tlcp.join_lines(lines))
            if script.end_after_updates is not None and index + 1 >= (
                script.end_after_updates
            ):
                await ws.send_str(tlcp.join_lines([tlcp.encode_end(48, "max")]))
                await ws.close()
                return
            await asyncio.sleep(0.01)

    def _trade(self, sub, pos, fields, index) -> list[str]:
        script = self.script
        if index != 0 or script.deal_reference is None:
            return []
        confirms = json.dumps(
            {
                "dealReference": script.deal_reference,
                "dealId": "DIAAAAE6FQKP3AV",
                "dealStatus": script.deal_status,
                "reason": "SUCCESS" if script.deal_status == "ACCEPTED" else
                "MARKET_CLOSED",
                "epic": "CS.D.EURUSD.MINI.IP",
                "status": "OPEN",
            }
        )
        values = [confirms if name == "CONFIRMS" else None for name in fields]
        return [tlcp.encode_update(sub, pos, None, values)]


@pytest.fixture
def tlcp_server() -> Iterator[TlcpServer]:
    server = TlcpServer()
    server.start()
    yield server
    server.stop()


def wait_for(predicate, timeout: float = 10.0, step: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``timeout``; bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def value_of(points, **attributes) -> float:
    """Sum of data point values whose attributes include ``attributes``."""
    total = 0.0
    for point in points:
        if all(point.attributes.get(k) == v for k, v in attributes.items()):
            total += point.value
    return total

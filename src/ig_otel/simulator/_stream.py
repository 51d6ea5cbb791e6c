"""IG's Lightstreamer server: TLCP over WebSocket at ``/lightstreamer``.

Speaks TLCP as the Python SDKs (1.0.x and 2.x) expect it: ``WSOK`` before
``CONOK``, sessions authenticated by ``LS_password=CST-..|XST-..`` against a
live REST session, batched control requests, ``SUBOK`` with the request's
item and field counts, compact ``U`` lines, ``EOS`` for DISTINCT items,
``PROBE`` at half the announced keepalive, ``LOOP`` rebinds and ``END``
re-creations. Parsing and encoding come from :mod:`ig_otel._tlcp`.

A stream session outlives its WebSocket: ``bind_session`` on a new socket
(after ``LOOP``) resumes it with its subscriptions. HTTP binds
(``/lightstreamer/*.txt``, used for recovery and fallback) are answered at
once with an error so the client starts a fresh session.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from ig_otel import _tlcp
from ig_otel.simulator._items import (
    ADAPTERS,
    FIELDS,
    MODES,
    ItemRef,
    parse_item,
    render_account,
    render_candle,
    render_market,
    render_price,
    render_tick,
)
from ig_otel.simulator._market import Quote

if TYPE_CHECKING:
    from ig_otel.simulator._server import Core

__all__ = ["StreamServer"]

logger = logging.getLogger(__name__)

REQUEST_LIMIT = 50_000
MAX_PENDING = 20_000
SERVER_NAME = "ig-otel simulator"


@dataclass
class Subscription:
    """One active subscription of a stream session."""

    sub_id: int
    mode: str
    items: list[ItemRef]
    fields: list[str]
    snapshot: bool
    last: dict[int, list[str | None]] = field(default_factory=dict)
    candle_start: dict[int, int] = field(default_factory=dict)

    def epics(self) -> set[str]:
        return {item.epic for item in self.items if item.epic}


class StreamSession:
    """A TLCP session: subscriptions plus the WebSocket it is bound to."""

    def __init__(self, session_id: str, cst: str, accounts: list[str],
                 protocol: str | None, keepalive_ms: int, now: float) -> None:
        self.session_id = session_id
        self.cst = cst
        self.accounts = accounts
        self.protocol = protocol
        self.keepalive_ms = keepalive_ms
        self.subscriptions: dict[int, Subscription] = {}
        self.ws: web.WebSocketResponse | None = None
        self.bound_at = now
        self.pending: list[str] = []
        self.wake = asyncio.Event()
        self.closed = False
        self.cut = False
        self.pump: asyncio.Task[None] | None = None

    def queue(self, lines: Sequence[str]) -> None:
        """Add lines for the writer; oldest dropped past a bound."""
        if self.closed:
            return
        self.pending.extend(lines)
        if len(self.pending) > MAX_PENDING:
            del self.pending[: len(self.pending) - MAX_PENDING]
        self.wake.set()


class StreamServer:
    """Every stream session of one simulator."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.sessions: dict[str, StreamSession] = {}
        self._ids = itertools.count(1)
        self._sockets: set[web.WebSocketResponse] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coroutine: Any) -> None:
        # Keep a reference so shutdown can wait for fire-and-forget sends.
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- transport --------------------------------------------------------

    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        """``GET /lightstreamer``: the WebSocket upgrade and its read loop."""
        offered = request.headers.get("Sec-WebSocket-Protocol", "")
        ws = web.WebSocketResponse(protocols=_tlcp.SUBPROTOCOLS, autoping=True,
                                   max_msg_size=1 << 20)
        await ws.prepare(request)
        protocol = ws.ws_protocol or offered.split(",")[0].strip() or None
        self._sockets.add(ws)
        self.core.stats.ws_connections += 1
        bound: list[StreamSession] = []
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    await self._on_message(ws, protocol, message.data, bound)
                elif message.type == WSMsgType.BINARY:
                    await _send(ws, [_tlcp.encode_error(67, "binary frames")])
                    break
        except Exception:  # a broken client must not take the server down
            logger.debug("stream connection failed", exc_info=True)
        finally:
            self._sockets.discard(ws)
            for session in bound:
                if session.ws is ws:
                    session.ws = None
        return ws

    async def handle_http(self, request: web.Request) -> web.Response:
        """``POST /lightstreamer/*.txt``: refuse fast so the client re-creates."""
        name = request.match_info.get("name", "")
        self.core.stats.requests[f"POST /lightstreamer/{name}.txt"] += 1
        with contextlib.suppress(Exception):
            await request.read()
        if name == "bind_session":
            body = _tlcp.join_lines([_tlcp.encode_conerr(20, "Session not found")])
            return web.Response(text=body, content_type="text/plain")
        if name == "control":
            body = _tlcp.join_lines([_tlcp.encode_error(20, "Session not found")])
            return web.Response(text=body, content_type="text/plain")
        return web.Response(status=503, text="HTTP transports are not served")

    # -- requests ---------------------------------------------------------

    async def _on_message(self, ws: web.WebSocketResponse, protocol: str | None,
                          data: str, bound: list[StreamSession]) -> None:
        for request in _tlcp.parse_requests(data):
            if isinstance(request, _tlcp.Malformed):
                self.core.stats.tlcp_errors += 1
                await _send(ws, [_tlcp.encode_error(67, "Malformed request")])
                continue
            if request.name == "wsok":
                await _send(ws, [_tlcp.encode_wsok()])
            elif request.name == "create_session":
                session = await self._create(ws, protocol, request.params)
                if session is not None:
                    bound.append(session)
            elif request.name == "bind_session":
                session = await self._bind(ws, request.params)
                if session is not None:
                    bound.append(session)
            elif request.name == "control":
                await self._control(ws, bound, request.params)
            elif request.name == "msg":
                await _send(ws, [_tlcp.encode_msgfail(
                    request.params.get("LS_sequence", "*"),
                    _int(request.params.get("LS_msg_prog"), 0), 68,
                    "Messages are not supported")])

    async def _create(self, ws: web.WebSocketResponse, protocol: str | None,
                      params: dict[str, str]) -> StreamSession | None:
        core = self.core
        if core.scenarios.rejects_protocol(protocol):
            version = (protocol or "").split(".lightstreamer")[0].replace("TLCP-", "")
            await _send(ws, [_tlcp.encode_conerr(
                65, f"Unsupported protocol version: {version}")])
            return None
        adapter_set = params.get("LS_adapter_set")
        if adapter_set not in (None, "DEFAULT"):
            await _send(ws, [_tlcp.encode_conerr(2, "Requested Adapter Set not "
                                                    "available")])
            return None
        rest = core.state.stream_session(params.get("LS_password"))
        user = params.get("LS_user")
        if rest is None or (user and user not in core.state.accounts):
            core.stats.stream_auth_failures += 1
            await _send(ws, [_tlcp.encode_conerr(1, "User/password check failed")])
            return None

        old = params.get("LS_old_session")
        if old and old in self.sessions:
            self._close(self.sessions[old])
        session_id = f"S{core.seed:x}T{next(self._ids):06d}"
        keepalive = self._keepalive(params)
        accounts = list(core.state.accounts)
        session = StreamSession(session_id, rest.cst, accounts, protocol, keepalive,
                                core.clock())
        self.sessions[session_id] = session
        core.stats.stream_sessions += 1
        await self._attach(ws, session)
        storm = core.scenarios.storm_end()
        if storm is not None:
            asyncio.get_running_loop().call_later(storm, self._end, session, 48,
                                                  "Maximum session duration")
        return session

    def _keepalive(self, params: dict[str, str]) -> int:
        default = self.core.config.keepalive_ms
        requested = _int(params.get("LS_keepalive_millis"), default)
        return max(self.core.config.min_keepalive_ms, min(requested, 60_000))

    async def _bind(self, ws: web.WebSocketResponse,
                    params: dict[str, str]) -> StreamSession | None:
        session = self.sessions.get(params.get("LS_session", ""))
        if session is None or session.closed:
            await _send(ws, [_tlcp.encode_conerr(20, "Session not found")])
            return None
        if "LS_keepalive_millis" in params:
            session.keepalive_ms = self._keepalive(params)
        old = session.ws
        if old is not None and old is not ws:
            with contextlib.suppress(Exception):
                await old.close()
        session.cut = False
        await self._attach(ws, session)
        return session

    async def _attach(self, ws: web.WebSocketResponse, session: StreamSession) -> None:
        session.ws = ws
        session.bound_at = self.core.clock()
        await _send(ws, [
            _tlcp.encode_conok(session.session_id, REQUEST_LIMIT,
                               session.keepalive_ms),
            _tlcp.encode_servname(SERVER_NAME),
            _tlcp.encode_cons("unlimited"),
        ])
        if session.pump is None or session.pump.done():
            session.pump = asyncio.create_task(self._pump(session))

    async def _control(self, ws: web.WebSocketResponse, bound: list[StreamSession],
                       params: dict[str, str]) -> None:
        session = next((s for s in reversed(bound) if s.ws is ws), None)
        request_id = _int(params.get("LS_reqId"), 0)
        if session is None:
            await _send(ws, [_tlcp.encode_reqerr(request_id, 20, "Session not found")])
            return
        operation = params.get("LS_op")
        ack = params.get("LS_ack", "true") != "false"
        if operation == "add":
            lines = self._add(session, request_id, params)
        elif operation == "delete":
            lines = self._delete(session, request_id, params)
        elif operation == "destroy":
            session.queue([_tlcp.encode_reqok(request_id)])
            self._close(session, close_socket=params.get("LS_close_socket") != "false")
            return
        elif operation == "reconf":
            lines = [_tlcp.encode_reqok(request_id)] if ack else []
            sub_id = _int(params.get("LS_subId"), 0)
            if sub_id in session.subscriptions:
                lines.append(_tlcp.encode_conf(sub_id, "unlimited", True))
        elif operation == "force_rebind":
            lines = [_tlcp.encode_reqok(request_id), _tlcp.encode_loop(0)]
        elif operation == "constrain":
            lines = [_tlcp.encode_reqok(request_id)]
        else:
            lines = [_tlcp.encode_reqerr(request_id, 68, "Unsupported operation")]
        if lines and ack and lines[0].startswith("SUBOK"):
            lines.insert(0, _tlcp.encode_reqok(request_id))
        session.queue(lines)

    def _add(self, session: StreamSession, request_id: int,
             params: dict[str, str]) -> list[str]:
        sub_id = _int(params.get("LS_subId"), -1)
        mode = params.get("LS_mode", "")
        names = params.get("LS_group", "").split()
        fields = params.get("LS_schema", "").split()
        if sub_id < 0 or sub_id in session.subscriptions:
            return [_tlcp.encode_reqerr(request_id, 68, "Invalid subscription id")]
        items: list[ItemRef] = []
        for name in names:
            item = parse_item(name, session.accounts, self.core.market)
            if item is None:
                return [_tlcp.encode_reqerr(request_id, 21, "Invalid group")]
            items.append(item)
        if not items:
            return [_tlcp.encode_reqerr(request_id, 21, "Invalid group")]
        adapter = params.get("LS_data_adapter") or "DEFAULT"
        if adapter not in ("DEFAULT", "Pricing"):
            return [_tlcp.encode_reqerr(request_id, 17, "Bad Data Adapter")]
        if any(ADAPTERS[item.kind] != adapter for item in items):
            return [_tlcp.encode_reqerr(request_id, 21, "Invalid group")]
        if any(MODES[item.kind] != mode for item in items):
            return [_tlcp.encode_reqerr(request_id, 24,
                                        "Subscription mode not allowed")]
        if not fields or any(f not in FIELDS[item.kind] for item in items
                             for f in fields):
            return [_tlcp.encode_reqerr(request_id, 23, "Invalid schema")]

        subscription = Subscription(sub_id, mode, items, fields,
                                    params.get("LS_snapshot", "true") != "false")
        session.subscriptions[sub_id] = subscription
        self.core.stats.subscriptions += 1
        lines = [_tlcp.encode_subok(sub_id, len(items), len(fields)),
                 _tlcp.encode_conf(sub_id, "unlimited", mode == "MERGE")]
        lines.extend(self._snapshot(session, subscription))
        return lines

    def _delete(self, session: StreamSession, request_id: int,
                params: dict[str, str]) -> list[str]:
        sub_id = _int(params.get("LS_subId"), -1)
        if session.subscriptions.pop(sub_id, None) is None:
            return [_tlcp.encode_reqerr(request_id, 19, "Subscription not found")]
        lines = [_tlcp.encode_unsub(sub_id)]
        if params.get("LS_ack", "true") != "false":
            lines.insert(0, _tlcp.encode_reqok(request_id))
        return lines

    # -- updates ----------------------------------------------------------

    def _snapshot(self, session: StreamSession, sub: Subscription) -> list[str]:
        core = self.core
        now_ms = core.state.now_ms()
        lines: list[str] = []
        for index, item in enumerate(sub.items, start=1):
            if item.kind == "TRADE":
                lines.append(_tlcp.encode_eos(sub.sub_id, index))
                continue
            if not sub.snapshot:
                continue
            quote = core.market.quote(item.epic, now_ms) if item.epic else None
            values = self._values(session, sub, index, item, quote)
            if values is not None:
                lines.append(self._update_line(sub, index, values))
            if item.kind == "CHART_TICK":
                lines.append(_tlcp.encode_eos(sub.sub_id, index))
        return lines

    def _values(self, session: StreamSession, sub: Subscription, index: int,
                item: ItemRef, quote: Quote | None) -> list[str | None] | None:
        core = self.core
        if item.kind == "ACCOUNT":
            assert item.account_id is not None
            return render_account(core.state.account_info(item.account_id),
                                  sub.fields)
        if quote is None:
            return None
        status = core.market.status.get(quote.epic, "TRADEABLE")
        if item.kind == "PRICE":
            return render_price(quote, sub.fields, status)
        if item.kind == "MARKET":
            return render_market(quote, sub.fields, status)
        if item.kind == "CHART_TICK":
            return render_tick(quote, sub.fields)
        if item.kind == "CHART":
            assert item.epic is not None and item.scale is not None
            current, _ = core.market.candle(item.epic, item.scale)
            if current is None:
                return None
            return render_candle(quote, current, sub.fields, False)
        return None

    @staticmethod
    def _update_line(sub: Subscription, index: int,
                     values: list[str | None]) -> str:
        previous = sub.last.get(index)
        sub.last[index] = values
        return _tlcp.encode_update(sub.sub_id, index, previous, values)

    def publish_quotes(self, quotes: dict[str, Quote]) -> None:
        """Send one round of price ticks to every subscribed item."""
        for session in list(self.sessions.values()):
            if session.closed:
                continue
            lines: list[str] = []
            for sub in session.subscriptions.values():
                for index, item in enumerate(sub.items, start=1):
                    quote = quotes.get(item.epic) if item.epic else None
                    if quote is None:
                        continue
                    lines.extend(self._quote_lines(session, sub, index, item, quote))
            if lines:
                self.core.stats.updates_sent += len(lines)
                session.queue(lines)

    def _quote_lines(self, session: StreamSession, sub: Subscription, index: int,
                     item: ItemRef, quote: Quote) -> list[str]:
        if item.kind == "CHART":
            return self._candle_lines(sub, index, item, quote)
        values = self._values(session, sub, index, item, quote)
        if values is None:
            return []
        if sub.mode == "MERGE" and sub.last.get(index) == values:
            return []
        if sub.mode == "DISTINCT":
            sub.last.pop(index, None)
        return [self._update_line(sub, index, values)]

    def _candle_lines(self, sub: Subscription, index: int, item: ItemRef,
                      quote: Quote) -> list[str]:
        assert item.epic is not None and item.scale is not None
        current, closed = self.core.market.candle(item.epic, item.scale)
        if current is None:
            return []
        lines = []
        started = sub.candle_start.get(index)
        if started is not None and started != current.start_ms and closed is not None:
            lines.append(self._update_line(
                sub, index, render_candle(quote, closed, sub.fields, True)))
        sub.candle_start[index] = current.start_ms
        values = render_candle(quote, current, sub.fields, False)
        if sub.last.get(index) != values:
            lines.append(self._update_line(sub, index, values))
        return lines

    def publish_accounts(self) -> None:
        """Refresh every ``ACCOUNT`` item whose values changed."""
        for session in list(self.sessions.values()):
            lines = []
            for sub in session.subscriptions.values():
                for index, item in enumerate(sub.items, start=1):
                    if item.kind != "ACCOUNT":
                        continue
                    values = self._values(session, sub, index, item, None)
                    if values is not None and sub.last.get(index) != values:
                        lines.append(self._update_line(sub, index, values))
            if lines:
                session.queue(lines)

    def publish_trade(self, account_id: str, field_name: str,
                      payload: dict[str, Any]) -> None:
        """Send one ``CONFIRMS``/``OPU``/``WOU`` event on ``TRADE:{account}``."""
        text = json.dumps(payload, separators=(",", ":"))
        for session in list(self.sessions.values()):
            lines = []
            for sub in session.subscriptions.values():
                if field_name not in sub.fields:
                    continue
                for index, item in enumerate(sub.items, start=1):
                    if item.kind != "TRADE" or item.account_id != account_id:
                        continue
                    # Only this field changes: the others travel as "unchanged",
                    # except in the first update, which the SDK needs complete.
                    previous = sub.last.get(index)
                    values = list(previous or [None] * len(sub.fields))
                    values[sub.fields.index(field_name)] = text
                    lines.append(_tlcp.encode_update(sub.sub_id, index, previous,
                                                     values, runs=False))
                    sub.last[index] = values
            if lines:
                self.core.stats.trade_updates += len(lines)
                session.queue(lines)

    # -- writer -----------------------------------------------------------

    async def _pump(self, session: StreamSession) -> None:
        """Write queued lines; PROBE when idle; apply stream scenarios."""
        scenarios = self.core.scenarios
        try:
            while not session.closed:
                probe_every = max(0.05, session.keepalive_ms / 2000)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(session.wake.wait(), probe_every)
                session.wake.clear()
                ws = session.ws
                if ws is None or ws.closed:
                    session.pending.clear()
                    if self._expired(session):
                        self._close(session)
                    continue
                if scenarios.stream_stalled():
                    # Silence: updates are lost, but session and subscription
                    # answers wait, so a session opened mid-stall still gets
                    # its SUBOKs once the stall ends.
                    session.pending = [
                        line for line in session.pending if not line.startswith("U,")
                    ]
                    continue
                if await self._maybe_cut(session, ws):
                    continue
                lines, session.pending = session.pending, []
                if not lines:
                    lines = [_tlcp.encode_probe()]
                    self.core.stats.probes_sent += 1
                garbage = scenarios.garbage_line()
                if garbage is not None:
                    lines.insert(len(lines) // 2, garbage)
                await _send(ws, lines)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.warning("stream writer failed for a session", exc_info=True)
            self._close(session)

    def _expired(self, session: StreamSession) -> bool:
        # An unbound session waits for a rebind, but not forever.
        return self.core.clock() - session.bound_at > self.core.config.unbound_ttl

    async def _maybe_cut(self, session: StreamSession,
                         ws: web.WebSocketResponse) -> bool:
        if session.cut:
            return False
        mode = self.core.scenarios.stream_cut(self.core.clock() - session.bound_at)
        if mode is None:
            return False
        session.cut = True
        self.core.stats.stream_cuts += 1
        if mode == "loop":
            await _send(ws, [_tlcp.encode_loop(0)])
            return True
        if mode == "end":
            await self._end_now(session, 48, "Maximum session duration")
            return True
        session.pending.clear()
        session.ws = None
        with contextlib.suppress(Exception):
            await ws.close()
        return True

    def _end(self, session: StreamSession, code: int, message: str) -> None:
        if not session.closed:
            self._spawn(self._end_now(session, code, message))

    async def _end_now(self, session: StreamSession, code: int, message: str) -> None:
        ws = session.ws
        self._close(session, close_socket=False)
        if ws is not None and not ws.closed:
            await _send(ws, [_tlcp.encode_end(code, message)])
            with contextlib.suppress(Exception):
                await ws.close()

    def _close(self, session: StreamSession, close_socket: bool = False) -> None:
        session.closed = True
        session.subscriptions.clear()
        self.sessions.pop(session.session_id, None)
        ws = session.ws
        if session.pump is not None and session.pump is not asyncio.current_task():
            session.pump.cancel()
        if close_socket and ws is not None and not ws.closed:
            lines, session.pending = session.pending, []
            self._spawn(_send_and_close(ws, lines))

    def end_sessions(self, code: int = 48, message: str = "Session closed") -> int:
        """``END`` every live session; answers how many were ended."""
        live = [s for s in self.sessions.values() if not s.closed]
        for session in live:
            self._end(session, code, message)
        return len(live)

    async def close_all(self) -> None:
        """Stop every session and socket (simulator shutdown)."""
        pumps = [s.pump for s in self.sessions.values() if s.pump is not None]
        for session in list(self.sessions.values()):
            self._close(session)
        pending = [*pumps, *self._tasks]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close()


async def _send(ws: web.WebSocketResponse, lines: Sequence[str]) -> None:
    if ws.closed or not lines:
        return
    try:
        await ws.send_str(_tlcp.join_lines(lines))
    except (ConnectionError, RuntimeError) as error:
        logger.debug("stream send failed: %s", error)


async def _send_and_close(ws: web.WebSocketResponse, lines: Sequence[str]) -> None:
    await _send(ws, lines)
    with contextlib.suppress(Exception):
        await ws.close()


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default

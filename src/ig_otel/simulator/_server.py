"""The simulator: one aiohttp server for REST, the stream and the admin API.

:class:`Simulator` is the public object. It runs either inside the caller's
event loop (``async with``) or on its own loop in a background thread
(``with``), on one port: REST under ``/gateway/deal``, Lightstreamer at
``/lightstreamer``, and the admin API under ``/_sim``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from ig_otel.simulator._allowance import AllowanceBook, AllowanceLimits
from ig_otel.simulator._crypto import KeyPair
from ig_otel.simulator._market import DEFAULT_INSTRUMENTS, Instrument, MarketModel
from ig_otel.simulator._rest import RestApi
from ig_otel.simulator._scenarios import SCENARIOS, ScenarioBook, ScenarioError
from ig_otel.simulator._state import Account, DealOutcome, IGState
from ig_otel.simulator._stream import StreamServer

__all__ = ["Simulator", "SimulatorConfig", "Stats"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class SimulatorConfig:
    """Timing knobs of the stream.

    Attributes:
        keepalive_ms: Keepalive announced in CONOK when the client asks none.
        min_keepalive_ms: Lowest keepalive granted to a client's request.
        updates_per_second: Price ticks per second per epic.
        unbound_ttl: Seconds a session without a socket waits for a rebind.
    """

    keepalive_ms: int = 5000
    min_keepalive_ms: int = 200
    updates_per_second: float = 4.0
    unbound_ttl: float = 30.0


@dataclass
class Stats:
    """What the simulator has served (for tests and the admin API)."""

    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    forbidden: int = 0
    ws_connections: int = 0
    stream_sessions: int = 0
    stream_auth_failures: int = 0
    subscriptions: int = 0
    updates_sent: int = 0
    trade_updates: int = 0
    probes_sent: int = 0
    stream_cuts: int = 0
    tlcp_errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["requests"] = dict(self.requests)
        data["statuses"] = {str(k): v for k, v in self.statuses.items()}
        return data


class Core:
    """Everything the REST and stream adapters share."""

    def __init__(self, *, seed: int, limits: AllowanceLimits,
                 config: SimulatorConfig, instruments: Iterable[Instrument],
                 credentials: Mapping[str, str], accounts: list[Account]) -> None:
        self.seed = seed
        self.config = config
        self.clock: Callable[[], float] = time.monotonic
        self.limits = limits
        self.market = MarketModel(seed, instruments)
        self.state = IGState(
            self.market, self.clock, time.time, random.Random(f"{seed}:ids"),
            username=credentials["username"], password=credentials["password"],
            api_key=credentials["api_key"], accounts=accounts,
        )
        self.scenarios = ScenarioBook(self.clock, random.Random(f"{seed}:faults"))
        self.allowances = AllowanceBook(limits)
        self.keys = KeyPair()
        self.stats = Stats()
        self.stream = StreamServer(self)
        self.rest = RestApi(self)
        self.stream_url = ""

    def effective_limits(self) -> AllowanceLimits:
        """Configured limits, lowered by ``allowance-exhaustion`` if active."""
        return self.limits.with_overrides(**self.scenarios.allowance_overrides())

    def publish_deal(self, outcome: DealOutcome) -> None:
        """Stream a deal's TRADE events (late under ``slow-confirms``)."""
        delay = self.scenarios.confirm_stream_delay()

        def send() -> None:
            for field_name, payload in outcome.events:
                self.stream.publish_trade(outcome.account_id, field_name, payload)
            self.stream.publish_accounts()

        if delay > 0:
            asyncio.get_running_loop().call_later(delay, send)
        else:
            send()


class Simulator:
    """IG REST + Lightstreamer on loopback, with switchable fault scenarios.

    Use ``with Simulator() as sim:`` from synchronous code (the server runs on
    its own event loop in a background thread) or ``async with Simulator()``
    inside a running loop. ``port=0`` picks a free port.

    Args:
        host: Address to bind (loopback by default).
        port: TCP port; 0 for an ephemeral one.
        scenarios: Scenario names, or ``(name, params)`` pairs, active at start.
        seed: Seed of prices, ids and fault decisions.
        limits: IG allowances to enforce.
        keepalive_ms: Stream keepalive announced when the client asks none.
        updates_per_second: Price ticks per second per epic.
        instruments: Markets to serve (IG-like defaults).
        username, password, api_key: Credentials clients must log in with.
        account_id, second_account_id: The client's two accounts.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        scenarios: Iterable[str | tuple[str, Mapping[str, object]]] = (),
        seed: int = 0,
        *,
        limits: AllowanceLimits | None = None,
        keepalive_ms: int = 5000,
        updates_per_second: float = 4.0,
        instruments: Iterable[Instrument] = DEFAULT_INSTRUMENTS,
        username: str = "sim_user",
        password: str = "sim-password",
        api_key: str = "sim-api-key-0001",
        account_id: str = "ABC123",
        second_account_id: str = "ABC456",
    ) -> None:
        if updates_per_second <= 0:
            raise ValueError("updates_per_second must be positive")
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.api_key = api_key
        self.account_id = account_id
        self.second_account_id = second_account_id
        accounts = [
            Account(account_id, "CFD account", "CFD", preferred=True),
            Account(second_account_id, "Spread bet account", "SPREADBET"),
        ]
        config = SimulatorConfig(keepalive_ms=keepalive_ms,
                                 updates_per_second=updates_per_second)
        self._core = Core(
            seed=seed, limits=limits or AllowanceLimits(), config=config,
            instruments=instruments, accounts=accounts,
            credentials={"username": username, "password": password,
                         "api_key": api_key},
        )
        for entry in scenarios:
            name, params = (entry, {}) if isinstance(entry, str) else entry
            self._core.scenarios.activate(name, **params)
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- URLs and credentials --------------------------------------------

    @property
    def seed(self) -> int:
        return self._core.seed

    @property
    def rest_url(self) -> str:
        """REST base, e.g. ``http://127.0.0.1:PORT/gateway/deal``."""
        return f"{self.base_url}/gateway/deal"

    @property
    def stream_url(self) -> str:
        """Lightstreamer server address (``lightstreamerEndpoint``), no path."""
        return self.base_url

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def admin_url(self) -> str:
        """Admin API base (``/_sim``)."""
        return f"{self.base_url}/_sim"

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        """Bind the port and start serving in the running loop."""
        app = web.Application(client_max_size=1 << 20)
        stream = self._core.stream
        app.router.add_get("/lightstreamer", stream.handle_ws)
        app.router.add_post(r"/lightstreamer/{name:[a-z_]+}.txt", stream.handle_http)
        app.router.add_route("*", "/_sim/{tail:.*}", self._admin)
        app.router.add_route("*", "/{tail:.*}", self._core.rest.handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        self._core.stream_url = self.stream_url
        self._loop = asyncio.get_running_loop()
        self._ticker = asyncio.create_task(self._tick_forever())
        logger.info("IG simulator serving on %s", self.base_url)

    async def stop(self) -> None:
        """Close every stream and stop serving."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        await self._core.stream.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        logger.info("IG simulator stopped")

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __enter__(self) -> Simulator:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.start())
            except BaseException as error:
                failure.append(error)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="ig-simulator", daemon=True)
        self._thread.start()
        if not ready.wait(10) or failure:
            raise RuntimeError("the IG simulator did not start") from (
                failure[0] if failure else None)
        return self

    def __exit__(self, *exc_info: object) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        self._thread = None

    async def _tick_forever(self) -> None:
        core = self._core
        interval = 1.0 / core.config.updates_per_second
        next_account = 0.0
        while True:
            await asyncio.sleep(interval)
            try:
                now_ms = core.state.now_ms()
                quotes = {epic: core.market.advance(epic, now_ms)
                          for epic in core.market.epics}
                if not core.scenarios.stream_stalled():
                    core.stream.publish_quotes(quotes)
                    if core.clock() >= next_account:
                        core.stream.publish_accounts()
                        next_account = core.clock() + 1.0
            except Exception:
                logger.warning("price tick failed", exc_info=True)

    # -- control from the caller's thread ---------------------------------

    def _run(self, function: Callable[[], T]) -> T:
        # State lives on the simulator's loop: call there, from any thread.
        loop = self._loop
        if loop is None or not loop.is_running() or self._on_loop():
            return function()

        async def call() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(10)

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def set_scenario(self, name: str, **params: object) -> dict[str, object]:
        """Switch a fault scenario on (or change its parameters).

        Raises:
            ScenarioError: unknown scenario or parameter.
        """
        return self._run(lambda: self._core.scenarios.activate(name, **params)
                         .as_dict())

    def clear_scenario(self, name: str) -> bool:
        """Switch one scenario off; False if it was not on."""
        return self._run(lambda: self._core.scenarios.deactivate(name))

    def clear_scenarios(self) -> None:
        """Switch every scenario off."""
        self._run(self._core.scenarios.clear)

    def active_scenarios(self) -> list[dict[str, object]]:
        """Active scenarios with their parameters."""
        return self._run(lambda: [a.as_dict() for a in
                                  self._core.scenarios.active()])

    def reset_allowances(self) -> None:
        """Forget all counted requests and spent price points."""
        self._run(self._core.allowances.reset)

    def set_market_status(self, epic: str, status: str) -> None:
        """Set an epic's market status (``TRADEABLE``, ``CLOSED``...)."""
        def apply() -> None:
            if epic not in self._core.market:
                raise KeyError(epic)
            self._core.market.status[epic] = status
        self._run(apply)

    def end_stream_sessions(self, code: int = 48) -> int:
        """Send ``END`` to every stream session now; answers how many."""
        return self._run(lambda: self._core.stream.end_sessions(code))

    @property
    def stats(self) -> Stats:
        """Counters of what was served (live object; read, do not modify)."""
        return self._core.stats

    @property
    def requests_served(self) -> Counter[str]:
        """Requests per ``"METHOD /template"`` (effective method)."""
        return self._core.stats.requests

    @property
    def forbidden_sent(self) -> int:
        """How many 403 answers were sent."""
        return self._core.stats.forbidden

    def snapshot(self) -> dict[str, Any]:
        """The effective state: sessions, positions, orders, scenarios, stats."""
        return self._run(self._snapshot)

    def _snapshot(self) -> dict[str, Any]:
        core = self._core
        state = core.state
        return {
            "rest_sessions": len(state.sessions),
            "oauth_sessions": len(state.oauth),
            "stream_sessions": [
                {"id": s.session_id, "bound": s.ws is not None,
                 "subscriptions": {sub_id: [i.name for i in sub.items]
                                   for sub_id, sub in s.subscriptions.items()}}
                for s in core.stream.sessions.values()],
            "positions": [state.position_view(deal)
                          for deal in state.positions.values()],
            "working_orders": {a: state.working_orders(a, "2")
                               for a in state.accounts},
            "accounts": {a: state.account_info(a) for a in state.accounts},
            "scenarios": [a.as_dict() for a in core.scenarios.active()],
            "limits": core.effective_limits().__dict__,
            "allowance_usage": core.allowances.usage(core.clock()),
            "stats": core.stats.as_dict(),
        }

    # -- admin API ---------------------------------------------------------

    async def _admin(self, request: web.Request) -> web.Response:
        tail = request.match_info["tail"].strip("/")
        try:
            return await self._admin_route(request, tail)
        except ScenarioError as error:
            return web.json_response({"error": str(error)}, status=400)
        except Exception:
            logger.warning("admin request failed", exc_info=True)
            return web.json_response({"error": "internal error"}, status=500)

    async def _admin_route(self, request: web.Request, tail: str) -> web.Response:
        scenarios = self._core.scenarios
        method = request.method
        if tail == "state" and method == "GET":
            return web.json_response(self._snapshot())
        if tail == "scenarios" and method == "GET":
            return web.json_response({
                "active": [a.as_dict() for a in scenarios.active()],
                "available": {name: {"description": spec.description,
                                     "params": dict(spec.params)}
                              for name, spec in SCENARIOS.items()},
            })
        if tail == "scenarios" and method == "POST":
            try:
                body = json.loads(await request.text() or "{}")
            except ValueError:
                return web.json_response({"error": "body must be JSON"}, status=400)
            if not isinstance(body, dict) or not isinstance(body.get("name"), str):
                return web.json_response(
                    {"error": 'expected {"name": ..., "params": {...}}'}, status=400)
            params = body.get("params") or {}
            if not isinstance(params, dict):
                return web.json_response({"error": "params must be an object"},
                                         status=400)
            active = scenarios.activate(body["name"], **params)
            return web.json_response(active.as_dict())
        if tail == "scenarios" and method == "DELETE":
            scenarios.clear()
            return web.json_response({"active": []})
        if tail.startswith("scenarios/") and method == "DELETE":
            removed = scenarios.deactivate(tail.split("/", 1)[1])
            return web.json_response({"removed": removed},
                                     status=200 if removed else 404)
        return web.json_response({"error": "unknown admin endpoint"}, status=404)

"""The IG REST API over aiohttp: routing, authentication, allowances, bodies.

Requests are routed on the *effective* method (``_method`` wins over the
verb) and the path template from :mod:`ig_otel._routes`, so the simulator and
the instrumentation agree on what a call is. Every failure becomes an IG
error body; nothing a client sends can crash the server.

Session calls (``/session*``, ``/operations/application*``) are not counted
against the non-trading allowance (IG documents limits for trading and
non-trading requests; trading-ig's own limiter leaves session calls out too).
Price-history calls spend only the weekly points allowance.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ig_otel._routes import effective_method, match_route
from ig_otel._telemetry import Allowance
from ig_otel.simulator._allowance import HISTORICAL_ALLOWANCE_EXCEEDED
from ig_otel.simulator._market import RESOLUTIONS
from ig_otel.simulator._state import IGError, OAuthToken, RestSession

if TYPE_CHECKING:
    from ig_otel.simulator._server import Core

__all__ = ["RestApi"]

logger = logging.getLogger(__name__)

GATEWAY = "/gateway/deal"
JSON_TYPE = "application/json"
_PUBLIC = {("POST", "/session"), ("GET", "/session/encryptionKey"),
           ("POST", "/session/refresh-token")}
_MAX_BODY = 256 * 1024

Reply = tuple[int, Any] | tuple[int, Any, dict[str, str]]


@dataclass
class Call:
    """One REST request as the handlers see it."""

    method: str
    template: str
    variables: dict[str, str]
    version: str
    query: dict[str, str]
    body: dict[str, Any]
    api_key: str = ""
    session: RestSession | OAuthToken | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def account_id(self) -> str:
        assert self.session is not None
        return self.session.account_id


def _error(status: int, code: str) -> web.Response:
    return web.json_response({"errorCode": code}, status=status)


class RestApi:
    """aiohttp handler for everything under ``/gateway/deal``."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.handlers: dict[tuple[str, str], Callable[[Call], Reply]] = _handlers(self)

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one REST request; never raises."""
        try:
            response = await self._handle(request)
        except web.HTTPException:
            raise
        except Exception:  # a simulator bug must not take the server down
            logger.warning("REST handler failed on %s", request.path, exc_info=True)
            response = _error(500, "system.error")
        if response.status == 403:
            self.core.stats.forbidden += 1
        self.core.stats.statuses[response.status] += 1
        return response

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.path
        if not (path == GATEWAY or path.startswith(GATEWAY + "/")):
            return _error(404, "invalid.url")
        method = effective_method(request.method, request.headers)
        route = match_route(method, path)
        handler = self.handlers.get((method, route.template))
        self.core.stats.requests[f"{method} {route.template}"] += 1
        if handler is None:
            return _error(404, "invalid.url")

        delay = self.core.scenarios.rest_delay()
        if delay:
            await asyncio.sleep(delay)
        outage = self.core.scenarios.rest_outage()
        if outage is not None:
            return _error(*outage)

        try:
            call = await self._call(request, method, route)
            self._authenticate(request, call)
            self._spend_allowance(call, route.allowance)
            reply = handler(call)
        except IGError as error:
            return _error(error.status, error.code)
        return self._respond(reply)

    async def _call(self, request: web.Request, method: str, route: Any) -> Call:
        body: dict[str, Any] = {}
        if method != "GET" and request.can_read_body:
            raw = await request.content.read(_MAX_BODY + 1)
            if len(raw) > _MAX_BODY:
                raise IGError(400, "invalid.input")
            if raw.strip():
                try:
                    parsed = json.loads(raw)
                except (ValueError, UnicodeDecodeError):
                    raise IGError(400, "invalid.input") from None
                if not isinstance(parsed, dict):
                    raise IGError(400, "invalid.input")
                body = parsed
        return Call(
            method=method,
            template=route.template,
            variables=dict(route.variables),
            version=(request.headers.get("VERSION") or "1").strip(),
            query=dict(request.query),
            body=body,
        )

    def _authenticate(self, request: web.Request, call: Call) -> None:
        headers = request.headers
        api_key = headers.get("X-IG-API-KEY")
        if not api_key:
            raise IGError(400, "error.security.api-key-missing")
        if api_key != self.core.state.api_key:
            raise IGError(403, "error.security.api-key-invalid")
        call.api_key = api_key
        if (call.method, call.template) in _PUBLIC:
            return
        authorization = headers.get("Authorization", "")
        if authorization.startswith("Bearer ") and not headers.get("CST"):
            call.session = self.core.state.oauth_for(
                authorization[7:].strip(), headers.get("IG-ACCOUNT-ID"))
            return
        call.session = self.core.state.session_for(
            headers.get("CST"), headers.get("X-SECURITY-TOKEN"))

    def _spend_allowance(self, call: Call, allowance: Allowance) -> None:
        if call.session is None:
            return
        core = self.core
        now = core.clock()
        limits = core.effective_limits()
        code = None
        if allowance is Allowance.TRADING:
            code = core.allowances.check_trading(call.account_id, now, limits)
        elif allowance is Allowance.NON_TRADING:
            code = core.allowances.check_non_trading(call.api_key, call.account_id,
                                                     now, limits)
        if code is not None:
            logger.debug("allowance spent: %s", code)
            raise IGError(403, code)

    @staticmethod
    def _respond(reply: Reply) -> web.Response:
        status, body = reply[0], reply[1]
        headers = reply[2] if len(reply) == 3 else None  # type: ignore[misc]
        if isinstance(body, web.Response):
            return body
        if body is None:
            return web.Response(status=status, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    # -- session ----------------------------------------------------------

    def login(self, call: Call) -> Reply:
        state = self.core.state
        body = call.body
        password = body.get("password")
        if _truthy(body.get("encryptedPassword")):
            password = self.core.keys.decrypt_password(password)
        state.check_credentials(body.get("identifier"), password)
        if call.version == "3":
            token = state.login_oauth(call.api_key)
            return 200, {
                "clientId": state.client_id,
                "accountId": token.account_id,
                "timezoneOffset": 0,
                "lightstreamerEndpoint": self.core.stream_url,
                "oauthToken": _oauth_body(token, state.oauth_ttl),
            }
        session = state.login(call.api_key)
        return 200, self._login_body(session), _token_headers(session)

    def _login_body(self, session: RestSession) -> dict[str, Any]:
        state = self.core.state
        account = state.accounts[session.account_id]
        return {
            "accountType": account.account_type,
            "accountInfo": state.account_info(session.account_id),
            "currencyIsoCode": account.currency,
            "currencySymbol": "£" if account.currency == "GBP" else account.currency,
            "currentAccountId": session.account_id,
            "lightstreamerEndpoint": self.core.stream_url,
            "accounts": [
                {"accountId": a.account_id, "accountName": a.name,
                 "preferred": a.account_id == state.default_account,
                 "accountType": a.account_type}
                for a in state.accounts.values()
            ],
            "clientId": state.client_id,
            "timezoneOffset": 0,
            "hasActiveDemoAccounts": True,
            "hasActiveLiveAccounts": False,
            "trailingStopsEnabled": account.trailing_stops,
            "reroutingEnvironment": None,
            "dealingEnabled": True,
        }

    def read_session(self, call: Call) -> Reply:
        state = self.core.state
        session = call.session
        body = {
            "clientId": state.client_id,
            "accountId": call.account_id,
            "timezoneOffset": 0,
            "locale": "en_GB",
            "currency": state.accounts[call.account_id].currency,
            "lightstreamerEndpoint": self.core.stream_url,
        }
        if call.query.get("fetchSessionTokens", "").lower() != "true":
            return 200, body
        if isinstance(session, OAuthToken):
            session = state.tokens_for_oauth(session)
        assert isinstance(session, RestSession)
        return 200, body, _token_headers(session)

    def switch_account(self, call: Call) -> Reply:
        assert call.session is not None
        new_xst = self.core.state.switch(call.session, call.body.get("accountId"))
        account = self.core.state.accounts[call.account_id]
        body = {"trailingStopsEnabled": account.trailing_stops,
                "dealingEnabled": True, "hasActiveDemoAccounts": True,
                "hasActiveLiveAccounts": False}
        headers = {"X-SECURITY-TOKEN": new_xst} if new_xst else {}
        return 200, body, headers

    def logout(self, call: Call) -> Reply:
        assert call.session is not None
        self.core.state.logout(call.session)
        return 204, None

    def encryption_key(self, call: Call) -> Reply:
        return 200, {"encryptionKey": self.core.keys.public_key_b64(),
                     "timeStamp": self.core.keys.timestamp}

    def refresh_token(self, call: Call) -> Reply:
        token = self.core.state.refresh(call.body.get("refresh_token"))
        return 200, _oauth_body(token, self.core.state.oauth_ttl)

    def applications(self, call: Call) -> Reply:
        limits = self.core.effective_limits()
        return 200, [{
            "name": "ig-otel simulator",
            "apiKey": call.api_key,
            "status": "ENABLED",
            "allowanceApplicationOverall": limits.app_non_trading,
            "allowanceAccountTrading": limits.account_trading,
            "allowanceAccountOverall": limits.account_non_trading,
            "allowanceAccountHistoricalData": limits.historical_points,
            "concurrentSubscriptionsLimit": limits.subscriptions,
            "allowEquities": False,
            "allowQuoteOrders": False,
            "createdDate": "2024-01-01T00:00:00",
        }]

    def update_application(self, call: Call) -> Reply:
        reply = self.applications(call)
        return 200, reply[1][0]

    # -- accounts and history ---------------------------------------------

    def accounts(self, call: Call) -> Reply:
        state = self.core.state
        return 200, {"accounts": [
            {
                "accountId": a.account_id, "accountName": a.name,
                "accountAlias": None, "status": "ENABLED",
                "accountType": a.account_type,
                "preferred": a.account_id == state.default_account,
                "balance": state.account_info(a.account_id), "currency": a.currency,
                "canTransferFrom": True, "canTransferTo": True,
            }
            for a in state.accounts.values()
        ]}

    def preferences(self, call: Call) -> Reply:
        account = self.core.state.accounts[call.account_id]
        return 200, {"trailingStopsEnabled": account.trailing_stops}

    def update_preferences(self, call: Call) -> Reply:
        value = call.body.get("trailingStopsEnabled")
        if str(value).lower() not in ("true", "false"):
            raise IGError(400, "invalid.request.trailingStopsEnabled")
        account = self.core.state.accounts[call.account_id]
        account.trailing_stops = str(value).lower() == "true"
        return 200, {"status": "SUCCESS"}

    def _activities(self, call: Call) -> list[dict[str, Any]]:
        return [a for a in self.core.state.activities
                if a["accountId"] == call.account_id]

    def activity(self, call: Call) -> Reply:
        activities = self._activities(call)
        if call.version == "3":
            size = _int_query(call, "pageSize", 50, 0, 500) or 50
            return 200, {"activities": activities[-size:],
                         "metadata": {"paging": {"size": size, "next": None}}}
        page_size = _int_query(call, "pageSize", 50, 0, 500)
        page_number = _int_query(call, "pageNumber", 1, 1, 10_000)
        rows, page_data = _page(activities, page_size, page_number)
        return 200, {"activities": rows, "metadata": {"pageData": page_data}}

    def activity_by_period(self, call: Call) -> Reply:
        return 200, {"activities": self._activities(call)}

    def transactions(self, call: Call) -> Reply:
        rows = [t for t in self.core.state.transactions
                if t["accountId"] == call.account_id]
        page_size = _int_query(call, "pageSize", 20, 0, 500)
        page_number = _int_query(call, "pageNumber", 1, 1, 10_000)
        page, page_data = _page(rows, page_size, page_number)
        return 200, {"transactions": page,
                     "metadata": {"size": len(page), "pageData": page_data}}

    def transactions_by_period(self, call: Call) -> Reply:
        rows = [t for t in self.core.state.transactions
                if t["accountId"] == call.account_id]
        return 200, {"transactions": rows, "metadata": {"size": len(rows)}}

    # -- dealing ----------------------------------------------------------

    def _deal(self, call: Call, action: Callable[..., Any], *args: Any) -> Reply:
        reject = self.core.scenarios.reject_reason()
        outcome = action(call.account_id, *args, reject=reject)
        self.core.publish_deal(outcome)
        return 200, {"dealReference": outcome.deal_reference}

    def open_position(self, call: Call) -> Reply:
        return self._deal(call, self.core.state.open_position, call.body)

    def close_position(self, call: Call) -> Reply:
        return self._deal(call, self.core.state.close_position, call.body)

    def amend_position(self, call: Call) -> Reply:
        return self._deal(call, self.core.state.amend_position,
                          call.variables["dealId"], call.body)

    def create_order(self, call: Call) -> Reply:
        return self._deal(call, self.core.state.create_order, call.body)

    def amend_order(self, call: Call) -> Reply:
        return self._deal(call, self.core.state.amend_order,
                          call.variables["dealId"], call.body)

    def delete_order(self, call: Call) -> Reply:
        return self._deal(call, self.core.state.delete_order,
                          call.variables["dealId"])

    def confirm(self, call: Call) -> Reply:
        scenarios = self.core.scenarios
        if scenarios.confirm_405():
            html = "<html><body><h1>405 Method Not Allowed</h1></body></html>"
            return 405, web.Response(status=405, text=html, content_type="text/html")
        age, body = self.core.state.confirm(call.variables["dealReference"])
        if scenarios.confirm_hidden(age):
            raise IGError(404, "error.confirms.deal-not-found")
        return 200, body

    def positions(self, call: Call) -> Reply:
        version = "1" if call.version == "1" else "2"
        return 200, {"positions": self.core.state.open_positions(call.account_id,
                                                                 version)}

    def position(self, call: Call) -> Reply:
        return 200, self.core.state.position(call.account_id,
                                             call.variables["dealId"])

    def working_orders(self, call: Call) -> Reply:
        version = "1" if call.version == "1" else "2"
        return 200, {"workingOrders": self.core.state.working_orders(
            call.account_id, version)}

    def repeat_dealing_window(self, call: Call) -> Reply:
        return 200, {"entries": []}

    # -- markets ----------------------------------------------------------

    def _require_epic(self, epic: str) -> str:
        if epic not in self.core.market:
            raise IGError(404, "error.service.marketdata.instrument.epic.unavailable")
        return epic

    def market_details(self, epic: str) -> dict[str, Any]:
        market = self.core.market
        instrument = market.instruments[epic]
        quote = market.quote(epic, self.core.state.now_ms())
        summary = self.core.state.market_summary(epic)
        return {
            "instrument": {
                "epic": epic, "expiry": instrument.expiry, "name": instrument.name,
                "forceOpenAllowed": True, "stopsLimitsAllowed": True,
                "lotSize": instrument.lot_size, "unit": "AMOUNT",
                "type": instrument.instrument_type, "controlledRiskAllowed": True,
                "streamingPricesAvailable": True, "marketId": instrument.market_id,
                "currencies": [{"code": instrument.currency, "symbol": "",
                                "baseExchangeRate": 1.0, "exchangeRate": 1.0,
                                "isDefault": True}],
                "marginFactor": instrument.margin * 100, "marginFactorUnit":
                "PERCENTAGE", "valueOfOnePip": "1.00", "onePipMeans": "1",
                "contractSize": str(instrument.lot_size),
                "chartCode": instrument.market_id, "newsCode": instrument.market_id,
            },
            "dealingRules": {
                "minStepDistance": {"unit": "POINTS", "value": 1.0},
                "minDealSize": {"unit": "POINTS", "value": instrument.min_size},
                "minControlledRiskStopDistance": {"unit": "POINTS", "value": 10.0},
                "minNormalStopOrLimitDistance": {"unit": "POINTS", "value": 2.0},
                "maxStopOrLimitDistance": {"unit": "PERCENTAGE", "value": 75.0},
                "marketOrderPreference": "AVAILABLE_DEFAULT_ON",
                "trailingStopsPreference": "AVAILABLE",
            },
            "snapshot": {
                "marketStatus": summary["marketStatus"],
                "netChange": quote.net_change,
                "percentageChange": quote.percent_change,
                "updateTime": summary["updateTime"],
                "delayTime": 0, "bid": quote.bid, "offer": quote.offer,
                "high": quote.day_high, "low": quote.day_low,
                "binaryOdds": None, "decimalPlacesFactor": quote.decimals,
                "scalingFactor": 1, "controlledRiskExtraSpread": 1.0,
            },
        }

    def market(self, call: Call) -> Reply:
        epic = self._require_epic(call.variables["epic"])
        return 200, self.market_details(epic)

    def markets(self, call: Call) -> Reply:
        if "searchTerm" in call.query:
            term = call.query["searchTerm"].lower()
            state = self.core.state
            found = [state.market_summary(epic)
                     for epic, instrument in self.core.market.instruments.items()
                     if term in instrument.name.lower() or term in epic.lower()]
            return 200, {"markets": found}
        epics = [e for e in call.query.get("epics", "").split(",") if e]
        if not epics:
            raise IGError(400, "invalid.request.epics")
        for epic in epics:
            self._require_epic(epic)
        details = [self.market_details(epic) for epic in epics]
        if call.query.get("filter") == "SNAPSHOT_ONLY":
            details = [{"snapshot": d["snapshot"],
                        "instrument": {"epic": d["instrument"]["epic"]}}
                       for d in details]
        return 200, {"marketDetails": details}

    def _instrument_types(self) -> list[str]:
        instruments = self.core.market.instruments.values()
        return sorted({instrument.instrument_type for instrument in instruments})

    def navigation(self, call: Call) -> Reply:
        types = self._instrument_types()
        return 200, {"nodes": [{"id": str(100 + n), "name": t.title()}
                               for n, t in enumerate(types)], "markets": None}

    def navigation_node(self, call: Call) -> Reply:
        types = self._instrument_types()
        try:
            kind = types[int(call.variables["nodeId"]) - 100]
        except (ValueError, IndexError):
            raise IGError(404, "error.marketnavigation.node.not-found") from None
        state = self.core.state
        return 200, {"nodes": None, "markets": [
            state.market_summary(epic)
            for epic, i in self.core.market.instruments.items()
            if i.instrument_type == kind]}

    def _sentiment(self, market_id: str) -> dict[str, Any]:
        # Deterministic per market id, and independent of call order.
        long = 30 + sum(map(ord, market_id)) * (self.core.seed + 7) % 41
        return {"marketId": market_id, "longPositionPercentage": float(long),
                "shortPositionPercentage": float(100 - long)}

    def sentiment(self, call: Call) -> Reply:
        ids = [m for m in call.query.get("marketIds", "").split(",") if m]
        if not ids:
            raise IGError(400, "invalid.request.marketIds")
        return 200, {"clientSentiments": [self._sentiment(m) for m in ids]}

    def sentiment_one(self, call: Call) -> Reply:
        return 200, self._sentiment(call.variables["marketId"])

    def sentiment_related(self, call: Call) -> Reply:
        ids = [i.market_id for i in self.core.market.instruments.values()]
        wanted = call.variables["marketId"]
        return 200, {"clientSentiments": [self._sentiment(m) for m in ids
                                          if m != wanted][:5]}

    # -- prices -----------------------------------------------------------

    def _points(self, call: Call, epic: str, resolution: str, end_ms: int,
                count: int, page: tuple[int, int] | None = None,
                ) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, int]]:
        self._require_epic(epic)
        if resolution not in RESOLUTIONS:
            raise IGError(400, "invalid.request.resolution")
        count = max(0, min(count, 20_000))
        market = self.core.market
        rows = market.history(epic, resolution, end_ms, count) if count else []
        page_data = {"pageSize": len(rows), "pageNumber": 1,
                     "totalPages": 1 if rows else 0}
        if page is not None:
            rows, page_data = _page(rows, page[0], page[1])
        core = self.core
        now = core.clock()
        allowance = core.allowances.points(call.api_key, call.account_id, now)
        total = core.effective_limits().historical_points
        if rows and allowance.remaining(total, now) < len(rows):
            raise IGError(403, HISTORICAL_ALLOWANCE_EXCEEDED)
        allowance.spend(len(rows), now)
        block = {"remainingAllowance": allowance.remaining(total, now),
                 "totalAllowance": total, "allowanceExpiry": allowance.expiry(now)}
        return rows, block, page_data

    def prices_v3(self, call: Call) -> Reply:
        epic = call.variables["epic"]
        resolution = call.query.get("resolution", "MINUTE")
        now_ms = self.core.state.now_ms()
        seconds = RESOLUTIONS.get(resolution, 60)
        start = _parse_time(call.query.get("from"), "%Y-%m-%dT%H:%M:%S")
        end = _parse_time(call.query.get("to"), "%Y-%m-%dT%H:%M:%S")
        if start is not None or end is not None:
            end_ms = end if end is not None else now_ms
            start_ms = start if start is not None else end_ms - 10 * seconds * 1000
            if start_ms > end_ms:
                raise IGError(400, "error.invalid.daterange")
            count = (end_ms - start_ms) // (seconds * 1000) + 1
        else:
            end_ms = now_ms
            count = _int_query(call, "max", 10, 1, 20_000)
        page_size = _int_query(call, "pageSize", 20, 0, 20_000)
        page_number = _int_query(call, "pageNumber", 1, 1, 100_000)
        rows, allowance, page_data = self._points(call, epic, resolution, end_ms,
                                                  count, (page_size, page_number))
        instrument = self.core.market.instruments[epic]
        return 200, {"prices": rows, "instrumentType": instrument.instrument_type,
                     "metadata": {"allowance": allowance, "size": len(rows),
                                  "pageData": page_data}}

    def prices_num_points(self, call: Call) -> Reply:
        try:
            count = int(call.variables["numPoints"])
        except ValueError:
            raise IGError(400, "invalid.request.numPoints") from None
        return self._flat_prices(call, self.core.state.now_ms(), count)

    def prices_date_range(self, call: Call) -> Reply:
        start = _parse_time(call.variables["startDate"], "%Y-%m-%d %H:%M:%S")
        end = _parse_time(call.variables["endDate"], "%Y-%m-%d %H:%M:%S")
        return self._ranged(call, start, end)

    def prices_v1(self, call: Call) -> Reply:
        start = _parse_time(call.query.get("startdate"), "%Y:%m:%d-%H:%M:%S")
        end = _parse_time(call.query.get("enddate"), "%Y:%m:%d-%H:%M:%S")
        return self._ranged(call, start, end)

    def _ranged(self, call: Call, start: int | None, end: int | None) -> Reply:
        if start is None or end is None:
            raise IGError(400, "error.malformed.date")
        if start > end:
            raise IGError(400, "error.invalid.daterange")
        seconds = RESOLUTIONS.get(call.variables["resolution"], 60)
        return self._flat_prices(call, end, (end - start) // (seconds * 1000) + 1)

    def _flat_prices(self, call: Call, end_ms: int, count: int) -> Reply:
        epic = call.variables["epic"]
        resolution = call.variables["resolution"]
        if resolution not in RESOLUTIONS:
            raise IGError(400, "error.unsupported.resolution")
        rows, allowance, _ = self._points(call, epic, resolution, end_ms, count)
        instrument = self.core.market.instruments[epic]
        return 200, {"prices": rows, "instrumentType": instrument.instrument_type,
                     "allowance": allowance}

    # -- watchlists -------------------------------------------------------

    def watchlists(self, call: Call) -> Reply:
        return 200, {"watchlists": [
            {k: v for k, v in w.items() if k != "epics"}
            for w in self.core.state.watchlists.values()]}

    def create_watchlist(self, call: Call) -> Reply:
        watchlist_id = self.core.state.create_watchlist(call.body.get("name"),
                                                        call.body.get("epics"))
        return 200, {"watchlistId": watchlist_id, "status": "SUCCESS"}

    def watchlist_markets(self, call: Call) -> Reply:
        watchlist = self.core.state.watchlist(call.variables["watchlistId"])
        state = self.core.state
        return 200, {"markets": [state.market_summary(e) for e in watchlist["epics"]]}

    def add_to_watchlist(self, call: Call) -> Reply:
        watchlist = self.core.state.watchlist(call.variables["watchlistId"])
        epic = call.body.get("epic")
        if not isinstance(epic, str) or epic not in self.core.market:
            raise IGError(400, "error.service.watchlists.add-instrument.invalid-epic")
        if epic not in watchlist["epics"]:
            watchlist["epics"].append(epic)
        return 200, {"status": "SUCCESS"}

    def delete_watchlist(self, call: Call) -> Reply:
        watchlist = self.core.state.watchlist(call.variables["watchlistId"])
        if not watchlist["deleteable"]:
            raise IGError(400, "error.watchlists.management.cannot-delete-watchlist")
        del self.core.state.watchlists[watchlist["id"]]
        return 200, {"status": "SUCCESS"}

    def remove_from_watchlist(self, call: Call) -> Reply:
        watchlist = self.core.state.watchlist(call.variables["watchlistId"])
        epic = call.variables["epic"]
        if epic in watchlist["epics"]:
            watchlist["epics"].remove(epic)
        return 200, {"status": "SUCCESS"}


def _handlers(api: RestApi) -> dict[tuple[str, str], Callable[[Call], Reply]]:
    return {
        ("POST", "/session"): api.login,
        ("GET", "/session"): api.read_session,
        ("PUT", "/session"): api.switch_account,
        ("DELETE", "/session"): api.logout,
        ("GET", "/session/encryptionKey"): api.encryption_key,
        ("POST", "/session/refresh-token"): api.refresh_token,
        ("GET", "/operations/application"): api.applications,
        ("PUT", "/operations/application"): api.update_application,
        ("PUT", "/operations/application/disable"): api.update_application,
        ("GET", "/accounts"): api.accounts,
        ("GET", "/accounts/preferences"): api.preferences,
        ("PUT", "/accounts/preferences"): api.update_preferences,
        ("GET", "/history/activity"): api.activity,
        ("GET", "/history/activity/{lastPeriodMs}"): api.activity_by_period,
        ("GET", "/history/activity/{fromDate}/{toDate}"): api.activity_by_period,
        ("GET", "/history/transactions"): api.transactions,
        ("GET", "/history/transactions/{transactionType}/{lastPeriodMs}"):
            api.transactions_by_period,
        ("GET", "/confirms/{dealReference}"): api.confirm,
        ("GET", "/positions"): api.positions,
        ("GET", "/positions/{dealId}"): api.position,
        ("POST", "/positions/otc"): api.open_position,
        ("DELETE", "/positions/otc"): api.close_position,
        ("PUT", "/positions/otc/{dealId}"): api.amend_position,
        ("GET", "/workingorders"): api.working_orders,
        ("POST", "/workingorders/otc"): api.create_order,
        ("PUT", "/workingorders/otc/{dealId}"): api.amend_order,
        ("DELETE", "/workingorders/otc/{dealId}"): api.delete_order,
        ("GET", "/repeat-dealing-window"): api.repeat_dealing_window,
        ("GET", "/markets"): api.markets,
        ("GET", "/markets/{epic}"): api.market,
        ("GET", "/marketnavigation"): api.navigation,
        ("GET", "/marketnavigation/{nodeId}"): api.navigation_node,
        ("GET", "/clientsentiment"): api.sentiment,
        ("GET", "/clientsentiment/{marketId}"): api.sentiment_one,
        ("GET", "/clientsentiment/related/{marketId}"): api.sentiment_related,
        ("GET", "/prices/{epic}"): api.prices_v3,
        ("GET", "/prices/{epic}/{resolution}"): api.prices_v1,
        ("GET", "/prices/{epic}/{resolution}/{numPoints}"): api.prices_num_points,
        ("GET", "/prices/{epic}/{resolution}/{startDate}/{endDate}"):
            api.prices_date_range,
        ("GET", "/watchlists"): api.watchlists,
        ("POST", "/watchlists"): api.create_watchlist,
        ("GET", "/watchlists/{watchlistId}"): api.watchlist_markets,
        ("PUT", "/watchlists/{watchlistId}"): api.add_to_watchlist,
        ("DELETE", "/watchlists/{watchlistId}"): api.delete_watchlist,
        ("DELETE", "/watchlists/{watchlistId}/{epic}"): api.remove_from_watchlist,
    }


def _truthy(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _token_headers(session: RestSession) -> dict[str, str]:
    return {"CST": session.cst, "X-SECURITY-TOKEN": session.xst}


def _oauth_body(token: OAuthToken, ttl: float) -> dict[str, str]:
    return {"access_token": token.access_token, "refresh_token": token.refresh_token,
            "scope": "profile", "token_type": "Bearer",
            "expires_in": str(int(ttl))}


def _int_query(call: Call, key: str, default: int, low: int, high: int) -> int:
    raw = call.query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise IGError(400, f"invalid.request.{key}") from None
    if not low <= value <= high:
        raise IGError(400, f"invalid.request.{key}")
    return value


_TIME_CLEAN = re.compile(r"\.\d+$")


def _parse_time(text: str | None, pattern: str) -> int | None:
    if not text:
        return None
    try:
        moment = datetime.strptime(_TIME_CLEAN.sub("", text), pattern)
    except ValueError:
        raise IGError(400, "error.malformed.date") from None
    return int(moment.replace(tzinfo=timezone.utc).timestamp() * 1000)


def _page(rows: list[Any], size: int, number: int) -> tuple[list[Any], dict[str, int]]:
    if size <= 0:
        return rows, {"pageSize": len(rows), "pageNumber": 1,
                      "totalPages": 1 if rows else 0}
    pages = math.ceil(len(rows) / size)
    chunk = rows[(number - 1) * size: number * size]
    return chunk, {"pageSize": size, "pageNumber": number, "totalPages": pages}

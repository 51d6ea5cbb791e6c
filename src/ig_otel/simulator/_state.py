"""The simulated IG platform: clients, sessions, positions, orders, confirms.

Pure state with an injected clock, random generator and market model. A
dealing call validates its request (a :class:`IGError` for what IG answers
400/404), then returns a :class:`DealOutcome`: the deal reference handed
back at once, the confirmation ``GET /confirms`` will serve, and the
``TRADE`` stream events (``CONFIRMS`` then ``OPU``/``WOU``) the stream
adapter publishes.
"""

from __future__ import annotations

import random
import re
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ig_otel.simulator._market import UK, MarketModel, Quote, uk_time

__all__ = [
    "Account",
    "DealOutcome",
    "IGError",
    "IGState",
    "OAuthToken",
    "RestSession",
]

CONFIRM_TTL = 60.0

_EPIC = re.compile(r"[A-Za-z0-9._]{6,30}")
_EXPIRY = re.compile(r"(\d{2}-)?[A-Z]{3}-\d{2}|-|DFB")
_REFERENCE = re.compile(r"[A-Za-z0-9_-]{1,30}")
_ALNUM = string.ascii_uppercase + string.digits


class IGError(Exception):
    """An IG error answer: HTTP status and ``errorCode``."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"{status} {code}")
        self.status = status
        self.code = code


@dataclass
class Account:
    """One trading account of the simulated client."""

    account_id: str
    name: str
    account_type: str
    currency: str = "GBP"
    balance: float = 10_000.0
    preferred: bool = False
    trailing_stops: bool = False


@dataclass
class RestSession:
    """CST / X-SECURITY-TOKEN pair of a v1/v2 login (or fetched by v3)."""

    cst: str
    xst: str
    account_id: str
    api_key: str
    expires: float


@dataclass
class OAuthToken:
    """A v3 access token and the account it acts on."""

    access_token: str
    refresh_token: str
    account_id: str
    api_key: str
    expires: float
    refresh_expires: float


@dataclass
class _Deal:
    deal_id: str
    deal_reference: str
    account_id: str
    epic: str
    direction: str
    size: float
    level: float
    currency: str
    created_ms: int
    stop_level: float | None = None
    limit_level: float | None = None
    guaranteed_stop: bool = False
    trailing_stop_distance: float | None = None
    trailing_step: float | None = None
    order_type: str = "MARKET"
    time_in_force: str | None = None
    good_till_date: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class DealOutcome:
    """What one dealing call produced.

    Attributes:
        deal_reference: Returned at once by the dealing call.
        confirm: Body of ``GET /confirms/{dealReference}``.
        events: ``(field, payload)`` pairs for the ``TRADE`` item, in order.
        account_id: Account whose ``TRADE`` item carries the events.
    """

    deal_reference: str
    confirm: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    account_id: str


def _bool(
    body: Mapping[str, Any], key: str, default: bool | None = False
) -> bool | None:
    # trading-ig sends some booleans as "true"/"false" strings, and nulls for
    # fields it leaves unset.
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise IGError(400, f"invalid.request.{key}")


def _number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise IGError(400, f"invalid.request.{key}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise IGError(400, f"invalid.request.{key}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise IGError(400, f"invalid.request.{key}")
    return number


def _text(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise IGError(400, f"invalid.request.{key}")
    return value


def _required(value: Any, key: str) -> Any:
    if value is None:
        raise IGError(400, f"invalid.request.{key}")
    return value


def _ms_text(epoch_ms: int, pattern: str, local: bool = False) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    if local:
        moment = moment.astimezone(UK)
    return moment.strftime(pattern)


def _iso_ms(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}"


class IGState:
    """Clients, sessions, tokens, positions, working orders and confirms.

    Args:
        market: The market model quotes and fills come from.
        clock: Monotonic seconds (token and confirm lifetimes).
        wall_clock: Epoch seconds (timestamps in payloads).
        rng: Random generator for ids (seed it for reproducible ids).
        username, password, api_key: The credentials logins must present.
        accounts: The client's accounts; the first is the default.
        token_ttl: Seconds a CST/X-SECURITY-TOKEN pair lives unused.
        oauth_ttl: Seconds a v3 access token lives.
    """

    def __init__(
        self,
        market: MarketModel,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        rng: random.Random,
        *,
        username: str,
        password: str,
        api_key: str,
        accounts: list[Account],
        client_id: str = "100123456",
        token_ttl: float = 6 * 3600.0,
        oauth_ttl: float = 60.0,
    ) -> None:
        self.market = market
        self.clock = clock
        self.wall_clock = wall_clock
        self.rng = rng
        self.username = username
        self.password = password
        self.api_key = api_key
        self.client_id = client_id
        self.accounts = {account.account_id: account for account in accounts}
        self.default_account = accounts[0].account_id
        self.token_ttl = token_ttl
        self.oauth_ttl = oauth_ttl
        self.sessions: dict[str, RestSession] = {}
        self.oauth: dict[str, OAuthToken] = {}
        self.refresh_tokens: dict[str, OAuthToken] = {}
        self.positions: dict[str, _Deal] = {}
        self.orders: dict[str, _Deal] = {}
        self.confirms: dict[str, tuple[float, dict[str, Any]]] = {}
        self.activities: list[dict[str, Any]] = []
        self.transactions: list[dict[str, Any]] = []
        self.watchlists: dict[str, dict[str, Any]] = {
            "Popular Markets": {
                "id": "Popular Markets", "name": "Popular Markets",
                "editable": False, "deleteable": False, "defaultSystemWatchlist": True,
                "epics": market.epics[:4],
            },
        }
        self._watchlist_seq = 0

    # -- ids --------------------------------------------------------------

    def _id(self, prefix: str, length: int = 15) -> str:
        tail = "".join(self.rng.choice(_ALNUM) for _ in range(length - len(prefix)))
        return prefix + tail

    @staticmethod
    def _token() -> str:
        # Tokens are secrets: never derived from the seeded generator.
        return secrets.token_hex(20)

    def now_ms(self) -> int:
        return int(self.wall_clock() * 1000)

    # -- sessions ---------------------------------------------------------

    def check_credentials(self, identifier: object, password: object) -> None:
        """Raise 401 ``error.security.invalid-details`` unless they match."""
        if identifier != self.username or password != self.password:
            raise IGError(401, "error.security.invalid-details")

    def login(self, api_key: str) -> RestSession:
        """A new CST/X-SECURITY-TOKEN pair on the default account."""
        session = RestSession(self._token(), self._token(), self.default_account,
                              api_key, self.clock() + self.token_ttl)
        self.sessions[session.cst] = session
        return session

    def login_oauth(self, api_key: str, account_id: str | None = None) -> OAuthToken:
        """A new v3 access/refresh token pair."""
        now = self.clock()
        token = OAuthToken(self._token(), self._token(),
                           account_id or self.default_account, api_key,
                           now + self.oauth_ttl, now + 10 * self.oauth_ttl)
        self.oauth[token.access_token] = token
        self.refresh_tokens[token.refresh_token] = token
        return token

    def refresh(self, refresh_token: object) -> OAuthToken:
        """Exchange a refresh token for a new token pair."""
        old = self.refresh_tokens.pop(str(refresh_token), None)
        if old is None or old.refresh_expires <= self.clock():
            raise IGError(401, "error.security.oauth-token-invalid")
        self.oauth.pop(old.access_token, None)
        return self.login_oauth(old.api_key, old.account_id)

    def session_for(self, cst: str | None, xst: str | None) -> RestSession:
        """The live session of a CST/XST pair (extends its life).

        Raises:
            IGError: 401 with IG's missing/invalid client or account token code.
        """
        if not cst:
            raise IGError(401, "error.security.client-token-missing")
        session = self.sessions.get(cst)
        if session is None or session.expires <= self.clock():
            raise IGError(401, "error.security.client-token-invalid")
        if not xst:
            raise IGError(401, "error.security.account-token-missing")
        if xst != session.xst:
            raise IGError(401, "error.security.account-token-invalid")
        session.expires = self.clock() + self.token_ttl
        return session

    def oauth_for(self, access_token: str, account_id: str | None) -> OAuthToken:
        """The live v3 token (raises 401 ``oauth-token-invalid``)."""
        token = self.oauth.get(access_token)
        if token is None or token.expires <= self.clock():
            raise IGError(401, "error.security.oauth-token-invalid")
        if account_id and account_id in self.accounts:
            token.account_id = account_id
        return token

    def tokens_for_oauth(self, token: OAuthToken) -> RestSession:
        """CST/XST for a v3 session (``fetchSessionTokens=true``)."""
        session = self.login(token.api_key)
        session.account_id = token.account_id
        return session

    def stream_session(self, password: str | None) -> RestSession | None:
        """The REST session an ``LS_password`` of ``CST-..|XST-..`` names."""
        if not password:
            return None
        cst_part, _, xst_part = password.partition("|")
        if not cst_part.startswith("CST-") or not xst_part.startswith("XST-"):
            return None
        try:
            return self.session_for(cst_part[4:], xst_part[4:])
        except IGError:
            return None

    def switch(self, session: RestSession | OAuthToken, account_id: object) -> str:
        """Switch the session's account; answers the new X-SECURITY-TOKEN."""
        if not isinstance(account_id, str) or account_id not in self.accounts:
            raise IGError(400, "error.switch.accountId-must-be-different")
        if account_id == session.account_id:
            raise IGError(400, "error.switch.accountId-must-be-different")
        session.account_id = account_id
        if isinstance(session, RestSession):
            session.xst = self._token()
            return session.xst
        return ""

    def logout(self, session: RestSession | OAuthToken) -> None:
        """End a session (its tokens stop working)."""
        if isinstance(session, RestSession):
            self.sessions.pop(session.cst, None)
        else:
            self.oauth.pop(session.access_token, None)
            self.refresh_tokens.pop(session.refresh_token, None)

    # -- accounts ---------------------------------------------------------

    def account_info(self, account_id: str) -> dict[str, float]:
        """``balance, deposit, profitLoss, available`` of one account."""
        account = self.accounts[account_id]
        deposit = 0.0
        pnl = 0.0
        for deal in self.positions.values():
            if deal.account_id != account_id:
                continue
            deposit += self._margin(deal.epic, deal.size, deal.level)
            pnl += self._profit(deal, self._quote(deal.epic))
        return {
            "balance": round(account.balance, 2),
            "deposit": round(deposit, 2),
            "profitLoss": round(pnl, 2),
            "available": round(account.balance + pnl - deposit, 2),
        }

    def _margin(self, epic: str, size: float, level: float) -> float:
        instrument = self.market.instruments[epic]
        return size * instrument.lot_size * level * instrument.margin

    def _profit(self, deal: _Deal, quote: Quote) -> float:
        instrument = self.market.instruments[deal.epic]
        close = quote.bid if deal.direction == "BUY" else quote.offer
        sign = 1 if deal.direction == "BUY" else -1
        return round(sign * (close - deal.level) * deal.size * instrument.lot_size, 2)

    def _quote(self, epic: str) -> Quote:
        return self.market.quote(epic, self.now_ms())

    # -- confirms ---------------------------------------------------------

    def confirm(self, deal_reference: str) -> tuple[float, dict[str, Any]]:
        """``(age seconds, confirm body)``; 404 once unknown or expired."""
        stored = self.confirms.get(deal_reference)
        age = self.clock() - stored[0] if stored else 0.0
        if stored is None or age > CONFIRM_TTL:
            raise IGError(404, "error.confirms.deal-not-found")
        return age, stored[1]

    def _store_confirm(self, confirm: dict[str, Any]) -> None:
        now = self.clock()
        expired = [ref for ref, (t, _) in self.confirms.items()
                   if now - t > CONFIRM_TTL]
        for ref in expired:
            del self.confirms[ref]
        self.confirms[confirm["dealReference"]] = (now, confirm)

    def _reference(self, body: Mapping[str, Any]) -> str:
        given = _text(body, "dealReference")
        if given is not None:
            if not _REFERENCE.fullmatch(given):
                raise IGError(400, "invalid.request.dealReference")
            return given
        return self._id("", 15)

    def _confirm_body(
        self, deal: _Deal, reference: str, status: str | None, reason: str,
        affected: list[dict[str, str]], profit: float | None = None,
    ) -> dict[str, Any]:
        accepted = reason == "SUCCESS"
        return {
            "date": _iso_ms(self.now_ms()),
            "dealId": deal.deal_id,
            "dealReference": reference,
            "dealStatus": "ACCEPTED" if accepted else "REJECTED",
            "reason": reason,
            "status": status if accepted else None,
            "direction": deal.direction,
            "epic": deal.epic,
            "expiry": self.market.instruments[deal.epic].expiry
            if deal.epic in self.market else None,
            "level": deal.level if accepted else None,
            "size": deal.size if accepted else None,
            "stopLevel": deal.stop_level,
            "stopDistance": None,
            "limitLevel": deal.limit_level,
            "limitDistance": None,
            "guaranteedStop": deal.guaranteed_stop,
            "trailingStop": deal.trailing_stop_distance is not None,
            "profit": profit,
            "profitCurrency": deal.currency if profit is not None else None,
            "affectedDeals": affected if accepted else [],
            "channel": "PublicRestOTC",
        }

    def _outcome(
        self, deal: _Deal, reference: str, status: str | None, reason: str,
        affected: list[dict[str, str]], update: tuple[str, str] | None,
        profit: float | None = None,
    ) -> DealOutcome:
        confirm = self._confirm_body(deal, reference, status, reason, affected,
                                     profit)
        self._store_confirm(confirm)
        events: list[tuple[str, dict[str, Any]]] = [("CONFIRMS", confirm)]
        if reason == "SUCCESS" and update is not None:
            field_name, update_status = update
            events.append((field_name, self._update_payload(deal, reference,
                                                            update_status)))
        self._record_activity(deal, reference, reason, status)
        return DealOutcome(reference, confirm, events, deal.account_id)

    def _update_payload(
        self, deal: _Deal, reference: str, status: str
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "dealReference": reference,
            "dealId": deal.deal_id,
            "direction": deal.direction,
            "epic": deal.epic,
            "expiry": self.market.instruments[deal.epic].expiry,
            "size": deal.size,
            "level": deal.level,
            "status": status,
            "dealStatus": "ACCEPTED",
            "stopLevel": deal.stop_level,
            "limitLevel": deal.limit_level,
            "guaranteedStop": deal.guaranteed_stop,
            "currency": deal.currency,
            "timestamp": _iso_ms(self.now_ms()),
            "channel": "PublicRestOTC",
        }
        if deal.order_type in ("LIMIT", "STOP") and deal.time_in_force:
            payload.update(orderType=deal.order_type, timeInForce=deal.time_in_force,
                           goodTillDate=deal.good_till_date, stopDistance=None,
                           limitDistance=None)
        else:
            payload.update(dealIdOrigin=deal.deal_id,
                           trailingStopDistance=deal.trailing_stop_distance,
                           trailingStep=deal.trailing_step)
        return payload

    def _record_activity(
        self, deal: _Deal, reference: str, reason: str, status: str | None
    ) -> None:
        now = self.now_ms()
        self.activities.append({
            "date": _ms_text(now, "%Y-%m-%dT%H:%M:%S"),
            "dateUTC": _ms_text(now, "%Y-%m-%dT%H:%M:%S"),
            "epic": deal.epic,
            "period": self.market.instruments[deal.epic].expiry
            if deal.epic in self.market else "-",
            "dealId": deal.deal_id,
            "channel": "PUBLIC_WEB_API",
            "type": "POSITION" if deal.time_in_force is None else "WORKING_ORDER",
            "status": "ACCEPTED" if reason == "SUCCESS" else "REJECTED",
            "description": f"{status or 'REJECTED'} {reference}",
            "details": None,
            "accountId": deal.account_id,
        })
        del self.activities[:-500]

    # -- positions --------------------------------------------------------

    def _epic(self, body: Mapping[str, Any]) -> str:
        epic = _required(_text(body, "epic"), "epic")
        if not _EPIC.fullmatch(epic):
            raise IGError(400, "invalid.request.epic")
        if epic not in self.market:
            raise IGError(404, "error.trading.otc.instrument-not-found")
        return epic

    @staticmethod
    def _direction(body: Mapping[str, Any]) -> str:
        direction = _text(body, "direction")
        if direction not in ("BUY", "SELL"):
            raise IGError(400, "invalid.request.direction")
        return direction

    @staticmethod
    def _size(body: Mapping[str, Any]) -> float:
        size = _required(_number(body, "size"), "size")
        if size <= 0 or len(repr(size).partition(".")[2]) > 12:
            raise IGError(400, "invalid.request.size")
        return size

    @staticmethod
    def _order_type(body: Mapping[str, Any]) -> tuple[str, float | None]:
        order_type = _text(body, "orderType")
        level = _number(body, "level")
        quote_id = _text(body, "quoteId")
        if order_type not in ("MARKET", "LIMIT", "QUOTE"):
            raise IGError(400, "invalid.request.orderType")
        if order_type == "MARKET" and (level is not None or quote_id is not None):
            raise IGError(400, "invalid.request.orderType.market.level")
        if order_type in ("LIMIT", "QUOTE") and level is None:
            raise IGError(400, "invalid.request.level")
        if order_type == "QUOTE" and quote_id is None:
            raise IGError(400, "invalid.request.quoteId")
        tif = _text(body, "timeInForce")
        if tif not in (None, "EXECUTE_AND_ELIMINATE", "FILL_OR_KILL"):
            raise IGError(400, "invalid.request.timeInForce")
        return order_type, level

    @staticmethod
    def _stops(body: Mapping[str, Any]) -> dict[str, float | None]:
        stops = {key: _number(body, key) for key in (
            "stopLevel", "stopDistance", "limitLevel", "limitDistance",
            "trailingStopIncrement")}
        if stops["stopLevel"] is not None and stops["stopDistance"] is not None:
            raise IGError(400, "validation.mutual-exclusive-value.request.stopLevel")
        if stops["limitLevel"] is not None and stops["limitDistance"] is not None:
            raise IGError(400, "validation.mutual-exclusive-value.request.limitLevel")
        return stops

    def open_position(self, account_id: str, body: Mapping[str, Any],
                      reject: str | None = None) -> DealOutcome:
        """``POST /positions/otc`` (v2)."""
        epic = self._epic(body)
        direction = self._direction(body)
        size = self._size(body)
        order_type, level = self._order_type(body)
        stops = self._stops(body)
        _required(_text(body, "currencyCode"), "currencyCode")
        expiry = _required(_text(body, "expiry"), "expiry")
        if not _EXPIRY.fullmatch(expiry):
            raise IGError(400, "invalid.request.expiry")
        force_open = _bool(body, "forceOpen", None)
        guaranteed = _bool(body, "guaranteedStop", None)
        trailing = _bool(body, "trailingStop", False)
        if guaranteed is None:
            raise IGError(400, "invalid.request.guaranteedStop")
        has_stops = any(stops[k] is not None for k in (
            "stopLevel", "stopDistance", "limitLevel", "limitDistance"))
        if has_stops and force_open is not True:
            raise IGError(400, "invalid.request.forceOpen")
        if trailing and (stops["stopLevel"] is not None
                         or stops["stopDistance"] is None
                         or stops["trailingStopIncrement"] is None):
            raise IGError(400, "invalid.request.trailingStop")
        reference = self._reference(body)

        quote = self._quote(epic)
        fill = quote.offer if direction == "BUY" else quote.bid
        if order_type != "MARKET" and level is not None:
            fill = level
        sign = 1 if direction == "BUY" else -1
        deal = _Deal(
            self._id("DIAAAA"), reference, account_id, epic, direction, size, fill,
            _text(body, "currencyCode") or "GBP", self.now_ms(),
            stop_level=stops["stopLevel"], limit_level=stops["limitLevel"],
            guaranteed_stop=bool(guaranteed),
            trailing_stop_distance=stops["stopDistance"] if trailing else None,
            trailing_step=stops["trailingStopIncrement"] if trailing else None,
        )
        if stops["stopDistance"] is not None:
            deal.stop_level = round(fill - sign * stops["stopDistance"],
                                    quote.decimals)
        if stops["limitDistance"] is not None:
            deal.limit_level = round(fill + sign * stops["limitDistance"],
                                     quote.decimals)

        reason = reject or self._natural_rejection(deal, order_type, level, quote)
        if reason == "SUCCESS":
            self.positions[deal.deal_id] = deal
        affected = [{"dealId": deal.deal_id, "status": "OPENED"}]
        return self._outcome(deal, reference, "OPEN", reason, affected,
                             ("OPU", "OPEN"))

    def _natural_rejection(
        self, deal: _Deal, order_type: str, level: float | None, quote: Quote
    ) -> str:
        instrument = self.market.instruments[deal.epic]
        status = self.market.status.get(deal.epic, "TRADEABLE")
        if status == "CLOSED":
            return "MARKET_CLOSED"
        if status != "TRADEABLE":
            return "MARKET_OFFLINE"
        if deal.size < instrument.min_size:
            return "MINIMUM_ORDER_SIZE_ERROR"
        if order_type == "LIMIT" and level is not None:
            acceptable = (level >= quote.offer if deal.direction == "BUY"
                          else level <= quote.bid)
            if not acceptable:
                return "LEVEL_TOLERANCE_ERROR"
        margin = self._margin(deal.epic, deal.size, deal.level)
        if margin > self.account_info(deal.account_id)["available"]:
            return "INSUFFICIENT_FUNDS"
        return "SUCCESS"

    def close_position(self, account_id: str, body: Mapping[str, Any],
                       reject: str | None = None) -> DealOutcome:
        """``DELETE /positions/otc`` (v1, sent as POST + ``_method``)."""
        deal_id = _text(body, "dealId")
        epic = _text(body, "epic")
        if deal_id is not None and epic is not None:
            raise IGError(400, "validation.mutual-exclusive-value.request")
        if deal_id is None and epic is None:
            raise IGError(400, "validation.null-conditional-set-value.request")
        if epic is not None and _text(body, "expiry") is None:
            raise IGError(400, "invalid.request.expiry")
        direction = self._direction(body)
        size = self._size(body)
        order_type, level = self._order_type(body)
        reference = self._reference(body)

        deal = self._find_to_close(account_id, deal_id, epic, direction)
        if deal is None:
            ghost = _Deal(deal_id or self._id("DIAAAA"), reference, account_id,
                          epic or "UNKNOWN.EPIC", direction, size, 0.0, "GBP",
                          self.now_ms())
            if ghost.epic not in self.market:
                return self._rejected_ghost(ghost, reference)
            return self._outcome(ghost, reference, None,
                                 "POSITION_NOT_AVAILABLE_TO_CLOSE", [], None)
        if reject is not None or size > deal.size + 1e-9:
            reason = reject or "POSITION_NOT_AVAILABLE_TO_CLOSE"
            return self._outcome(deal, reference, None, reason, [], None)

        quote = self._quote(deal.epic)
        closing = _Deal(**{**deal.__dict__, "size": size})
        profit = self._profit(closing, quote)
        self.accounts[account_id].balance += profit
        if size < deal.size - 1e-9:
            deal.size = round(deal.size - size, 12)
            status, affected_status, update = "PARTIALLY_CLOSED", "PARTIALLY_CLOSED", (
                "OPU", "UPDATED")
            closed_view = deal
        else:
            del self.positions[deal.deal_id]
            status, affected_status, update = "CLOSED", "FULLY_CLOSED", (
                "OPU", "DELETED")
            closed_view = deal
        self._record_transaction(closing, quote, profit)
        affected = [{"dealId": deal.deal_id, "status": affected_status}]
        outcome = self._outcome(closed_view, reference, status, "SUCCESS", affected,
                                update, profit)
        outcome.confirm["level"] = quote.bid if deal.direction == "BUY" else quote.offer
        return outcome

    def _rejected_ghost(
        self, ghost: _Deal, reference: str,
        reason: str = "POSITION_NOT_AVAILABLE_TO_CLOSE",
    ) -> DealOutcome:
        # A confirm for a deal id the account does not hold.
        confirm = {
            "date": _iso_ms(self.now_ms()), "dealId": ghost.deal_id,
            "dealReference": reference, "dealStatus": "REJECTED",
            "reason": reason, "status": None,
            "direction": ghost.direction, "epic": None, "expiry": None,
            "level": None, "size": None, "stopLevel": None, "stopDistance": None,
            "limitLevel": None, "limitDistance": None, "guaranteedStop": False,
            "trailingStop": False, "profit": None, "profitCurrency": None,
            "affectedDeals": [], "channel": "PublicRestOTC",
        }
        self._store_confirm(confirm)
        return DealOutcome(reference, confirm, [("CONFIRMS", confirm)],
                           ghost.account_id)

    def _find_to_close(
        self, account_id: str, deal_id: str | None, epic: str | None, direction: str
    ) -> _Deal | None:
        for deal in self.positions.values():
            if deal.account_id != account_id or deal.direction == direction:
                continue
            if deal_id is not None and deal.deal_id == deal_id:
                return deal
            if epic is not None and deal.epic == epic:
                return deal
        return None

    def _record_transaction(self, deal: _Deal, quote: Quote, profit: float) -> None:
        now = self.now_ms()
        close = quote.bid if deal.direction == "BUY" else quote.offer
        self.transactions.append({
            "date": _ms_text(now, "%Y-%m-%d"),
            "dateUtc": _ms_text(now, "%Y-%m-%dT%H:%M:%S"),
            "openDateUtc": _ms_text(deal.created_ms, "%Y-%m-%dT%H:%M:%S"),
            "instrumentName": self.market.instruments[deal.epic].name,
            "period": self.market.instruments[deal.epic].expiry,
            "profitAndLoss": f"{deal.currency}{profit:.2f}",
            "transactionType": "DEAL",
            "reference": deal.deal_reference,
            "openLevel": str(deal.level),
            "closeLevel": str(close),
            "size": f"{'+' if deal.direction == 'BUY' else '-'}{deal.size}",
            "currency": deal.currency,
            "cashTransaction": False,
            "accountId": deal.account_id,
        })
        del self.transactions[:-500]

    def amend_position(self, account_id: str, deal_id: str, body: Mapping[str, Any],
                       reject: str | None = None) -> DealOutcome:
        """``PUT /positions/otc/{dealId}`` (v2)."""
        stops = {key: _number(body, key) for key in (
            "stopLevel", "limitLevel", "trailingStopDistance",
            "trailingStopIncrement")}
        _bool(body, "guaranteedStop", False)
        trailing = _bool(body, "trailingStop", False)
        reference = self._reference(body)
        deal = self.positions.get(deal_id)
        if deal is None or deal.account_id != account_id:
            ghost = _Deal(deal_id, reference, account_id, "UNKNOWN.EPIC", "BUY", 0.0,
                          0.0, "GBP", self.now_ms())
            return self._rejected_ghost(ghost, reference, "POSITION_NOT_FOUND")
        if reject is not None:
            return self._outcome(deal, reference, None, reject, [], None)
        deal.stop_level = stops["stopLevel"]
        deal.limit_level = stops["limitLevel"]
        if trailing:
            deal.trailing_stop_distance = stops["trailingStopDistance"]
            deal.trailing_step = stops["trailingStopIncrement"]
        affected = [{"dealId": deal.deal_id, "status": "AMENDED"}]
        return self._outcome(deal, reference, "AMENDED", "SUCCESS", affected,
                             ("OPU", "UPDATED"))

    def open_positions(self, account_id: str, version: str) -> list[dict[str, Any]]:
        """``GET /positions`` bodies (v1 or v2 shape)."""
        return [self.position_view(deal, version)
                for deal in self.positions.values() if deal.account_id == account_id]

    def position_view(self, deal: _Deal, version: str = "2") -> dict[str, Any]:
        """One ``{position, market}`` entry."""
        instrument = self.market.instruments[deal.epic]
        position: dict[str, Any] = {
            "contractSize": instrument.lot_size,
            "createdDate": _ms_text(deal.created_ms, "%Y/%m/%d %H:%M:%S:000", True),
            "dealId": deal.deal_id,
            "direction": deal.direction,
            "limitLevel": deal.limit_level,
            "currency": deal.currency,
            "controlledRisk": deal.guaranteed_stop,
            "stopLevel": deal.stop_level,
            "trailingStep": deal.trailing_step,
            "trailingStopDistance": deal.trailing_stop_distance,
            "limitedRiskPremium": None,
        }
        if version == "1":
            position.update(dealSize=deal.size, openLevel=deal.level)
        else:
            position.update(
                createdDateUTC=_ms_text(deal.created_ms, "%Y-%m-%dT%H:%M:%S"),
                dealReference=deal.deal_reference, size=deal.size, level=deal.level)
        return {"position": position,
                "market": self.market_summary(deal.epic, version)}

    def position(self, account_id: str, deal_id: str) -> dict[str, Any]:
        """``GET /positions/{dealId}`` (404 ``error.position.notfound``)."""
        deal = self.positions.get(deal_id)
        if deal is None or deal.account_id != account_id:
            raise IGError(404, "error.position.notfound")
        return self.position_view(deal)

    def market_summary(self, epic: str, version: str = "2") -> dict[str, Any]:
        """The ``market`` object nested in positions, orders and searches."""
        instrument = self.market.instruments[epic]
        quote = self._quote(epic)
        summary: dict[str, Any] = {
            "instrumentName": instrument.name,
            "expiry": instrument.expiry,
            "epic": epic,
            "instrumentType": instrument.instrument_type,
            "lotSize": instrument.lot_size,
            "high": quote.day_high,
            "low": quote.day_low,
            "percentageChange": quote.percent_change,
            "netChange": quote.net_change,
            "bid": quote.bid,
            "offer": quote.offer,
            "updateTime": uk_time(quote.utm),
            "delayTime": 0,
            "streamingPricesAvailable": True,
            "marketStatus": self.market.status.get(epic, "TRADEABLE"),
            "scalingFactor": 1,
        }
        if version != "1":
            summary["updateTimeUTC"] = _ms_text(quote.utm, "%H:%M:%S")
        return summary

    # -- working orders ---------------------------------------------------

    def create_order(self, account_id: str, body: Mapping[str, Any],
                     reject: str | None = None) -> DealOutcome:
        """``POST /workingorders/otc`` (v2)."""
        epic = self._epic(body)
        direction = self._direction(body)
        size = self._size(body)
        level = _required(_number(body, "level"), "level")
        order_type = _text(body, "type")
        if order_type not in ("LIMIT", "STOP"):
            raise IGError(400, "invalid.request.type")
        tif = _text(body, "timeInForce")
        if tif not in ("GOOD_TILL_CANCELLED", "GOOD_TILL_DATE"):
            raise IGError(400, "invalid.request.timeInForce")
        good_till = _text(body, "goodTillDate")
        if tif == "GOOD_TILL_DATE" and good_till is None:
            raise IGError(400, "invalid.request.goodTillDate")
        _required(_text(body, "currencyCode"), "currencyCode")
        _required(_text(body, "expiry"), "expiry")
        if _bool(body, "guaranteedStop", None) is None:
            raise IGError(400, "invalid.request.guaranteedStop")
        _bool(body, "forceOpen", False)
        stops = self._stops(body)
        reference = self._reference(body)
        deal = _Deal(self._id("DIAAAA"), reference, account_id, epic, direction,
                     size, level, _text(body, "currencyCode") or "GBP",
                     self.now_ms(), stop_level=stops["stopLevel"],
                     limit_level=stops["limitLevel"], order_type=order_type,
                     time_in_force=tif, good_till_date=good_till)
        reason = reject or ("SUCCESS" if size >= self.market.instruments[epic].min_size
                            else "MINIMUM_ORDER_SIZE_ERROR")
        if reason == "SUCCESS":
            self.orders[deal.deal_id] = deal
        affected = [{"dealId": deal.deal_id, "status": "OPENED"}]
        return self._outcome(deal, reference, "OPEN", reason, affected,
                             ("WOU", "OPEN"))

    def amend_order(self, account_id: str, deal_id: str, body: Mapping[str, Any],
                    reject: str | None = None) -> DealOutcome:
        """``PUT /workingorders/otc/{dealId}`` (v2)."""
        level = _number(body, "level")
        stops = {key: _number(body, key) for key in ("stopLevel", "limitLevel")}
        reference = self._reference(body)
        deal = self.orders.get(deal_id)
        if deal is None or deal.account_id != account_id:
            ghost = _Deal(deal_id, reference, account_id, "UNKNOWN.EPIC", "BUY", 0.0,
                          0.0, "GBP", self.now_ms())
            return self._rejected_ghost(ghost, reference, "ORDER_NOT_FOUND")
        if reject is not None:
            return self._outcome(deal, reference, None, reject, [], None)
        if level is not None:
            deal.level = level
        deal.stop_level = stops["stopLevel"]
        deal.limit_level = stops["limitLevel"]
        affected = [{"dealId": deal.deal_id, "status": "AMENDED"}]
        return self._outcome(deal, reference, "AMENDED", "SUCCESS", affected,
                             ("WOU", "UPDATED"))

    def delete_order(self, account_id: str, deal_id: str,
                     reject: str | None = None) -> DealOutcome:
        """``DELETE /workingorders/otc/{dealId}`` (v2, POST + ``_method``)."""
        reference = self._id("", 15)
        deal = self.orders.get(deal_id)
        if deal is None or deal.account_id != account_id:
            ghost = _Deal(deal_id, reference, account_id, "UNKNOWN.EPIC", "BUY", 0.0,
                          0.0, "GBP", self.now_ms())
            return self._rejected_ghost(ghost, reference, "ORDER_NOT_FOUND")
        if reject is not None:
            return self._outcome(deal, reference, None, reject, [], None)
        del self.orders[deal_id]
        affected = [{"dealId": deal.deal_id, "status": "DELETED"}]
        return self._outcome(deal, reference, "DELETED", "SUCCESS", affected,
                             ("WOU", "DELETED"))

    def working_orders(self, account_id: str, version: str) -> list[dict[str, Any]]:
        """``GET /workingorders`` entries."""
        result = []
        for deal in self.orders.values():
            if deal.account_id != account_id:
                continue
            data = {
                "dealId": deal.deal_id,
                "direction": deal.direction,
                "epic": deal.epic,
                "orderSize": deal.size,
                "orderLevel": deal.level,
                "timeInForce": deal.time_in_force,
                "goodTillDate": deal.good_till_date,
                "goodTillDateISO": None,
                "createdDate": _ms_text(deal.created_ms, "%Y/%m/%d %H:%M:%S:000",
                                        True),
                "createdDateUTC": _ms_text(deal.created_ms, "%Y-%m-%dT%H:%M:%S"),
                "guaranteedStop": deal.guaranteed_stop,
                "orderType": deal.order_type,
                "stopDistance": None,
                "limitDistance": None,
                "currencyCode": deal.currency,
                "dma": False,
                "limitedRiskPremium": None,
            }
            result.append({"workingOrderData": data,
                           "marketData": self.market_summary(deal.epic, version)})
        return result

    # -- watchlists -------------------------------------------------------

    def create_watchlist(self, name: object, epics: object) -> str:
        """A new watchlist; answers its id."""
        if not isinstance(name, str) or not name.strip():
            raise IGError(400, "invalid.request.name")
        if epics is None:
            epics = []
        if not isinstance(epics, list) or not all(isinstance(e, str) for e in epics):
            raise IGError(400, "invalid.request.epics")
        if any(epic not in self.market for epic in epics):
            raise IGError(400, "error.service.watchlists.add-instrument.invalid-epic")
        self._watchlist_seq += 1
        watchlist_id = str(1000 + self._watchlist_seq)
        self.watchlists[watchlist_id] = {
            "id": watchlist_id, "name": name, "editable": True, "deleteable": True,
            "defaultSystemWatchlist": False, "epics": list(epics),
        }
        return watchlist_id

    def watchlist(self, watchlist_id: str) -> dict[str, Any]:
        """One watchlist (404 ``error.invalid.watchlist``)."""
        watchlist = self.watchlists.get(watchlist_id)
        if watchlist is None:
            raise IGError(404, "error.invalid.watchlist")
        return watchlist


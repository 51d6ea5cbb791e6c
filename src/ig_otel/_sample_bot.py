"""A small IG trading bot, written the way users write theirs.

Plain ``httpx`` for the REST trading API and ``lightstreamer-client-lib``
(2.x) for prices, account and trade updates. It imports nothing from
OpenTelemetry or ig-otel: ``ig-otel demo`` instruments it from outside, which
is the point of the demo. It is deliberately forgiving: a failed call is
counted (by exception type or HTTP status) and the bot carries on, as a bot
that must survive outages does.

Secrets (API key, password, CST, X-SECURITY-TOKEN, account id) stay inside
the object: nothing here prints or logs them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["BotCredentials", "DealResult", "SampleBot"]

_log = logging.getLogger(__name__)

#: How long the bot waits for one REST answer.
REST_TIMEOUT = 5.0
#: ``GET /confirms`` attempts after a dealing call (trading-ig makes 5).
CONFIRM_TRIES = 5


@dataclass(frozen=True)
class BotCredentials:
    """What a bot logs in with (keep it out of logs)."""

    rest_url: str
    api_key: str
    username: str
    password: str = field(repr=False)


@dataclass
class DealResult:
    """How one dealing call ended, as the bot saw it."""

    reference: str | None = None
    deal_id: str | None = None
    status: str | None = None
    reason: str | None = None
    level: float | None = None
    confirmed_by: str | None = None


class _StreamListener:
    """Client and subscription listener: statuses, updates, trade confirms."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: list[str] = []
        self.updates: Counter[str] = Counter()
        self.errors: list[tuple[int, str]] = []
        self.confirms: dict[str, dict[str, Any]] = {}
        self.confirm_seen = threading.Condition(self.lock)
        self.status_seen = threading.Condition(self.lock)
        self.last_update = 0.0

    # ClientListener
    def onStatusChange(self, status: str) -> None:
        with self.lock:
            self.statuses.append(status)
            self.status_seen.notify_all()

    def onServerError(self, code: int, message: str) -> None:
        with self.lock:
            self.errors.append((code, message))

    # SubscriptionListener
    def onSubscriptionError(self, code: int, message: str) -> None:
        with self.lock:
            self.errors.append((code, message))

    def onItemUpdate(self, update: Any) -> None:
        kind = str(update.getItemName()).split(":", 1)[0]
        confirms = update.getValue("CONFIRMS") if kind == "TRADE" else None
        with self.lock:
            self.updates[kind] += 1
            self.last_update = time.monotonic()
            if confirms:
                self._note_confirm(confirms)

    def _note_confirm(self, text: str) -> None:
        try:
            document = json.loads(text)
        except ValueError:
            return
        if not isinstance(document, dict):
            return
        reference = document.get("dealReference")
        if reference:
            self.confirms[reference] = document
            self.confirm_seen.notify_all()

    @property
    def status(self) -> str:
        with self.lock:
            return self.statuses[-1] if self.statuses else ""


class SampleBot:
    """Logs in, streams prices, trades a little, and survives failures.

    Args:
        credentials: Where and how to log in.
        epics: Markets the bot watches and trades (the first is traded).
        stalled_timeout_ms: Lightstreamer stalled timeout (SDK default 2000).
        reconnect_timeout_ms: Lightstreamer reconnect timeout (SDK default 3000).
    """

    def __init__(
        self,
        credentials: BotCredentials,
        epics: tuple[str, ...],
        *,
        stalled_timeout_ms: int = 2000,
        reconnect_timeout_ms: int = 3000,
    ) -> None:
        self._credentials = credentials
        self.epics = epics
        self._stalled_ms = stalled_timeout_ms
        self._reconnect_ms = reconnect_timeout_ms
        self._http = httpx.Client(
            base_url=credentials.rest_url,
            timeout=REST_TIMEOUT,
            headers={
                "X-IG-API-KEY": credentials.api_key,
                "Content-Type": "application/json; charset=UTF-8",
                "Accept": "application/json; charset=UTF-8",
            },
        )
        self._account_id = ""
        self._stream_endpoint = ""
        self._stream: Any = None
        self.listener = _StreamListener()
        self.calls = 0
        self.failures: Counter[str] = Counter()
        self.history_points = 0

    # -- REST plumbing ------------------------------------------------------

    def _call(
        self, method: str, path: str, version: str, body: Any = None,
        *, override: str | None = None,
    ) -> httpx.Response | None:
        """One REST call; None (and a counted failure) if it did not answer."""
        headers = {"VERSION": version}
        if override:
            headers["_method"] = override
        self.calls += 1
        try:
            response = self._http.request(
                method, path, headers=headers,
                content=None if body is None else json.dumps(body),
            )
        except Exception as error:  # outages, refusals by a guard, timeouts
            self.failures[type(error).__name__] += 1
            return None
        if response.status_code >= 400:
            self.failures[f"HTTP {response.status_code}"] += 1
        return response

    @staticmethod
    def _json(response: httpx.Response | None) -> dict[str, Any]:
        if response is None or response.status_code >= 400:
            return {}
        try:
            document = response.json()
        except ValueError:
            return {}
        return document if isinstance(document, dict) else {}

    # -- session --------------------------------------------------------------

    def login(self) -> bool:
        """``POST /session`` v2; keeps CST and X-SECURITY-TOKEN as headers."""
        response = self._call("POST", "/session", "2", {
            "identifier": self._credentials.username,
            "password": self._credentials.password,
        })
        if response is None or response.status_code != 200:
            return False
        self._http.headers["CST"] = response.headers.get("CST", "")
        self._http.headers["X-SECURITY-TOKEN"] = response.headers.get(
            "X-SECURITY-TOKEN", "")
        body = self._json(response)
        self._account_id = str(body.get("currentAccountId", ""))
        self._stream_endpoint = str(body.get("lightstreamerEndpoint", ""))
        return bool(self._account_id and self._stream_endpoint)

    def logout(self) -> None:
        """``POST /session`` with ``_method: DELETE``."""
        self._call("POST", "/session", "1", override="DELETE")

    def close(self) -> None:
        """Disconnect the stream and close the HTTP client."""
        self.disconnect_stream()
        self._http.close()

    # -- market data ---------------------------------------------------------

    def load_accounts(self) -> int:
        """``GET /accounts``: how many accounts the login can use."""
        return len(self._json(self._call("GET", "/accounts", "1")).get("accounts", []))

    def load_market(self, epic: str) -> str | None:
        """``GET /markets/{epic}`` v3: the market status, if it answered."""
        snapshot = self._json(self._call("GET", f"/markets/{epic}", "3")).get(
            "snapshot") or {}
        return snapshot.get("marketStatus")

    def load_history(self, epic: str, points: int = 20) -> int:
        """``GET /prices/{epic}`` v3 warm-up history: points received."""
        document = self._json(self._call(
            "GET", f"/prices/{epic}?resolution=MINUTE&max={points}&pageSize=0", "3"))
        received = len(document.get("prices", []))
        self.history_points += received
        return received

    def positions(self) -> list[dict[str, Any]] | None:
        """``GET /positions`` v2, or None when it did not answer."""
        response = self._call("GET", "/positions", "2")
        if response is None or response.status_code != 200:
            return None
        return self._json(response).get("positions", [])

    # -- dealing ---------------------------------------------------------------

    def open_position(self, epic: str, direction: str, size: float) -> DealResult:
        """``POST /positions/otc`` v2, then its confirm."""
        response = self._call("POST", "/positions/otc", "2", {
            "epic": epic, "expiry": "-", "direction": direction, "size": size,
            "orderType": "MARKET", "currencyCode": "USD", "forceOpen": True,
            "guaranteedStop": False, "trailingStop": False,
        })
        return self._confirm(self._json(response).get("dealReference"))

    def amend_position(self, deal_id: str, stop: float, limit: float) -> DealResult:
        """``PUT /positions/otc/{dealId}`` v2 (move stop and limit)."""
        response = self._call("PUT", f"/positions/otc/{deal_id}", "2", {
            "stopLevel": stop, "limitLevel": limit, "guaranteedStop": False,
            "trailingStop": False,
        })
        return self._confirm(self._json(response).get("dealReference"))

    def close_position(self, deal_id: str, direction: str, size: float) -> DealResult:
        """``POST /positions/otc`` + ``_method: DELETE`` v1 (opposite direction)."""
        opposite = "SELL" if direction == "BUY" else "BUY"
        response = self._call("POST", "/positions/otc", "1", {
            "dealId": deal_id, "direction": opposite, "size": size,
            "orderType": "MARKET",
        }, override="DELETE")
        return self._confirm(self._json(response).get("dealReference"))

    def _confirm(self, reference: str | None) -> DealResult:
        # REST first, as trading-ig does; the TRADE stream is the fallback.
        result = DealResult(reference=reference)
        if not reference:
            return result
        document: dict[str, Any] = {}
        for attempt in range(CONFIRM_TRIES):
            response = self._call("GET", f"/confirms/{reference}", "1")
            document = self._json(response)
            if document or (response is None and attempt >= 1):
                break
            time.sleep(0.2)
        source = "rest" if document else "stream"
        if not document:
            document = self.wait_stream_confirm(reference, timeout=3.0) or {}
        if document:
            result.deal_id = document.get("dealId")
            result.status = document.get("dealStatus")
            result.reason = document.get("reason")
            result.level = document.get("level")
            result.confirmed_by = source
        return result

    def wait_stream_confirm(
        self, reference: str, timeout: float
    ) -> dict[str, Any] | None:
        """The CONFIRMS document streamed for a deal reference, if it comes."""
        deadline = time.monotonic() + timeout
        listener = self.listener
        with listener.confirm_seen:
            while reference not in listener.confirms:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                listener.confirm_seen.wait(left)
            return listener.confirms[reference]

    # -- streaming ------------------------------------------------------------

    def connect_stream(self) -> None:
        """Connect the Lightstreamer client and subscribe the bot's items."""
        from lightstreamer.client import LightstreamerClient, Subscription

        client = LightstreamerClient(self._stream_endpoint, None)
        headers = self._http.headers
        client.connectionDetails.setUser(self._account_id)
        client.connectionDetails.setPassword(
            f"CST-{headers.get('CST', '')}|XST-{headers.get('X-SECURITY-TOKEN', '')}")
        options = client.connectionOptions
        options.setStalledTimeout(self._stalled_ms)
        options.setReconnectTimeout(self._reconnect_ms)
        options.setRetryDelay(500)
        options.setSessionRecoveryTimeout(2000)
        client.addListener(self.listener)

        account = self._account_id
        subscriptions = [
            ("MERGE", [f"PRICE:{account}:{epic}" for epic in self.epics],
             ["BIDPRICE1", "ASKPRICE1", "TIMESTAMP"], "Pricing"),
            ("DISTINCT", [f"CHART:{self.epics[0]}:TICK"], ["BID", "OFR", "UTM"], None),
            ("MERGE", [f"ACCOUNT:{account}"], ["PNL", "AVAILABLE_CASH", "FUNDS"], None),
            ("DISTINCT", [f"TRADE:{account}"], ["CONFIRMS", "OPU", "WOU"], None),
        ]
        for mode, items, fields, adapter in subscriptions:
            subscription = Subscription(mode, items, fields)
            if adapter:
                subscription.setDataAdapter(adapter)
            subscription.setRequestedSnapshot("yes" if mode == "MERGE" else "no")
            subscription.addListener(self.listener)
            client.subscribe(subscription)
        client.connect()
        self._stream = client

    def disconnect_stream(self) -> None:
        """Disconnect the Lightstreamer client (idempotent)."""
        client, self._stream = self._stream, None
        if client is not None:
            client.disconnect()

    def stream_updates(self) -> int:
        """Updates received so far, all items."""
        with self.listener.lock:
            return sum(self.listener.updates.values())

"""IG stream items: names, modes, adapters, schemas and field values.

Pure. Parses item names such as ``PRICE:ABC123:CS.D.EURUSD.MINI.IP`` into an
:class:`ItemRef`, says which fields each kind accepts, and renders field
values in IG's formats: prices as plain decimals, ``UTM``/``TIMESTAMP`` as
epoch milliseconds, ``LTV``/``TTV`` as integers, ``UPDATE_TIME`` as UK
``HH:MM:SS``, and ``None`` (sent as ``#``) for anything unknown.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from ig_otel.simulator._market import CHART_SCALES, Candle, MarketModel, Quote, uk_time

__all__ = [
    "FIELDS",
    "ItemRef",
    "MODES",
    "parse_item",
    "render_account",
    "render_candle",
    "render_market",
    "render_price",
    "render_tick",
]

_LADDER = [f"{side}{n}" for side in ("BIDPRICE", "ASKPRICE", "BIDSIZE", "ASKSIZE")
           for n in range(1, 6)]
_CURRENCY_SIZES = [f"C{c}{side}SIZE{n}" for c in range(1, 6)
                   for side in ("BID", "ASK") for n in range(1, 6)]

#: Fields each item kind accepts (IG streaming reference).
FIELDS: Mapping[str, frozenset[str]] = {
    "PRICE": frozenset([
        "MID_OPEN", "HIGH", "LOW", "BIDQUOTEID", "ASKQUOTEID", *_LADDER,
        *(f"CURRENCY{n}" for n in range(6)), *_CURRENCY_SIZES, "TIMESTAMP",
        "DLG_FLAG", "NET_CHG", "NET_CHG_PCT", "DELAY",
    ]),
    "MARKET": frozenset([
        "MID_OPEN", "HIGH", "LOW", "CHANGE", "CHANGE_PCT", "UPDATE_TIME",
        "MARKET_DELAY", "MARKET_STATE", "BID", "OFFER", "STRIKE_PRICE", "ODDS",
    ]),
    "CHART": frozenset([
        "LTV", "TTV", "UTM", "DAY_OPEN_MID", "DAY_NET_CHG_MID", "DAY_PERC_CHG_MID",
        "DAY_HIGH", "DAY_LOW", "OFR_OPEN", "OFR_HIGH", "OFR_LOW", "OFR_CLOSE",
        "BID_OPEN", "BID_HIGH", "BID_LOW", "BID_CLOSE", "LTP_OPEN", "LTP_HIGH",
        "LTP_LOW", "LTP_CLOSE", "CONS_END", "CONS_TICK_COUNT",
    ]),
    "CHART_TICK": frozenset([
        "BID", "OFR", "LTP", "LTV", "TTV", "UTM", "DAY_OPEN_MID", "DAY_NET_CHG_MID",
        "DAY_PERC_CHG_MID", "DAY_HIGH", "DAY_LOW",
    ]),
    "ACCOUNT": frozenset([
        "PNL", "DEPOSIT", "AVAILABLE_CASH", "PNL_LR", "PNL_NLR", "FUNDS", "MARGIN",
        "MARGIN_LR", "MARGIN_NLR", "AVAILABLE_TO_DEAL", "EQUITY", "EQUITY_USED",
    ]),
    "TRADE": frozenset(["CONFIRMS", "OPU", "WOU"]),
}

#: The one subscription mode IG serves for each kind.
MODES: Mapping[str, str] = {
    "PRICE": "MERGE", "MARKET": "MERGE", "CHART": "MERGE", "ACCOUNT": "MERGE",
    "CHART_TICK": "DISTINCT", "TRADE": "DISTINCT",
}

#: Data adapter serving each kind (``DEFAULT`` when the request names none).
ADAPTERS: Mapping[str, str] = {
    "PRICE": "Pricing", "MARKET": "DEFAULT", "CHART": "DEFAULT",
    "CHART_TICK": "DEFAULT", "ACCOUNT": "DEFAULT", "TRADE": "DEFAULT",
}


@dataclass(frozen=True)
class ItemRef:
    """A parsed item name."""

    name: str
    kind: str
    epic: str | None = None
    account_id: str | None = None
    scale: str | None = None


def parse_item(
    name: str, accounts: Collection[str], market: MarketModel
) -> ItemRef | None:
    """The item a name designates, or None if IG would reject it.

    Args:
        name: Item name from ``LS_group``.
        accounts: Account ids the stream session may see.
        market: Known epics.
    """
    parts = name.split(":")
    head = parts[0]
    if head in ("MARKET", "L1") and len(parts) == 2 and parts[1] in market:
        return ItemRef(name, "MARKET", epic=parts[1])
    if head == "PRICE" and len(parts) == 3 and parts[1] in accounts \
            and parts[2] in market:
        return ItemRef(name, "PRICE", epic=parts[2], account_id=parts[1])
    if head == "CHART" and len(parts) == 3 and parts[1] in market:
        if parts[2] == "TICK":
            return ItemRef(name, "CHART_TICK", epic=parts[1])
        if parts[2] in CHART_SCALES:
            return ItemRef(name, "CHART", epic=parts[1], scale=parts[2])
    if head in ("ACCOUNT", "TRADE") and len(parts) == 2 and parts[1] in accounts:
        return ItemRef(name, head, account_id=parts[1])
    return None


def _number(value: float | None, decimals: int) -> str | None:
    return None if value is None else f"{value:.{decimals}f}"


def render_price(quote: Quote, fields: Sequence[str], status: str) -> list[str | None]:
    """``PRICE`` field values for a quote."""
    places = quote.decimals
    flag = {"TRADEABLE": "DEAL", "CLOSED": "CLOSED"}.get(status, "SUSPEND")
    table: dict[str, str | None] = {
        "MID_OPEN": _number(quote.day_open, places),
        "HIGH": _number(quote.day_high, places),
        "LOW": _number(quote.day_low, places),
        "BIDQUOTEID": f"Q{quote.utm}B",
        "ASKQUOTEID": f"Q{quote.utm}A",
        "BIDPRICE1": _number(quote.bid, places),
        "ASKPRICE1": _number(quote.offer, places),
        "BIDSIZE1": "100",
        "ASKSIZE1": "100",
        "CURRENCY0": None,
        "TIMESTAMP": str(quote.utm),
        "DLG_FLAG": flag,
        "NET_CHG": _number(quote.net_change, places),
        "NET_CHG_PCT": f"{quote.percent_change:.2f}",
        "DELAY": "0",
    }
    return [table.get(name) for name in fields]


def render_market(quote: Quote, fields: Sequence[str], status: str) -> list[str | None]:
    """``MARKET`` field values for a quote."""
    places = quote.decimals
    state = {"TRADEABLE": "TRADEABLE", "CLOSED": "CLOSED"}.get(status, "SUSPENDED")
    table: dict[str, str | None] = {
        "MID_OPEN": _number(quote.day_open, places),
        "HIGH": _number(quote.day_high, places),
        "LOW": _number(quote.day_low, places),
        "CHANGE": _number(quote.net_change, places),
        "CHANGE_PCT": f"{quote.percent_change:.2f}",
        "UPDATE_TIME": uk_time(quote.utm),
        "MARKET_DELAY": "0",
        "MARKET_STATE": state,
        "BID": _number(quote.bid, places),
        "OFFER": _number(quote.offer, places),
    }
    return [table.get(name) for name in fields]


def _day(quote: Quote) -> dict[str, str | None]:
    places = quote.decimals
    return {
        "DAY_OPEN_MID": _number(quote.day_open, places),
        "DAY_NET_CHG_MID": _number(quote.net_change, places),
        "DAY_PERC_CHG_MID": f"{quote.percent_change:.2f}",
        "DAY_HIGH": _number(quote.day_high, places),
        "DAY_LOW": _number(quote.day_low, places),
    }


def render_tick(quote: Quote, fields: Sequence[str]) -> list[str | None]:
    """``CHART:{epic}:TICK`` field values (integers for UTM, LTV, TTV)."""
    places = quote.decimals
    table = _day(quote)
    table.update({
        "BID": _number(quote.bid, places),
        "OFR": _number(quote.offer, places),
        "LTP": None,
        "LTV": str(quote.tick_volume),
        "TTV": str(quote.volume),
        "UTM": str(quote.utm),
    })
    return [table.get(name) for name in fields]


def render_candle(
    quote: Quote, candle: Candle, fields: Sequence[str], complete: bool
) -> list[str | None]:
    """``CHART:{epic}:{scale}`` field values of one candle."""
    places = quote.decimals
    table = _day(quote)
    table.update({
        "LTV": str(candle.volume),
        "TTV": str(quote.tick_volume),
        "UTM": str(candle.start_ms),
        "OFR_OPEN": _number(candle.offer_open, places),
        "OFR_HIGH": _number(candle.offer_high, places),
        "OFR_LOW": _number(candle.offer_low, places),
        "OFR_CLOSE": _number(candle.offer_close, places),
        "BID_OPEN": _number(candle.bid_open, places),
        "BID_HIGH": _number(candle.bid_high, places),
        "BID_LOW": _number(candle.bid_low, places),
        "BID_CLOSE": _number(candle.bid_close, places),
        "CONS_END": "1" if complete else "0",
        "CONS_TICK_COUNT": str(candle.ticks),
    })
    return [table.get(name) for name in fields]


def render_account(
    info: Mapping[str, float], fields: Sequence[str]
) -> list[str | None]:
    """``ACCOUNT`` field values from ``balance/deposit/profitLoss/available``."""
    pnl = info["profitLoss"]
    equity = info["balance"] + pnl

    def money(value: float) -> str:
        return f"{value:.2f}"

    table: dict[str, Callable[[], str]] = {
        "PNL": lambda: money(pnl),
        "DEPOSIT": lambda: money(info["deposit"]),
        "AVAILABLE_CASH": lambda: money(info["balance"]),
        "PNL_LR": lambda: money(0.0),
        "PNL_NLR": lambda: money(pnl),
        "FUNDS": lambda: money(info["balance"]),
        "MARGIN": lambda: money(info["deposit"]),
        "MARGIN_LR": lambda: money(0.0),
        "MARGIN_NLR": lambda: money(info["deposit"]),
        "AVAILABLE_TO_DEAL": lambda: money(info["available"]),
        "EQUITY": lambda: money(equity),
        "EQUITY_USED": lambda: money(100 * info["deposit"] / equity if equity else 0),
    }
    return [table[name]() if name in table else None for name in fields]

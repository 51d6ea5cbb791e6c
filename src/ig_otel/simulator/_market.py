"""The market model: instruments, seeded price walks, candles and history.

One model feeds REST snapshots, historical prices and every streamed price,
so a bot sees the same market whichever way it looks. Each epic walks on its
own random generator seeded from the simulator seed and the epic, so the
sequence of prices of an epic depends only on the seed and on how many ticks
it took: two simulators with one seed quote the same prices.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

try:
    from zoneinfo import ZoneInfo

    UK = ZoneInfo("Europe/London")
except Exception:  # pragma: no cover - systems without a tz database
    UK = timezone.utc

__all__ = [
    "CHART_SCALES",
    "DEFAULT_INSTRUMENTS",
    "Candle",
    "Instrument",
    "MarketModel",
    "Quote",
    "RESOLUTIONS",
    "uk_time",
]


@dataclass(frozen=True)
class Instrument:
    """Static description of one market.

    Attributes:
        epic: IG epic, e.g. ``CS.D.EURUSD.MINI.IP``.
        name: Instrument name shown by IG.
        market_id: Client-sentiment market id (``EURUSD``, ``FT100``).
        instrument_type: ``CURRENCIES``, ``INDICES``, ``COMMODITIES``...
        expiry: ``-`` for rolling CFDs, ``DFB`` for daily funded bets.
        start: First mid price of the walk.
        decimals: Decimal places of quotes.
        spread: Offer minus bid.
        volatility: Standard deviation of one tick's mid change.
        currency: Quote currency code.
        lot_size: Contract lot size.
        min_size: Minimum deal size.
        margin: Margin requirement as a fraction of notional.
    """

    epic: str
    name: str
    market_id: str
    instrument_type: str
    expiry: str
    start: float
    decimals: int
    spread: float
    volatility: float
    currency: str
    lot_size: float = 1.0
    min_size: float = 0.5
    margin: float = 0.05


DEFAULT_INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("CS.D.EURUSD.MINI.IP", "EUR/USD Mini", "EURUSD", "CURRENCIES", "-",
               1.085, 5, 0.00006, 0.00003, "USD", 10_000, 0.1, 0.0333),
    Instrument("CS.D.GBPUSD.MINI.IP", "GBP/USD Mini", "GBPUSD", "CURRENCIES", "-",
               1.265, 5, 0.00009, 0.00004, "USD", 10_000, 0.1, 0.0333),
    Instrument("CS.D.USDJPY.MINI.IP", "USD/JPY Mini", "USDJPY", "CURRENCIES", "-",
               151.5, 3, 0.009, 0.004, "JPY", 10_000, 0.1, 0.0333),
    Instrument("IX.D.FTSE.DAILY.IP", "FTSE 100", "FT100", "INDICES", "DFB",
               7650.0, 1, 1.0, 0.6, "GBP", 1, 0.5, 0.05),
    Instrument("IX.D.DAX.DAILY.IP", "Germany 40", "DAX", "INDICES", "DFB",
               18200.0, 1, 1.2, 1.2, "EUR", 1, 0.5, 0.05),
    Instrument("IX.D.SPTRD.DAILY.IP", "US 500", "SPX", "INDICES", "DFB",
               5100.0, 1, 0.4, 0.35, "USD", 1, 0.5, 0.05),
    Instrument("CC.D.LCO.USS.IP", "Oil - Brent Crude", "LCO", "COMMODITIES", "-",
               8250.0, 1, 2.8, 1.5, "USD", 1, 1.0, 0.1),
    Instrument("CS.D.BITCOIN.CFD.IP", "Bitcoin", "BITCOIN", "CRYPTOCURRENCIES", "-",
               65000.0, 1, 36.0, 18.0, "USD", 1, 0.01, 0.5),
)

#: Streamed candle scales and their length in seconds.
CHART_SCALES: dict[str, int] = {
    "SECOND": 1, "1MINUTE": 60, "5MINUTE": 300, "HOUR": 3600,
}

#: Price-history resolutions and their length in seconds.
RESOLUTIONS: dict[str, int] = {
    "SECOND": 1, "MINUTE": 60, "MINUTE_2": 120, "MINUTE_3": 180, "MINUTE_5": 300,
    "MINUTE_10": 600, "MINUTE_15": 900, "MINUTE_30": 1800, "HOUR": 3600,
    "HOUR_2": 7200, "HOUR_3": 10800, "HOUR_4": 14400, "DAY": 86400,
    "WEEK": 604800, "MONTH": 2592000,
}


def uk_time(epoch_ms: int) -> str:
    """``HH:MM:SS`` in UK local time, as IG's ``UPDATE_TIME``."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    return moment.astimezone(UK).strftime("%H:%M:%S")


@dataclass(frozen=True)
class Quote:
    """One tick of an epic: two-way price plus the day's statistics."""

    epic: str
    bid: float
    offer: float
    utm: int
    day_open: float
    day_high: float
    day_low: float
    volume: int
    tick_volume: int
    decimals: int

    @property
    def mid(self) -> float:
        return round((self.bid + self.offer) / 2, self.decimals + 1)

    @property
    def net_change(self) -> float:
        return round(self.mid - self.day_open, self.decimals + 1)

    @property
    def percent_change(self) -> float:
        return round(100.0 * (self.mid - self.day_open) / self.day_open, 4)

    def text(self, value: float) -> str:
        """A price as IG writes it (fixed decimals, no exponent)."""
        return f"{value:.{self.decimals}f}"


@dataclass
class Candle:
    """A consolidated candle of one scale, built from ticks."""

    start_ms: int
    bid_open: float
    bid_high: float
    bid_low: float
    bid_close: float
    offer_open: float
    offer_high: float
    offer_low: float
    offer_close: float
    ticks: int = 1
    volume: int = 0

    @classmethod
    def opened(cls, start_ms: int, quote: Quote) -> Candle:
        return cls(start_ms, quote.bid, quote.bid, quote.bid, quote.bid,
                   quote.offer, quote.offer, quote.offer, quote.offer, 1,
                   quote.tick_volume)

    def add(self, quote: Quote) -> None:
        self.bid_high = max(self.bid_high, quote.bid)
        self.bid_low = min(self.bid_low, quote.bid)
        self.bid_close = quote.bid
        self.offer_high = max(self.offer_high, quote.offer)
        self.offer_low = min(self.offer_low, quote.offer)
        self.offer_close = quote.offer
        self.ticks += 1
        self.volume += quote.tick_volume


@dataclass
class _Walk:
    instrument: Instrument
    rng: random.Random
    mid: float
    day_open: float
    high: float
    low: float
    volume: int = 0
    last: Quote | None = None
    candles: dict[str, Candle] = field(default_factory=dict)
    closed: dict[str, Candle] = field(default_factory=dict)


class MarketModel:
    """Seeded random walks for a set of instruments.

    Args:
        seed: Simulator seed; with the epic it seeds each walk.
        instruments: The tradable markets.
    """

    def __init__(
        self, seed: int = 0, instruments: Iterable[Instrument] = DEFAULT_INSTRUMENTS
    ) -> None:
        self.seed = seed
        self.instruments: dict[str, Instrument] = {}
        self.status: dict[str, str] = {}
        self._walks: dict[str, _Walk] = {}
        for instrument in instruments:
            self.add(instrument)

    def add(self, instrument: Instrument) -> None:
        """Make one more market tradable."""
        rng = random.Random(f"{self.seed}:{instrument.epic}")
        start = instrument.start
        self.instruments[instrument.epic] = instrument
        self.status[instrument.epic] = "TRADEABLE"
        self._walks[instrument.epic] = _Walk(instrument, rng, start, start, start,
                                             start)

    def __contains__(self, epic: object) -> bool:
        return epic in self.instruments

    @property
    def epics(self) -> list[str]:
        return list(self.instruments)

    def advance(self, epic: str, now_ms: int) -> Quote:
        """Take one step of an epic's walk and return the new quote."""
        walk = self._walks[epic]
        instrument = walk.instrument
        step = walk.rng.gauss(0.0, instrument.volatility)
        # Pull gently back to the start so long runs stay plausible.
        step -= 0.001 * (walk.mid - instrument.start)
        walk.mid = max(walk.mid + step, instrument.volatility * 10)
        tick_volume = walk.rng.randint(1, 5)
        walk.volume += tick_volume
        walk.high = max(walk.high, walk.mid)
        walk.low = min(walk.low, walk.mid)
        quote = self._quote(walk, now_ms, tick_volume)
        walk.last = quote
        self._roll_candles(walk, quote)
        return quote

    def quote(self, epic: str, now_ms: int) -> Quote:
        """The current quote of an epic (first call takes the first step)."""
        walk = self._walks[epic]
        if walk.last is None:
            return self.advance(epic, now_ms)
        return walk.last

    def candle(self, epic: str, scale: str) -> tuple[Candle | None, Candle | None]:
        """The open candle of a scale and the one that closed before it."""
        walk = self._walks[epic]
        return walk.candles.get(scale), walk.closed.get(scale)

    @staticmethod
    def _quote(walk: _Walk, now_ms: int, tick_volume: int) -> Quote:
        instrument = walk.instrument
        half = instrument.spread / 2
        places = instrument.decimals
        return Quote(
            epic=instrument.epic,
            bid=round(walk.mid - half, places),
            offer=round(walk.mid + half, places),
            utm=now_ms,
            day_open=round(walk.day_open, places),
            day_high=round(walk.high, places),
            day_low=round(walk.low, places),
            volume=walk.volume,
            tick_volume=tick_volume,
            decimals=places,
        )

    @staticmethod
    def _roll_candles(walk: _Walk, quote: Quote) -> None:
        for scale, seconds in CHART_SCALES.items():
            start = quote.utm - quote.utm % (seconds * 1000)
            current = walk.candles.get(scale)
            if current is None or current.start_ms != start:
                if current is not None:
                    walk.closed[scale] = current
                walk.candles[scale] = Candle.opened(start, quote)
            else:
                current.add(quote)

    def history(
        self, epic: str, resolution: str, end_ms: int, count: int
    ) -> list[dict[str, object]]:
        """``count`` candles of a resolution ending at ``end_ms``, oldest first.

        Deterministic for (seed, epic, resolution, end bucket, count); the
        last close is near the epic's current mid.
        """
        instrument = self.instruments[epic]
        seconds = RESOLUTIONS[resolution]
        end = end_ms // 1000 - (end_ms // 1000) % seconds
        rng = random.Random(f"{self.seed}:{epic}:{resolution}:{end}:{count}")
        scale = instrument.volatility * math.sqrt(max(1.0, seconds / 0.25))
        mid = self._walks[epic].mid
        mids = [mid]
        for _ in range(count - 1):
            mid = max(mid - rng.gauss(0.0, scale), instrument.volatility * 10)
            mids.append(mid)
        mids.reverse()
        return [
            _history_row(instrument, end - (count - 1 - index) * seconds, close,
                         scale, rng)
            for index, close in enumerate(mids)
        ]


def _history_row(
    instrument: Instrument, stamp: int, close: float, scale: float,
    rng: random.Random,
) -> dict[str, object]:
    places = instrument.decimals
    half = instrument.spread / 2
    open_ = close + rng.gauss(0.0, scale / 2)
    high = max(open_, close) + abs(rng.gauss(0.0, scale / 3))
    low = min(open_, close) - abs(rng.gauss(0.0, scale / 3))
    moment = datetime.fromtimestamp(stamp, tz=timezone.utc)

    def side(mid: float) -> dict[str, float | None]:
        return {
            "bid": round(mid - half, places),
            "ask": round(mid + half, places),
            "lastTraded": None,
        }

    return {
        "snapshotTime": moment.astimezone(UK).strftime("%Y/%m/%d %H:%M:%S"),
        "snapshotTimeUTC": moment.strftime("%Y-%m-%dT%H:%M:%S"),
        "openPrice": side(open_),
        "closePrice": side(close),
        "highPrice": side(high),
        "lowPrice": side(low),
        "lastTradedVolume": rng.randint(10, 500),
    }

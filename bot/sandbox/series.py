"""The fake venues' market: one set of real recorded Binance series, fed to every venue that lists the market.

Binance spot BTC/USDT, ETH/USDT and SOL/USDT, recorded together (same minutes), give every fake venue its
prices, so BTC costs the same on Binance, Binance USD-M and Kraken, and ETH moves on its own. Each symbol is
fed its 1-minute candles (the price the books replay, one candle per step) with recorded 1-hour and derived
1-day history before them. Kraken's USD markets take the USDT series (USDT ≈ USD; `synthesized`) and ETH/BTC
is the cross of the ETH and BTC series, candle by candle (`derived`). Sources and licences: data/README.md.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources

from bot.sandbox.exchange_book import Candle, ExchangeBook

#: Recorded assets: `binance_<ASSET>_USDT-<timeframe>.json` in data/ for 1m (fed), 1h and 1d (history).
RECORDED = ("BTC", "ETH", "SOL")
FEED_TIMEFRAME = "1m"
HISTORY_TIMEFRAMES = ("1h", "1d")
#: The feed opens this many minutes into its recording (12 h of 1-minute history; 36 h left to replay).
FEED_START = 720
#: Decimal places of the derived ETH/BTC cross (Kraken's XETHXXBT tick is 0.00001).
CROSS_PLACES = 5


@functools.cache
def recorded(asset: str, timeframe: str) -> tuple[Candle, ...]:
    """The recorded `asset`/USDT candles of `timeframe`, parsed once per process (books are cheap in tests)."""
    name = f"binance_{asset}_USDT-{timeframe}.json"
    rows = json.loads(resources.files("bot.sandbox").joinpath("data", name).read_text())
    return tuple(Candle(int(r[0]), *(Decimal(str(v)) for v in r[1:6])) for r in rows)


@functools.cache
def cross(base: str, quote: str, timeframe: str) -> tuple[Candle, ...]:
    """base/quote from two USDT series of the same minutes (derived): open and close are the ratios of theirs.

    The ratio's true high and low inside a candle are not knowable from two OHLC rows, so they are the larger
    and smaller of open and close; the volume is the base series' volume.
    """
    unit = Decimal(1).scaleb(-CROSS_PLACES)
    rows = []
    for b, q in zip(recorded(base, timeframe), recorded(quote, timeframe), strict=True):
        if b.timestamp_ms != q.timestamp_ms:
            raise ValueError(f"{base} and {quote} series are not aligned at {b.timestamp_ms}")
        opened, closed = (b.open / q.open).quantize(unit), (b.close / q.close).quantize(unit)
        rows.append(Candle(b.timestamp_ms, opened, max(opened, closed), min(opened, closed), closed, b.volume))
    return tuple(rows)


@functools.cache
def on_tick(base: str, quote: str, timeframe: str, tick: Decimal) -> tuple[Candle, ...]:
    """The base/quote series with prices rounded to the market's tick (Kraken's BTC tick is 0.1, Binance's 0.01)."""
    rows = recorded(base, timeframe) if quote == "USDT" else cross(base, quote, timeframe)
    if all(v % tick == 0 for c in rows for v in (c.open, c.high, c.low, c.close)):
        return rows

    def rounded(value: Decimal) -> Decimal:
        return (value / tick).to_integral_value(rounding=ROUND_HALF_UP) * tick

    return tuple(
        Candle(c.timestamp_ms, rounded(c.open), rounded(c.high), rounded(c.low), rounded(c.close), c.volume)
        for c in rows
    )


def _source(base: str, quote: str) -> tuple[str, str] | None:
    """Which recorded assets price base/quote: (asset, "USDT"/"USD") directly, (base, quote) as a cross."""
    if base in RECORDED and quote in ("USDT", "USD"):
        return base, "USDT"
    if base in RECORDED and quote in RECORDED and base != quote:
        return base, quote
    return None


def feed_book(book: ExchangeBook, symbols: Iterable[str] | None = None) -> list[str]:
    """Feed every market of `book` the series can price (or only `symbols`); return the symbols fed.

    A market the series cannot price (BNB, EUR quotes) gets no feed: its price comes only from `set_price`.
    """
    fed = []
    for symbol in symbols if symbols is not None else list(book.markets):
        market = book.market(symbol)
        source = _source(market.base, market.quote)
        if source is None:
            continue
        tick = market.tick_size
        book.load_candles(symbol, FEED_TIMEFRAME, on_tick(*source, FEED_TIMEFRAME, tick), start=FEED_START)
        for timeframe in HISTORY_TIMEFRAMES:
            book.load_history(symbol, timeframe, on_tick(*source, timeframe, tick))
        fed.append(symbol)
    return fed

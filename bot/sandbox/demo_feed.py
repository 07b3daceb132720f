"""The offline demo's moving market: replay the fake venues' recorded candles, a step every few seconds.

The exchange books are fed real recorded 1-minute candles (Binance BTC, ETH and SOL of April 2023, the same
series on every venue: `bot.sandbox.series`); each step closes the open minute and opens the next, on every
venue at once, so prices move as they really did, agree across venues, and resting limit orders fill when the
price crosses them. One step every 2 s replays a minute: the market runs 30 times faster than the clock, so an
hourly candle closes every 2 minutes of replay while the bot's schedules (a DCA's `every=1m`, a trend's
evaluation at each candle close) keep real time. A price scripted by the person (`:price`) pauses that symbol's
replay, so the scripted value holds until the replay is resumed. A recording that runs out starts again from its
middle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from decimal import Decimal

from bot.sandbox.exchange_book import BookError, ExchangeBook

logger = logging.getLogger(__name__)

#: Timeframes the books may be fed with, shortest first (a longer one can be aggregated from a shorter one).
_FEED_TIMEFRAMES = ("1m", "1h", "1d")


def fed_symbols(book: ExchangeBook) -> list[tuple[str, str]]:
    """(symbol, timeframe) of every market of `book` that has recorded candles."""
    fed = []
    for symbol in book.markets:
        for timeframe in _FEED_TIMEFRAMES:
            if book.candles(symbol, timeframe, limit=1):
                fed.append((symbol, timeframe))
                break
    return fed


class PriceFeed:
    """Advance every fed market of the books on a timer; `set_price` scripts one and pauses its replay."""

    def __init__(self, books: dict[str, ExchangeBook], interval: float = 2.0) -> None:
        self.books = books
        self.interval = interval
        self.feeds = {venue: fed_symbols(book) for venue, book in books.items()}
        self.paused: set[tuple[str, str]] = set()  # (venue, symbol)
        self.running = True
        self.steps = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="demo-price-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def step(self) -> None:
        """Advance every unpaused fed market by one candle (resting limit orders it crosses fill)."""
        for venue, book in self.books.items():
            for symbol, timeframe in self.feeds[venue]:
                if (venue, symbol) not in self.paused and not book.advance(symbol):
                    self._restart(book, symbol, timeframe)
        self.steps += 1

    def symbols_for(self, symbol: str) -> list[tuple[str, str]]:
        """(venue, market) pairs a person's `BTC/USDT` means: the spot market and the linear perpetual."""
        found = []
        for venue, book in self.books.items():
            for candidate in (symbol, f"{symbol}:{symbol.partition('/')[2]}"):
                if candidate in book.markets:
                    found.append((venue, candidate))
                    break
        return found

    def set_price(self, symbol: str, price: str) -> tuple[list[str], int]:
        """Script `price` on every venue listing `symbol` (spot and perpetual); return the venues and fills.

        Raises ValueError with a message fit for the person when nothing matches or the price is invalid.
        """
        targets = self.symbols_for(symbol.upper())
        if not targets:
            raise ValueError(f"no venue lists {symbol}; try BTC/USDT or ETH/USDT")
        fills = 0
        for venue, market in targets:
            try:
                fills += len(self.books[venue].set_price(market, price))
            except BookError as err:
                raise ValueError(err.message) from None
            self.paused.add((venue, market))
        return [venue for venue, _ in targets], fills

    def resume(self) -> None:
        """Let every scripted market follow the recording again."""
        self.paused.clear()
        self.running = True

    def prices(self) -> list[tuple[str, str, Decimal]]:
        """(venue, symbol, last price) of every fed or scripted market."""
        rows = []
        for venue, book in self.books.items():
            symbols = [s for s, _ in self.feeds[venue]] + sorted(m for v, m in self.paused if v == venue)
            for symbol in dict.fromkeys(symbols):
                price = book.price(symbol)
                if price is not None:
                    rows.append((venue, symbol, price))
        return rows

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.running:
                continue
            try:
                self.step()
            except Exception:  # a demo must keep going; the log file has the cause
                logger.exception("price feed step failed")

    @staticmethod
    def _restart(book: ExchangeBook, symbol: str, timeframe: str) -> None:
        """Replay the recording again from its middle (the first half stays history for the strategies)."""
        book.replay_from(symbol, len(book.candles(symbol, timeframe)) // 2)

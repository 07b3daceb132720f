"""Market-data cache: one request per (venue, symbol, timeframe) however many strategies ask for it.

Candles stay valid until the candle that was open when they were fetched closes (the next one opens);
tickers for one engine round (the caller passes a round id) or, without one, for `ticker_ttl` seconds.
Round ids increase (the runner uses the scheduler second) and the newest one asked for is the current
round: a ticker fetched during it (with or without a round id) serves every caller of it, and a caller
still holding an older round id (a run that started in the previous second and reached the cache late) is
served the current round's ticker instead of fetching its own and making the next caller fetch again.
Concurrent requests for the same key share one in-flight future, so a round of a thousand strategies on
BTC/USDT 1h makes one request. Every request actually sent is counted per key (`requests_per_key`), which
the benchmark prints as `md_requests_per_key`.

Values are Decimals (floats go through `str`, never binary noise); the still-open candle is returned
separately from the closed ones, so a strategy never decides on a candle that can still move.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

Clock = Callable[[], float]

_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def timeframe_ms(timeframe: str) -> int:
    """Length of a ccxt timeframe ("1m", "4h", "1d", "1w") in milliseconds."""
    try:
        count, unit = int(timeframe[:-1]), timeframe[-1]
        ms = count * _UNIT_MS[unit]
    except (ValueError, KeyError, IndexError):
        raise ValueError(f"unsupported timeframe {timeframe!r}") from None
    if ms <= 0:
        raise ValueError(f"unsupported timeframe {timeframe!r}")
    return ms


def to_decimal(value: Any) -> Decimal | None:
    """Decimal from a ccxt number (float/int/str) through `str`; None stays None."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    return Decimal(str(value))


class Candle(NamedTuple):
    """One OHLCV row; `timestamp_ms` is its open time."""

    timestamp_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


@dataclass(frozen=True)
class Candles:
    """Closed candles, oldest first, and the candle still open at fetch time (None if not returned)."""

    venue: str
    symbol: str
    timeframe: str
    closed: tuple[Candle, ...]
    open: Candle | None
    fetched_at_ms: int


@dataclass(frozen=True)
class Ticker:
    """Last price and top of book, in Decimals (any may be None when the venue omits it)."""

    venue: str
    symbol: str
    last: Decimal | None
    bid: Decimal | None
    ask: Decimal | None
    timestamp_ms: int | None


def candle_from_row(row: Sequence[Any]) -> Candle:
    """Convert one ccxt OHLCV row `[ts, o, h, l, c, v]` to a `Candle` of Decimals."""
    ts, o, h, low, c, v = row[:6]
    return Candle(int(ts), *(to_decimal(x) or Decimal(0) for x in (o, h, low, c, v)))


def split_candles(
    venue: str, symbol: str, timeframe: str, rows: Sequence[Sequence[Any]], now_ms: int
) -> Candles:
    """Split ccxt OHLCV rows into closed candles and the one still open at `now_ms`."""
    length = timeframe_ms(timeframe)
    candles = sorted((candle_from_row(r) for r in rows), key=lambda c: c.timestamp_ms)
    closed = tuple(c for c in candles if c.timestamp_ms + length <= now_ms)
    still_open = [c for c in candles if c.timestamp_ms + length > now_ms]
    return Candles(venue, symbol, timeframe, closed, still_open[-1] if still_open else None, now_ms)


def ticker_from_ccxt(venue: str, symbol: str, data: dict[str, Any]) -> Ticker:
    """Convert a ccxt unified ticker into a `Ticker`."""
    ts = data.get("timestamp")
    return Ticker(
        venue,
        symbol,
        to_decimal(data.get("last") if data.get("last") is not None else data.get("close")),
        to_decimal(data.get("bid")),
        to_decimal(data.get("ask")),
        int(ts) if ts is not None else None,
    )


OhlcvFetcher = Callable[[str, str, str, int], Awaitable[list[list[Any]]]]
TickerFetcher = Callable[[str, str], Awaitable[dict[str, Any]]]


@dataclass
class _Entry:
    value: Any
    expires: float  # clock seconds; for tickers asked with a round id, `round_id` decides instead
    limit: int = 0
    round_id: int | None = None  # tickers: the current round when the request was sent


class MarketDataCache:
    """Merges concurrent requests per key and keeps answers until they can have changed."""

    def __init__(
        self,
        fetch_ohlcv: OhlcvFetcher,
        fetch_ticker: TickerFetcher,
        *,
        clock: Clock = time.time,
        ticker_ttl: float = 1.0,
    ) -> None:
        self._fetch_ohlcv = fetch_ohlcv
        self._fetch_ticker = fetch_ticker
        self._clock = clock
        self._ticker_ttl = ticker_ttl
        self._entries: dict[tuple[str, str, str], _Entry] = {}
        self._inflight: dict[tuple[str, str, str], asyncio.Task[Any]] = {}
        self._inflight_limit: dict[tuple[str, str, str], int] = {}
        self._round: int | None = None  # the newest round id asked for: the current round
        self.requests_per_key: Counter[tuple[str, str, str]] = Counter()

    def md_requests_per_key(self) -> dict[str, int]:
        """Requests sent per key, as `venue:symbol:timeframe` strings (tickers use timeframe "ticker")."""
        return {":".join(key): count for key, count in sorted(self.requests_per_key.items())}

    async def ohlcv(self, venue: str, symbol: str, timeframe: str, limit: int = 100) -> Candles:
        """Closed candles (the last `limit` at most, counting the open one) and the open candle."""
        length = timeframe_ms(timeframe)
        key = (venue, symbol, timeframe)
        while True:
            now = self._clock()
            entry = self._entries.get(key)
            if entry is not None and now < entry.expires and entry.limit >= limit:
                return _trim(entry.value, limit)
            pending = self._inflight.get(key)
            if pending is not None and self._inflight_limit.get(key, 0) >= limit:
                return _trim(await asyncio.shield(pending), limit)
            if pending is not None:
                # A smaller request is in flight: wait for it, then fetch the larger window ourselves.
                await asyncio.shield(pending)
                continue
            break

        async def load() -> Candles:
            rows = await self._fetch_ohlcv(venue, symbol, timeframe, limit)
            now_ms = int(self._clock() * 1000)
            candles = split_candles(venue, symbol, timeframe, rows, now_ms)
            # Valid until the candle open at fetch time closes: then a new closed candle exists.
            expires = ((now_ms // length) + 1) * length / 1000
            self._entries[key] = _Entry(candles, expires, limit)
            return candles

        return _trim(await self._run(key, load, limit), limit)

    async def ticker(self, venue: str, symbol: str, round_id: int | None = None) -> Ticker:
        """The ticker, fetched at most once per round (`round_id`), or per `ticker_ttl` without one.

        An older `round_id` than the current round's counts as the current round (a newer price is fine).
        """
        key = (venue, symbol, "ticker")
        if round_id is not None and (self._round is None or round_id > self._round):
            self._round = round_id
        entry = self._entries.get(key)
        if entry is not None:
            if round_id is not None and entry.round_id == self._round:
                return entry.value
            if round_id is None and self._clock() < entry.expires:
                return entry.value
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)

        sent_in_round = self._round

        async def load() -> Ticker:
            data = await self._fetch_ticker(venue, symbol)
            value = ticker_from_ccxt(venue, symbol, data)
            self._entries[key] = _Entry(value, self._clock() + self._ticker_ttl, round_id=sent_in_round)
            return value

        return await self._run(key, load, 0)

    async def _run(self, key: tuple[str, str, str], load: Callable[[], Awaitable[Any]], limit: int) -> Any:
        """Start `load` as its own task so a cancelled caller never cancels the others' request."""
        task = asyncio.get_running_loop().create_task(load())
        self._inflight[key] = task
        self._inflight_limit[key] = limit
        self.requests_per_key[key] += 1

        def done(finished: asyncio.Task[Any]) -> None:
            if self._inflight.get(key) is finished:
                del self._inflight[key]
                self._inflight_limit.pop(key, None)

        task.add_done_callback(done)
        return await asyncio.shield(task)

    def invalidate(self, venue: str | None = None) -> None:
        """Forget cached answers (all, or one venue's)."""
        for key in [k for k in self._entries if venue is None or k[0] == venue]:
            del self._entries[key]


def _trim(candles: Candles, limit: int) -> Candles:
    keep = max(0, limit - (1 if candles.open is not None else 0))
    if len(candles.closed) <= keep:
        return candles
    closed = candles.closed[len(candles.closed) - keep :] if keep else ()
    return Candles(
        candles.venue, candles.symbol, candles.timeframe, closed, candles.open, candles.fetched_at_ms
    )

"""Market-data cache: merged concurrent requests, expiry at candle close, Decimals, per-key request counts."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from bot.exchanges.market_data import MarketDataCache, split_candles, timeframe_ms

MINUTE = 60_000
HOUR = 3_600_000


class Clock:
    def __init__(self, seconds: float) -> None:
        self.now = seconds

    def __call__(self) -> float:
        return self.now


class Venue:
    """A scripted data source that counts requests and can hold them open."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.ohlcv_calls: list[tuple[str, str, str, int]] = []
        self.ticker_calls: list[tuple[str, str]] = []
        self.gate: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def fetch_ohlcv(self, venue: str, symbol: str, timeframe: str, limit: int) -> list[list[float]]:
        self.ohlcv_calls.append((venue, symbol, timeframe, limit))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        step = timeframe_ms(timeframe)
        now_ms = int(self.clock() * 1000)
        open_start = now_ms // step * step
        starts = [open_start - i * step for i in range(limit)][::-1]
        return [[t, 0.1, 0.3, 0.05, 0.2 + t / 1e15, 1.5] for t in starts]

    async def fetch_ticker(self, venue: str, symbol: str) -> dict[str, float]:
        self.ticker_calls.append((venue, symbol))
        if self.gate is not None:
            await self.gate.wait()
        return {"last": 0.1, "bid": 0.09, "ask": 0.11, "timestamp": int(self.clock() * 1000)}


@pytest.fixture
def clock() -> Clock:
    return Clock(1_700_000_000.0 + 30)  # 30 s into a minute (and some way into the hour)


@pytest.fixture
def venue(clock: Clock) -> Venue:
    return Venue(clock)


@pytest.fixture
def cache(venue: Venue, clock: Clock) -> MarketDataCache:
    return MarketDataCache(venue.fetch_ohlcv, venue.fetch_ticker, clock=clock)


async def test_concurrent_requests_for_one_key_make_one_request(cache: MarketDataCache, venue: Venue):
    venue.gate = asyncio.Event()
    waiters = [asyncio.create_task(cache.ohlcv("binance", "BTC/USDT", "1h", 50)) for _ in range(200)]
    await asyncio.sleep(0)
    venue.gate.set()
    results = await asyncio.gather(*waiters)
    assert len(venue.ohlcv_calls) == 1
    assert all(r is results[0] for r in results)
    assert cache.md_requests_per_key() == {"binance:BTC/USDT:1h": 1}


async def test_distinct_keys_are_requested_once_each(cache: MarketDataCache, venue: Venue):
    keys = [("binance", "BTC/USDT", "1h"), ("binance", "ETH/USDT", "1h"), ("kraken", "BTC/USDT", "1m")]
    await asyncio.gather(*(cache.ohlcv(*key, 20) for key in keys for _ in range(10)))
    assert len(venue.ohlcv_calls) == 3
    assert set(cache.md_requests_per_key().values()) == {1}


async def test_candles_stay_valid_until_the_open_candle_closes(
    cache: MarketDataCache, venue: Venue, clock: Clock
):
    first = await cache.ohlcv("binance", "BTC/USDT", "1m", 10)
    assert first.open is not None
    close_ms = first.open.timestamp_ms + MINUTE
    clock.now = close_ms / 1000 - 0.001  # just before the close: still cached
    assert await cache.ohlcv("binance", "BTC/USDT", "1m", 10) is first
    clock.now = close_ms / 1000  # the candle closed: a new closed candle exists, fetch again
    second = await cache.ohlcv("binance", "BTC/USDT", "1m", 10)
    assert len(venue.ohlcv_calls) == 2
    assert second.closed[-1].timestamp_ms == first.open.timestamp_ms


async def test_closed_candles_exclude_the_one_still_open(cache: MarketDataCache, clock: Clock):
    candles = await cache.ohlcv("binance", "BTC/USDT", "1h", 5)
    now_ms = int(clock() * 1000)
    assert len(candles.closed) == 4
    assert all(c.timestamp_ms + HOUR <= now_ms for c in candles.closed)
    assert candles.open is not None and candles.open.timestamp_ms <= now_ms < candles.open.timestamp_ms + HOUR


async def test_values_are_decimals_converted_through_str(cache: MarketDataCache):
    candles = await cache.ohlcv("binance", "BTC/USDT", "1h", 3)
    first = candles.closed[0]
    assert first.open == Decimal("0.1") and first.low == Decimal("0.05") and first.volume == Decimal("1.5")
    assert all(isinstance(v, Decimal) for v in first[1:])


async def test_a_larger_limit_refetches_and_a_smaller_one_is_served_from_cache(
    cache: MarketDataCache, venue: Venue
):
    await cache.ohlcv("binance", "BTC/USDT", "1h", 10)
    small = await cache.ohlcv("binance", "BTC/USDT", "1h", 4)
    assert len(small.closed) == 3 and small.open is not None
    await cache.ohlcv("binance", "BTC/USDT", "1h", 100)
    assert [call[3] for call in venue.ohlcv_calls] == [10, 100]


async def test_a_failure_reaches_every_waiter_and_is_not_cached(cache: MarketDataCache, venue: Venue):
    venue.gate = asyncio.Event()
    venue.fail = RuntimeError("venue down")
    waiters = [asyncio.create_task(cache.ohlcv("binance", "BTC/USDT", "1h", 5)) for _ in range(5)]
    await asyncio.sleep(0)
    venue.gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    venue.fail = None
    await cache.ohlcv("binance", "BTC/USDT", "1h", 5)
    assert len(venue.ohlcv_calls) == 2


async def test_a_cancelled_caller_does_not_cancel_the_shared_request(cache: MarketDataCache, venue: Venue):
    venue.gate = asyncio.Event()
    first = asyncio.create_task(cache.ohlcv("binance", "BTC/USDT", "1h", 5))
    second = asyncio.create_task(cache.ohlcv("binance", "BTC/USDT", "1h", 5))
    await asyncio.sleep(0)
    first.cancel()
    venue.gate.set()
    assert (await second).closed
    assert len(venue.ohlcv_calls) == 1


async def test_ticker_is_fetched_once_per_round(cache: MarketDataCache, venue: Venue):
    venue.gate = asyncio.Event()
    round_one = [asyncio.create_task(cache.ticker("binance", "BTC/USDT", round_id=1)) for _ in range(50)]
    await asyncio.sleep(0)
    venue.gate.set()
    tickers = await asyncio.gather(*round_one)
    assert tickers[0].last == Decimal("0.1") and tickers[0].bid == Decimal("0.09")
    await cache.ticker("binance", "BTC/USDT", round_id=1)
    assert len(venue.ticker_calls) == 1
    await cache.ticker("binance", "BTC/USDT", round_id=2)
    assert len(venue.ticker_calls) == 2
    assert cache.md_requests_per_key() == {"binance:BTC/USDT:ticker": 2}


async def test_ticker_without_round_lives_one_ttl(cache: MarketDataCache, venue: Venue, clock: Clock):
    await cache.ticker("kraken", "BTC/USDT")
    clock.now += 0.5
    await cache.ticker("kraken", "BTC/USDT")
    assert len(venue.ticker_calls) == 1
    clock.now += 0.6
    await cache.ticker("kraken", "BTC/USDT")
    assert len(venue.ticker_calls) == 2


def test_split_candles_marks_the_last_row_open_only_while_it_is():
    rows = [[0, 1, 1, 1, 1, 1], [MINUTE, 2, 2, 2, 2, 2]]
    assert split_candles("binance", "X/Y", "1m", rows, MINUTE + 1).open.timestamp_ms == MINUTE
    done = split_candles("binance", "X/Y", "1m", rows, 2 * MINUTE)
    assert done.open is None and len(done.closed) == 2


@pytest.mark.parametrize(("timeframe", "ms"), [("1m", MINUTE), ("4h", 4 * HOUR), ("1d", 24 * HOUR)])
def test_timeframe_lengths(timeframe: str, ms: int):
    assert timeframe_ms(timeframe) == ms


def test_unknown_timeframe_is_refused():
    with pytest.raises(ValueError):
        timeframe_ms("1y")


async def test_a_run_of_an_earlier_round_reaching_the_cache_late_reuses_the_newer_ticker(
    cache: MarketDataCache, venue: Venue
):
    # Runs take their round id when they start and meet the cache after some awaits: with thousands of runs
    # straddling a second, runs of round 1 still arrive once round 2 has fetched. Each used to fetch again
    # and re-tag the entry, so the next round-2 run fetched again too (1.5-2.2 requests per key per round).
    await cache.ticker("binance", "BTC/USDT", round_id=1)
    await cache.ticker("binance", "BTC/USDT", round_id=2)
    for late in (1, 2, 1, 2):
        await cache.ticker("binance", "BTC/USDT", round_id=late)
    assert len(venue.ticker_calls) == 2
    await cache.ticker("binance", "BTC/USDT", round_id=3)
    assert len(venue.ticker_calls) == 3


async def test_a_ticker_fetched_without_round_serves_the_round_it_was_fetched_in(
    cache: MarketDataCache, venue: Venue, clock: Clock
):
    # A round-less read (a fee valued in BNB, /status) during a round must not make the round's remaining
    # runs fetch again: what it fetched is newer than the round's start.
    await cache.ticker("binance", "BTC/USDT", round_id=1)
    clock.now += 2  # past the round-less TTL
    await cache.ticker("binance", "BTC/USDT")
    assert len(venue.ticker_calls) == 2
    await cache.ticker("binance", "BTC/USDT", round_id=1)
    assert len(venue.ticker_calls) == 2
    await cache.ticker("binance", "BTC/USDT", round_id=2)
    assert len(venue.ticker_calls) == 3

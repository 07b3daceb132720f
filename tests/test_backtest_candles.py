"""Backtest candles: paged from the fake venues through the real gateway (real ccxt), kept on disk, budgeted.

Binance serves at most 1,000 klines per request from a start time, so two days of minutes take three pages;
Kraken serves only its latest 720 OHLC rows whatever older `since` is asked, so a longer range comes back
shorter (and /backtest says so). A second read of the same range comes from the disk.
"""

from __future__ import annotations

import time

from bot.backtest.candles import CandleStore
from bot.sandbox.series import on_tick
from tests.engine_world import open_world

MINUTE = 60_000


def feed_minutes(book, symbol: str) -> None:
    """Two recorded days of minutes, the last one open now (the book rebases times to its clock)."""
    rows = on_tick("BTC", "USDT", "1m", book.market(symbol).tick_size)
    book.load_candles(symbol, "1m", rows, start=len(rows) - 1)


def klines(book, path: str) -> int:
    return sum(1 for r in book.requests if r.path.endswith(path))


async def test_binance_range_is_read_in_pages_of_1000_then_from_disk(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    feed_minutes(book, "BTC/USDT")
    world = await open_world(tmp_path / "world", fake_exchanges.exchange_urls, start=False)
    try:
        store = CandleStore(world.gateway, tmp_path / "candles")
        now = int(time.time() * 1000)
        since = now - 2 * 1440 * MINUTE
        await world.gateway.load_markets("binance")
        weight_before = world.gateway.pool.budgets.used_per_minute("binance")
        before = klines(book, "/klines")
        candles = await store.closed("binance", "BTC/USDT", "1m", since, now)
        pages = klines(book, "/klines") - before
        venue = [c for c in book.candles("BTC/USDT", "1m") if since <= c.timestamp_ms <= now - MINUTE]
        assert len(candles) == len(venue) >= 2870
        assert [(int(c.ts.timestamp() * 1000), c.close) for c in candles] == [(c.timestamp_ms, c.close) for c in venue]
        assert pages == 3  # 1,000 + 1,000 + the rest
        assert world.gateway.pool.budgets.used_per_minute("binance") > weight_before  # counted like any public call
        assert list((tmp_path / "candles" / "binance").glob("BTC_USDT-1m.json"))

        again = await CandleStore(world.gateway, tmp_path / "candles").closed("binance", "BTC/USDT", "1m", since, now)
        assert again == candles
        assert klines(book, "/klines") - before - pages <= 1  # from disk (at most the minute that closed since)
    finally:
        await world.close()


async def test_kraken_gives_only_its_latest_720_candles(fake_exchanges, tmp_path):
    book = fake_exchanges.books["kraken"]
    feed_minutes(book, "BTC/USD")
    world = await open_world(tmp_path / "world", fake_exchanges.exchange_urls, start=False)
    try:
        store = CandleStore(world.gateway, tmp_path / "candles")
        now = int(time.time() * 1000)
        since = now - 2 * 1440 * MINUTE
        candles = await store.closed("kraken", "BTC/USD", "1m", since, now)
        assert 718 <= len(candles) <= 720
        assert int(candles[0].ts.timestamp() * 1000) > since + 1400 * MINUTE  # the older range is not served
        assert klines(book, "OHLC") == 1
    finally:
        await world.close()

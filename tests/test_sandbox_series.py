"""The fake venues' market (`bot.sandbox.series`): one set of recorded series behind every venue, read through ccxt.

What a tester of the demo saw and these pin down: Binance had only daily candles (an hourly trend waited
forever), ETH was a scaled copy of BTC (a rebalance never drifted), Kraken's BTC was another recording
(≈105,900 against Binance's ≈7,300) and Kraken's ETH/USD had no price at all.
"""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal

import pytest

from bot.exchanges.venues import adapters
from bot.sandbox import series
from bot.sandbox.demo_feed import PriceFeed
from bot.sandbox.exchanges import make_books

HOUR = 3_600_000


async def test_every_market_offered_on_a_button_has_a_price_on_its_venue(fake_exchanges, exchange_client):
    # The guided /allocate's buttons, by the venue whose prices they trade on (a Paper venue's are its source's).
    suggested = {venue.market_venue: venue for venue in adapters() if venue.default_markets}
    assert set(suggested) <= set(fake_exchanges.books), "every venue with buttons runs in the fake"
    for venue, table in suggested.items():
        client = exchange_client(venue)
        for symbol in map(table.market_symbol, table.default_markets):
            ticker = await client.fetch_ticker(symbol)
            assert ticker["last"] and ticker["last"] > 0, f"{venue} {symbol} has a price"
            candles = await client.fetch_ohlcv(symbol, "1h", limit=30)
            assert len(candles) == 30, f"{venue} {symbol} has hourly candles"


async def test_btc_and_eth_cost_the_same_on_every_venue_as_the_market_replays(fake_exchanges, exchange_client):
    clients = {venue: exchange_client(venue) for venue in ("binance", "binanceusdm", "kraken")}
    feed = PriceFeed(fake_exchanges.books)
    for _ in range(3):
        for base in ("BTC", "ETH"):
            prices = {
                "binance": (await clients["binance"].fetch_ticker(f"{base}/USDT"))["last"],
                "binanceusdm": (await clients["binanceusdm"].fetch_ticker(f"{base}/USDT:USDT"))["last"],
                "kraken USDT": (await clients["kraken"].fetch_ticker(f"{base}/USDT"))["last"],
                "kraken USD": (await clients["kraken"].fetch_ticker(f"{base}/USD"))["last"],
            }
            values = [Decimal(str(v)) for v in prices.values()]
            assert max(values) - min(values) <= Decimal("0.05"), f"{base}: {prices} differ beyond a tick's rounding"
        feed.step()


def test_eth_moves_on_its_own_so_a_rebalance_drifts():
    """ETH/BTC over the replay: a scaled copy of BTC kept it constant (the old 0.07); the recording does not."""
    btc, eth = series.recorded("BTC", "1m"), series.recorded("ETH", "1m")
    ratios = [e.close / b.close for b, e in zip(btc, eth, strict=True)]
    assert max(ratios) / min(ratios) > Decimal("1.02"), "ETH gained or lost over 2% against BTC in two days"
    assert [b.timestamp_ms for b in btc] == [e.timestamp_ms for e in eth], "the same recorded minutes"


async def test_hourly_candles_are_recorded_history_then_the_replayed_minutes(fake_exchanges, exchange_client):
    client = exchange_client("binance")
    book = fake_exchanges.books["binance"]
    hourly = await client.fetch_ohlcv("BTC/USDT", "1h", limit=200)
    assert len(hourly) == 200 and all(b[0] - a[0] == HOUR for a, b in itertools.pairwise(hourly))
    recorded = series.recorded("BTC", "1h")
    # the 12 closed hours before the open one are replayed minutes; before them, the recorded hours
    closed_history = [c[1:5] for c in hourly[-13 - 20 : -13]]
    assert closed_history == [[float(v) for v in (r.open, r.high, r.low, r.close)] for r in recorded[-20:]]

    minutes = series.recorded("BTC", "1m")
    start = series.FEED_START
    book.advance("BTC/USDT", steps=60)  # one hour of minutes
    after = await client.fetch_ohlcv("BTC/USDT", "1h", limit=3)
    hour = minutes[start : start + 60]  # the hour 12:00-12:59, now closed
    assert after[-2][1:5] == [
        float(hour[0].open),
        float(max(m.high for m in hour)),
        float(min(m.low for m in hour)),
        float(hour[-1].close),
    ]
    assert after[-1][4] == float(minutes[start + 60].close) == float(book.price("BTC/USDT"))


async def test_kraken_eth_btc_is_the_cross_of_the_eth_and_btc_series(fake_exchanges, exchange_client):
    client = exchange_client("kraken")
    usd = {s: Decimal(str((await client.fetch_ticker(s))["last"])) for s in ("ETH/USD", "BTC/USD")}
    cross = Decimal(str((await client.fetch_ticker("ETH/BTC"))["last"]))
    eth, btc = series.recorded("ETH", "1m")[series.FEED_START], series.recorded("BTC", "1m")[series.FEED_START]
    assert cross == (eth.close / btc.close).quantize(Decimal("0.00001"))
    assert abs(cross - usd["ETH/USD"] / usd["BTC/USD"]) < Decimal("0.00002")


@pytest.mark.parametrize("venue", ["binance", "kraken"])
async def test_a_scripted_price_still_wins_over_the_replay(fake_exchanges, exchange_client, venue):
    """Tests script prices with `set_price`; the recorded series never overrides it until the next step."""
    symbol = "BTC/USDT"
    fake_exchanges.books[venue].set_price(symbol, "12345")
    await asyncio.sleep(0)
    assert (await exchange_client(venue).fetch_ticker(symbol))["last"] == 12345


def test_every_market_a_fake_venue_lists_has_a_price_but_binances_bnb():
    """A typed market (SOL/USD, ETH/BTC…) prices too; BNB/USDT (fees in BNB) is the one scripted by tests."""
    books = make_books()
    unpriced = {venue: [s for s in book.markets if book.price(s) is None] for venue, book in books.items()}
    assert unpriced == {"binance": ["BNB/USDT"], "binanceusdm": [], "kraken": []}

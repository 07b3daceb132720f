"""The backtester and the live engine make the same fills over the same candles.

Live: the real engine (`tests/engine_world.py`: real ccxt, real database) trades on the fake Binance while the
test walks its price through a recorded hourly series — each candle's high, low, then close, the engine's clock
at the candle's close — polling fills and running the strategy at every close. Replay: `bot.backtest.replay`
over the same candles with the market's terms as the bot reads them. The fills (side, amount, price, fee) and the
final value must be equal, fee for fee: there is one decision core, so there can be no second story.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bot.backtest.replay import replay, terms_for
from bot.exchanges.venues import adapter
from bot.sandbox.series import recorded
from bot.services.backtests import fee_step
from bot.strategies import STRATEGIES
from bot.strategies.base import Candle
from tests.engine_world import open_world

USER = 21
HOUR = timedelta(hours=1)
CANDLES = 240  # ten days of recorded BTC/USDT hours


class CandleClock:
    """The engine's clock, set by the test to each candle's close."""

    def __init__(self) -> None:
        self.now = datetime(2023, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def series() -> list[Candle]:
    return [
        Candle(datetime.fromtimestamp(c.timestamp_ms / 1000, UTC), c.open, c.high, c.low, c.close, c.volume)
        for c in recorded("BTC", "1h")[:CANDLES]
    ]


def grid_params(candles: list[Candle]) -> dict[str, str]:
    low = min(c.low for c in candles)
    high = max(c.high for c in candles)
    return {"low": str(int(low) + 50), "high": str(int(high) - 50), "levels": "8"}


async def live_fills(fake_exchanges, tmp_path, kind: str, budget: str, params: dict[str, str], candles: list[Candle]):
    book = fake_exchanges.books["binance"]
    key, secret = "b" * 64, "s" * 64
    book.add_key(key, secret, balances={"USDT": "10000"})
    clock = CandleClock()
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, clock=clock)
    runner = world.engine.runner
    round_id = int(time.time()) + 1000

    def next_round() -> None:
        nonlocal round_id
        round_id += 1
        runner._round = round_id  # a fresh ticker for every step: the cache keeps one per round

    try:
        await world.connect(USER, "binance", key, secret)
        first = candles[0]
        book.set_price("BTC/USDT", first.close)
        clock.now = first.ts + HOUR
        next_round()
        strategy_id = await world.allocate(USER, "binance", kind, budget, "BTC/USDT", **params)
        await world.engine.settle()
        for candle in candles[1:]:
            for price in (candle.high, candle.low, candle.close):
                book.set_price("BTC/USDT", price)
            clock.now = candle.ts + HOUR
            next_round()
            await world.engine.poll_once()
            await world.engine.settle()
            await world.engine.run_strategy(strategy_id)
            await world.engine.settle()
        strategy = await world.store.strategies.get(strategy_id)
        trades = book.trades(key, "BTC/USDT")
        return [(t.side, t.amount, t.price, t.fee) for t in trades], strategy
    finally:
        await world.close()


async def replay_fills(fake_exchanges, tmp_path, kind: str, budget: str, params: dict[str, str], candles, start=0):
    world = await open_world(tmp_path / "terms", fake_exchanges.exchange_urls, start=False)
    try:
        info = await world.gateway.market("binance", "BTC/USDT")
    finally:
        await world.close()
    strategy = STRATEGIES[kind]
    result = replay(strategy, strategy.parse_params(params), Decimal(budget), "BTC/USDT",
                    terms_for(info, adapter("binance").entry_taker_fee, fee_step("binance", "USDT")), candles, HOUR,
                    start=start)
    return [(f.side, f.amount, f.price, f.fee) for f in result.fills], result


@pytest.mark.parametrize(
    ("kind", "budget", "params"),
    [
        ("dca", "500", {"every": "1d", "amount": "60"}),
        ("grid", "1000", None),
    ],
)
async def test_replay_makes_the_live_engines_fills(fake_exchanges, tmp_path, kind, budget, params):
    candles = series()
    params = params or grid_params(candles)
    live, strategy = await live_fills(fake_exchanges, tmp_path / "live", kind, budget, params, candles)
    replayed, result = await replay_fills(fake_exchanges, tmp_path, kind, budget, params, candles)
    assert len(live) >= (9 if kind == "dca" else 6), live  # the series makes the strategy trade
    assert replayed == live
    # The same ledger: what the engine booked is what the replay booked, and so is the value at the last close.
    assert strategy.spent - strategy.received == result.net_spent
    held = sum((a if s == "buy" else -a for s, a, _, _ in live), Decimal(0))
    last = candles[-1].close
    assert result.values[-1] == strategy.budget - (strategy.spent - strategy.received) + held * last


async def test_trend_replay_sees_the_candles_the_live_engine_fetches(fake_exchanges, tmp_path):
    """Trend decides on candles: the venue's klines live (its feed walked candle by candle, `advance`), the
    replay's window of the same candles: the same crossings, the same market orders at the same closes."""
    candles = series()
    warmup = 30
    params = {"timeframe": "1h", "fast": "5", "slow": "12"}
    book = fake_exchanges.books["binance"]
    rows = recorded("BTC", "1h")[:CANDLES]
    book.load_candles("BTC/USDT", "1h", rows, start=warmup, rebase=False)
    key, secret = "t" * 64, "u" * 64
    book.add_key(key, secret, balances={"USDT": "10000"})
    clock = CandleClock()
    world = await open_world(tmp_path / "live", fake_exchanges.exchange_urls, clock=clock)
    round_id = int(time.time()) + 1000
    try:
        await world.connect(USER, "binance", key, secret)

        def at_close(index: int) -> None:
            nonlocal round_id
            clock.now = candles[index].ts + HOUR
            round_id += 1
            world.engine.runner._round = round_id  # a fresh ticker for every step
            world.gateway.market_data._entries.clear()  # and fresh klines (the cache expires on the real clock)

        at_close(warmup)
        strategy_id = await world.allocate(USER, "binance", "trend", "1000", "BTC/USDT", **params)
        await world.engine.settle()
        for index in range(warmup + 1, CANDLES):
            assert book.advance("BTC/USDT")
            at_close(index)
            await world.engine.poll_once()
            await world.engine.settle()
            await world.engine.run_strategy(strategy_id)
            await world.engine.settle()
        strategy = await world.store.strategies.get(strategy_id)
        live = [(t.side, t.amount, t.price, t.fee) for t in book.trades(key, "BTC/USDT")]
    finally:
        await world.close()
    replayed, result = await replay_fills(fake_exchanges, tmp_path, "trend", "1000", params, candles, start=warmup)
    assert len(live) >= 6, live  # the series crosses its averages several times
    assert replayed == live
    assert strategy.spent - strategy.received == result.net_spent

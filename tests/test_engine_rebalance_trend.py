"""Rebalance on the fake Binance Spot and Trend on the fake Binance Futures, end to end through the engine."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bot.services.errors import UserError
from tests.engine_world import ShiftedClock, open_world

USER = 31


def weights(book, key: str, prices: dict[str, Decimal], strategy_fills) -> dict[str, Decimal]:
    held: dict[str, Decimal] = {}
    for item in strategy_fills:
        asset = item.symbol.split("/")[0]
        sign = 1 if item.fill.side == "buy" else -1
        held[asset] = held.get(asset, Decimal(0)) + sign * item.fill.amount
    values = {asset: amount * prices[asset] for asset, amount in held.items()}
    total = sum(values.values())
    return {asset: value * 100 / total for asset, value in values.items()}


async def test_rebalance_buys_the_weights_then_trades_back_within_band_after_a_30_percent_rise(
    fake_exchanges, tmp_path
):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    book.set_price("ETH/USDT", "2500")
    book.add_key("rebal", "secret", balances={"USDT": "1000"})
    clock = ShiftedClock()
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, clock=clock)
    try:
        await world.connect(USER, "binance", "rebal", "secret")
        strategy_id = await world.allocate(
            USER, "binance", "rebalance", "500", "USDT", weights="BTC:50,ETH:50", band="5", every="1h"
        )
        await world.engine.settle()
        prices = {"BTC": Decimal(50000), "ETH": Decimal(2500)}
        initial = weights(book, "rebal", prices, await world.store.orders.fills_for_strategy(strategy_id))
        assert all(abs(w - 50) <= 5 for w in initial.values()), initial
        assert [o.side for o in book.all_orders("rebal")] == ["buy", "buy"]

        book.set_price("BTC/USDT", "65000")  # +30 %
        world.gateway.market_data.invalidate()
        clock.offset = timedelta(hours=1, seconds=1)
        await world.engine.run_strategy(strategy_id)
        await world.engine.settle()
        prices["BTC"] = Decimal(65000)
        after = weights(book, "rebal", prices, await world.store.orders.fills_for_strategy(strategy_id))
        assert all(abs(w - 50) <= 5 for w in after.values()), after
        sides = [(o.symbol, o.side) for o in book.all_orders("rebal")]
        assert sides[2:] == [("BTC/USDT", "sell"), ("ETH/USDT", "buy")]  # sells first, then buys
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.spent - strategy.received <= strategy.budget
    finally:
        await world.close()


async def _trend_world(fake_exchanges, tmp_path, key: str, *, dual_side: bool = False):
    book = fake_exchanges.books["binanceusdm"]
    book.add_key(key, "secret", balances={"USDT": "1000"}, dual_side=dual_side)
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    await world.connect(USER, "binanceusdm", key, "secret")
    return book, world


def rising_then_falling(book, symbol: str) -> None:
    """Script daily candles: 30 days up, so fast > slow, ending at the last closed candle before now."""
    day = 86_400_000
    now = int(datetime.now(UTC).timestamp() * 1000) // day * day
    rows = []
    for i in range(30):
        close = Decimal(40000 + i * 500)
        rows.append((Decimal(now - (30 - i) * day), close, close + 100, close - 100, close, Decimal(10)))
    rows.append((Decimal(now), Decimal(55000), Decimal(55100), Decimal(54900), Decimal(55000), Decimal(1)))
    book.load_candles(symbol, "1d", rows)


async def test_trend_on_futures_sets_leverage_1_opens_long_then_flips_short_on_a_cross(fake_exchanges, tmp_path):
    book, world = await _trend_world(fake_exchanges, tmp_path, "trend-key")
    try:
        symbol = "BTC/USDT:USDT"
        rising_then_falling(book, symbol)
        book.set_price(symbol, "55000")
        strategy_id = await world.allocate(
            USER, "binanceusdm", "trend", "200", "BTC/USDT", timeframe="1d", fast="3", slow="5", entry="now"
        )
        await world.engine.settle()
        account = book.keys["trend-key"]
        assert book.leverage_of(account, symbol) == 1
        leverage_at = next(i for i, r in enumerate(book.requests) if "leverage" in r.path)
        order_at = next(i for i, r in enumerate(book.requests) if r.path.endswith("/order") and r.method == "POST")
        assert leverage_at < order_at
        [opened] = book.all_orders("trend-key")
        assert opened.side == "buy"

        # The averages cross down on closed candles: close the long, then open a short.
        day = 86_400_000
        now = int(datetime.now(UTC).timestamp() * 1000) // day * day
        rows = [(Decimal(now - (30 - i) * day), *(Decimal(60000 - i * 500),) * 4, Decimal(10)) for i in range(30)]
        rows.append((Decimal(now), *(Decimal(45000),) * 4, Decimal(1)))
        book.load_candles(symbol, "1d", rows)
        book.set_price(symbol, "45000")
        world.gateway.market_data.invalidate()
        world.engine.ctx.clock = lambda: datetime.now(UTC) + timedelta(days=1)
        for _ in range(5):
            await world.engine.run_strategy(strategy_id)
            await world.engine.settle()
            await asyncio.sleep(0)
        sides = [(o.side, o.reduce_only) for o in book.all_orders("trend-key")]
        assert sides == [("buy", False), ("sell", True), ("sell", False)]
        positions = [p for p in book.positions("trend-key") if p.symbol == symbol]
        assert positions[0].amount < 0  # short
    finally:
        await world.close()


async def test_trend_refuses_a_futures_account_in_hedge_mode(fake_exchanges, tmp_path):
    book, world = await _trend_world(fake_exchanges, tmp_path, "hedge-key", dual_side=True)
    try:
        book.set_price("BTC/USDT:USDT", "55000")
        with pytest.raises(UserError) as refused:
            await world.service.allocate(USER, "binanceusdm", "trend", "200", "BTC/USDT", {"timeframe": "1d"})
        assert "hedge" in refused.value.message and "one-way" in refused.value.message
        assert book.all_orders("hedge-key") == []
    finally:
        await world.close()


async def test_a_failed_leverage_call_leaves_the_intent_to_be_sent_later_after_leverage_1(fake_exchanges, tmp_path):
    book, world = await _trend_world(fake_exchanges, tmp_path, "lev-key")
    try:
        symbol = "BTC/USDT:USDT"
        rising_then_falling(book, symbol)
        book.set_price(symbol, "55000")
        book.inject("server_error", count=50, path="/fapi/v1/leverage")
        await world.allocate(USER, "binanceusdm", "trend", "200", "BTC/USDT", timeframe="1d", fast="3", slow="5",
                             entry="now")
        await world.engine.settle()
        assert book.all_orders("lev-key") == []  # never sent without leverage 1
        [intent] = await world.store.orders.in_states(("intent",))
        book.faults.clear()
        world.engine.desk.intent_stale = timedelta(0)  # the resolver's turn comes at once
        await world.engine.poll_once()
        await world.engine.settle()
        [opened] = book.all_orders("lev-key")
        assert opened.client_order_id == intent.client_order_id
        assert book.leverage_of(book.keys["lev-key"], symbol) == 1
    finally:
        await world.close()


def script_daily(book, symbol: str, start: int, step: int, last: int) -> None:
    """30 closed daily candles moving by `step` from `start`, then today's open candle at `last`."""
    day = 86_400_000
    now = int(datetime.now(UTC).timestamp() * 1000) // day * day
    rows = [(Decimal(now - (30 - i) * day), *(Decimal(start + i * step),) * 4, Decimal(10)) for i in range(30)]
    rows.append((Decimal(now), *(Decimal(last),) * 4, Decimal(1)))
    book.load_candles(symbol, "1d", rows)


async def test_trend_on_futures_closes_a_short_that_holds_its_whole_budget_and_books_the_venues_pnl(
    fake_exchanges, tmp_path
):
    book, world = await _trend_world(fake_exchanges, tmp_path, "short-key")
    try:
        symbol = "BTC/USDT:USDT"
        wallet = book.keys["short-key"].total("USDT")
        script_daily(book, symbol, 60000, -500, 45000)  # falling: open a short
        book.set_price(symbol, "45000")
        strategy_id = await world.allocate(
            USER, "binanceusdm", "trend", "200", "BTC/USDT", timeframe="1d", fast="3", slow="5", entry="now"
        )
        await world.engine.settle()
        [short] = [p for p in book.positions("short-key") if p.symbol == symbol]
        strategy = await world.store.strategies.get(strategy_id)
        realised = book.keys["short-key"].total("USDT") - wallet  # the opening fee
        # The ledger holds the short's margin at 1x: its sale is not money received.
        assert strategy.spent - strategy.received == abs(short.amount) * short.entry_price - realised
        assert abs(short.amount) * short.entry_price > 150  # most of the budget is in the short

        script_daily(book, symbol, 40000, 500, 50000)  # rising: close the short at a loss, go long
        book.set_price(symbol, "50000")
        world.gateway.market_data.invalidate()
        world.engine.ctx.clock = lambda: datetime.now(UTC) + timedelta(days=1)
        for _ in range(5):
            await world.engine.run_strategy(strategy_id)
            await world.engine.settle()
            await asyncio.sleep(0)
        sides = [(o.side, o.reduce_only, o.amount) for o in book.all_orders("short-key")]
        assert [s[:2] for s in sides] == [("sell", False), ("buy", True), ("buy", False)]
        assert sides[1][2] == sides[0][2], "the whole short was bought back"
        [long] = [p for p in book.positions("short-key") if p.symbol == symbol]
        realised = book.keys["short-key"].total("USDT") - wallet
        assert long.amount > 0 and realised < 0
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.spent - strategy.received == long.amount * long.entry_price - realised
        assert strategy.spent - strategy.received <= strategy.budget
    finally:
        await world.close()


async def test_a_futures_ledger_booked_the_old_way_is_rebooked_from_the_fills_at_start_up(fake_exchanges, tmp_path):
    book, world = await _trend_world(fake_exchanges, tmp_path, "old-key")
    symbol = "BTC/USDT:USDT"
    try:
        script_daily(book, symbol, 60000, -500, 45000)  # falling: open a short
        book.set_price(symbol, "45000")
        strategy_id = await world.allocate(
            USER, "binanceusdm", "trend", "200", "BTC/USDT", timeframe="1d", fast="3", slow="5", entry="now"
        )
        await world.engine.settle()
        [sale] = book.trades("old-key", symbol)
        booked = await world.store.strategies.get(strategy_id)
        # Older versions booked the short's sale as money received: the budget looked unused (and more).
        async with world.store.db.transaction() as tx:
            await world.store.strategies.rebook_ledger(
                tx, strategy_id, spent=Decimal(0), received=sale.cost - sale.fee
            )
    finally:
        await world.close()

    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        rebooked = await world.store.strategies.get(strategy_id)
        assert (rebooked.spent, rebooked.received) == (booked.spent, booked.received)
        assert rebooked.spent - rebooked.received == sale.cost + sale.fee  # the short's margin and its fee
    finally:
        await world.close()

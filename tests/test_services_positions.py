"""`bot.services.positions`: an account's open futures positions as the venue shows them (size, entry, mark and
unrealised P&L equal to its positionRisk), through the real engine and real ccxt against the fake Binance USD-M."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bot.services.errors import UserError
from bot.services.positions import account_positions
from tests.engine_world import open_world

USER = 43
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"


async def test_account_positions_are_the_venues_at_its_mark_and_leave_out_stopped_strategies(
    fake_exchanges, tmp_path, exchange_client
):
    book = fake_exchanges.books["binanceusdm"]
    book.add_key("positions-usdm", "secret", balances={"USDT": "1000"})
    book.set_price(BTC, "50000")
    book.set_price(ETH, "3000")
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        account_id = await world.connect(USER, "binanceusdm", "positions-usdm", "secret")
        btc = await world.allocate(USER, "binanceusdm", "dca", "200", "BTC/USDT", every="1d", amount="60")
        eth = await world.allocate(USER, "binanceusdm", "dca", "100", "ETH/USDT", every="1d", amount="30")
        await world.engine.settle()
        await world.service.stop(USER, eth, sell=False)  # stopped, its long kept on the venue: not Strata's now
        book.set_price(BTC, "49000")
        book.set_mark(BTC, "48950.5")

        account = await world.store.accounts.get(account_id)
        [view] = await account_positions(world.store, world.gateway, account)
        [risk] = [p["info"] for p in await exchange_client("binanceusdm", "positions-usdm", "secret").fetch_positions()
                  if p["symbol"] == BTC]
        assert (view.strategy_id, view.symbol, view.side, view.leverage) == (btc, BTC, "long", 1)
        assert view.size == Decimal(risk["positionAmt"]) and view.entry == Decimal(risk["entryPrice"])
        assert view.mark == Decimal(risk["markPrice"]) == Decimal("48950.5")
        assert view.unrealised == Decimal(risk["unRealizedProfit"]) < 0
        assert view.notional == Decimal(risk["notional"])
        assert any(p.symbol == ETH and p.amount > 0 for p in book.positions("positions-usdm"))
    finally:
        await world.close()


async def test_a_finished_futures_strategy_still_holding_its_position_keeps_its_market(fake_exchanges, tmp_path):
    """A DCA that used its budget has finished but still holds its long: a trend on that market would net it."""
    book = fake_exchanges.books["binanceusdm"]
    book.add_key("finished-usdm", "secret", balances={"USDT": "1000"})
    book.set_price(BTC, "50000")
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(USER, "binanceusdm", "finished-usdm", "secret")
        dca = await world.allocate(USER, "binanceusdm", "dca", "60", "BTC/USDT", every="1d", amount="60")
        await world.engine.settle()
        await world.engine.run_strategy(dca)
        assert (await world.store.strategies.get(dca)).status == "finished"
        assert [p.amount > 0 for p in book.positions("finished-usdm") if p.symbol == BTC] == [True]
        with pytest.raises(UserError, match=f"/stop {dca}"):
            await world.allocate(USER, "binanceusdm", "trend", "200", "BTC/USDT", timeframe="1d", fast="3", slow="5")
    finally:
        await world.close()

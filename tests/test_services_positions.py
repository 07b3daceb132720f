"""`bot.services.positions` and the engine: a finished futures strategy that still holds its position keeps its
market (through the real engine and real ccxt against the fake Binance USD-M)."""

from __future__ import annotations

import pytest

from bot.services.errors import UserError
from tests.engine_world import open_world

USER = 43
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"


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

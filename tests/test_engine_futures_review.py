"""Futures edge cases found reviewing the futures P&L change, end to end through the real engine and real ccxt
against the fake Binance USD-M: a grid's sells on futures, and closing a position worth less than the market's
minimum notional (the venue accepts reduce-only orders below it)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bot.services.errors import UserError
from handlers.render import stop_text
from tests.engine_world import open_world
from tests.test_engine_dca import wait_for

USER = 41
SYMBOL = "BTC/USDT:USDT"


async def _futures_world(fake_exchanges, tmp_path, key: str, usdt: str = "1000"):
    book = fake_exchanges.books["binanceusdm"]
    book.add_key(key, "secret", balances={"USDT": usdt})
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    await world.connect(USER, "binanceusdm", key, "secret")
    return book, world


def _position(book, key: str, symbol: str = SYMBOL):
    return next(p for p in book.positions(key) if p.symbol == symbol)


async def test_a_futures_grid_sells_what_it_bought_reduce_only_and_its_pnl_is_the_wallets(fake_exchanges, tmp_path):
    book, world = await _futures_world(fake_exchanges, tmp_path, "grid-usdm")
    try:
        book.set_price(SYMBOL, "52000")
        wallet = book.keys["grid-usdm"].total("USDT")
        strategy_id = await world.allocate(
            USER, "binanceusdm", "grid", "300", "BTC/USDT", low="45000", high="55000", levels="3"
        )
        await world.engine.settle()
        assert sorted((o.side, o.price) for o in book.open_orders("grid-usdm")) == [
            ("buy", Decimal("45000")), ("buy", Decimal("50000"))
        ]

        book.set_price(SYMBOL, "49990")  # the 50000 buy fills: a long
        await world.engine.poll_once()
        await world.engine.settle()

        async def sell_armed() -> bool:
            await world.engine.run_strategy(strategy_id)
            return any(o.side == "sell" for o in book.open_orders("grid-usdm"))

        await wait_for(sell_armed)
        [sell] = [o for o in book.open_orders("grid-usdm") if o.side == "sell"]
        assert (sell.price, sell.amount, sell.reduce_only) == (Decimal("55000"), _position(book, "grid-usdm").amount,
                                                             True)

        book.set_price(SYMBOL, "55000")  # the sell fills: flat again, one round trip
        await world.engine.poll_once()
        await world.engine.settle()
        assert _position(book, "grid-usdm").amount == 0
        strategy = await world.store.strategies.get(strategy_id)
        status = await world.service.status(USER)
        [mine] = [s for s in status if s.id == strategy_id]
        realised = book.keys["grid-usdm"].total("USDT") - wallet
        assert realised > 0
        assert mine.realised_pnl == realised and mine.holdings == {}
        assert strategy.spent - strategy.received == -realised  # flat: nothing in a position, the profit back
    finally:
        await world.close()


async def test_a_futures_grid_opens_its_start_long_at_market_and_sells_it_reduce_only_above_the_price(
    fake_exchanges, tmp_path
):
    """At 49,000 a 45,000–55,000 grid buys at 45,000 and holds the 50,000 level's coins, bought at start: on
    futures that start purchase opens a long (not reduce-only) and its sell at 55,000 is reduce-only."""
    book, world = await _futures_world(fake_exchanges, tmp_path, "start-usdm")
    try:
        book.set_price(SYMBOL, "49000")
        await world.allocate(USER, "binanceusdm", "grid", "300", "BTC/USDT", low="45000", high="55000", levels="3")
        await world.engine.settle()

        async def both_resting() -> bool:
            return len(book.open_orders("start-usdm")) == 2

        await wait_for(both_resting)
        [start] = [o for o in book.all_orders("start-usdm") if o.type == "market"]
        assert (start.side, start.reduce_only, start.status) == ("buy", False, "closed")
        resting = sorted((o.side, o.price, o.reduce_only) for o in book.open_orders("start-usdm"))
        assert resting == [("buy", Decimal("45000"), False), ("sell", Decimal("55000"), True)]
        [sell] = [o for o in book.open_orders("start-usdm") if o.side == "sell"]
        assert sell.amount == _position(book, "start-usdm").amount == start.amount
    finally:
        await world.close()


async def test_stop_closes_a_futures_position_worth_less_than_the_minimum_notional(fake_exchanges, tmp_path):
    """Binance USD-M: "Order's notional must be no smaller than 10 (unless you choose reduce only)"."""
    book, world = await _futures_world(fake_exchanges, tmp_path, "dust-usdm")
    eth = "ETH/USDT:USDT"
    try:
        book.set_price(eth, "3000")
        strategy_id = await world.allocate(USER, "binanceusdm", "dca", "100", "ETH/USDT", every="1d", amount="12")
        await world.engine.settle()
        held = _position(book, "dust-usdm", eth).amount
        assert held > 0 and held * 3000 >= 10
        book.set_price(eth, "2000")  # the long is now worth less than the 10 USDT minimum of a new order
        world.gateway.market_data.invalidate()

        summary = await world.service.stop(USER, strategy_id, sell=True)
        assert summary.errors == ()
        assert summary.sold == {"ETH": held}
        assert _position(book, "dust-usdm", eth).amount == 0
        [close] = [o for o in book.all_orders("dust-usdm") if o.side == "sell"]
        assert close.reduce_only
        assert summary.realised_pnl == book.keys["dust-usdm"].total("USDT") - 1000
    finally:
        await world.close()


async def test_a_second_futures_strategy_on_a_market_the_account_already_trades_is_refused(fake_exchanges, tmp_path):
    """One-way mode keeps one position per market and account: two strategies on it would net each other's
    positions (a long and a short leave the venue flat, and each one's reduce-only close is then refused)."""
    book, world = await _futures_world(fake_exchanges, tmp_path, "two-usdm")
    try:
        book.set_price(SYMBOL, "50000")
        book.set_price("ETH/USDT:USDT", "3000")
        first = await world.allocate(USER, "binanceusdm", "dca", "200", "BTC/USDT", every="1d", amount="60")
        with pytest.raises(UserError, match=f"#{first}") as refused:
            await world.allocate(USER, "binanceusdm", "trend", "200", "BTC/USDT", timeframe="1d", fast="3", slow="5")
        assert "one position per market" in refused.value.message
        assert await world.allocate(USER, "binanceusdm", "dca", "100", "ETH/USDT", every="1d", amount="20")
        await world.service.stop(USER, first, sell=True)  # once the first is stopped, the market is free again
        assert await world.allocate(USER, "binanceusdm", "trend", "200", "BTC/USDT", timeframe="1d", fast="3",
                                    slow="5")
    finally:
        await world.close()


async def test_stop_reports_what_the_exchange_sold_and_the_dust_it_kept(fake_exchanges, tmp_path):
    """Binance Spot takes a buy's fee in BTC: 0.00135 bought leaves 0.00134865, and a sale on the 0.00001 step
    sells 0.00134. The /stop summary says what was sold and what stays, as the exchange's wallet shows."""
    book = fake_exchanges.books["binance"]
    book.add_key("stop-dust", "secret", balances={"USDT": "1000"}, fee_mode="received")
    book.set_price("BTC/USDT", "50000")
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(USER, "binance", "stop-dust", "secret")
        strategy_id = await world.allocate(USER, "binance", "dca", "100", "BTC/USDT", every="1d", amount="30")
        await world.engine.settle()
        book.set_price("BTC/USDT", "45000")
        world.gateway.market_data.invalidate()

        summary = await world.service.stop(USER, strategy_id, sell=True)
        [sale] = [t for t in book.trades("stop-dust") if t.side == "sell"]
        left = book.keys["stop-dust"].total("BTC")
        assert left > 0
        assert summary.sold == {"BTC": sale.amount} and summary.kept == {"BTC": left}
        text = stop_text(summary)
        assert summary.dust == {"BTC": left} and summary.sold_at == {"BTC": sale.price}
        assert f"Sold {sale.amount.normalize():f} BTC at market (average {sale.price:,.2f} USDT)." in text
        assert f"Kept {left.normalize():f} BTC (dust: below the market's minimum, too little to sell)." in text
    finally:
        await world.close()


async def test_stop_on_kraken_counts_the_sale_in_its_summary(fake_exchanges, tmp_path):
    """Kraken answers a market order without its fill: the /stop summary must still count the sale it made."""
    book = fake_exchanges.books["kraken"]
    secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQ="
    book.add_key("stop-kraken", secret, balances={"USD": "1000"})
    book.set_price("BTC/USD", "105717.2")
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(USER, "kraken", "stop-kraken", secret)
        strategy_id = await world.allocate(USER, "kraken", "dca", "100", "BTC/USD", every="1d", amount="30")
        await world.engine.settle()

        summary = await world.service.stop(USER, strategy_id, sell=True)
        [_, sale] = book.trades("stop-kraken")
        assert sale.side == "sell" and book.keys["stop-kraken"].total("BTC") == 0
        assert summary.errors == () and summary.sold == {"BTC": sale.amount} and summary.kept == {}
        assert summary.realised_pnl.quantize(Decimal("1e-8")) == book.keys["stop-kraken"].total("USD") - 1000
    finally:
        await world.close()

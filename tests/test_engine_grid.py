"""Grid on the fake Kraken end to end: buys below the price and sells above it (of the coins bought at start) within
the budget, buys re-arming sells one level up and sells re-arming buys, partial fills recorded once each, an alert
per fill, and /panic leaving no open order."""

from __future__ import annotations

import re
from decimal import ROUND_DOWN, Decimal

from bot.formatting import money
from handlers.render import status_lines
from tests.engine_world import open_world
from tests.test_engine_dca import wait_for

USER = 11


async def _grid(fake_exchanges, tmp_path, key: str):
    book = fake_exchanges.books["kraken"]
    book.add_key(key, "c2VjcmV0LXNlY3JldC1zZWNyZXQ=", balances={"USD": "1000"})
    book.set_price("BTC/USD", "105717.2")
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    await world.connect(USER, "kraken", key, "c2VjcmV0LXNlY3JldC1zZWNyZXQ=")
    strategy_id = await world.allocate(
        USER, "kraken", "grid", "500", "BTC/USD", low="100000", high="110000", levels="5"
    )
    await world.engine.settle()
    return book, world, strategy_id


def _open(book, key):
    return sorted(book.open_orders(key), key=lambda o: o.price)


async def _orders_settle(book, key, count: int) -> list:
    async def placed() -> bool:
        return len(book.open_orders(key)) == count

    await wait_for(placed)
    return _open(book, key)


async def test_grid_ladder_rearms_sells_and_buys_and_alerts_each_fill(fake_exchanges, tmp_path):
    book, world, strategy_id = await _grid(fake_exchanges, tmp_path, "grid-key")
    try:
        # At 105,717.2: buys at 100,000, 102,500 and 105,000; the 107,500 level's coins, bought at start by one
        # market order, are sold at 110,000.
        ladder = await _orders_settle(book, "grid-key", 4)
        assert [(o.side, o.price) for o in ladder] == [
            ("buy", Decimal("100000")), ("buy", Decimal("102500")), ("buy", Decimal("105000")),
            ("sell", Decimal("110000")),
        ]
        [start] = [o for o in book.closed_orders("grid-key") if o.type == "market"]
        assert start.side == "buy" and start.amount == ladder[-1].amount
        strategy = await world.store.strategies.get(strategy_id)
        reserved = await world.store.orders.reserved_for(strategy_id)
        assert strategy.spent + reserved <= Decimal(500)

        book.set_price("BTC/USD", "104900")  # the 105000 buy fills
        await world.engine.poll_once()
        await world.engine.settle()

        async def sell_armed() -> bool:
            return any(o.side == "sell" and o.price == Decimal("107500") for o in book.open_orders("grid-key"))

        await wait_for(sell_armed)
        sell = next(o for o in book.open_orders("grid-key") if o.price == Decimal("107500"))
        bought = next(o for o in book.closed_orders("grid-key") if o.side == "buy" and o.type == "limit")
        assert sell.side == "sell" and sell.amount == bought.amount

        book.set_price("BTC/USD", "107600")  # the sell fills: one round trip
        await world.engine.poll_once()
        await world.engine.settle()

        async def buy_rearmed() -> bool:
            return sum(1 for o in book.open_orders("grid-key") if o.price == Decimal("105000")) == 1

        await wait_for(buy_rearmed)
        fills = await world.alerts("fill")
        assert len(fills) == 3
        assert "Bought" in fills[0]["text"] and "Bought" in fills[1]["text"] and "Sold" in fills[2]["text"]
        assert re.search(r"Realised P&amp;L net of fees: \+[\d,.]+ USD on this fill", fills[2]["text"])
        # The round trip's profit, from the venue's own trades: the sell's proceeds less its fee, less the buy's
        # cost and fee (Kraken charges both in USD).
        buy_trade, sell_trade = [t for t in book.trades("grid-key") if t.price in (105000, 107500)]
        profit = (sell_trade.cost - sell_trade.fee) - (buy_trade.cost + buy_trade.fee)
        assert f"round trip (buy 105,000.0 USD, sell 107,500.0 USD): {money(profit, 'USD', signed=True)}" in (
            fills[2]["text"])
        strategy = await world.store.strategies.get(strategy_id)
        assert Decimal(strategy.state["profit"]) == profit and strategy.state["round_trips"] == 1
        reserved = await world.store.orders.reserved_for(strategy_id)
        assert strategy.spent - strategy.received + reserved <= strategy.budget
    finally:
        await world.close()


async def test_partial_fills_are_recorded_once_each_and_panic_cancels_every_open_order(fake_exchanges, tmp_path):
    book, world, strategy_id = await _grid(fake_exchanges, tmp_path, "panic-key")
    try:
        order = (await _orders_settle(book, "panic-key", 4))[0]  # the 100,000 buy
        quarter = (order.amount / 4).quantize(Decimal("1e-8"), rounding=ROUND_DOWN)
        book.fill_partially(order.id, quarter)
        for _ in range(3):
            await world.engine.poll_once()
        book.fill_partially(order.id, quarter)
        for _ in range(3):
            await world.engine.poll_once()
        fills = [f for f in await world.store.orders.fills_for_strategy(strategy_id) if f.fill.price == order.price]
        assert [f.fill.amount for f in fills] == [quarter, quarter]
        alerts = (await world.alerts("fill"))[1:]  # after the start purchase's
        assert len(alerts) == 2 and all("partial fill" in a["text"] for a in alerts)

        result = await world.service.panic(USER)
        assert result.paused == 1 and result.canceled == 4 and result.errors == ()
        assert book.open_orders("panic-key") == []
        assert [r["status"] for r in await world.orders() if r["type"] == "limit"] == ["canceled"] * 4
        assert (await world.store.strategies.get(strategy_id)).status == "paused"
        # The half-filled order's fills stay recorded; nothing was doubled by the cancel.
        assert len(await world.store.orders.fills_for_strategy(strategy_id)) == 3
    finally:
        await world.close()


async def test_a_binance_grid_paying_its_buy_fee_in_btc_completes_three_round_trips_on_one_level(
    fake_exchanges, tmp_path
):
    """Binance takes a buy's fee in BTC: the sell cannot sell the exact amount bought on the 0.00001 step. The
    rest is carried as dust (sold with a later sell), the level re-arms, and nothing is refused in a loop."""
    book = fake_exchanges.books["binance"]
    book.add_key("base-fee", "secret", balances={"USDT": "1000"}, fee_mode="received")
    book.set_price("BTC/USDT", "50500")
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(USER, "binance", "base-fee", "secret")
        strategy_id = await world.allocate(
            USER, "binance", "grid", "100.1", "BTC/USDT", low="50000", high="60000", levels="2"
        )
        await world.engine.settle()
        for trip in range(1, 4):
            book.set_price("BTC/USDT", "49900")
            await world.engine.poll_once()

            async def sell_armed() -> bool:
                return any(o.side == "sell" for o in book.open_orders("base-fee"))

            await wait_for(sell_armed, timeout=15)  # generous: the machine may be busy
            book.set_price("BTC/USDT", "60100")  # the sell fills…
            book.set_price("BTC/USDT", "55000")  # …and the price comes back into the range: the buy re-arms
            world.gateway.market_data.invalidate()  # the ticker cache may still hold 49,900 (outside the range)
            await world.engine.poll_once()

            async def buy_rearmed(trip: int = trip) -> bool:
                buys = [o for o in book.all_orders("base-fee") if o.side == "buy"]
                return len(buys) == trip + 1 and buys[-1].status == "open"

            await wait_for(buy_rearmed, timeout=15)
            await world.engine.settle()

        trades = book.trades("base-fee")
        assert [t.side for t in trades] == ["buy", "sell"] * 3
        assert all(t.fee_currency == ("BTC" if t.side == "buy" else "USDT") for t in trades)
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.state["round_trips"] == 3
        # What the grid could not sell is carried as dust: exactly the BTC left on the exchange account.
        dust = Decimal(strategy.state["dust"])
        assert dust > 0 and dust == book.keys["base-fee"].balances["BTC"]
        refused = [r for r in book.requests if r.path == "/api/v3/order" and r.status != 200]
        assert refused == []
        [status] = await world.service.status(USER)
        assert status.dust == {"BTC": dust}
        assert any(f"dust {dust.normalize():f} BTC" in line for line in status_lines(status))
        assert len(await world.alerts("fill")) == 6
        gains = r"Realised P&amp;L net of fees: \+[\d,.]+ USDT on this fill"
        assert sum(1 for a in await world.alerts("fill") if re.search(gains, a["text"])) == 3
    finally:
        await world.close()

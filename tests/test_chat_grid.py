"""A grid as traders know it, through the real bot: the summary before Confirm states the orders, the order size,
the coins bought at start and the profit per grid; once confirmed the fake Binance holds buys below the price and
sells above it; each fill re-arms the opposite level; the alert of a sell that closes a round trip states its
profit net of fees, equal to the fake exchange's own trades and fees; /status says what happens above the range.

Real PTB against the fake Telegram Bot API, real ccxt against the fake Binance (its buy fees taken in BTC, as
Binance does without BNB)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from bot.formatting import amount, money, percent
from tests.chat_helpers import USER, connect_with_key
from tests.test_chat_futures_pnl import wait_for_fill_alerts

SYMBOL = "BTC/USDT"


async def resting(book, api_key: str, expected: list[tuple[str, int]], timeout: float = 15.0) -> list:
    """The venue's own open orders once they are `expected` (side, price), sorted by price."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        orders = sorted(book.open_orders(api_key), key=lambda o: o.price)
        if [(o.side, o.price) for o in orders] == [(side, Decimal(p)) for side, p in expected]:
            return orders
        assert asyncio.get_running_loop().time() < deadline, [(o.side, o.price) for o in orders]
        await asyncio.sleep(0.05)


async def test_a_grid_trades_the_whole_range_rearms_each_level_and_alerts_its_profit_per_round_trip(
    strata, fake_exchanges
):
    book = fake_exchanges.books["binance"]
    book.set_price(SYMBOL, "50500")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance", balances={"USDT": Decimal(1000)},
                                        fee_mode="received")
    command = "/allocate binance grid 500 BTC/USDT low=48000 high=53000 levels=6"

    # The summary before Confirm: 48,000 … 50,000 buy; the 51,000 and 52,000 levels' coins are bought at start and
    # sold one level up.
    await strata.send(USER, command)
    message = await strata.next_reply(USER, contains="Allocation summary")
    summary = message.plain_text
    assert ("Grid: 3 buy limits below the price (48,000.00 USDT–50,000.00 USDT) and 2 sell limits above it "
            "(52,000.00 USDT–53,000.00 USDT).") in summary
    # 500 USDT less the 0.1 % fee reserve, split into 3 buys and the two levels' coins at 50,500 (reserved 2 %
    # above the price, as the risk gate reserves a market buy): 3 + (50500/51000 + 50500/52000) × 1.02 shares.
    shares = 3 + (Decimal(50500) / 51000 + Decimal(50500) / 52000) * Decimal("1.02")
    per_level = (Decimal(500) / Decimal("1.001") / shares).quantize(Decimal("1e-8"), rounding="ROUND_FLOOR")
    assert f"Order size: {money(per_level, 'USDT')} per level" in summary
    start_amount = sum(((per_level / p).quantize(Decimal("0.00001"), rounding="ROUND_FLOOR")
                        for p in (Decimal(51000), Decimal(52000))), Decimal(0))
    assert (f"Bought at start: {amount(start_amount, 'BTC', Decimal('0.00001'))} (about "
            f"{money(start_amount * 50500, 'USDT')} at 50,500.00 USDT, by one market order)") in summary
    # 48,000 → 49,000 makes the most in percent, 52,000 → 53,000 the least; 0.1 % fees a side.
    cost = per_level * Decimal("1.001")
    best = (per_level / 48000 * 49000 * Decimal("0.999") - cost) / cost
    worst = (per_level / 52000 * 53000 * Decimal("0.999") - cost) / cost
    assert f"({percent(worst * 100)} to {percent(best * 100)})" in summary

    # Confirmed: the start purchase, then buys below and sells above the price resting on the venue.
    await strata.press(USER, message, "Confirm allocation")
    await strata.next_reply(USER, contains="is running")
    orders = await resting(book, api_key, [("buy", 48000), ("buy", 49000), ("buy", 50000), ("sell", 52000),
                                           ("sell", 53000)])
    [start] = book.trades(api_key, SYMBOL)
    assert (start.side, start.amount) == ("buy", start_amount)
    assert start.fee_currency == "BTC"
    # The sells sell what the start purchase bought, less its fee in BTC (the rest is dust, sold later).
    assert sum(o.amount for o in orders if o.side == "sell") <= start.amount - start.fee
    reserved = sum(o.amount * o.price * Decimal("1.001") for o in orders if o.side == "buy")
    assert start.cost + reserved <= Decimal(500)

    # The 50,000 buy fills: its coins are offered one level up, at 51,000.
    book.set_price(SYMBOL, "49950")
    await resting(book, api_key, [("buy", 48000), ("buy", 49000), ("sell", 51000), ("sell", 52000),
                                  ("sell", 53000)])
    # The 51,000 sell fills: the 50,000 buy is placed again, and the alert states the round trip's profit.
    book.set_price(SYMBOL, "51050")
    await resting(book, api_key, [("buy", 48000), ("buy", 49000), ("buy", 50000), ("sell", 52000),
                                  ("sell", 53000)])
    alerts = await wait_for_fill_alerts(strata, 3)
    buy, sell = book.trades(api_key, SYMBOL)[1:]
    assert (buy.side, buy.price, sell.side, sell.price) == ("buy", 50000, "sell", 51000)
    assert buy.fee_currency == "BTC" and sell.fee_currency == "USDT"
    profit = (sell.cost - sell.fee) - buy.cost  # the buy's fee was paid in BTC: it is the BTC not sold
    # It sold what the buy got after its fee in BTC, on the 0.00001 step, with the dust an earlier fee left.
    assert sell.amount >= (buy.amount - buy.fee).quantize(Decimal("0.00001"), rounding="ROUND_FLOOR")
    line = (f"Grid profit on this round trip (buy 50,000.00 USDT, sell 51,000.00 USDT): "
            f"{money(profit, 'USDT', signed=True)} ({percent(profit / buy.cost * 100)}), fees of both legs deducted")
    assert line in alerts[2], alerts[2]

    await strata.send(USER, "/status")
    status = (await strata.next_reply(USER, contains="Your strategies", timeout=15)).plain_text
    assert f"running: 3 buys below, 2 sells above; 1 round trip, grid profit {money(profit, 'USDT', signed=True)}" \
        in status

    # Above the range everything is sold; the buys wait below, and /status says so.
    book.set_price(SYMBOL, "53100")
    await resting(book, api_key, [("buy", 48000), ("buy", 49000), ("buy", 50000), ("buy", 51000),
                                  ("buy", 52000)])
    await wait_for_fill_alerts(strata, 5)
    for _ in range(100):
        await strata.send(USER, "/status")
        status = (await strata.next_reply(USER, contains="Your strategies", timeout=15)).plain_text
        if "above the range" in status:
            break
        await asyncio.sleep(0.2)
    assert ("above the range (high 53,000.00 USDT): everything is sold; 5 buys wait below for the price to come "
            "back; 3 round trips") in status

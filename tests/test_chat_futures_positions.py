"""Futures as positions, end to end (real PTB against the fake Telegram, real ccxt against the fake Binance USD-M):
fill alerts say what a fill did to the position ("Opened long", "Closed long", "Opened short", "Closed short",
"Added to long") with its size, price, notional, the position's entry and 1x; /status shows the open position
with the venue's own entry, mark price and unrealised P&L (its positionRisk), and /profit and /balance value
it at the same mark; the allocation summary on a
futures account says the position runs at 1x, once."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bot import formatting
from tests.chat_helpers import USER, connect_with_key
from tests.test_chat_futures_pnl import SYMBOL, cents, figure, fill_alerts, script_candles, wait_for_fill_alerts
from tests.test_chat_strategies import allocate_one_line


def alert_line(book, trade, action: str) -> str:
    """The first line an alert must carry for a venue trade: "Opened long 0.003 BTC at 55,000.0 USDT (notional
    165.00 USDT, fee 0.08 USDT)", every figure the venue's own, amount and price to the market's step and tick."""
    market = book.market(trade.symbol)
    return (
        f"{action} {formatting.amount(trade.amount, market.base, market.amount_step)} at "
        f"{formatting.price(trade.price, 'USDT', market.tick_size)} (notional "
        f"{formatting.money(trade.amount * trade.price, 'USDT')}, fee {formatting.money(trade.fee, 'USDT')})"
    )


def entry_text(book, symbol: str, entry) -> str:
    return formatting.price(Decimal(entry), "USDT", book.market(symbol).tick_size)


async def test_futures_alerts_name_the_side_and_status_shows_the_venues_position_at_its_mark(
    strata, fake_exchanges, exchange_client
):
    book = fake_exchanges.books["binanceusdm"]
    script_candles(book, 40000, 500, 55000)  # rising: fast > slow, go long
    book.set_price(SYMBOL, "55000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binanceusdm", balances={"USDT": Decimal(1000)})
    venue = exchange_client("binanceusdm", api_key, book.keys[api_key].secret)

    await strata.send(USER, "/allocate binanceusdm trend 200 BTC/USDT timeframe=1d fast=3 slow=5 entry=now")
    summary = await strata.next_reply(USER, contains="Allocation summary")
    assert summary.plain_text.count("1x") == 1 and "Leverage: 1x (no leverage)" in summary.plain_text
    await strata.press(USER, summary, "Confirm allocation")

    [opened] = await wait_for_fill_alerts(strata, 1)
    [first] = book.trades(api_key, SYMBOL)
    assert alert_line(book, first, "Opened long") in opened, opened
    position_line = f"Position: long {formatting.amount(first.amount, 'BTC')}, entry {entry_text(book, SYMBOL, 55000)}"
    assert f"{position_line}, 1x" in opened, opened
    assert "Bought" not in opened

    # The averages cross down: the trend closes the long (one order), then opens a short (the next).
    script_candles(book, 60000, -500, 45000)
    book.set_price(SYMBOL, "45000")
    strata.runtime.gateway.market_data.invalidate()
    strata.runtime.engine.ctx.clock = lambda: datetime.now(UTC) + timedelta(days=1)
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)
    deadline = asyncio.get_running_loop().time() + 15
    while len(book.trades(api_key, SYMBOL)) < 3 or len(fill_alerts(strata)) < 3:
        assert asyncio.get_running_loop().time() < deadline, "the trend did not go short"
        await strata.runtime.engine.run_strategy(strategy.id)
        await asyncio.sleep(0.1)
    closed_long, opened_short = (await wait_for_fill_alerts(strata, 3))[1:]
    _, close, short = book.trades(api_key, SYMBOL)
    assert alert_line(book, close, "Closed long") in closed_long and "Position: flat" in closed_long, closed_long
    assert figure(closed_long, "Realised P&L net of fees:") == cents(close.realized_pnl - close.fee), closed_long
    assert alert_line(book, short, "Opened short") in opened_short, opened_short
    position_line = f"Position: short {formatting.amount(short.amount, 'BTC')}, entry {entry_text(book, SYMBOL, 45000)}"
    assert f"{position_line}, 1x" in opened_short, opened_short

    # The mark moves apart from the last trade: /status values the short at the venue's mark, as the venue does.
    book.set_price(SYMBOL, "40000")
    book.set_mark(SYMBOL, "40123.4")
    strata.runtime.gateway.market_data.invalidate()
    [position] = await venue.fetch_positions([SYMBOL])
    risk = position["info"]  # the venue's own positionRisk row
    entry, mark, unrealised = (Decimal(risk[k]) for k in ("entryPrice", "markPrice", "unRealizedProfit"))
    assert mark == Decimal("40123.4") and unrealised > 0
    await strata.send(USER, f"/status {strategy.id}")
    status = (await strata.next_reply(USER, contains="Fills are ")).plain_text
    [line] = [row for row in status.splitlines() if "position:" in row]
    assert f"short {formatting.amount(-Decimal(risk['positionAmt']), 'BTC')} at 1x" in line, status
    assert figure(line, "entry") == entry.quantize(Decimal("0.01")) and figure(line, "mark") == mark, status
    assert figure(line, "unrealised") == cents(unrealised), status
    booked = sum((t.realized_pnl - t.fee for t in book.trades(api_key, SYMBOL)), Decimal(0))
    assert figure(status, "P&L net of fees: realised") == cents(booked), status
    assert re.search(r"(?<!\w)unrealised " + re.escape(formatting.money(unrealised, "USDT", signed=True)),
                     status.split("P&L net of fees", 1)[1]), status  # one figure for one thing
    assert figure(line, "notional") == cents(abs(Decimal(risk["notional"]))), status
    # /profit and /balance value the position at the same mark: one figure for one thing.
    await strata.send(USER, "/profit")
    profit = (await strata.next_reply(USER, contains="Profit")).plain_text
    assert figure(profit.split("Total USDT", 1)[0], "unrealised") == cents(unrealised), profit
    await strata.send(USER, "/balance")
    balance = (await strata.next_reply(USER, contains="unrealised")).plain_text
    assert figure(balance, "unrealised") == cents(unrealised), balance

    # /stop buys the short back: the alert says so, and the position is gone from /status.
    await strata.send(USER, f"/stop {strategy.id}")
    question = await strata.next_reply(USER, contains="Keep what it bought")
    await strata.press(USER, question, "Stop and sell")
    await strata.next_reply(USER, contains="Realised", timeout=15)
    closing = (await wait_for_fill_alerts(strata, 4))[-1]
    last = book.trades(api_key, SYMBOL)[-1]
    assert alert_line(book, last, "Closed short") in closing and "Position: flat" in closing, closing
    assert await venue.fetch_positions([SYMBOL]) == []
    await strata.send(USER, f"/status {strategy.id}")
    assert "position: flat" in (await strata.next_reply(USER, contains="Fills are ")).plain_text


async def test_a_futures_dca_adds_to_its_long_and_the_alert_shows_the_new_average_entry(strata, fake_exchanges):
    book = fake_exchanges.books["binanceusdm"]
    eth = "ETH/USDT:USDT"
    book.set_price(eth, "2400")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binanceusdm", balances={"USDT": Decimal(1000)})
    await allocate_one_line(strata, "/allocate binanceusdm dca 100 ETH/USDT every=1d amount=30")
    [opened] = await wait_for_fill_alerts(strata, 1)
    assert "Opened long 0.012 ETH at 2,400.00 USDT (notional 28.80 USDT" in opened, opened

    book.set_price(eth, "2500")
    strata.runtime.gateway.market_data.invalidate()
    strata.runtime.engine.ctx.clock = lambda: datetime.now(UTC) + timedelta(days=1, minutes=1)
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)
    deadline = asyncio.get_running_loop().time() + 15
    while len(fill_alerts(strata)) < 2:
        assert asyncio.get_running_loop().time() < deadline, "the second buy did not come"
        await strata.runtime.engine.run_strategy(strategy.id)
        await asyncio.sleep(0.1)
    added = fill_alerts(strata)[1]
    [venue_position] = [p for p in book.positions(api_key) if p.symbol == eth]
    assert "Added to long 0.012 ETH at 2,500.00 USDT" in added, added
    assert (f"Position: long {formatting.amount(venue_position.amount, 'ETH')}, entry "
            f"{entry_text(book, eth, venue_position.entry_price)}, 1x") in added, added
    assert venue_position.entry_price == Decimal(2450)


async def test_the_allocation_summary_says_nothing_of_leverage_on_spot(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_with_key(strata, fake_exchanges, "binance")
    await strata.send(USER, "/allocate binance dca 100 BTC/USDT every=1d amount=10")
    summary = (await strata.next_reply(USER, contains="Allocation summary")).plain_text
    assert "leverage" not in summary.lower() and "1x" not in summary

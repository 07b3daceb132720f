"""/balance, /trades and /profit end to end — real PTB against the fake Telegram, real ccxt against the fake
venues — with every figure checked against an independent computation from the fake exchange's own trades
(`book.trades`) and wallet balances, never against the bot's database."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import bot.services.reports as reports
from bot.formatting import money as money_text
from tests.chat_helpers import OTHER, USER, connect_account, connect_with_key
from tests.test_chat_futures_pnl import SYMBOL as FUTURES
from tests.test_chat_futures_pnl import figure, script_candles, wait_for_fill_alerts
from tests.test_chat_strategies import allocate_one_line

CENT = Decimal("0.01")


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT)


def block(text: str, head: str) -> str:
    """The paragraph of a reply that starts with `head` (views separate strategies/accounts by blank lines)."""
    for paragraph in text.split("\n\n"):
        if paragraph.lstrip().startswith(head):
            return paragraph
    raise AssertionError(f"no paragraph starting with {head!r} in:\n{text}")


def money(text: str, pattern: str) -> Decimal:
    """The money figure captured by `pattern`'s first group (thousands separators removed)."""
    found = re.search(pattern, text)
    assert found, f"no {pattern!r} in:\n{text}"
    return Decimal(found.group(1).replace(",", ""))


def bought_alerts(s) -> int:
    return sum(1 for m in s.tg.sent if m.chat_id == USER and "Bought" in (m.text or ""))


async def wait_for_buys(s, count: int, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while bought_alerts(s) < count:
        assert asyncio.get_running_loop().time() < deadline, f"{bought_alerts(s)} buys, expected {count}"
        await asyncio.sleep(0.05)


def spot_pnl(trades, price: Decimal) -> tuple[Decimal, Decimal, Decimal]:
    """Realised, unrealised and fees (in quote) of one spot market's trades, by average cost — computed here,
    from the venue's trades, independently of the bot: a fee in the base shrinks what is held, one in the quote
    is paid on top of a buy or taken from a sale."""
    held = cost = realised = fees = Decimal(0)
    for t in trades:
        base_fee = t.fee if t.fee_currency != t.symbol.split("/")[1] else Decimal(0)
        quote_fee = t.fee - base_fee
        fees += quote_fee + base_fee * t.price
        if t.side == "buy":
            held += t.amount - base_fee
            cost += t.cost + quote_fee
        else:
            basis = cost * t.amount / held
            realised += t.cost - quote_fee - basis
            held -= t.amount
            cost -= basis
    return realised, held * price - cost, fees


async def test_spot_balance_trades_and_profit_equal_the_venues_trades(strata, fake_exchanges, monkeypatch):
    binance, kraken = fake_exchanges.books["binance"], fake_exchanges.books["kraken"]
    binance.set_price("BTC/USDT", "50000")
    kraken.set_price("BTC/USD", "60000")
    # Binance takes a buy's fee in the coin bought; Kraken takes every fee in the quote.
    _, binance_key = await connect_with_key(strata, fake_exchanges, "binance", fee_mode="received")
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=20")
    await wait_for_buys(strata, 1)
    _, kraken_key = await connect_with_key(strata, fake_exchanges, "kraken")
    await allocate_one_line(strata, "/allocate kraken dca 100 BTC/USD every=1d amount=20")
    await wait_for_buys(strata, 2)
    first, second = await strata.runtime.store.strategies.list_for_user(USER)

    # The Binance DCA sells at a higher price: a realised gain, the sale's fee in USDT.
    binance.set_price("BTC/USDT", "55000")
    strata.runtime.gateway.market_data.invalidate()
    await strata.send(USER, f"/stop {first.id}")
    question = await strata.next_reply(USER, contains="Keep what it bought")
    await strata.press(USER, question, "Stop and sell")
    await strata.next_reply(USER, contains="Realised P&amp;L", timeout=15)
    kraken.set_price("BTC/USD", "66000")
    strata.runtime.gateway.market_data.invalidate()

    b_trades, k_trades = binance.trades(binance_key, "BTC/USDT"), kraken.trades(kraken_key, "BTC/USD")
    assert [t.side for t in b_trades] == ["buy", "sell"] and b_trades[0].fee_currency == "BTC"
    assert [t.side for t in k_trades] == ["buy"] and k_trades[0].fee_currency == "USD"
    b_realised, b_unrealised, b_fees = spot_pnl(b_trades, Decimal(55000))
    k_realised, k_unrealised, k_fees = spot_pnl(k_trades, Decimal(66000))
    assert b_realised > 0 and k_unrealised > 0

    # /profit: per strategy and in total, net of fees, ROI on the budget.
    await strata.send(USER, "/profit")
    text = (await strata.next_reply(USER, contains="Profit")).plain_text
    b_block, k_block = block(text, f"#{first.id} DCA"), block(text, f"#{second.id} DCA")
    assert money(b_block, r" realised ([+-]?[\d,.]+) USDT") == cents(b_realised), text
    assert money(b_block, r"fees ([\d,.]+) USDT") == cents(b_fees), text
    assert money(b_block, r"unrealised ([+-]?[\d,.]+) USDT") == cents(b_unrealised), text  # dust below the step
    assert money(b_block, r"ROI ([+-][\d.]+)%") == cents((b_realised + b_unrealised) / 100 * 100), text
    assert money(k_block, r" realised ([+-]?[\d,.]+) USD") == cents(k_realised) == 0, text
    assert money(k_block, r"unrealised ([+-]?[\d,.]+) USD") == cents(k_unrealised), text
    assert money(k_block, r"fees ([\d,.]+) USD") == cents(k_fees), text
    assert money(k_block, r"net ([+-]?[\d,.]+) USD") == cents(k_unrealised), text
    total_usd = next(line for line in text.splitlines() if line.startswith("Total USD:"))
    assert money(total_usd, r"net ([+-]?[\d,.]+) USD") == cents(k_unrealised), text
    assert money(total_usd, r"ROI ([+-][\d.]+)%") == cents(k_unrealised), text  # of a 100 USD budget

    # /profit day: every fill happened today, so the same figures.
    await strata.send(USER, "/profit day")
    today = (await strata.next_reply(USER, contains="</b> today")).plain_text
    assert money(block(today, f"#{first.id} DCA"), r" realised ([+-]?[\d,.]+) USDT") == cents(b_realised)

    # /trades: newest first; the buy's fee in BTC, the sale's in USDT with the realised P&L it booked.
    await strata.send(USER, "/trades")
    trades = (await strata.next_reply(USER, contains="Trades")).plain_text
    lines = [line for line in trades.splitlines() if " UTC " in line]
    assert len(lines) == 3
    sale, kraken_buy, buy = lines  # the sale came last, after the Kraken buy
    assert f"#{second.id} DCA" in kraken_buy and f"bought {k_trades[0].amount.normalize():f} BTC" in kraken_buy
    assert f"fee {money_text(k_trades[0].fee, 'USD')}" in kraken_buy, trades
    assert f"#{first.id} DCA" in sale and f"#{first.id} DCA" in buy
    assert f"sold {b_trades[1].amount.normalize():f} BTC at 55,000.00 USDT" in sale, trades
    assert f"fee {money_text(b_trades[1].fee, 'USDT')}" in sale, trades
    assert money(sale, r"realised ([+-]?[\d,.]+) USDT") == cents(b_realised), trades
    assert f"fee {b_trades[0].fee.normalize():f} BTC" in buy and "realised" not in buy, trades

    # /balance: each wallet's assets at the venue's price; the Kraken DCA holds what it bought.
    await strata.send(USER, "/balance")
    balance = (await strata.next_reply(USER, contains="Balance")).plain_text
    for key, book, label, quote, price in (
        (binance_key, binance, "binance", "USDT", Decimal(55000)),
        (kraken_key, kraken, "kraken", "USD", Decimal(66000)),
    ):
        wallet = book.keys[key].balances
        section = block(balance, f"{label} —")
        assert money(section, r"([\d.,]+) BTC ≈") == wallet["BTC"], balance
        expected = cents(wallet[quote]) + cents(wallet["BTC"] * price)
        assert money(section, rf"Total ≈ ([\d,.]+) {quote}") == expected, balance
    k_section = block(balance, "kraken —")
    held = k_trades[0].amount
    assert f"strategies hold {held.normalize():f} BTC (#{second.id} DCA BTC/USD" in k_section, balance
    assert money(k_section, r"strategies hold ≈ ([\d,.]+) USD") == cents(
        cents(kraken.keys[kraken_key].balances["BTC"] * 66000) * held / kraken.keys[kraken_key].balances["BTC"]
    ), balance
    assert "strategies hold 0" not in block(balance, "binance —")  # its strategy is stopped

    # Pages: two fills a page, ◀ ▶ walk through all three, newest first.
    monkeypatch.setattr(reports, "TRADES_PER_PAGE", 2)
    await strata.send(USER, "/trades")
    page1 = await strata.next_reply(USER, contains="page 1 of 2")
    assert len([line for line in page1.plain_text.splitlines() if " UTC " in line]) == 2
    await strata.press(USER, page1, "page 2 ▶")
    page2 = await strata.next_reply(USER, contains="page 2 of 2")
    assert [line for line in page2.plain_text.splitlines() if " UTC " in line] == [lines[2]]
    await strata.press(USER, page2, "◀ page 1")
    await strata.next_reply(USER, contains="page 1 of 2")
    await strata.send(USER, f"/trades {first.id}")
    only = (await strata.next_reply(USER, contains=f"strategy #{first.id}")).plain_text
    assert f"#{second.id} DCA" not in only and only.count(" UTC ") == 2

    # Another user's strategy id gets exactly the answer of an id that does not exist.
    await connect_account(strata, fake_exchanges, "binance", user=OTHER)
    await strata.send(OTHER, f"/trades {first.id}")
    forged = (await strata.next_reply(OTHER, contains="strategy")).plain_text
    await strata.send(OTHER, "/trades 987654")
    missing = (await strata.next_reply(OTHER, contains="strategy")).plain_text
    assert forged == missing == "❌ No such strategy. See /status for yours."
    await strata.send(OTHER, "/trades")
    empty = await strata.next_reply(OTHER, contains="fills")
    assert "No fills yet" in empty.plain_text
    # A page button forged with the victim's strategy id: the same answer again, none of the victim's fills.
    strata.tg.press_callback_data(OTHER, empty, f"tr:{first.id}:1")
    assert (await strata.next_reply(OTHER, contains="strategy")).plain_text == missing
    assert not any("DCA" in (m.text or "") for m in strata.tg.sent if m.chat_id == OTHER)


async def test_futures_profit_trades_and_balance_show_the_position_as_the_venue_books_it(strata, fake_exchanges):
    book = fake_exchanges.books["binanceusdm"]
    script_candles(book, 40000, 500, 55000)  # rising: the trend goes long
    book.set_price(FUTURES, "55000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binanceusdm", balances={"USDT": Decimal(1000)})
    wallet_at_start = book.keys[api_key].total("USDT")
    await allocate_one_line(strata, "/allocate binanceusdm trend 200 BTC/USDT timeframe=1d fast=3 slow=5 entry=now")
    await wait_for_fill_alerts(strata, 1)
    # The averages cross down: one order closes the long at a loss, the next opens a short.
    script_candles(book, 60000, -500, 45000)
    book.set_price(FUTURES, "45000")
    strata.runtime.gateway.market_data.invalidate()
    strata.runtime.engine.ctx.clock = lambda: datetime.now(UTC) + timedelta(days=1)
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)

    def position():
        return next(p for p in book.positions(api_key) if p.symbol == FUTURES)

    deadline = asyncio.get_running_loop().time() + 15
    while position().amount >= 0 or len(book.trades(api_key, FUTURES)) < 3:
        assert asyncio.get_running_loop().time() < deadline, "the trend did not flip to a short"
        await strata.runtime.engine.run_strategy(strategy.id)
        await asyncio.sleep(0.1)
    await wait_for_fill_alerts(strata, 3)
    book.set_price(FUTURES, "40000")
    strata.runtime.gateway.market_data.invalidate()
    trades = book.trades(api_key, FUTURES)
    realised = sum((t.realized_pnl - t.fee for t in trades), Decimal(0))
    assert realised == book.keys[api_key].total("USDT") - wallet_at_start  # the wallet's own change
    unrealised = book.unrealized_pnl(position())
    assert unrealised > 0 and realised < 0

    await strata.send(USER, "/profit week")
    text = (await strata.next_reply(USER, contains="</b> this week")).plain_text
    section = block(text, f"#{strategy.id} Trend")
    size = abs(position().amount).normalize()
    assert re.search(rf"position: short {size:f} BTC at 1x, entry 45,000(\.0+)? USDT, mark 40,000(\.0+)? USDT",
                     section), text
    assert money(section, r" realised ([+-]?[\d,.]+) USDT") == cents(realised), text
    assert money(section, r"unrealised ([+-]?[\d,.]+) USDT") == cents(unrealised), text
    assert money(section, r"fees ([\d,.]+) USDT") == cents(sum(t.fee for t in trades)), text
    assert money(section, r"net ([+-]?[\d,.]+) USDT") == cents(realised + unrealised), text
    assert money(section, r"ROI ([+-][\d.]+)%") == cents((realised + unrealised) / 200 * 100), text

    await strata.send(USER, f"/trades {strategy.id}")
    shown = (await strata.next_reply(USER, contains="Trades")).plain_text
    lines = [line for line in shown.splitlines() if " UTC " in line]
    assert [line.split(": ")[1].split(" 0.")[0] for line in lines] == ["open short", "close long", "open long"], shown
    close = trades[1]
    assert money(lines[1], r"realised ([+-]?[\d,.]+) USDT") == cents(close.realized_pnl - close.fee), shown
    assert "realised" not in lines[0] and "realised" not in lines[2], shown

    await strata.send(USER, "/balance")
    balance = (await strata.next_reply(USER, contains="Balance")).plain_text
    section = block(balance, "binanceusdm —")
    margin_balance = book.keys[api_key].total("USDT") + unrealised  # what Binance reports as the USDT total
    assert money(section, r"(?m)^  ([\d,.]+) USDT$") == cents(margin_balance), balance
    assert re.search(rf"#{strategy.id} Trend BTC/USDT\S*: short {size:f} BTC at 1x, entry 45,000(\.0+)? USDT", section)
    assert money(section, r"notional ([\d,.]+) USDT") == cents(abs(position().amount) * 40000), balance
    assert money(section, r"unrealised ([+-]?[\d,.]+) USDT") == cents(unrealised), balance
    margin = abs(position().amount) * 45000
    assert money(section, r"margin ([\d,.]+) USDT") == cents(margin), balance
    assert figure(section, "Total ≈") == cents(margin_balance), balance
    assert figure(section, "strategies hold ≈") == cents(margin + unrealised), balance


async def test_the_views_are_in_help_and_the_command_menu_and_answer_a_user_with_nothing(strata):
    await strata.send(USER, "/help")
    help_text = (await strata.next_reply(USER, contains="Commands")).text
    assert all(f"/{name} — " in help_text for name in ("balance", "trades", "profit"))
    assert {c["command"] for c in strata.tg.commands} >= {"balance", "trades", "profit"}
    for command, answer in (("/balance", "no connected accounts"), ("/trades", "No fills yet"),
                            ("/profit", "no fills and nothing held"), ("/profit year", "Usage: /profit"),
                            ("/trades abc", "Usage: /trades")):
        await strata.send(USER, command)
        assert answer in (await strata.next_reply(USER)).plain_text, command

"""/chart through the real bot — real PTB against the fake Telegram, real ccxt against the fake venues' candles —
with the caption's figures computed here from the fake exchange's own trades and prices, never from the bot's
database: value now, P&L net of fees, buy & hold."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from decimal import Decimal

from bot.exchanges.venues.paper import MARK as PAPER
from tests.chat_helpers import OTHER, USER, connect_account, connect_with_key
from tests.test_chat_futures_pnl import figure
from tests.test_chat_strategies import allocate_one_line
from tests.test_chat_views import spot_pnl

CENT = Decimal("0.01")
PNG = b"\x89PNG\r\n\x1a\n"
MINUTE = 60_000


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT)


def flat_minutes(book, symbol: str, price: str, count: int = 120) -> None:
    """`count` one-minute candles all at `price`, the last one open now: a start price the test knows."""
    now = int(datetime.now(UTC).timestamp() * 1000) // MINUTE * MINUTE
    rows = [(now - (count - 1 - i) * MINUTE, price, price, price, price, "5") for i in range(count)]
    book.load_candles(symbol, "1m", rows, start=count - 1)


async def next_photo(s, user: int = USER, timeout: float = 15.0):
    return await s.tg.wait_for_message(user, timeout=timeout, predicate=lambda r: r.method == "sendPhoto")


def signed(text: str, pattern: str) -> Decimal:
    found = re.search(pattern, text)
    assert found, f"no {pattern!r} in:\n{text}"
    return Decimal(found.group(1).replace(",", ""))


async def test_chart_after_fills_is_a_photo_whose_figures_equal_the_venues(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    flat_minutes(book, "BTC/USDT", "50000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance", fee_mode="received")
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=20 name=stack")
    await strata.next_reply(USER, contains="Bought", timeout=15)
    (strategy,) = await strata.runtime.store.strategies.list_for_user(USER)
    book.set_price("BTC/USDT", "55000")
    strata.runtime.gateway.market_data.invalidate()

    await strata.send(USER, f"/chart {strategy.id}")
    photo = await next_photo(strata)
    assert photo.photo is not None and photo.photo.startswith(PNG) and len(photo.photo) > 5_000
    caption = photo.plain_text
    assert len(caption) <= 1024 and f"#{strategy.id} DCA BTC/USDT “stack”" in caption, caption

    # Independently: the venue's trades and price give the value; buy & hold bought 100 USDT at the start
    # price (every candle before the open one is at 50,000) paying the taker fee, valued at 55,000 now.
    trades = book.trades(api_key, "BTC/USDT")
    assert [t.side for t in trades] == ["buy"] and trades[0].fee_currency == "BTC"
    realised, unrealised, fees = spot_pnl(trades, Decimal(55000))
    value = Decimal(100) + realised + unrealised
    taker = book.markets["BTC/USDT"].taker_fee
    hold = Decimal(100) * (1 - taker) / Decimal(50000) * Decimal(55000) - Decimal(100)
    assert signed(caption, r"Value now ([\d,.]+) USDT") == cents(value), caption
    assert signed(caption, r"P&L net of fees: ([+-]?[\d,.]+) USDT") == cents(value - 100), caption
    assert signed(caption, r"net of fees: [^(]*\(([+-]?[\d.]+)%\)") == cents(value - 100), caption  # of 100
    assert signed(caption, r"fees ([\d,.]+) USDT") == cents(fees), caption
    assert signed(caption, r"Buy & hold: ([+-]?[\d,.]+) USDT") == cents(hold), caption
    assert signed(caption, r"the strategy did ([\d,.]+) USDT worse") == cents(hold - (value - 100)), caption
    assert "1 fill (1 buy, 0 sells)" in caption, caption

    # The same worth /status shows: budget plus its realised and unrealised P&L.
    await strata.send(USER, f"/status {strategy.id}")
    status = (await strata.next_reply(USER, contains="P&amp;L net of fees")).plain_text
    worth = 100 + figure(status, "realised") + figure(status, "unrealised")
    assert signed(caption, r"Value now ([\d,.]+) USDT") == worth, (status, caption)


async def test_the_chart_button_under_status_sends_the_chart(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    flat_minutes(book, "BTC/USDT", "50000")
    await connect_account(strata, fake_exchanges, "binance")
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=20")
    await strata.next_reply(USER, contains="Bought", timeout=15)
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=20")
    await strata.next_reply(USER, contains="Bought", timeout=15)
    first, second = await strata.runtime.store.strategies.list_for_user(USER)

    await strata.send(USER, "/status")
    listing = await strata.next_reply(USER, contains="Your strategies")
    assert listing.button_texts == [f"📈 #{first.id}", f"📈 #{second.id}"]
    await strata.press(USER, listing, f"📈 #{second.id}")
    photo = await next_photo(strata)
    assert f"#{second.id} DCA BTC/USDT" in photo.plain_text and photo.photo.startswith(PNG)
    assert strata.tg.message(USER, listing.message_id)["text"] == listing.plain_text, "the /status message stays"

    await strata.send(USER, f"/status {first.id}")
    detail = await strata.next_reply(USER, contains=f"#{first.id} DCA")
    await strata.press(USER, detail, "📈 Chart")
    assert f"#{first.id} DCA BTC/USDT" in (await next_photo(strata)).plain_text

    await strata.send(USER, "/chart")  # two strategies: pick one
    picker = await strata.next_reply(USER, contains="Which strategy's chart")
    await strata.press(USER, picker, f"📈 #{first.id} DCA BTC/USDT")
    assert f"#{first.id} DCA BTC/USDT" in (await next_photo(strata)).plain_text


async def test_another_users_id_and_bad_ids_are_refused_kindly(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    flat_minutes(book, "BTC/USDT", "50000")
    await connect_account(strata, fake_exchanges, "binance")
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=20")
    (strategy,) = await strata.runtime.store.strategies.list_for_user(USER)
    await strata.send(OTHER, "/start")
    await strata.next_reply(OTHER)

    await strata.send(OTHER, f"/chart {strategy.id}")
    theirs = await strata.next_reply(OTHER)
    await strata.send(OTHER, "/chart 999")
    missing = await strata.next_reply(OTHER)
    assert theirs.text == missing.text == "❌ No such strategy. See /status for yours."
    for bad in ("/chart abc", "/chart -1", "/chart 99999999999999999999999"):
        await strata.send(OTHER, bad)
        assert "Usage: /chart" in (await strata.next_reply(OTHER)).text
    await strata.send(OTHER, "/chart")
    assert "No strategies yet" in (await strata.next_reply(OTHER)).text
    strata.tg.press_callback_data(OTHER, theirs, f"ch:{strategy.id}")  # a forged button
    assert (await strata.next_reply(OTHER)).text == "❌ No such strategy. See /status for yours."
    assert not [r for r in strata.tg.sent if r.chat_id == OTHER and r.method == "sendPhoto"]


async def test_a_strategy_without_fills_and_a_stopped_one_still_get_a_chart(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    flat_minutes(book, "BTC/USDT", "50000")
    await connect_account(strata, fake_exchanges, "binance")
    # Every level of this grid is far below the price: it rests and fills nothing.
    await allocate_one_line(strata, "/allocate binance grid 500 BTC/USDT low=30000 high=35000 levels=5")
    (grid,) = await strata.runtime.store.strategies.list_for_user(USER)

    await strata.send(USER, "/chart")  # the only strategy: charted at once
    photo = await next_photo(strata)
    assert photo.photo.startswith(PNG)
    assert "No fills yet" in photo.plain_text and "Value now 500.00 USDT" in photo.plain_text, photo.plain_text
    assert "P&L net of fees: 0.00 USDT" in photo.plain_text, photo.plain_text

    await strata.send(USER, f"/stop {grid.id}")
    question = await strata.next_reply(USER, contains="Keep what it bought")
    await strata.press(USER, question, "Stop and keep")
    await strata.next_reply(USER, contains="stopped", timeout=15)
    await strata.send(USER, f"/chart {grid.id}")
    stopped = await next_photo(strata)
    assert "— stopped, since" in stopped.plain_text and "Value now 500.00 USDT" in stopped.plain_text


async def set_up(s, user: int, *lines: str) -> None:
    for line in lines:
        await s.send(user, line)
        await s.next_reply(user, contains="Settings")


async def test_the_daily_summary_brings_the_chart_of_the_largest_strategy_when_asked(strata, fake_exchanges):
    binance, kraken = fake_exchanges.books["binance"], fake_exchanges.books["kraken"]
    flat_minutes(binance, "BTC/USDT", "50000")
    flat_minutes(kraken, "BTC/USD", "60000")
    await connect_account(strata, fake_exchanges, "binance")
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=20")
    await allocate_one_line(strata, "/allocate binance dca 300 BTC/USDT every=1d amount=20 name=big")
    await connect_account(strata, fake_exchanges, "kraken", user=OTHER)
    await allocate_one_line(strata, "/allocate kraken dca 100 BTC/USD every=1d amount=20", user=OTHER)
    await strata.send(USER, "/settings")
    menu = await strata.next_reply(USER, contains="Settings")
    assert "Chart with the summary (your largest running strategy, as /chart draws it): off" in menu.plain_text
    assert "Summary chart: turn on" in menu.button_texts  # off by default
    await strata.press(USER, menu, "Summary chart: turn on")
    pressed = await strata.next_reply(USER, contains="Settings")
    assert "as /chart draws it): on" in pressed.plain_text and "Summary chart: turn off" in pressed.button_texts
    await set_up(strata, USER, "/settings hour 0", "/settings summary on")  # hour 0 UTC: due now
    await set_up(strata, OTHER, "/settings hour 0", "/settings summary on", "/settings chart on")

    # Binance's candles cannot be read: that user's summary still goes out (without a chart), and the other
    # user's summary and chart are not held up by it.
    binance.inject("server_error", count=20, path="klines")
    summary = strata.runtime.summary
    assert await summary.run_due() == 2
    await summary.wait_charts()
    other_summary = await strata.next_reply(OTHER, contains="Daily summary", timeout=15)
    other_photo = await next_photo(strata, OTHER)
    assert other_photo.seq > other_summary.seq and other_photo.photo.startswith(PNG)
    assert "DCA BTC/USD" in other_photo.plain_text and other_photo.disable_notification
    await strata.next_reply(USER, contains="Daily summary", timeout=15)
    assert not [r for r in strata.tg.sent if r.chat_id == USER and r.method == "sendPhoto"]
    assert "no chart with the daily summary of user" in strata.log.getvalue()

    # The next day, with the candles back: the chart of the largest running strategy (“big”), after the text.
    binance.faults.clear()
    await strata.runtime.store.users.merge_settings(USER, {"last_summary": None})
    assert await summary.run_due() == 1
    await summary.wait_charts()
    text = await strata.next_reply(USER, contains="Daily summary", timeout=15)
    photo = await next_photo(strata)
    assert photo.seq > text.seq and "DCA BTC/USDT “big”" in photo.plain_text and photo.photo.startswith(PNG)
    alerts = await strata.runtime.store.outbox.list_for_chat(USER)
    assert [a.has_photo for a in alerts if a.kind == "summary"][-1], "queued as a photo alert"
    deadline = asyncio.get_running_loop().time() + 10  # the notifier records the send right after Telegram answers
    while await strata.runtime.store.outbox.photo(alerts[-1].id) is not None:
        assert asyncio.get_running_loop().time() < deadline, "no picture kept once sent"
        await asyncio.sleep(0.05)


async def test_the_chart_picker_pages_ten_strategies_at_a_time(strata, fake_exchanges):
    flat_minutes(fake_exchanges.books["binance"], "BTC/USDT", "50000")
    await connect_account(strata, fake_exchanges, "binance")
    for _ in range(11):
        await allocate_one_line(strata, "/allocate binance grid 100 BTC/USDT low=30000 high=35000 levels=2")
    await strata.send(USER, "/chart")
    picker = await strata.next_reply(USER, contains="Which strategy's chart? (page 1 of 2)")
    assert len(picker.buttons) == 11 and picker.button_texts[-1] == "page 2 ▶"
    await strata.press(USER, picker, "page 2 ▶")
    second = await strata.next_reply(USER, contains="(page 2 of 2)")
    assert second.message_id == picker.message_id
    assert second.button_texts == ["📈 #11 Grid BTC/USDT", "◀ page 1"], second.button_texts
    await strata.press(USER, second, 0)
    assert "#11 Grid" in (await next_photo(strata)).plain_text


async def test_a_futures_position_and_a_rebalance_basket_are_charted_at_the_worth_status_shows(
    strata, fake_exchanges
):
    futures, spot = fake_exchanges.books["binanceusdm"], fake_exchanges.books["binance"]
    flat_minutes(futures, "BTC/USDT:USDT", "50000")
    flat_minutes(spot, "BTC/USDT", "50000")
    flat_minutes(spot, "ETH/USDT", "2000")
    _, futures_key = await connect_with_key(strata, fake_exchanges, "binanceusdm")
    await connect_account(strata, fake_exchanges, "binance")
    await allocate_one_line(strata, "/allocate binanceusdm dca 200 BTC/USDT every=1d amount=60")
    await strata.next_reply(USER, contains="Opened long", timeout=15)
    await allocate_one_line(strata, "/allocate binance rebalance 300 USDT weights=BTC:50,ETH:50")
    await strata.next_reply(USER, contains="Bought", timeout=15)
    await strata.next_reply(USER, contains="Bought", timeout=15)
    future, basket = await strata.runtime.store.strategies.list_for_user(USER)
    futures.set_price("BTC/USDT:USDT", "52000")
    spot.set_price("ETH/USDT", "2100")
    strata.runtime.gateway.market_data.invalidate()

    for strategy, budget in ((future, 200), (basket, 300)):
        await strata.send(USER, f"/status {strategy.id}")
        status = (await strata.next_reply(USER, contains="P&amp;L net of fees")).plain_text
        await strata.send(USER, f"/chart {strategy.id}")
        caption = (await next_photo(strata)).plain_text
        worth = budget + figure(status, "realised") + figure(status, "unrealised")  # each to the cent
        assert abs(signed(caption, r"Value now ([\d,.]+) USDT") - worth) <= CENT, (status, caption)
        if strategy is future:  # independently: the venue's position at its mark, less the fee it took
            (opened,) = futures.trades(futures_key, "BTC/USDT:USDT")
            value = 200 + opened.amount * (futures.mark_price("BTC/USDT:USDT") - opened.price) - opened.fee
            assert signed(caption, r"Value now ([\d,.]+) USDT") == cents(value), caption
    # Buy & hold of the basket: 150 USDT into each coin at its start price (its first buy's), one taker fee.
    taker = spot.markets["BTC/USDT"].taker_fee
    hold = 150 * (1 - taker) / 50000 * 50000 + 150 * (1 - taker) / 2000 * 2100 - 300
    assert signed(caption, r"Buy & hold: ([+-]?[\d,.]+) USDT") == cents(hold), caption


async def test_a_paper_strategy_is_charted_and_says_paper(strata, fake_exchanges):
    flat_minutes(fake_exchanges.books["binance"], "BTC/USDT", "50000")
    await strata.send(USER, "/connect paper binance 5000")
    await strata.next_reply(USER, contains="opened")
    await allocate_one_line(strata, "/allocate paper dca 100 BTC/USDT every=1d amount=20 name=🚀moon")
    await strata.next_reply(USER, contains="Bought", timeout=15)
    await strata.send(USER, "/chart")
    photo = await next_photo(strata)
    assert photo.photo.startswith(PNG) and PAPER in photo.plain_text and "“🚀moon”" in photo.plain_text

"""Trades Strata did not make (issue 21, item 2) through the whole bot: real PTB against the fake Telegram Bot API,
the real engine with its WebSocket listener, real ccxt against the fake Binance on 127.0.0.1.

An order placed "by hand" on the connected key's exchange account (the fake's `place_by_hand`: a `web_…` client
order id, as Binance's website names it) fills; its executionReport reaches the engine by the stream. Exactly one
alert per burst, with the figures of the fake's own trades; Strata's own orders never alert; the setting off
sends none; a restart, or the venue sending a fill again, never repeats an alert, and a trade recorded just before
a stop is alerted after the restart.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from bot.engine.alerts import TradeLine, foreign_trades_text
from bot.formatting import amount, money, price
from tests.chat_helpers import USER, connect_with_key
from tests.test_chat_strategies import allocate_one_line, wait_for_open_orders
from tests.test_chat_streams import wait_until

HEADLINE = "that Strata did not make"
WINDOW = 1.0  # the coalescing window in these tests (3 s by default)


def foreign_alerts(s) -> list:
    return [m for m in s.tg.sent if m.chat_id == USER and HEADLINE in (m.text or "")]


def trade_line(book, trade) -> str:
    """How the alert must show the fake's trade: its own figures, through `bot.formatting`."""
    market = book.market(trade.symbol)
    base, quote = trade.symbol.split("/")
    verb = "Bought" if trade.side == "buy" else "Sold"
    at = datetime.fromtimestamp(trade.time_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"{trade.symbol}: {verb} {amount(trade.amount, base, market.amount_step)} at "
        f"{price(trade.price, quote, market.tick_size)} (value {money(trade.cost, quote)}), {at}"
    )


async def streamed(s, account_id: int) -> None:
    s.runtime.engine.streams.foreign.window = WINDOW
    await wait_until(lambda: s.runtime.engine.streams.streamed(account_id))


async def test_a_foreign_market_order_alerts_once_with_the_trade_and_our_own_orders_never_do(
    make_strata, fake_exchanges
):
    book, ws = fake_exchanges.books["binance"], fake_exchanges.binance_streams
    book.set_price("BTC/USDT", "50500")
    async with make_strata(STRATA_FILL_POLL_SECONDS="3600") as s:
        account, api_key = await connect_with_key(s, fake_exchanges, "binance")
        await streamed(s, account.id)  # followed with no strategy at all: an idle key is what a thief uses
        await allocate_one_line(s, "/allocate binance grid 100.1 BTC/USDT low=50000 high=60000 levels=2")
        await wait_for_open_orders(fake_exchanges, "binance", api_key)
        book.set_price("BTC/USDT", "49900")  # the grid's own buy fills, reported by the stream
        await s.next_reply(USER, contains="Bought", timeout=10)

        order = ws.place_by_hand(api_key, "BTC/USDT", "sell", "market", "0.01234")
        [trade] = [t for t in book.trades(api_key) if t.order_id == order.id]
        alert = await s.next_reply(USER, contains=HEADLINE, timeout=10)
        text = alert.plain_text
        assert f"A trade on {account.label} (Binance" in text
        assert trade_line(book, trade) in text, text
        assert "revoke it on Binance Spot now" in text and f"/disconnect {account.label}" in text
        assert f"/connect replace {account.label}" in text and alert.disable_notification is False

        await wait_for_open_orders(fake_exchanges, "binance", api_key)
        book.set_price("BTC/USDT", "60100")  # the grid sells what it bought: ours, no alert
        await s.next_reply(USER, contains="Sold", timeout=10)
        await asyncio.sleep(WINDOW + 1.0)
        assert len(foreign_alerts(s)) == 1
        [recorded] = await s.runtime.store.foreign_trades.for_account(account.id)
        assert (recorded.trade_id, recorded.amount, recorded.price) == (str(trade.id), trade.amount, trade.price)


async def test_a_burst_of_five_foreign_fills_is_one_message(make_strata, fake_exchanges):
    book, ws = fake_exchanges.books["binance"], fake_exchanges.binance_streams
    book.set_price("BTC/USDT", "50000")
    async with make_strata(STRATA_FILL_POLL_SECONDS="3600") as s:
        account, api_key = await connect_with_key(s, fake_exchanges, "binance")
        await streamed(s, account.id)
        orders = []
        for n in range(5):
            book.set_price("BTC/USDT", str(50000 + 10 * n))
            orders.append(ws.place_by_hand(api_key, "BTC/USDT", "buy", "market", "0.001", app="and"))
        trades = [t for t in book.trades(api_key) if t.order_id in {o.id for o in orders}]
        alert = await s.next_reply(USER, contains=HEADLINE, timeout=10)
        assert "5 trades on" in alert.plain_text
        for trade in trades:
            assert trade_line(book, trade) in alert.plain_text
        await asyncio.sleep(WINDOW + 1.0)
        assert len(foreign_alerts(s)) == 1


async def test_with_the_setting_off_a_foreign_trade_is_recorded_but_not_alerted(make_strata, fake_exchanges):
    book, ws = fake_exchanges.books["binance"], fake_exchanges.binance_streams
    book.set_price("BTC/USDT", "50500")
    async with make_strata(STRATA_FILL_POLL_SECONDS="3600") as s:
        account, api_key = await connect_with_key(s, fake_exchanges, "binance")
        await s.send(USER, "/settings")
        menu = await s.next_reply(USER, contains="Settings")
        assert "Trades Strata did not make on your accounts" in menu.plain_text and ": alerted" in menu.plain_text
        await s.press(USER, menu, "Trades not by Strata: turn off")
        assert "not alerted" in (await s.next_reply(USER, contains="Settings")).plain_text
        # A running strategy keeps the account streamed: the trade is seen, and still not alerted.
        await allocate_one_line(s, "/allocate binance grid 100.1 BTC/USDT low=50000 high=60000 levels=2")
        await streamed(s, account.id)
        ws.place_by_hand(api_key, "BTC/USDT", "buy", "market", "0.001")
        await wait_until(lambda: s.runtime.engine.streams.foreign.recorded == 1)
        await asyncio.sleep(WINDOW + 1.0)
        assert foreign_alerts(s) == []

        await s.send(USER, "/settings foreign on")  # turned on again: the old trade is not replayed
        assert ": alerted" in (await s.next_reply(USER, contains="Settings")).plain_text
        ws.place_by_hand(api_key, "BTC/USDT", "buy", "market", "0.002")
        alert = await s.next_reply(USER, contains=HEADLINE, timeout=10)
        assert "A trade on" in alert.plain_text and "0.00200 BTC" in alert.plain_text


async def test_a_restart_never_repeats_an_alert_and_alerts_what_a_stop_left_pending(make_strata, fake_exchanges):
    book, ws = fake_exchanges.books["binance"], fake_exchanges.binance_streams
    book.set_price("BTC/USDT", "50500")
    async with make_strata(STRATA_FILL_POLL_SECONDS="3600") as s:
        account, api_key = await connect_with_key(s, fake_exchanges, "binance")
        await streamed(s, account.id)
        first = ws.place_by_hand(api_key, "BTC/USDT", "buy", "market", "0.001")
        await s.next_reply(USER, contains=HEADLINE, timeout=10)
        assert ws.redeliver(first.id) == 1  # the venue sends the same fill again: nothing new
        s.runtime.engine.streams.foreign.window = 60.0  # the next alert would wait a minute: we stop before
        second = ws.place_by_hand(api_key, "BTC/USDT", "sell", "market", "0.003")
        await wait_until(lambda: s.runtime.engine.streams.foreign.recorded == 2)
        assert len(foreign_alerts(s)) == 1
    [pending] = [t for t in book.trades(api_key) if t.order_id == second.id]
    async with make_strata(STRATA_FILL_POLL_SECONDS="3600") as s:
        alert = await s.next_reply(USER, contains="A trade on", timeout=10)  # the recorded one, after the restart
        assert trade_line(book, pending) in alert.plain_text
        await streamed(s, account.id)
        ws.redeliver(first.id)
        ws.redeliver(second.id)
        await asyncio.sleep(WINDOW + 1.0)
        assert s.runtime.engine.streams.foreign.recorded == 0
        assert len(foreign_alerts(s)) == 2
        assert len(await s.runtime.store.foreign_trades.for_account(account.id)) == 2


async def test_an_idle_account_is_followed_only_while_these_alerts_are_on(strata, fake_exchanges):
    ws = fake_exchanges.binance_streams
    account, api_key = await connect_with_key(strata, fake_exchanges, "binance")
    await streamed(strata, account.id)
    assert ws.subscribed(api_key)
    await strata.send(USER, "/settings foreign off")
    await strata.next_reply(USER, contains="not alerted")
    await wait_until(lambda: not ws.subscribed(api_key))
    await strata.send(USER, "/settings foreign on")
    await wait_until(lambda: ws.subscribed(api_key))


def test_an_alert_lists_ten_trades_and_counts_the_rest():
    line = TradeLine("BTC/USDT", "buy", "0.00100 BTC", "50,000.00 USDT", "50.00 USDT", "2026-12-04 10:00:00 UTC")
    text = foreign_trades_text("binance", "Binance Spot", [line] * 10, 2)
    assert text.startswith("🚨 <b>12 trades on binance (Binance Spot)")
    assert text.count("• BTC/USDT: Bought 0.00100 BTC") == 10 and "…and 2 more" in text
    assert len(foreign_trades_text("a" * 64, "Binance Spot", [line] * 10, 10_000)) < 4096

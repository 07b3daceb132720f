"""`bot.engine.foreign` against a real store and the fake Binance's own executionReports (no Telegram): what is a
foreign trade worth alerting, what is recorded once, and what one alert lists.

The order updates are the fake WebSocket API's `executionReport`s of orders placed "by hand" in the fake book,
read by the real stream protocol (`execution_order`), exactly what the hub hands the engine.
"""

from __future__ import annotations

import dataclasses

from bot.engine.foreign import LISTED, ForeignTrades
from bot.exchanges.streams.binance import execution_order
from tests.chat_helpers import USER
from tests.engine_world import open_world


def report(fake_exchanges, order, trade=None):
    """The engine's view of the fake's executionReport of `order`'s fill `trade` (None: its cancel)."""
    return execution_order(fake_exchanges.binance_streams.execution_report(order, trade))


async def test_a_foreign_fill_is_recorded_once_old_and_tradeless_reports_are_not_and_one_alert_lists_ten(
    fake_exchanges, tmp_path
):
    book, ws = fake_exchanges.books["binance"], fake_exchanges.binance_streams
    book.add_key("foreign-key", "foreign-secret", balances={"USDT": "10000", "BTC": "1"})
    book.set_price("BTC/USDT", "50000")
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        account_id = await world.connect(USER, "binance", "foreign-key", "foreign-secret")
        foreign = ForeignTrades(world.engine.ctx, window=3600)  # flushed by hand below

        orders = [ws.place_by_hand("foreign-key", "BTC/USDT", "buy", "market", "0.001") for _ in range(LISTED + 2)]
        updates = []
        for order in orders:
            [trade] = [t for t in book.trades("foreign-key") if t.order_id == order.id]
            updates.append(report(fake_exchanges, order, trade))
        assert updates[0].market_id == "BTCUSDT" and updates[0].client_order_id.startswith("web_")
        assert [await foreign.seen(account_id, u) for u in updates] == [1] * (LISTED + 2)
        assert await foreign.seen(account_id, updates[0]) == 0, "a re-delivered fill is recorded once"

        resting = ws.place_by_hand("foreign-key", "BTC/USDT", "buy", "limit", "0.001", "40000")
        book.cancel_order("foreign-key", order_id=resting.id)
        assert await foreign.seen(account_id, report(fake_exchanges, resting)) == 0, "a cancel moved no funds"

        account = await world.store.accounts.get(account_id)
        connected_ms = int(account.created_at.timestamp() * 1000)
        old = updates[1]
        before = dataclasses.replace(
            old, trades=(dataclasses.replace(old.trades[0], id="1", timestamp_ms=connected_ms - 60_000),)
        )
        assert await foreign.seen(account_id, before) == 0, "a trade from before /connect is not news"

        assert await foreign.flush(account_id) is True
        assert await foreign.flush(account_id) is False, "each trade is alerted once"
        [alert] = await world.alerts("error")
        assert alert["text"].startswith(f"🚨 <b>{LISTED + 2} trades on binance (Binance Spot)")
        assert alert["text"].count("• BTC/USDT: Bought 0.00100 BTC at 50,000.00 USDT") == LISTED
        assert "…and 2 more" in alert["text"]
        await foreign.close()
    finally:
        await world.close()


async def test_a_paper_account_has_no_foreign_trades(fake_exchanges, tmp_path):
    book, ws = fake_exchanges.books["binance"], fake_exchanges.binance_streams
    book.add_key("paper-probe", "s", balances={"USDT": "1000"})
    book.set_price("BTC/USDT", "50000")
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.store.users.upsert(USER, USER)
        async with world.store.db.transaction() as tx:
            paper_id = await world.store.accounts.create(tx, user_id=USER, venue="paper:binance", label="paper")
        order = ws.place_by_hand("paper-probe", "BTC/USDT", "buy", "market", "0.001")
        [trade] = book.trades("paper-probe")
        assert await ForeignTrades(world.engine.ctx).seen(paper_id, report(fake_exchanges, order, trade)) == 0
    finally:
        await world.close()

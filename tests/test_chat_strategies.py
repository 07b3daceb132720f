"""Strategies driven from the chat end to end: /allocate (one-line and guided), fills as alerts, /status,
/pause, /resume, /stop and /panic — real PTB against the fake Telegram, real ccxt against the fake venues."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from tests.chat_helpers import OTHER, USER, connect_with_key


def open_orders(fake_exchanges, venue: str, api_key: str) -> list:
    return fake_exchanges.books[venue].open_orders(api_key)


async def wait_for_open_orders(fake_exchanges, venue: str, api_key: str, timeout: float = 10.0) -> list:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (orders := open_orders(fake_exchanges, venue, api_key)):
        assert asyncio.get_running_loop().time() < deadline, "the strategy placed no resting order"
        await asyncio.sleep(0.05)
    return orders


async def allocate_one_line(s, text: str, user: int = USER):
    await s.send(user, text)
    summary = await s.next_reply(user, contains="Allocation summary")
    await s.press(user, summary, "Confirm allocation")
    return await s.next_reply(user, contains="is running")


async def test_one_line_dca_buys_at_once_and_the_fill_alert_arrives_exactly_once(strata, fake_exchanges):
    # The documented example: 10 USDT per buy on a market whose minimum order is 10 USDT, at a price where
    # 10 USDT rounds down to an amount worth a little less: the bot buys the smallest valid amount instead.
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50123")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance")
    running = await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=10")
    assert "DCA" in running.text
    alert = await strata.next_reply(USER, contains="Bought", timeout=15)
    assert "Bought 0.00020 BTC at 50,123.00 USDT" in alert.text and "Budget 100.00 USDT: invested" in alert.text
    orders = fake_exchanges.books["binance"].all_orders(api_key)
    assert len(orders) == 1 and orders[0].side == "buy"
    await strata.send(USER, "/status")
    status = await strata.next_reply(USER, contains="Your strategies")
    assert "DCA" in status.text and "running" in status.text
    fills = [m for m in strata.tg.sent if m.chat_id == USER and "Bought" in (m.text or "")]
    assert len(fills) == 1


async def test_guided_allocation_reaches_the_same_summary(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_with_key(strata, fake_exchanges, "binance")
    await strata.send(USER, "/allocate")
    menu = await strata.next_reply(USER, contains="Which account")
    await strata.press(USER, menu, 0)
    kinds = await strata.next_reply(USER, contains="Which strategy")
    await strata.press(USER, kinds, "DCA")
    markets = await strata.next_reply(USER, contains="Which market")
    await strata.press(USER, markets, "BTC/USDT")
    await strata.next_reply(USER, contains="What budget")
    await strata.send(USER, "100")
    await strata.next_reply(USER, contains="Parameters of")
    await strata.send(USER, "every=1h amount=20")
    summary = await strata.next_reply(USER, contains="Allocation summary")
    assert "every=1h" in summary.text and "amount=20" in summary.text and "100" in summary.text
    await strata.press(USER, summary, "Confirm allocation")
    await strata.next_reply(USER, contains="is running")
    await strata.next_reply(USER, contains="Bought", timeout=15)


async def test_allocation_mistakes_get_clear_answers_and_create_nothing(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_with_key(strata, fake_exchanges, "binance")
    cases = [
        ("/allocate nosuch dca 100 BTC/USDT", "no account labelled"),
        ("/allocate binance moon 100 BTC/USDT", "moon"),
        ("/allocate binance dca -5 BTC/USDT", "greater than 0"),
        ("/allocate binance dca 100 NOPE/USDT", "not traded"),
        ("/allocate binance dca 999999 BTC/USDT amount=10", "at most"),
        ("/allocate binance dca 100 BTC/USDT every=0m", "every"),
        ("/allocate binance dca 100 BTC/USDT amount=0.01", "minimum"),
        ("/allocate binance", "Usage"),
    ]
    for text, expected in cases:
        await strata.send(USER, text)
        answer = await strata.next_reply(USER)
        assert expected.lower() in answer.text.lower(), (text, answer.text)
    assert await strata.runtime.store.strategies.list_for_user(USER) == []


async def test_pause_resume_and_forged_ids_of_other_users(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_with_key(strata, fake_exchanges, "binance")
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=10")
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)
    await strata.send(OTHER, f"/pause {strategy.id}")
    assert "no such strategy" in (await strata.next_reply(OTHER)).text.lower()
    await strata.send(USER, "/pause")
    menu = await strata.next_reply(USER, contains="Which strategy")
    # A tampered client of another user presses the owner's button: nothing changes for the owner.
    strata.tg.press_callback_data(OTHER, menu.message_id, f"ctl:pause:{strategy.id}", chat_id=USER)
    refused = await strata.next_reply(USER, contains="no such strategy")
    assert refused.method.startswith("edit")
    assert (await strata.runtime.store.strategies.get(strategy.id)).status == "active"
    await strata.send(USER, f"/pause {strategy.id}")
    await strata.next_reply(USER, contains="paused")
    assert (await strata.runtime.store.strategies.get(strategy.id)).status == "paused"
    await strata.send(USER, f"/resume {strategy.id}")
    await strata.next_reply(USER, contains="running again")
    assert (await strata.runtime.store.strategies.get(strategy.id)).status == "active"


async def test_panic_pauses_everything_and_leaves_no_open_order(strata, fake_exchanges):
    book = fake_exchanges.books["kraken"]
    book.set_price("BTC/USD", "65000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "kraken", balances={"USD": Decimal(5000)})
    await allocate_one_line(strata, "/allocate kraken grid 500 BTC/USD low=60000 high=70000 levels=5")
    await wait_for_open_orders(fake_exchanges, "kraken", api_key)
    await strata.send(USER, "/panic")
    confirm = await strata.next_reply(USER, contains="Pause")
    await strata.press(USER, confirm, "Pause and cancel")
    done = await strata.next_reply(USER, contains="Paused", timeout=15)
    assert "cancelled" in done.text
    assert open_orders(fake_exchanges, "kraken", api_key) == []
    assert all(s.status == "paused" for s in await strata.runtime.store.strategies.list_for_user(USER))


async def test_disconnect_cancels_the_strategies_open_orders(strata, fake_exchanges):
    fake_exchanges.books["kraken"].set_price("BTC/USD", "65000")
    account, api_key = await connect_with_key(strata, fake_exchanges, "kraken", balances={"USD": Decimal(5000)})
    await allocate_one_line(strata, "/allocate kraken grid 500 BTC/USD low=60000 high=70000 levels=5")
    await wait_for_open_orders(fake_exchanges, "kraken", api_key)
    await strata.send(USER, "/disconnect kraken")
    confirm = await strata.next_reply(USER, contains="Disconnect")
    await strata.press(USER, confirm, "Confirm disconnect")
    await strata.next_reply(USER, contains="destroyed", timeout=15)
    assert open_orders(fake_exchanges, "kraken", api_key) == []
    assert await strata.runtime.store.accounts.get(account.id) is None


async def test_stop_and_sell_leaves_no_order_sells_the_holdings_and_sums_up_what_the_venue_recorded(
    strata, fake_exchanges
):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance", balances={"USDT": Decimal(1000)})
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=20")
    await strata.next_reply(USER, contains="Bought", timeout=15)
    book.set_price("BTC/USDT", "55000")
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)
    await strata.send(USER, f"/stop {strategy.id}")
    question = await strata.next_reply(USER, contains="Keep what it bought")
    await strata.press(USER, question, "Stop and sell")
    summary = await strata.next_reply(USER, contains="Realised", timeout=15)
    assert open_orders(fake_exchanges, "binance", api_key) == []
    trades = book.trades(api_key, "BTC/USDT")
    buys = [t for t in trades if t.side == "buy"]
    sells = [t for t in trades if t.side == "sell"]
    assert sum(t.amount for t in sells) == sum(t.amount for t in buys) - sum(
        t.fee for t in buys if t.fee_currency == "BTC"
    )
    invested = sum(t.cost for t in buys) + sum(t.fee for t in buys if t.fee_currency == "USDT")
    returned = sum(t.cost for t in sells) - sum(t.fee for t in sells if t.fee_currency == "USDT")
    assert f"Invested {invested.quantize(Decimal('0.01')):,} USDT" in summary.plain_text
    assert f"returned {returned.quantize(Decimal('0.01')):,} USDT" in summary.plain_text
    assert (await strata.runtime.store.strategies.get(strategy.id)).status == "stopped"
    # Stopped already: said at once, not asked "keep or sell?" only to be told so after the choice.
    await strata.send(USER, f"/stop {strategy.id}")
    again = await strata.next_reply(USER, contains="already stopped")
    assert again.buttons == []
    assert len([m for m in strata.tg.sent if m.chat_id == USER and "Keep what it bought" in (m.text or "")]) == 1


async def test_disconnect_keeps_the_key_when_open_orders_could_not_be_cancelled(strata, fake_exchanges):
    book = fake_exchanges.books["kraken"]
    book.set_price("BTC/USD", "65000")
    account, api_key = await connect_with_key(strata, fake_exchanges, "kraken", balances={"USD": Decimal(5000)})
    await allocate_one_line(strata, "/allocate kraken grid 500 BTC/USD low=60000 high=70000 levels=3")
    resting = await wait_for_open_orders(fake_exchanges, "kraken", api_key)
    book.inject("server_error", count=100, path="CancelOrder")
    await strata.send(USER, "/disconnect kraken")
    confirm = await strata.next_reply(USER, contains="Disconnect")
    await strata.press(USER, confirm, "Confirm disconnect")
    refusal = await strata.next_reply(USER, contains="could not cancel", timeout=60)
    assert "nothing was deleted" in refusal.text
    assert len(open_orders(fake_exchanges, "kraken", api_key)) == len(resting)
    assert await strata.runtime.store.accounts.credential(account.id) is not None
    book.faults.clear()
    await strata.send(USER, "/disconnect kraken")
    confirm = await strata.next_reply(USER, contains="Disconnect")
    await strata.press(USER, confirm, "Confirm disconnect")
    await strata.next_reply(USER, contains="destroyed", timeout=30)
    assert open_orders(fake_exchanges, "kraken", api_key) == []


async def test_two_previews_cannot_promise_the_same_money_twice(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance", balances={"USDT": Decimal(1000)})
    summaries = []
    for _ in range(2):
        await strata.send(USER, "/allocate binance dca 800 BTC/USDT every=1d amount=20")
        summaries.append(await strata.next_reply(USER, contains="Allocation summary"))
    await strata.press(USER, summaries[0], "Confirm allocation")
    await strata.next_reply(USER, contains="expired")  # the newer summary replaced it
    # The balance is checked again at Confirm: 500 USDT were spent elsewhere since the summary.
    book.key(api_key).balances["USDT"] = Decimal(500)
    await strata.press(USER, summaries[1], "Confirm allocation")
    refusal = await strata.next_reply(USER, contains="at most", timeout=15)
    assert "800" in refusal.text
    assert await strata.runtime.store.strategies.list_for_user(USER) == []

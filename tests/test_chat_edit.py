"""/edit <id> budget=… name=…: a running or paused strategy's budget changes within /allocate's ceiling rules
(never below what it used plus what its orders reserve, never above what the account's free balance leaves),
after a summary with Confirm/Cancel, once; the engine uses the new budget from its next decision (a grid's ladder
re-split, its per-level minimum still met). Real PTB against the fake Telegram, real ccxt against the fake
venues; the figures are checked against the fake exchange's own trades and wallet."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from bot.formatting import money
from bot.strategies.base import floor_to
from tests.chat_helpers import OTHER, USER, connect_with_key
from tests.test_chat_strategies import allocate_one_line, open_orders, wait_for_open_orders

SORRY = "something went wrong"
CENT = Decimal("0.01")


async def _strategy(s, strategy_id: int):
    return await s.runtime.store.strategies.get(strategy_id)


async def test_edit_budget_and_name_within_the_ceiling_rules_confirmed_once(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance", balances={"USDT": Decimal(1000)})
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1w amount=10")
    await strata.next_reply(USER, contains="Bought", timeout=15)
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)
    sid = strategy.id

    for text, expected in [
        ("/edit", "Usage: /edit"), (f"/edit {sid}", "Usage: /edit"), ("/edit x budget=5", "Usage: /edit"),
        (f"/edit {sid} budget", "Usage: /edit"), (f"/edit {sid} budget=abc", "budget"),
        (f"/edit {sid} colour=red", "cannot change colour"), (f"/edit {sid} budget=-5", "greater than 0"),
        ("/edit 999999 budget=50", "No such strategy"),
    ]:
        await strata.send(USER, text)
        answer = await strata.next_reply(USER)
        assert expected in answer.text, (text, answer.text)
        assert len(answer.text) < 300 and "Confirm" not in answer.text
    await strata.send(OTHER, f"/edit {sid} budget=50")  # another user's strategy does not exist for them
    assert "No such strategy" in (await strata.next_reply(OTHER)).text

    # Below what it has used: refused, naming the minimum — the fake venue's own trade, fee included.
    [trade] = book.trades(api_key)
    fee_quote = trade.fee if trade.fee_currency == "USDT" else trade.fee * trade.price
    used = trade.cost + fee_quote
    minimum = (used / CENT).to_integral_value(rounding="ROUND_CEILING") * CENT
    await strata.send(USER, f"/edit {sid} budget=5")
    refused = await strata.next_reply(USER, contains="no less than")
    assert f"no less than {money(minimum, 'USDT')}" in refused.text, refused.text
    # Above what the account's free balance allows: refused, naming the most (the fake wallet's free USDT).
    free = book.key(api_key).free("USDT")
    most = floor_to(used + free, CENT)
    await strata.send(USER, f"/edit {sid} budget=5000")
    refused = await strata.next_reply(USER, contains="at most")
    assert f"at most {money(most, 'USDT')}" in refused.text, refused.text
    assert (await _strategy(strata, sid)).budget == Decimal(100)

    # Exactly the most the account allows, and a name: a summary first, nothing changed before Confirm.
    await strata.send(USER, f"/edit {sid} budget={most} name=core savings")
    summary = await strata.next_reply(USER, contains="Change")
    assert f"{money(Decimal(100), 'USDT')} → {money(most, 'USDT')}" in summary.plain_text
    assert f"no less than {money(minimum, 'USDT')}" in summary.plain_text
    assert "“core savings”" in summary.plain_text
    assert (await _strategy(strata, sid)).budget == Decimal(100)
    confirm_data = next(b["callback_data"] for row in summary.reply_markup["inline_keyboard"] for b in row
                        if b["text"] == "Confirm change")
    await strata.press(USER, summary, "Confirm change")
    await strata.next_reply(USER, contains="changed")
    edited = await _strategy(strata, sid)
    assert edited.budget == most and edited.name == "core savings"
    strata.tg.press_callback_data(USER, summary, confirm_data)  # the same Confirm again: nothing more
    await strata.next_reply(USER, contains="expired")
    await strata.send(USER, f"/status {sid}")
    detail = await strata.next_reply(USER, contains="core savings")
    shown = detail.plain_text.replace(",", "")  # /status's own number format is another item's
    assert f"budget {most.normalize():f}" in shown or f"budget {most:.2f}" in shown, detail.plain_text

    # Cancel changes nothing, and its Confirm then starts nothing.
    await strata.send(USER, f"/edit {sid} budget=50")
    summary = await strata.next_reply(USER, contains="Change")
    confirm_data = next(b["callback_data"] for row in summary.reply_markup["inline_keyboard"] for b in row
                        if b["text"] == "Confirm change")
    await strata.press(USER, summary, "Cancel")
    await strata.next_reply(USER, contains="nothing was changed")
    strata.tg.press_callback_data(USER, summary, confirm_data)
    await strata.next_reply(USER, contains="expired")
    assert (await _strategy(strata, sid)).budget == most

    # A name alone: the summary speaks of the name only, not of a new budget.
    await strata.send(USER, f"/edit {sid} name=long haul")
    summary = await strata.next_reply(USER, contains="Change")
    assert "“long haul”" in summary.plain_text and "budget" not in summary.plain_text.lower(), summary.plain_text
    await strata.press(USER, summary, "Cancel")
    await strata.next_reply(USER, contains="nothing was changed")

    # A stopped strategy cannot be edited.
    await strata.runtime.strategies.stop(USER, sid, sell=False)
    await strata.send(USER, f"/edit {sid} budget=50")
    assert "only a running or paused" in (await strata.next_reply(USER)).text
    await asyncio.sleep(0.2)
    assert not [m for m in strata.tg.sent if m.chat_id in (USER, OTHER) and SORRY in (m.text or "")]


async def test_a_grids_new_budget_is_split_over_its_ladder_at_the_next_decision_and_keeps_its_minimum(
    strata, fake_exchanges
):
    book = fake_exchanges.books["kraken"]
    book.set_price("BTC/USD", "65000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "kraken", balances={"USD": Decimal(5000)})
    await allocate_one_line(strata, "/allocate kraken grid 500 BTC/USD low=60000 high=70000 levels=5")
    before = await wait_for_open_orders(fake_exchanges, "kraken", api_key)
    for _ in range(200):  # buys at 60,000 and 62,500; sells at 67,500 and 70,000 once the start purchase filled
        if len(before) == 4:
            break
        await asyncio.sleep(0.05)
        before = open_orders(fake_exchanges, "kraken", api_key)
    assert sorted((o.side, o.price) for o in before) == [
        ("buy", 60000), ("buy", 62500), ("sell", 67500), ("sell", 70000)]
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)
    sid = strategy.id
    reserved = await strata.runtime.store.orders.reserved_for(sid)
    used = strategy.spent - strategy.received  # the coins bought at start for the sells above 65,000
    assert used > 0

    # What it used and what its open buys reserve: the budget cannot go below that.
    await strata.send(USER, f"/edit {sid} budget=100")
    refused = await strata.next_reply(USER, contains="no less than")
    minimum = ((used + reserved) / CENT).to_integral_value(rounding="ROUND_CEILING") * CENT
    assert money(minimum, "USD") in refused.text

    await strata.send(USER, f"/pause {sid}")
    await strata.next_reply(USER, contains="is paused")
    assert open_orders(fake_exchanges, "kraken", api_key) == []
    # Paused, nothing is reserved, but the coins it holds were bought with its budget.
    await strata.send(USER, f"/edit {sid} budget=0.5")
    refused = await strata.next_reply(USER, contains="no less than")
    assert money((used / CENT).to_integral_value(rounding="ROUND_CEILING") * CENT, "USD") in refused.text

    await strata.send(USER, f"/edit {sid} budget=1000")
    summary = await strata.next_reply(USER, contains="Change")
    assert "Each grid level then buys for up to" in summary.plain_text
    await strata.press(USER, summary, "Confirm change")
    await strata.next_reply(USER, contains="changed")
    await strata.send(USER, f"/resume {sid}")
    await strata.next_reply(USER, contains="running again")
    after = await wait_for_open_orders(fake_exchanges, "kraken", api_key)
    for _ in range(200):
        if len(after) == 4:
            break
        await asyncio.sleep(0.05)
        after = open_orders(fake_exchanges, "kraken", api_key)
    assert sorted((o.side, o.price) for o in after) == sorted((o.side, o.price) for o in before)
    # The same levels: each buy for twice as much (the new budget split as the old one was), each sell of the
    # coins it already holds.
    for old, new in zip(sorted(before, key=lambda o: o.price), sorted(after, key=lambda o: o.price), strict=True):
        if old.side == "sell":
            assert new.amount == old.amount
            continue
        ratio = (new.amount * new.price) / (old.amount * old.price)
        assert Decimal("1.99") < ratio < Decimal("2.01"), (old, new)
    strategy = await strata.runtime.store.strategies.get(sid)
    total = sum((o.amount * o.price for o in after if o.side == "buy"), Decimal(0))
    assert strategy.spent - strategy.received + total <= Decimal(1000)


async def test_edit_is_in_help_the_command_menu_and_the_suggestions(strata):
    await strata.send(USER, "/help")
    assert "/edit" in (await strata.next_reply(USER, contains="Commands")).text
    assert "edit" in {c["command"] for c in strata.tg.commands}
    for typed, expected in (("/eidt 3 budget=50", "Did you mean /edit?"), ("edit", "slash: /edit")):
        await strata.send(USER, typed)
        assert expected in (await strata.next_reply(USER)).text, typed

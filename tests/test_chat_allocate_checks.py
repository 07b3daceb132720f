"""Allocation flows that must not mislead: /cancel ends a pending summary, a newer summary expires older ones,
and every check that can be made before Confirm is made before Confirm (a rebalance on futures, a grid whose
budget per level is below the market minimum) — real PTB against the fake Telegram, real ccxt against the
fake venues."""

from __future__ import annotations

import asyncio
import re
from decimal import Decimal

from tests.chat_helpers import USER, connect_with_key
from tests.test_chat_strategies import wait_for_open_orders


async def strategies(s) -> list:
    return await s.runtime.store.strategies.list_for_user(USER)


async def test_cancel_ends_a_pending_one_line_summary_and_its_confirm_then_starts_nothing(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance")
    await strata.send(USER, "/allocate binance dca 100 BTC/USDT every=1d amount=20")
    summary = await strata.next_reply(USER, contains="Allocation summary")

    await strata.send(USER, "/cancel")
    answer = await strata.next_reply(USER)
    assert "Cancelled" in answer.text and "nothing to cancel" not in answer.text

    await strata.press(USER, summary, "Confirm allocation")
    refusal = await strata.next_reply(USER, contains="expired")
    assert "/allocate" in refusal.text
    assert await strategies(strata) == []
    assert fake_exchanges.books["binance"].all_orders(api_key) == []


async def test_the_cancel_button_of_a_summary_also_makes_its_confirm_start_nothing(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_with_key(strata, fake_exchanges, "binance")
    await strata.send(USER, "/allocate binance dca 100 BTC/USDT every=1d amount=20")
    summary = await strata.next_reply(USER, contains="Allocation summary")
    confirm_data = next(b["callback_data"] for row in summary.reply_markup["inline_keyboard"] for b in row
                        if b["text"] == "Confirm allocation")
    await strata.press(USER, summary, "Cancel")
    await strata.next_reply(USER, contains="nothing was allocated")

    # A client that still shows the old keyboard (or a replayed press) sends the Confirm data anyway.
    strata.tg.press_callback_data(USER, summary, confirm_data)
    await strata.next_reply(USER, contains="expired")
    assert await strategies(strata) == []


async def test_a_newer_summary_expires_the_older_one(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_with_key(strata, fake_exchanges, "binance", balances={"USDT": Decimal(1000)})
    summaries = []
    for budget in (100, 200):
        await strata.send(USER, f"/allocate binance dca {budget} BTC/USDT every=1d amount=20")
        summaries.append(await strata.next_reply(USER, contains="Allocation summary"))

    await strata.press(USER, summaries[0], "Confirm allocation")
    await strata.next_reply(USER, contains="expired")
    assert await strategies(strata) == []

    await strata.press(USER, summaries[1], "Confirm allocation")
    await strata.next_reply(USER, contains="is running")
    [strategy] = await strategies(strata)
    assert strategy.budget == Decimal(200)


async def test_a_rebalance_on_binance_futures_is_refused_at_allocate_with_the_reason(strata, fake_exchanges):
    fake_exchanges.books["binanceusdm"].set_price("BTC/USDT:USDT", "50000")
    await connect_with_key(strata, fake_exchanges, "binanceusdm")

    await strata.send(USER, "/allocate binanceusdm rebalance 500 USDT weights=BTC:50,ETH:50 band=5")
    refusal = await strata.next_reply(USER)

    assert "Allocation summary" not in refusal.text
    assert "Rebalance" in refusal.text and "spot" in refusal.text.lower()
    assert await strategies(strata) == []


async def test_the_guided_flow_refuses_a_rebalance_on_futures_as_soon_as_it_is_picked(strata, fake_exchanges):
    await connect_with_key(strata, fake_exchanges, "binanceusdm")
    await strata.send(USER, "/allocate")
    menu = await strata.next_reply(USER, contains="Which account")
    await strata.press(USER, menu, 0)
    kinds = await strata.next_reply(USER, contains="Which strategy")
    await strata.press(USER, kinds, "Rebalance")
    refusal = await strata.next_reply(USER, contains="spot")
    assert "Which quote asset" not in refusal.text


async def test_a_grid_whose_budget_per_level_is_below_the_minimum_is_refused_with_the_smallest_budget_that_works(
    strata, fake_exchanges
):
    # BTC/USDT's minimum order on the fake Binance is 10 USDT (NOTIONAL). At 50,000 a 9-level grid from 40,000
    # to 60,000 buys at the 4 levels below the price and sells above it the coins bought at start for the other 4:
    # 30 USDT is about 3.8 per grid.
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance", balances={"USDT": Decimal(1000)})
    grid = "BTC/USDT low=40000 high=60000 levels=9"

    await strata.send(USER, f"/allocate binance grid 30 {grid}")
    refusal = await strata.next_reply(USER)

    assert "Allocation summary" not in refusal.text
    assert "minimum" in refusal.text
    found = re.search(r"minimum budget is ([0-9.]+) USDT", refusal.text)
    assert found, refusal.text
    smallest = Decimal(found.group(1))
    fewer = re.search(r"use levels=(\d+)", refusal.text)
    assert fewer, refusal.text
    assert await strategies(strata) == []

    # One cent less is refused too: it is the smallest budget.
    await strata.send(USER, f"/allocate binance grid {smallest - Decimal('0.01')} {grid}")
    assert f"minimum budget is {smallest} USDT" in (await strata.next_reply(USER)).text
    # The suggested levels work with the original budget.
    await strata.send(USER, f"/allocate binance grid 30 BTC/USDT low=40000 high=60000 levels={fewer.group(1)}")
    await strata.next_reply(USER, contains="Allocation summary")
    # And the smallest budget, once confirmed, arms every level of the range on the venue: buys below the price,
    # sells above it (50,000 itself, the price, has no order: its level sells at 52,500).
    await strata.send(USER, f"/allocate binance grid {smallest} {grid}")
    summary = await strata.next_reply(USER, contains="Allocation summary")
    await strata.press(USER, summary, "Confirm allocation")
    await strata.next_reply(USER, contains="is running")
    orders = await wait_for_open_orders(fake_exchanges, "binance", api_key)
    for _ in range(100):
        if len(orders) == 8:
            break
        await asyncio.sleep(0.05)
        orders = fake_exchanges.books["binance"].open_orders(api_key)
    assert sorted((o.price, o.side) for o in orders) == [
        *((Decimal(p), "buy") for p in (40000, 42500, 45000, 47500)),
        *((Decimal(p), "sell") for p in (52500, 55000, 57500, 60000)),
    ]

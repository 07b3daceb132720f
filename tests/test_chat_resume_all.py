""""Resume all" after /panic resumes exactly what the panic paused — not what the user paused before, not a
stopped strategy, not one on an account whose key is rejected (each skipped one named with why) — re-arms the
resting orders, and a second press (or `/resume all`) doubles nothing. Real PTB against the fake Telegram, real
ccxt against the fake venues."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from bot.engine.actions import reject_key
from storage.accounts import KEY_REJECTED
from tests.chat_helpers import USER, connect_with_key
from tests.test_chat_strategies import allocate_one_line, open_orders, wait_for_open_orders

SORRY = "something went wrong"


async def _statuses(s) -> dict[int, str]:
    return {x.id: x.status for x in await s.runtime.store.strategies.list_for_user(USER)}


async def test_resume_all_resumes_exactly_what_the_panic_paused_and_a_second_press_doubles_nothing(
    strata, fake_exchanges
):
    kraken, binance = fake_exchanges.books["kraken"], fake_exchanges.books["binance"]
    kraken.set_price("BTC/USD", "65000")
    binance.set_price("BTC/USDT", "50000")
    _, kraken_key = await connect_with_key(strata, fake_exchanges, "kraken", balances={"USD": Decimal(5000)})
    await connect_with_key(strata, fake_exchanges, "binance", balances={"USDT": Decimal(5000)})
    broken, broken_key = await connect_with_key(strata, fake_exchanges, "binance", balances={"USDT": Decimal(5000)})

    await allocate_one_line(strata, "/allocate kraken grid 500 BTC/USD low=60000 high=65000 levels=3")
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1w amount=10 name=mine")
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1w amount=10 name=done")
    await allocate_one_line(strata, f"/allocate {broken.label} dca 100 BTC/USDT every=1w amount=10 name=broken")
    grid, mine, done, on_broken = sorted(await _statuses(strata))
    armed = await wait_for_open_orders(fake_exchanges, "kraken", kraken_key)
    await strata.send(USER, f"/pause {mine}")  # the user's own pause, before the panic
    await strata.next_reply(USER, contains="is paused")
    await strata.runtime.strategies.stop(USER, done, sell=False)

    await strata.send(USER, "/panic")
    await strata.press(USER, await strata.next_reply(USER, contains="Pause"), "Pause and cancel")
    answer = await strata.next_reply(USER, contains="Paused 2 strategies", timeout=15)
    assert "Resume all" in answer.text
    assert open_orders(fake_exchanges, "kraken", kraken_key) == []
    # The second account's key is revoked while everything is paused, and the engine is told so by the venue.
    binance.revoke_key(broken_key)
    assert await reject_key(strata.runtime.engine.ctx, broken.id, "API key revoked")
    assert (await strata.runtime.store.accounts.get(broken.id)).status == KEY_REJECTED

    await strata.press(USER, answer, "Resume all")
    resumed = await strata.next_reply(USER, contains="Resumed 1 strategy", timeout=15)
    assert f"#{grid} Grid" in resumed.text
    assert f"#{mine} DCA" in resumed.text and "paused it yourself" in resumed.text
    assert f"#{on_broken} DCA" in resumed.text and f"API key of {broken.label}" in resumed.text
    assert f"#{done}" not in resumed.text
    assert await _statuses(strata) == {grid: "active", mine: "paused", done: "stopped", on_broken: "paused"}
    rearmed = await wait_for_open_orders(fake_exchanges, "kraken", kraken_key)
    await asyncio.sleep(0.5)  # the re-armed ladder is complete
    rearmed = open_orders(fake_exchanges, "kraken", kraken_key)
    assert sorted(o.price for o in rearmed) == sorted(o.price for o in armed)

    # The same button pressed again (a replayed press), then the one-line form: nothing is resumed twice.
    strata.tg.press_callback_data(USER, answer, "panic:resume")
    again = await strata.next_reply(USER, contains="Nothing to resume")
    assert "Still paused (2)" in again.text
    await strata.send(USER, "/resume all")
    await strata.next_reply(USER, contains="Nothing to resume")
    await asyncio.sleep(0.5)
    assert sorted(o.price for o in open_orders(fake_exchanges, "kraken", kraken_key)) == sorted(
        o.price for o in armed)
    assert await _statuses(strata) == {grid: "active", mine: "paused", done: "stopped", on_broken: "paused"}
    assert not [m for m in strata.tg.sent if m.chat_id == USER and SORRY in (m.text or "")]


async def test_resume_all_as_a_command_and_a_pause_after_the_panic_is_the_users(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_with_key(strata, fake_exchanges, "binance", balances={"USDT": Decimal(5000)})
    for name in ("a", "b"):
        await allocate_one_line(strata, f"/allocate binance dca 100 BTC/USDT every=1w amount=10 name={name}")
    first, second = sorted(await _statuses(strata))
    await strata.send(USER, "/resume all")
    await strata.next_reply(USER, contains="Nothing to resume")
    await strata.runtime.strategies.panic(USER)
    # After the panic the user resumes one and pauses it again: now it is their own pause.
    await strata.runtime.strategies.resume(USER, second)
    await strata.runtime.strategies.pause(USER, second)
    await strata.send(USER, "/resume all")
    answer = await strata.next_reply(USER, contains="Resumed 1 strategy")
    assert f"#{first} DCA" in answer.text and "paused it yourself" in answer.text
    assert await _statuses(strata) == {first: "active", second: "paused"}

"""Stop means stopped: /pause, /stop, /panic and /disconnect against orders whose request is still in flight.

The fake venue either holds an order's answer after placing it (`hold`) or holds the request before acting on it
(`timeout` with a hang shorter or longer than the client's timeout). After the command answers, no order of
what it stopped may be sent any more, every order it could reach is cancelled on the venue's book, and an order
whose fate is not known yet is said to be so, resolved in the background and alerted once.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from storage.orders import LIVE
from tests.chat_helpers import USER, connect_with_key
from tests.engine_world import open_world
from tests.test_engine_dca import wait_for

GRID = "/allocate binance grid 500 BTC/USDT low=40000 high=50000 levels=3"  # two buy limits below 50000, no sell


async def allocate_grid(s, text: str = GRID) -> int:
    await s.send(USER, text)
    summary = await s.next_reply(USER, contains="Allocation summary")
    await s.press(USER, summary, "Confirm allocation")
    await s.next_reply(USER, contains="is running")
    [strategy] = await s.runtime.store.strategies.list_for_user(USER)
    return strategy.id


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


#: Per venue: the market at its price, the grid (two buy limits below the price), and the order request's path.
VENUES = {
    "binance": ("BTC/USDT", "50000", GRID, "/api/v3/order"),
    "kraken": ("BTC/USD", "65000", "/allocate kraken grid 500 BTC/USD low=60000 high=65000 levels=3", "AddOrder"),
}


async def grid_with_a_held_answer(s, fake_exchanges, venue: str = "binance", hold_seconds: float = 4.0):
    """A grid whose first buy limit is on the venue's book while its answer is still held by the venue."""
    symbol, price, allocation, order_path = VENUES[venue]
    book = fake_exchanges.books[venue]
    book.set_price(symbol, price)
    _, api_key = await connect_with_key(s, fake_exchanges, venue)
    book.inject("hold", path=order_path, method="POST", seconds=hold_seconds)
    strategy_id = await allocate_grid(s, allocation)
    await wait_until(lambda: book.open_orders(api_key))  # placed; the bot has not heard back yet
    return book, api_key, strategy_id


async def no_live_orders(s) -> bool:
    return not await s.runtime.store.orders.in_states(LIVE)


@pytest.mark.parametrize("venue", ["binance", "kraken"])
async def test_panic_while_an_order_answer_is_held_leaves_no_open_order(strata, fake_exchanges, venue):
    book, api_key, _ = await grid_with_a_held_answer(strata, fake_exchanges, venue)
    await strata.send(USER, "/panic")
    confirm = await strata.next_reply(USER, contains="Pause")
    await strata.press(USER, confirm, "Pause and cancel")
    pressed = asyncio.get_running_loop().time()
    done = await strata.next_reply(USER, contains="Paused", timeout=20)
    await asyncio.sleep(max(0.0, pressed + 10 - asyncio.get_running_loop().time()))
    assert book.open_orders(api_key) == []
    assert [o.status for o in book.all_orders(api_key)] == ["canceled"]
    assert await no_live_orders(strata)
    # The answer counts what the venue really cancelled: the held buy; the second buy was never sent.
    assert "cancelled 1 open order" in done.plain_text
    assert "could not be confirmed" not in done.plain_text


async def test_pause_while_an_order_answer_is_held_leaves_no_open_order(strata, fake_exchanges):
    book, api_key, strategy_id = await grid_with_a_held_answer(strata, fake_exchanges)
    await strata.send(USER, f"/pause {strategy_id}")
    pressed = asyncio.get_running_loop().time()
    done = await strata.next_reply(USER, contains="paused", timeout=20)
    await asyncio.sleep(max(0.0, pressed + 10 - asyncio.get_running_loop().time()))
    assert book.open_orders(api_key) == []
    assert [o.status for o in book.all_orders(api_key)] == ["canceled"]
    assert "Cancelled 1 resting order" in done.plain_text
    assert (await strata.runtime.store.strategies.get(strategy_id)).status == "paused"


async def test_stop_while_an_order_answer_is_held_leaves_no_open_order(strata, fake_exchanges):
    book, api_key, strategy_id = await grid_with_a_held_answer(strata, fake_exchanges)
    await strata.send(USER, f"/stop {strategy_id}")
    question = await strata.next_reply(USER, contains="Keep what it bought")
    await strata.press(USER, question, "Stop and keep")
    pressed = asyncio.get_running_loop().time()
    summary = await strata.next_reply(USER, contains="budget is released", timeout=20)
    await asyncio.sleep(max(0.0, pressed + 10 - asyncio.get_running_loop().time()))
    assert book.open_orders(api_key) == []
    assert [o.status for o in book.all_orders(api_key)] == ["canceled"]
    assert "Cancelled 1 open order" in summary.plain_text
    assert (await strata.runtime.store.strategies.get(strategy_id)).status == "stopped"


async def test_disconnect_with_an_order_on_its_way_cancels_it_before_the_key_is_shredded(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    account, api_key = await connect_with_key(strata, fake_exchanges, "binance")
    book.hang_seconds = 4.0  # shorter than the client's timeout: the venue acts on it, then answers
    book.inject("timeout", path="/api/v3/order", method="POST")
    await allocate_grid(strata)

    async def sending() -> bool:
        return bool(await strata.runtime.store.orders.in_states(("intent",)))

    await wait_for(sending)
    await asyncio.sleep(0.3)  # the request left; the venue has not acted on it yet
    assert book.all_orders(api_key) == []
    await strata.send(USER, "/disconnect binance")
    confirm = await strata.next_reply(USER, contains="Disconnect")
    await strata.press(USER, confirm, "Confirm disconnect")
    await strata.next_reply(USER, contains="destroyed", timeout=30)
    assert await strata.runtime.store.accounts.credential(account.id) is None
    await asyncio.sleep(6)  # longer than the hang: anything still on its way has landed by now
    assert book.all_orders(api_key), "the in-flight order reached the venue"
    assert book.open_orders(api_key) == []
    # It was cancelled with the account's own key, so before that key was shredded.
    cancels = [r for r in book.requests if r.method == "DELETE" and r.path == "/api/v3/order"]
    assert [(r.api_key, r.status) for r in cancels] == [(api_key, 200)]


async def test_pause_cancels_a_grids_resting_orders_and_resume_places_them_again(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance")
    strategy_id = await allocate_grid(strata)
    await wait_until(lambda: len(book.open_orders(api_key)) == 2)
    ladder = sorted((o.side, o.price, o.amount) for o in book.open_orders(api_key))
    await strata.send(USER, f"/pause {strategy_id}")
    paused = await strata.next_reply(USER, contains="paused", timeout=15)
    assert "Cancelled 2 resting orders" in paused.plain_text and "/resume" in paused.plain_text
    assert book.open_orders(api_key) == []
    await strata.send(USER, "/status")
    status = await strata.next_reply(USER, contains="Your strategies")
    assert "paused" in status.plain_text and "open orders: 0" in status.plain_text
    await strata.send(USER, f"/resume {strategy_id}")
    await strata.next_reply(USER, contains="running again")
    await wait_until(lambda: len(book.open_orders(api_key)) == 2)
    assert sorted((o.side, o.price, o.amount) for o in book.open_orders(api_key)) == ladder
    await asyncio.sleep(1.0)  # a poll or two later: still exactly the ladder, nothing doubled
    assert len(book.open_orders(api_key)) == 2


async def dca_with_an_unknown_order(s, fake_exchanges, *, lookups_fail: bool = False):
    """A running DCA whose first buy's send failed with a 503 (placed or not? it was not): its order is `unknown`.

    `lookups_fail`: the venue also answers no lookup of it, so its fate cannot be learnt.
    """
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    account, api_key = await connect_with_key(s, fake_exchanges, "binance")
    book.inject("server_error", path="/api/v3/order", method="POST")
    if lookups_fail:
        book.inject("server_error", count=1000, path="/api/v3/order", method="GET")
    await s.send(USER, "/allocate binance dca 100 BTC/USDT every=1d amount=20")
    summary = await s.next_reply(USER, contains="Allocation summary")
    await s.press(USER, summary, "Confirm allocation")
    await s.next_reply(USER, contains="is running")

    async def unknown() -> bool:
        return [o.status for o in await s.runtime.store.orders.in_states(LIVE)] == ["unknown"]

    await wait_for(unknown, timeout=10)
    return book, account, api_key


async def test_panic_says_an_order_is_unconfirmed_then_alerts_once_how_it_ended(strata, fake_exchanges):
    book, _, api_key = await dca_with_an_unknown_order(strata, fake_exchanges)
    await strata.send(USER, "/panic")
    confirm = await strata.next_reply(USER, contains="Pause")
    await strata.press(USER, confirm, "Pause and cancel")
    done = await strata.next_reply(USER, contains="Paused", timeout=20)
    assert "cancelled 0 open order" in done.plain_text
    assert "1 order could not be confirmed yet" in done.plain_text and "will tell you" in done.plain_text
    # Believed absent only once the venue's receive window has passed; then told once, and never sent.
    alert = await strata.next_reply(USER, contains="never reached the exchange", timeout=30)
    assert "DCA" in alert.plain_text and "paused by /panic" in alert.plain_text
    await asyncio.sleep(2)
    told = [m for m in strata.tg.sent if m.chat_id == USER and "never reached" in (m.text or "")]
    assert len(told) == 1
    assert book.all_orders(api_key) == []
    assert await no_live_orders(strata)


# --- engine level: an order whose fate cannot be known yet -------------------------------------------------


async def test_panic_says_when_an_order_cannot_be_confirmed_yet_then_cancels_it_and_alerts_once(
    fake_exchanges, tmp_path
):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    book.add_key("late", "secret", balances={"USDT": "1000"})
    book.hang_seconds = 2.0  # the first buy's request reaches the venue 2 s late, after the client gave up
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, timeout_ms=600, unknown_grace_seconds=4.0)
    try:
        await world.connect(21, "binance", "late", "secret")
        book.inject("timeout", path="/api/v3/order", method="POST")
        await world.allocate(21, "binance", "grid", "500", "BTC/USDT", low="40000", high="50000", levels="3")
        await world.engine.settle()
        assert sorted(r["status"] for r in await world.orders()) == ["open", "unknown"]
        assert len(book.open_orders("late")) == 1  # the second buy; the first is still on its way

        result = await world.service.panic(21)
        assert (result.paused, result.canceled, result.unconfirmed) == (1, 1, 1)

        async def resolved() -> bool:
            return bool(await world.alerts("info")) and not await world.store.orders.in_states(LIVE)

        await wait_for(resolved, timeout=15)
        assert book.open_orders("late") == []
        assert sorted(o.status for o in book.all_orders("late")) == ["canceled", "canceled"]
        [alert] = await world.alerts("info")
        assert "cancelled" in alert["text"] and "40,000.00 USDT" in alert["text"]
        for _ in range(3):
            await world.engine.poll_once()
        await asyncio.sleep(0.5)
        assert len(await world.alerts("info")) == 1
    finally:
        await world.close()


async def test_an_unconfirmed_market_buy_that_filled_is_reported_as_bought_and_kept(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    book.add_key("late-dca", "secret", balances={"USDT": "1000"})
    book.hang_seconds = 2.0
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, timeout_ms=600, unknown_grace_seconds=4.0)
    try:
        await world.connect(22, "binance", "late-dca", "secret")
        book.inject("timeout", path="/api/v3/order", method="POST")
        strategy_id = await world.allocate(22, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")
        await world.engine.settle()
        assert [r["status"] for r in await world.orders()] == ["unknown"]
        pause = await world.service.pause(22, strategy_id)
        assert pause.unconfirmed == 1

        async def resolved() -> bool:
            return bool(await world.alerts("info"))

        await wait_for(resolved, timeout=15)
        [alert] = await world.alerts("info")
        assert "filled" in alert["text"] and "0.0004 BTC" in alert["text"]
        assert [r["status"] for r in await world.orders()] == ["closed"]
        assert len(await world.store.orders.fills_for_strategy(strategy_id)) == 1
        assert (await world.store.strategies.get(strategy_id)).status == "paused"
    finally:
        await world.close()


async def test_an_order_not_found_within_the_grace_is_not_trusted_gone_until_the_grace_passed(
    fake_exchanges, tmp_path
):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    book.add_key("lost", "secret", balances={"USDT": "1000"})
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, unknown_grace_seconds=1.5)
    try:
        await world.connect(23, "binance", "lost", "secret")
        book.inject("server_error", path="/api/v3/order", method="POST")  # 503: did it get there? (no)
        strategy_id = await world.allocate(23, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")
        await world.engine.settle()
        assert [r["status"] for r in await world.orders()] == ["unknown"]
        stopped = await world.service.stop(23, strategy_id, sell=False)
        assert stopped.unconfirmed == 1
        started = asyncio.get_running_loop().time()

        async def resolved() -> bool:
            return bool(await world.alerts("info"))

        await wait_for(resolved, timeout=10)
        assert asyncio.get_running_loop().time() - started >= 1.0  # trusted only once the grace passed
        [alert] = await world.alerts("info")
        assert "never reached" in alert["text"]
        assert [r["status"] for r in await world.orders()] == ["canceled"]
        assert book.all_orders("lost") == []  # and a stopped strategy's order is never sent again
        await asyncio.sleep(timedelta(seconds=0.5).total_seconds())
        assert book.all_orders("lost") == []
    finally:
        await world.close()


async def test_a_watched_order_survives_a_restart_and_is_alerted_exactly_once(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    book.add_key("restart", "secret", balances={"USDT": "1000"})
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, unknown_grace_seconds=60)
    try:
        await world.connect(24, "binance", "restart", "secret")
        book.inject("server_error", path="/api/v3/order", method="POST")
        await world.allocate(24, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")
        await world.engine.settle()
        assert (await world.service.panic(24)).unconfirmed == 1
    finally:
        await world.close()  # the bot stops before the order is resolved

    world = await open_world(tmp_path, fake_exchanges.exchange_urls, unknown_grace_seconds=1.0)
    try:
        async def alerted() -> bool:
            return bool(await world.alerts("info"))

        await wait_for(alerted, timeout=10)
        await asyncio.sleep(1.5)
        [alert] = await world.alerts("info")
        assert "never reached" in alert["text"]
        assert [r["status"] for r in await world.orders()] == ["canceled"]
        assert await world.store.order_watches.pending() == []
        assert book.all_orders("restart") == []  # found absent: a paused strategy's order is not sent again
    finally:
        await world.close()


async def test_a_stop_sale_whose_answer_is_lost_is_said_unconfirmed_then_alerted_when_it_filled(
    fake_exchanges, tmp_path
):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    book.add_key("sale", "secret", balances={"USDT": "1000"})
    book.hang_seconds = 2.0
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, timeout_ms=600, unknown_grace_seconds=4.0)
    try:
        await world.connect(25, "binance", "sale", "secret")
        strategy_id = await world.allocate(25, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")
        await world.engine.settle()
        assert [r["status"] for r in await world.orders()] == ["closed"]
        book.inject("timeout", path="/api/v3/order", method="POST")  # the sale lands 2 s late, its answer lost
        summary = await world.service.stop(25, strategy_id, sell=True)
        assert summary.sold == {}
        assert any("could not be confirmed yet" in e and "kept" not in e for e in summary.errors)

        async def alerted() -> bool:
            return bool(await world.alerts("info"))

        await wait_for(alerted, timeout=15)
        [alert] = await world.alerts("info")
        sells = [t for t in book.trades("sale") if t.side == "sell"]
        assert len(sells) == 1 and f"It filled: sold {sells[0].amount.normalize():f} BTC" in alert["text"]
        assert [r["status"] for r in await world.orders()] == ["closed", "closed"]
    finally:
        await world.close()


async def test_resume_after_panic_places_the_grids_ladder_again(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    book.add_key("rearm", "secret", balances={"USDT": "1000"})
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(26, "binance", "rearm", "secret")
        strategy_id = await world.allocate(26, "binance", "grid", "500", "BTC/USDT", low="40000", high="50000",
                                           levels="3")
        await world.engine.settle()
        ladder = sorted((o.price, o.amount) for o in book.open_orders("rearm"))
        assert len(ladder) == 2
        panic = await world.service.panic(26)
        assert (panic.paused, panic.canceled, panic.unconfirmed) == (1, 2, 0)
        assert book.open_orders("rearm") == []
        await world.service.resume(26, strategy_id)
        await world.engine.settle()
        assert sorted((o.price, o.amount) for o in book.open_orders("rearm")) == ladder
        for _ in range(2):
            await world.engine.poll_once()
        await world.engine.settle()
        assert len(book.open_orders("rearm")) == 2  # re-armed once, not twice
    finally:
        await world.close()


async def test_panic_does_not_wait_for_a_slow_run_and_its_order_is_never_sent(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    book.add_key("slow-run", "secret", balances={"USDT": "1000"})
    book.hang_seconds = 3.0  # the run's balance read hangs (the venue answers late, within the client timeout)
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, timeout_ms=10_000)
    try:
        await world.connect(27, "binance", "slow-run", "secret")
        preview = await world.service.allocate(27, "binance", "dca", "100", "BTC/USDT", {"every": "1d", "amount": "20"})
        await world.service.confirm(preview)
        book.inject("timeout", path="/api/v3/account", method="GET")  # before the run reads it
        await asyncio.sleep(0.5)  # the run has decided to buy and waits for the balance, holding its lock
        started = asyncio.get_running_loop().time()
        result = await world.service.panic(27)
        assert asyncio.get_running_loop().time() - started < 1.5  # /panic answers while the run still hangs
        assert (result.paused, result.canceled, result.unconfirmed) == (1, 0, 0)
        await world.engine.settle()
        assert book.all_orders("slow-run") == []  # the buy it decided met the gate: never sent
        assert [(r["status"], r["error"]) for r in await world.orders()] in (
            [], [("canceled", "not sent: the strategy is paused")]
        )
    finally:
        await world.close()


async def test_disconnect_with_an_order_still_unconfirmed_says_so_and_keeps_the_key(strata, fake_exchanges):
    strata.runtime.engine.desk.unknown_grace = timedelta(seconds=1)  # /disconnect waits this plus a margin
    _, account, _ = await dca_with_an_unknown_order(strata, fake_exchanges, lookups_fail=True)
    await strata.send(USER, "/disconnect binance")
    confirm = await strata.next_reply(USER, contains="Disconnect")
    await strata.press(USER, confirm, "Confirm disconnect")
    refusal = await strata.next_reply(USER, contains="nothing was deleted", timeout=30)
    # Truthful: the order's fate is unknown (not "the exchange did not answer a cancel"), and the key is kept.
    assert "could not be confirmed yet" in refusal.plain_text
    assert "did not answer" not in refusal.plain_text
    assert await strata.runtime.store.accounts.credential(account.id) is not None

"""DCA end to end on the fake Binance Spot, through the real ccxt client, engine, database and outbox."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.engine_world import open_world


async def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_dca_first_buy_is_placed_at_once_recorded_once_and_alerted_once(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    book.add_key("key-1", "secret-1", balances={"USDT": "1000"})
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(7, "binance", "key-1", "secret-1")
        strategy_id = await world.allocate(7, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")

        async def filled() -> bool:
            return len(await world.alerts("fill")) == 1

        await wait_for(filled)
        for _ in range(3):  # re-polling and re-running change nothing
            await world.engine.poll_once()
            await world.engine.run_strategy(strategy_id)
        exchange_orders = book.all_orders("key-1")
        assert len(exchange_orders) == 1
        assert exchange_orders[0].side == "buy" and exchange_orders[0].status == "closed"
        assert len(await world.alerts("fill")) == 1
        rows = await world.orders()
        assert [r["status"] for r in rows] == ["closed"]
        strategy = await world.store.strategies.get(strategy_id)
        fills = await world.store.orders.fills_for_strategy(strategy_id)
        assert len(fills) == 1
        assert strategy.spent - strategy.received <= Decimal(20) * Decimal("1.001") + Decimal("0.01")
        alert = (await world.alerts("fill"))[0]
        assert "Bought" in alert["text"] and "BTC" in alert["text"] and "Budget 100.00 USDT: invested" in alert["text"]
        left = strategy.budget - (strategy.spent - strategy.received)  # nothing rests: the buy filled at market
        assert f"reserved 0.00 USDT, left {left.quantize(Decimal('0.01'))} USDT" in alert["text"]
    finally:
        await world.close()


async def test_dca_shrinks_its_last_buy_to_what_is_left_then_finishes_and_says_so(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    book.add_key("key-2", "secret-2", balances={"USDT": "1000"})
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(8, "binance", "key-2", "secret-2")
        strategy_id = await world.allocate(8, "binance", "dca", "35", "BTC/USDT", every="1m", amount="20")
        await world.engine.settle()
        world.engine.ctx.clock = lambda: datetime.now(UTC) + timedelta(minutes=1, seconds=1)
        await world.engine.run_strategy(strategy_id)
        await world.engine.settle()
        costs = [o.quote_cost for o in book.all_orders("key-2")]
        assert costs[0] == Decimal(20) and Decimal(14) < costs[1] < Decimal(15)  # 35 − 20.02, less its fee
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.status == "finished"
        assert strategy.spent - strategy.received <= strategy.budget
        [info] = await world.alerts("info")
        assert "has finished" in info["text"]
        assert world.engine.next_run_time(strategy_id) is None
    finally:
        await world.close()


async def test_a_buy_the_risk_gate_refuses_is_not_counted_as_bought_and_not_asked_again_each_run(
    fake_exchanges, tmp_path
):
    """10 USDT buys 0.0001 BTC at 100000; at 109000 it rounds to 0.00009 (9.81 USDT, below Binance's 10 USDT
    minimum) and the smallest buy, 0.0001 BTC, costs 10.90: more than the gate may lift. Refused: the buy is
    not counted, the status says why, and the schedule moves to the next slot instead of retrying at once."""
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "100000")
    book.add_key("key-refused", "secret", balances={"USDT": "1000"})
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(9, "binance", "key-refused", "secret")
        strategy_id = await world.allocate(9, "binance", "dca", "100", "BTC/USDT", every="1d", amount="10")
        await world.engine.settle()
        assert len(book.all_orders("key-refused")) == 1
        book.set_price("BTC/USDT", "109000")
        await asyncio.sleep(1.1)  # the engine reads each ticker once per second (its round)
        world.engine.ctx.clock = lambda: datetime.now(UTC) + timedelta(days=1, seconds=1)
        for _ in range(3):
            await world.engine.run_strategy(strategy_id)
        await world.engine.settle()
        assert len(book.all_orders("key-refused")) == 1  # nothing placed
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.state["buys"] == 1  # only the buy that was placed
        assert strategy.status == "active"
        [status] = await world.service.status(9)
        assert "refused" in status.note and "minimum" in status.note
        next_run = world.engine.next_run_time(strategy_id)
        assert next_run is not None and next_run > datetime.now(UTC) + timedelta(hours=23)
    finally:
        await world.close()


async def test_a_buy_the_exchange_rejects_for_funds_is_owed_again_when_the_user_resumes(fake_exchanges, tmp_path):
    """The gate saw enough USDT, but the wallet was emptied before the exchange took the order: it rejects the
    buy for funds and the strategy pauses. That buy was never placed, so the slot is not spent: once the user
    has topped up and resumed, the buy is placed at once (as after a gate refusal for funds), not a day later."""
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    book.add_key("key-venue-funds", "secret", balances={"USDT": "1000"})
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(10, "binance", "key-venue-funds", "secret")
        book.hang_seconds = 0.8  # below the client's timeout: the create is only slow
        book.inject("timeout", path="/api/v3/order")
        strategy_id = await world.allocate(10, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")

        async def intent_written() -> bool:
            return bool(await world.orders())

        await wait_for(intent_written)
        book.keys["key-venue-funds"].balances["USDT"] = Decimal(5)  # spent elsewhere meanwhile

        async def paused() -> bool:
            return (await world.store.strategies.get(strategy_id)).status == "paused"

        await wait_for(paused)
        assert [r["status"] for r in await world.orders()] == ["rejected"]
        book.keys["key-venue-funds"].balances["USDT"] = Decimal(1000)
        await world.service.resume(10, strategy_id)

        async def bought() -> bool:
            return len(book.trades("key-venue-funds")) == 1

        await wait_for(bought)
        await world.engine.settle()
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.state["buys"] == 1 and strategy.state["last_slot"] == 0
        assert [r["status"] for r in await world.orders()] == ["rejected", "closed"]
        [trade] = book.trades("key-venue-funds")
        assert strategy.spent == trade.cost + trade.fee
        assert world.engine.next_run_time(strategy_id) > datetime.now(UTC) + timedelta(hours=23)
    finally:
        await world.close()


async def test_a_buy_a_pause_kept_from_being_sent_is_owed_again_on_resume(fake_exchanges, tmp_path):
    """/pause lands while a run has decided its buy but not sent it: the slot is not counted as bought."""
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    book.add_key("key-p", "secret-p", balances={"USDT": "1000"})
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(9, "binance", "key-p", "secret-p")
        strategy_id = await world.allocate(9, "binance", "dca", "100", "BTC/USDT", every="1m", amount="20")
        await world.engine.settle()
        assert len(book.all_orders("key-p")) == 1
        # The next slot's run reads the balance (after deciding to buy); its answer is held while /pause lands.
        book.inject("hold", path="/api/v3/account", method="GET", seconds=1.0)
        world.engine.ctx.clock = lambda: datetime.now(UTC) + timedelta(minutes=1, seconds=1)
        run = asyncio.create_task(world.engine.run_strategy(strategy_id))
        await asyncio.sleep(0.3)
        await world.service.pause(9, strategy_id)
        await run
        await world.engine.settle()
        assert len(book.all_orders("key-p")) == 1  # stop means stopped: the second buy was never sent
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.state["buys"] == 1  # the slot the pause kept from buying is not counted as bought
        await world.service.resume(9, strategy_id)
        await world.engine.settle()
        assert len(book.all_orders("key-p")) == 2  # owed, so bought at once on /resume
        assert (await world.store.strategies.get(strategy_id)).state["buys"] == 2
    finally:
        await world.close()

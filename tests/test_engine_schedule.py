"""Scheduling: a run that comes late (event loop stalled) or after missed slots still buys exactly once per slot."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta

from tests.engine_world import ShiftedClock, open_world
from tests.test_engine_dca import wait_for


async def _first_buy(world, book, api_key: str) -> int:
    await world.connect(3, "binance", api_key, "secret")
    strategy_id = await world.allocate(3, "binance", "dca", "200", "BTC/USDT", every="1d", amount="20")

    async def bought() -> bool:
        return len(book.all_orders(api_key)) == 1 and len(await world.alerts("fill")) == 1

    await wait_for(bought)
    await world.engine.settle()  # the re-run after the fill is over: the schedule is quiet
    return strategy_id


async def test_a_dca_slot_due_while_the_event_loop_is_stalled_buys_exactly_once(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    book.add_key("stall", "secret", balances={"USDT": "1000"})
    clock = ShiftedClock()
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, clock=clock)
    try:
        strategy_id = await _first_buy(world, book, "stall")
        strategy = await world.store.strategies.get(strategy_id)
        # Slot 1 is due in 0.5 s; the loop then blocks for 3 s, so the job fires 2.5 s late.
        clock.offset += strategy.next_run - clock() - timedelta(seconds=0.5)
        world.engine.schedule(strategy_id, strategy.next_run)
        time.sleep(3)  # the stall: nothing on the loop runs
        await asyncio.sleep(0.5)

        async def second() -> bool:
            return len(book.all_orders("stall")) == 2 and len(await world.alerts("fill")) == 2

        await wait_for(second)
        for _ in range(3):
            await world.engine.run_strategy(strategy_id)
            await world.engine.poll_once()
        tags = [row["tag"] for row in await world.orders()]
        assert tags == ["dca:slot:0", "dca:slot:1"]
        assert len(book.all_orders("stall")) == 2
    finally:
        await world.close()


async def test_three_missed_dca_slots_are_caught_up_with_one_buy(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    book.add_key("missed", "secret", balances={"USDT": "1000"})
    clock = ShiftedClock()
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, clock=clock)
    try:
        strategy_id = await _first_buy(world, book, "missed")
        clock.offset = timedelta(days=3, seconds=1)  # slots 1, 2 and 3 are all owed now
        await world.engine.run_strategy(strategy_id)
        await world.engine.run_strategy(strategy_id)
        tags = [row["tag"] for row in await world.orders()]
        assert tags == ["dca:slot:0", "dca:slot:3"]
        assert len(book.all_orders("missed")) == 2
    finally:
        await world.close()


async def test_strategies_due_in_the_same_second_share_one_job_and_each_runs_once_never_early(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    book.add_key("shared", "secret", balances={"USDT": "1000"})
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(3, "binance", "shared", "secret")
        ids = [
            await world.allocate(3, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20") for _ in range(3)
        ]

        async def first_buys() -> bool:
            return len(book.all_orders("shared")) == 3

        await wait_for(first_buys)
        await world.engine.settle()
        engine = world.engine
        runs: list[tuple[int, datetime]] = []
        run = engine.runner.run

        async def recorded(strategy_id: int):
            runs.append((strategy_id, datetime.now(UTC)))
            return await run(strategy_id)

        engine.runner.run = recorded
        due = datetime.now(UTC) + timedelta(seconds=1)
        for strategy_id in ids:
            engine.schedule(strategy_id, due)
        # Their daily runs' seconds are left empty, so their jobs are gone: one job runs all three.
        assert [job.id for job in engine.scheduler.get_jobs() if job.id.startswith("due:")] == [
            f"due:{math.ceil(due.timestamp())}"
        ]
        # (the real clock's time of the run: `due` to within the microseconds between two clock reads)
        assert all(abs(engine.next_run_time(strategy_id) - due) < timedelta(milliseconds=50) for strategy_id in ids)
        engine.unschedule(ids[2])  # e.g. paused meanwhile: its second's job no longer runs it

        async def two_ran() -> bool:
            return len(runs) == 2

        await wait_for(two_ran)
        await asyncio.sleep(0.3)
        await engine.settle()
        assert sorted(strategy_id for strategy_id, _ in runs) == ids[:2]
        assert all(at >= due for _, at in runs)  # never before it is due
        assert engine.next_run_time(ids[2]) is None
        for strategy_id in ids[:2]:  # back on their daily schedule, nothing bought twice
            assert engine.next_run_time(strategy_id) > datetime.now(UTC) + timedelta(hours=23)
        assert len(book.all_orders("shared")) == 3
        engine.unschedule(ids[0])
        engine.unschedule(ids[1])
        assert engine.scheduled_count() == 0
        assert not [job for job in engine.scheduler.get_jobs() if job.id.startswith("due:")]
    finally:
        await world.close()

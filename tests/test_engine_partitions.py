"""Two engine workers on one PostgreSQL database split the accounts by partition (storage/partitions.py).

Two real engines (tests/engine_world.py) in this process, each with its own partition leases (own lock
connection) on one database and one key store, against the fake Binance: each runs only the strategies of the
accounts it owns, never both; when one dies (its lock connection terminated by the server, its engine stopped
mid-send as a SIGKILL would), the other takes its partitions and adopts its accounts as crash recovery does:
the order that was in flight is found by client order id, not sent twice — one order, one alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import pytest

from bot.engine.context import utc_now
from bot.exchanges.rate_budget import RateBudgets, SharedIpBudget
from storage.partitions import PARTITIONS, AllPartitions, PartitionLeases
from storage.store import Store
from tests.databases import fresh_postgres_database
from tests.engine_world import World, open_world

ROOT = Path(__file__).resolve().parent.parent
LEASES = {"tick_seconds": 0.2, "alive_seconds": 2.0, "handover_seconds": 1.0}
_numbers = iter(range(1, 1_000_000))


@pytest.fixture
async def pg_url(postgres_server) -> str:
    return await fresh_postgres_database(postgres_server, f"eparts{os.getpid()}_{next(_numbers)}")


async def until(check, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def two_workers(tmp_path, urls: str, pg_url: str, **world_options) -> list[tuple[World, PartitionLeases]]:
    workers = []
    for _ in range(2):
        leases = await PartitionLeases.start(pg_url, **LEASES)
        world = await open_world(tmp_path, urls, ownership=leases, database=pg_url, **world_options)
        workers.append((world, leases))

    async def split() -> bool:
        return all(len(leases.held) == PARTITIONS // 2 for _, leases in workers)

    await until(split)
    return workers


async def close_all(workers) -> None:
    for world, leases in workers:
        await leases.close()
        await world.close()


def runs_of(world: World) -> list[int]:
    """Record which strategies this engine decided for (the step that writes intents)."""
    seen: list[int] = []
    decide = world.engine.runner._decide_locked

    async def recording(strategy, account, *rest):
        seen.append(strategy.id)
        return await decide(strategy, account, *rest)

    world.engine.runner._decide_locked = recording
    return seen


def owner_of(workers, account_id: int) -> World:
    [world] = [w for w, leases in workers if leases.owns(account_id)]
    return world


async def test_two_workers_split_the_accounts_and_each_strategy_runs_on_one_worker_only(
    fake_exchanges, tmp_path, pg_url
):
    book = fake_exchanges.books["binance"]
    workers = await two_workers(tmp_path, fake_exchanges.exchange_urls, pg_url)
    runs = [runs_of(world) for world, _ in workers]
    try:
        first = workers[0][0]
        strategies: dict[int, int] = {}  # strategy -> account
        per_worker = {id(world): 0 for world, _ in workers}
        keys = []
        for n in range(PARTITIONS):  # accounts until each worker owns four (account ids fall in any partition)
            book.add_key(f"key-{n}", "secret", balances={"USDT": "1000"})
            account_id = await first.connect(100 + n, "binance", f"key-{n}", "secret")
            owner = owner_of(workers, account_id)
            if per_worker[id(owner)] == 4:
                continue
            per_worker[id(owner)] += 1
            keys.append(f"key-{n}")
            # /allocate reaches the worker that owns the account (the roles' commands do so in production)
            strategy_id = await owner.allocate(100 + n, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")
            strategies[strategy_id] = account_id
            if len(strategies) == 8:
                break

        async def all_filled() -> bool:
            return len(await first.alerts("fill")) == len(strategies)

        await until(all_filled)
        for world, _ in workers:  # asked to run everything again: each runs only its own, and owes nothing now
            for strategy_id in strategies:
                await world.engine.run_strategy(strategy_id)
            await world.engine.poll_once()
        for world, _ in workers:
            await world.engine.settle()
        assert set(runs[0]).isdisjoint(runs[1])
        assert set(runs[0]) | set(runs[1]) == set(strategies)
        for index, (_, leases) in enumerate(workers):
            assert all(leases.owns(strategies[s]) for s in runs[index])
        for key in keys:
            assert len(book.all_orders(key)) == 1  # one slot, one buy
        assert len(await first.alerts("fill")) == len(strategies)
        assert [o["status"] for o in await first.orders()] == ["closed"] * len(strategies)
    finally:
        await close_all(workers)


@pytest.mark.parametrize("in_flight", ["answer_lost", "timed_out"])
async def test_a_dead_workers_accounts_are_adopted_and_its_order_in_flight_is_reconciled_not_doubled(
    fake_exchanges, tmp_path, pg_url, in_flight
):
    """`answer_lost`: the venue took the order, its answer is late (the row is still an intent, being sent);
    `timed_out`: the client gave up (the row is `unknown`). Then the worker dies."""
    book = fake_exchanges.books["binance"]
    book.hang_seconds = 0.8
    workers = await two_workers(tmp_path, fake_exchanges.exchange_urls, pg_url, timeout_ms=400)
    try:
        book.add_key("victim", "secret", balances={"USDT": "1000"})
        first = workers[0][0]
        account_id = await first.connect(200, "binance", "victim", "secret")
        dead, dead_leases = next((w, leases) for w, leases in workers if leases.owns(account_id))
        survivor, survivor_leases = next((w, leases) for w, leases in workers if not leases.owns(account_id))
        preview = await dead.service.allocate(200, "binance", "dca", "100", "BTC/USDT", {"every": "1d", "amount": "20"})
        if in_flight == "answer_lost":
            book.inject("hold", path="/api/v3/order", method="POST", seconds=5.0)
        else:
            book.inject("timeout", path="/api/v3/order", method="POST")
        strategy_id = (await dead.service.confirm(preview)).strategy_id

        async def order_in_flight() -> bool:
            rows = await dead.orders()
            if in_flight == "answer_lost":
                return bool(rows) and rows[0]["status"] == "intent" and len(book.all_orders("victim")) == 1
            return bool(rows) and rows[0]["status"] == "unknown"

        await until(order_in_flight)
        # The worker dies: its lock connection goes (the server terminates it), and nothing of it runs any more.
        dead_leases._task.cancel()
        admin = await asyncpg.connect(pg_url)
        try:
            died = time.monotonic()
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", dead_leases.backend_pid)
        finally:
            await admin.close()
        await dead.engine.shutdown()  # cancels the send under way, as a SIGKILL would

        async def taken_over() -> bool:
            return survivor_leases.owns(account_id) and len(survivor_leases.held) == PARTITIONS

        await until(taken_over)
        assert time.monotonic() - died < 10.0

        async def one_fill_alert() -> bool:
            return [r["status"] for r in await survivor.orders()] == ["closed"] and bool(await survivor.alerts("fill"))

        await until(one_fill_alert, timeout=10.0)
        await asyncio.sleep(1.0)  # nothing more comes
        await survivor.engine.poll_once()
        await survivor.engine.run_strategy(strategy_id)
        await survivor.engine.settle()
        assert len(book.all_orders("victim")) == 1
        assert len(await survivor.alerts("fill")) == 1
        assert len(await survivor.store.orders.fills_for_strategy(strategy_id)) == 1
        assert survivor.engine.next_run_time(strategy_id) is not None  # adopted: its next slot is scheduled
    finally:
        await close_all(workers)


async def test_a_worker_that_loses_its_lock_connection_stops_running_those_accounts_at_once(
    fake_exchanges, tmp_path, pg_url
):
    """The worker is alive but its lock connection is gone: from that moment it runs, sends and polls nothing of
    the accounts (another worker may hold them now); its jobs for them are removed."""
    book = fake_exchanges.books["binance"]
    book.add_key("cut", "secret", balances={"USDT": "1000"})
    leases = await PartitionLeases.start(pg_url, **LEASES)
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, ownership=leases, database=pg_url)
    try:
        async def holds_all() -> bool:
            return len(leases.held) == PARTITIONS

        await until(holds_all)
        await world.connect(300, "binance", "cut", "secret")
        strategy_id = await world.allocate(300, "binance", "dca", "100", "BTC/USDT", every="1m", amount="20")

        async def bought() -> bool:
            return len(book.all_orders("cut")) == 1 and world.engine.next_run_time(strategy_id) is not None

        await until(bought)
        await world.engine.settle()
        leases._task.cancel()  # no reconnection during the test
        admin = await asyncpg.connect(pg_url)
        try:
            await admin.fetchval("SELECT pg_terminate_backend($1)", leases.backend_pid)
        finally:
            await admin.close()

        async def released() -> bool:
            return not leases.held and world.engine.next_run_time(strategy_id) is None

        await until(released, timeout=3.0)
        world.engine.ctx.clock = lambda: utc_now() + timedelta(minutes=5)  # its next buy is owed now
        runs = runs_of(world)
        result = await world.engine.run_strategy(strategy_id)
        assert result.next_run is None and runs == []
        assert await world.engine.poll_once() == 0
        assert len(book.all_orders("cut")) == 1
    finally:
        await leases.close()
        await world.close()


async def test_workers_sharing_an_address_each_plan_their_polls_on_their_part_of_the_budget(fake_exchanges, tmp_path):
    """Two workers behind one address, each polling its own accounts on the whole polling share, would together
    spend twice what polling may: with the budget shared, each plans on its half (the interval doubles)."""

    class TwoWorkersAlive(AllPartitions):
        alive = 2

    budgets = RateBudgets(limits={"binance": 100})
    world = await open_world(
        tmp_path, fake_exchanges.exchange_urls, budgets=budgets, ownership=TwoWorkersAlive(), start=False
    )
    try:
        account_id = await world.connect(400, "binance", "k", "s")
        polled = {account_id: [SimpleNamespace(symbol="BTC/USDT"), SimpleNamespace(symbol="ETH/USDT")]}
        alone = await world.engine._stretched_interval(polled)  # 2 symbols × weight 6, on 35 % of 100 a minute
        budgets.shared = SharedIpBudget(world.store.ip_budgets)
        shared = await world.engine._stretched_interval(polled)
        assert (alone, shared) == (pytest.approx(12 * 60 / 35), pytest.approx(2 * 12 * 60 / 35))
    finally:
        await world.close()


class WorkerProcess:
    """tests/worker_child.py as a real process: its stdout lines are queued as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.held = 0
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, url: str, data_dir, urls: str) -> WorkerProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.worker_child", url, str(data_dir), urls, cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while raw := await self.process.stdout.readline():
            line = raw.decode().strip()
            if line.startswith("HELD "):
                self.held = int(line.split()[1])
            else:
                await self.lines.put(line)

    async def ask(self, command: str) -> list[str]:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{command}\n".encode())
        await self.process.stdin.drain()
        return (await asyncio.wait_for(self.lines.get(), 20)).split()

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ConnectionError):
                self.process.stdin.write(b"STOP\n")  # type: ignore[union-attr]
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self._reader.cancel()


async def test_a_worker_process_killed_with_an_order_in_flight_is_taken_over_one_order_one_alert(
    fake_exchanges, tmp_path, pg_url
):
    """Two worker processes on one PostgreSQL database; the one running the account is SIGKILLed while its order
    is on the venue but the answer has not come back. The other takes the partitions within 10 s, finds the order
    by client order id and records it: exactly one order on the exchange, one fill, one alert."""
    book = fake_exchanges.books["binance"]
    book.add_key("inflight", "secret", balances={"USDT": "1000"})
    urls = fake_exchanges.exchange_urls
    workers = [await WorkerProcess.start(pg_url, tmp_path, urls) for _ in range(2)]
    try:
        async def split() -> bool:
            return [w.held for w in workers] == [PARTITIONS // 2] * 2

        await until(split, timeout=20)
        _, account_id, owned = await workers[0].ask("CONNECT 600 inflight secret")
        owner, survivor = (workers[0], workers[1]) if owned == "1" else (workers[1], workers[0])
        book.inject("hold", path="/api/v3/order", method="POST", seconds=8.0)  # the answer never comes in time
        await owner.ask("ALLOCATE 600")

        async def on_the_venue() -> bool:
            return len(book.all_orders("inflight")) == 1

        await until(on_the_venue)
        owner.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        await owner.process.wait()
        store = await Store.open(pg_url)
        try:
            async def fill_alerts() -> list:
                return [a for a in await store.outbox.list_for_chat(600) if a.kind == "fill"]

            async def recorded() -> bool:
                closed = await store.orders.in_states(("closed",))
                return len(closed) == 1 and bool(await fill_alerts()) and survivor.held == PARTITIONS

            await until(recorded, timeout=15)
            assert time.monotonic() - killed < 10.0
            await asyncio.sleep(1.5)  # nothing more comes
            assert len(book.all_orders("inflight")) == 1
            rows = await store.orders.in_states(("intent", "sent", "open", "closed", "canceled", "rejected", "unknown"))
            assert [o.status for o in rows] == ["closed"] and rows[0].account_id == int(account_id)
            fills = await store.orders.fills_for_strategy(rows[0].strategy_id)
            assert len(fills) == 1
            assert len(await fill_alerts()) == 1
        finally:
            await store.close()
    finally:
        for worker in workers:
            await worker.stop()

"""The command path between a front and its workers (bot/control.py, storage/commands.py), on both backends:
claimed once, run only by the owner of the account, the outcome (or the user's error) read back by the front,
an honest answer when no worker answers in time, and LISTEN/NOTIFY waking the worker at once on PostgreSQL."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.control import POLL_SECONDS, CommandExecutor, RemoteControl, StillRunning
from bot.services.errors import UserError
from storage.commands import DONE, PENDING
from storage.partitions import PARTITIONS, SERVER_NOW_MS, partition_of
from storage.store import Store


class Settings:
    fill_poll_seconds = 10.0
    streams = True


class Owner:
    """Owns the partitions of the accounts whose id is in `ids` (and says it owns only those accounts)."""

    def __init__(self, *ids: int) -> None:
        self.ids = set(ids)
        self.held = frozenset(partition_of(i) for i in ids)

    def owns(self, account_id: int) -> bool:
        return account_id in self.ids


class EngineSide:
    """What a worker's LocalControl does, reduced to what these tests look at (which account it acted on)."""

    def __init__(self, refuse: str | None = None) -> None:
        self.forgotten: list[int] = []
        self.refuse = refuse

    async def forget_credentials(self, account_id: int) -> None:
        self.forgotten.append(account_id)

    async def stop_account(self, account_id: int, reason: str, *, cancel: bool):
        if self.refuse:
            raise UserError(self.refuse)
        return {}


@pytest.fixture
async def store(any_database):
    store = await Store.open(any_database)
    try:
        yield store
    finally:
        await store.close()


async def test_a_command_is_claimed_by_exactly_one_worker_and_its_outcome_read_back(store):
    command_id = await store.commands.submit(account_id=3, user_id=7, kind="pause", payload={"strategy_id": 9})
    claims = await asyncio.gather(*(store.commands.claim(command_id) for _ in range(5)))
    assert [c.claims for c in claims if c is not None] == [1]  # one worker has it, its first claim
    await store.commands.finish(command_id, ok=True, result={"changed": True})
    command = await store.commands.get(command_id)
    assert (command.status, command.result, command.payload) == (DONE, {"changed": True}, {"strategy_id": 9})
    assert await store.commands.pending() == []


async def test_a_worker_runs_only_the_commands_of_the_accounts_it_owns(store):
    mine = await store.commands.submit(account_id=2, user_id=7, kind="forget_credentials", payload={})
    other = await store.commands.submit(account_id=3, user_id=7, kind="forget_credentials", payload={})
    engine = EngineSide()
    executor = CommandExecutor(store, engine, Owner(2))

    assert await executor.run_pending() == 1
    await executor.close()

    assert engine.forgotten == [2]
    assert (await store.commands.get(mine)).status == DONE
    assert (await store.commands.get(other)).status == PENDING  # left for the worker that owns account 3


async def test_a_worker_finds_its_commands_behind_a_crowd_of_other_workers(store):
    for _ in range(120):  # more than one read's worth, all for an account of another partition
        await store.commands.submit(account_id=3, user_id=7, kind="forget_credentials", payload={})
    mine = await store.commands.submit(account_id=2 + PARTITIONS, user_id=7, kind="forget_credentials", payload={})
    engine = EngineSide()
    executor = CommandExecutor(store, engine, Owner(2 + PARTITIONS))

    assert await executor.run_pending() == 1
    await executor.close()

    assert engine.forgotten == [2 + PARTITIONS] and (await store.commands.get(mine)).status == DONE


async def test_the_front_gets_the_workers_refusal_as_the_users_message(store):
    front = RemoteControl(store, None, None, Settings(), wait_seconds=10)
    executor = CommandExecutor(store, EngineSide(refuse="That account is busy: try again."), Owner(4))
    executor.start()
    try:
        with pytest.raises(UserError, match="That account is busy"):
            await front.stop_account(4, "stopped by /disconnect", cancel=True)
    finally:
        await executor.close()


async def test_the_front_says_the_action_is_still_under_way_when_no_worker_answers_in_time(store):
    front = RemoteControl(store, None, None, Settings(), wait_seconds=0.5, disconnect_wait_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(StillRunning, match="goes on in the background"):
        await front.stop_account(5, "r", cancel=True)
    assert 0.5 <= time.monotonic() - started < 3
    [command] = await store.commands.pending()
    assert command.account_id == 5  # still queued: the owner runs it when it comes back


async def test_on_postgresql_a_notification_wakes_the_worker_before_its_poll(store):
    if store.db.backend != "postgresql":
        pytest.skip("SQLite has no notifications: its workers poll")
    engine = EngineSide()
    executor = CommandExecutor(store, engine, Owner(6))
    front = RemoteControl(store, None, None, Settings())
    executor.start()
    await front.start()
    try:
        await asyncio.sleep(POLL_SECONDS * 1.5)  # the worker is now between two polls, listening
        started = time.monotonic()
        await front.stop_account(6, "r", cancel=True)
        assert time.monotonic() - started < POLL_SECONDS * 0.3
    finally:
        await front.close()
        await executor.close()


async def test_a_command_whose_worker_is_gone_is_put_back_at_once_but_never_one_of_a_live_worker(store):
    """A worker that died (lock connection gone from the server, heartbeat stale) or stopped (its row removed)
    leaves its running command to the next owner at once. A live worker's command stays its own, however old its
    heartbeat, and so does one whose lock connection just blipped (heartbeat fresh, connection being replaced).
    Should a command still run twice, only the latest claim's outcome is recorded."""
    ids = [
        await store.commands.submit(account_id=3 + n, user_id=7, kind="pause", payload={"strategy_id": 9 + n})
        for n in range(4)
    ]
    for command_id, worker in zip(ids, ("stopped", "killed", "alive", "blipped"), strict=True):
        assert (await store.commands.claim(command_id, by=worker)).claims == 1
    if store.db.backend != "postgresql":
        assert await store.commands.requeue_orphaned() == []  # one process: nothing else could have claimed it
        return
    async with store.db.transaction() as tx:
        for worker, backend, seen in (("killed", "-1", "0"), ("alive", "pg_backend_pid()", "0"),
                                      ("blipped", "-1", SERVER_NOW_MS)):
            await tx.execute(
                f"INSERT INTO engine_workers (worker_id, backend, seen_ms, held) VALUES (?, {backend}, {seen}, 1)",  # noqa: S608
                (worker,),
            )
    assert sorted(await store.commands.requeue_orphaned()) == ids[:2]
    again = await store.commands.claim(ids[1], by="next")
    assert again.claims == 2 and (await store.commands.get(ids[2])).status == "running"
    # The killed worker's run finishing after all is dropped: the next claim's outcome is the one kept.
    assert not await store.commands.finish(ids[1], ok=False, result={"error": "internal"}, claims=1)
    assert await store.commands.finish(ids[1], ok=True, result={"changed": True}, claims=2)
    # Put back but not claimed again yet: the first run's outcome still counts, and nobody runs it twice.
    assert await store.commands.finish(ids[0], ok=True, result={"changed": True}, claims=1)
    assert (await store.commands.get(ids[0])).status == DONE and await store.commands.pending() == []


async def test_a_stop_run_again_sells_what_an_earlier_closing_order_left_unsold_under_a_new_tag(
    fake_exchanges, tmp_path
):
    """A /stop-and-sell whose worker died after writing the closing order but before sending it: that order ends
    cancelled with nothing filled. The stop run again (`again`) places the sale once more under the next tag and
    reports what the venue sold; run again once more, it places nothing and reports the same sale."""
    from decimal import Decimal

    from bot.control import LocalControl
    from tests.chat_helpers import register
    from tests.engine_world import open_world

    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    api_key, secret = register(fake_exchanges, "binance", balances={"USDT": Decimal(1000)})
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        account_id = await world.connect(7, "binance", api_key, secret)
        strategy_id = await world.allocate(7, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")
        await world.engine.settle()
        [bought] = book.trades(api_key, "BTC/USDT")
        await world.engine.stop(strategy_id, "stopped by you")
        store = world.store
        async with store.db.transaction() as tx:  # the first attempt's closing order, never sent
            first = await store.orders.insert_intent(
                tx, strategy_id=strategy_id, account_id=account_id, client_order_id="dead-worker-close",
                tag="stop:BTC:close", symbol="BTC/USDT", side="sell", type="market", amount=bought.amount,
                price=None, cost=None, reserved=Decimal(0), reduce_only=False,
            )
            await store.orders.set_status(tx, first, "canceled", error="never sent")
        control = LocalControl(world.engine)
        book.set_price("BTC/USDT", "51000")

        stopped = await control.stop(strategy_id, "stopped by you", sell=True, again=True)
        sells = [t for t in book.trades(api_key, "BTC/USDT") if t.side == "sell"]
        assert len(sells) == 1 and stopped.sold == {"BTC": sells[0].amount}
        assert stopped.sold_at == {"BTC": sells[0].price} and not stopped.errors and not stopped.pending
        tags = [r["tag"] for r in await world.orders() if r["side"] == "sell"]
        assert tags == ["stop:BTC:close", "stop:BTC:close:2"]

        again = await control.stop(strategy_id, "stopped by you", sell=True, again=True)
        assert len([t for t in book.trades(api_key, "BTC/USDT") if t.side == "sell"]) == 1
        assert again.sold == stopped.sold and again.sold_at == stopped.sold_at
        assert await control.stop(strategy_id, "stopped by you", sell=True) is None  # a fresh /stop: already stopped
    finally:
        await world.close()

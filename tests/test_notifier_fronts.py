"""The outbox on PostgreSQL with several processes: alerts claimed by state, one notifier sending at a time.

Each "front" here is its own Store (its own connection pool, as a separate process would have) with its own
Notifier, talking to the fake Telegram through python-telegram-bot's real HTTP stack. Engine workers are a third
Store that only enqueues.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import pytest
import telegram

from bot.notifier import LEADER_CHECK_S, Notifier
from storage.store import Store
from tests.databases import fresh_postgres_database

FAST = {"per_chat_interval": 0.0, "poll_interval": 0.2, "retry_backoff": 0.05}
_names = iter(range(1, 10_000))


@pytest.fixture(autouse=True)
def ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
async def database(postgres_server) -> str:
    return await fresh_postgres_database(postgres_server, f"fronts_{next(_names)}_{id(object())}")


async def enqueue(store: Store, user_id: int, text: str) -> int:
    async with store.db.transaction() as tx:
        return await store.outbox.enqueue(tx, user_id=user_id, chat_id=user_id, kind="fill", text=text)


def sent_texts(fake) -> list[tuple[int, str]]:
    return [(m.chat_id, m.text) for m in fake.sent if m.method == "sendMessage"]


async def wait_until(predicate, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


async def test_an_alert_committed_after_a_higher_id_was_read_is_still_sent(database, fake_telegram):
    """Ids are taken at insert, not at commit: a notifier reading past an id cursor skips the slow one."""
    worker, front = await Store.open(database), await Store.open(database)
    fake_telegram.add_user(1)
    await worker.users.upsert(1, 1)
    async with telegram.Bot(fake_telegram.token, base_url=fake_telegram.base_url) as bot:
        notifier = Notifier(front, bot, **FAST)
        await notifier.start()
        try:
            slow_inserted, release = asyncio.Event(), asyncio.Event()

            async def slow_writer() -> None:
                async with worker.db.transaction() as tx:
                    await worker.outbox.enqueue(tx, user_id=1, chat_id=1, kind="fill", text="slow (lower id)")
                    slow_inserted.set()
                    await release.wait()  # commits only after the higher id was sent

            task = asyncio.create_task(slow_writer())
            await slow_inserted.wait()
            await enqueue(worker, 1, "fast (higher id)")

            async def fast_sent() -> bool:
                return ("fast (higher id)") in [t for _, t in sent_texts(fake_telegram)]

            await wait_until(fast_sent)
            release.set()
            await task

            async def both_sent() -> bool:
                return len(sent_texts(fake_telegram)) == 2

            await wait_until(both_sent)
            assert Counter(t for _, t in sent_texts(fake_telegram)) == {"fast (higher id)": 1, "slow (lower id)": 1}
        finally:
            await notifier.stop()
            await front.close()
            await worker.close()


async def test_two_fronts_by_mistake_send_each_alert_once_in_order(database, fake_telegram):
    worker = await Store.open(database)
    fronts = [await Store.open(database), await Store.open(database)]
    users = list(range(1, 11))
    for user in users:
        fake_telegram.add_user(user)
        await worker.users.upsert(user, user)
    async with telegram.Bot(fake_telegram.token, base_url=fake_telegram.base_url) as bot:
        notifiers = [Notifier(store, bot, **FAST) for store in fronts]
        for notifier in notifiers:
            await notifier.start()
        try:
            for n in range(10):
                for user in users:
                    await enqueue(worker, user, f"alert {n} for {user}")

            async def all_sent() -> bool:
                return len(sent_texts(fake_telegram)) >= 100 and (await worker.outbox.counts())["pending"] == 0

            await wait_until(all_sent)
            await asyncio.sleep(0.5)  # a duplicate would show up now
            sent = sent_texts(fake_telegram)
            assert len(sent) == 100 and len(set(sent)) == 100
            for user in users:  # in order per chat
                assert [t for c, t in sent if c == user] == [f"alert {n} for {user}" for n in range(10)]
            assert sorted(n.is_leader for n in notifiers) == [False, True]
        finally:
            for notifier in notifiers:
                await notifier.stop()
            for store in (*fronts, worker):
                await store.close()


async def test_a_standby_front_takes_over_when_the_sending_one_dies(database, fake_telegram, postgres_server):
    worker = await Store.open(database)
    first, second = await Store.open(database), await Store.open(database)
    for user in (1, 2):
        fake_telegram.add_user(user)
        await worker.users.upsert(user, user)
    async with telegram.Bot(fake_telegram.token, base_url=fake_telegram.base_url) as bot:
        leader = Notifier(first, bot, **{**FAST, "per_chat_interval": 0.5})  # slow: alerts wait, claimed
        await leader.start()

        async def leading() -> bool:
            return leader.is_leader

        await wait_until(leading)
        standby = Notifier(second, bot, **FAST)
        await standby.start()
        try:
            for n in range(6):
                await enqueue(worker, 1 + n % 2, f"alert {n}")

            async def some_sent() -> bool:
                return len(sent_texts(fake_telegram)) >= 2

            await wait_until(some_sent)
            # The leader's process dies: its loop stops dead and PostgreSQL ends its sessions.
            leader._runner.cancel()
            admin = await asyncpg.connect(postgres_server)
            try:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                )
            finally:
                await admin.close()
            started = asyncio.get_running_loop().time()

            async def all_sent() -> bool:
                return (await worker.outbox.counts())["pending"] == 0

            await wait_until(all_sent)
            assert standby.is_leader
            assert asyncio.get_running_loop().time() - started < 10 * LEADER_CHECK_S
            texts = [t for _, t in sent_texts(fake_telegram)]
            assert sorted(texts) == sorted(f"alert {n}" for n in range(6))  # each once
        finally:
            await standby.stop()
            await first.close()
            await second.close()
            await worker.close()

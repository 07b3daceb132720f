"""The notifier end to end: a real python-telegram-bot Bot against the fake Telegram, a real SQLite outbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import telegram

from bot.notifier import Notifier
from bot.sandbox.telegram_server import FakeTelegram
from storage.store import Store

FAST = {"per_chat_interval": 0.0, "poll_interval": 0.2, "retry_backoff": 0.05}


@pytest.fixture(autouse=True)
def ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opt in to PTB's timedelta durations: in 22.x every RetryAfter otherwise warns (an error in tests)."""
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
async def store(main_database) -> AsyncIterator[Store]:
    opened = await Store.open(main_database)
    yield opened
    await opened.close()


@pytest.fixture
async def bot(fake_telegram: FakeTelegram) -> AsyncIterator[telegram.Bot]:
    async with telegram.Bot(fake_telegram.token, base_url=fake_telegram.base_url) as plain_bot:
        yield plain_bot


async def register(store: Store, fake: FakeTelegram, *user_ids: int) -> None:
    """A user who pressed /start: known to the bot's database and to Telegram, private chat id = user id."""
    for user_id in user_ids:
        fake.add_user(user_id)
        await store.users.upsert(user_id, user_id)


async def enqueue(store: Store, user_id: int, text: str, *, kind: str = "fill", silent: bool = False) -> int:
    async with store.db.transaction() as tx:
        return await store.outbox.enqueue(
            tx, user_id=user_id, chat_id=user_id, kind=kind, text=text, silent=silent
        )


async def settled(store: Store, notifier: Notifier | None = None, timeout: float = 10.0) -> dict[str, int]:
    """Wait until no alert is pending, then return the counts per status."""
    async with asyncio.timeout(timeout):
        while True:
            counts = await store.outbox.counts()
            if counts["pending"] == 0 and (notifier is None or notifier.pending_in_memory == 0):
                return counts
            await asyncio.sleep(0.02)


def texts_in(fake: FakeTelegram, chat_id: int) -> list[str]:
    return [m.text for m in fake.sent if m.chat_id == chat_id and m.method == "sendMessage"]


def attempt_times(fake: FakeTelegram, chat_id: int) -> list[float]:
    """When sendMessage calls to the chat reached the fake, accepted or refused."""
    refused = [r.time for r in fake.rejected if r.method == "sendMessage" and r.chat_id == chat_id]
    return sorted(refused + [m.time for m in fake.sent if m.chat_id == chat_id])


def send_attempts(fake: FakeTelegram, chat_id: int) -> int:
    refused = sum(1 for r in fake.rejected if r.method == "sendMessage" and r.chat_id == chat_id)
    return len(texts_in(fake, chat_id)) + refused


# ---- the outbox itself --------------------------------------------------------------------------------


async def test_an_alert_exists_only_if_its_transaction_commits(store: Store, fake_telegram: FakeTelegram):
    await register(store, fake_telegram, 1)
    with pytest.raises(RuntimeError):
        async with store.db.transaction() as tx:
            await store.outbox.enqueue(tx, user_id=1, chat_id=1, kind="fill", text="bought 0.1 BTC")
            raise RuntimeError("the fill was not recorded")
    assert await store.outbox.counts() == {"pending": 0, "sent": 0, "undeliverable": 0}
    alert_id = await enqueue(store, 1, "bought 0.1 BTC")
    assert (await store.outbox.get(alert_id)).status == "pending"


async def test_enqueue_refuses_an_unknown_kind(store: Store):
    async with store.db.transaction() as tx:
        with pytest.raises(ValueError, match="unknown alert kind"):
            await store.outbox.enqueue(tx, user_id=1, chat_id=1, kind="gossip", text="hello")


# ---- delivery -----------------------------------------------------------------------------------------


async def test_every_alert_arrives_exactly_once_in_order_and_is_marked_sent(
    store: Store, fake_telegram: FakeTelegram, bot: telegram.Bot
):
    users = (11, 12, 13)
    await register(store, fake_telegram, *users)
    for n in range(10):
        for user_id in users:
            await enqueue(store, user_id, f"fill {n} for {user_id}")
    notifier = Notifier(store, bot, **FAST)
    await notifier.start()
    try:
        notifier.wake()
        assert await settled(store, notifier) == {"pending": 0, "sent": 30, "undeliverable": 0}
    finally:
        await notifier.stop()
    for user_id in users:
        assert texts_in(fake_telegram, user_id) == [f"fill {n} for {user_id}" for n in range(10)]
        assert all(
            a.sent_at is not None and a.attempts == 1 for a in await store.outbox.list_for_chat(user_id)
        )
    assert notifier.stats.sent == 30


async def test_silent_alerts_are_sent_with_disable_notification(
    store: Store, fake_telegram: FakeTelegram, bot: telegram.Bot
):
    await register(store, fake_telegram, 21)
    await enqueue(store, 21, "daily summary", kind="summary", silent=True)
    await enqueue(store, 21, "strategy paused", kind="pause")
    notifier = Notifier(store, bot, **FAST)
    await notifier.start()
    try:
        await settled(store, notifier)
    finally:
        await notifier.stop()
    sent = {m.text: m.disable_notification for m in fake_telegram.sent}
    assert sent == {"daily summary": True, "strategy paused": False}


async def test_alerts_are_sent_as_html_and_refused_markup_falls_back_to_plain_text(
    store: Store, fake_telegram: FakeTelegram, bot: telegram.Bot
):
    await register(store, fake_telegram, 25)
    fine = await enqueue(store, 25, "<b>DCA #1 BTC/USDT</b>: filled 0.001 BTC &amp; fee 0.1 USDT")
    broken = await enqueue(store, 25, "<b>Grid #2 ETH/USDT</b> paused: <i>unclosed")
    notifier = Notifier(store, bot, **FAST)
    await notifier.start()
    try:
        assert (await settled(store, notifier))["sent"] == 2
    finally:
        await notifier.stop()
    sent = [(m.text, m.parse_mode) for m in fake_telegram.sent]
    assert sent == [
        ("<b>DCA #1 BTC/USDT</b>: filled 0.001 BTC &amp; fee 0.1 USDT", "HTML"),
        ("Grid #2 ETH/USDT paused: unclosed", None),
    ]
    assert [r.status for r in fake_telegram.rejected] == [400]  # one refusal, then the plain copy
    assert {(await store.outbox.get(i)).status for i in (fine, broken)} == {"sent"}


async def test_alerts_queued_by_another_connection_go_out_without_a_wake(
    store: Store, fake_telegram: FakeTelegram, bot: telegram.Bot, main_database
):
    await register(store, fake_telegram, 31)
    notifier = Notifier(store, bot, **FAST)
    await notifier.start()
    other_process = await Store.open(main_database)
    try:
        await enqueue(other_process, 31, "filled elsewhere")
        await fake_telegram.wait_for_message(31, timeout=3)
        await settled(store, notifier)
    finally:
        await other_process.close()
        await notifier.stop()
    assert texts_in(fake_telegram, 31) == ["filled elsewhere"]


# ---- Telegram's limits ----------------------------------------------------------------------------------


async def test_default_pacing_never_trips_telegrams_flood_limits(
    store: Store, fake_telegram: FakeTelegram, bot: telegram.Bot
):
    """40 chats × 2 alerts: more than 30 in the first second overall and two per chat, yet no 429 at all."""
    fake_telegram.enforce_limits(True)
    users = range(100, 140)
    await register(store, fake_telegram, *users)
    for n in range(2):
        for user_id in users:
            await enqueue(store, user_id, f"fill {n}")
    notifier = Notifier(store, bot, poll_interval=0.2)
    await notifier.start()
    try:
        assert (await settled(store, notifier))["sent"] == 80
    finally:
        await notifier.stop()
    assert fake_telegram.rejected_429 == 0
    for user_id in users:
        assert texts_in(fake_telegram, user_id) == ["fill 0", "fill 1"]
        first, second = (m.time for m in fake_telegram.sent if m.chat_id == user_id)
        assert second - first >= 0.95  # one per second per chat
    times = sorted(m.time for m in fake_telegram.sent)
    assert all(later - earlier > 1.0 for earlier, later in zip(times, times[30:], strict=False))


async def test_order_per_chat_holds_and_nothing_doubles_under_429s(
    store: Store, fake_telegram: FakeTelegram, bot: telegram.Bot
):
    """No pacing of our own, so the fake's per-chat limit answers 429 (plus a scripted burst of them)."""
    fake_telegram.enforce_limits(True)
    users = (41, 42, 43)
    await register(store, fake_telegram, *users)
    for n in range(6):
        for user_id in users:
            await enqueue(store, user_id, f"fill {n} for {user_id}")
    fake_telegram.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", count=2, retry_after=1)
    notifier = Notifier(store, bot, **FAST)
    await notifier.start()
    try:
        assert (await settled(store, notifier, timeout=15))["sent"] == 18
    finally:
        await notifier.stop()
    for user_id in users:
        assert texts_in(fake_telegram, user_id) == [f"fill {n} for {user_id}" for n in range(6)]
    assert fake_telegram.rejected_429 >= 3
    assert notifier.stats.rate_limited == fake_telegram.rejected_429  # every 429 was honoured, none lost
    for refusal in (r for r in fake_telegram.rejected if r.status == 429):
        retry_after = int(refusal.description.rsplit(" ", 1)[1])
        next_try = min(t for t in attempt_times(fake_telegram, refusal.chat_id) if t > refusal.time)
        assert next_try - refusal.time >= retry_after - 0.05  # waited as told before trying that chat again
    assert notifier.stats.transient_failures == 0  # a 429 is not a failure


async def test_429s_on_two_chats_at_once_pause_every_chat(
    store: Store, fake_telegram: FakeTelegram, bot: telegram.Bot
):
    """Two chats refused within a second means the overall limit: nobody is sent to until retry_after."""
    users = range(201, 209)
    await register(store, fake_telegram, *users)
    for user_id in users:
        await enqueue(store, user_id, f"fill for {user_id}")
    fake_telegram.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", count=2, retry_after=1)
    notifier = Notifier(store, bot, **FAST)
    await notifier.start()
    try:
        assert (await settled(store, notifier))["sent"] == 8
    finally:
        await notifier.stop()
    second_429 = max(r.time for r in fake_telegram.rejected if r.status == 429)
    during_pause = [m for m in fake_telegram.sent if second_429 + 0.1 < m.time < second_429 + 0.95]
    assert during_pause == []
    assert any(m.time >= second_429 + 0.95 for m in fake_telegram.sent)
    assert notifier.stats.global_pauses == 1


# ---- failures -------------------------------------------------------------------------------------------


async def test_a_user_who_blocked_the_bot_gets_no_retries_and_others_are_unaffected(
    store: Store, fake_telegram: FakeTelegram, bot: telegram.Bot
):
    await register(store, fake_telegram, 51, 52)
    fake_telegram.block_user(51)
    for n in range(4):
        await enqueue(store, 51, f"fill {n} for 51")
        await enqueue(store, 52, f"fill {n} for 52")
    notifier = Notifier(store, bot, **FAST)
    await notifier.start()
    try:
        assert await settled(store, notifier) == {"pending": 0, "sent": 4, "undeliverable": 4}
        assert not (await store.users.get(51)).active
        late = await enqueue(store, 51, "fill after the block")
        notifier.wake()
        await settled(store, notifier)
        await asyncio.sleep(0.3)  # a few more poll cycles: still nothing goes to the blocked chat
    finally:
        await notifier.stop()
    assert send_attempts(fake_telegram, 51) == 1
    assert texts_in(fake_telegram, 52) == [f"fill {n} for 52" for n in range(4)]
    assert (await store.outbox.get(late)).status == "undeliverable"
    assert all("blocked" in (a.error or "") for a in await store.outbox.list_for_chat(51) if a.id != late)
    assert notifier.stats.users_blocked == 1


async def test_start_reactivates_a_blocked_user_without_their_backlog(
    store: Store, fake_telegram: FakeTelegram, bot: telegram.Bot
):
    await register(store, fake_telegram, 61)
    fake_telegram.block_user(61)
    await enqueue(store, 61, "missed while blocked")
    notifier = Notifier(store, bot, **FAST)
    await notifier.start()
    try:
        await settled(store, notifier)
        fake_telegram.unblock_user(61)
        await store.users.upsert(61, 61)  # what /start does
        await enqueue(store, 61, "after /start")
        notifier.wake()
        await settled(store, notifier)
    finally:
        await notifier.stop()
    assert texts_in(fake_telegram, 61) == ["after /start"]
    assert (await store.users.get(61)).active


async def test_transient_server_errors_are_retried_until_delivered_once(
    store: Store, fake_telegram: FakeTelegram, bot: telegram.Bot
):
    await register(store, fake_telegram, 71)
    fake_telegram.fail_next("sendMessage", 500, "Internal Server Error", count=2)
    alert_id = await enqueue(store, 71, "fill survives a 500")
    notifier = Notifier(store, bot, **FAST)
    await notifier.start()
    try:
        await settled(store, notifier)
    finally:
        await notifier.stop()
    assert texts_in(fake_telegram, 71) == ["fill survives a 500"]
    alert = await store.outbox.get(alert_id)
    assert (alert.status, alert.attempts) == ("sent", 3)
    assert notifier.stats.transient_failures == 2


async def test_alerts_wait_in_the_table_while_telegram_is_unreachable(
    store: Store, fake_telegram: FakeTelegram, bot: telegram.Bot, unused_tcp_port: int
):
    await register(store, fake_telegram, 75)
    alert_id = await enqueue(store, 75, "fill during an outage")
    # Nothing listens there: even the notifier's start-up getMe fails, which must not stop it starting.
    unreachable = telegram.Bot(fake_telegram.token, base_url=f"http://127.0.0.1:{unused_tcp_port}/bot")
    down = Notifier(store, unreachable, **FAST)
    await down.start()
    try:
        async with asyncio.timeout(5):
            while down.stats.transient_failures < 3:
                await asyncio.sleep(0.02)
    finally:
        await down.stop()
    alert = await store.outbox.get(alert_id)
    assert (alert.status, alert.attempts) == ("pending", down.stats.transient_failures)

    back = Notifier(store, bot, **FAST)
    await back.start()
    try:
        await settled(store, back)
    finally:
        await back.stop()
    assert texts_in(fake_telegram, 75) == ["fill during an outage"]


async def test_a_message_telegram_refuses_is_undeliverable_and_the_chat_carries_on(
    store: Store, fake_telegram: FakeTelegram, bot: telegram.Bot
):
    await register(store, fake_telegram, 81)
    too_long = await enqueue(store, 81, "x" * 5000)
    await enqueue(store, 81, "next alert")
    notifier = Notifier(store, bot, **FAST)
    await notifier.start()
    try:
        assert await settled(store, notifier) == {"pending": 0, "sent": 1, "undeliverable": 1}
    finally:
        await notifier.stop()
    assert texts_in(fake_telegram, 81) == ["next alert"]
    assert "message is too long" in (await store.outbox.get(too_long)).error.lower()
    assert (await store.users.get(81)).active


# ---- restarts -------------------------------------------------------------------------------------------


async def test_a_restart_midway_resends_nothing_and_drops_nothing(
    fake_telegram: FakeTelegram, bot: telegram.Bot, main_database
):
    path = main_database
    first = await Store.open(path)
    users = (91, 92)
    await register(first, fake_telegram, *users)
    for n in range(8):
        for user_id in users:
            await enqueue(first, user_id, f"fill {n} for {user_id}")
    notifier = Notifier(first, bot, per_chat_interval=0.1, poll_interval=0.2)
    await notifier.start()
    async with asyncio.timeout(5):
        while len(fake_telegram.sent) < 5:
            await asyncio.sleep(0.01)
    await notifier.stop()
    await first.close()
    sent_before = len(fake_telegram.sent)
    assert 5 <= sent_before < 16

    second = await Store.open(path)
    restarted = Notifier(second, bot, **FAST)
    await restarted.start()
    try:
        assert (await settled(second, restarted))["sent"] == 16
    finally:
        await restarted.stop()
        await second.close()
    assert restarted.stats.sent == 16 - sent_before
    for user_id in users:
        assert texts_in(fake_telegram, user_id) == [f"fill {n} for {user_id}" for n in range(8)]

"""Access modes through the real bot (real PTB against the fake Telegram, real ccxt against the fake venues):
in approval mode a newcomer's /start files one request with the admins and nothing else works for them until an
admin approves; a non-admin cannot press an admin's button; a block pauses and cancels as /panic does, and tells
the user once; an unblock lets them back with their strategies still paused."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from handlers.common import MAX_TEXT, text_units
from handlers.start import COMMANDS
from handlers.users import users_view
from storage.users import UserAccess
from tests.chat_helpers import OTHER, USER, connect_with_key
from tests.test_chat_strategies import allocate_one_line, open_orders, wait_for_open_orders

ADMIN = 9001
ADMIN2 = 9002
NEWBIE = 3003
WAITING = "waiting for an admin"
SORRY = "something went wrong"


def sent_to(s, chat_id: int, needle: str) -> list:
    return [m for m in s.tg.sent if m.chat_id == chat_id and needle.lower() in (m.text or "").lower()]


async def audit_actions(s, user_id: int) -> list[str]:
    return [e.action for e in reversed(await s.runtime.store.audit.page(user_id=user_id, limit=50))]


async def admin_starts(s) -> None:
    """An admin writes to the bot once, as on Telegram a bot can message only those who did."""
    await s.send(ADMIN, "/start")
    await s.next_reply(ADMIN, contains="Strata")


async def request_access(s, user_id: int = NEWBIE):
    """The newcomer's /start, and the one request message it puts in the admin's chat."""
    await admin_starts(s)
    await s.send(user_id, "/start", first_name="Nina", username="nina")
    assert WAITING in (await s.next_reply(user_id)).text
    return await s.next_reply(ADMIN, contains="Access request")


async def test_a_pending_user_is_refused_everything_until_an_admin_approves(make_strata):
    async with make_strata(STRATA_ADMINS=f"{ADMIN},{ADMIN2}") as s:
        assert s.settings.access == "approval"
        await s.send(ADMIN2, "/start")
        await s.next_reply(ADMIN2, contains="Strata")
        request = await request_access(s)
        copy = await s.next_reply(ADMIN2, contains="Access request")  # each admin gets their own
        assert "Nina (@nina)" in request.text and str(NEWBIE) in request.text
        assert request.button_texts == ["✅ Approve", "⛔ Block"]

        # A second /start does not ask the admins again.
        await s.send(NEWBIE, "/start")
        assert WAITING in (await s.next_reply(NEWBIE)).text

        # Every command, free text, a command name as text, a mistyped command: the same short refusal.
        for text in [*(f"/{name}" for name, _ in COMMANDS), "/users", "/allocate binance dca 100 BTC/USDT",
                     "hello", "status", "/stauts"]:
            await s.send(NEWBIE, text)
            reply = await s.next_reply(NEWBIE)
            assert WAITING in reply.text, (text, reply.text)
            assert not reply.buttons
        # Every button, including forged ones: refused with an alert, nothing done.
        answered = len(s.tg.answered_callbacks)
        own_message = s.tg.messages_in(NEWBIE)[-1]
        for data in ("panic:yes", "panic:resume", "alloc:confirm", "st:page:2", "set:summary:on",
                     f"usr:approve:{NEWBIE}", "disc:yes:1"):
            s.tg.press_callback_data(NEWBIE, own_message["message_id"], data)
        await _wait(lambda: len(s.tg.answered_callbacks) == answered + 7)
        assert all(WAITING in a.text and a.show_alert for a in s.tg.answered_callbacks[answered:])
        await asyncio.sleep(1.5)  # the notifier's next pass: no second request went out
        assert len(sent_to(s, ADMIN, "Access request")) == 1 and len(sent_to(s, ADMIN2, "Access request")) == 1
        assert await s.runtime.store.users.access_of(NEWBIE) == "pending"
        assert not sent_to(s, NEWBIE, SORRY)

        await s.press(ADMIN, request, "✅ Approve")
        done = await s.next_reply(ADMIN, contains="approved")
        assert done.message_id == request.message_id and not done.buttons
        assert "approved your access" in (await s.next_reply(NEWBIE, contains="approved")).text
        await s.send(NEWBIE, "/connect")
        assert "Which exchange" in (await s.next_reply(NEWBIE)).text
        assert await audit_actions(s, NEWBIE) == ["request-access", "approve"]
        request_row, approve_row = reversed(await s.runtime.store.audit.page(user_id=NEWBIE))
        assert (request_row.actor_id, approve_row.actor_id) == (NEWBIE, ADMIN)
        assert f"user {NEWBIE} (Nina (@nina))" == approve_row.target

        # The other admin's copy pressed afterwards: nothing changes twice.
        await s.press(ADMIN2, copy, "✅ Approve")
        await _wait(lambda: any("already approved" in (a.text or "") for a in s.tg.answered_callbacks))
        assert await audit_actions(s, NEWBIE) == ["request-access", "approve"]


async def test_a_non_admin_pressing_an_admin_button_is_refused(make_strata):
    # USER is on STRATA_ALLOWED_USERS: let in without a request in approval mode, yet not an admin.
    async with make_strata(STRATA_ADMINS=str(ADMIN), STRATA_ALLOWED_USERS=str(USER)) as s:
        await request_access(s)
        await s.send(USER, "/start")
        welcome = await s.next_reply(USER)
        assert "Strata" in welcome.text
        answered = len(s.tg.answered_callbacks)
        for data in (f"usr:approve:{NEWBIE}", f"usr:block:{NEWBIE}:1", "usr:page:1", f"usr:unblock:{ADMIN}"):
            s.tg.press_callback_data(USER, welcome, data)  # a forwarded admin message, or forged data
        await _wait(lambda: len(s.tg.answered_callbacks) == answered + 4)
        assert all("Only this bot's admins" in a.text for a in s.tg.answered_callbacks[answered:])
        assert await s.runtime.store.users.access_of(NEWBIE) == "pending"

        await s.send(USER, "/users")
        assert "I don't know /users" in (await s.next_reply(USER)).text
        await s.send(USER, "/help")
        assert "/users" not in (await s.next_reply(USER)).text
        await s.send(ADMIN, "/help")
        assert "/users" in (await s.next_reply(ADMIN)).text
        assert await audit_actions(s, NEWBIE) == ["request-access"]


async def test_blocking_pauses_strategies_cancels_open_orders_and_tells_the_user_once(make_strata, fake_exchanges):
    kraken = fake_exchanges.books["kraken"]
    kraken.set_price("BTC/USD", "65000")
    async with make_strata(STRATA_ADMINS=str(ADMIN), STRATA_ALLOWED_USERS=str(USER)) as s:
        await admin_starts(s)
        await s.send(USER, "/start")
        await s.next_reply(USER)
        _, key = await connect_with_key(s, fake_exchanges, "kraken", balances={"USD": Decimal(5000)})
        await allocate_one_line(s, "/allocate kraken grid 500 BTC/USD low=60000 high=65000 levels=3")
        await allocate_one_line(s, "/allocate kraken dca 100 BTC/USD every=1w amount=20")
        await wait_for_open_orders(fake_exchanges, "kraken", key)
        await asyncio.sleep(0.5)  # the ladder is complete
        assert len(open_orders(fake_exchanges, "kraken", key)) >= 2

        await s.send(ADMIN, "/users")
        listing = await s.next_reply(ADMIN, contains="Users")
        assert str(USER) in listing.text and "1 account" in listing.text and "2 strategies" in listing.text
        block = next(b for b in listing.button_texts if b.startswith("⛔ Block"))
        await s.press(ADMIN, listing, block)
        done = await s.next_reply(ADMIN, contains="Blocked", timeout=15)
        assert "paused 2 strategies" in done.text and done.message_id == listing.message_id
        assert any(b.startswith("↩️ Unblock") for b in done.button_texts)

        told = await s.next_reply(USER, contains="blocked your access", timeout=10)
        assert "paused 2 running strategies" in told.text and "kept" in told.text
        assert open_orders(fake_exchanges, "kraken", key) == []
        assert {x.status for x in await s.runtime.store.strategies.list_for_user(USER)} == {"paused"}
        await s.send(USER, "/status")
        assert "blocked" in (await s.next_reply(USER)).text
        await asyncio.sleep(1.5)
        assert len(sent_to(s, USER, "admin blocked your access")) == 1
        assert await s.runtime.store.accounts.list_for_user(USER)  # their data is kept

        await s.press(ADMIN, done, next(b for b in done.button_texts if b.startswith("↩️ Unblock")))
        await s.next_reply(ADMIN, contains="approved")
        assert "unblocked" in (await s.next_reply(USER, contains="unblocked")).text
        await s.send(USER, "/status")
        assert "paused" in (await s.next_reply(USER, contains="paused")).text.lower()
        assert {x.status for x in await s.runtime.store.strategies.list_for_user(USER)} == {"paused"}
        assert open_orders(fake_exchanges, "kraken", key) == []
        entries = list(reversed(await s.runtime.store.audit.page(user_id=USER, limit=50)))
        tail = [(e.action, e.actor_id) for e in entries][-3:]
        assert tail == [("panic", ADMIN), ("block", ADMIN), ("unblock", ADMIN)]
        assert "paused 2 strategies" in entries[-2].detail
        assert not sent_to(s, USER, SORRY) and not sent_to(s, ADMIN, SORRY)


async def test_a_block_during_a_confirmation_also_catches_the_strategy_it_starts(make_strata, fake_exchanges):
    binance = fake_exchanges.books["binance"]
    binance.set_price("BTC/USDT", "50000")
    async with make_strata(STRATA_ADMINS=str(ADMIN), STRATA_ALLOWED_USERS=str(USER)) as s:
        await admin_starts(s)
        _, key = await connect_with_key(s, fake_exchanges, "binance", balances={"USDT": Decimal(5000)})
        await s.send(USER, "/allocate binance grid 500 BTC/USDT low=45000 high=50000 levels=3")
        summary = await s.next_reply(USER, contains="Allocation summary")
        binance.inject("hold", path="/api/v3/account", method="GET", seconds=2)  # Confirm re-reads the balance
        await s.press(USER, summary, "Confirm allocation")
        await asyncio.sleep(0.5)  # the confirmation is under way, waiting for the exchange
        await s.send(ADMIN, "/users")
        listing = await s.next_reply(ADMIN, contains="Users")
        await s.press(ADMIN, listing, next(b for b in listing.button_texts if b.startswith("⛔ Block")))
        await s.next_reply(ADMIN, contains="Blocked", timeout=20)

        assert "is running" in (await s.next_reply(USER, contains="is running")).text  # it was confirmed…
        await asyncio.sleep(1.5)  # …and nothing of it is left trading afterwards
        assert {x.status for x in await s.runtime.store.strategies.list_for_user(USER)} == {"paused"}
        assert open_orders(fake_exchanges, "binance", key) == []


async def test_open_mode_with_admins_lets_everyone_in_but_honours_a_block(make_strata):
    async with make_strata(STRATA_ADMINS=str(ADMIN), STRATA_ACCESS="open") as s:
        await s.send(OTHER, "/start")
        assert "Strata" in (await s.next_reply(OTHER)).text
        assert not sent_to(s, ADMIN, "Access request")
        assert (await s.runtime.access.block(ADMIN, OTHER)).access == "blocked"
        await s.send(OTHER, "/help")
        assert "blocked" in (await s.next_reply(OTHER)).text


async def _wait(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_the_users_list_comes_in_pages_within_telegrams_limits():
    users = [
        UserAccess(id=10_000 + i, chat_id=10_000 + i, name="N" * 64 if i % 2 else "<b>&", access=state,
                   accounts=i % 3, strategies=i % 5)
        for i, state in enumerate(["pending", "approved", "blocked"] * 9)
    ]
    seen = set()
    for page in range(1, 5):
        text, markup = users_view(users, frozenset({10_001}), page)
        assert text_units(text) <= MAX_TEXT and "<b>&" not in text
        rows = markup.inline_keyboard
        labels = [b.text for row in rows for b in row]
        assert sum(len(row) for row in rows) <= 100 and all(len(b.callback_data) <= 64 for row in rows for b in row)
        seen.update(u for u in range(10_000, 10_027) if f"<code>{u}</code>" in text)
        assert f"page {page} of 4" in text
        assert (f"page {page + 1} ▶" in labels) == (page < 4) and (f"◀ page {page - 1}" in labels) == (page > 1)
    assert seen == set(range(10_000, 10_027))  # every user on some page
    first, markup = users_view(users, frozenset({10_001}), 1)
    assert "👑 admin" in first
    # an admin gets no button
    assert not any(str(10_001) in b.callback_data for row in markup.inline_keyboard for b in row)

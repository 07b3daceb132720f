"""The audit log through the real bot: every action on money or access leaves one entry (who, whose, on what,
the outcome), never a secret; /history shows it newest first in pages, to its owner and to admins only."""

from __future__ import annotations

import secrets
from zoneinfo import ZoneInfo

from bot.services.audit import AuditLog
from handlers.common import MAX_TEXT, text_units
from tests.chat_helpers import OTHER, USER, make_keypair, register, send_key_pair, start_connect
from tests.stream_helpers import wait_for
from tests.test_connect import assert_no_leak

ADMIN = 9009
#: 64 letters and digits, as a Binance secret is: sent as the API secret of two refused /connect and one kept.
PLANTED = "Zq8PlantedSecret" + secrets.token_hex(24)


async def _rows(s) -> list[tuple]:
    """Every audit row, oldest first."""
    entries = await s.runtime.store.audit.page(limit=1000)
    return [(e.actor_id, e.user_id, e.action, e.target, e.outcome, e.detail) for e in reversed(entries)]


async def _say(s, user: int, text: str, contains: str):
    await s.send(user, text)
    return await s.next_reply(user, contains=contains, timeout=15)


async def test_each_action_leaves_one_entry_with_who_whose_what_and_outcome_and_no_secret(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    # Refused: a key that can withdraw, whose secret is the planted one.
    withdrawing = secrets.token_hex(32)
    book.add_key(withdrawing, PLANTED, can_withdraw=True)
    await start_connect(strata, "Binance Spot")
    await send_key_pair(strata, withdrawing, PLANTED)
    await strata.next_reply(USER, contains="Nothing was stored", timeout=15)
    # Refused: a key the exchange does not know, the planted secret again.
    await start_connect(strata, "Binance Spot")
    await send_key_pair(strata, secrets.token_hex(32), PLANTED)
    await strata.next_reply(USER, contains="Nothing was stored", timeout=15)
    # Connected, then its key replaced by a new key of the same Binance account.
    api_key, secret = register(fake_exchanges, "binance")
    await start_connect(strata, "Binance Spot")
    await send_key_pair(strata, api_key, secret)
    await strata.next_reply(USER, contains="Connected", timeout=15)
    new_key, new_secret = make_keypair("binance")
    book.add_key(new_key, new_secret, same_account_as=api_key)
    await _say(strata, USER, "/connect replace binance", "New key for binance")
    await send_key_pair(strata, new_key, new_secret)
    await strata.next_reply(USER, contains="New key stored", timeout=15)

    summary = await _say(strata, USER, "/allocate binance dca 100 BTC/USDT every=1d amount=20", "Confirm")
    await strata.press(USER, summary, "Confirm allocation")
    await strata.next_reply(USER, contains="is running", timeout=15)
    (strategy,) = await strata.runtime.store.strategies.list_for_user(USER)
    sid = strategy.id
    change = await _say(strata, USER, f"/edit {sid} budget=150 name=my secret plan", "Change")
    await strata.press(USER, change, "Confirm change")
    await strata.next_reply(USER, contains="changed")
    await _say(strata, USER, f"/pause {sid}", "paused")
    await _say(strata, USER, f"/resume {sid}", "running again")
    question = await _say(strata, USER, "/panic", "Pause")
    await strata.press(USER, question, "Pause and cancel")
    await strata.next_reply(USER, contains="Resume all", timeout=15)
    question = await _say(strata, USER, f"/stop {sid}", "Stop")
    await strata.press(USER, question, "Stop and keep")
    await strata.next_reply(USER, contains="stopped;", timeout=15)
    await _say(strata, USER, "/settings tz europe/PARIS", "Settings")
    question = await _say(strata, USER, "/disconnect binance", "Disconnect")
    await strata.press(USER, question, "Confirm disconnect")
    await strata.next_reply(USER, contains="disconnected", timeout=15)

    rows = await _rows(strata)
    assert [(r[2], r[4]) for r in rows] == [
        ("connect", "refused"), ("connect", "refused"), ("connect", "ok"), ("replace-key", "ok"),
        ("allocate", "ok"), ("confirm", "ok"), ("edit", "ok"), ("pause", "ok"), ("resume", "ok"), ("panic", "ok"),
        ("stop", "ok"), ("settings", "ok"), ("disconnect", "ok"),
    ], rows
    assert {(r[0], r[1]) for r in rows} == {(USER, USER)}  # the user acted, on their own data
    by_action = {}
    for row in rows:
        by_action.setdefault(row[2], []).append((row[3], row[5]))
    assert by_action["connect"][0] == ("Binance Spot account", "the key can withdraw")
    assert by_action["connect"][1] == ("Binance Spot account", "the exchange rejected the key")
    assert by_action["connect"][2][0] == "account binance (Binance Spot)"
    assert by_action["replace-key"][0][0] == "account binance (Binance Spot)"
    assert by_action["allocate"][0][0] == "a new DCA BTC/USDT on account binance"
    assert "100" in by_action["allocate"][0][1]
    for action in ("confirm", "edit", "pause", "resume", "stop"):
        assert by_action[action][0][0] == f"strategy #{sid} DCA BTC/USDT", (action, by_action[action])
    assert "150" in by_action["edit"][0][1] and "renamed" in by_action["edit"][0][1]
    assert by_action["panic"][0] == ("every strategy", "1 paused; 0 order(s) cancelled")
    assert by_action["stop"][0][1].startswith("kept what it held")
    assert by_action["settings"][0] == ("time zone", "Europe/Paris")
    assert by_action["disconnect"][0] == ("account binance (Binance Spot)", "0 strategies stopped; key destroyed")

    # Never a secret, never the user's own words: not in a row, not in any file of the data folder or the logs.
    text = repr(rows)
    for value in (PLANTED, api_key, secret, new_key, new_secret, withdrawing, "my secret plan"):
        assert value not in text
    assert_no_leak(strata, PLANTED, api_key, secret, new_key, new_secret, withdrawing)

    # The account is gone; its entries are not, and /history still shows them (in the user's zone).
    assert await strata.runtime.store.accounts.list_for_user(USER) == []
    page = await _say(strata, USER, "/history", "Your history")
    assert "times in Europe/Paris" in page.plain_text
    assert "Disconnected an account · account binance (Binance Spot)" in page.plain_text
    assert text_units(page.text) <= MAX_TEXT
    (newest,) = await strata.runtime.store.audit.page(user_id=USER, limit=1)
    local = newest.at.astimezone(ZoneInfo("Europe/Paris")).strftime("%Y-%m-%d %H:%M")
    assert page.plain_text.splitlines()[1].startswith(local)
    assert page.plain_text.count("\n") == 10  # the header and ten entries: the rest on the next page
    await strata.press(USER, page, "◀ Older")
    older = await strata.next_reply(USER, contains="Your history")
    assert older.message_id == page.message_id
    assert older.plain_text.count("⛔ refused") == 2 and "the key can withdraw" in older.plain_text
    assert "Connected an account · account binance" in older.plain_text
    assert [b["text"] for row in older.reply_markup["inline_keyboard"] for b in row] == ["Newer ▶"]
    await strata.press(USER, older, "Newer ▶")
    again = await strata.next_reply(USER, contains="Your history")
    assert again.plain_text == page.plain_text


async def test_a_pause_that_cancels_orders_and_a_refused_pause_are_recorded_as_they_ended(strata, fake_exchanges):
    api_key, secret = register(fake_exchanges, "binance")
    await start_connect(strata, "Binance Spot")
    await send_key_pair(strata, api_key, secret)
    await strata.next_reply(USER, contains="Connected", timeout=15)
    fake_exchanges.books["binance"].set_price("BTC/USDT", "27000")
    summary = await _say(
        strata, USER, "/allocate binance grid 1000 BTC/USDT low=25000 high=29000 levels=4", "Confirm"
    )
    await strata.press(USER, summary, "Confirm allocation")
    await strata.next_reply(USER, contains="is running", timeout=15)
    (strategy,) = await strata.runtime.store.strategies.list_for_user(USER)

    async def resting():
        return len(await strata.runtime.store.orders.in_states(("open",), strategy_id=strategy.id)) >= 2

    await wait_for(resting, timeout=15)
    await _say(strata, USER, f"/pause {strategy.id}", "paused")
    await _say(strata, USER, f"/pause {strategy.id}", "not running")
    await _say(strata, OTHER, f"/resume {strategy.id}", "No such strategy")  # not theirs: refused, as if missing

    rows = await _rows(strata)
    paused, refused = [r for r in rows if r[2] == "pause"]
    assert paused[4] == "ok" and "order(s) cancelled" in paused[5] and not paused[5].startswith("0 ")
    assert (refused[4], refused[5]) == ("refused", "it was paused")
    (theirs,) = [r for r in rows if r[1] == OTHER]
    assert theirs == (OTHER, OTHER, "resume", f"strategy #{strategy.id}", "refused", "no such strategy")


async def test_a_paper_account_opened_and_removed_is_recorded_as_such(strata):
    await _say(strata, USER, "/connect paper kraken 500", "Paper")
    question = await _say(strata, USER, "/disconnect paper", "Disconnect")
    await strata.press(USER, question, "Confirm disconnect")
    await strata.next_reply(USER, contains="removed", timeout=15)
    paper = "account paper (📝 Paper (Kraken prices))"
    assert [r[2:] for r in await _rows(strata)] == [
        ("connect", paper, "ok", "simulated 500.00 USD"),
        ("disconnect", paper, "ok", "0 strategies stopped; simulated balances deleted"),
    ]


async def test_history_is_the_users_own_and_admins_see_anyones(make_strata):
    async with make_strata(STRATA_ADMINS=str(ADMIN), STRATA_ACCESS="open") as s:
        for user in (USER, OTHER, ADMIN):
            await _say(s, user, "/start", "Strata")
        await _say(s, USER, "/connect paper binance", "Paper")
        await _say(s, OTHER, "/connect paper kraken", "Paper")
        await _say(s, OTHER, "/settings tz Asia/Tokyo", "Settings")

        mine = await _say(s, USER, "/history", "history")
        assert "Connected an account · account paper" in mine.plain_text
        assert "Asia/Tokyo" not in mine.plain_text and "Kraken" not in mine.plain_text

        # Someone else's, or everyone's: one refusal, the same whether that user exists or not.
        refused = [await _say(s, USER, f"/history {who}", "history") for who in (OTHER, 55555, "all")]
        assert {m.plain_text for m in refused} == {"❌ You can only see your own history: send /history."}
        assert (await _say(s, USER, f"/history {USER}", "history")).plain_text == mine.plain_text

        theirs = await _say(s, ADMIN, f"/history {OTHER}", "History of user")
        assert "Asia/Tokyo" in theirs.plain_text and "Binance" not in theirs.plain_text
        everyone = await _say(s, ADMIN, "/history all", "Everyone's history")
        assert f"user {USER}" in everyone.plain_text and f"user {OTHER}" in everyone.plain_text
        assert everyone.plain_text.count("\n") == 3
        assert "Nothing recorded yet" in (await _say(s, ADMIN, "/history", "Your history")).plain_text

        # Page buttons: an admin's "everyone" page, its Older button pressed (forwarded) by a user.
        log = AuditLog(s.runtime.store)
        for hour in range(12):
            await s.runtime.settings_service.set_summary(OTHER, hour=hour)
        everyone = await _say(s, ADMIN, "/history all", "Everyone's history")
        older = next(b["callback_data"] for row in everyone.reply_markup["inline_keyboard"] for b in row
                     if b["text"] == "◀ Older")
        s.tg.press_callback_data(USER, refused[0], older)
        shown = await s.next_reply(USER, contains="history")
        assert shown.plain_text == mine.plain_text  # their own, nothing of anyone else's
        s.tg.press_callback_data(USER, refused[1], "hist:me:o:999999999999999999999")  # forged: malformed
        assert "expired" in (await s.next_reply(USER, contains="history")).plain_text
        s.tg.add_group(-100777)  # in a group, nobody's history: not even an admin's own
        await s.send(ADMIN, "/history all", chat_id=-100777, chat_type="group")
        in_group = await s.next_reply(-100777)
        assert "use this command in a private chat" in in_group.plain_text
        s.tg.press_callback_data(ADMIN, in_group, older, chat_id=-100777)  # a page button pressed in the group
        assert "lists what was done" in (await s.next_reply(-100777)).plain_text
        s.tg.press_callback_data(ADMIN, everyone, older)
        second = await s.next_reply(ADMIN, contains="Everyone's history")
        assert f"user {USER}" in second.plain_text and "Connected an account" in second.plain_text
        assert len(await log.page(user_id=None, limit=100)) == 15


def test_a_page_of_the_longest_entries_fits_one_telegram_message():
    """Ten entries with every field at its stored maximum, full of characters HTML escapes, in any view."""
    from datetime import UTC, datetime

    from bot.services.audit import HistoryPage
    from handlers.history import history_text
    from storage.audit import AuditEntry

    entries = tuple(
        AuditEntry(id=n, at=datetime(2026, 12, 5, tzinfo=UTC), actor_id=2**62 + n, user_id=2**62, action="replace-key",
                   target="<&>" * 67, outcome="refused", detail="&<>" * 167)
        for n in range(10, 0, -1)
    )
    for subject in (None, 2**62, 2**62 + 1):
        text = history_text(HistoryPage(entries, subject, True, True, "America/Argentina/ComodRivadavia"), 2**62 + 1)
        assert text.count("\n") == 10 and text_units(text) <= MAX_TEXT, text_units(text)

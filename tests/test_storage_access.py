"""Access states and alerts with buttons in the database, on both backends (SQLite and PostgreSQL)."""

from __future__ import annotations

from storage.store import Store
from storage.users import APPROVED, BLOCKED, PENDING


async def test_a_request_is_filed_once_and_each_change_happens_from_the_expected_state_only(any_database):
    store = await Store.open(any_database)
    try:
        await store.users.upsert(1, 1)  # a user from before approval mode: approved
        async with store.db.transaction() as tx:
            assert await store.users.request_access(tx, 2, 2, "Nina (@nina)")
        async with store.db.transaction() as tx:
            assert not await store.users.request_access(tx, 2, 2, "Nina again")  # no second request
            assert not await store.users.request_access(tx, 1, 1, "old")
        assert (await store.users.access_of(1), await store.users.access_of(2), await store.users.access_of(3)) == (
            APPROVED, PENDING, None)

        async with store.db.transaction() as tx:
            assert not await store.users.set_access(tx, 2, APPROVED, only_from=(BLOCKED,))
            assert await store.users.set_access(tx, 2, BLOCKED, only_from=(PENDING, APPROVED))
            assert not await store.users.set_access(tx, 2, BLOCKED, only_from=(PENDING, APPROVED))  # a second press
        listed = await store.users.access_list()
        assert [(u.id, u.access, u.name, u.accounts, u.strategies) for u in listed] == [
            (1, APPROVED, "", 0, 0), (2, BLOCKED, "Nina (@nina)", 0, 0)]
        assert await store.users.access_one(2) == listed[1]
        assert await store.users.access_one(3) is None
    finally:
        await store.close()


async def test_an_alert_keeps_its_buttons_until_it_is_sent(any_database):
    store = await Store.open(any_database)
    try:
        await store.users.upsert(7, 7)
        async with store.db.transaction() as tx:
            await store.outbox.enqueue(tx, user_id=7, chat_id=7, kind="info", text="plain")
            await store.outbox.enqueue(tx, user_id=7, chat_id=7, kind="info", text="ask",
                                       buttons=[[("✅ Approve", "usr:approve:2"), ("⛔ Block", "usr:block:2")]])
        plain, ask = [p.alert for p in await store.outbox.claim_pending("me")]
        assert plain.buttons == ()
        assert ask.buttons == ((("✅ Approve", "usr:approve:2"), ("⛔ Block", "usr:block:2")),)
    finally:
        await store.close()

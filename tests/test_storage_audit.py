"""The audit log's storage and service: append-only rows, newest first, paged, per user, never a secret."""

from __future__ import annotations

from bot.redaction import register_secret
from bot.services.audit import AuditLog
from storage.store import Store

PLANTED = "Zq8PlantedSecretValue0123456789abcdefABCDEFxyz"


async def test_entries_page_newest_first_per_user_and_survive_the_account(tmp_path):
    store = await Store.open(tmp_path / "main.db")
    try:
        audit = AuditLog(store)
        for n in range(5):
            await audit.record("pause", actor_id=1, user_id=1, target=f"strategy #{n}")
        await audit.record("connect", actor_id=2, user_id=2, target="account binance")
        await audit.record("approve", actor_id=9, user_id=2, target="user 2")

        mine = await audit.page(user_id=1, limit=3)
        assert [e.target for e in mine] == ["strategy #4", "strategy #3", "strategy #2"]
        older = await audit.page(user_id=1, before_id=mine[-1].id, limit=3)
        assert [e.target for e in older] == ["strategy #1", "strategy #0"]

        theirs = await audit.page(user_id=2)
        assert [(e.action, e.actor_id) for e in theirs] == [("approve", 9), ("connect", 2)]
        admin_view = await audit.page(user_id=9)  # the admin's own actions show in their own history too
        assert [e.action for e in admin_view] == ["approve"]
        assert len(await audit.page(user_id=None, limit=100)) == 7
    finally:
        await store.close()


async def test_a_secret_that_reaches_an_entry_is_redacted_before_it_is_stored(tmp_path):
    register_secret(PLANTED)
    path = tmp_path / "main.db"
    store = await Store.open(path)
    try:
        await AuditLog(store).record(
            "connect", actor_id=1, user_id=1, target="account binance", outcome="refused",
            detail=f"the venue said: invalid key {PLANTED}",
        )
        (entry,) = await store.audit.page(user_id=1)
        assert PLANTED not in entry.detail and "invalid key" in entry.detail
    finally:
        await store.close()
    assert PLANTED.encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())


async def test_unknown_actions_are_a_programming_error(tmp_path):
    store = await Store.open(tmp_path / "main.db")
    try:
        try:
            await AuditLog(store).record("teleport", actor_id=1, user_id=1)
        except ValueError as exc:
            assert "teleport" in str(exc)
        else:
            raise AssertionError("an unknown action was recorded")
    finally:
        await store.close()

"""The audit log's storage and service: append-only rows, newest first, paged, per user, never a secret."""

from __future__ import annotations

from bot.redaction import register_secret
from bot.services.audit import AuditLog
from storage.store import Store

PLANTED = "Zq8PlantedSecretValue0123456789abcdefABCDEFxyz"


async def test_entries_page_newest_first_per_user_and_survive_the_account(any_database):
    store = await Store.open(any_database)
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


async def test_history_pages_both_ways_and_only_admins_see_other_users(any_database):
    from bot.services.errors import UserError

    store = await Store.open(any_database)
    try:
        audit = AuditLog(store)
        for n in range(23):
            await audit.record("pause", actor_id=1, user_id=1, target=f"strategy #{n}")
        await audit.record("connect", actor_id=2, user_id=2, target="account kraken")

        first = await audit.history(1, None, admins=(), per_page=10)
        assert [e.target for e in first.entries][:2] == ["strategy #22", "strategy #21"]
        assert (first.subject, first.has_older, first.has_newer, first.timezone) == (1, True, False, "UTC")
        second = await audit.history(1, None, admins=(), before_id=first.entries[-1].id, per_page=10)
        last = await audit.history(1, None, admins=(), before_id=second.entries[-1].id, per_page=10)
        assert [e.target for e in last.entries] == ["strategy #2", "strategy #1", "strategy #0"]
        assert (last.has_older, last.has_newer) == (False, True)
        back = await audit.history(1, None, admins=(), after_id=last.entries[0].id, per_page=10)
        assert back.entries == second.entries and back.has_older and back.has_newer
        stale = await audit.history(1, None, admins=(), before_id=1, per_page=10)  # beyond the end: the newest
        assert stale.entries == first.entries

        for viewer, subject in ((1, 2), (1, "all"), (1, 999)):
            try:
                await audit.history(viewer, subject, admins={9})
            except UserError as exc:
                assert exc.message == "You can only see your own history: send /history."
            else:
                raise AssertionError("a user saw another user's history")
        assert [e.target for e in (await audit.history(9, 2, admins={9})).entries] == ["account kraken"]
        everyone = await audit.history(9, "all", admins={9}, per_page=100)
        assert everyone.subject is None and len(everyone.entries) == 24
    finally:
        await store.close()


async def test_an_attempt_is_recorded_once_as_it_ended_and_never_with_the_errors_text(any_database):
    from bot.services.errors import UserError

    store = await Store.open(any_database)
    try:
        audit = AuditLog(store)
        async with audit.attempt("pause", actor_id=1, user_id=1, target="strategy #1"):
            pass
        for error in (UserError(f"typed {PLANTED}", reason="it was paused"), UserError("x", step="budget"),
                      RuntimeError(f"venue said {PLANTED}")):
            try:
                async with audit.attempt("allocate", actor_id=1, user_id=1, target="a new strategy") as attempt:
                    attempt.target = "a new DCA BTC/USDT on account binance"
                    raise error
            except (UserError, RuntimeError) as exc:
                assert exc is error  # the caller still gets the error itself
        async with audit.attempt("stop", actor_id=1, user_id=1) as attempt:
            await attempt.done(detail="kept what it held")
        rows = [(e.action, e.target, e.outcome, e.detail) for e in reversed(await audit.page(user_id=1))]
        assert rows == [
            ("pause", "strategy #1", "ok", ""),
            ("allocate", "a new DCA BTC/USDT on account binance", "refused", "it was paused"),
            ("allocate", "a new DCA BTC/USDT on account binance", "refused", "the budget was refused"),
            ("allocate", "a new DCA BTC/USDT on account binance", "failed", "unexpected error (RuntimeError)"),
            ("stop", "", "ok", "kept what it held"),
        ]
    finally:
        await store.close()

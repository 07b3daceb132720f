"""The stored balances /accounts shows at once: decimals kept exactly, replaced on each fetch, gone with the
account, and never written for an account deleted meanwhile."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from storage.models import StoredAsset, StoredPosition
from storage.store import Store

AT = datetime(2026, 12, 4, 19, 45, tzinfo=UTC)


async def _account(store: Store, label: str) -> int:
    await store.users.upsert(1001, 1001)
    async with store.db.transaction() as tx:
        return await store.accounts.create(tx, user_id=1001, venue="binanceusdm", label=label)


async def test_a_snapshot_keeps_exact_decimals_and_is_replaced_by_the_next_fetch(main_database):
    store = await Store.open(main_database)
    try:
        account = await _account(store, "binanceusdm")
        other = await _account(store, "binanceusdm-2")
        assets = [StoredAsset("USDT", Decimal("9940.1229843"), Decimal("9940.1229843")),
                  StoredAsset("DOGE", Decimal("0.00000001"), None)]
        position = StoredPosition("BTC/USDT:USDT", "short", Decimal("0.050"), Decimal("50000.1"), Decimal("52000.5"),
                                  Decimal("-100.02"), Decimal(1), Decimal("0.001"), Decimal("0.1"))
        await store.balances.save(account, assets, [position], AT)
        await store.balances.save(other, assets[:1], None, AT)
        stored = await store.balances.for_accounts([account, other, 999])
        assert set(stored) == {account, other}
        assert stored[account].assets == tuple(assets) and stored[account].positions == (position,)
        assert stored[account].fetched_at == AT and stored[other].positions is None  # not read: not "none open"
        assert (position.base, position.quote) == ("BTC", "USDT")

        later = AT.replace(hour=20)
        await store.balances.save(account, assets[1:], [], later)
        again = (await store.balances.for_accounts([account]))[account]
        assert again.assets == tuple(assets[1:]) and again.positions == () and again.fetched_at == later
    finally:
        await store.close()


async def test_a_snapshot_goes_with_its_account_and_is_not_written_for_one_deleted_meanwhile(main_database):
    store = await Store.open(main_database)
    try:
        account = await _account(store, "binanceusdm")
        await store.balances.save(account, [StoredAsset("USDT", Decimal(1), Decimal(1))], None, AT)
        async with store.db.transaction() as tx:
            await store.accounts.delete(tx, account)
        assert await store.balances.for_accounts([account]) == {}
        await store.balances.save(account, [StoredAsset("USDT", Decimal(2), Decimal(2))], None, AT)  # no error
        assert await store.balances.for_accounts([account]) == {}
    finally:
        await store.close()

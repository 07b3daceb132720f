"""The last balances (and futures positions) fetched per account: what /accounts shows at once, "as of" then.

Written whenever the bot fetches an account's balance (/connect, /accounts, /balance), read before the next
fetch answers. Amounts are stored as decimal strings, never floats. A snapshot goes with its account
(ON DELETE CASCADE), and one written for an account deleted meanwhile is simply not written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime

from storage.db import Database
from storage.models import BalanceSnapshot, StoredAsset, StoredPosition, dec, from_iso, to_iso

_POSITION_FIGURES = ("size", "entry", "mark", "unrealised", "leverage", "step", "tick")


class BalanceRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def save(
        self,
        account_id: int,
        assets: Iterable[StoredAsset],
        positions: Iterable[StoredPosition] | None,
        fetched_at: datetime,
    ) -> None:
        """Replace the account's snapshot (nothing is written if the account is gone); positions None: not read."""
        assets_json = json.dumps([[a.asset, _text(a.amount), _text(a.value)] for a in assets])
        positions_json = None if positions is None else json.dumps([
            {"symbol": p.symbol, "side": p.side, **{k: _text(getattr(p, k)) for k in _POSITION_FIGURES}}
            for p in positions
        ])
        await self._db.execute(
            "INSERT INTO account_balances (account_id, assets, positions, fetched_at) "
            "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM accounts WHERE id = ?) "
            "ON CONFLICT (account_id) DO UPDATE SET assets = excluded.assets, positions = excluded.positions, "
            "fetched_at = excluded.fetched_at",
            (account_id, assets_json, positions_json, to_iso(fetched_at), account_id),
        )

    async def for_accounts(self, account_ids: Sequence[int]) -> dict[int, BalanceSnapshot]:
        """The stored snapshot of each of these accounts that has one."""
        if not account_ids:
            return {}
        marks = ",".join("?" * len(account_ids))
        rows = await self._db.fetchall(
            f"SELECT * FROM account_balances WHERE account_id IN ({marks})",  # noqa: S608 - only placeholders
            tuple(account_ids),
        )
        return {row["account_id"]: _snapshot(row) for row in rows}


def _text(value) -> str | None:
    return None if value is None else format(value, "f")


def _snapshot(row) -> BalanceSnapshot:
    assets = tuple(StoredAsset(asset, dec(amount), dec(value)) for asset, amount, value in json.loads(row["assets"]))
    positions = None if row["positions"] is None else tuple(
        StoredPosition(symbol=p["symbol"], side=p["side"], **{k: dec(p.get(k)) for k in _POSITION_FIGURES})
        for p in json.loads(row["positions"])
    )
    return BalanceSnapshot(row["account_id"], assets, positions, from_iso(row["fetched_at"]))

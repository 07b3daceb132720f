"""Trades on a connected account that Strata did not make, kept so each is alerted exactly once.

A row per venue trade (account, market, trade id): a stream delivering the same execution again (a reconnect's
snapshot, a restart) finds it recorded and adds nothing. Rows are written `alerted = 0` as the trades arrive;
`claim` flips every pending row of an account to `alerted = 1` in the caller's transaction, which also queues
their one alert (`bot.engine.foreign`), so a trade is either pending (its alert still to come, also after a
restart) or alerted, never both and never twice. Alerted rows are pruned once older than the engine keeps them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal

from storage.accounts import ACTIVE
from storage.db import Database, Transaction

#: The user setting (in `users.settings`) that turns these alerts off; missing means on.
SETTING = "foreign_alerts"


@dataclass(frozen=True)
class ForeignTrade:
    account_id: int
    market: str
    trade_id: str
    side: str
    amount: Decimal
    price: Decimal
    cost: Decimal
    at_ms: int


class ForeignTradeRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, trade: ForeignTrade) -> bool:
        """Record a trade not made by Strata, pending its alert; False when it was recorded already."""
        async with self._db.transaction() as tx:
            return bool(await tx.rowcount(
                "INSERT INTO foreign_trades (account_id, market, trade_id, side, amount, price, cost, at_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (trade.account_id, trade.market, trade.trade_id, trade.side, str(trade.amount), str(trade.price),
                 str(trade.cost), trade.at_ms),
            ))

    async def claim(self, tx: Transaction, account_id: int) -> list[ForeignTrade]:
        """The account's trades still to be alerted, oldest first, marked alerted in the caller's transaction."""
        rows = await tx.fetchall(
            "SELECT * FROM foreign_trades WHERE alerted = 0 AND account_id = ? ORDER BY at_ms, trade_id",
            (account_id,),
        )
        if rows:
            await tx.execute(
                "UPDATE foreign_trades SET alerted = 1 WHERE alerted = 0 AND account_id = ?", (account_id,)
            )
        return [_trade(row) for row in rows]

    async def pending(self, account_id: int) -> list[ForeignTrade]:
        """The account's trades still to be alerted, oldest first (read only: `claim` takes them)."""
        rows = await self._db.fetchall(
            "SELECT * FROM foreign_trades WHERE alerted = 0 AND account_id = ? ORDER BY at_ms, trade_id",
            (account_id,),
        )
        return [_trade(row) for row in rows]

    async def pending_accounts(self) -> list[int]:
        """Accounts with trades recorded but not alerted yet (the engine stopped within a coalescing window)."""
        rows = await self._db.fetchall("SELECT DISTINCT account_id FROM foreign_trades WHERE alerted = 0")
        return [row["account_id"] for row in rows]

    async def prune(self, before_ms: int) -> int:
        """Forget alerted trades that traded before `before_ms`; return how many."""
        async with self._db.transaction() as tx:
            return await tx.rowcount("DELETE FROM foreign_trades WHERE alerted = 1 AND at_ms < ?", (before_ms,))

    async def watched_accounts(self) -> set[int]:
        """Active accounts whose owner has these alerts on (the default): their streams are followed even with no
        strategy running, as an idle key is what a thief trades with."""
        rows = await self._db.fetchall(
            "SELECT a.id, u.settings FROM accounts a JOIN users u ON u.id = a.user_id WHERE a.status = ?", (ACTIVE,)
        )
        return {row["id"] for row in rows if json.loads(row["settings"]).get(SETTING, 1) not in (0, False)}

    async def for_account(self, account_id: int) -> list[ForeignTrade]:
        """Every recorded trade of the account, oldest first (tests, diagnostics)."""
        rows = await self._db.fetchall(
            "SELECT * FROM foreign_trades WHERE account_id = ? ORDER BY at_ms, trade_id", (account_id,)
        )
        return [_trade(row) for row in rows]


def _trade(row) -> ForeignTrade:
    return ForeignTrade(
        account_id=row["account_id"], market=row["market"], trade_id=row["trade_id"], side=row["side"],
        amount=Decimal(row["amount"]), price=Decimal(row["price"]), cost=Decimal(row["cost"]), at_ms=row["at_ms"],
    )

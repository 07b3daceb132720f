"""The main database opened, migrated, and its repositories bundled for the services."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storage.accounts import AccountRepository
from storage.audit import AuditRepository
from storage.balances import BalanceRepository
from storage.commands import CommandRepository
from storage.db import Database, connect
from storage.foreign_trades import ForeignTradeRepository
from storage.ip_budgets import IpBudgetRepository
from storage.key_health import KeyHealthRepository
from storage.migrations import migrate
from storage.order_watches import OrderWatchRepository
from storage.orders import OrderRepository
from storage.outbox import OutboxRepository
from storage.paper import PaperRepository
from storage.strategies import StrategyRepository
from storage.users import UserRepository


@dataclass
class Store:
    db: Database
    users: UserRepository
    accounts: AccountRepository
    outbox: OutboxRepository
    strategies: StrategyRepository
    orders: OrderRepository
    order_watches: OrderWatchRepository
    balances: BalanceRepository
    paper: PaperRepository
    key_health: KeyHealthRepository
    foreign_trades: ForeignTradeRepository
    audit: AuditRepository
    commands: CommandRepository
    ip_budgets: IpBudgetRepository

    @classmethod
    async def open(cls, path: Path, *, migrate_schema: bool = True) -> Store:
        """Open the main database; `migrate_schema=False` lets start-up check the master key before any write."""
        db = await connect(path)
        if migrate_schema:
            await migrate(db)
        return cls(
            db=db, users=UserRepository(db), accounts=AccountRepository(db), outbox=OutboxRepository(db),
            strategies=StrategyRepository(db), orders=OrderRepository(db), order_watches=OrderWatchRepository(db),
            balances=BalanceRepository(db), paper=PaperRepository(db), key_health=KeyHealthRepository(db),
            foreign_trades=ForeignTradeRepository(db), audit=AuditRepository(db), commands=CommandRepository(db),
            ip_budgets=IpBudgetRepository(db),
        )

    async def migrate(self) -> int:
        return await migrate(self.db)

    async def close(self) -> None:
        await self.db.close()

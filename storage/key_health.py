"""When each connected key is checked again, and which warnings about it were sent (`bot.engine.key_health`).

A row per account that was checked at least once: the periodic check picks the accounts whose check is due,
those never checked first, a few per tick, so a thousand accounts are spread over the period instead of
checked in one burst. A warning about the expiry of a key's trading permission is recorded in the same
transaction as its alert (`mark_warned`), so it is sent once per expiration time, restarts included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from storage.accounts import ACTIVE, account_from_row
from storage.db import Database, Transaction
from storage.models import Account


@dataclass(frozen=True)
class KeyHealthRow:
    account_id: int
    checked_ms: int | None
    due_ms: int
    expires_ms: int | None
    warned: frozenset[str]


class KeyHealthRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def due(self, venues: Sequence[str], now_ms: int, limit: int) -> list[Account]:
        """Active live (not testnet) accounts on `venues` whose check is due: never checked first, then the
        most overdue, at most `limit`."""
        if not venues or limit <= 0:
            return []
        marks = ", ".join("?" * len(venues))
        sql = (
            "SELECT a.* FROM accounts a LEFT JOIN key_health h ON h.account_id = a.id "  # noqa: S608 - placeholders only
            f"WHERE a.status = ? AND a.testnet = 0 AND a.venue IN ({marks}) AND (h.due_ms IS NULL OR h.due_ms <= ?) "
            "ORDER BY h.due_ms IS NOT NULL, h.due_ms, a.id LIMIT ?"
        )
        rows = await self._db.fetchall(sql, (ACTIVE, *venues, now_ms, limit))
        return [account_from_row(r) for r in rows]

    async def count_checked(self, venues: Sequence[str]) -> int:
        """How many accounts the periodic check covers (active, live, on `venues`)."""
        if not venues:
            return 0
        marks = ", ".join("?" * len(venues))
        sql = f"SELECT count(*) AS n FROM accounts WHERE status = ? AND testnet = 0 AND venue IN ({marks})"  # noqa: S608 - placeholders only
        row = await self._db.fetchone(sql, (ACTIVE, *venues))
        return row["n"]

    async def get(self, account_id: int) -> KeyHealthRow | None:
        row = await self._db.fetchone("SELECT * FROM key_health WHERE account_id = ?", (account_id,))
        if row is None:
            return None
        return KeyHealthRow(
            account_id=row["account_id"], checked_ms=row["checked_ms"], due_ms=row["due_ms"],
            expires_ms=row["expires_ms"], warned=frozenset(w for w in row["warned"].split(",") if w),
        )

    async def checked(self, account_id: int, *, at_ms: int, due_ms: int, expires_ms: int | None) -> None:
        """Record an answered check; a different expiration time than the one warned about starts afresh."""
        await self._db.execute(
            "INSERT INTO key_health (account_id, checked_ms, due_ms, expires_ms, warned) VALUES (?, ?, ?, ?, '') "
            "ON CONFLICT (account_id) DO UPDATE SET checked_ms = excluded.checked_ms, due_ms = excluded.due_ms, "
            "warned = CASE WHEN key_health.expires_ms IS NOT DISTINCT FROM excluded.expires_ms "
            "THEN key_health.warned ELSE '' END, "
            "expires_ms = excluded.expires_ms",
            (account_id, at_ms, due_ms, expires_ms),
        )

    async def retry_at(self, account_id: int, due_ms: int) -> None:
        """A check that got no answer: try again at `due_ms`, everything else as it was."""
        await self._db.execute(
            "INSERT INTO key_health (account_id, due_ms) VALUES (?, ?) "
            "ON CONFLICT (account_id) DO UPDATE SET due_ms = excluded.due_ms",
            (account_id, due_ms),
        )

    async def mark_warned(self, tx: Transaction, account_id: int, expires_ms: int, levels: Sequence[str]) -> bool:
        """Record warnings `levels` about the expiration `expires_ms`, in the caller's transaction (with the
        alert); False when they were all recorded already (another check warned)."""
        row = await tx.fetchone(
            "SELECT warned FROM key_health WHERE account_id = ? AND expires_ms = ?", (account_id, expires_ms)
        )
        if row is None:
            return False
        warned = {w for w in row["warned"].split(",") if w}
        if set(levels) <= warned:
            return False
        text = ",".join(sorted(warned | set(levels), key=("week", "day").index))
        return bool(await tx.rowcount(
            "UPDATE key_health SET warned = ? WHERE account_id = ? AND warned = ?", (text, account_id, row["warned"])
        ))

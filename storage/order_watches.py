"""Orders a stop could not confirm ended: watched by the engine until it can, then alerted once.

When /pause, /stop, /panic or /disconnect meets an order whose request was still in flight, or whose cancel the
exchange did not confirm, the order is watched here. The engine keeps resolving it (found → cancelled; not found
once the venue's receive window has passed → it never arrived) and queues the alert that says how it ended in
the SAME transaction that removes the watch: the alert is sent once, and a restart neither loses nor doubles it.
"""

from __future__ import annotations

from storage.db import Database, Transaction
from storage.models import to_iso, utcnow


class OrderWatchRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, order_id: int, reason: str) -> None:
        """Watch an order (a second watch of the same order keeps the first reason)."""
        await self._db.execute(
            "INSERT INTO order_watches (order_id, reason, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            (order_id, reason, to_iso(utcnow())),
        )

    async def pending(self) -> list[tuple[int, str]]:
        """Every watched order id with the reason it was stopped, oldest first."""
        rows = await self._db.fetchall("SELECT order_id, reason FROM order_watches ORDER BY created_at, order_id")
        return [(r["order_id"], r["reason"]) for r in rows]

    async def take(self, tx: Transaction, order_id: int) -> str | None:
        """End the watch inside the caller's transaction; its reason, or None when another caller ended it."""
        row = await tx.fetchone("SELECT reason FROM order_watches WHERE order_id = ?", (order_id,))
        if row is None:
            return None
        if await tx.rowcount("DELETE FROM order_watches WHERE order_id = ?", (order_id,)) != 1:
            return None
        return row["reason"]

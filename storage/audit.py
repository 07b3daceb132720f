"""The audit log: one append-only row per action that touched money or access, kept when an account goes.

Rows are never updated or deleted (no method here does either), so a host can answer "who did what, when, and
what came of it" long after the account or strategy is gone. `target` and `detail` are free text written by the
services; they never carry a secret (`bot/services/audit.py` redacts them before they reach this table).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from storage.db import Database, Transaction
from storage.models import from_iso, to_iso, utcnow


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor_id: int | None    # the Telegram user who acted; None = the operator (CLI) or the bot itself
    user_id: int | None     # whose data it concerned (the owner), for /history
    action: str             # e.g. "connect", "allocate", "pause", "approve", "wind-down"
    target: str             # what it was done on, in words ("account binance-2", "strategy #5 DCA BTC/USDT")
    outcome: str            # "ok", "refused", "failed", … (what came of it)
    detail: str


class AuditRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(
        self, *, actor_id: int | None, user_id: int | None, action: str, target: str = "", outcome: str = "ok",
        detail: str = "", tx: Transaction | None = None,
    ) -> int:
        """Add one row (inside the caller's transaction when given, so it commits with the action)."""
        sql = (
            "INSERT INTO audit_log (at, actor_id, user_id, action, target, outcome, detail) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        params = (to_iso(utcnow()), actor_id, user_id, action, target, outcome, detail)
        if tx is not None:
            return await tx.insert(sql, params)
        async with self._db.transaction() as own:
            return await own.insert(sql, params)

    async def page(
        self, *, user_id: int | None = None, before_id: int | None = None, after_id: int | None = None,
        limit: int = 10,
    ) -> list[AuditEntry]:
        """Newest first: every row (user_id None) or one user's (theirs, or done by them), older than `before_id`
        when paging back, or the `limit` rows just newer than `after_id` when paging forward."""
        where, params = [], []
        if user_id is not None:
            where.append("(user_id = ? OR actor_id = ?)")
            params += [user_id, user_id]
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        if after_id is not None:
            where.append("id > ?")
            params.append(after_id)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        order = "ASC" if after_id is not None else "DESC"  # the rows next to the cursor, then newest first
        rows = await self._db.fetchall(
            f"SELECT * FROM audit_log {clause}ORDER BY id {order} LIMIT ?",  # noqa: S608 - only placeholders
            (*params, limit),
        )
        entries = [_entry(row) for row in rows]
        return entries[::-1] if after_id is not None else entries


def _entry(row) -> AuditEntry:
    return AuditEntry(
        id=row["id"], at=from_iso(row["at"]), actor_id=row["actor_id"], user_id=row["user_id"],
        action=row["action"], target=row["target"], outcome=row["outcome"], detail=row["detail"],
    )

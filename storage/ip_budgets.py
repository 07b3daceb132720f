"""Request weight per IP, shared by the engine workers that go out through one address (issue 22).

Binance counts request weight per IP and per minute. One process keeps that budget in memory
(`bot.exchanges.rate_budget.WeightBudget`); several workers behind one address must not each spend a whole
budget. They share it here: one row per (egress, budget, minute) holding the weight every worker has leased in
that minute. A worker leases weight in chunks (`lease`: one round trip per chunk, not per request), so the
database sees a few statements a minute per worker while no worker can spend past the shared limit; what a
worker leased and did not spend is lost when the minute ends (at most one chunk per worker).

Why the database rather than a host-local file lock: workers of one host in containers (the compose file) share
the host's address but not its /tmp, and the workers already share the database; the `egress` name lets
workers behind different addresses keep separate budgets.
"""

from __future__ import annotations

from storage.db import Database

DEFAULT_EGRESS = "default"


class IpBudgetRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def lease(self, egress: str, budget: str, minute: int, need: int, floor: int, limit: int) -> tuple[bool, int]:
        """Lease `need` weight in `minute` if the total stays within `limit`, after raising the count to `floor`
        (what the venue itself said was used). Returns (granted, the total leased by everyone now).

        The first lease of a minute is always granted (a request heavier than the whole limit still goes out
        when nothing was used, as in one process).
        """
        async with self._db.transaction() as tx:
            row = await tx.fetchone(
                "INSERT INTO ip_budgets (egress, budget, minute, used) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (egress, budget, minute) DO UPDATE "
                "SET used = CASE WHEN ip_budgets.used > ? THEN ip_budgets.used ELSE ? END + ? "
                "WHERE CASE WHEN ip_budgets.used > ? THEN ip_budgets.used ELSE ? END + ? <= ? "
                "RETURNING used",
                (egress, budget, minute, floor + need, floor, floor, need, floor, floor, need, limit),
            )
            if row is not None:
                return True, int(row[0])
            row = await tx.fetchone(
                "SELECT used FROM ip_budgets WHERE egress = ? AND budget = ? AND minute = ?", (egress, budget, minute)
            )
            return False, int(row[0]) if row is not None else 0

    async def forget_before(self, minute: int) -> int:
        """Drop the rows of minutes that ended (any worker may do it; the table stays a few rows long)."""
        return await self._db.execute("DELETE FROM ip_budgets WHERE minute < ?", (minute,))

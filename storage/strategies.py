"""Allocated strategies: parameters, pure-strategy state, status and the budget ledger (spent/received/fees).

The ledger columns move only inside the transaction that records the fill they come from, so the budget a
strategy sees is always consistent with its fills. Money is stored as Decimal text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from storage.db import Database, Transaction
from storage.models import Strategy, dumps, from_iso, to_iso, utcnow

ACTIVE, PAUSED, FINISHED, STOPPED = "active", "paused", "finished", "stopped"
#: Statuses that still hold their budget (an allocation is released only when finished or stopped).
HOLDING = (ACTIVE, PAUSED)
#: Who paused a paused strategy: the user (/pause), /panic ("Resume all" resumes only these), or the engine.
USER, PANIC, ENGINE = "user", "panic", "engine"
PAUSERS = (USER, PANIC, ENGINE)


class StrategyRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        tx: Transaction,
        *,
        user_id: int,
        account_id: int,
        kind: str,
        symbol: str,
        quote: str,
        budget: Decimal,
        params: dict[str, str],
        state: dict[str, Any],
        next_run: datetime | None,
        name: str | None = None,
    ) -> int:
        now = to_iso(utcnow())
        return await tx.insert(
            "INSERT INTO strategies (user_id, account_id, kind, symbol, quote, budget, params, state, status, "
            "next_run, created_at, updated_at, name) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?, ?)",
            (user_id, account_id, kind, symbol, quote, str(budget), dumps(params), dumps(state),
             to_iso(next_run), now, now, name),
        )

    async def get(self, strategy_id: int, tx: Transaction | None = None) -> Strategy | None:
        sql, params = _SELECT + " WHERE id = ?", (strategy_id,)
        row = await (tx.fetchone(sql, params) if tx is not None else self._db.fetchone(sql, params))
        return _strategy(row) if row else None

    async def get_with_note(self, strategy_id: int) -> tuple[Strategy, str | None] | None:
        """The strategy and its last status line, in one read (the engine's run reads both)."""
        row = await self._db.fetchone(_SELECT + " WHERE id = ?", (strategy_id,))
        return (_strategy(row), row["note"]) if row else None

    async def get_many_with_notes(self, strategy_ids: list[int]) -> dict[int, tuple[Strategy, str | None]]:
        """Many strategies with their status lines, in one read per 500 ids (a round of runs shares it)."""
        result: dict[int, tuple[Strategy, str | None]] = {}
        for start in range(0, len(strategy_ids), 500):
            chunk = strategy_ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            rows = await self._db.fetchall(f"{_SELECT} WHERE id IN ({marks})", chunk)
            result.update({row["id"]: (_strategy(row), row["note"]) for row in rows})
        return result

    async def get_owned(self, user_id: int, strategy_id: int) -> Strategy | None:
        """The strategy if and only if it belongs to `user_id` (ownership is checked in SQL)."""
        row = await self._db.fetchone(
            _SELECT + " WHERE id = ? AND user_id = ?", (strategy_id, user_id)
        )
        return _strategy(row) if row else None

    async def list_for_user(self, user_id: int, statuses: Iterable[str] | None = None) -> list[Strategy]:
        sql, params = _with_statuses(_SELECT + " WHERE user_id = ?", [user_id], statuses)
        rows = await self._db.fetchall(sql + " ORDER BY id", params)
        return [_strategy(r) for r in rows]

    async def list_for_account(
        self, account_id: int, statuses: Iterable[str] | None = None, tx: Transaction | None = None
    ) -> list[Strategy]:
        sql, params = _with_statuses(_SELECT + " WHERE account_id = ?", [account_id], statuses)
        sql += " ORDER BY id"
        rows = await (tx.fetchall(sql, params) if tx is not None else self._db.fetchall(sql, params))
        return [_strategy(r) for r in rows]

    async def list_by_status(self, statuses: Iterable[str]) -> list[Strategy]:
        sql, params = _with_statuses(_SELECT + " WHERE 1 = 1", [], statuses)
        rows = await self._db.fetchall(sql + " ORDER BY id", params)
        return [_strategy(r) for r in rows]

    async def account_ids_with_status(self, status: str) -> set[int]:
        """The accounts having at least one strategy in this status (one light query: the stream sync's)."""
        rows = await self._db.fetchall("SELECT DISTINCT account_id FROM strategies WHERE status = ?", (status,))
        return {r["account_id"] for r in rows}

    async def note(self, strategy_id: int) -> str | None:
        """The strategy's last status line (what `decide` said), for /status."""
        row = await self._db.fetchone("SELECT note FROM strategies WHERE id = ?", (strategy_id,))
        return row["note"] if row else None

    async def save_run(
        self,
        tx: Transaction,
        strategy_id: int,
        *,
        state: dict[str, Any],
        next_run: datetime | None,
        note: str | None,
        ran_at: datetime | None = None,
        finished: bool = False,
    ) -> None:
        """Store a run's new state (with the intents of its orders, in the same transaction)."""
        await tx.execute(
            "UPDATE strategies SET state = ?, next_run = ?, note = ?, last_slot = COALESCE(?, last_slot), "
            "status = CASE WHEN ? = 1 AND status = 'active' THEN 'finished' ELSE status END, updated_at = ? "
            "WHERE id = ?",
            (dumps(state), to_iso(next_run), note, to_iso(ran_at), int(finished), to_iso(utcnow()), strategy_id),
        )

    async def save_state(self, tx: Transaction, strategy_id: int, state: dict[str, Any]) -> None:
        await tx.execute(
            "UPDATE strategies SET state = ?, updated_at = ? WHERE id = ?",
            (dumps(state), to_iso(utcnow()), strategy_id),
        )

    async def add_to_ledger(
        self, tx: Transaction, strategy_id: int, *, spent: Decimal, received: Decimal, fees: Decimal
    ) -> None:
        """Add one fill's quote movements to the ledger (read-modify-write inside the caller's transaction)."""
        row = await tx.fetchone("SELECT spent, received, fees FROM strategies WHERE id = ?", (strategy_id,))
        if row is None:
            return
        await tx.execute(
            "UPDATE strategies SET spent = ?, received = ?, fees = ?, updated_at = ? WHERE id = ?",
            (
                str(Decimal(row["spent"]) + spent),
                str(Decimal(row["received"]) + received),
                str(Decimal(row["fees"]) + fees),
                to_iso(utcnow()),
                strategy_id,
            ),
        )

    async def rebook_ledger(self, tx: Transaction, strategy_id: int, *, spent: Decimal, received: Decimal) -> None:
        """Replace a strategy's spent and received with figures recomputed from its fills."""
        await tx.execute(
            "UPDATE strategies SET spent = ?, received = ?, updated_at = ? WHERE id = ?",
            (str(spent), str(received), to_iso(utcnow()), strategy_id),
        )

    async def set_status(
        self,
        tx: Transaction,
        strategy_id: int,
        status: str,
        *,
        reason: str | None = None,
        only_from: Iterable[str] | None = None,
        paused_by: str = ENGINE,
        only_paused_by: str | None = None,
    ) -> bool:
        """Change the status (optionally only from some statuses, or only if paused by `only_paused_by`); True
        when the row changed. A pause records who paused (`paused_by`: user, panic or engine); any other
        status clears it."""
        if paused_by not in PAUSERS:
            raise ValueError(f"unknown pauser {paused_by!r}")
        sql = "UPDATE strategies SET status = ?, pause_reason = ?, paused_by = ?, updated_at = ? WHERE id = ?"
        params: list[Any] = [status, reason, paused_by if status == PAUSED else None, to_iso(utcnow()), strategy_id]
        if only_from is not None:
            states = list(only_from)
            sql += f" AND status IN ({', '.join('?' for _ in states)})"
            params += states
        if only_paused_by is not None:
            sql += " AND status = 'paused' AND paused_by = ?"
            params.append(only_paused_by)
        return await tx.rowcount(sql, params) == 1

    async def set_budget(self, tx: Transaction, strategy_id: int, budget: Decimal) -> bool:
        """Change a running or paused strategy's budget (the engine reads it at its next decision)."""
        return await tx.rowcount(
            "UPDATE strategies SET budget = ?, updated_at = ? WHERE id = ? AND status IN ('active', 'paused')",
            (str(budget), to_iso(utcnow()), strategy_id),
        ) == 1

    async def set_name(self, tx: Transaction, strategy_id: int, name: str | None) -> None:
        await tx.execute(
            "UPDATE strategies SET name = ?, updated_at = ? WHERE id = ?", (name, to_iso(utcnow()), strategy_id)
        )

    async def set_next_run(self, strategy_id: int, next_run: datetime | None) -> None:
        await self._db.execute(
            "UPDATE strategies SET next_run = ? WHERE id = ?", (to_iso(next_run), strategy_id)
        )

    async def set_alerts(self, user_id: int, strategy_id: int, mode: str) -> bool:
        """Set a strategy's fill-alert mode (on | silent | off) if the user owns it; True when a row changed."""
        if mode not in ("on", "silent", "off"):
            raise ValueError(f"unknown alert mode {mode!r}")
        async with self._db.transaction() as tx:
            changed = await tx.rowcount(
                "UPDATE strategies SET alerts = ? WHERE id = ? AND user_id = ?", (mode, strategy_id, user_id)
            )
        return changed == 1



def _with_statuses(sql: str, params: list[Any], statuses: Iterable[str] | None) -> tuple[str, list[Any]]:
    if statuses is None:
        return sql, params
    states = list(statuses)
    return sql + f" AND status IN ({', '.join('?' for _ in states)})", params + states


#: Every strategy read carries its account's venue, so whatever shows it can say which venue it trades on
#: (a Paper strategy's every message is marked) without a second read.
_SELECT = "SELECT *, (SELECT a.venue FROM accounts a WHERE a.id = strategies.account_id) AS venue FROM strategies"


def _strategy(row) -> Strategy:
    return Strategy(
        id=row["id"],
        user_id=row["user_id"],
        account_id=row["account_id"],
        kind=row["kind"],
        symbol=row["symbol"],
        quote=row["quote"],
        budget=Decimal(row["budget"]),
        params=json.loads(row["params"]),
        state=json.loads(row["state"]),
        status=row["status"],
        pause_reason=row["pause_reason"],
        spent=Decimal(row["spent"]),
        received=Decimal(row["received"]),
        fees=Decimal(row["fees"]),
        last_slot=from_iso(row["last_slot"]),
        next_run=from_iso(row["next_run"]),
        alerts=row["alerts"],
        created_at=from_iso(row["created_at"]),
        name=row["name"],
        paused_by=row["paused_by"],
        venue=row["venue"],
    )


"""Control commands: what the Telegram front asks of the engine worker that owns an account.

The front never calls an engine object (DESIGN.md section 7): a pause, a stop, a disconnect… is a row here,
`pending` until the worker owning its account claims it (`running`), then `done` or `failed` with a JSON result the
front is waiting for. A claim is a conditional update (`pending` → `running`), so exactly one worker runs a
command even if two see it. Wake-ups go through PostgreSQL's LISTEN/NOTIFY (`listen`); both sides also poll, so a
missed notification (or SQLite, which has none) only delays.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from storage.db import Database
from storage.models import from_iso, to_iso, utcnow
from storage.partitions import ALIVE_SECONDS, PARTITIONS, SERVER_NOW_MS

logger = logging.getLogger(__name__)

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
#: NOTIFY channels: a new command was submitted / a command finished (payload: its id).
SUBMITTED_CHANNEL = "strata_commands"
FINISHED_CHANNEL = "strata_command_done"


@dataclass(frozen=True)
class Command:
    id: int
    account_id: int
    user_id: int | None
    kind: str
    payload: dict[str, Any]
    status: str
    result: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    #: How many times a worker claimed it: more than one means an earlier worker died while running it.
    claims: int = 0

    @property
    def finished(self) -> bool:
        return self.status in (DONE, FAILED)


class CommandRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def submit(self, *, account_id: int, user_id: int | None, kind: str, payload: dict[str, Any]) -> int:
        """Queue a command (and wake the workers, on PostgreSQL, when it commits)."""
        now = to_iso(utcnow())
        async with self._db.transaction() as tx:
            command_id = await tx.insert(
                "INSERT INTO commands (account_id, user_id, kind, payload, status, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (account_id, user_id, kind, json.dumps(payload), PENDING, now, now),
            )
            if tx.backend == "postgresql":  # delivered at commit, so a woken worker sees the row
                await tx.execute("SELECT pg_notify(?, ?)", (SUBMITTED_CHANNEL, str(command_id)))
        return command_id

    async def get(self, command_id: int) -> Command | None:
        row = await self._db.fetchone("SELECT * FROM commands WHERE id = ?", (command_id,))
        return _command(row) if row is not None else None

    async def pending(self, limit: int = 100, *, partitions: Collection[int] | None = None) -> list[Command]:
        """The oldest commands nobody has claimed yet; `partitions`: only those of accounts in these partitions
        (`storage.partitions.partition_of`), so a worker never waits behind other workers' commands."""
        where, params = "status = ?", [PENDING]
        if partitions is not None:
            if not partitions:
                return []
            where += f" AND (account_id % ?) IN ({', '.join('?' * len(partitions))})"
            params += [PARTITIONS, *sorted(partitions)]
        rows = await self._db.fetchall(
            f"SELECT * FROM commands WHERE {where} ORDER BY id LIMIT ?",  # noqa: S608 - only placeholders
            (*params, limit),
        )
        return [_command(row) for row in rows]

    async def claim(self, command_id: int, *, by: str | None = None) -> Command | None:
        """Take a pending command for worker `by` (its `claims` counts this one); None if another took it first."""
        async with self._db.transaction() as tx:
            row = await tx.fetchone(
                "UPDATE commands SET status = ?, claimed_by = ?, claims = claims + 1, updated_at = ? "
                "WHERE id = ? AND status = ? RETURNING *",
                (RUNNING, by, to_iso(utcnow()), command_id, PENDING),
            )
        return _command(row) if row is not None else None

    async def requeue_orphaned(self, alive_seconds: float = ALIVE_SECONDS) -> list[int]:
        """Put back at once the commands whose claiming worker is gone: its row removed (it stopped, after its
        commands ended) or both its lock connection gone from the server and its heartbeat older than
        `alive_seconds` (killed, or its host lost). A worker whose lock connection blipped beats again within
        a tick, so its commands stay its own; should one still be run twice, `finish` keeps one outcome.
        PostgreSQL only (SQLite has one process); returns their ids."""
        if self._db.backend != "postgresql":
            return []
        async with self._db.transaction() as tx:
            rows = await tx.fetchall(
                "UPDATE commands SET status = ?, claimed_by = NULL, updated_at = ? "  # noqa: S608 - constants only
                "WHERE status = ? AND claimed_by IS NOT NULL AND NOT EXISTS ("
                "SELECT 1 FROM engine_workers w WHERE w.worker_id = commands.claimed_by "
                f"AND (w.seen_ms >= {SERVER_NOW_MS} - ? "
                "OR EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = w.backend))) RETURNING id",
                (PENDING, to_iso(utcnow()), RUNNING, int(alive_seconds * 1000)),
            )
        return [r["id"] for r in rows]

    async def finish(self, command_id: int, *, ok: bool, result: dict[str, Any], claims: int | None = None) -> bool:
        """Record the outcome the front is waiting for (and wake it, on PostgreSQL).

        `claims`: the claim that ran it. Its outcome is kept only while no later claim took the command: a run
        put back as orphaned that finishes after all is recorded if no other worker claimed it meanwhile, else
        the later claim's outcome stands and this one is dropped. Returns whether it was recorded."""
        where, params = "id = ?", [command_id]
        if claims is not None:
            where += " AND claims = ? AND status IN (?, ?)"
            params += [claims, RUNNING, PENDING]
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                f"UPDATE commands SET status = ?, result = ?, updated_at = ? WHERE {where}",  # noqa: S608
                (DONE if ok else FAILED, json.dumps(result), to_iso(utcnow()), *params),
            )
            if changed and tx.backend == "postgresql":
                await tx.execute("SELECT pg_notify(?, ?)", (FINISHED_CHANNEL, str(command_id)))
        return bool(changed)

    async def requeue_stale(self, account_ids: set[int] | None, *, older_than: timedelta) -> int:
        """Put back commands left `running` by a worker that died mid-way (a new owner runs them again: every
        command is safe to repeat). `account_ids` None: any account."""
        cutoff = to_iso(utcnow() - older_than)
        rows = await self._db.fetchall(
            "SELECT id, account_id FROM commands WHERE status = ? AND updated_at < ? ORDER BY id", (RUNNING, cutoff)
        )
        ids = [r["id"] for r in rows if account_ids is None or r["account_id"] in account_ids]
        async with self._db.transaction() as tx:
            for command_id in ids:
                await tx.execute(
                    "UPDATE commands SET status = ?, updated_at = ? WHERE id = ? AND status = ?",
                    (PENDING, to_iso(utcnow()), command_id, RUNNING),
                )
        return len(ids)

    @contextlib.asynccontextmanager
    async def listen(self, channel: str, on_notify: Callable[[str], None]) -> AsyncIterator[bool]:
        """Call `on_notify(payload)` for each NOTIFY on `channel` while inside; yields whether notifications work
        at all (False on SQLite, or when PostgreSQL refused: the caller's poll then does all the work)."""
        connection = getattr(self._db, "connection", None)
        if self._db.backend != "postgresql" or connection is None:
            yield False
            return

        def listener(_conn, _pid, _channel, payload) -> None:
            on_notify(payload)

        async with connection() as conn:
            try:
                await conn.add_listener(channel, listener)
            except Exception:  # polling still works; say why once
                logger.warning("LISTEN %s failed; commands are polled only", channel, exc_info=True)
                yield False
                return
            try:
                yield True
            finally:
                with contextlib.suppress(Exception):  # the connection may be gone; it goes back to the pool
                    await conn.remove_listener(channel, listener)


def _command(row: Any) -> Command:
    return Command(
        id=row["id"], account_id=row["account_id"], user_id=row["user_id"], kind=row["kind"],
        payload=json.loads(row["payload"]), status=row["status"],
        result=json.loads(row["result"]) if row["result"] else None,
        created_at=from_iso(row["created_at"]), updated_at=from_iso(row["updated_at"]), claims=row["claims"],
    )

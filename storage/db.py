"""The database behind the repositories: SQLite (embedded, the default) or PostgreSQL, one small API.

Repositories write one dialect: SQLite's `?` placeholders and the subset of SQL both engines share
(`ON CONFLICT … DO NOTHING/UPDATE`, `RETURNING id`, INTEGER/TEXT/BLOB columns). `storage/postgres.py` translates
placeholders and column types; everything else is written once. `connect(target)` picks the backend from a
`sqlite:///…` / `postgresql://…` URL, or a plain path (SQLite).

SQLite: the bot shares one connection between many coroutines. SQLite transactions belong to the connection,
so two coroutines interleaving statements would mix their transactions: every statement therefore runs under
one asyncio lock, and `transaction()` holds it from BEGIN to COMMIT.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosqlite

from storage.files import ensure_private_file

BUSY_TIMEOUT_MS = 5000


class IntegrityError(Exception):
    """A constraint refused a write (unique, foreign key, not null), whatever the backend.

    The message names the constraint or its columns (SQLite: "UNIQUE constraint failed: accounts.key_ref";
    PostgreSQL: the index name, which our migrations make name its columns), so a repository can tell which.
    """


class Database:
    """What repositories use. `backend` is "sqlite" or "postgresql"; `path` is the SQLite file (else None)."""

    backend: str
    path: Path | None = None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement in its own transaction; return how many rows it changed."""
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        raise NotImplementedError

    async def has_table(self, name: str) -> bool:
        """Whether a table exists (a database never migrated has none)."""
        if self.backend == "sqlite":
            row = await self.fetchone("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        else:
            row = await self.fetchone(
                "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = ?", (name,)
            )
        return row is not None

    def transaction(self):  # -> AsyncContextManager[Transaction]
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class Transaction:
    """Statements inside one open transaction (only valid inside `Database.transaction()`)."""

    backend: str

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement and return how many rows it changed."""
        raise NotImplementedError

    async def rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        return await self.execute(sql, params)

    async def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one INSERT into a table with an `id` column and return the new row's id.

        `RETURNING id` rather than the driver's last row id: PostgreSQL has no such thing, and both backends
        understand RETURNING.
        """
        row = await self.fetchone(f"{sql} RETURNING id", params)
        return row[0]

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        raise NotImplementedError

    async def fetchone_for_update(self, sql: str, params: Sequence[Any] = ()) -> Any | None:
        """A read whose rows this transaction will write back: locked on PostgreSQL (`FOR UPDATE`) so a
        concurrent writer waits; SQLite transactions are already exclusive (BEGIN IMMEDIATE)."""
        return await self.fetchone(sql + self.lock_suffix(), params)

    def lock_suffix(self, *, skip_locked: bool = False) -> str:
        """What ends a SELECT whose rows this transaction claims: row locks on PostgreSQL (`SKIP LOCKED`: rows
        another transaction holds are passed over, not waited for); nothing on SQLite, whose write
        transactions already exclude each other."""
        if self.backend == "sqlite":
            return ""
        return " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"


class SqliteDatabase(Database):
    """A serialised aiosqlite connection; use `connect()` to create one."""

    backend = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self.path = path

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self._lock:
            return await _fetchall(self._conn, sql, params)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self._lock:
            return await _fetchone(self._conn, sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Hold the connection for one BEGIN IMMEDIATE … COMMIT; roll back on any exception (cancellation too)."""
        async with self._lock:
            try:
                await self._begin()
                yield SqliteTransaction(self._conn)
            except BaseException:
                await self._conn.rollback()  # a no-op when BEGIN never ran
                raise
            else:
                await self._conn.commit()

    async def _begin(self) -> None:
        """BEGIN IMMEDIATE, first rolling back a transaction a cancelled task left open.

        aiosqlite runs statements on its own thread, in order: a task cancelled while awaiting its BEGIN (or its
        rollback) stops waiting, but the statement still runs after the lock is released, leaving the shared
        connection inside a transaction that nobody will finish. It holds only that cancelled task's writes.
        """
        try:
            await self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "within a transaction" not in str(exc):
                raise
            logging.getLogger(__name__).warning("rolled back a transaction left open by a cancelled task")
            await self._conn.rollback()
            await self._conn.execute("BEGIN IMMEDIATE")

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()


class SqliteTransaction(Transaction):
    backend = "sqlite"

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            async with self._conn.execute(sql, params) as cur:
                return cur.rowcount
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from None

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            await self._conn.executemany(sql, rows)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(str(exc)) from None

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        return await _fetchall(self._conn, sql, params)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        try:
            return await _fetchone(self._conn, sql, params)
        except sqlite3.IntegrityError as exc:  # INSERT … RETURNING
            raise IntegrityError(str(exc)) from None


# Reads go to aiosqlite's thread ONCE (execute + fetch + close in one call): a cursor opened, fetched and
# closed from the event loop costs three thread round trips, which bench/engine.py showed to dominate a
# strategy evaluation (≈10 reads each).
async def _fetchall(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> list[aiosqlite.Row]:
    return list(await conn.execute_fetchall(sql, params))


async def _fetchone(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> aiosqlite.Row | None:
    rows = await conn.execute_fetchall(sql, params)
    return next(iter(rows), None)


def is_postgres(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def sqlite_path(target: str | Path) -> Path:
    """The file of a SQLite target: a path, or a `sqlite:///relative` / `sqlite:////absolute` URL."""
    if isinstance(target, Path):
        return target
    if target.startswith("sqlite:"):
        parts = urlsplit(target)
        if parts.netloc:
            raise ValueError("a sqlite URL has no host: sqlite:///relative/path or sqlite:////absolute/path")
        path = unquote(parts.path)
        return Path(path[1:] if path.startswith("/") else path)
    return Path(target)


WAL_ATTEMPTS = 50


async def connect(target: str | Path) -> Database:
    """Open a database without migrating: PostgreSQL for a `postgresql://` URL, else a SQLite file.

    SQLite files are created 0600 first and opened in WAL mode with a busy timeout and foreign keys on.
    """
    if is_postgres(target):
        from storage.postgres import connect_postgres  # asyncpg is imported only when PostgreSQL is used

        return await connect_postgres(str(target))
    path = sqlite_path(target)
    ensure_private_file(path)
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = aiosqlite.Row
    await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await _use_wal(conn)
    await conn.execute("PRAGMA synchronous = NORMAL")
    await conn.execute("PRAGMA foreign_keys = ON")
    return SqliteDatabase(conn, path)


async def _use_wal(conn: aiosqlite.Connection) -> None:
    """Switch the file to WAL (once: the mode is stored in the file). Two processes opening a new file at the
    same moment (engine workers, tests' children) may both try; SQLite can answer the loser "database is locked"
    at once, without its busy timeout, so it looks again shortly: by then the file is in WAL."""
    for attempt in range(WAL_ATTEMPTS):
        try:
            if await _journal_mode(conn) == "wal" or await _journal_mode(conn, "WAL") == "wal":
                return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == WAL_ATTEMPTS - 1:
                raise
        await asyncio.sleep(0.05)
    raise sqlite3.OperationalError("could not switch the database to WAL mode")


async def _journal_mode(conn: aiosqlite.Connection, new: str | None = None) -> str:
    rows = await conn.execute_fetchall("PRAGMA journal_mode" + (f" = {new}" if new else ""))
    return str(rows[0][0]).lower()

"""One aiosqlite connection per database file, with WAL, a busy timeout and serialised transactions.

The bot shares one connection between many coroutines. SQLite transactions belong to the connection, so two
coroutines interleaving statements would mix their transactions: every statement therefore runs under one
asyncio lock, and `transaction()` holds it from BEGIN to COMMIT.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from storage.files import ensure_private_file

BUSY_TIMEOUT_MS = 5000


class Database:
    """A serialised aiosqlite connection; use `open_database()` to create one."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()
        self.path = path

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement in its own transaction; return how many rows it changed."""
        async with self.transaction() as tx:
            return await tx.execute(sql, params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self._lock:
            return await _fetchall(self._conn, sql, params)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self._lock:
            return await _fetchone(self._conn, sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Hold the connection for one BEGIN IMMEDIATE … COMMIT; roll back on any exception."""
        async with self._lock:
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(self._conn)
            except BaseException:
                await self._conn.rollback()
                raise
            else:
                await self._conn.commit()

    async def close(self) -> None:
        async with self._lock:
            await self._conn.close()


class Transaction:
    """Statements inside one open transaction (only valid inside `Database.transaction()`)."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement and return how many rows it changed."""
        async with self._conn.execute(sql, params) as cur:
            return cur.rowcount

    rowcount = execute

    async def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one INSERT into a table with an `id` column and return the new row's id.

        `RETURNING id` rather than the driver's last row id: PostgreSQL has no such thing, and both backends
        understand RETURNING.
        """
        row = await _fetchone(self._conn, f"{sql} RETURNING id", params)
        return row[0]

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._conn.executemany(sql, rows)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        return await _fetchall(self._conn, sql, params)

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        return await _fetchone(self._conn, sql, params)


# Reads go to aiosqlite's thread ONCE (execute + fetch + close in one call): a cursor opened, fetched and
# closed from the event loop costs three thread round trips, which bench/engine.py showed to dominate a
# strategy evaluation (≈10 reads each).
async def _fetchall(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> list[aiosqlite.Row]:
    return list(await conn.execute_fetchall(sql, params))


async def _fetchone(conn: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> aiosqlite.Row | None:
    rows = await conn.execute_fetchall(sql, params)
    return next(iter(rows), None)


async def connect(path: Path) -> Database:
    """Open (creating 0600 first) a database file in WAL mode with a busy timeout, without migrating."""
    path = Path(path)
    ensure_private_file(path)
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = aiosqlite.Row
    await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await conn.execute("PRAGMA journal_mode = WAL")
    await conn.execute("PRAGMA synchronous = NORMAL")
    await conn.execute("PRAGMA foreign_keys = ON")
    return Database(conn, path)

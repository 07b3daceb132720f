"""Per-key nonces (Kraken) shared by every process that signs with one key, through PostgreSQL (issue 22).

Kraken refuses a private call whose nonce is not greater than the last one the key used, in the order the calls
arrive. One process serialises a key's calls and counts its nonces in memory (`bot.exchanges.clients`). With a
front and workers, two processes sign with one key: the worker that trades the account, and the front when a user
asks for /balance or /allocate checks the balance. Here they take turns, with nothing but the database:

- `turn(kid)` takes a session advisory lock for the key on ONE dedicated connection of this process
  (`pg_try_advisory_lock`, polled: a process waiting for one key never blocks its connection for the others),
  then reads the last nonce anyone used with the key (`key_nonces`). The caller signs its calls above it.
- On leaving, the caller's last nonce is written (never lowered), then the lock released. A process that dies
  loses its connection, and its locks with it.

So a key's calls from every process arrive one at a time, each with a nonce above the one before: none is
refused, whatever the clocks of the hosts say. The cost is four short statements per signed Kraken call, which
Kraken's own call rate (a few per second per key at most) makes negligible. SQLite serves one process: the
in-memory counter is enough there and this class is not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from storage.db import Database

#: The first key of every per-key nonce lock (two-int form: (NONCE_LOCK, crc32 of the key id)). Two key ids
#: with one crc32 only take turns with each other, which is harmless.
NONCE_LOCK = 0x5354_524E  # "STRN"
#: How often a process waiting for another's turn on a key tries again.
POLL_SECONDS = 0.01


@dataclass
class KeyTurn:
    """One process's turn with a key: `last` is the last nonce used by anyone; set it to the last one you used."""

    kid: str
    last: int


class SharedKeyNonces:
    def __init__(self, db: Database, *, poll_seconds: float = POLL_SECONDS) -> None:
        self._db = db
        self._poll = poll_seconds
        self._conn: Any = None
        self._conn_lock = asyncio.Lock()  # one statement at a time on the dedicated connection

    @contextlib.asynccontextmanager
    async def turn(self, kid: str) -> AsyncIterator[KeyTurn]:
        """Hold the key against every other process for the block; see the module docstring."""
        lock_key = _lock_key(kid)
        while True:
            if await self._run("SELECT pg_try_advisory_lock($1, $2)", NONCE_LOCK, lock_key):
                break
            await asyncio.sleep(self._poll)  # another process's turn: a call or two
        try:
            last = await self._run("SELECT last_nonce FROM key_nonces WHERE kid = $1", kid)
            turn = KeyTurn(kid, int(last or 0))
            try:
                yield turn
            finally:  # a call that failed may still have reached the venue: its nonce counts as used
                await self._run(
                    "INSERT INTO key_nonces (kid, last_nonce) VALUES ($1, $2) ON CONFLICT (kid) DO UPDATE "
                    "SET last_nonce = GREATEST(key_nonces.last_nonce, EXCLUDED.last_nonce) RETURNING last_nonce",
                    kid, turn.last,
                )
        finally:
            await self._unlock(lock_key)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _unlock(self, lock_key: int) -> None:
        try:
            await self._run("SELECT pg_advisory_unlock($1, $2)", NONCE_LOCK, lock_key)
        except Exception:  # the connection is gone, and the lock with it; start afresh next time
            await self._drop()
            raise

    async def _run(self, sql: str, *args: Any) -> Any:
        async with self._conn_lock:
            if self._conn is None or self._conn.is_closed():
                self._conn = await self._db.dedicated_connection()
            return await self._conn.fetchval(sql, *args)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()


def _lock_key(kid: str) -> int:
    """The key id as a signed 32-bit int (the second key of a two-int advisory lock)."""
    value = zlib.crc32(kid.encode())
    return value - (1 << 32) if value >= 1 << 31 else value

"""One active holder per database for a role that must run once (the notifier), and wake-ups between processes.

On PostgreSQL a `LeaderLock` is a session advisory lock held on a connection of its own: whoever holds it is the
leader; if its process dies, PostgreSQL ends the session and the lock is free for a standby at its next try.
The same connection LISTENs, so another process's `notify(tx, channel)` (delivered at commit) wakes the leader
at once instead of at its next poll. On SQLite there is one process per data folder (storage/lock.py), so the
lock is always held and notifications stay in-process.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from storage.db import Database, Transaction

log = logging.getLogger(__name__)

#: Advisory lock ids (the 0x5354524154 prefix spells STRAT; one per role).
NOTIFIER_LOCK = 0x5354524154_20
#: Which engines run on the database: one `python -m bot run` holds it exclusively, engine workers share it, so a
#: `run` never trades beside workers or another `run` (bot/runtime.py).
ENGINE_LOCK = 0x5354524154_30
OUTBOX_CHANNEL = "strata_outbox"


async def notify(tx: Transaction, channel: str) -> None:
    """Wake the listeners of `channel` in other processes when `tx` commits (nothing to do on SQLite)."""
    if tx.backend == "postgresql":
        await tx.execute("SELECT pg_notify(?, '')", (channel,))


class LeaderLock:
    """`shared`: any number of holders at once, but never beside an exclusive holder (and the other way round)."""

    def __init__(self, db: Database, key: int, *, shared: bool = False) -> None:
        self._db = db
        self._key = key
        self._take = "SELECT pg_try_advisory_lock_shared($1)" if shared else "SELECT pg_try_advisory_lock($1)"
        self._conn = None
        self._listening: list[tuple[str, Callable]] = []
        self.held = False

    async def try_acquire(self) -> bool:
        """Take the lock if it is free; True when held (now or already)."""
        if self.held:
            return True
        if self._db.backend == "sqlite":
            self.held = True
            return True
        if self._conn is None or self._conn.is_closed():
            self._conn = await self._db.dedicated_connection()
        self.held = bool(await self._conn.fetchval(self._take, self._key))
        return self.held

    async def still_held(self) -> bool:
        """False once the lock's connection is gone (the lock went with it): stop acting as the leader."""
        if not self.held or self._db.backend == "sqlite":
            return self.held
        try:
            await self._conn.fetchval("SELECT 1")
        except Exception as exc:  # connection lost: PostgreSQL released the lock with the session
            log.warning("leader lock %x lost with its connection: %s", self._key, exc)
            self.held = False
            await self._drop_connection()
        return self.held

    async def listen(self, channel: str, wake: Callable[[], None]) -> None:
        """Call `wake()` whenever another process notifies `channel` (needs the lock's connection: PostgreSQL)."""
        if self._db.backend == "sqlite" or self._conn is None:
            return

        def on_notify(*_args) -> None:
            wake()

        await self._conn.add_listener(channel, on_notify)
        self._listening.append((channel, on_notify))

    async def release(self) -> None:
        if self._db.backend != "sqlite":
            await self._drop_connection()
        self.held = False

    async def _drop_connection(self) -> None:
        conn, self._conn, self._listening = self._conn, None, []
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

"""Which accounts this engine process runs: all of them (one process), or the partitions it leases (workers).

Accounts are split into `PARTITIONS` fixed partitions (`partition_of(account_id)`). `python -m bot run` and
every SQLite database own everything (`AllPartitions`). Engine workers on one PostgreSQL database share the
partitions through PostgreSQL itself (`PartitionLeases`), with no coordination service of their own:

- A partition is held with a **session advisory lock** `pg_try_advisory_lock(PARTITION_LOCK, partition)` on ONE
  dedicated connection per worker. PostgreSQL grants each lock to one session at a time, so a partition is run by
  one worker at a time; a worker that dies (SIGKILL, crash, host gone once the server notices) loses its
  connection and with it every lock, and the others take those partitions at their next tick.
- Each worker writes a heartbeat row (`engine_workers`: its id, the server pid of its lock connection, when
  last seen). Alive = seen within `alive_seconds` AND its lock connection still exists (`pg_stat_activity`),
  so a killed worker stops counting as soon as the server dropped its connection, not after a timeout. Each
  worker then moves toward a fair share, `ceil(PARTITIONS / alive)`: it releases what it holds above it and
  tries free partitions below it.
- **Losing is immediate, gaining waits.** The lock connection is checked every tick (and asyncpg reports its
  loss at once through a termination listener): any failure counts as losing every partition at that moment,
  before anything else runs, and the worker reconnects afresh. A newly locked partition is reported gained
  only after `handover_seconds`, so a previous holder that just lost or released it has noticed and stopped
  (its runs in progress finish; the crash-recovery reconcile of the new owner finds their orders by client id).

`subscribe(callback)`: `callback(gained, lost)` (sets of partition numbers), called synchronously on the event
loop whenever `held` changes; a callback must not block (the engine starts tasks from it).

A worker wires it as: `leases = await PartitionLeases.start(store.db)`, `Engine(…, ownership=leases)`, and the
per-IP budget `RateBudgets(shared=SharedIpBudget(store.ip_budgets))`; at exit `engine.shutdown()` first, then
`leases.close()` (never a moment where the partitions are free while this engine still runs them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any, Protocol

logger = logging.getLogger(__name__)

PARTITIONS = 64
#: The first key of every partition's advisory lock (two-int form: (PARTITION_LOCK, partition)); no other lock
#: of Strata uses the two-int form.
PARTITION_LOCK = 0x5354_5250  # "STRP"
TICK_SECONDS = 1.0
ALIVE_SECONDS = 5.0
#: Long enough for a request of the previous holder already on the wire to reach the venue, so the new holder's
#: reconcile finds it by client order id; short enough for a takeover well within 10 s (tick + this + reconcile).
HANDOVER_SECONDS = 3.0
#: Heartbeat rows older than this are deleted (workers that stopped long ago).
FORGET_SECONDS = 3600.0

Callback = Callable[[set[int], set[int]], None]
SERVER_NOW_MS = "(extract(epoch from clock_timestamp()) * 1000)::bigint"  # the server's clock: hosts may drift
_BEAT = (
    f"INSERT INTO engine_workers (worker_id, backend, seen_ms, held) VALUES ($1, $2, {SERVER_NOW_MS}, $3) "  # noqa: S608
    "ON CONFLICT (worker_id) DO UPDATE SET backend = excluded.backend, seen_ms = excluded.seen_ms, held = excluded.held"
)
_ALIVE = (
    f"SELECT count(*) FROM engine_workers w WHERE w.seen_ms >= {SERVER_NOW_MS} - $1 "  # noqa: S608 - constants only
    "AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = w.backend)"
)
_FORGET = f"DELETE FROM engine_workers WHERE seen_ms < {SERVER_NOW_MS} - $1"  # noqa: S608 - constants only


def partition_of(account_id: int) -> int:
    return account_id % PARTITIONS


def fair_share(alive: int) -> int:
    """How many partitions each of `alive` workers should hold (every partition held by someone)."""
    return math.ceil(PARTITIONS / max(1, alive))


class Ownership(Protocol):
    held: frozenset[int]

    def owns(self, account_id: int) -> bool: ...

    def subscribe(self, callback: Callback) -> None: ...


class AllPartitions:
    """Owns every account, always: the one-process `run` mode, and any SQLite database."""

    held = frozenset(range(PARTITIONS))

    def owns(self, account_id: int) -> bool:
        return True

    def subscribe(self, callback: Callback) -> None:
        """Nothing ever changes."""

    async def close(self) -> None:
        """Nothing to release."""


class PartitionLeases:
    """This worker's partitions, leased through session advisory locks on one dedicated connection."""

    def __init__(
        self,
        url: str,
        *,
        worker_id: str | None = None,
        tick_seconds: float = TICK_SECONDS,
        alive_seconds: float = ALIVE_SECONDS,
        handover_seconds: float = HANDOVER_SECONDS,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.tick_seconds = tick_seconds
        self.alive_seconds = alive_seconds
        self.handover_seconds = handover_seconds
        self.connect_timeout = connect_timeout
        #: Partitions this worker runs now (locked for at least `handover_seconds`, connection alive).
        self.held: frozenset[int] = frozenset()
        self.alive = 0
        self.backend_pid: int | None = None
        self._locked: dict[int, float] = {}  # partition -> monotonic time it was locked
        self._conn: Any = None
        self._callbacks: list[Callback] = []
        self._task: asyncio.Task | None = None
        self._tick_lock = asyncio.Lock()
        self._forgot_at = 0.0
        # Where this worker starts looking for free partitions: workers starting together try different ones.
        self._offset = zlib.crc32(self.worker_id.encode()) % PARTITIONS

    @classmethod
    async def start(cls, db: Any, **options: Any) -> PartitionLeases:
        """Lease partitions on `db` (a `PostgresDatabase`, or its URL): connect, take a first share, keep ticking."""
        leases = cls(db if isinstance(db, str) else db.url, **options)
        await leases.tick()
        leases._task = asyncio.get_running_loop().create_task(leases._loop(), name="strata-partition-leases")
        return leases

    # --- what the engine asks --------------------------------------------------------------------------

    def owns(self, account_id: int) -> bool:
        return partition_of(account_id) in self.held

    def subscribe(self, callback: Callback) -> None:
        self._callbacks.append(callback)

    # --- lifecycle -------------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop ticking and release everything (closing the connection drops every lock with it)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        conn, self._conn = self._conn, None
        self._lose_everything("closing")
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.execute("DELETE FROM engine_workers WHERE worker_id = $1", self.worker_id)
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_seconds)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("partition leases: tick failed")

    async def tick(self) -> None:
        """Check the lock connection, beat, and move toward the fair share; report what changed."""
        async with self._tick_lock:
            try:
                await self._tick()
            except Exception as exc:  # any failure of the lock connection: lose everything at once
                logger.warning("partition leases: lock connection failed (%s); every partition released",
                               type(exc).__name__)
                await self._drop_connection()

    async def _tick(self) -> None:
        if self._conn is None or self._conn.is_closed():
            await self._drop_connection()
            self._conn = await asyncio.wait_for(self._connect(), self.connect_timeout)
        conn, timeout = self._conn, max(self.tick_seconds * 2, 2.0)
        self.backend_pid = await conn.fetchval("SELECT pg_backend_pid()", timeout=timeout)
        await conn.execute(
            _BEAT, self.worker_id, self.backend_pid, len(self._locked), timeout=timeout,
        )
        self.alive = await conn.fetchval(_ALIVE, int(self.alive_seconds * 1000), timeout=timeout)
        share = fair_share(self.alive)
        if len(self._locked) > share:
            await self._release(conn, len(self._locked) - share, timeout)
        elif len(self._locked) < share:
            await self._take(conn, share - len(self._locked), timeout)
        now = time.monotonic()
        ready = frozenset(p for p, at in self._locked.items() if now - at >= self.handover_seconds)
        self._set_held(ready)
        if now - self._forgot_at >= 60.0:
            self._forgot_at = now
            await conn.execute(_FORGET, int(FORGET_SECONDS * 1000), timeout=timeout)

    async def _connect(self) -> Any:
        import asyncpg  # only workers on PostgreSQL lease partitions

        conn = await asyncpg.connect(self.url)
        conn.add_termination_listener(self._terminated)
        self._locked.clear()
        return conn

    def _terminated(self, conn: Any) -> None:
        """asyncpg saw the connection end (terminated by the server, network gone): the locks went with it."""
        if conn is self._conn:
            self._lose_everything("lock connection lost")

    async def _take(self, conn: Any, wanted: int, wait: float) -> None:
        taken_elsewhere = {
            row[0] for row in await conn.fetch(
                "SELECT objid::int FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 "
                "AND classid::bigint = $1 AND granted AND pid <> pg_backend_pid()",
                PARTITION_LOCK, timeout=wait,
            )
        }
        for step in range(PARTITIONS):
            if wanted <= 0:
                return
            partition = (self._offset + step) % PARTITIONS
            if partition in self._locked or partition in taken_elsewhere:
                continue
            if await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", PARTITION_LOCK, partition, timeout=wait):
                self._locked[partition] = time.monotonic()
                wanted -= 1

    async def _release(self, conn: Any, count: int, wait: float) -> None:
        # Partitions not yet handed over (not run yet) go first, then the most recently locked.
        going = sorted(self._locked, key=lambda p: (p in self.held, -self._locked[p]))[:count]
        for partition in going:
            self._locked.pop(partition)
        self._set_held(self.held - set(going))  # stop running them BEFORE another worker may lock them
        for partition in going:
            await conn.fetchval("SELECT pg_advisory_unlock($1, $2)", PARTITION_LOCK, partition, timeout=wait)

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._lose_everything("lock connection failed")
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.terminate()

    def _lose_everything(self, why: str) -> None:
        self._locked.clear()
        if self.held:
            logger.warning("partition leases: %s; %d partitions released", why, len(self.held))
        self._set_held(frozenset())

    def _set_held(self, held: frozenset[int]) -> None:
        gained, lost = set(held - self.held), set(self.held - held)
        if not gained and not lost:
            return
        self.held = held
        for callback in list(self._callbacks):
            try:
                callback(gained, lost)
            except Exception:
                logger.exception("partition leases: change callback failed")

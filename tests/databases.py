"""Which database the tests' bots and stores use: SQLite files (default) or PostgreSQL.

`STRATA_TEST_BACKEND=postgresql` runs the suite on PostgreSQL: every bot (`make_strata`), engine world
(`open_world`) and store a test opens through `database_for(data_dir)` gets a database of its own on the test
server, named after the test's data folder, so a crashed child process reopening the same folder finds the same
database. The server is `STRATA_TEST_POSTGRES_URL` (an admin URL), or one the session starts (tests/plugins/
postgres.py sets the variable then, so child processes inherit it).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import asyncpg

BACKEND = os.environ.get("STRATA_TEST_BACKEND", "sqlite").strip().lower() or "sqlite"
SERVER_VARIABLE = "STRATA_TEST_POSTGRES_URL"
_TEMPLATE_LOCK = 0x5354524154_10


def on_postgres() -> bool:
    return BACKEND in ("postgresql", "postgres")


def _with_database(admin_url: str, name: str) -> str:
    return admin_url.rsplit("/", 1)[0] + "/" + name


async def fresh_postgres_database(admin_url: str, name: str, *, migrated: bool = True) -> str:
    """Create (if missing) database `name` and return its URL: migrated (copied from a migrated template, faster
    than migrating each time), or empty."""
    from storage.migrations import MIGRATIONS
    from storage.store import Store

    template = f"strata_template_{len(MIGRATIONS)}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _TEMPLATE_LOCK)  # one process makes the template
        try:
            exists = {r["datname"] for r in await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname = ANY($1::text[])", [template, name]
            )}
            if template not in exists:
                await conn.execute(f'CREATE DATABASE "{template}"')
                store = await Store.open(_with_database(admin_url, template))
                await store.close()
            if name not in exists:
                await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template if migrated else "template0"}"')
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _TEMPLATE_LOCK)
    finally:
        await conn.close()
    return _with_database(admin_url, name)


async def database_for(data_dir: Path) -> str | None:
    """The main database for a test's data folder: None on SQLite (the folder's own file), else a URL."""
    if not on_postgres():
        return None
    admin = os.environ.get(SERVER_VARIABLE)
    if not admin:
        raise RuntimeError(f"STRATA_TEST_BACKEND=postgresql needs a server: {SERVER_VARIABLE} is not set")
    name = "t_" + hashlib.sha1(str(Path(data_dir).resolve()).encode(), usedforsecurity=False).hexdigest()[:20]
    return await fresh_postgres_database(admin, name)


async def rows(database, sql: str, params: tuple = ()) -> list[tuple]:
    """Run one statement on a test's main database (a SQLite path or a PostgreSQL URL), as the bot's own storage
    layer would (same placeholder translation); return the rows as tuples (empty for writes).

    For tests that look at, or tamper with, what the bot stored — while it runs or while it is down.
    """
    from storage.db import connect

    db = await connect(database)
    try:
        if sql.lstrip()[:6].upper() in ("SELECT", "PRAGMA"):
            return [tuple(row) for row in await db.fetchall(sql, params)]
        await db.execute(sql, params)
        return []
    finally:
        await db.close()

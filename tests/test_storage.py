"""Storage: migrations, SQLite settings, private files, credentials at rest (ciphertext only, 2 databases)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import secrets
import sqlite3
import stat
import string
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.master_key import load_master_key
from bot.redaction import configure_logging
from bot.secret import Credentials
from bot.vault import Vault
from storage.db import connect
from storage.migrations import MIGRATIONS, migrate
from storage.store import Store

MAIN_TABLES = {
    "users",
    "accounts",
    "credentials",
    "strategies",
    "orders",
    "fills",
    "outbox",
    "schema_version",
}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def schema(path: Path) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name").fetchall()


def family(path: Path) -> list[Path]:
    """The database file and whichever of its -wal/-shm files exist."""
    return [p for p in sorted(path.parent.iterdir()) if p.name.startswith(path.name)]


async def test_migrations_apply_to_an_empty_database(tmp_path):
    db = await connect(tmp_path / "main.db")
    try:
        version = await migrate(db)

        assert version == len(MIGRATIONS) >= 1
        assert (await db.fetchone("SELECT version FROM schema_version"))["version"] == version
        tables = {r["name"] for r in await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables >= MAIN_TABLES
    finally:
        await db.close()


async def test_migrations_are_idempotent_on_restart_and_keep_data(tmp_path):
    path = tmp_path / "main.db"
    store = await Store.open(path)
    await store.users.upsert(1001, 2002)
    async with store.db.transaction() as tx:
        account_id = await store.accounts.create(tx, user_id=1001, venue="kraken", label="kraken")
    await store.close()
    schema_before = schema(path)

    for _ in range(2):
        store = await Store.open(path)
        try:
            assert await migrate(store.db) == len(MIGRATIONS)  # a third run in the same process too
            rows = await store.db.fetchall("SELECT version FROM schema_version")
            assert [r["version"] for r in rows] == [len(MIGRATIONS)]
            assert (await store.users.get(1001)).chat_id == 2002
            assert (await store.accounts.get(account_id)).label == "kraken"
        finally:
            await store.close()

    assert schema(path) == schema_before


async def test_connections_use_wal_a_busy_timeout_and_foreign_keys(tmp_path):
    db = await connect(tmp_path / "main.db")
    try:
        assert (await db.fetchone("PRAGMA journal_mode"))[0] == "wal"
        assert (await db.fetchone("PRAGMA busy_timeout"))[0] >= 1000
        assert (await db.fetchone("PRAGMA foreign_keys"))[0] == 1
    finally:
        await db.close()


async def test_a_write_waits_for_another_connections_lock_instead_of_failing(tmp_path):
    path = tmp_path / "main.db"
    store = await Store.open(path)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")  # hold the write lock, as another process would
        asyncio.get_running_loop().call_later(0.2, other.execute, "COMMIT")

        await store.users.upsert(5, 5)  # would raise "database is locked" without a busy timeout

        assert (await store.users.get(5)).chat_id == 5
    finally:
        other.close()
        await store.close()


async def test_database_files_and_data_folder_are_private(tmp_path):
    path = tmp_path / "fresh" / "nested" / "main.db"
    store = await Store.open(path)
    try:
        await store.users.upsert(1, 1)
        assert {p.name for p in family(path)} >= {"main.db", "main.db-wal"}
        for file in family(path):
            assert mode(file) == 0o600, file.name
        assert mode(path.parent) == 0o700
    finally:
        await store.close()


def _random_text(length: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _forms(value: str | bytes) -> list[bytes]:
    """A value as text and in the encodings a leak would likely take."""
    raw = value.encode() if isinstance(value, str) else value
    forms = [raw, raw.hex().encode(), raw.hex().upper().encode()]
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        forms += [encode(raw), encode(raw).rstrip(b"=")]
    return forms


@pytest.fixture
def log_stream():
    """Root logging at DEBUG into a buffer, as `LOG_LEVEL=DEBUG` would set it up; restored afterwards."""
    root = logging.getLogger()
    saved_root = root.level
    saved = {
        n: lg.level for n, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)
    }
    stream = io.StringIO()
    handler = configure_logging("DEBUG", stream=stream)
    yield stream
    root.removeHandler(handler)
    root.setLevel(saved_root)
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            logger.setLevel(saved.get(name, logging.NOTSET))


async def test_a_stored_credential_leaves_no_plaintext_in_the_databases_or_the_log(tmp_path, log_stream):
    data_dir = tmp_path / "data"
    settings = load_settings({"STRATA_DATA_DIR": str(data_dir)}, dotenv=False)
    api_key, api_secret = _random_text(64), _random_text(64)
    master_key = load_master_key(settings)  # none configured: generated into the data folder
    store = await Store.open(settings.database_path)
    vault = await Vault.open(settings.keystore_path, master_key)
    try:
        # What the connect service does: account and credential in one main-database transaction.
        await store.users.upsert(4242, 4242)
        async with store.db.transaction() as tx:
            account_id = await store.accounts.create(tx, user_id=4242, venue="binance", label="binance")
            sealed = await vault.seal(
                user_id=4242,
                account_id=account_id,
                venue="binance",
                credentials=Credentials(api_key, api_secret),
            )
            await store.accounts.store_credential(tx, sealed)
        stored = await store.accounts.credential(account_id)
        assert (await vault.unseal(stored, user_id=4242, venue="binance")).secret.reveal() == api_secret

        open_files = family(settings.database_path) + family(settings.keystore_path)
        assert any(p.name.endswith("-wal") for p in open_files)
        _assert_absent(open_files, api_key, api_secret, master_key)
        for file in open_files:
            assert mode(file) == 0o600, file.name
    finally:
        await store.close()
        await vault.close()

    closed_files = family(settings.database_path) + family(settings.keystore_path)
    _assert_absent(closed_files, api_key, api_secret, master_key)

    # Two separate databases: the main one holds ciphertext only, the key store the wrapped data keys only.
    assert settings.database_path.exists() and settings.keystore_path.exists()
    assert settings.database_path.resolve() != settings.keystore_path.resolve()
    main_tables = {row[1] for row in schema(settings.database_path)}
    key_tables = {row[1] for row in schema(settings.keystore_path)}
    assert "credentials" in main_tables and "deks" not in main_tables
    assert "deks" in key_tables and "credentials" not in key_tables
    for path in (settings.database_path, settings.keystore_path, data_dir / "master.key"):
        assert mode(path) == 0o600, path.name
    assert mode(data_dir) == 0o700

    log = log_stream.getvalue()
    assert "Generated a new master key" in log and "WARNING" in log
    for form in _forms(api_key) + _forms(api_secret) + _forms(master_key)[1:]:
        assert form.decode() not in log


def _assert_absent(files: list[Path], api_key: str, api_secret: str, master_key: bytes) -> None:
    for file in files:
        data = file.read_bytes()
        for form in _forms(api_key) + _forms(api_secret) + _forms(master_key):
            assert form not in data, f"{file.name} holds a form of a secret"


async def test_a_key_fingerprint_is_unique_across_accounts_while_unknown_ones_may_repeat(tmp_path):
    from storage.accounts import KeyAlreadyConnected

    store = await Store.open(tmp_path / "strata.db")
    try:
        await store.users.upsert(1, 1)
        await store.users.upsert(2, 2)
        async with store.db.transaction() as tx:
            await store.accounts.create(tx, user_id=1, venue="binance", label="a", key_ref="f" * 64)
            await store.accounts.create(tx, user_id=1, venue="binance", label="legacy-1")
            await store.accounts.create(tx, user_id=2, venue="binance", label="legacy-2")
        with pytest.raises(KeyAlreadyConnected):
            async with store.db.transaction() as tx:
                await store.accounts.create(tx, user_id=2, venue="binance", label="b", key_ref="f" * 64)
        assert [a.label for a in await store.accounts.list_for_user(2)] == ["legacy-2"]  # rolled back
        assert await store.accounts.count_for_user(1) == 2
        assert (await store.accounts.by_key_ref("f" * 64)).label == "a"
    finally:
        await store.close()


async def test_strategies_paused_before_the_pauser_was_recorded_are_classified_from_their_reason(
    tmp_path, monkeypatch
):
    """"Resume all" after /panic resumes only panic pauses: rows paused before `paused_by` existed get it from
    their pause reason (the two texts the bot wrote), anything else is the engine's."""
    import storage.migrations as migrations

    mine = next(i for i, script in enumerate(MIGRATIONS) if "ADD COLUMN paused_by" in script)
    db = await connect(tmp_path / "main.db")
    try:
        monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS[:mine])
        await migrate(db)
        await db.execute("INSERT INTO users (id, chat_id, created_at) VALUES (1, 1, 'now')")
        await db.execute("INSERT INTO accounts (user_id, venue, label, created_at) VALUES (1, 'binance', 'b', 'now')")
        reasons = {1: ("paused", "paused by /panic"), 2: ("paused", "paused by you"),
                   3: ("paused", "not enough free USDT"), 4: ("active", None)}
        for strategy_id, (status, reason) in reasons.items():
            await db.execute(
                "INSERT INTO strategies (id, user_id, account_id, kind, symbol, quote, budget, status, pause_reason, "
                "created_at, updated_at) VALUES (?, 1, 1, 'dca', 'BTC/USDT', 'USDT', '50', ?, ?, 'now', 'now')",
                (strategy_id, status, reason),
            )
        monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS)
        assert await migrate(db) == len(MIGRATIONS)
        rows = await db.fetchall("SELECT id, paused_by FROM strategies ORDER BY id")
        assert [(r["id"], r["paused_by"]) for r in rows] == [(1, "panic"), (2, "user"), (3, "engine"), (4, None)]
    finally:
        await db.close()


async def test_a_transaction_left_open_by_a_cancelled_task_does_not_break_the_next_one(tmp_path):
    """aiosqlite runs statements in its own thread: a task cancelled while awaiting BEGIN (or the body) stops
    waiting, but the BEGIN still runs, leaving the shared connection inside a transaction. The next writer then
    failed with "cannot start a transaction within a transaction" (seen in a full run at shutdown)."""
    db = await connect(tmp_path / "main.db")
    try:
        await db.execute("CREATE TABLE t (x INTEGER)")
        await db._conn.execute("BEGIN IMMEDIATE")  # what a cancelled BEGIN leaves behind
        await db._conn.execute("INSERT INTO t (x) VALUES (1)")  # and half a body
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t (x) VALUES (2)")
        assert [tuple(r) for r in await db.fetchall("SELECT x FROM t ORDER BY x")] == [(2,)]

        started = asyncio.Event()

        async def writer() -> None:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t (x) VALUES (3)")
                started.set()
                await asyncio.sleep(10)

        task = asyncio.create_task(writer())
        await started.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t (x) VALUES (4)")
        assert [tuple(r) for r in await db.fetchall("SELECT x FROM t ORDER BY x")] == [(2,), (4,)]
    finally:
        await db.close()

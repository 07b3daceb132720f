"""Command line: `python -m bot run | front | worker | migrate | demo | rotate-master-key | wind-down`.

Operator mistakes (missing token, bad variable, wrong master key, a second process on a data folder or key
store in use) end with one actionable line on stderr and exit status 2, never a traceback.

`run`, `demo`, `rotate-master-key` and `wind-down` turn core dumps off first (`bot.hardening`), then lock the data
folder and the key store (`storage.lock`) before they read a key, migrate or write anything. `front` and `worker`
run several to a PostgreSQL database (DESIGN.md section 7), so they take no folder lock: they refuse anything but
a PostgreSQL main database and key store instead.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from telegram.error import InvalidToken, TelegramError

from bot import memory
from bot.config import ConfigError, load_settings
from bot.hardening import disable_core_dumps
from bot.redaction import configure_logging, redact, register_secret
from bot.vault import VaultError
from storage.files import ensure_private_dir
from storage.lock import FolderInUse, ProcessLocks

logger = logging.getLogger("bot")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description="Strata: automated trading strategies on your own exchange account, driven from Telegram.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="run the bot with long polling (needs TELEGRAM_BOT_TOKEN)")
    sub.add_parser("front", help="Telegram handlers and notifier only, on PostgreSQL (needs TELEGRAM_BOT_TOKEN)")
    sub.add_parser("worker", help="the engine only (strategies, fills, streams), on PostgreSQL")
    sub.add_parser("migrate", help="apply the database migrations and create the key store, then exit")
    demo = sub.add_parser("demo", help="offline demo: fake Telegram and exchanges, chat in this terminal")
    demo.add_argument("--data-dir", type=Path, default=None, help="keep the demo's data here (default: temporary)")
    rotate = sub.add_parser("rotate-master-key", help="re-wrap every data key under a new master key")
    rotate.add_argument("--new-key-file", type=Path, required=True, help="file holding the new base64 key")
    wind = sub.add_parser(
        "wind-down", help="close the service: tell every user, pause and cancel everything, then shred every key"
    )
    wind.add_argument("--sell", action="store_true",
                      help="also sell what the strategies bought (futures: close their positions)")
    wind.add_argument("--message", default=None, help="what to tell every user first (default: a short notice)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    disable_core_dumps()
    if args.command in ("run", "front", "worker", "demo"):
        memory.enable()  # a long-running process: keep the collector off what it loads once (bot/memory.py)
    try:
        if args.command == "run":
            return _run()
        if args.command == "front":
            return _front()
        if args.command == "worker":
            return _worker()
        if args.command == "migrate":
            return asyncio.run(_migrate())
        if args.command == "demo":
            from bot.sandbox.demo import run_demo

            return run_demo(data_dir=args.data_dir)
        if args.command == "rotate-master-key":
            return asyncio.run(_rotate(args.new_key_file))
        if args.command == "wind-down":
            return asyncio.run(_wind_down(sell=args.sell, message=args.message))
    except (ConfigError, VaultError, FolderInUse) as exc:
        print(f"strata: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


def _run() -> int:
    settings = load_settings()
    register_secret(settings.require_token())
    _register_database_passwords(settings)
    configure_logging(settings.log_level)
    ensure_private_dir(settings.data_dir)
    with ProcessLocks(settings.data_dir, settings.keystore_path) as locks:
        from bot.app import build_application, preflight
        from bot.runtime import Runtime

        asyncio.run(preflight(settings))
        locks.acquire()  # a key store that preflight has just created in a new folder
        runtime = Runtime(settings)
        code = _poll(build_application(settings, runtime=runtime))
        return 1 if runtime.lost_lead else code  # its claim on PostgreSQL was lost: started again, it claims afresh


def _register_database_passwords(settings) -> None:
    for password in settings.database_passwords():
        register_secret(password)


def _shared_settings(role: str):
    """The settings of a role that runs beside others: PostgreSQL for both databases, a master key given."""
    settings = load_settings()
    _register_database_passwords(settings)
    if not settings.uses_postgres:
        raise ConfigError(
            f"`{role}` runs beside other processes on one PostgreSQL database: set STRATA_DATABASE_URL to a "
            "postgresql:// URL (or use `python -m bot run` for one process on SQLite)."
        )
    if not isinstance(settings.keystore, str):
        raise ConfigError(
            f"`{role}` needs the key store on PostgreSQL too: set STRATA_KEYSTORE_URL to a postgresql:// URL "
            "(another database than STRATA_DATABASE_URL's)."
        )
    if settings.master_key is None and settings.master_key_file is None:
        raise ConfigError(
            f"`{role}` needs the master key every process shares: set STRATA_MASTER_KEY or STRATA_MASTER_KEY_FILE."
        )
    return settings


def _front() -> int:
    settings = _shared_settings("front")
    register_secret(settings.require_token())
    configure_logging(settings.log_level)
    from bot.app import build_application, preflight
    from bot.runtime import Runtime

    asyncio.run(preflight(settings))
    runtime = Runtime(settings, role="front")
    code = _poll(build_application(settings, runtime=runtime))
    return 1 if runtime.lost_lead else code  # a supervisor restarts it: it stands by or takes over


def _worker() -> int:
    settings = _shared_settings("worker")
    configure_logging(settings.log_level)
    logger.info("Strata worker starting")
    return asyncio.run(_work(settings))  # a wrong master key or database ends start-up before the engine runs


async def _work(settings) -> int:
    """Run the engine until SIGTERM or SIGINT, then stop it cleanly (sends under way finish)."""
    import signal

    from bot.runtime import WorkerRuntime

    worker = WorkerRuntime(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await worker.start()
        logger.info("Strata worker up")
        stopping, lost = asyncio.ensure_future(stop.wait()), asyncio.ensure_future(worker.lost.wait())
        await asyncio.wait((stopping, lost), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        lost.cancel()
    finally:
        await worker.close()
    return 1 if worker.lost.is_set() else 0


async def _migrate() -> int:
    """Bring the main database to the current schema and create the key store; print the schema version."""
    settings = load_settings()
    _register_database_passwords(settings)
    configure_logging(settings.log_level)
    if settings.uses_postgres:  # migrations serialise themselves there (an advisory lock)
        return await _migrate_databases(settings)
    ensure_private_dir(settings.data_dir)
    with ProcessLocks(settings.data_dir, settings.keystore_path):  # not under a running `run`
        return await _migrate_databases(settings)


async def _migrate_databases(settings) -> int:
    from bot.runtime import open_vault
    from storage.migrations import migrate
    from storage.store import Store

    store = await Store.open(settings.database, migrate_schema=False)
    try:
        vault = await open_vault(settings, store)  # a wrong master key stops here, before any migration
        await vault.close()
        version = await migrate(store.db)
    finally:
        await store.close()
    print(f"Schema version {version}; the key store is ready.")
    return 0


def _poll(application) -> int:
    logger.info("Strata starting (long polling)")
    try:
        application.run_polling(allowed_updates=None, drop_pending_updates=False, close_loop=True)
    except InvalidToken:
        # PTB's message quotes the token: never print it.
        raise ConfigError(
            "Telegram refused TELEGRAM_BOT_TOKEN (or TELEGRAM_API_URL does not point at a Bot API "
            "ending in /bot): check both."
        ) from None
    except TelegramError as exc:
        raise ConfigError(
            f"Could not reach the Telegram Bot API at TELEGRAM_API_URL ({redact(str(exc))}); check the URL "
            "and the network, then start again."
        ) from None
    return 0


async def _rotate(new_key_file: Path) -> int:
    settings = load_settings()
    configure_logging(settings.log_level)
    with ProcessLocks(settings.data_dir, settings.keystore_path):  # a running bot would keep the old key
        return await _rotate_locked(settings, new_key_file)


async def _wind_down(*, sell: bool, message: str | None) -> int:
    settings = load_settings()
    register_secret(settings.require_token())
    configure_logging(settings.log_level)
    if settings.database_path is not None and not settings.database_path.exists():
        raise ConfigError(f"There is no Strata database at {settings.database_path}: nothing to wind down "
                          "(check STRATA_DATA_DIR).")
    with ProcessLocks(settings.data_dir, settings.keystore_path):  # a running bot would keep trading
        from bot.closing import wind_down

        return await wind_down(settings, sell=sell, message=message)


async def _rotate_locked(settings, new_key_file: Path) -> int:
    from bot.master_key import load_master_key, read_key_file
    from bot.vault import Vault

    current = load_master_key(settings, create=False)
    new = read_key_file(new_key_file, "--new-key-file")
    if new == current:
        raise ConfigError("--new-key-file holds the current master key: generate a new one first.")
    keystore = settings.keystore_path
    if not keystore.exists() or keystore.stat().st_size == 0:
        raise ConfigError(f"There is no key store at {keystore}: nothing to rotate (check STRATA_KEYSTORE_PATH).")
    credential_keys = await _credential_dek_ids(settings.database_path)
    vault = await Vault.open(keystore, current, expect_existing=True)
    try:
        missing = credential_keys - await vault.dek_ids()
        if missing:
            raise ConfigError(
                f"The key store {keystore} does not hold the data keys of {len(missing)} credential(s) in "
                f"{settings.database_path}: check STRATA_KEYSTORE_PATH and STRATA_DATA_DIR (nothing was changed)."
            )
        count = await vault.rotate(new)
    finally:
        await vault.close()
    print(
        f"Re-wrapped {count} data key(s) under the new master key (id {vault.kek_id}). "
        "Now point STRATA_MASTER_KEY or STRATA_MASTER_KEY_FILE at the new key and restart."
    )
    if settings.master_key is None and settings.master_key_file is None:
        _replace_generated_key(settings.default_master_key_path, new_key_file)
        print(f"The generated key file {settings.default_master_key_path} now holds the new key.")
    return 0


async def _credential_dek_ids(database: Path) -> set[str]:
    """The data-key ids the main database's credentials use (none when it does not exist yet)."""
    from storage.store import Store

    if not database.exists():  # noqa: ASYNC240 - a one-off stat in a CLI command
        return set()

    store = await Store.open(database, migrate_schema=False)
    try:
        return await store.accounts.all_dek_ids()
    finally:
        await store.close()


def _replace_generated_key(path: Path, new_key_file: Path) -> None:
    """Swap the generated key file atomically so a default deployment keeps starting."""
    import os

    tmp = path.with_suffix(".key.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(new_key_file.read_text().strip() + "\n")
    os.replace(tmp, path)

"""A real engine over real files and real ccxt clients, for the engine tests and the crash-test child process.

`open_world(data_dir, exchange_urls)` opens the main database and the key store in `data_dir`, builds the
exchange gateway pointed at the fake venues (`STRATA_EXCHANGE_URLS`), the engine and the strategy service —
exactly what the bot wires, minus Telegram (alerts stay in the outbox, where tests count them).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.config import load_settings
from bot.control import LocalControl
from bot.engine.scheduler import Engine
from bot.exchanges.errors import RetryPolicy
from bot.exchanges.gateway import ExchangeGateway
from bot.exchanges.rate_budget import RateBudgets
from bot.secret import Credentials
from bot.services.strategies import StrategyService
from bot.vault import Vault
from storage.store import Store
from tests.databases import database_for

MASTER_KEY = bytes(range(32))
MASTER_KEY_B64 = base64.b64encode(MASTER_KEY).decode()


class CountingNotifier:
    """Stands in for the notifier: counts wake-ups (alerts themselves are in the outbox)."""

    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


@dataclass
class World:
    store: Store
    vault: Vault
    gateway: ExchangeGateway
    engine: Engine
    service: StrategyService
    notifier: CountingNotifier

    async def connect(
        self, user_id: int, venue: str, api_key: str, secret: str, *, label: str | None = None,
        chat_id: int | None = None,
    ) -> int:
        """Register a user and an account with a sealed credential (the /connect checks are not under test)."""
        await self.store.users.upsert(user_id, chat_id or user_id)
        async with self.store.db.transaction() as tx:
            account_id = await self.store.accounts.create(tx, user_id=user_id, venue=venue, label=label or venue)
            sealed = await self.vault.seal(
                user_id=user_id, account_id=account_id, venue=venue, credentials=Credentials(api_key, secret)
            )
            await self.store.accounts.store_credential(tx, sealed)
        return account_id

    async def allocate(
        self, user_id: int, label: str, kind: str, budget: str, symbol: str, **params: str
    ) -> int:
        preview = await self.service.allocate(user_id, label, kind, budget, symbol, params)
        return (await self.service.confirm(preview)).strategy_id

    async def alerts(self, kind: str | None = None) -> list[Any]:
        if kind is None:
            return await self.store.db.fetchall("SELECT * FROM outbox ORDER BY id")
        return await self.store.db.fetchall("SELECT * FROM outbox WHERE kind = ? ORDER BY id", (kind,))

    async def orders(self) -> list[Any]:
        return await self.store.db.fetchall("SELECT * FROM orders ORDER BY id")

    async def close(self) -> None:
        await self.engine.shutdown()
        await self.gateway.close()
        await self.vault.close()
        await self.store.close()


async def open_world(
    data_dir: Path,
    exchange_urls: str,
    *,
    poll_seconds: float = 0.2,
    clock: Any = None,
    start: bool = True,
    jitter_seconds: float = 0.0,
    timeout_ms: int = 3000,
    unknown_grace_seconds: float = 0.3,
    budgets: RateBudgets | None = None,
    streams: bool = False,
    stream_options: dict[str, Any] | None = None,
    ownership: Any = None,
    database: str | None = None,
) -> World:
    """`ownership`: the engine's (`storage.partitions`; default: every account); `database`: a main database URL
    to use instead of the data folder's own (two engine workers on one PostgreSQL database)."""
    settings = load_settings(
        {
            "STRATA_DATA_DIR": str(data_dir),
            "STRATA_EXCHANGE_URLS": exchange_urls,
            "STRATA_FILL_POLL_SECONDS": str(poll_seconds),
            "STRATA_STREAMS": "on" if streams else "off",
            "STRATA_MASTER_KEY": MASTER_KEY_B64,
            **({"STRATA_DATABASE_URL": url} if (url := database or await database_for(data_dir)) else {}),
        },
        dotenv=False,
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    store = await Store.open(settings.database)
    vault = await Vault.open(settings.keystore, MASTER_KEY)
    if budgets is None:  # the real budgets at the venues' limits: tests never come near a minute's weight
        budgets = RateBudgets()
        budgets.kraken_keys.max_points = 1000  # Kraken's per-key counter would make tests wait: budgets have own tests
    gateway = ExchangeGateway.from_settings(
        settings, budgets=budgets, timeout_ms=timeout_ms,
        retry=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05),
    )
    gateway.attach_paper(store.paper)
    notifier = CountingNotifier()
    kwargs: dict[str, Any] = {
        "jitter_seconds": jitter_seconds, "stream_options": stream_options, "ownership": ownership,
    }
    if clock is not None:
        kwargs["clock"] = clock
    engine = Engine(store, vault, gateway, notifier, settings, **kwargs)
    engine.desk.unknown_grace = timedelta(seconds=unknown_grace_seconds)
    world = World(store, vault, gateway, engine, StrategyService(store, LocalControl(engine)), notifier)
    if start:
        await engine.start()
    return world


class ShiftedClock:
    """The real clock moved by a settable offset (to make a DCA slot come due without waiting a day)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

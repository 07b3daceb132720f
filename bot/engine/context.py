"""What every part of the engine shares: the store, the venue client, decrypted credentials, locks, the clock.

Credentials are unsealed once per account and kept only in this process's memory (`Credentials` is redacted
in every repr); they never go back to a database or a log. Each strategy has one asyncio lock: its run
(read state → decide → write state) and the recording of its fills (read state → on_fill → write state) never
interleave, so no update of its state is lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bot.exchanges.paper import PaperCredentials
from bot.exchanges.venues import adapter
from bot.redaction import register_secret
from bot.secret import Credentials
from storage.models import Account, Order
from storage.store import Store

logger = logging.getLogger(__name__)

ACCOUNT_TTL_S = 1.0


def utc_now() -> datetime:
    return datetime.now(UTC)


class RoundReader:
    """Coalesce the reads of many keys asked in the same event-loop iteration into one query.

    When a round's jobs fire together, thousands of runs each need their strategy row; each read is a round
    trip to the database thread under the connection's lock. Reads asked before the loop's next iteration go
    out as one `fetch_many(keys)`.
    """

    def __init__(self, fetch_many: Callable[[list[int]], Awaitable[dict[int, Any]]]) -> None:
        self._fetch_many = fetch_many
        self._pending: dict[int, list[asyncio.Future]] = {}
        self._scheduled = False

    async def get(self, key: int) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.setdefault(key, []).append(future)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        pending, self._pending, self._scheduled = self._pending, {}, False
        task = asyncio.get_running_loop().create_task(self._load(pending))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    async def _load(self, pending: dict[int, list[asyncio.Future]]) -> None:
        try:
            rows = await self._fetch_many(list(pending))
        except BaseException as exc:
            for futures in pending.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for key, futures in pending.items():
            for future in futures:
                if not future.done():
                    future.set_result(rows.get(key))


_BACKGROUND: set[asyncio.Task] = set()


class CredentialsMissing(Exception):
    """The account has no stored credential any more (disconnected)."""


@dataclass
class EngineContext:
    store: Store
    vault: Any
    gateway: Any
    notifier: Any | None = None
    clock: Callable[[], datetime] = utc_now
    #: Whether this process runs the account now (`storage.partitions`: always, but for engine workers).
    owns: Callable[[int], bool] = lambda account_id: True
    #: Per strategy: base assets held from its own fills (dropped when a fill is recorded).
    holdings_cache: dict[int, dict[str, Decimal]] = field(default_factory=dict, repr=False)
    #: Per strategy: its live orders, as last read. The engine is the only writer of orders and drops a
    #: strategy's entry (`orders_changed`) with every write, so a run reads the database only after a change.
    _live: dict[int, list[Order]] = field(default_factory=dict, repr=False)
    _credentials: dict[int, Credentials] = field(default_factory=dict, repr=False)
    _locks: dict[int, asyncio.Lock] = field(default_factory=dict, repr=False)
    _accounts: dict[int, tuple[float, Account | None]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.strategy_reader = RoundReader(self.store.strategies.get_many_with_notes)
        self.fills_reader = RoundReader(self.store.orders.fills_for_strategies)
        self.account_reader = RoundReader(self.store.accounts.get_many)

    async def account(self, account_id: int, *, batched: bool = False) -> Account | None:
        """The account row, cached for about a second (a round of strategies shares one read).

        `batched` (strategy runs): the reads asked in the same loop iteration go out as one query, as the
        runs of one due second start together. Other callers read alone: streams subscribing a thousand
        accounts at once must not be sped into one burst of backfills (bench/engine.py: the venue's per-IP
        limit answered 429 and blocked every request for minutes).
        """
        cached = self._accounts.get(account_id)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        reader = self.account_reader.get if batched else self.store.accounts.get
        account = await reader(account_id)
        self._accounts[account_id] = (now + ACCOUNT_TTL_S, account)
        return account

    async def live_orders(self, strategy_id: int) -> list[Order]:
        cached = self._live.get(strategy_id)
        if cached is None:
            cached = self._live[strategy_id] = await self.store.orders.live_for_strategy(strategy_id)
        return list(cached)

    def orders_changed(self, strategy_id: int) -> None:
        self._live.pop(strategy_id, None)

    def preload_live_orders(self, orders: list[Order], strategy_ids: list[int]) -> None:
        """Fill the live-order cache for many strategies from one query (engine start-up)."""
        self._live.update({strategy_id: [] for strategy_id in strategy_ids})
        for order in orders:
            self._live.setdefault(order.strategy_id, []).append(order)

    def forget_cached_orders(self) -> None:
        """Drop what was cached about orders and fills: partitions changed hands, and while another worker ran
        an account it wrote orders this process never saw (its caches trust "the engine is the only writer")."""
        self._live.clear()
        self.holdings_cache.clear()

    def forget_account(self, account_id: int) -> None:
        self._accounts.pop(account_id, None)

    async def credentials(self, account: Account) -> Credentials:
        """The account's API key pair, unsealed on first use and kept in memory (a Paper account: its book)."""
        if adapter(account.venue).simulated:
            return PaperCredentials(account.id)
        creds = self._credentials.get(account.id)
        if creds is None:
            sealed = await self.store.accounts.credential(account.id)
            if sealed is None:
                raise CredentialsMissing(f"account {account.id} has no credential")
            creds = await self.vault.unseal(sealed, user_id=account.user_id, venue=account.venue)
            register_secret(creds.api_key)  # from now on no log record can carry them
            register_secret(creds.secret)
            self._credentials[account.id] = creds
        return creds

    def forget_credentials(self, account_id: int) -> None:
        self._credentials.pop(account_id, None)
        self._accounts.pop(account_id, None)

    def lock(self, strategy_id: int) -> asyncio.Lock:
        lock = self._locks.get(strategy_id)
        if lock is None:
            lock = self._locks[strategy_id] = asyncio.Lock()
        return lock

    def wake_notifier(self) -> None:
        """Tell the notifier new alerts were committed (it also polls, so a missed wake only delays)."""
        if self.notifier is not None:
            try:
                self.notifier.wake()
            except Exception:  # the alert is in the outbox whatever happens here
                logger.exception("notifier wake failed")

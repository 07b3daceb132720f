"""What every part of the engine shares: the store, the venue client, decrypted credentials, locks, the clock.

Credentials are unsealed once per account and kept only in this process's memory (`Credentials` is redacted
in every repr); they never go back to a database or a log. Each strategy has one asyncio lock: its run
(read state → decide → write state) and the recording of its fills (read state → on_fill → write state) never
interleave, so no update of its state is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bot.secret import Credentials
from storage.models import Account
from storage.store import Store

logger = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class CredentialsMissing(Exception):
    """The account has no stored credential any more (disconnected)."""


@dataclass
class EngineContext:
    store: Store
    vault: Any
    gateway: Any
    notifier: Any | None = None
    clock: Callable[[], datetime] = utc_now
    _credentials: dict[int, Credentials] = field(default_factory=dict, repr=False)
    _locks: dict[int, asyncio.Lock] = field(default_factory=dict, repr=False)

    async def credentials(self, account: Account) -> Credentials:
        """The account's API key pair, unsealed on first use and kept in memory."""
        creds = self._credentials.get(account.id)
        if creds is None:
            sealed = await self.store.accounts.credential(account.id)
            if sealed is None:
                raise CredentialsMissing(f"account {account.id} has no credential")
            creds = await self.vault.unseal(sealed, user_id=account.user_id, venue=account.venue)
            self._credentials[account.id] = creds
        return creds

    def forget_credentials(self, account_id: int) -> None:
        self._credentials.pop(account_id, None)

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

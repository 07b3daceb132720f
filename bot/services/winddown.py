"""Closing the service (`python -m bot wind-down`), one user at a time, without Telegram's front end.

For each user: pause every strategy and cancel every open order (as /panic), with `sell` stop each strategy and
sell what it bought (as /panic's "Pause, cancel and sell"), then stop what is left and settle every order of
each account (as /disconnect), and shred the account's key: the account is kept, marked `key_removed`, with its
strategies, orders, fills and audit trail. An account whose orders could not all be cancelled keeps its key, so
running the command again retries it; an account whose key no longer works cannot cancel anything: its
orders are abandoned and reported. Every step is conditional on the state it finds (a stopped strategy is not
sold twice, a removed key is not looked for again), so an interrupted wind-down can simply be run again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.services.audit import AuditLog
from bot.services.strategies import StopSummary
from bot.vault import CredentialUnreadable
from storage.accounts import ACTIVE, KEY_REMOVED
from storage.models import Order
from storage.orders import LIVE

logger = logging.getLogger(__name__)

#: What a strategy's status says once the wind-down paused or stopped it.
CLOSING = "the host closing the service"
STOPPED_BY_WIND_DOWN = f"stopped by {CLOSING}"
#: The error an order of an account whose key does not work is abandoned with.
ABANDONED_BY_WIND_DOWN = (
    "abandoned: the service closed and its key did not work (it may still be open on the exchange)"
)


@dataclass(frozen=True)
class UserWindDown:
    """One user's outcome: what each strategy's stop did, the orders left open, the keys removed."""

    user_id: int
    sell: bool
    canceled: int
    stopped: tuple[StopSummary, ...]
    keys_removed: tuple[str, ...]  # account labels
    left_open: tuple[str, ...]  # orders not cancelled, in words ("kraken: BTC/USD buy 0.01 at 60000")
    kept_keys: tuple[str, ...]  # account labels whose key stays (orders left open): run the command again
    errors: tuple[str, ...] = ()
    already_done: bool = False  # an earlier run closed everything of this user

    @property
    def complete(self) -> bool:
        return not self.left_open and not self.kept_keys


class WindDown:
    def __init__(self, store, strategies, accounts) -> None:
        self._store = store
        self._strategies = strategies
        self._accounts = accounts

    async def users(self) -> list[int]:
        return await self._store.users.all_ids()

    async def tell(self, user_id: int, text: str) -> int | None:
        """Queue one message to the user (the notifier sends it); None when the user has no chat."""
        async with self._store.db.transaction() as tx:
            chat_id = await self._store.users.chat_of(user_id, tx)
            if chat_id is None:
                return None
            return await self._store.outbox.enqueue(tx, user_id=user_id, chat_id=chat_id, kind="info", text=text)

    async def already_closed(self, user_id: int) -> bool:
        """True when an earlier run closed everything of this user and nothing happened since."""
        newest = await AuditLog(self._store).page(user_id=user_id, limit=1)
        if not newest or newest[0].action != "wind-down" or newest[0].outcome != "ok":
            return False
        return not any(a.status != KEY_REMOVED for a in await self._store.accounts.list_for_user(user_id))

    async def close_user(self, user_id: int, *, sell: bool) -> UserWindDown:
        """Halt, optionally sell, settle and remove the keys of one user; recorded in the audit log."""
        halted = await self._strategies.halt_all(user_id, sell=sell, by=CLOSING)
        stopped = list(halted.sales)
        errors = list(halted.errors)
        removed: list[str] = []
        kept: list[str] = []
        left_open: list[str] = []
        for account in await self._store.accounts.list_for_user(user_id):
            if account.status == KEY_REMOVED:
                continue
            works = await self._key_works(account)
            summaries = await self._strategies.stop_account_strategies(
                account.id, cancel=works, reason=STOPPED_BY_WIND_DOWN
            )
            sold = {s.strategy_id for s in stopped}  # stopped by the sale above: summed up there already
            stopped += [s for s in summaries if s.strategy_id not in sold]
            fresh = await self._store.accounts.get(account.id)
            works = works and fresh is not None and fresh.status == ACTIVE  # the exchange may have refused it since
            live = await self._store.orders.in_states(LIVE, account_id=account.id)
            left_open += [_order_words(account.label, order) for order in live]
            if live and works:  # the key may still cancel them: keep it for the next run
                kept.append(account.label)
                continue
            await self._accounts.remove_key(account.id, abandon=ABANDONED_BY_WIND_DOWN if live else None)
            removed.append(account.label)
        outcome = UserWindDown(
            user_id=user_id, sell=sell, canceled=halted.canceled + sum(s.canceled for s in stopped),
            stopped=tuple(stopped), keys_removed=tuple(removed), left_open=tuple(left_open), kept_keys=tuple(kept),
            errors=tuple(errors + [e for s in stopped for e in s.errors]),
        )
        await AuditLog(self._store).record(
            "wind-down", actor_id=None, user_id=user_id, target=f"{len(removed)} key(s) removed",
            outcome="ok" if outcome.complete else "incomplete",
            detail=f"{'pause, cancel, sell' if sell else 'pause, cancel'}: stopped {len(stopped)} strategies, "
                   f"{len(left_open)} order(s) left open",
        )
        logger.info("wind-down: user %s done (%d keys removed, %d orders left open)", user_id, len(removed),
                    len(left_open))
        return outcome

    async def _key_works(self, account) -> bool:
        """Whether the account's key may still cancel: active, and its stored credential opens."""
        if account.status != ACTIVE:
            return False
        try:
            await self._accounts.credentials(account)
        except CredentialUnreadable:
            return False
        return True

    async def keys_left(self) -> int:
        """Accounts that still hold a key (their orders could not all be cancelled)."""
        return len(await self._store.accounts.with_key())


def _order_words(label: str, order: Order) -> str:
    at = f" at {order.price}" if order.price is not None else ""
    return f"{label}: {order.symbol} {order.side} {order.amount}{at} ({order.type})"

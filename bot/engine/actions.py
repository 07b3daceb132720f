"""The engine's reactions that change a strategy's or an account's status, each with its alert in one transaction.

- `pause_strategy`: a strategy stops trading (funds, refused order, user /pause, /panic) and, when asked, the
  user is told why — the pause and its alert commit together, so there is never one without the other.
- `reject_key`: the exchange refused the account's key; the account is marked `key_rejected`, all its active
  strategies are paused, and ONE alert is queued — only by the call that flips the account, so a burst of
  failing calls alerts once. `mark_unreadable` does the same for a stored credential that fails its integrity
  check (`key_unreadable`).
- `key_works_again`: a rejected key passed the checks again (slow retry); the account is active again, its
  strategies stay paused until the user resumes them, and the user is told once.
- `key_can_withdraw`: the key health check found withdrawals turned on for a connected key; the account is
  marked `key_unsafe` and handled as a rejected key (strategies paused, ONE alert), until a check finds them off
  again (`key_works_again`) or the key is replaced.
- `warn_trading_expiry`: the key's trading permission expires soon; the warning and its record commit together,
  so it is sent once per expiration time and level, restarts included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot.engine.alerts import (
    key_rejected_text,
    key_unreadable_text,
    key_withdraw_text,
    key_works_again_text,
    pause_text,
)
from bot.engine.context import EngineContext
from bot.venues import venue_name
from storage.accounts import KEY_REJECTED, KEY_UNREADABLE, KEY_UNSAFE
from storage.models import Account, Strategy
from storage.strategies import ACTIVE, ENGINE, PAUSED

logger = logging.getLogger(__name__)


async def pause_strategy(
    ctx: EngineContext, strategy_id: int, reason: str, *, alert: bool = True, by: str = ENGINE
) -> bool:
    """Pause an active strategy (True if it was active), queueing its alert in the same transaction.

    `by` records who paused it (user, panic, engine): "Resume all" after /panic resumes only the panic's."""
    store = ctx.store
    async with store.db.transaction() as tx:
        strategy = await store.strategies.get(strategy_id, tx)
        if strategy is None:
            return False
        changed = await store.strategies.set_status(
            tx, strategy_id, PAUSED, reason=reason, only_from=(ACTIVE,), paused_by=by
        )
        if changed and alert:
            chat_id = await store.users.chat_of(strategy.user_id, tx)
            if chat_id is not None:
                await store.outbox.enqueue(
                    tx, user_id=strategy.user_id, chat_id=chat_id, kind="pause",
                    text=pause_text(strategy, reason),
                )
    if changed:
        logger.info("strategy %s paused: %s", strategy_id, reason)
        if alert:
            ctx.wake_notifier()
    return changed


async def reject_key(ctx: EngineContext, account_id: int, reason: str) -> bool:
    """Mark the account's key rejected, pause its strategies, alert once; True if this call did it."""
    return await _suspend(
        ctx, account_id, KEY_REJECTED, "the exchange rejected the API key",
        lambda account, paused: key_rejected_text(account.label, venue_name(account.venue), reason, paused),
    )


async def mark_unreadable(ctx: EngineContext, account_id: int) -> bool:
    """The account's stored credential failed its integrity check: take it out of trading, alert once.

    One tampered or damaged row must never stop the engine (start-up reconciliation, polls and runs of other
    accounts go on); its owner can replace the key or disconnect the account.
    """
    return await _suspend(
        ctx, account_id, KEY_UNREADABLE, "the stored API key cannot be read",
        lambda account, paused: key_unreadable_text(account.label, venue_name(account.venue), paused),
    )


async def key_can_withdraw(ctx: EngineContext, account_id: int) -> bool:
    """Withdrawals were turned on for a connected key: take the account out of trading, alert once."""
    return await _suspend(
        ctx, account_id, KEY_UNSAFE, "the API key can now withdraw funds",
        lambda account, paused: key_withdraw_text(account.label, venue_name(account.venue), paused),
    )


async def warn_trading_expiry(
    ctx: EngineContext, account_id: int, expires_ms: int, levels: tuple[str, ...], text: str
) -> bool:
    """Queue a warning about the expiry of the key's trading permission unless `levels` were all sent for this
    expiration time; the record and the alert commit together. True if this call queued it."""
    store = ctx.store
    async with store.db.transaction() as tx:
        account = await store.accounts.get_in(tx, account_id)
        if account is None or not await store.key_health.mark_warned(tx, account_id, expires_ms, levels):
            return False
        chat_id = await store.users.chat_of(account.user_id, tx)
        if chat_id is not None:
            await store.outbox.enqueue(tx, user_id=account.user_id, chat_id=chat_id, kind="info", text=text)
    logger.info("account %s: warned that trading expires (%s)", account_id, ",".join(levels))
    ctx.wake_notifier()
    return True


async def key_works_again(ctx: EngineContext, account_id: int, from_status: str = KEY_REJECTED) -> bool:
    """A rejected (or unsafe) key passed the checks again: the account is active, its strategies stay paused;
    alert once."""
    store = ctx.store
    async with store.db.transaction() as tx:
        account = await store.accounts.get_in(tx, account_id)
        if account is None or not await store.accounts.reactivate(tx, account_id, from_status):
            return False
        paused = await store.strategies.list_for_account(account_id, (PAUSED,), tx)
        chat_id = await store.users.chat_of(account.user_id, tx)
        if chat_id is not None:
            await store.outbox.enqueue(
                tx, user_id=account.user_id, chat_id=chat_id, kind="info",
                text=key_works_again_text(
                    account.label, venue_name(account.venue), paused, safe_again=from_status == KEY_UNSAFE
                ),
            )
    ctx.forget_account(account_id)
    logger.info("account %s: key works again", account_id)
    ctx.wake_notifier()
    return True


async def _suspend(
    ctx: EngineContext, account_id: int, status: str, pause_reason: str,
    alert_text: Callable[[Account, list[Strategy]], str],
) -> bool:
    """Flip an active account to `status`, pause its active strategies and queue ONE alert, in one transaction."""
    store = ctx.store
    ctx.forget_credentials(account_id)
    async with store.db.transaction() as tx:
        account = await store.accounts.get_in(tx, account_id)
        if account is None or not await store.accounts.suspend(tx, account_id, status):
            return False
        paused = []
        for strategy in await store.strategies.list_for_account(account_id, (ACTIVE,), tx):
            if await store.strategies.set_status(tx, strategy.id, PAUSED, reason=pause_reason, only_from=(ACTIVE,)):
                paused.append(strategy)
        chat_id = await store.users.chat_of(account.user_id, tx)
        if chat_id is not None:
            await store.outbox.enqueue(
                tx, user_id=account.user_id, chat_id=chat_id, kind="error", text=alert_text(account, paused),
            )
    ctx.forget_credentials(account_id)
    logger.warning("account %s: %s; %d strategies paused", account_id, status, len(paused))
    ctx.wake_notifier()
    return True

"""The engine's reactions that change a strategy's or an account's status, each with its alert in one transaction.

- `pause_strategy`: a strategy stops trading (funds, refused order, user /pause, /panic) and, when asked, the
  user is told why — the pause and its alert commit together, so there is never one without the other.
- `reject_key`: the exchange refused the account's key; the account is marked `key_rejected`, all its active
  strategies are paused, and ONE alert is queued — only by the call that flips the account, so a burst of
  failing calls alerts once.
"""

from __future__ import annotations

import logging

from bot.engine.alerts import key_rejected_text, pause_text
from bot.engine.context import EngineContext
from bot.venues import venue_name
from storage.strategies import ACTIVE, PAUSED

logger = logging.getLogger(__name__)


async def pause_strategy(ctx: EngineContext, strategy_id: int, reason: str, *, alert: bool = True) -> bool:
    """Pause an active strategy (True if it was active), queueing its alert in the same transaction."""
    store = ctx.store
    async with store.db.transaction() as tx:
        strategy = await store.strategies.get(strategy_id, tx)
        if strategy is None:
            return False
        changed = await store.strategies.set_status(tx, strategy_id, PAUSED, reason=reason, only_from=(ACTIVE,))
        if changed and alert:
            chat = await tx.fetchone("SELECT chat_id FROM users WHERE id = ?", (strategy.user_id,))
            if chat is not None:
                await store.outbox.enqueue(
                    tx, user_id=strategy.user_id, chat_id=chat["chat_id"], kind="pause",
                    text=pause_text(strategy, reason),
                )
    if changed:
        logger.info("strategy %s paused: %s", strategy_id, reason)
        if alert:
            ctx.wake_notifier()
    return changed


async def reject_key(ctx: EngineContext, account_id: int, reason: str) -> bool:
    """Mark the account's key rejected, pause its strategies, alert once; True if this call did it."""
    store = ctx.store
    ctx.forget_credentials(account_id)
    async with store.db.transaction() as tx:
        row = await tx.fetchone("SELECT user_id, label, venue FROM accounts WHERE id = ?", (account_id,))
        if row is None:
            return False
        flipped = await tx.rowcount(
            "UPDATE accounts SET status = 'key_rejected' WHERE id = ? AND status = 'active'", (account_id,)
        )
        if not flipped:
            return False
        paused = []
        for strategy in await store.strategies.list_for_account(account_id, (ACTIVE,), tx):
            if await store.strategies.set_status(
                tx, strategy.id, PAUSED, reason="the exchange rejected the API key", only_from=(ACTIVE,)
            ):
                paused.append(strategy)
        chat = await tx.fetchone("SELECT chat_id FROM users WHERE id = ?", (row["user_id"],))
        if chat is not None:
            await store.outbox.enqueue(
                tx, user_id=row["user_id"], chat_id=chat["chat_id"], kind="error",
                text=key_rejected_text(row["label"], venue_name(row["venue"]), reason, paused),
            )
    ctx.forget_credentials(account_id)
    logger.warning("account %s: key rejected (%s); %d strategies paused", account_id, reason, len(paused))
    ctx.wake_notifier()
    return True

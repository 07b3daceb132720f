"""`python -m bot wind-down [--sell] [--message TEXT]`: the host closes the service in one command.

It runs with the data folder and the key store locked (a running bot refuses it, and it refuses a running bot),
opens what the services need without starting the engine (no strategy runs, no fill poller: nothing is sent
but the cancels and the sales), tells every user, closes each user (`bot.services.winddown`), reports to each
user and prints a summary for the host, empties the key store when every key is removed, and waits for its
messages to reach Telegram (those still queued go out the next time the bot runs; the summary says how many).

Exit status 0 when everything was cancelled and every key destroyed; 1 when some order could not be cancelled
(its account keeps its key, so running the command again retries it).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

import telegram

from bot.config import Settings
from bot.control import LocalControl
from bot.engine.scheduler import Engine
from bot.exchanges.gateway import ExchangeGateway
from bot.formatting import amount, price
from bot.notifier import Notifier
from bot.runtime import open_vault
from bot.services.accounts import AccountService
from bot.services.strategies import StopSummary, StrategyService
from bot.services.winddown import UserWindDown, WindDown
from handlers.render import wind_down_notice_text, wind_down_report_text
from storage.store import Store

logger = logging.getLogger(__name__)

#: How long the command waits for its messages to reach Telegram: a floor, plus Telegram's pace per message.
DELIVERY_FLOOR_SECONDS = 30.0
DELIVERY_SECONDS_PER_MESSAGE = 1 / 25


async def wind_down(settings: Settings, *, sell: bool, message: str | None) -> int:
    started = time.monotonic()
    store = await Store.open(settings.database, migrate_schema=False)
    vault = bot = notifier = engine = gateway = None
    try:
        vault = await open_vault(settings, store)
        await store.migrate()
        gateway = ExchangeGateway.from_settings(settings)
        gateway.attach_paper(store.paper)
        bot = telegram.Bot(settings.require_token().reveal(), base_url=settings.telegram_api_url)
        notifier = Notifier(store, bot)
        await notifier.start()
        engine = Engine(store, vault, gateway, notifier, settings)  # never started: nothing runs on its own
        await engine.reconcile()  # orders a crash left unconfirmed: known before they are cancelled
        control = LocalControl(engine)
        strategies = StrategyService(store, control)
        accounts = AccountService(
            store, vault, gateway, stop_account_strategies=strategies.stop_account_strategies,
            strategies_to_stop=strategies.account_strategies_to_stop, forget_credentials=control.forget_credentials,
        )
        service = WindDown(store, strategies, accounts)
        messages: list[int] = []
        outcomes: list[UserWindDown] = []
        users = await service.users()
        print(f"Winding down {len(users)} user(s){', selling what the strategies bought' if sell else ''}.")
        to_close = []
        for user_id in users:  # everyone is told first: closing one user may take a while (a venue down)
            if await service.already_closed(user_id):
                print(f"user {user_id}: already closed by an earlier run")
                continue
            to_close.append(user_id)
            messages += [i for i in [await service.tell(user_id, wind_down_notice_text(message, sell))] if i]
        notifier.wake()
        for user_id in to_close:
            outcome = await service.close_user(user_id, sell=sell)
            outcomes.append(outcome)
            messages += [i for i in [await service.tell(user_id, wind_down_report_text(outcome))] if i]
            notifier.wake()
            print(_operator_line(outcome))
        keys_left = await service.keys_left()
        if keys_left == 0:
            removed = sum(len(o.keys_removed) for o in outcomes) + await vault.empty()
            print(f"Key store emptied: {removed} key(s) destroyed; every account is marked key removed.")
        else:
            pruned = await vault.prune(await store.accounts.all_dek_ids())
            print(f"{keys_left} account(s) keep their key (orders left open); {pruned} stray data key(s) destroyed.")
        queued = await _deliver(store, notifier, messages)
        print(f"Messages: {len(messages) - queued} of {len(messages)} delivered"
              + (f", {queued} still queued (they go out the next time the bot runs)." if queued else "."))
        print(f"Took {time.monotonic() - started:.1f} s.")
        left_open = sum(len(o.left_open) for o in outcomes)
        if keys_left or left_open:
            print(f"strata: wind-down incomplete: {left_open} order(s) could not be cancelled (listed above); "
                  "cancel them on the exchange, or run wind-down again to retry.", file=sys.stderr)
            return 1
        return 0
    finally:
        if engine is not None:
            await engine.shutdown()
        if notifier is not None:
            await notifier.stop()
        if bot is not None:
            await bot.shutdown()
        if gateway is not None:
            await gateway.close()
        if vault is not None:
            await vault.close()
        await store.close()


async def _deliver(store: Store, notifier: Notifier, ids: list[int]) -> int:
    """Wait until the notifier has settled these messages (or the time is up); how many are still queued."""
    deadline = time.monotonic() + DELIVERY_FLOOR_SECONDS + DELIVERY_SECONDS_PER_MESSAGE * len(ids)
    while (queued := await store.outbox.still_pending(ids)) and time.monotonic() < deadline:
        notifier.wake()
        await asyncio.sleep(0.2)
    return queued


def _operator_line(outcome: UserWindDown) -> str:
    """One user's outcome for the host, in plain text."""
    parts = [f"stopped {len(outcome.stopped)} strateg{'y' if len(outcome.stopped) == 1 else 'ies'}",
             f"cancelled {outcome.canceled} order(s)"]
    sold = [_sold(s, asset, moved) for s in outcome.stopped for asset, moved in s.sold.items()]
    dust = [amount(held, asset, held=True) for s in outcome.stopped for asset, held in s.dust.items()]
    if sold:
        parts.append("sold " + ", ".join(sold))
    if dust:
        parts.append("dust " + ", ".join(dust))
    parts.append("keys removed: " + (", ".join(outcome.keys_removed) or "none"))
    if outcome.left_open:
        parts.append(f"NOT CANCELLED ({len(outcome.left_open)}): " + "; ".join(outcome.left_open))
    if outcome.kept_keys:
        parts.append("keys kept: " + ", ".join(outcome.kept_keys))
    if outcome.errors:
        parts.append(f"{len(outcome.errors)} error(s): " + "; ".join(outcome.errors[:5]))
    return f"user {outcome.user_id}: " + "; ".join(parts)


def _sold(summary: StopSummary, asset: str, moved) -> str:
    at = summary.sold_at.get(asset)
    return amount(abs(moved), asset, held=True) + (f" at {price(at, summary.quote)}" if at is not None else "")

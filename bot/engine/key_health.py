"""Key health: what a connected key may do, checked again after /connect.

Every live account's key is checked every `PERIOD` (6 h) by its venue's cheapest signed call
(`VenueAdapter.check_health`: Binance `apiRestrictions`, weight 1 on the sapi budget; Kraken the /connect
`WithdrawMethods` proof, one point on the key's own counter). A tick each minute checks the accounts whose check
is due, never-checked first, at most `total × TICK / PERIOD` of them (rounded up), so 1,000 accounts cost about
three calls a minute and a restart or a first deployment never bursts. `check_now(account_id)` checks one
account at once (called after an account's stream ended unexpectedly); it does nothing for an account checked in
the last `CHECK_NOW_SPACING`, and at most `CHECK_NOW_AT_ONCE` run together, so a dropped connection carrying
many accounts' streams cannot turn into a burst of checks.

What a check finds, and what happens:
- Withdrawals turned on → `key_can_withdraw`: the account is taken out of trading like a rejected key (status
  `key_unsafe`, its active strategies paused, ONE alert, committed together). Its open orders are NOT cancelled:
  they are the strategies' own, funds locked in them cannot be withdrawn (cancelling would free them for a
  thief), and the rejected-key path the user already knows leaves them too. With the rejected keys' retry (every
  few minutes) the key is checked again; once it cannot withdraw and passes every check of /connect, the account
  is active again and the user told (`key_works_again`); its strategies stay paused until /resume.
- The venue's trading permission gone (turned off, or expired) → `reject_key`, as when the venue refuses an order.
- Trading permission expiring (Binance `tradingAuthorityExpirationTime`, keys without IP restriction) → a warning
  a week ahead and another a day ahead, each once per expiration time (recorded with its alert, so restarts and
  later checks never repeat it).
- The key refused (an authentication error) → `reject_key`, exactly as a rejected REST call.
- No answer (network, 5xx, rate limit, an answer that proves nothing) → nothing changes; checked again after
  `RETRY_AFTER`.
Paper accounts (`adapter(venue).simulated`) and testnet accounts are never checked.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from datetime import datetime, timedelta
from enum import StrEnum

from bot.engine.actions import key_can_withdraw, mark_unreadable, reject_key, warn_trading_expiry
from bot.engine.alerts import trading_expiry_text
from bot.engine.context import CredentialsMissing, EngineContext
from bot.exchanges.clients import ExchangeSetupError
from bot.exchanges.errors import Action, ExchangeFailure
from bot.exchanges.key_check import KeyChecker
from bot.exchanges.keys import KeyHealth
from bot.exchanges.venues import adapters, find
from bot.vault import CredentialUnreadable
from bot.venues import venue_name
from storage.accounts import ACTIVE
from storage.models import Account

logger = logging.getLogger(__name__)

#: How often each live key is checked.
PERIOD = timedelta(hours=6)
#: How often the periodic check looks for due accounts (the job `accounts:key-health`).
TICK = timedelta(minutes=1)
#: A check that got no answer is tried again after this long.
RETRY_AFTER = timedelta(minutes=15)
#: `check_now` skips an account whose key was checked this recently.
CHECK_NOW_SPACING = timedelta(minutes=1)
#: How many `check_now` calls may run at the same time (the others wait their turn).
CHECK_NOW_AT_ONCE = 4
#: Warnings before the trading permission expires: (level, how long ahead, words), the nearest first.
WARNINGS = (("day", timedelta(days=1), "within a day"), ("week", timedelta(days=7), "within a week"))
JOB_ID = "accounts:key-health"


class Verdict(StrEnum):
    HEALTHY = "healthy"
    CAN_WITHDRAW = "can_withdraw"
    NO_TRADING = "no_trading"
    REJECTED = "rejected"
    NO_ANSWER = "no_answer"
    SKIPPED = "skipped"


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def checked_venues() -> list[str]:
    """The venues whose keys are checked: every real one (Paper accounts have no key)."""
    return [v.id for v in adapters() if not v.simulated]


class KeyHealthMonitor:
    """Checks connected keys periodically (`tick`) and on demand (`check_now`); see the module docstring."""

    def __init__(self, ctx: EngineContext, *, period: timedelta = PERIOD, tick: timedelta = TICK) -> None:
        self.ctx = ctx
        self.period = period
        self.tick_interval = tick
        self._checking: set[int] = set()
        self._at_once = asyncio.Semaphore(CHECK_NOW_AT_ONCE)
        #: One lock per account with `check_now` calls in flight (gone with the last of them).
        self._check_now_locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    @property
    def checker(self) -> KeyChecker:
        return KeyChecker(self.ctx.gateway)

    async def tick(self) -> int:
        """Check the accounts due now, at most this tick's share of all of them; return how many were checked."""
        store, venues = self.ctx.store, checked_venues()
        total = await store.key_health.count_checked(venues)
        if not total:
            return 0
        quota = math.ceil(total * self.tick_interval / self.period)
        # Every worker reads the same due list and checks the accounts it runs: together, the tick's quota.
        due = [a for a in await store.key_health.due(venues, _ms(self.ctx.clock()), quota) if self.ctx.owns(a.id)]
        for account in due:
            try:
                await self.check(account)
            except Exception:  # one account's check must not stop the others'
                logger.exception("account %s: key health check failed", account.id)
        return len(due)

    async def check_now(self, account_id: int) -> Verdict:
        """Check one account's key at once (e.g. its stream ended unexpectedly), unless it was just checked.

        Calls for one account take turns: each reads when the key was last checked only after the one before it
        has written its answer, so twenty calls at once make one request to the venue, on any database."""
        lock = self._check_now_locks.get(account_id)
        if lock is None:
            lock = self._check_now_locks[account_id] = asyncio.Lock()
        async with lock, self._at_once:
            return await self._check_now(account_id)

    async def _check_now(self, account_id: int) -> Verdict:
        account = await self.ctx.store.accounts.get(account_id)
        if account is None or not self._checkable(account) or not self.ctx.owns(account_id):
            return Verdict.SKIPPED
        row = await self.ctx.store.key_health.get(account_id)
        since = _ms(self.ctx.clock()) - row.checked_ms if row is not None and row.checked_ms is not None else None
        if since is not None and since < _ms_of(CHECK_NOW_SPACING):
            return Verdict.SKIPPED
        return await self.check(account)

    async def check(self, account: Account) -> Verdict:
        """Check one account's key and act on what the venue says (see the module docstring)."""
        if not self._checkable(account) or account.id in self._checking:
            return Verdict.SKIPPED
        self._checking.add(account.id)
        try:
            return await self._check(account)
        finally:
            self._checking.discard(account.id)

    async def health(self, account: Account) -> KeyHealth | None:
        """The venue's answer about the account's key (raises `ExchangeFailure` like any signed call)."""
        creds = await self.ctx.credentials(account)
        return await self.checker.health(account.venue, creds, now=self.ctx.clock())

    @staticmethod
    def _checkable(account: Account) -> bool:
        known = find(account.venue)
        return account.status == ACTIVE and not account.testnet and known is not None and not known.simulated

    async def _check(self, account: Account) -> Verdict:
        store, now = self.ctx.store, self.ctx.clock()
        try:
            health = await self.health(account)
        except CredentialUnreadable:
            await mark_unreadable(self.ctx, account.id)
            return Verdict.REJECTED
        except (CredentialsMissing, ExchangeSetupError):
            await store.key_health.retry_at(account.id, _ms(now + self.period))
            return Verdict.SKIPPED
        except ExchangeFailure as failure:
            if failure.action is Action.AUTH:
                await reject_key(self.ctx, account.id, failure.user_message)
                return Verdict.REJECTED
            logger.warning("account %s: key health check got no answer (%s)", account.id, failure)
            await store.key_health.retry_at(account.id, _ms(now + RETRY_AFTER))
            return Verdict.NO_ANSWER
        expires = health.trading_expires_at if health is not None else None
        await store.key_health.checked(
            account.id, at_ms=_ms(now), due_ms=_ms(now + self.period),
            expires_ms=_ms(expires) if expires is not None else None,
        )
        if health is None:
            return Verdict.HEALTHY
        if health.can_withdraw:
            await key_can_withdraw(self.ctx, account.id)
            return Verdict.CAN_WITHDRAW
        if not health.can_trade:
            name = venue_name(account.venue)
            await reject_key(
                self.ctx, account.id,
                f"{name} reports that this key may no longer trade here: its trading permission was turned off, or "
                "it expired because the key is not restricted to an IP address.",
            )
            return Verdict.NO_TRADING
        if expires is not None:
            await self._warn_expiry(account, expires, now)
        return Verdict.HEALTHY

    async def _warn_expiry(self, account: Account, expires: datetime, now: datetime) -> None:
        """Warn once a week ahead and once a day ahead (the day's warning also covers a week's never sent)."""
        for level, ahead, within in WARNINGS:
            if expires - now <= ahead:
                levels = ("week", "day") if level == "day" else ("week",)
                text = trading_expiry_text(
                    account.label, venue_name(account.venue), expires.strftime("%Y-%m-%d %H:%M UTC"), within
                )
                await warn_trading_expiry(self.ctx, account.id, _ms(expires), levels, text)
                return


def _ms_of(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)

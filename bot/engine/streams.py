"""Fills pushed by the venues' user-data streams, routed to the same idempotent fill path as polling.

`FillStreams` keeps one `UserStreamHub` per venue whose adapter names a stream (`user_stream`), following every
active account (key accepted, not Paper) that has an active strategy or a live order; an account whose
strategies all ended, or that was disconnected or whose key was rejected, is unsubscribed at the next sync.

An execution of an order Strata did not make (no client order id of ours) goes to `ForeignTrades`
(`bot.engine.foreign`): one alert per burst; accounts are then followed even with no strategy, unless their
owner turned those alerts off.

An order update from a stream goes to `OrderDesk.apply` — exactly what a poll does with the same order — so a
fill is keyed by its trade id and recorded once whether the stream, a poll, a cancel or all of them report it.
A fill during a gap (a drop, a stall, a refused reconnect, the 24-hour rollover) is not in the stream: every time
an account's subscription is confirmed, its live orders are refreshed by the poll path (`refresh_account`:
open orders, then each vanished order's trades since what is recorded), which records what the gap hid.

While an account is streamed the fill poller leaves it to a rare safety sweep (`SWEEP_SECONDS`); the moment
its stream is down it is polled at the normal interval again (`Engine.poll_once`). An order not confirmed yet
(its send under way, or its outcome unknown) is left to its send and to the resolver, which the poller runs at
the normal interval for any account holding one: a stream update never races them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.engine.actions import mark_unreadable
from bot.engine.context import CredentialsMissing, EngineContext
from bot.engine.foreign import ForeignTrades
from bot.engine.intents import OrderDesk
from bot.exchanges.errors import ExchangeFailure
from bot.exchanges.models import Order as VenueOrder
from bot.exchanges.rate_budget import trading_call
from bot.exchanges.streams import UserStreamHub, protocol
from bot.exchanges.venues import adapter, find
from bot.secret import Credentials
from bot.vault import CredentialUnreadable
from storage.orders import INTENT, LIVE, OPEN, UNCONFIRMED, UNKNOWN
from storage.strategies import ACTIVE

logger = logging.getLogger(__name__)

#: How often a streamed account's live orders are still polled, in case a stream missed something.
SWEEP_SECONDS = 300.0
#: How often the followed accounts are compared with those that should be (new strategies, ended ones).
SYNC_SECONDS = 2.0

STREAMED, POLLED = "streamed", "polled"


class FillStreams:
    """Which accounts are streamed, and what an update from a stream does."""

    def __init__(
        self,
        ctx: EngineContext,
        desk: OrderDesk,
        *,
        sync_seconds: float = SYNC_SECONDS,
        key_check: Callable[[int], Awaitable[Any]] | None = None,
        **hub_options: Any,
    ) -> None:
        self.ctx = ctx
        self.desk = desk
        #: Checks an account's key at once (`KeyHealthMonitor.check_now`): called when its stream ended
        #: unexpectedly or its subscription was refused, as a revoked key or one turned dangerous shows so.
        self.key_check = key_check
        self._checks: set[asyncio.Task] = set()
        self.sync_seconds = sync_seconds
        self.hub_options = hub_options
        self.hubs: dict[str, UserStreamHub] = {}
        self._task: asyncio.Task | None = None
        self.updates = 0  # order updates received (benchmarks, tests)
        self.backfills = 0  # subscriptions confirmed, each followed by a backfill
        #: Trades on a followed account that Strata did not make (issue 21, item 2).
        self.foreign = ForeignTrades(ctx)

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sync_loop(), name="strata-fill-streams")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._checks):
            task.cancel()
        if self._checks:
            await asyncio.gather(*self._checks, return_exceptions=True)
        for hub in self.hubs.values():
            await hub.close()
        self.hubs.clear()
        await self.foreign.close()

    async def _sync_loop(self) -> None:
        try:
            await self.foreign.recover()  # trades recorded but not alerted when the engine last stopped
        except Exception:
            logger.exception("fill streams: recovering foreign-trade alerts failed")
        while True:
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("fill streams: sync failed")
            await asyncio.sleep(self.sync_seconds)

    # --- which accounts ----------------------------------------------------------------------------------

    async def sync(self) -> None:
        """Follow exactly the accounts that should be streamed now, per venue."""
        store = self.ctx.store
        wanted_ids = await store.strategies.account_ids_with_status(ACTIVE)
        wanted_ids.update(await store.orders.accounts_with_live_orders())
        wanted_ids.update(await store.foreign_trades.watched_accounts())  # trades Strata did not make
        active = {account.id: account for account in await store.accounts.list_active()}
        by_venue: dict[str, set[int]] = {venue: set() for venue in self.hubs}
        for account_id in wanted_ids:
            account = active.get(account_id)
            if account is None or not self.ctx.owns(account_id):
                continue  # gone, its key rejected or unreadable, or run by another worker
            known = find(account.venue)
            if known is None or known.simulated or known.user_stream is None:
                continue  # Paper accounts are never subscribed
            by_venue.setdefault(account.venue, set()).add(account_id)
        for venue, account_ids in by_venue.items():
            hub = self.hubs.get(venue) or self._hub(venue)
            if hub is not None:
                hub.follow(account_ids)

    def _hub(self, venue: str) -> UserStreamHub | None:
        pool = getattr(self.ctx.gateway, "pool", None)
        known = adapter(venue)
        url = pool.stream_url(venue) if pool is not None else None
        if url is None or known.user_stream is None:
            return None
        gateway = self.ctx.gateway

        async def rest(creds: Credentials, op: Callable[[Any], Awaitable[Any]]) -> Any:
            """The signed REST calls a stream needs (USD-M's listenKeys, Kraken's tokens), on the gateway's private
            path and budget, ahead of reads like orders: one such call (weight 1) keeps every fill of its account
            off polling (≥ 24 weight each), and reads can spend the IP's budget for minutes."""
            with trading_call():
                return await gateway.private_call(venue, creds, op)

        hub = UserStreamHub(
            venue, url, protocol(known.user_stream), pool.stream_session(), credentials=self._credentials, rest=rest,
            on_order=self._on_order, on_live=self._backfill, on_down=self._on_down, **self.hub_options,
        )
        self.hubs[venue] = hub
        return hub

    async def settle(self) -> None:
        """Wait until every stream update and backfill received so far is recorded (tests, benchmarks)."""
        for hub in list(self.hubs.values()):
            await hub.settle()

    def mode(self, account_id: int) -> str:
        """"streamed" while the account's subscription is live, else "polled"."""
        return STREAMED if any(hub.is_live(account_id) for hub in self.hubs.values()) else POLLED

    def streamed(self, account_id: int) -> bool:
        return self.mode(account_id) == STREAMED

    def _on_down(self, account_ids: set[int]) -> None:
        """Streams ended unexpectedly (or were refused): polling covers them; their keys are checked now."""
        if self.key_check is None:
            return
        for account_id in sorted(account_ids):
            task = asyncio.get_running_loop().create_task(self._check_key(account_id))
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)

    async def _check_key(self, account_id: int) -> None:
        assert self.key_check is not None  # noqa: S101 - set when this is scheduled
        try:
            await self.key_check(account_id)
        except Exception:
            logger.exception("account %s: key check after its stream ended failed", account_id)

    # --- what arrives ------------------------------------------------------------------------------------

    async def _credentials(self, account_id: int) -> Credentials:
        account = await self.ctx.account(account_id)
        if account is None:
            raise CredentialsMissing(f"account {account_id} is gone")
        try:
            return await self.ctx.credentials(account)
        except CredentialUnreadable:
            await mark_unreadable(self.ctx, account_id)
            raise

    async def _on_order(self, account_id: int, remote: VenueOrder) -> None:
        """Record a streamed order update through the fill path polling uses (idempotent by trade id)."""
        self.updates += 1
        if not self.ctx.owns(account_id):
            return  # moved to another worker since it was followed: that worker backfills it
        order = await self.ctx.store.orders.by_client_id(remote.client_order_id) if remote.client_order_id else None
        if order is None:  # every order of ours is stored before it is sent: someone else made this one
            await self.foreign.seen(account_id, remote)
            return
        if order.account_id != account_id:
            return  # ours, from another account of the same exchange account: recorded by that one
        if order.status in UNCONFIRMED:
            return  # its send or the resolver records it (the poller keeps polling accounts with such orders)
        if order.status not in LIVE and (remote.filled or 0) <= order.filled:
            return  # already recorded to its end
        account = await self.ctx.account(account_id)
        if account is None or account.status != "active":
            return
        await self.desk.apply(order.id, account, dataclasses.replace(remote, symbol=order.symbol))

    async def _backfill(self, account_id: int) -> None:
        """The account's subscription is (again) live: record what happened while it was not, from REST."""
        self.backfills += 1
        account = await self.ctx.store.accounts.get(account_id)
        if account is None or account.status != "active" or not self.ctx.owns(account_id):
            return
        orders = await self.ctx.store.orders.in_states((OPEN, UNKNOWN, INTENT), account_id=account_id)
        if not orders:
            return
        try:
            await self.desk.refresh_account(account, orders)
        except (ExchangeFailure, CredentialsMissing) as failure:
            logger.warning("backfill of account %s failed: %s", account_id, failure)
        except CredentialUnreadable:
            await mark_unreadable(self.ctx, account_id)

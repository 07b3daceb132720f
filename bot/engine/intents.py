"""Crash-safe orders: intents written before sending, sent with a deterministic client order id, resolved by it.

Lifecycle of an order row: `intent` (committed before any request) → `open` / `closed` once the exchange
answered, `rejected` when it refused, `unknown` when we cannot tell (timeout, rate limit, unexpected error).
An `unknown` order — and at start-up every `intent` — is looked up on the exchange by its client order id:
found → adopted (its fills recorded); not found → it never reached the exchange and is sent now with the same
client order id. Because the lookup comes first and the id is deterministic, an order is never placed twice
and never lost. Fills, the budget ledger, the strategy's state and the fill alert commit in ONE transaction,
and everything the exchange reports about one order is applied under that order's lock (see `fills`).

Stop means stopped: every send re-reads its strategy's and account's status under the strategy's send gate (a
lock held only for that check, never across a request) and is registered as in flight before the gate opens
again, so a control action that changed the status inside the gate knows which sends it must wait for
(`wait_sends`) and that no other will go out. A strategy that is not
active never gets a new order: its unconfirmed orders are never sent again, and those found open are cancelled.
An unconfirmed order's "not found" is trusted only once the venue's receive window has passed
(`UNKNOWN_GRACE`); until then `cancel` answers `NOT_CONFIRMED` and the order stays to be resolved.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from bot.engine.actions import pause_strategy, reject_key
from bot.engine.alerts import fill_text
from bot.engine.context import EngineContext, utc_now
from bot.engine.core import book_event, ended
from bot.engine.crash_hook import crash_point
from bot.engine.figures import Precision, figures_of
from bot.engine.fills import (
    Recorded,
    keyed_by_trade,
    new_fill,
    order_status,
    trade_fill,
    trades_amount,
)
from bot.engine.pnl import compute, effect_of_last, is_contract
from bot.exchanges.client_ids import client_order_id_for
from bot.exchanges.errors import Action, ExchangeFailure
from bot.exchanges.models import Order as VenueOrder
from bot.exchanges.models import Trade
from bot.exchanges.venues import adapter
from bot.strategies import STRATEGIES
from bot.strategies.base import NOT_SENT, REJECTED_BY_VENUE
from storage.models import Account, Order, Strategy
from storage.orders import (
    CANCELED,
    CLOSED,
    FINAL,
    INTENT,
    LIVE,
    OPEN,
    REJECTED,
    UNCONFIRMED,
    UNKNOWN,
    NewFill,
    StrategyFill,
)
from storage.strategies import ACTIVE, STOPPED

logger = logging.getLogger(__name__)

ZERO = Decimal(0)
#: How long after a send failed with an unknown outcome a "not found" answer is trusted: a request that timed
#: out on our side is refused by the venue once older than its receive window (Binance: 5–10 s).
UNKNOWN_GRACE = timedelta(seconds=15)
#: How long `cancel` waits, step by step, for the trades of an order that ended to show in the trade history.
TRADES_LAG_WAITS = (0.2, 0.4, 0.8)
#: Trades asked for per trade history request (Binance's default page; it lists at most 1000).
TRADES_PAGE = 500
#: An intent still unsent this long after it was written (the process died between commit and send, or the
#: start-up lookup failed) is resolved by the poller; far longer than any send with its retries can take.
INTENT_STALE = timedelta(minutes=5)

#: How a cancel ended: cancelled on the venue (fills before it recorded); never reached the venue; had already
#: filled completely; not known yet (its request is in flight, or the venue did not confirm either way).
CANCELLED, UNSENT, FILLED, NOT_CONFIRMED = "cancelled", "unsent", "filled", "unconfirmed"


def client_order_id(venue: str, strategy: Strategy, tag: str) -> str:
    """The deterministic client order id of a strategy's order.

    It names the strategy by its id and creation time, so re-running a decision after a crash gives the same
    id while a fresh database (ids restarting at 1) cannot collide with an order of an older installation.
    """
    return client_order_id_for(venue, f"{strategy.id}@{strategy.created_at.isoformat()}", tag)


class OrderDesk:
    """Sends intents, records what the exchange reports about them, and resolves the unconfirmed ones."""

    def __init__(self, ctx: EngineContext, *, on_activity: Callable[[int], None] | None = None) -> None:
        self.ctx = ctx
        self.unknown_grace = UNKNOWN_GRACE
        self.intent_stale = INTENT_STALE
        #: When each order's create request may last have left (its send started, or ended with an unknown outcome).
        self._unknown_since: dict[int, datetime] = {}
        #: Tells whether a strategy is running now (its own run is then sending its intents).
        self.is_running: Callable[[int], bool] = lambda strategy_id: False
        #: Called with a strategy id after new fills or an order's end (the engine re-runs the strategy soon).
        self.on_activity = on_activity or (lambda strategy_id: None)
        #: Called before every send, also of an intent resolved after a restart (futures: hedge-mode check and
        #: leverage 1); False leaves the intent unsent, to be tried again by the resolver.
        self.prepare: Callable[[Order, Account], Awaitable[bool]] | None = None
        #: The pauses `cancel` makes while an ended order's trades are not visible yet (Binance's trade history
        #: can lag its order status by a moment).
        self.trades_lag_waits: tuple[float, ...] = TRADES_LAG_WAITS
        #: Per-order locks with their user counts: `apply` reads what is recorded and writes under one.
        self._order_locks: dict[int, tuple[asyncio.Lock, int]] = {}
        #: When this desk started: an intent written before may have been sent by the previous process.
        self.started_at = utc_now()
        #: Per strategy, the send gate (`gate`) and the orders whose send is under way (registered inside it).
        self._gates: dict[int, asyncio.Lock] = {}
        self._in_flight: dict[int, set[int]] = {}
        #: Orders whose create request this process started and whose row may not say so yet.
        self._attempted: set[int] = set()
        self._sends_changed = asyncio.Condition()

    # --- sending ---------------------------------------------------------------------------------------

    async def send(self, order: Order, account: Account, *, closing: bool = False) -> None:
        """Send an intent if its strategy may still trade; record the answer, or act on the failure.

        `closing`: the order closes a stopped strategy's holdings (/stop's sell), which a stopped strategy may send.
        """
        async with self.gate(order.strategy_id):
            current = await self.ctx.store.orders.get(order.id)
            if current is None or current.status != INTENT:
                return  # ended meanwhile (a cancel ended it unsent): nothing to send
            if not self.ctx.owns(order.account_id):
                return  # its account moved to another worker: the intent is its to reconcile and send
            refusal = await self.send_refusal(order, closing=closing)
            if refusal is None:
                self._in_flight.setdefault(order.strategy_id, set()).add(order.id)
        if refusal is not None:
            logger.info("order %s not sent: %s", order.client_order_id, refusal)
            await self._end_unsent(order, CANCELED, f"not sent: {refusal}")
            return
        try:
            await self._send(order, account)
            # Ended normally: the row now tells how (a send that raised keeps its `_attempted` mark).
            self._attempted.discard(order.id)
        finally:
            await self._send_ended(order)

    async def _send(self, order: Order, account: Account) -> None:
        if self.prepare is not None and not await self.prepare(order, account):
            return
        creds = await self.ctx.credentials(account)
        self._attempted.add(order.id)
        self._unknown_since[order.id] = utc_now()  # from now on the request may be on its way
        try:
            placed = await self.ctx.gateway.create_order(
                account.venue, creds, order.symbol, order.side, order.type,
                amount=order.amount, price=order.price, cost=order.cost,
                client_order_id=order.client_order_id, params=_params(order, account.venue),
            )
        except ExchangeFailure as failure:
            await self.on_send_failure(order, account, failure)
            return
        self._unknown_since.pop(order.id, None)
        crash_point("after_send")
        await self.apply(order.id, account, placed)

    def gate(self, strategy_id: int) -> asyncio.Lock:
        """The strategy's send gate: a send checks its status and registers inside it, a control action changes
        the status inside it. Held for a few database reads only, so /panic never waits for a slow run."""
        lock = self._gates.get(strategy_id)
        if lock is None:
            lock = self._gates[strategy_id] = asyncio.Lock()
        return lock

    async def send_refusal(self, order: Order, *, closing: bool = False) -> str | None:
        """Why this order may not be sent now (None: it may): read fresh, call inside the strategy's gate."""
        account = await self.ctx.store.accounts.get(order.account_id)
        if account is None or account.status != "active":
            return "its account is not usable"
        strategy = await self.ctx.store.strategies.get(order.strategy_id)
        if strategy is None:
            return "its strategy is gone"
        if strategy.status == ACTIVE or (closing and strategy.status == STOPPED):
            return None
        return f"the strategy is {strategy.status}"

    async def _send_ended(self, order: Order) -> None:
        sending = self._in_flight.get(order.strategy_id)
        if sending is not None:
            sending.discard(order.id)
            if not sending:
                del self._in_flight[order.strategy_id]
        async with self._sends_changed:
            self._sends_changed.notify_all()

    def in_flight(self, order: Order) -> bool:
        return order.id in self._in_flight.get(order.strategy_id, ())

    async def wait_sends(self, strategy_id: int, timeout: float) -> bool:  # noqa: ASYNC109 - a bounded wait
        """Wait until no send of the strategy is under way; False if one still is after `timeout` seconds."""

        async def idle() -> None:
            async with self._sends_changed:
                await self._sends_changed.wait_for(lambda: not self._in_flight.get(strategy_id))

        try:
            await asyncio.wait_for(idle(), timeout)
        except TimeoutError:
            return False
        return True

    async def on_send_failure(self, order: Order, account: Account, failure: ExchangeFailure) -> None:
        action = failure.action
        if action is Action.AUTH:
            await self._end_unsent(order, REJECTED, str(failure))
            await reject_key(self.ctx, account.id, failure.user_message)
        elif action in (Action.FUNDS, Action.INVALID_ORDER):
            await self._end_unsent(order, REJECTED, str(failure))
            await pause_strategy(self.ctx, order.strategy_id, failure.user_message)
        else:
            # Timeout, 5xx, rate limit, unexpected: it may or may not be placed. Resolve by client id later.
            logger.warning("order %s outcome unknown: %s", order.client_order_id, failure)
            self._unknown_since[order.id] = utc_now()
            await self.ctx.store.orders.set_status(None, order.id, UNKNOWN, error=str(failure)[:300])
            self.ctx.orders_changed(order.strategy_id)

    async def _end_unsent(self, order: Order, status: str, error: str) -> None:
        """End an order the exchange never took, and tell its strategy it closed with nothing filled."""
        self._unknown_since.pop(order.id, None)
        await self.record(order.id, status=status, fill=None, error=error[:300], unsent=status == CANCELED)

    # --- resolving --------------------------------------------------------------------------------------

    async def lookup(self, order: Order, account: Account) -> VenueOrder | None:
        """The exchange's view of our order, by its client order id (None: the exchange never got it)."""
        creds = await self.ctx.credentials(account)
        return await self.ctx.gateway.fetch_order_by_client_id(
            account.venue, creds, order.symbol, order.client_order_id
        )

    async def resolve(self, order: Order, account: Account, *, at_startup: bool) -> None:
        """Find an unconfirmed order by client order id: adopt it, or send it if it never arrived."""
        if not self.ctx.owns(order.account_id) or (not at_startup and not self._due_for_lookup(order)):
            return
        try:
            found = await self.lookup(order, account)
        except ExchangeFailure as failure:
            await self.on_lookup_failure(account, failure)
            return
        if found is not None:
            logger.info("order %s found on %s: adopting it", order.client_order_id, account.venue)
            await self.apply(order.id, account, found)
            if found.is_open and await self.send_refusal(order) is not None:
                await self._cancel_adopted(order, account)  # its strategy stopped meanwhile: no order stays
            return
        refusal = await self.send_refusal(order)
        if refusal is not None:
            # A paused or stopped strategy sends nothing (also once a revived or replaced key makes its account
            # active again, maybe days later): the order ends unsent once a late arrival is ruled out (the
            # venue's receive window passed), and the strategy decides afresh on /resume.
            if self.surely_absent(order):
                await self._end_unsent(order, CANCELED, f"never reached the exchange; not sent again: {refusal}")
            return
        logger.info("order %s never reached %s: sending it now", order.client_order_id, account.venue)
        await self.ctx.store.orders.set_status(None, order.id, INTENT)
        self.ctx.orders_changed(order.strategy_id)
        fresh = await self.ctx.store.orders.get(order.id)
        if fresh is not None:
            await self.send(fresh, account)

    async def _cancel_adopted(self, order: Order, account: Account) -> None:
        fresh = await self.ctx.store.orders.get(order.id)
        if fresh is None or fresh.status not in LIVE:
            return
        try:
            await self.cancel(fresh, account)
        except ExchangeFailure as failure:
            logger.warning("order %s of a stopped strategy not cancelled yet: %s", order.client_order_id, failure)

    def surely_absent(self, order: Order) -> bool:
        """Whether "not found" proves this unconfirmed order will never reach the venue.

        True for an intent this process wrote and never sent; otherwise only once `unknown_grace` (longer than
        the venue's receive window) has passed since its request may have left — for an order of an earlier
        process, since this one started.
        """
        if self.in_flight(order):
            return False
        if order.status == INTENT and order.id not in self._attempted and order.created_at >= self.started_at:
            return True
        since = self._unknown_since.get(order.id, max(order.created_at, self.started_at))
        return utc_now() - since >= self.unknown_grace

    def _due_for_lookup(self, order: Order) -> bool:
        """Whether a "not found" for this unconfirmed order can be trusted now (so it may be sent again)."""
        if self.is_running(order.strategy_id):
            return False  # its own run may be sending it right now
        now = utc_now()
        if order.status == INTENT:
            return now - order.created_at >= self.intent_stale
        since = self._unknown_since.get(order.id, order.created_at)
        return now - since >= self.unknown_grace

    async def on_lookup_failure(self, account: Account, failure: ExchangeFailure) -> None:
        if failure.action is Action.AUTH:
            await reject_key(self.ctx, account.id, failure.user_message)
        else:
            logger.warning("%s order lookup failed (%s): will retry", account.venue, failure)

    # --- polling ----------------------------------------------------------------------------------------

    async def refresh(self, order: Order, account: Account) -> None:
        """Poll one order: record new fills and its end; an unconfirmed one is resolved first."""
        if order.status in (INTENT, UNKNOWN):
            await self.resolve(order, account, at_startup=False)
            return
        try:
            current = await self.lookup(order, account)
        except ExchangeFailure as failure:
            await self.on_lookup_failure(account, failure)
            return
        if current is None:
            logger.warning("open order %s is unknown to %s", order.client_order_id, account.venue)
            return
        await self.apply(order.id, account, current)

    async def refresh_account(self, account: Account, orders: list[Order]) -> None:
        """Poll all of an account's live orders with few requests: its open orders in one call (Kraken) or
        one per symbol (Binance), then a lookup by client order id only for those no longer open."""
        unconfirmed = [o for o in orders if o.status in (INTENT, UNKNOWN)]
        confirmed = [o for o in orders if o.status not in (INTENT, UNKNOWN)]
        for order in unconfirmed:
            await self.resolve(order, account, at_startup=False)
        if not confirmed:
            return
        creds = await self.ctx.credentials(account)
        symbols = sorted({o.symbol for o in confirmed})
        open_now: dict[str, VenueOrder] = {}
        try:
            if not adapter(account.venue).open_orders_per_symbol or len(symbols) > 8:
                listed = await self.ctx.gateway.fetch_open_orders(account.venue, creds, None)
            else:
                listed = []
                for symbol in symbols:
                    listed += await self.ctx.gateway.fetch_open_orders(account.venue, creds, symbol)
        except ExchangeFailure as failure:
            await self.on_lookup_failure(account, failure)
            return
        for remote in listed:
            if remote.client_order_id:
                open_now[remote.client_order_id] = remote
        vanished = []
        for order in confirmed:
            remote = open_now.get(order.client_order_id)
            if remote is not None:
                if (remote.filled or ZERO) > order.filled:
                    await self.apply(order.id, account, remote)
            else:
                vanished.append(order)
        closed_now: dict[str, VenueOrder] = {}
        if vanished and adapter(account.venue).closed_orders_in_one_call:
            # Kraken counts calls per key: one ClosedOrders for all vanished orders instead of two lookups each.
            try:
                closed_now = {
                    o.client_order_id: o
                    for o in await self.ctx.gateway.fetch_closed_orders(account.venue, creds)
                    if o.client_order_id
                }
            except ExchangeFailure as failure:
                await self.on_lookup_failure(account, failure)
                return
        for order in vanished:
            remote = closed_now.get(order.client_order_id)
            if remote is not None:
                await self.apply(order.id, account, remote)
            else:
                await self.refresh(order, account)  # no longer open: filled or canceled, look it up

    async def cancel(self, order: Order, account: Account) -> str:
        """Cancel a live order on the exchange and record how it ended (fills included); say how it ended.

        An order whose send is under way is left to its send (`NOT_CONFIRMED`). An unconfirmed one is looked up
        first: not found ends it unsent only when it surely never arrives (`surely_absent`), else it stays
        `NOT_CONFIRMED`. Raises `ExchangeFailure` when the exchange cannot be reached (the order stays live).
        """
        if self.in_flight(order):
            return NOT_CONFIRMED
        if order.status in UNCONFIRMED:
            if order.status == INTENT and self.surely_absent(order):
                await self.record(
                    order.id, status=CANCELED, fill=None, error="canceled before it was sent", unsent=True
                )
                return UNSENT
            found = await self.lookup(order, account)
            if found is None:
                if not self.surely_absent(order):
                    return NOT_CONFIRMED
                await self.record(
                    order.id, status=CANCELED, fill=None, error="canceled: it never reached the exchange", unsent=True
                )
                return UNSENT
            if not found.is_open:
                await self.apply(order.id, account, found)
                await self._await_trades(order.id, account, found)
                return _ended(found)
        creds = await self.ctx.credentials(account)
        try:
            await self.ctx.gateway.cancel_order(
                account.venue, creds, order.symbol, client_order_id=order.client_order_id
            )
        except ExchangeFailure as failure:
            if failure.action is not Action.NOT_FOUND:
                raise
        # The cancel's answer may not carry the fills: read the order's final state once.
        final = await self.lookup(order, account)
        if final is None:
            return NOT_CONFIRMED
        await self.apply(order.id, account, final)
        await self._await_trades(order.id, account, final)
        return NOT_CONFIRMED if final.is_open else _ended(final)

    async def cancel_together(self, orders: Sequence[Order], account: Account) -> dict[int, str]:
        """Cancel several confirmed orders of one account, then read their final states in ONE closed-orders
        listing, where the venue counts reads per key (`closed_orders_in_one_call`: Kraken). Confirming each
        order with its own lookups cost two reads per order, and a /panic on one grid waited a minute for the
        counter. Returns how each order it could confirm ended; the others are left to `cancel` (an unconfirmed
        or in-flight order, one missing from the listing, or all of them when the venue fails)."""
        batch = [o for o in orders if o.status not in UNCONFIRMED and not self.in_flight(o)]
        if len(batch) < 2 or not adapter(account.venue).closed_orders_in_one_call:
            return {}
        creds = await self.ctx.credentials(account)
        for order in batch:
            try:
                await self.ctx.gateway.cancel_order(
                    account.venue, creds, order.symbol, client_order_id=order.client_order_id
                )
            except ExchangeFailure as failure:
                if failure.action is not Action.NOT_FOUND:  # filled meanwhile is fine; anything else: one by one
                    raise
        closed = {
            o.client_order_id: o
            for o in await self.ctx.gateway.fetch_closed_orders(account.venue, creds)
            if o.client_order_id
        }
        outcomes: dict[int, str] = {}
        for order in batch:
            final = closed.get(order.client_order_id)
            if final is None or final.is_open:
                continue
            await self.apply(order.id, account, final)
            await self._await_trades(order.id, account, final)
            outcomes[order.id] = _ended(final)
        return outcomes

    async def _await_trades(self, order_id: int, account: Account, final: VenueOrder) -> None:
        """Give the trades of an order that just ended a moment to become visible, so what cancelled it (/stop,
        /panic) sees every fill it made; if they still lag, the poller records them when they show."""
        if final.is_open:
            return
        for delay in self.trades_lag_waits:
            current = await self.ctx.store.orders.get(order_id)
            if current is None or current.status not in LIVE:
                return
            await asyncio.sleep(delay)
            await self.apply(order_id, account, final)

    # --- recording --------------------------------------------------------------------------------------

    async def apply(self, order_id: int, account: Account, remote: VenueOrder) -> None:
        """Record what the exchange says about an order: its new fills (if any), its status, its id.

        Serialised per order: what is already recorded is read, the venue's trades fetched and the new fills
        written while holding the order's lock, so a poll and a cancel reporting the same order one after
        the other record each fill once. An order whose trades are not all visible yet stays live.
        """
        async with self._order_lock(order_id):
            order = await self.ctx.store.orders.get(order_id)
            if order is None:
                return
            status = order_status(remote)
            keys = await self.ctx.store.orders.fill_keys(order.id)
            base_filled: Decimal | None = None
            try:
                if keyed_by_trade(account.venue, keys) and remote.id is not None:
                    fills, complete = await self._trade_fills(order, account, remote, keys)
                else:
                    base_filled = order.filled
                    fills, complete = await self._cumulative_fills(order, account, remote)
                if not complete and status in FINAL:
                    logger.info("order %s: its trades are not all visible yet; kept live", order.client_order_id)
                    status = OPEN
            except ExchangeFailure as failure:
                await self.on_lookup_failure(account, failure)
                return
            await self.record(
                order.id, status=status, fills=fills, exchange_order_id=remote.id, base_filled=base_filled
            )

    async def _trade_fills(
        self, order: Order, account: Account, remote: VenueOrder, keys: set[str]
    ) -> tuple[list[NewFill], bool]:
        """The order's trades not recorded yet, and whether all its filled amount is then accounted for."""
        filled = remote.filled or ZERO
        if filled <= order.filled:
            return [], True
        fresh = [t for t in remote.trades if t.id is not None and f"t:{t.id}" not in keys]
        if order.filled + trades_amount(fresh) < filled:
            # The report does not carry every trade not recorded yet (a poll's order lists none; a streamed
            # fill only its own): read the order's trades.
            listed = await self._order_trades(account, order.symbol, remote.id)
            trades = [t for t in listed if t.order_id in (None, remote.id)]
            fresh = [t for t in trades if t.id is not None and f"t:{t.id}" not in keys]
        valuation = await self._valuation(
            order, account, [t.fee_currency for t in fresh if (t.fee_cost or ZERO) > 0]
        )
        fills = [trade_fill(t, side=order.side, **valuation) for t in fresh]
        return fills, order.filled + sum((f.amount for f in fills), ZERO) >= filled

    async def _order_trades(self, account: Account, symbol: str, order_id: str) -> list[Trade]:
        """All of one order's trades. Binance lists at most a page of them per request (the most recent ones
        unless `fromId` is given): an order with a full page is read again page by page, oldest first."""
        creds = await self.ctx.credentials(account)
        fetch = self.ctx.gateway.fetch_my_trades
        page = await fetch(account.venue, creds, symbol, limit=TRADES_PAGE, order_id=order_id)
        if len(page) < TRADES_PAGE:
            return page
        trades: list[Trade] = []
        from_id = "0"
        while True:
            page = await fetch(account.venue, creds, symbol, limit=TRADES_PAGE, order_id=order_id, from_id=from_id)
            trades += page
            ids = [int(t.id) for t in page if t.id is not None and t.id.isdigit()]
            if len(page) < TRADES_PAGE or not ids or max(ids) < int(from_id):
                # The last page (or a venue that does not page: never loop on it, never count a trade twice).
                return list({t.id: t for t in trades}.values())
            from_id = str(max(ids) + 1)

    async def _cumulative_fills(
        self, order: Order, account: Account, remote: VenueOrder
    ) -> tuple[list[NewFill], bool]:
        """The fill implied by the order's cumulative totals and fee beyond what is recorded (Kraken), and
        whether its fee is known (see `_with_trades_fee`)."""
        if (remote.filled or ZERO) <= order.filled:
            return [], True
        if adapter(account.venue).fills_by_trade and remote.fee_cost is None and remote.id is not None:
            remote = await self._with_trades_fee(account, order.symbol, remote)
            if remote.fee_cost is None:
                return [], False
        elif remote.fee_cost is None and (remote.trades or order_status(remote) in FINAL):
            remote = await self._with_streamed_fee(order, account, remote)
        fee_currencies = [remote.fee_currency] if (remote.fee_cost or ZERO) > 0 else []
        valuation = await self._valuation(order, account, fee_currencies)
        fill = new_fill(remote, await self._recorded(order), side=order.side, **valuation)
        return ([fill] if fill is not None else []), True

    async def _with_streamed_fee(self, order: Order, account: Account, remote: VenueOrder) -> VenueOrder:
        """A streamed update of an order recorded by cumulative totals (Kraken's `executions`) carries its own
        trade's fee, not the order's: the order's fee is what is recorded plus that trade's when the trade is all
        that is new; otherwise (a gap, a final status without its trade) the order as the venue lists it."""
        fresh = [t for t in remote.trades if (t.fee_cost or ZERO) > 0]
        currencies = {t.fee_currency for t in fresh}
        if remote.trades and order.filled + trades_amount(remote.trades) == (remote.filled or ZERO) \
                and len(currencies) <= 1:
            fee = await self.ctx.store.orders.fee_native(order.id) + sum((t.fee_cost for t in fresh), ZERO)
            return dataclasses.replace(remote, fee_cost=fee, fee_currency=next(iter(currencies), None))
        creds = await self.ctx.credentials(account)
        listed = await self.ctx.gateway.fetch_order_by_client_id(
            account.venue, creds, order.symbol, order.client_order_id
        )
        return listed if listed is not None and (listed.filled or ZERO) >= (remote.filled or ZERO) else remote

    async def _with_trades_fee(self, account: Account, symbol: str, remote: VenueOrder) -> VenueOrder:
        """A Binance order recorded by cumulative totals (by a version before fills were keyed by trade) with
        its cumulative fee taken from its trades, as Binance reports an order's fee only there; its fee stays
        None while the trades do not cover its filled amount yet (the order is then kept live)."""
        assert remote.id is not None  # noqa: S101 - checked by the caller
        trades = [t for t in await self._order_trades(account, symbol, remote.id) if t.order_id in (None, remote.id)]
        if trades_amount(trades) < (remote.filled or ZERO):
            return remote
        currency = next((t.fee_currency for t in trades if t.fee_currency), None)
        fee = sum((t.fee_cost or ZERO for t in trades if t.fee_currency in (currency, None)), ZERO)
        return dataclasses.replace(remote, fee_cost=fee, fee_currency=currency)

    async def _valuation(self, order: Order, account: Account, fee_currencies: list[str | None]) -> dict[str, Any]:
        """What values an order's fees in quote: its assets, and the price in quote of any third fee currency."""
        base, quote = _assets(order.symbol, "")
        rates: dict[str, Decimal] = {}
        for currency in {c for c in fee_currencies if c and c not in (base, quote)}:
            rate = await self._rate(account.venue, currency, quote)
            if rate is None:
                logger.warning("no %s/%s price to value a fee of order %s", currency, quote, order.client_order_id)
            else:
                rates[currency] = rate
        return {"base": base, "quote": quote, "rates": rates}

    async def _rate(self, venue: str, asset: str, quote: str) -> Decimal | None:
        """The price of `asset` in `quote` now: its own market, else through USDT (BNB/USDT × USDT/quote)."""
        direct = await self._last_price(venue, f"{asset}/{quote}")
        if direct is not None or quote == "USDT":
            return direct
        via = await self._last_price(venue, f"{asset}/USDT")
        if via is None:
            return None
        quote_in_usdt = await self._last_price(venue, f"{quote}/USDT")
        if quote_in_usdt:
            return via / quote_in_usdt
        usdt_in_quote = await self._last_price(venue, f"USDT/{quote}")
        return via * usdt_in_quote if usdt_in_quote else None

    async def _last_price(self, venue: str, symbol: str) -> Decimal | None:
        """The last price of a spot pair, or of its linear perpetual on a futures venue (BNB/USDT:USDT)."""
        listed = await self.ctx.gateway.symbols(venue)
        quote = symbol.partition("/")[2]
        market = next((s for s in (symbol, f"{symbol}:{quote}") if s in listed), None)
        if market is None:
            return None
        ticker = await self.ctx.gateway.fetch_ticker(venue, market)
        return ticker.last if ticker.last and ticker.last > 0 else None

    @contextlib.asynccontextmanager
    async def _order_lock(self, order_id: int) -> AsyncIterator[None]:
        """One asyncio lock per order while anyone uses it (dropped when the last user leaves)."""
        lock, users = self._order_locks.get(order_id, (asyncio.Lock(), 0))
        self._order_locks[order_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._order_locks[order_id]
            if users <= 1:
                del self._order_locks[order_id]
            else:
                self._order_locks[order_id] = (lock, users - 1)

    async def _recorded(self, order: Order) -> Recorded:
        return Recorded(
            filled=order.filled,
            filled_cost=order.filled_cost,
            fee_native=await self.ctx.store.orders.fee_native(order.id),
        )

    async def record(
        self,
        order_id: int,
        *,
        status: str,
        fill: NewFill | None = None,
        fills: Sequence[NewFill] = (),
        exchange_order_id: str | None = None,
        error: str | None = None,
        base_filled: Decimal | None = None,
        unsent: bool = False,
    ) -> bool:
        """One transaction: the new fills, order totals and status, ledger, strategy state, fill alert.

        Returns whether a fill was new. A fill already recorded (same order and trade key) is skipped, so
        recording the same report twice changes nothing. `base_filled` (cumulative fills) is the order's filled
        amount the fill was computed from: if the order moved on meanwhile, the fill is stale and dropped.
        `unsent`: the order ends without ever reaching the exchange (its strategy is told `NOT_SENT`).
        Fills of one report are folded into the strategy (and alerted) together, one event per fee currency.
        """
        store = self.ctx.store
        reported = [*fills, *([fill] if fill is not None else [])]
        strategy_id = await self._strategy_of(order_id)
        precision = await self._precision(order_id) if reported else {}
        async with self.ctx.lock(strategy_id), store.db.transaction() as tx:
            order = await store.orders.get(order_id, tx)
            strategy = await store.strategies.get(strategy_id, tx)
            if order is None or strategy is None:
                return False
            if base_filled is not None and order.filled != base_filled:
                reported = []
            if order.status in FINAL and order.exchange_order_id is not None and status not in FINAL:
                # A report read before the exchange told us the order ended (a poll racing a cancel) is stale:
                # it never reopens the order (its new trades, if any, are still recorded).
                status = order.status
            kind = STRATEGIES[strategy.kind]
            params = kind.parse_params(strategy.params)
            state = kind.load_state(strategy.state)
            base, quote = _assets(order.symbol, strategy.quote)
            ending = order.status in LIVE and status in FINAL
            events: list[list[NewFill]] = []
            for currency in dict.fromkeys(f.fee_currency for f in reported):
                new = [f for f in reported if f.fee_currency == currency and await store.orders.add_fill(tx, order, f)]
                if new:
                    events.append(new)
            inserted = bool(events)
            if inserted:
                self.ctx.holdings_cache.pop(strategy_id, None)  # under the strategy's lock
            # The strategy's fills, these events' last: each event is booked on the fills before it (futures) and
            # its alert says what it realised.
            contract = is_contract(order.symbol)
            history = await store.orders.fills_for_strategy(strategy.id, tx) if inserted else []
            alerts: list[dict[str, Any]] = []
            later = sum(len(event) for event in events)
            for number, event in enumerate(events, start=1):
                last = number == len(events)
                booked = book_event(order.tag, order.symbol, order.side, event, closed=ending and last, base=base)
                amount, cost, price = booked.fill.amount, booked.cost, booked.fill.price
                fee, currency = booked.fill.fee, booked.fill.fee_currency
                amount_before = order.filled + sum((f.amount for e in events[: number - 1] for f in e), ZERO)
                await store.orders.add_progress(tx, order.id, amount=amount, cost=cost, fee_quote=booked.charged)
                spent, received = booked.spent, booked.received
                later -= len(event)
                effect = effect_of_last(history[: len(history) - later], quote, count=len(event))
                if contract:
                    # A futures fill puts up or releases margin and realises P&L: booked as the venue does.
                    spent, received = effect.spent, effect.received
                await store.strategies.add_to_ledger(
                    tx, strategy.id, spent=spent, received=received, fees=booked.fee_quote
                )
                update = kind.on_fill(state, booked.fill, params)
                state = update.state
                if update.profit is not None:
                    await store.orders.set_fill_profit(tx, order.id, event[-1].trade_key, update.profit)
                if strategy.alerts != "off":
                    alerts.append(dict(
                        side=order.side, amount=amount, base=base, price=price, quote=quote, cost=cost, fee=fee,
                        fee_currency=currency,
                        partial=not last or not (status == CLOSED or _all_filled(order, amount_before + amount)),
                        realised=effect.realised if not contract and order.side == "sell" else None,
                        futures=effect if contract else None, round_trip=update.round_trip,
                    ))
            if not inserted and ending:
                rejected = status == REJECTED and order.filled == 0
                refused = REJECTED_BY_VENUE if rejected else NOT_SENT if unsent else None
                end = ended(order.tag, order.symbol, order.side, order.price, refused)
                state = kind.on_fill(state, end, params).state
            if status != order.status or exchange_order_id != order.exchange_order_id or error:
                await store.orders.set_status(tx, order.id, status, exchange_order_id=exchange_order_id, error=error)
            if inserted or ending:
                await store.strategies.save_state(tx, strategy.id, kind.dump_state(state))
            if alerts:
                # Written once the order's status is, so the alert's reservations are the ones /status shows.
                await self._enqueue_fill_alerts(tx, strategy, history, alerts, precision)
            self.ctx.orders_changed(strategy_id)  # under the strategy's lock, before a run can read
        if inserted:
            crash_point("after_fill")
            self.ctx.wake_notifier()
        if inserted or ending:
            self.on_activity(strategy_id)
        return inserted

    async def _precision(self, order_id: int) -> dict[str, Precision]:
        """The order's market steps, to show its fill as the venue does (read before the transaction: the markets
        are loaded, so this is a lookup; none when they cannot be read, and the alert shows plain figures)."""
        order = await self.ctx.store.orders.get(order_id)
        account = None if order is None else await self.ctx.account(order.account_id)
        if order is None or account is None:
            return {}
        try:
            info = await self.ctx.gateway.market(account.venue, order.symbol)
        except ExchangeFailure:
            return {}
        return {info.base: Precision(info.amount_step, info.price_tick)}

    async def _enqueue_fill_alerts(
        self, tx: Any, strategy: Strategy, history: Sequence[StrategyFill], alerts: list[dict[str, Any]],
        precision: dict[str, Precision],
    ) -> None:
        """Queue a report's fill alerts, each with the strategy's figures once the report is booked."""
        store = self.ctx.store
        chat_id = await store.users.chat_of(strategy.user_id, tx)
        booked = await store.strategies.get(strategy.id, tx)
        if chat_id is None or booked is None:
            return
        figures = figures_of(
            budget=booked.budget, quote=booked.quote, spent=booked.spent, received=booked.received,
            reserved=await store.orders.reserved_for(strategy.id, tx), pnl=compute(history, booked.quote),
            futures=is_contract(booked.symbol), precision=precision,
        )
        for alert in alerts:
            await store.outbox.enqueue(
                tx, user_id=strategy.user_id, chat_id=chat_id, kind="fill",
                text=fill_text(booked, figures=figures, **alert), silent=strategy.alerts == "silent",
            )

    async def _strategy_of(self, order_id: int) -> int:
        order = await self.ctx.store.orders.get(order_id)
        return order.strategy_id if order else 0


def _ended(remote: VenueOrder) -> str:
    """How a cancel ended for an order the venue reports closed: filled completely, or cancelled."""
    return FILLED if order_status(remote) == CLOSED else CANCELLED


def _all_filled(order: Order, filled: Decimal) -> bool:
    """Whether an order sized in base has filled in full (its trades can be recorded before its status)."""
    return order.amount is not None and filled >= order.amount


def _assets(symbol: str, fallback_quote: str) -> tuple[str, str]:
    base, _, rest = symbol.partition("/")
    quote = rest.split(":")[0] if rest else fallback_quote
    return base, quote


def _params(order: Order, venue: str) -> dict[str, object] | None:
    """Venue parameters of an order: a futures order the risk gate let through as reduce-only is sent so.

    The flag is stored with the intent; older intents name a closing order by their tag (`…:close`).
    """
    reduce_only = order.reduce_only or order.tag.endswith(":close")
    return adapter(venue).reduce_only_params(reduce_only)


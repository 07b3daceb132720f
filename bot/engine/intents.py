"""Crash-safe orders: intents written before sending, sent with a deterministic client order id, resolved by it.

Lifecycle of an order row: `intent` (committed before any request) → `open` / `closed` once the exchange
answered, `rejected` when it refused, `unknown` when we cannot tell (timeout, rate limit, unexpected error).
An `unknown` order — and at start-up every `intent` — is looked up on the exchange by its client order id:
found → adopted (its fills recorded); not found → it never reached the exchange and is sent now with the same
client order id. Because the lookup comes first and the id is deterministic, an order is never placed twice
and never lost. Fills, the budget ledger, the strategy's state and the fill alert commit in ONE transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

from bot.engine.actions import pause_strategy, reject_key
from bot.engine.alerts import fill_text
from bot.engine.context import EngineContext, utc_now
from bot.engine.crash_hook import crash_point
from bot.engine.fills import Recorded, fee_from_trades, fee_value, new_fill, order_status, quote_fee
from bot.engine.pnl import effect_of_last, is_contract
from bot.exchanges.client_ids import client_order_id_for
from bot.exchanges.errors import Action, ExchangeFailure
from bot.exchanges.models import Order as VenueOrder
from bot.strategies import STRATEGIES
from bot.strategies.base import Fill
from storage.models import Account, Order, Strategy
from storage.orders import CANCELED, CLOSED, FINAL, INTENT, LIVE, REJECTED, UNKNOWN, NewFill

logger = logging.getLogger(__name__)

ZERO = Decimal(0)
#: How long after a send failed with an unknown outcome a "not found" answer is trusted: a request that timed
#: out on our side is refused by the venue once older than its receive window (Binance: 5–10 s).
UNKNOWN_GRACE = timedelta(seconds=15)
#: An intent still unsent this long after it was written (the process died between commit and send, or the
#: start-up lookup failed) is resolved by the poller; far longer than any send with its retries can take.
INTENT_STALE = timedelta(minutes=5)


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
        #: When each order's send ended with an unknown outcome (in this process).
        self._unknown_since: dict[int, datetime] = {}
        #: Tells whether a strategy is running now (its own run is then sending its intents).
        self.is_running: Callable[[int], bool] = lambda strategy_id: False
        #: Called with a strategy id after new fills or an order's end (the engine re-runs the strategy soon).
        self.on_activity = on_activity or (lambda strategy_id: None)
        #: Called before every send, also of an intent resolved after a restart (futures: hedge-mode check and
        #: leverage 1); False leaves the intent unsent, to be tried again by the resolver.
        self.prepare: Callable[[Order, Account], Awaitable[bool]] | None = None

    # --- sending ---------------------------------------------------------------------------------------

    async def send(self, order: Order, account: Account) -> None:
        """Send an intent; record the answer (and any fill in it), or act on the failure."""
        if self.prepare is not None and not await self.prepare(order, account):
            return
        creds = await self.ctx.credentials(account)
        try:
            placed = await self.ctx.gateway.create_order(
                account.venue, creds, order.symbol, order.side, order.type,
                amount=order.amount, price=order.price, cost=order.cost,
                client_order_id=order.client_order_id, params=_params(order, account.venue),
            )
        except ExchangeFailure as failure:
            await self.on_send_failure(order, account, failure)
            return
        crash_point("after_send")
        await self.apply(order.id, account, placed)

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
        await self.record(order.id, status=status, fill=None, error=error[:300])

    # --- resolving --------------------------------------------------------------------------------------

    async def lookup(self, order: Order, account: Account) -> VenueOrder | None:
        """The exchange's view of our order, by its client order id (None: the exchange never got it)."""
        creds = await self.ctx.credentials(account)
        return await self.ctx.gateway.fetch_order_by_client_id(
            account.venue, creds, order.symbol, order.client_order_id
        )

    async def resolve(self, order: Order, account: Account, *, at_startup: bool) -> None:
        """Find an unconfirmed order by client order id: adopt it, or send it if it never arrived."""
        if not at_startup and not self._due_for_lookup(order):
            return
        try:
            found = await self.lookup(order, account)
        except ExchangeFailure as failure:
            await self.on_lookup_failure(account, failure)
            return
        if found is not None:
            logger.info("order %s found on %s: adopting it", order.client_order_id, account.venue)
            await self.apply(order.id, account, found)
            return
        logger.info("order %s never reached %s: sending it now", order.client_order_id, account.venue)
        await self.ctx.store.orders.set_status(None, order.id, INTENT)
        self.ctx.orders_changed(order.strategy_id)
        fresh = await self.ctx.store.orders.get(order.id)
        if fresh is not None:
            await self.send(fresh, account)

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
            if account.venue == "kraken" or len(symbols) > 8:
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
        if vanished and account.venue == "kraken":
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

    async def cancel(self, order: Order, account: Account) -> None:
        """Cancel a live order on the exchange and record how it ended (fills included).

        An unconfirmed order is looked up first: if the exchange never got it, it ends here unsent.
        Raises `ExchangeFailure` when the exchange cannot be reached (the order then stays live).
        """
        if order.status in (INTENT, UNKNOWN):
            found = await self.lookup(order, account)
            if found is None:
                await self.record(order.id, status=CANCELED, fill=None, error="canceled before it reached the exchange")
                return
            if not found.is_open:
                await self.apply(order.id, account, found)
                return
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
        if final is not None:
            await self.apply(order.id, account, final)

    # --- recording --------------------------------------------------------------------------------------

    async def apply(self, order_id: int, account: Account, remote: VenueOrder) -> None:
        """Record what the exchange says about an order: its new fill (if any), its status, its id."""
        order = await self.ctx.store.orders.get(order_id)
        if order is None:
            return
        recorded = await self._recorded(order)
        fee = None
        if (remote.filled or ZERO) > recorded.filled and remote.fee_cost is None and remote.id is not None:
            # Binance reports an order's fee only with its trades: ask for them.
            creds = await self.ctx.credentials(account)
            try:
                trades = await self.ctx.gateway.fetch_my_trades(
                    account.venue, creds, order.symbol, since_ms=_ms(order) - 60_000
                )
            except ExchangeFailure as failure:
                await self.on_lookup_failure(account, failure)
                return
            fee = fee_from_trades(trades, remote.id)
        fill = new_fill(remote, recorded, side=order.side, fee=fee)
        await self.record(order.id, status=order_status(remote), fill=fill, exchange_order_id=remote.id)

    async def _recorded(self, order: Order) -> Recorded:
        rows = await self.ctx.store.db.fetchall("SELECT fee FROM fills WHERE order_id = ?", (order.id,))
        return Recorded(
            filled=order.filled,
            filled_cost=order.filled_cost,
            fee_native=sum((Decimal(r["fee"]) for r in rows), ZERO),
        )

    async def record(
        self,
        order_id: int,
        *,
        status: str,
        fill: NewFill | None,
        exchange_order_id: str | None = None,
        error: str | None = None,
    ) -> bool:
        """One transaction: the new fill, order totals and status, ledger, strategy state, fill alert.

        Returns whether a fill was new. A fill already recorded (same order and trade key) is skipped, so
        recording the same report twice changes nothing.
        """
        store = self.ctx.store
        strategy_id = await self._strategy_of(order_id)
        async with self.ctx.lock(strategy_id), store.db.transaction() as tx:
            order = await store.orders.get(order_id, tx)
            strategy = await store.strategies.get(strategy_id, tx)
            if order is None or strategy is None:
                return False
            kind = STRATEGIES[strategy.kind]
            params = kind.parse_params(strategy.params)
            state = kind.load_state(strategy.state)
            base, quote = _assets(order.symbol, strategy.quote)
            ending = order.status in LIVE and status in FINAL
            inserted = False
            if fill is not None:
                fill = replace(fill, fee_quote=fee_value(fill.fee_currency, fill.fee, fill.price, base=base,
                                                         quote=quote))
                inserted = await store.orders.add_fill(tx, order, fill)
                if inserted:
                    self.ctx.holdings_cache.pop(strategy_id, None)  # under the strategy's lock
            if inserted:
                assert fill is not None  # noqa: S101 - inserted implies a fill
                charged = quote_fee(fill.fee_currency, fill.fee, quote=quote)
                await store.orders.add_progress(tx, order.id, amount=fill.amount, cost=fill.cost, fee_quote=charged)
                if fill.side == "buy":
                    spent, received = fill.cost + charged, ZERO
                else:
                    spent, received = ZERO, fill.cost - charged
                futures = None
                if is_contract(order.symbol):
                    # A futures fill puts up or releases margin and realises P&L: booked as the venue does.
                    futures = effect_of_last(await store.orders.fills_for_strategy(strategy.id, tx), quote)
                    spent, received = futures.spent, futures.received
                await store.strategies.add_to_ledger(tx, strategy.id, spent=spent, received=received,
                                                     fees=fill.fee_quote)
                update = kind.on_fill(state, Fill(
                    tag=order.tag, symbol=order.symbol, side=order.side, amount=fill.amount, price=fill.price,
                    closed=ending, fee=fill.fee, fee_currency=fill.fee_currency,
                ), params)
                state = update.state
                if update.profit is not None:
                    await store.orders.set_fill_profit(tx, order.id, fill.trade_key, update.profit)
                if strategy.alerts != "off":
                    chat = await tx.fetchone("SELECT chat_id FROM users WHERE id = ?", (strategy.user_id,))
                    used = strategy.spent + spent - strategy.received - received
                    text = fill_text(
                        strategy, side=fill.side, amount=fill.amount, base=base, price=fill.price, quote=quote,
                        cost=fill.cost, fee=fill.fee, fee_currency=fill.fee_currency, used=used,
                        partial=status != CLOSED, profit=update.profit, futures=futures,
                    )
                    if chat is not None:
                        await store.outbox.enqueue(
                            tx, user_id=strategy.user_id, chat_id=chat["chat_id"], kind="fill", text=text,
                            silent=strategy.alerts == "silent",
                        )
            elif ending:
                state = kind.on_fill(state, Fill(
                    tag=order.tag, symbol=order.symbol, side=order.side, amount=ZERO, price=order.price or ZERO,
                    closed=True,
                ), params).state
            if status != order.status or exchange_order_id != order.exchange_order_id or error:
                await store.orders.set_status(tx, order.id, status, exchange_order_id=exchange_order_id, error=error)
            if inserted or ending:
                await store.strategies.save_state(tx, strategy.id, kind.dump_state(state))
            self.ctx.orders_changed(strategy_id)  # under the strategy's lock, before a run can read
        if inserted:
            crash_point("after_fill")
            self.ctx.wake_notifier()
        if inserted or ending:
            self.on_activity(strategy_id)
        return inserted

    async def _strategy_of(self, order_id: int) -> int:
        row = await self.ctx.store.db.fetchone("SELECT strategy_id FROM orders WHERE id = ?", (order_id,))
        return row["strategy_id"] if row else 0


def _assets(symbol: str, fallback_quote: str) -> tuple[str, str]:
    base, _, rest = symbol.partition("/")
    quote = rest.split(":")[0] if rest else fallback_quote
    return base, quote


def _params(order: Order, venue: str) -> dict[str, object] | None:
    """Venue parameters of an order: a futures strategy's closing order is reduce-only."""
    return {"reduceOnly": True} if venue == "binanceusdm" and order.tag.endswith(":close") else None


def _ms(order: Order) -> int:
    return int(order.created_at.timestamp() * 1000)

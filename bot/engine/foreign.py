"""Trades Strata did not make: a fill on a connected account whose order carries no client order id of ours.

Every order Strata sends is written with its client order id before it is sent (`storage.orders`), so an
execution a venue's stream reports for an order the store does not know was made by someone else: the user by
hand on the website or app, another bot on the same account, or a thief holding the API key (the 2022 leak of a
trading bot's keys was exploited with trades, which no-withdraw keys and budgets do not stop). Venue-neutral: any
stream protocol delivering `bot.exchanges.models.Order` with its trades feeds `seen`.

- Each trade is recorded once, keyed by (account, market, venue trade id): a venue re-delivering it (a
  reconnect's snapshot, a restart) adds nothing and alerts nothing.
- Alerts are coalesced per account: the first new trade opens a window of `window` seconds; at its end every
  trade recorded meanwhile goes out in ONE message (the first `LISTED`, then "and K more"). The alert is queued
  in the same transaction that marks those trades alerted (the outbox pattern), so a trade is alerted once,
  and one recorded while the engine stopped within a window is alerted at the next start (`recover`).
- Trades from before the account was connected, or older than `MAX_AGE` (a snapshot's history), are not news.
- The user turns these alerts off in /settings (`storage.foreign_trades.SETTING`); the trades are still
  recorded, marked alerted without a message, so turning it on later does not replay them.
- Paper accounts have no foreign trades: nobody else trades in Strata's own book, and they are never streamed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from bot.engine.alerts import TradeLine, foreign_trades_text
from bot.engine.context import EngineContext
from bot.exchanges.models import MarketInfo
from bot.exchanges.models import Order as VenueOrder
from bot.exchanges.venues import find
from bot.formatting import amount as fmt_amount
from bot.formatting import money
from bot.formatting import price as fmt_price
from bot.venues import venue_name
from storage.foreign_trades import SETTING, ForeignTrade

logger = logging.getLogger(__name__)

#: How long the first foreign trade of a burst waits for the others before its alert goes out.
WINDOW_SECONDS = 3.0
#: Trades listed one by one in an alert; the rest are counted.
LISTED = 10
#: A trade older than this is history (a snapshot on subscribe), not news: recorded nowhere, alerted never.
MAX_AGE = timedelta(days=7)
#: Alerted trades are remembered this long (longer than `MAX_AGE`, so a re-delivery is always recognised).
KEEP = timedelta(days=30)


class ForeignTrades:
    """Records trades Strata did not make and alerts them, once, coalesced per account."""

    def __init__(self, ctx: EngineContext, *, window: float = WINDOW_SECONDS) -> None:
        self.ctx = ctx
        self.window = window
        self._flushes: dict[int, asyncio.Task] = {}
        self.recorded = 0  # new foreign trades recorded (tests, benchmarks)

    async def seen(self, account_id: int, remote: VenueOrder) -> int:
        """Record the trades of an order that is not ours; return how many were new (0: a re-delivery, or none)."""
        if not remote.trades or not self.ctx.owns(account_id):
            return 0  # a cancel or an order accepted (nothing happened to the funds), or another worker's
        account = await self.ctx.account(account_id)
        known = find(account.venue) if account is not None else None
        if account is None or known is None or known.simulated:
            return 0
        now_ms = _ms(self.ctx.clock())
        not_before = max(_ms(account.created_at), now_ms - _ms_of(MAX_AGE))
        symbol = await self._symbol(account.venue, remote)
        new = 0
        for trade in remote.trades:
            amount, price = trade.amount, trade.price
            if trade.id is None or not amount or price is None:
                continue
            at_ms = trade.timestamp_ms or remote.timestamp_ms or now_ms
            if at_ms < not_before:
                continue
            record = ForeignTrade(
                account_id=account_id, market=symbol, trade_id=str(trade.id), side=trade.side or remote.side or "?",
                amount=amount, price=price, cost=trade.cost if trade.cost else amount * price, at_ms=at_ms,
            )
            if await self.ctx.store.foreign_trades.record(record):
                new += 1
        if new:
            self.recorded += new
            logger.warning("account %s: %d trade(s) Strata did not make", account_id, new)
            self._schedule(account_id, self.window)
        return new

    async def recover(self) -> None:
        """Alert what was recorded but not alerted when the engine last stopped (within a window)."""
        for account_id in await self.ctx.store.foreign_trades.pending_accounts():
            if self.ctx.owns(account_id):  # (another worker's accounts are its to alert)
                self._schedule(account_id, 0.0)

    async def settle(self) -> None:
        """Wait for the alerts of the windows open now (tests)."""
        while self._flushes:
            await asyncio.gather(*list(self._flushes.values()), return_exceptions=True)

    async def close(self) -> None:
        """Stop waiting: trades still pending are alerted at the next start (`recover`)."""
        for task in list(self._flushes.values()):
            task.cancel()
        if self._flushes:
            await asyncio.gather(*self._flushes.values(), return_exceptions=True)
        self._flushes.clear()

    def _schedule(self, account_id: int, delay: float) -> None:
        if account_id in self._flushes:
            return  # a window is open: this trade joins its alert
        task = asyncio.get_running_loop().create_task(self._flush_after(account_id, delay), name="foreign-trades")
        self._flushes[account_id] = task

    async def _flush_after(self, account_id: int, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            # Closed before the flush reads: a trade recorded from now on opens a window of its own.
            self._flushes.pop(account_id, None)
        try:
            await self.flush(account_id)
        except Exception:
            logger.exception("account %s: alerting trades Strata did not make failed", account_id)

    async def flush(self, account_id: int) -> bool:
        """Queue ONE alert with the account's pending trades, marking them alerted in the same transaction."""
        store = self.ctx.store
        account = await store.accounts.get(account_id)
        precisions = await self._precisions(account.venue, account_id) if account is not None else {}
        async with store.db.transaction() as tx:
            trades = await store.foreign_trades.claim(tx, account_id)
            if not trades or account is None:
                return False
            settings = await store.users.settings_of(account.user_id, tx)
            chat_id = await store.users.chat_of(account.user_id, tx)
            if settings is None or chat_id is None or not settings.get(SETTING, 1):
                return False  # alerts off: the trades stay recorded as alerted, never replayed
            text = foreign_trades_text(
                account.label, venue_name(account.venue),
                [_line(t, precisions.get(t.market)) for t in trades[:LISTED]], max(0, len(trades) - LISTED),
            )
            await store.outbox.enqueue(tx, user_id=account.user_id, chat_id=chat_id, kind="error", text=text)
        self.ctx.wake_notifier()
        await store.foreign_trades.prune(_ms(self.ctx.clock()) - _ms_of(KEEP))
        return True

    async def _symbol(self, venue: str, remote: VenueOrder) -> str:
        """The market's unified symbol; a stream may name it only by the venue's id (`BTCUSDT`). Never raises: a
        trade is recorded under the venue's name when the markets cannot be read now."""
        name = remote.symbol or remote.market_id
        if not name:
            return "?"
        try:
            if name in await self.ctx.gateway.symbols(venue):
                return name
            aliases = await self.ctx.gateway.market_aliases(venue)
        except Exception as failure:
            logger.warning("%s: markets not read to name %s (%s)", venue, name, type(failure).__name__)
            return name
        matches = [symbol for alias, symbol in aliases if alias == name.upper()]
        known = find(venue)
        futures = bool(known and known.futures)
        matches.sort(key=lambda symbol: (":" in symbol) != futures)  # a spot and a futures market may share an id
        return matches[0] if matches else name

    async def _precisions(self, venue: str, account_id: int) -> dict[str, MarketInfo]:
        """Steps and ticks of the markets the pending trades are on (none when the venue cannot say now)."""
        markets = {t.market for t in await self.ctx.store.foreign_trades.pending(account_id)}
        found: dict[str, MarketInfo] = {}
        for market in markets:
            with contextlib.suppress(Exception):  # the alert goes out anyway, its figures unrounded
                found[market] = await self.ctx.gateway.market(venue, market)
        return found


def _line(trade: ForeignTrade, market: MarketInfo | None) -> TradeLine:
    base, quote = _assets(trade.market, market)
    step = market.amount_step if market is not None else None
    tick = market.price_tick if market is not None else None
    return TradeLine(
        market=trade.market, side=trade.side, amount=fmt_amount(trade.amount, base, step),
        price=fmt_price(trade.price, quote, tick), value=money(trade.cost, quote),
        at=datetime.fromtimestamp(trade.at_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )


def _assets(symbol: str, market: MarketInfo | None) -> tuple[str, str]:
    if market is not None:
        return market.base, market.quote
    base, _, rest = symbol.partition("/")
    return (base, rest.split(":")[0]) if rest else (symbol, "")


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _ms_of(delta: timedelta) -> int:
    return int(delta.total_seconds() * 1000)


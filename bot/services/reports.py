"""The views traders use — /balance, /trades and /profit — as plain data, without Telegram.

Every figure comes from the one P&L computation (`bot.engine.pnl`) over the strategies' recorded fills, and
account values from the valuation /accounts uses, so these views never disagree with alerts or /status.
Ownership is checked in SQL: a strategy id that is not the caller's gets the same answer as a missing one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from bot.engine.figures import UNKNOWN_PRECISION, Precision
from bot.engine.pnl import AssetPnl, compute, is_contract, realised_by_fill
from bot.exchanges.errors import ExchangeFailure
from bot.exchanges.rate_budget import charged_to
from bot.services.accounts import AccountService, valuation_quote
from bot.services.errors import UserError
from bot.services.positions import PositionView, mark_price, position_of
from bot.services.strategies import _venue_symbol
from bot.strategies.naming import list_title
from storage.models import Account, Strategy
from storage.orders import StrategyFill
from storage.strategies import STOPPED

ZERO = Decimal(0)
HUNDRED = Decimal(100)
TRADES_PER_PAGE = 10
PROFIT_PER_PAGE = 8
MAX_ASSETS_SHOWN = 15  # per account in /balance; the rest is summed on one line
PRICE_TIMEOUT_S = 5.0
PERIODS = ("day", "week", "month")
NO_SUCH_STRATEGY = "No such strategy. See /status for yours."


# --- /balance --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrategyHolding:
    strategy_id: int
    title: str
    amount: Decimal


@dataclass(frozen=True)
class BalanceAsset:
    asset: str
    amount: Decimal  # the wallet's total
    value: Decimal | None  # in the account's quote
    held_by_strategies: tuple[StrategyHolding, ...]

    @property
    def strategies_amount(self) -> Decimal:
        return sum((h.amount for h in self.held_by_strategies), ZERO)

    @property
    def strategies_value(self) -> Decimal | None:
        """The value of what the strategies hold, at the wallet line's price (None when it has no price)."""
        if not self.held_by_strategies:
            return ZERO
        if self.value is None or not self.amount:
            return None
        return self.value * self.strategies_amount / self.amount


@dataclass(frozen=True)
class AccountBalance:
    label: str
    venue_name: str
    quote: str
    available: bool  # False: the balance could not be read now (see `note`)
    assets: tuple[BalanceAsset, ...]  # by value, largest first
    others: int  # assets not listed (beyond MAX_ASSETS_SHOWN)
    others_value: Decimal
    total: Decimal | None  # every valued asset
    unvalued: int  # assets without a price (left out of `total`)
    strategies_total: Decimal  # what strategies hold, valued
    positions: tuple[PositionView, ...]
    note: str | None = None


@dataclass(frozen=True)
class BalanceReport:
    accounts: tuple[AccountBalance, ...]
    totals: Mapping[str, Decimal]  # per quote currency: every account's valued assets
    strategy_totals: Mapping[str, Decimal]


# --- /trades ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TradeLine:
    strategy_id: int
    title: str
    symbol: str
    quote: str
    at: datetime
    side: str  # buy | sell
    futures: bool
    action: str  # spot: bought | sold; futures: open long | close long | open short | close short
    amount: Decimal
    price: Decimal
    fee: Decimal
    fee_currency: str | None
    realised: Decimal | None  # the realised P&L this fill booked (None: it reduced nothing)
    precision: Precision = UNKNOWN_PRECISION  # the market's step and tick, to show the fill as the venue does


@dataclass(frozen=True)
class TradesPage:
    trades: tuple[TradeLine, ...]
    page: int
    pages: int
    total: int
    strategy_id: int | None  # None: every strategy


# --- /profit ---------------------------------------------------------------------------------------------


class _NetAndRoi:
    """Net P&L (realised + unrealised) and ROI on the budget, for a strategy's line and a currency's total."""

    realised: Decimal
    unrealised: Decimal | None
    budget: Decimal

    @property
    def net(self) -> Decimal | None:
        return None if self.unrealised is None else self.realised + self.unrealised

    @property
    def roi(self) -> Decimal | None:
        """Net P&L as a percentage of the budget."""
        return None if self.net is None or not self.budget else self.net / self.budget * HUNDRED


@dataclass(frozen=True)
class StrategyProfit(_NetAndRoi):
    id: int
    title: str
    symbol: str
    quote: str
    status: str
    budget: Decimal
    futures: bool
    fills: int  # in the period
    realised: Decimal  # booked by the period's fills, net of fees
    fees: Decimal  # paid by the period's fills, valued in quote
    unrealised: Decimal | None  # of what is held now, at the last price (None: a price is missing)
    positions: tuple[PositionView, ...]  # futures: the open position, at the price `unrealised` is valued at
    bought: Decimal = ZERO  # the period's buys' value in quote (their cost, fees apart)
    sold: Decimal = ZERO  # the period's sells' value in quote


@dataclass(frozen=True)
class ProfitTotal(_NetAndRoi):
    quote: str
    realised: Decimal
    fees: Decimal
    unrealised: Decimal | None
    budget: Decimal


@dataclass(frozen=True)
class ProfitReport:
    period: str  # all | day | week | month | window (`profit_between`)
    since: datetime | None  # UTC start of the period; None for all time
    strategies: tuple[StrategyProfit, ...]  # this page's
    totals: tuple[ProfitTotal, ...]  # every strategy's, per quote currency
    page: int
    pages: int
    total: int


def period_start(period: str, now: datetime) -> datetime | None:
    """The UTC start of today, this week (Monday) or this month; None for all time."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return midnight
    if period == "week":
        return midnight - timedelta(days=midnight.weekday())
    if period == "month":
        return midnight.replace(day=1)
    return None


def parse_period(text: str | None) -> str:
    if not text:
        return "all"
    word = text.strip().lower()
    aliases = {"today": "day", "daily": "day", "d": "day", "weekly": "week", "w": "week", "monthly": "month",
               "m": "month", "all": "all"}
    word = aliases.get(word, word)
    if word not in (*PERIODS, "all"):
        raise UserError("Usage: /profit [day|week|month] (all time without one).")
    return word


class ReportService:
    def __init__(self, store: Any, accounts: AccountService, gateway: Any, clock) -> None:
        self._store = store
        self._accounts = accounts
        self._gateway = gateway
        self._clock = clock

    # --- /balance -----------------------------------------------------------------------------------

    async def balance(self, user_id: int) -> BalanceReport:
        views = await self._accounts.valued_balances(user_id)
        accounts = {a.id: a for a in await self._store.accounts.list_for_user(user_id)}
        strategies = [s for s in await self._store.strategies.list_for_user(user_id) if s.status != STOPPED]
        fills = await self._store.orders.fills_for_strategies([s.id for s in strategies])
        pnls = {s.id: compute(fills[s.id], s.quote) for s in strategies}
        result = []
        with charged_to(f"user:{user_id}"):
            for view in views:
                own = [s for s in strategies if s.account_id == view.id]
                account = accounts.get(view.id)  # None: disconnected meanwhile
                positions = () if account is None else await self._positions(account, own, pnls)
                result.append(_account_balance(view, own, pnls, positions))
        totals: dict[str, Decimal] = {}
        strategy_totals: dict[str, Decimal] = {}
        for account in result:
            if account.total is not None:
                totals[account.quote] = totals.get(account.quote, ZERO) + account.total
                strategy_totals[account.quote] = strategy_totals.get(account.quote, ZERO) + account.strategies_total
        return BalanceReport(tuple(result), totals, strategy_totals)

    async def _positions(self, account: Account, strategies: list[Strategy], pnls) -> tuple[PositionView, ...]:
        views = []
        for strategy in strategies:
            view = position_of(pnls[strategy.id].assets, strategy.symbol, strategy.quote, None, strategy.id,
                               title=_title(strategy))
            if view is not None:  # a futures strategy holding a position
                views.append(replace(view, mark=await self._price(account, view.asset, strategy.quote, {}),
                                     precision=await self._precision(account, strategy.symbol, {})))
        return tuple(views)

    # --- /trades ------------------------------------------------------------------------------------

    async def trades(self, user_id: int, strategy_id: int | None = None, page: int = 1) -> TradesPage:
        """The user's fills, newest first, a page at a time, each with the realised P&L it booked."""
        if strategy_id is not None and await self._store.strategies.get_owned(user_id, strategy_id) is None:
            raise UserError(NO_SUCH_STRATEGY)
        total = await self._store.orders.count_fills_for_user(user_id, strategy_id=strategy_id)
        pages = max(1, -(-total // TRADES_PER_PAGE))
        page = min(max(1, page), pages)
        rows = await self._store.orders.fills_for_user(
            user_id, strategy_id=strategy_id, limit=TRADES_PER_PAGE, offset=(page - 1) * TRADES_PER_PAGE
        )
        strategies = {s.id: s for s in await self._store.strategies.list_for_user(user_id)}
        ids = sorted({r.fill.strategy_id for r in rows})
        history = await self._store.orders.fills_for_strategies(ids)
        booked = {
            f.item.fill.id: f
            for sid in ids
            for f in realised_by_fill(history[sid], strategies[sid].quote)
        }
        accounts = {a.id: a for a in await self._store.accounts.list_for_user(user_id)}
        lines, cache = [], {}
        for row in rows:
            strategy = strategies[row.fill.strategy_id]
            precision = await self._precision(accounts.get(strategy.account_id), row.symbol, cache)
            lines.append(_trade_line(row, strategy, booked[row.fill.id], precision))
        return TradesPage(tuple(lines), page, pages, total, strategy_id)

    # --- /profit ------------------------------------------------------------------------------------

    async def profit(self, user_id: int, period: str = "all", page: int = 1) -> ProfitReport:
        """P&L net of fees per strategy over the period (its fills' realised P&L), plus unrealised now."""
        since = period_start(period, self._clock())
        return await self.profit_between(user_id, since, None, period=period, page=page)

    async def profit_between(
        self, user_id: int, since: datetime | None, until: datetime | None, *, period: str = "window",
        page: int = 1, per_page: int | None = PROFIT_PER_PAGE, prices: dict | None = None,
    ) -> ProfitReport:
        """/profit over fills at `since` ≤ time < `until` (either open); `per_page=None`: every strategy at once.

        The daily summary's "since the last summary" is this window; its totals are `profit`'s all time. It passes
        one `prices` cache to both, so each market is priced once per summary, not once per report.
        """
        strategies = await self._store.strategies.list_for_user(user_id)
        accounts = {a.id: a for a in await self._store.accounts.list_for_user(user_id)}
        fills = await self._store.orders.fills_for_strategies([s.id for s in strategies])
        prices = {} if prices is None else prices  # (venue, symbol) -> last price, None when unreadable
        rows = []
        with charged_to(f"user:{user_id}"):
            for strategy in strategies:
                row = await self._strategy_profit(strategy, accounts.get(strategy.account_id), fills[strategy.id],
                                                  since, until, prices)
                if row is not None:
                    rows.append(row)
        totals: dict[str, ProfitTotal] = {}
        for row in rows:
            t = totals.get(row.quote) or ProfitTotal(row.quote, ZERO, ZERO, ZERO, ZERO)
            unrealised = None if t.unrealised is None or row.unrealised is None else t.unrealised + row.unrealised
            budget = t.budget + row.budget
            totals[row.quote] = ProfitTotal(row.quote, t.realised + row.realised, t.fees + row.fees, unrealised, budget)
        per_page = per_page or max(1, len(rows))
        pages = max(1, -(-len(rows) // per_page))
        page = min(max(1, page), pages)
        shown = tuple(rows[(page - 1) * per_page: page * per_page])
        return ProfitReport(period, since, shown, tuple(totals.values()), page, pages, len(rows))

    async def _strategy_profit(
        self, strategy: Strategy, account: Account | None, fills: list[StrategyFill], since: datetime | None,
        until: datetime | None, prices: dict,
    ) -> StrategyProfit | None:
        booked = [
            f for f in realised_by_fill(fills, strategy.quote)
            if (since is None or f.item.fill.at >= since) and (until is None or f.item.fill.at < until)
        ]
        pnl = compute(fills, strategy.quote)
        held = [a for a in pnl.assets.values() if a.held != 0]
        if not booked and not held and (since is not None or until is not None or not fills):
            return None  # nothing happened in the period and nothing is held: not part of this view
        unrealised: Decimal | None = ZERO
        positions = []
        for asset in held:
            price = None if account is None else await self._price(account, asset.asset, strategy.quote, prices)
            value = None if price is None else asset.unrealised(price)
            unrealised = None if value is None or unrealised is None else unrealised + value
            view = position_of(pnl.assets, strategy.symbol, strategy.quote, price, strategy.id)  # None: spot
            if asset.contract and view is not None:
                positions.append(replace(view, precision=await self._precision(account, strategy.symbol, {})))
        return StrategyProfit(
            id=strategy.id, title=_title(strategy), symbol=strategy.symbol, quote=strategy.quote,
            status=strategy.status, budget=strategy.budget, futures=is_contract(strategy.symbol), fills=len(booked),
            realised=sum((f.realised for f in booked), ZERO), fees=sum((f.item.fee_quote for f in booked), ZERO),
            bought=sum((f.item.fill.cost for f in booked if f.item.fill.side == "buy"), ZERO),
            sold=sum((f.item.fill.cost for f in booked if f.item.fill.side == "sell"), ZERO),
            unrealised=unrealised,
            positions=tuple(positions),
        )

    async def _precision(self, account: Account | None, symbol: str, cache: dict) -> Precision:
        """A market's step and tick (the markets are loaded: a lookup); unknown when they cannot be read now."""
        if account is None:
            return UNKNOWN_PRECISION
        key = (account.venue, symbol)
        if key not in cache:
            try:
                info = await self._gateway.market(account.venue, symbol)
                cache[key] = Precision(info.amount_step, info.price_tick)
            except ExchangeFailure:
                cache[key] = UNKNOWN_PRECISION
        return cache[key]

    async def _price(self, account: Account, asset: str, quote: str, cache: dict) -> Decimal | None:
        """The last price of `asset` in `quote` on the account's venue (None when it cannot be read now); a futures
        position's, the venue's mark price, as /status values it (`services/positions.py`)."""
        symbol = _venue_symbol(account.venue, f"{asset}/{quote}")
        key = (account.venue, symbol)
        if key not in cache:
            try:
                if is_contract(symbol):
                    cache[key] = await asyncio.wait_for(mark_price(self._gateway, account.venue, symbol),
                                                        PRICE_TIMEOUT_S)
                else:
                    ticker = await asyncio.wait_for(self._gateway.fetch_ticker(account.venue, symbol),
                                                    PRICE_TIMEOUT_S)
                    cache[key] = ticker.last
            except (ExchangeFailure, TimeoutError):
                cache[key] = None
        return cache[key]


def _title(strategy: Strategy) -> str:
    """How lists call a strategy, as /status does: `#1 DCA BTC/USDT “name”` (`naming.list_label`)."""
    return list_title(strategy)


def _account_balance(view, strategies: list[Strategy], pnls, positions) -> AccountBalance:
    quote = valuation_quote(view.venue)
    if view.balances is None:
        return AccountBalance(view.label, view.venue_name, quote, False, (), 0, ZERO, None, 0, ZERO, positions,
                              view.note or "balance unavailable right now")
    assets = []
    for item in view.balances:
        holdings = tuple(
            StrategyHolding(s.id, _title(s), a.held)
            for s in strategies
            for a in (_spot_asset(pnls[s.id], item.asset),)
            if a is not None
        )
        assets.append(BalanceAsset(item.asset, item.amount, item.value, holdings))
    shown, rest = assets[:MAX_ASSETS_SHOWN], assets[MAX_ASSETS_SHOWN:]
    valued = [a.value for a in assets if a.value is not None]
    strategies_total = sum((a.strategies_value or ZERO for a in assets), ZERO)
    strategies_total += sum((p.equity or ZERO for p in positions), ZERO)
    return AccountBalance(
        label=view.label, venue_name=view.venue_name, quote=quote, available=True, assets=tuple(shown),
        others=len(rest), others_value=sum((a.value or ZERO for a in rest), ZERO),
        total=sum(valued, ZERO), unvalued=len(assets) - len(valued), strategies_total=strategies_total,
        positions=positions, note=view.note,
    )


def _spot_asset(pnl, asset: str) -> AssetPnl | None:
    found = pnl.assets.get(asset)
    return found if found is not None and not found.contract and found.held > 0 else None


def _trade_line(row: StrategyFill, strategy: Strategy, booked, precision: Precision) -> TradeLine:
    fill = row.fill
    futures = is_contract(row.symbol)
    if futures:
        # A buy that reduces a position closes a short; otherwise it opens (or adds to) a long; and vice versa.
        long_side = (fill.side == "buy") != booked.reduced
        action = f"{'close' if booked.reduced else 'open'} {'long' if long_side else 'short'}"
    else:
        action = "bought" if fill.side == "buy" else "sold"
    return TradeLine(
        strategy_id=strategy.id, title=_title(strategy), symbol=row.symbol, quote=strategy.quote, at=fill.at,
        side=fill.side, futures=futures, action=action, amount=fill.amount, price=fill.price, fee=fill.fee,
        fee_currency=fill.fee_currency, realised=booked.realised if booked.reduced else None, precision=precision,
    )


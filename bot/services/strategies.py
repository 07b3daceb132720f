"""Strategy use-cases, transport-agnostic: allocate (validate → preview → confirm), describe, status, pause,
resume, panic, stop, and stopping an account's strategies before /disconnect.

Every method takes the caller's Telegram user id and checks ownership in SQL; a strategy id that is not the
caller's gets the same answer as one that does not exist. Results are frozen dataclasses holding everything a
front end prints; every refusal is a `UserError` whose message is fit to show as it is.
"""

from __future__ import annotations

import difflib
import logging
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

from bot.control import EngineControl
from bot.engine.alerts import finished_reason
from bot.engine.figures import Figures, Precision, figures_of
from bot.engine.pnl import compute, is_contract
from bot.engine.risk import Ledger, MarketRules, Refused, allocation_headroom, check_order, smallest_buy_cost
from bot.engine.scheduler import Cancellation
from bot.exchanges.errors import ExchangeFailure
from bot.exchanges.rate_budget import charged_to
from bot.exchanges.venues import adapter
from bot.exchanges.venues.paper import MARK as PAPER_MARK
from bot.formatting import money
from bot.formatting import price as price_text
from bot.services.audit import Attempt, AuditLog
from bot.services.errors import UserError
from bot.services.positions import PositionView, mark_price, position_of
from bot.strategies import STRATEGIES, get_strategy
from bot.strategies.base import Budget, DesiredOrder, MarketInfo, amount_for_cost, floor_to
from bot.strategies.grid import GridPlan, per_level_for, plan_grid, prices_of
from bot.strategies.naming import clean_name, list_title, title
from bot.strategies.params import ParamError, format_value, parse_budget, shown
from bot.venues import FUTURES_LEVERAGE, is_paper, venue_name
from storage.accounts import KEY_UNSAFE
from storage.models import Account, Strategy
from storage.strategies import ACTIVE, FINISHED, HOLDING, PANIC, PAUSED, STOPPED, USER

logger = logging.getLogger(__name__)

ZERO = Decimal(0)
CENT = Decimal("0.01")
STATUS_PER_PAGE = 5  # five strategies' figures fit a Telegram message with room to spare
MAX_SYMBOL_TEXT = 40  # the longest ccxt symbol we trade is ~20 characters (`1000SATS/USDT:USDT`)
#: Why a strategy was stopped by /disconnect: a retried /disconnect still sends the summaries of those it stopped.
STOPPED_BY_DISCONNECT = "stopped by /disconnect"
EXAMPLES = {
    "dca": "/allocate binance dca 100 BTC/USDT every=1d amount=10",
    "grid": "/allocate kraken grid 500 BTC/USD low=26000 high=30000 levels=5",
    "rebalance": "/allocate binance rebalance 500 USDT weights=BTC:50,ETH:50 band=5 every=1h",
    "trend": "/allocate binanceusdm trend 200 BTC/USDT timeframe=1h fast=9 slow=21",
}


@dataclass(frozen=True)
class ParamDescription:
    name: str
    description: str
    default: str  # as typed, or "required"
    required: bool = False


@dataclass(frozen=True)
class StrategyDescription:
    name: str  # command name: dca, grid, rebalance, trend
    title: str  # "DCA"
    description: str
    params: tuple[ParamDescription, ...]
    example: str


@dataclass(frozen=True)
class AllocationPreview:
    """A validated allocation, not yet created: show it with a "Confirm…" button, then pass it to `confirm`."""

    token: str
    user_id: int
    account_id: int
    account_label: str
    venue: str
    venue_name: str
    kind: str
    title: str
    symbol: str
    quote: str
    budget: Decimal
    params: Mapping[str, str]  # canonical text, defaults filled in
    free_quote: Decimal
    available: Decimal  # free quote minus the account's other unspent budgets
    name: str | None = None  # the user's optional name (name=…), already cleaned
    leverage: int | None = None  # futures: the leverage its positions run at (1x); None on spot
    grid: GridSummary | None = None  # a grid: how it starts (orders, start purchase, profit per grid)


@dataclass(frozen=True)
class GridSummary:
    """How a grid would start now, for the allocation summary: its plan at today's price and the market's steps."""

    plan: GridPlan
    base: str
    quote: str
    price: Decimal  # the price now (the plan starts at the range's nearest edge when it is outside)
    in_range: bool
    fee_rate: Decimal  # per leg, as the risk gate reserves it
    price_tick: Decimal | None
    amount_step: Decimal | None
    buys_at: tuple[Decimal, ...] = ()  # each buy's limit price as the risk gate places it (down to the tick)
    sells_at: tuple[Decimal, ...] = ()  # each start sell's limit price (up to the tick)


@dataclass(frozen=True)
class Allocated:
    strategy_id: int
    preview: AllocationPreview


@dataclass(frozen=True)
class StrategyStatus:
    id: int
    kind: str
    title: str
    symbol: str
    account_label: str
    venue_name: str
    status: str  # active | paused | finished | stopped
    pause_reason: str | None
    note: str | None  # the strategy's own last word ("waiting: next buy at …")
    budget: Decimal
    quote: str
    used: Decimal  # net spent: buys + fees − sale proceeds (futures: margin at 1x − realised P&L net of fees)
    invested: Decimal  # quote paid for buys, quote fees included
    returned: Decimal  # quote received from sells, quote fees deducted
    reserved: Decimal  # held by open orders
    left: Decimal
    open_orders: int
    holdings: Mapping[str, Decimal]  # futures: the signed position (short < 0)
    average_entry: Decimal | None  # spot: average cost of what is still held, fees included
    futures: bool
    entry_price: Decimal | None  # futures: the open position's average entry, as the venue shows it
    realised_pnl: Decimal
    unrealised_pnl: Decimal | None
    fees: Decimal
    next_run: datetime | None
    fill_poll_seconds: float
    #: Base amounts held but too small to sell yet (below the venue's step or minimum), per asset.
    dust: Mapping[str, Decimal] = field(default_factory=dict)
    name: str | None = None  # the user's optional name for it
    label: str = ""  # how lists call it: "#1 DCA BTC/USDT", "#3 Rebalance BTC 50 / ETH 50 “core”" (naming.py)
    params: Mapping[str, str] = field(default_factory=dict)  # canonical text, for /status <id>
    figures: Figures | None = None  # every figure above, as `bot.engine.figures` words them
    position: PositionView | None = None  # futures: the open position, valued at the venue's mark price
    fills: str | None = None  # running: how its fills reach the bot, "streamed" or "polled" (Paper: None)
    fill_sweep_seconds: float | None = None  # a streamed account's safety poll: every this many seconds


@dataclass(frozen=True)
class StatusPage:
    """One page of `/status`: a few strategies, so a reply never outgrows one chat message."""

    statuses: tuple[StrategyStatus, ...]
    page: int  # 1-based
    pages: int
    total: int
    fill_poll_seconds: float


@dataclass(frozen=True)
class ControlResult:
    strategy_id: int
    title: str
    status: str
    canceled: int = 0  # /pause: resting orders cancelled on the exchange (/resume places them again)
    filled: int = 0  # orders that had filled completely before the cancel
    unconfirmed: int = 0  # orders whose fate is not known yet: resolved in the background, alerted once
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class PanicResult:
    paused: int
    canceled: int
    errors: tuple[str, ...] = ()
    filled: int = 0
    unconfirmed: int = 0
    paper: int = 0  # of the strategies paused, those trading on a Paper account (simulated money)
    sell: bool = False  # "Pause, cancel and sell": every strategy was then stopped, what it bought sold
    sales: tuple[StopSummary, ...] = ()  # with `sell`: each strategy's stop summary (sold, at what, dust)


@dataclass(frozen=True)
class EditPreview:
    """A checked change of a running or paused strategy (/edit), not yet made: show it with Confirm/Cancel."""

    token: str
    user_id: int
    strategy_id: int
    label: str
    quote: str
    budget: Decimal  # now
    new_budget: Decimal | None  # None: unchanged
    name: str | None  # now
    new_name: str | None  # None: unchanged
    used: Decimal
    reserved: Decimal
    minimum: Decimal  # the smallest budget it may have: used plus reserved (never below zero), up to the cent
    maximum: Decimal | None  # the largest the account allows now, down to the cent (None: the budget is not raised)
    per_level: Decimal | None = None  # a started grid: its ladder's new quote per level

    def to_json(self) -> dict[str, Any]:
        """For a command to the worker that makes the change (amounts as exact strings)."""
        return {k: str(v) if isinstance(v, Decimal) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EditPreview:
        return cls(**{k: Decimal(v) if k in _EDIT_AMOUNTS and v is not None else v for k, v in data.items()})


_EDIT_AMOUNTS = frozenset({"budget", "new_budget", "used", "reserved", "minimum", "maximum", "per_level"})


@dataclass(frozen=True)
class Edited:
    strategy_id: int
    preview: EditPreview


@dataclass(frozen=True)
class ResumeAllResult:
    """"Resume all" after /panic: the strategies resumed, and the paused ones left paused with why."""

    resumed: tuple[str, ...]  # list labels
    skipped: tuple[tuple[str, str], ...] = ()  # (list label, why it stays paused)


@dataclass(frozen=True)
class StopSummary:
    strategy_id: int
    title: str
    quote: str
    canceled: int
    sold: Mapping[str, Decimal]  # asset → amount sold at market by the stop (negative: bought back)
    kept: Mapping[str, Decimal]  # asset → amount left held (futures: signed position left open)
    invested: Decimal  # spot: buys with fees; futures: margin put up at 1x with fees (not shown)
    returned: Decimal  # spot: sales less fees; futures: margin released plus P&L (not shown)
    fees: Decimal
    realised_pnl: Decimal
    errors: tuple[str, ...] = field(default_factory=tuple)
    futures: bool = False  # `sold` is then the position closed: negative for a short bought back
    unconfirmed: int = 0  # orders whose fate is not known yet: resolved in the background, alerted once
    figures: Figures | None = None  # the strategy's figures once stopped (`bot.engine.figures`)
    sold_at: Mapping[str, Decimal] = field(default_factory=dict)  # asset → average price of the sale's fills
    dust: Mapping[str, Decimal] = field(default_factory=dict)  # asset → left held, below the market's minimum


@dataclass
class _Sale:
    """What selling a stopped strategy's holdings did (`bot.control.Stopped`, as the summary reads it)."""

    sold: dict[str, Decimal] = field(default_factory=dict)
    sold_at: dict[str, Decimal] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)  # sold by an order placed but not filled (or confirmed) yet
    dust: dict[str, Decimal] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _sale_of(stopped: Any) -> _Sale:
    return _Sale(sold=dict(stopped.sold), sold_at=dict(stopped.sold_at), pending=set(stopped.pending),
                 dust=dict(stopped.dust), errors=list(stopped.errors))


class StrategyService:
    """The strategy use-cases over the store and the engine."""

    def __init__(self, store: Any, control: EngineControl, *, max_strategies: int = 50) -> None:
        self._store = store
        self._control = control
        self._confirmed: set[str] = set()
        self.max_strategies = max_strategies
        self._audit = AuditLog(store)

    @property
    def _gateway(self) -> Any:
        return self._control.gateway

    # --- catalogue ------------------------------------------------------------------------------------

    def strategies_catalogue(self) -> list[StrategyDescription]:
        """Every strategy with its plain description, parameters and defaults (for /strategies)."""
        return [
            StrategyDescription(
                name=s.name, title=s.title, description=s.description,
                params=tuple(ParamDescription(p.name, p.description, p.describe_default(), p.required)
                             for p in s.param_specs),
                example=EXAMPLES.get(s.name, ""),
            )
            for s in STRATEGIES.values()
        ]

    # --- allocation -----------------------------------------------------------------------------------

    async def allocate(
        self,
        user_id: int,
        account_label: str,
        kind: str,
        budget: Decimal | str,
        symbol: str,
        params: Mapping[str, str] | None = None,
    ) -> AllocationPreview:
        """Validate an allocation and return its preview; nothing is created until `confirm`.

        A refusal that one answer can fix names that step (`UserError.step`): the market, the budget or the
        parameters. Audited (allocate: the summary shown, or why it was refused; nothing is created yet).
        """
        async with self._audit.attempt(
            "allocate", actor_id=user_id, user_id=user_id, target="a new strategy"
        ) as attempt:
            return await self._allocate(attempt, user_id, account_label, kind, budget, symbol, params)

    async def _allocate(
        self, attempt: Attempt, user_id: int, account_label: str, kind: str, budget: Decimal | str, symbol: str,
        params: Mapping[str, str] | None,
    ) -> AllocationPreview:
        account = await self._usable_account(user_id, account_label)
        attempt.target = f"a new strategy on account {account.label}"
        await self._check_strategy_limit(user_id)
        strategy = _strategy(kind)
        attempt.target = f"a new {strategy.title} on account {account.label}"
        self.check_venue(strategy.name, account.venue)
        with _fixed_at("budget"):
            amount = _budget(budget)
        with _fixed_at("params"):
            params = dict(params or {})
            name = _name(params.pop("name", None))
            try:
                parsed = strategy.parse_params(params)
            except ParamError as exc:
                raise UserError(exc.message) from None
        with _fixed_at("symbol"):
            market_symbol, quote = await self._resolve_market(account, strategy.name, symbol)
        attempt.target = f"a new {strategy.title} {market_symbol} on account {account.label}"
        with _fixed_at("params"):
            if strategy.name == "rebalance":
                await self._check_markets(account, strategy.name, market_symbol, parsed)
            try:
                strategy.check_allocation(market_symbol, amount, parsed)
            except ParamError as exc:
                raise UserError(exc.message) from None
            if strategy.name == "dca":
                await self._check_dca_amount(account, market_symbol, amount, parsed)
            grid = None
            if strategy.name == "grid":
                grid = await self._check_grid_levels(account, market_symbol, amount, parsed)
        with _fixed_at("symbol"):
            await self._check_market_free(account, market_symbol)

        with _fixed_at("budget"):
            free, available = await self._check_headroom(account, quote, amount)
        creds = await self._control.credentials(account)
        if adapter(account.venue).futures:
            try:
                hedged = await self._gateway.fetch_position_mode(account.venue, creds)
            except ExchangeFailure as failure:
                raise UserError(f"Could not read your futures settings: {failure.user_message}") from None
            if hedged:
                raise UserError(
                    "Your Binance Futures account is in hedge (dual-side) position mode. Strata trades in "
                    "one-way mode only: switch it in Binance Futures → Preferences → Position Mode, then try again.",
                    reason="the futures account is in hedge mode",
                )
        await attempt.done(detail=f"budget {money(amount, quote)}; summary shown, awaiting Confirm")
        return AllocationPreview(
            token=secrets.token_hex(8), user_id=user_id, account_id=account.id, account_label=account.label,
            venue=account.venue, venue_name=venue_name(account.venue), kind=strategy.name, title=strategy.title,
            symbol=market_symbol, quote=quote, budget=amount, params=strategy.dump_params(parsed),
            free_quote=free, available=available, name=name,
            leverage=FUTURES_LEVERAGE if adapter(account.venue).futures else None, grid=grid,
        )

    async def resolve_market(self, venue: str, text: str) -> str:
        """The market `text` means on `venue`, as users write it (`BTC/USDT`), or a `UserError` naming the closest.

        `BTC/USDT`, `btc-usdt`, `BTC_USDT`, `btc usdt` split at the separator; a concatenated `BTCUSDT` is looked up
        in the venue's loaded markets (base and quote joined), never split by guessing where the quote starts.
        Futures markets are listed as `BTC/USDT:USDT` by ccxt and written without the settle suffix.
        """
        typed = text.strip().upper()
        if not 0 < len(typed) <= MAX_SYMBOL_TEXT:
            raise UserError(f"'{shown(typed)}' is not a market: write it like BTC/USDT.")
        futures = adapter(venue).futures
        try:
            listed = await self._gateway.symbols(venue)
            aliases = await self._gateway.market_aliases(venue)
        except ExchangeFailure as failure:
            raise UserError(f"Could not reach {venue_name(venue)}: {failure.user_message}") from None
        markets = market_names(listed, futures=futures)
        own_names: dict[str, str] = {}
        for alias, symbol in aliases:  # only this account's kind of market: spot, or USD-M futures
            if (":" in symbol) == futures:
                own_names.setdefault(alias, symbol.split(":")[0])
        return pick_market(typed, markets, venue_name(venue), own_names)

    def check_venue(self, kind: str, venue: str) -> None:
        """Refuse a strategy the venue cannot run, saying why (the guided flow asks as soon as it is picked)."""
        reason = adapter(venue).unsupported.get(kind)  # what a venue cannot run, checked before any summary
        if reason is not None:
            raise UserError(reason)

    # The guided /allocate checks each answer when it is given, with the same checks `allocate` makes.

    async def check_market(self, user_id: int, account_label: str, kind: str, symbol: str) -> tuple[str, str]:
        """The market step: the market as the venue names it (rebalance: the quote asset) and its quote."""
        account = await self._usable_account(user_id, account_label)
        strategy = _strategy(kind)
        self.check_venue(strategy.name, account.venue)
        with _fixed_at("symbol"):
            market_symbol, quote = await self._resolve_market(account, strategy.name, symbol)
            await self._check_market_free(account, market_symbol)
        return market_symbol, quote

    async def check_budget(self, user_id: int, account_label: str, quote: str, budget: str) -> Decimal:
        """The budget step: a bounded number above zero that fits the account's allocation ceiling."""
        account = await self._usable_account(user_id, account_label)
        with _fixed_at("budget"):
            amount = _budget(budget)
            await self._check_headroom(account, quote, amount)
        return amount

    def check_params(self, kind: str, params: Mapping[str, str]) -> None:
        """The parameters step, on its own: names known, values parsed, required ones given (and name= fits)."""
        with _fixed_at("params"):
            params = dict(params)
            _name(params.pop("name", None))
            try:
                _strategy(kind).parse_params(params)
            except ParamError as exc:
                raise UserError(exc.message) from None

    async def _usable_account(self, user_id: int, account_label: str) -> Account:
        account = await self._store.accounts.by_label(user_id, account_label.strip())
        if account is None:
            labels = sorted(await self._store.accounts.labels_for_user(user_id))
            known = ", ".join(labels) if labels else "none yet: connect one with /connect"
            raise UserError(
                f"You have no account labelled '{shown(account_label)}'. Your accounts: {known}.",
                reason="no such account",
            )
        if account.status != "active":
            raise UserError(
                f"The API key of {account.label} cannot be used (see /accounts): give it a new key with "
                f"/connect replace {account.label}.",
                reason="the account's key does not work",
            )
        return account

    async def _resolve_market(self, account: Account, kind: str, symbol: str) -> tuple[str, str]:
        """The typed market as the venue names it (rebalance: the quote asset) and its quote; refuse an unknown one."""
        symbol = symbol.strip().upper()
        if not 0 < len(symbol) <= MAX_SYMBOL_TEXT:
            raise UserError(f"'{shown(symbol)}' is not a market: write it like BTC/USDT.")
        if kind == "rebalance":
            return symbol, await self._check_markets(account, kind, symbol, {"weights": {}})
        symbol = await self.resolve_market(account.venue, symbol)  # BTCUSDT, btc-usdt… → BTC/USDT
        quote = await self._check_markets(account, kind, symbol, {})
        return _venue_symbol(account.venue, symbol), quote

    async def confirm(self, preview: AllocationPreview) -> Allocated:
        """Create and schedule the allocation of a preview (once: a second confirm is refused). Audited (confirm)."""
        async with self._audit.attempt(
            "confirm", actor_id=preview.user_id, user_id=preview.user_id,
            target=f"a new {preview.title} {preview.symbol} on account {preview.account_label}",
        ) as attempt:
            return await self._confirm(attempt, preview)

    async def _confirm(self, attempt: Attempt, preview: AllocationPreview) -> Allocated:
        if preview.token in self._confirmed:
            raise UserError("This allocation was already confirmed: see /status.", reason="already confirmed")
        account = await self._store.accounts.get_owned(preview.user_id, preview.account_id)
        if account is None or account.status != "active":
            raise UserError(
                "That account is not (or no longer) usable: see /accounts.", reason="the account is not usable"
            )
        # Balances and other allocations may have changed since the preview (another Confirm, a deposit
        # spent…): the ceiling is checked again now, so two previews cannot promise the same money twice.
        await self._check_strategy_limit(preview.user_id)
        with _fixed_at("symbol"):
            await self._check_market_free(account, preview.symbol)
        with _fixed_at("budget"):
            await self._check_headroom(account, preview.quote, preview.budget)
        if len(self._confirmed) > 10_000:  # tokens are random and single-use; an old one is never shown again
            self._confirmed.clear()
        strategy = STRATEGIES[preview.kind]
        params = strategy.parse_params(dict(preview.params))
        now = self._control.clock()
        state = strategy.dump_state(strategy.initial_state(params, now))
        self._confirmed.add(preview.token)
        async with self._store.db.transaction() as tx:
            strategy_id = await self._store.strategies.create(
                tx, user_id=preview.user_id, account_id=account.id, kind=preview.kind, symbol=preview.symbol,
                quote=preview.quote, budget=preview.budget, params=dict(preview.params), state=state, next_run=now,
                name=preview.name,
            )
            attempt.target = f"strategy #{strategy_id} {preview.title} {preview.symbol}"
            await attempt.done(
                detail=f"budget {money(preview.budget, preview.quote)} on account {preview.account_label}", tx=tx
            )
        logger.info("user %s allocated %s strategy %s", preview.user_id, preview.kind, strategy_id)
        await self._control.run_soon(strategy_id)
        return Allocated(strategy_id=strategy_id, preview=preview)

    async def _check_strategy_limit(self, user_id: int) -> None:
        """Refuse a strategy beyond STRATA_MAX_STRATEGIES_PER_USER (active or paused ones count)."""
        if len(await self._store.strategies.list_for_user(user_id, HOLDING)) >= self.max_strategies:
            raise UserError(
                f"You already have {self.max_strategies} strategies running or paused, the most this bot allows. "
                "/stop one first.",
                reason="strategy limit reached",
            )

    async def _check_market_free(self, account: Account, symbol: str) -> None:
        """Refuse a second futures strategy on one market of one account (active or paused ones count, and a
        finished one still holding its position: a DCA that used its budget keeps its long until /stop).

        Binance Futures in one-way mode keeps one position per market and account: two strategies on it would net
        each other's positions (a long and a short leave the venue flat), so the venue would book P&L neither
        strategy shows, and one's reduce-only close could be refused for the other's position.
        """
        if not adapter(account.venue).futures:
            return
        for other in await self._store.strategies.list_for_account(account.id, (*HOLDING, FINISHED)):
            if other.symbol == symbol and (other.status != FINISHED or await self._holds_position(other)):
                raise UserError(
                    f"{_title(other)} already trades {symbol.split(':')[0]} on {account.label}. Binance Futures "
                    f"keeps one position per market and account, so two strategies would net each other's "
                    f"positions: /stop {other.id} first, or choose another market."
                )

    async def _holds_position(self, strategy: Strategy) -> bool:
        pnl = compute(await self._store.orders.fills_for_strategy(strategy.id), strategy.quote)
        return any(a.contract and a.held != 0 for a in pnl.assets.values())

    async def _check_headroom(self, account: Account, quote: str, amount: Decimal) -> tuple[Decimal, Decimal]:
        """Free quote and what may still be allocated (free minus the other budgets' unspent part); refuse more."""
        creds = await self._control.credentials(account)
        try:
            balance = await self._gateway.fetch_balance(account.venue, creds)
        except ExchangeFailure as failure:
            raise UserError(f"Could not read your balance: {failure.user_message}") from None
        free = balance[quote].free if quote in balance else ZERO
        others = []
        for other in await self._store.strategies.list_for_account(account.id, HOLDING):
            if other.quote != quote:
                continue
            reserved = await self._store.orders.reserved_for(other.id)
            others.append(Ledger(other.budget, other.spent - other.received, reserved))
        available = allocation_headroom(free, others)
        if amount > available:
            committed = free - available
            most = floor_to(available, CENT) if available >= 1 else available  # typed back: never above it
            raise UserError(
                f"The budget {money(amount, quote)} is more than you can allocate on {_account_name(account)}: "
                f"free {money(free, quote)}"
                + (f", of which {money(committed, quote)} is promised to your other strategies" if committed else "")
                + f". You can allocate at most {_q(most)} {quote}."
            )
        return free, available

    async def _check_markets(self, account: Account, kind: str, symbol: str, params: Mapping[str, Any]) -> str:
        """Check the symbol (or rebalance's markets) exist on the venue; return the quote currency."""
        if kind == "rebalance":
            quote = symbol
            if "/" in quote:
                raise UserError(f"Rebalance takes the quote asset (e.g. USDT), not a market like {symbol}.")
            for asset in params["weights"]:
                if asset != quote:
                    await self._market(account, f"{asset}/{quote}")
            return quote
        if "/" not in symbol:
            raise UserError(f"'{shown(symbol)}' is not a market: write it like BTC/USDT.")
        info = await self._market(account, _venue_symbol(account.venue, symbol))
        return info.quote

    async def _market(self, account: Account, symbol: str) -> Any:
        try:
            return await self._gateway.market(account.venue, symbol)
        except ExchangeFailure as failure:
            if failure.action.value == "invalid_order":
                raise UserError(f"{symbol.split(':')[0]} is not traded on {venue_name(account.venue)}.") from None
            raise UserError(f"Could not reach {venue_name(account.venue)}: {failure.user_message}") from None

    async def _check_dca_amount(self, account: Account, symbol: str, budget: Decimal, params: Any) -> None:
        per_buy = params.get("amount") or budget / 10
        info = await self._market(account, symbol)
        try:
            ticker = await self._gateway.fetch_ticker(account.venue, symbol)
        except ExchangeFailure as failure:
            raise UserError(f"Could not read the price of {symbol}: {failure.user_message}") from None
        minimum = info.min_cost or ZERO
        if ticker.last is not None:
            if info.min_amount is not None:
                minimum = max(minimum, info.min_amount * ticker.last)
        which = "amount" if params.get("amount") else "amount (budget/10 by default)"
        if per_buy < minimum:
            raise UserError(
                f"The {which} per buy, {money(per_buy, info.quote)}, is below {symbol}'s minimum order of "
                f"{money(minimum, info.quote)}. Use amount= at least {_q(_round_up_for_display(minimum))}."
            )
        if ticker.last is None or ticker.last <= 0:
            return
        # The exchange buys whole steps of the asset: the amount a buy gets, rounded down, must still meet the
        # minimums at today's price — as the engine's risk gate will check before every buy.
        rules = MarketRules.from_info(info)
        verdict = check_order(
            DesiredOrder(symbol, "buy", "market", "dca:check", cost=per_buy), rules, last_price=ticker.last,
            ledger=Ledger(budget=per_buy * 2), free_quote=None,
        )
        if isinstance(verdict, Refused) and verdict.kind == "minimum":
            smallest = _round_up_for_display(smallest_buy_cost(rules, ticker.last))
            raise UserError(
                f"The {which} per buy, {money(per_buy, info.quote)}, buys less than {symbol}'s minimum order at "
                f"today's price ({price_text(ticker.last, info.quote, info.price_tick)}) once rounded to the "
                "exchange's amount step. The smallest "
                f"amount that works now is {_q(smallest)} {info.quote}: use amount= at least that."
            )

    async def _check_grid_levels(
        self, account: Account, symbol: str, budget: Decimal, params: Any
    ) -> GridSummary | None:
        """Refuse a grid whose orders would fall below the market minimum, naming the smallest budget that works;
        else return how it starts, for the summary.

        The grid splits its budget over its buys below the price and the start purchase of the coins its sells
        above the price need (`plan_grid`); a price outside the range is planned at the range's nearest edge,
        where it starts. Every level's buy and every start sell must pass the risk gate's minimums after
        rounding, or it would never be placed.
        """
        info = await self._market(account, symbol)
        try:
            ticker = await self._gateway.fetch_ticker(account.venue, symbol)
        except ExchangeFailure as failure:
            raise UserError(f"Could not read the price of {symbol}: {failure.user_message}") from None
        if ticker.last is None or ticker.last <= 0:
            return None  # no price to check against; the grid waits and says so
        rules = MarketRules.from_info(info)
        check = _GridCheck(rules, info, symbol, ticker.last, params)
        levels = params["levels"]
        per_level = check.per_level_if_short(budget, levels)
        if per_level is not None:
            smallest = check.smallest_budget(budget, levels)
            fewer = next((n for n in range(levels - 1, 1, -1) if check.per_level_if_short(budget, n) is None), None)
            shown = floor_to(per_level, Decimal("0.01")) if per_level >= 1 else per_level
            raise UserError(
                f"{money(budget, info.quote)} over levels={levels} ({levels - 1} grids) is {money(shown, info.quote)} "
                f"per grid, below {symbol.split(':')[0]}'s minimum order at those prices. The minimum budget is "
                f"{_q(smallest)} {info.quote}"
                + (f"; or use levels={fewer}" + (" or fewer" if fewer > 2 else "") if fewer is not None else "")
                + "."
            )
        plan = check.plan(budget, levels)
        return GridSummary(
            plan=plan, base=info.base, quote=info.quote, price=ticker.last,
            in_range=params["low"] <= ticker.last <= params["high"], fee_rate=rules.fee_rate,
            price_tick=info.price_tick, amount_step=info.amount_step,
            buys_at=tuple(rules.price_round(plan.prices[i], "buy") for i in plan.buys),
            sells_at=tuple(rules.price_round(plan.prices[i + 1], "sell") for i in plan.sells),
        )

    # --- edit ---------------------------------------------------------------------------------------------

    async def edit(self, user_id: int, strategy_id: int, changes: Mapping[str, str]) -> EditPreview:
        """Check a change of a running or paused strategy's budget and/or name; nothing changes until `confirm_edit`.

        The budget keeps /allocate's rules: never below what the strategy has used plus what its open orders
        reserve; raised, at most what the account's free balance leaves after the other budgets' claims; and the
        strategy's own minimums (a DCA's per-buy amount, a grid's per-level buy) still met by the new figure.
        """
        unknown = sorted(set(changes) - {"budget", "name"})
        if unknown or not changes:
            raise UserError(
                (f"I cannot change {shown(', '.join(unknown))}. " if unknown else "")
                + "Usage: /edit <strategy number> budget=<amount> [name=<text>], e.g. /edit 3 budget=150."
            )
        strategy = await self._owned(user_id, strategy_id)
        if strategy.status not in HOLDING:
            raise UserError(
                f"{_title(strategy)} is {strategy.status}: only a running or paused strategy can be edited."
            )
        new_name = _name(changes["name"]) if "name" in changes else None
        new_budget = _budget(changes["budget"]) if "budget" in changes else None
        return await self._checked_edit(strategy, new_budget, new_name, token=secrets.token_hex(8))

    async def confirm_edit(self, preview: EditPreview) -> Edited:
        """Make a previewed change, checked again under the strategy's lock (its engine decisions wait), so the
        next decision uses the new budget and no fill or order in between can make it too small. The lock is the
        engine's: in a front, the worker running the strategy makes the change (`apply_edit` there). Audited (edit)."""
        async with self._audit.attempt(
            "edit", actor_id=preview.user_id, user_id=preview.user_id, target=f"strategy #{preview.strategy_id}"
        ) as attempt:
            return await self._confirm_edit(attempt, preview)

    async def _confirm_edit(self, attempt: Attempt, preview: EditPreview) -> Edited:
        if preview.token in self._confirmed:
            raise UserError("This change was already made: see /status.", reason="already made")
        strategy = await self._owned(preview.user_id, preview.strategy_id)
        attempt.target = _target(strategy)
        # The free balance (a REST call) is read before the lock: the strategy's fills are recorded under it.
        free = await self._free_for_raise(strategy, preview.new_budget)
        edited = await self._control.edit(
            preview, lambda p, f: self.apply_edit(p, attempt=attempt, free=f), free=free
        )
        self._confirmed.add(preview.token)
        if not attempt.recorded:  # made by a worker: recorded here, once its outcome is known
            await attempt.done(detail=_edit_words(strategy, edited.preview))
        return edited

    async def apply_edit(
        self, preview: EditPreview, *, attempt: Attempt | None = None, free: Decimal | None = None
    ) -> Edited:
        """The change itself, called under the strategy's lock by the process that runs its engine; recorded in
        its transaction when the audit `attempt` is this process's (a worker's caller records it instead).
        `free`: the account's free quote, read before the lock."""
        strategy = await self._owned(preview.user_id, preview.strategy_id)
        if strategy.status not in HOLDING:
            raise UserError(
                f"{_title(strategy)} is {strategy.status} now: nothing was changed.",
                reason=f"it was {strategy.status}",
            )
        checked = await self._checked_edit(
            strategy, preview.new_budget, preview.new_name, token=preview.token, free=free
        )
        self._confirmed.add(preview.token)
        async with self._store.db.transaction() as tx:
            if checked.new_budget is not None:
                await self._store.strategies.set_budget(tx, strategy.id, checked.new_budget)
                if checked.per_level is not None:
                    kind = STRATEGIES[strategy.kind]
                    state = replace(kind.load_state(strategy.state), quote_per_level=checked.per_level)
                    await self._store.strategies.save_state(tx, strategy.id, kind.dump_state(state))
            if checked.new_name is not None:
                await self._store.strategies.set_name(tx, strategy.id, checked.new_name)
            if attempt is not None:
                await attempt.done(detail=_edit_words(strategy, checked), tx=tx)
        logger.info("user %s edited strategy %s", preview.user_id, strategy.id)
        if strategy.status == ACTIVE:
            await self._control.run_soon(strategy.id)  # a raised budget may fund an order now
        return Edited(strategy.id, checked)

    async def _checked_edit(
        self, strategy: Strategy, new_budget: Decimal | None, new_name: str | None, *, token: str,
        free: Decimal | None = None,
    ) -> EditPreview:
        """The change checked (`free`: the account's free quote if already read; else it is read when needed)."""
        used = strategy.spent - strategy.received
        reserved = await self._store.orders.reserved_for(strategy.id)
        minimum = max(ZERO, used + reserved)
        maximum = per_level = None
        if new_budget is not None:
            if new_budget < minimum:
                raise UserError(
                    f"{_title(strategy)} has already used {money(used, strategy.quote)} and its open orders reserve "
                    f"{money(reserved, strategy.quote)}: its budget can be no less than "
                    f"{money(_round_up_for_display(minimum), strategy.quote)}."
                )
            account = await self._store.accounts.get(strategy.account_id)
            if account is None or account.status != "active":
                raise UserError("This strategy's account key does not work (see /accounts): fix it first.")
            if new_budget > strategy.budget:
                maximum = await self._most_budget(account, strategy, used + reserved, free)
                if new_budget > maximum:
                    raise UserError(
                        f"The budget {money(new_budget, strategy.quote)} is more than {_account_name(account)} "
                        f"allows: with its free {strategy.quote} and your other strategies' budgets, "
                        f"{_title(strategy)} can have at most "
                        f"{money(_round_down_for_display(maximum), strategy.quote)}."
                    )
            per_level = await self._check_new_budget(account, strategy, new_budget)
        return EditPreview(
            token=token, user_id=strategy.user_id, strategy_id=strategy.id,
            label=list_title(strategy),
            quote=strategy.quote, budget=strategy.budget, new_budget=new_budget, name=strategy.name,
            new_name=new_name, used=used, reserved=reserved, minimum=_round_up_for_display(minimum),
            maximum=_round_down_for_display(maximum) if maximum is not None else None, per_level=per_level,
        )

    async def _most_budget(
        self, account: Account, strategy: Strategy, claimed: Decimal, free: Decimal | None = None
    ) -> Decimal:
        """The largest budget `strategy` may have: what it used and reserved plus what the account's free quote
        (`free`, read now if not given) leaves after the other strategies' unspent budgets (the /allocate
        ceiling, without this one)."""
        if free is None:
            free = await self._free_quote(account, strategy.quote)
        others = []
        for other in await self._store.strategies.list_for_account(account.id, HOLDING):
            if other.quote == strategy.quote and other.id != strategy.id:
                reserved = await self._store.orders.reserved_for(other.id)
                others.append(Ledger(other.budget, other.spent - other.received, reserved))
        return max(ZERO, claimed) + allocation_headroom(free, others)

    async def _free_quote(self, account: Account, quote: str) -> Decimal:
        """The account's free `quote` on the exchange (a UserError when it cannot be read)."""
        creds = await self._control.credentials(account)
        try:
            balance = await self._gateway.fetch_balance(account.venue, creds)
        except ExchangeFailure as failure:
            raise UserError(f"Could not read your balance: {failure.user_message}") from None
        return balance[quote].free if quote in balance else ZERO

    async def _free_for_raise(self, strategy: Strategy, new_budget: Decimal | None) -> Decimal | None:
        """The free quote a raised budget is checked against (None when the budget is not raised, or the account
        is not active: the check under the lock then says why)."""
        if new_budget is None or new_budget <= strategy.budget:
            return None
        account = await self._store.accounts.get(strategy.account_id)
        if account is None or account.status != "active":
            return None
        return await self._free_quote(account, strategy.quote)

    async def _check_new_budget(self, account: Account, strategy: Strategy, budget: Decimal) -> Decimal | None:
        """The strategy's own checks of a budget, as at /allocate; a started grid's new quote per level."""
        kind = STRATEGIES[strategy.kind]
        parsed = kind.parse_params(dict(strategy.params))
        try:
            kind.check_allocation(strategy.symbol, budget, parsed)
        except ParamError as exc:
            raise UserError(exc.message) from None
        if kind.name == "dca":
            await self._check_dca_amount(account, strategy.symbol, budget, parsed)
        if kind.name != "grid":
            return None
        state = kind.load_state(strategy.state)
        if not state.started:  # the budget is split when the price enters the range: checked as at /allocate
            await self._check_grid_levels(account, strategy.symbol, budget, parsed)
            return None
        info = await self._market(account, strategy.symbol)
        rules = MarketRules.from_info(info)
        check = _GridCheck(rules, info, strategy.symbol, parsed["high"], parsed)
        def per_level_of(total: Decimal) -> Decimal:
            return per_level_for(state, Budget(total=total, fee_rate=rules.fee_rate).spendable)

        per_level = per_level_of(budget)
        if not check.buys_pass(per_level):
            smallest = check.smallest(lambda total: check.buys_pass(per_level_of(total)), budget)
            raise UserError(
                f"{money(budget, info.quote)} is {money(_round_down_for_display(per_level), info.quote)} per level "
                f"for this grid, below {strategy.symbol.split(':')[0]}'s minimum order at its prices. The minimum "
                f"budget is {money(smallest, info.quote)}."
            )
        return per_level

    # --- status ---------------------------------------------------------------------------------------

    async def status(self, user_id: int) -> list[StrategyStatus]:
        """Every strategy of the user that still holds a budget, plus finished/stopped ones, newest last."""
        strategies = await self._store.strategies.list_for_user(user_id)
        accounts = {a.id: a for a in await self._store.accounts.list_for_user(user_id)}
        with charged_to(f"user:{user_id}"):
            return [await self._status(s, accounts.get(s.account_id)) for s in strategies]

    async def status_page(self, user_id: int, page: int = 1, per_page: int = STATUS_PER_PAGE) -> StatusPage:
        """The strategies of one page of `status` (page clamped to those that exist), figures read only for them."""
        strategies = await self._store.strategies.list_for_user(user_id)
        pages = max(1, -(-len(strategies) // per_page))
        page = min(max(1, page), pages)
        accounts = {a.id: a for a in await self._store.accounts.list_for_user(user_id)}
        on_page = strategies[(page - 1) * per_page: page * per_page]
        with charged_to(f"user:{user_id}"):  # the prices it reads count against this user's fair share
            statuses = tuple([await self._status(s, accounts.get(s.account_id)) for s in on_page])
        return StatusPage(
            statuses=statuses,
            page=page, pages=pages, total=len(strategies), fill_poll_seconds=self._control.effective_poll_interval,
        )

    async def strategy_status(self, user_id: int, strategy_id: int) -> StrategyStatus:
        strategy = await self._owned(user_id, strategy_id)
        return await self._status(strategy, await self._store.accounts.get(strategy.account_id))

    async def _status(self, strategy: Strategy, account: Account | None) -> StrategyStatus:
        orders = await self._store.orders.live_for_strategy(strategy.id)
        figures = await self.figures(strategy, account)
        base = strategy.symbol.split("/")[0]
        main = figures.assets.get(base)
        position = position_of(figures.assets, strategy.symbol, strategy.quote, figures.prices.get(base))
        return StrategyStatus(
            id=strategy.id, kind=strategy.kind, title=STRATEGIES[strategy.kind].title, symbol=strategy.symbol,
            account_label=account.label if account else "?", venue_name=venue_name(account.venue) if account else "?",
            status=strategy.status, pause_reason=strategy.pause_reason,
            note=_current_note(strategy.status, await self._store.strategies.note(strategy.id)),
            budget=strategy.budget, quote=strategy.quote,
            used=figures.used, invested=figures.invested, returned=figures.returned, reserved=figures.reserved,
            left=figures.left,
            open_orders=len(orders), holdings={a: held.held for a, held in figures.held.items()},
            average_entry=_q8(main.average_cost) if main is not None and main.held > 0 else None,
            futures=figures.futures,
            entry_price=_q8(main.entry_price) if main is not None else None, realised_pnl=_q8(figures.realised),
            unrealised_pnl=_q8(figures.unrealised),
            fees=figures.fees,
            next_run=self._control.next_run_time(strategy) if strategy.status == ACTIVE else None,
            fill_poll_seconds=self._control.effective_poll_interval,
            dust=_dust(strategy), name=strategy.name,
            label=list_title(strategy),
            params=dict(strategy.params), figures=figures, position=position,
            fills=self._control.fill_mode(account) if strategy.status == ACTIVE else None,
            fill_sweep_seconds=self._control.sweep_seconds,
        )

    async def figures(self, strategy: Strategy, account: Account | None, *, prices: bool = True) -> Figures:
        """The strategy's figures (`bot.engine.figures`): what the alert, /status and /stop all show.

        `prices`: read the last price of what it holds (a futures position: the venue's mark price), for the
        unrealised P&L (each read is one request; an unreadable price leaves the unrealised P&L unknown rather
        than wrong).
        """
        reserved = await self._store.orders.reserved_for(strategy.id)
        pnl = compute(await self._store.orders.fills_for_strategy(strategy.id), strategy.quote)
        last: dict[str, Decimal] = {}
        precision: dict[str, Precision] = {}
        if account is not None:
            main = strategy.symbol.split("/")[0]
            for held, asset in ((a.held != 0, a.asset) for a in pnl.assets.values() if a.held != 0 or a.asset == main):
                symbol = _venue_symbol(account.venue, f"{asset}/{strategy.quote}")
                try:
                    info = await self._gateway.market(account.venue, symbol)
                    precision[asset] = Precision(info.amount_step, info.price_tick)
                    if not (prices and held):
                        continue
                    if is_contract(symbol):  # a position is valued at the venue's mark price, as the venue does
                        value = await mark_price(self._gateway, account.venue, symbol)
                    else:
                        value = (await self._gateway.fetch_ticker(account.venue, symbol)).last
                except ExchangeFailure:
                    continue
                if value is not None:
                    last[asset] = value
        return figures_of(
            budget=strategy.budget, quote=strategy.quote, spent=strategy.spent, received=strategy.received,
            reserved=reserved, pnl=pnl, prices=last, futures=is_contract(strategy.symbol), precision=precision,
        )

    # --- control --------------------------------------------------------------------------------------

    async def pause(self, user_id: int, strategy_id: int) -> ControlResult:
        """Pause a strategy and cancel its resting orders; /resume places what it still needs again. Audited."""
        async with self._audit.attempt(
            "pause", actor_id=user_id, user_id=user_id, target=f"strategy #{strategy_id}"
        ) as attempt:
            return await self._pause(attempt, user_id, strategy_id)

    async def _pause(self, attempt: Attempt, user_id: int, strategy_id: int) -> ControlResult:
        strategy = await self._owned(user_id, strategy_id)
        attempt.target = _target(strategy)
        if strategy.status != ACTIVE:
            raise UserError(
                f"{_title(strategy)} is {strategy.status}, not running.", reason=f"it was {strategy.status}"
            )
        await self._control.pause(strategy.id, "paused by you", by=USER)
        done = await self._control.cancel_orders(strategy.id, "paused by you")
        await attempt.done(detail=_cancel_words(done))
        return ControlResult(
            strategy.id, _title(strategy), PAUSED, canceled=done.canceled, filled=done.filled,
            unconfirmed=done.unconfirmed, errors=done.errors,
        )

    async def resume(self, user_id: int, strategy_id: int) -> ControlResult:
        """Resume a paused strategy (its key must work). Audited."""
        async with self._audit.attempt(
            "resume", actor_id=user_id, user_id=user_id, target=f"strategy #{strategy_id}"
        ) as attempt:
            return await self._resume(attempt, user_id, strategy_id)

    async def _resume(self, attempt: Attempt, user_id: int, strategy_id: int) -> ControlResult:
        strategy = await self._owned(user_id, strategy_id)
        attempt.target = _target(strategy)
        if strategy.status != PAUSED:
            raise UserError(f"{_title(strategy)} is {strategy.status}, not paused.", reason=f"it was {strategy.status}")
        account = await self._store.accounts.get(strategy.account_id)
        if account is None:
            raise UserError("This strategy's account is no longer connected.", reason="no account")
        if account.status == KEY_UNSAFE:
            raise UserError(
                f"The API key of {account.label} can withdraw funds: turn its withdrawals off on the exchange (I "
                f"check it every few minutes and tell you), or give it a new key with /connect replace "
                f"{account.label}.",
                reason="the key can withdraw",
            )
        if account.status != "active":
            raise UserError(
                f"The API key of {account.label} does not work (see /accounts): give it a new key with "
                f"/connect replace {account.label} first.",
                reason="the account's key does not work",
            )
        async with self._store.db.transaction() as tx:
            resumed = await self._store.strategies.set_status(tx, strategy.id, ACTIVE, reason=None, only_from=(PAUSED,))
            if resumed:
                await attempt.done(tx=tx)
        if not resumed:  # resumed (or stopped) by another press meanwhile
            raise UserError(f"{_title(strategy)} is no longer paused: see /status.", reason="no longer paused")
        await self._control.resume(strategy.id)
        return ControlResult(strategy.id, _title(strategy), ACTIVE)

    async def resume_all(self, user_id: int) -> ResumeAllResult:
        """Resume exactly the strategies /panic paused (not the user's own pauses, nor the engine's), except on
        an account whose key does not work; each is resumed once however often this is called (the status
        change is conditional on its still being paused by the panic)."""
        resumed: list[str] = []
        skipped: list[tuple[str, str]] = []
        accounts = {a.id: a for a in await self._store.accounts.list_for_user(user_id)}
        for strategy in await self._store.strategies.list_for_user(user_id, (PAUSED,)):
            label = list_title(strategy)
            account = accounts.get(strategy.account_id)
            if strategy.paused_by == USER:
                skipped.append((label, f"you paused it yourself: /resume {strategy.id}"))
                continue
            if strategy.paused_by != PANIC:
                skipped.append((label, f"{strategy.pause_reason or 'paused by the bot'}: /resume {strategy.id} "
                                       "once it is fixed"))
                continue
            if account is None or account.status != "active":
                where = account.label if account is not None else "its account"
                skipped.append((label, f"the API key of {where} does not work: /connect replace {where} first"))
                continue
            async with self._store.db.transaction() as tx:
                changed = await self._store.strategies.set_status(
                    tx, strategy.id, ACTIVE, reason=None, only_from=(PAUSED,), only_paused_by=PANIC
                )
            if changed:
                await self._control.resume(strategy.id)
                resumed.append(label)
        logger.info("user %s resumed %d strategies paused by /panic", user_id, len(resumed))
        await self._audit.record(
            "resume", actor_id=user_id, user_id=user_id, target="every strategy /panic paused",
            detail=f"{len(resumed)} resumed, {len(skipped)} left paused",
        )
        return ResumeAllResult(resumed=tuple(resumed), skipped=tuple(skipped))

    async def panic(self, user_id: int, *, sell: bool = False, actor_id: int | None = None) -> PanicResult:
        """/panic: `halt_all`, audited (panic) with how many were paused and cancelled and, with `sell`, stopped
        and sold (the option the user chose); `actor_id`: who did it when not the user (an admin's block)."""
        actor = user_id if actor_id is None else actor_id
        async with self._audit.attempt("panic", actor_id=actor, user_id=user_id, target="every strategy") as attempt:
            result = await self.halt_all(user_id, sell=sell)
            sold = f"; {len(result.sales)} stopped and sold (pause, cancel and sell)" if sell else ""
            await attempt.done(detail=f"{result.paused} paused; {_cancel_words(result)}{sold}")
        return result

    async def halt_all(self, user_id: int, *, sell: bool = False, by: str = "/panic") -> PanicResult:
        """Pause every strategy of the user and cancel every open order they have (none is sent afterwards).

        `sell` ("Pause, cancel and sell what the strategies bought"): then stop each strategy that holds
        something as /stop's "Stop and sell" does (spot: sell what its fills bought, up to the free balance;
        futures: close its position reduce-only), waiting for the outcome; what is below the market's minimum
        stays as dust. A stopped strategy cannot be resumed, so the answer offers no Resume all. `by`: what the
        strategies' status says paused or stopped them. Not audited: its callers record it (/panic, wind-down).
        """
        strategies = await self._store.strategies.list_for_user(user_id)
        paused = paper = 0
        for strategy in strategies:
            if strategy.status == ACTIVE and await self._control.pause(strategy.id, f"paused by {by}", by=PANIC):
                paused += 1
                paper += is_paper(strategy.venue)
        done = Cancellation()
        for strategy in strategies:
            done += await self._control.cancel_orders(strategy.id, f"paused by {by}")
        sales = []
        if sell:
            for strategy in await self._store.strategies.list_for_user(user_id, (*HOLDING, FINISHED)):
                # The engine re-reads it under the account's control lock: None if stopped meanwhile.
                stopped = await self._control.stop(strategy.id, f"stopped by {by}", sell=True)
                if stopped is not None:
                    sales.append(await self._stop_summary(strategy, stopped.cancellation, _sale_of(stopped)))
        logger.info("user %s: %d strategies paused by %s, %d sold", user_id, paused, by, len(sales))
        return PanicResult(
            paused=paused, canceled=done.canceled, errors=done.errors, filled=done.filled,
            unconfirmed=done.unconfirmed, paper=paper, sell=sell, sales=tuple(sales),
        )

    async def stop(self, user_id: int, strategy_id: int, sell: bool) -> StopSummary:
        """Stop a strategy for good: cancel its orders, keep or sell what it bought, release its budget. Audited."""
        async with self._audit.attempt(
            "stop", actor_id=user_id, user_id=user_id, target=f"strategy #{strategy_id}"
        ) as attempt:
            summary = await self._stop(attempt, user_id, strategy_id, sell)
            await attempt.done(detail=_stop_words(summary, sell))
        return summary

    async def _stop(self, attempt: Attempt, user_id: int, strategy_id: int, sell: bool) -> StopSummary:
        strategy = await self._owned(user_id, strategy_id)
        attempt.target = _target(strategy)
        if strategy.status == STOPPED:
            raise UserError(f"{_title(strategy)} is already stopped.", reason="already stopped")
        # The engine re-reads it under the account's control lock (a /disconnect waits for the sale).
        stopped = await self._control.stop(strategy.id, "stopped by you", sell=sell)
        if stopped is None:
            raise UserError(f"{_title(strategy)} is already stopped.", reason="already stopped")
        return await self._stop_summary(strategy, stopped.cancellation, _sale_of(stopped))

    async def _stop_summary(self, strategy: Strategy, done: Any, sale: _Sale | None = None) -> StopSummary:
        """What a stop did and left, from the strategy's figures (/stop, /panic's sell and /disconnect alike)."""
        sale = sale or _Sale()
        stopped = await self._store.strategies.get(strategy.id) or strategy  # its ledger, with a stop's sale booked
        figures = await self.figures(stopped, await self._store.accounts.get(stopped.account_id), prices=False)
        return StopSummary(
            strategy_id=strategy.id, title=_title(strategy), quote=strategy.quote, canceled=done.canceled,
            sold=sale.sold, kept={a: held.held for a, held in figures.held.items() if a not in sale.pending},
            invested=figures.invested, returned=figures.returned, fees=figures.fees, realised_pnl=figures.realised,
            errors=(*done.errors, *sale.errors), futures=figures.futures,
            unconfirmed=done.unconfirmed, figures=figures, sold_at=sale.sold_at,
            dust={a: held.held for a, held in figures.held.items() if a in sale.dust and held.held},
        )

    async def account_strategies_to_stop(self, account_id: int) -> list[str]:
        """The names of the account's strategies a /disconnect would stop (running or paused)."""
        return [
            _list_title(s) for s in await self._store.strategies.list_for_account(account_id) if s.status in HOLDING
        ]

    async def stop_account_strategies(
        self, account_id: int, *, cancel: bool = True, reason: str = STOPPED_BY_DISCONNECT
    ) -> tuple[StopSummary, ...]:
        """Stop every strategy of an account and settle its orders (before /disconnect shreds the key).

        No order of the account is sent once this returns: its strategies are stopped inside their send gates, the
        sends under way are waited for, every live order is cancelled, and those whose fate was not known are
        resolved for up to the venue's receive window and a little more. Orders still live after that stay in
        the database; the caller refuses to shred the key while any is (calling again retries). Returns the stop
        summary of each strategy a /disconnect stopped (also by an earlier attempt that could not finish), as
        /stop gives one: what it holds is kept, nothing is sold. `cancel=False` (a key the exchange rejects
        cannot cancel anything): the strategies only stop, the caller abandons their orders. `reason`: what the
        strategies' status says stopped them (the wind-down's own).
        """
        cancelled = await self._control.stop_account(account_id, reason, cancel=cancel)
        summaries = []
        for strategy in await self._store.strategies.list_for_account(account_id):
            if strategy.status == STOPPED and strategy.pause_reason == reason:
                summaries.append(await self._stop_summary(strategy, cancelled.get(strategy.id, Cancellation())))
        return tuple(summaries)

    async def _owned(self, user_id: int, strategy_id: int) -> Strategy:
        strategy = await self._store.strategies.get_owned(user_id, int(strategy_id))
        if strategy is None:
            raise UserError("No such strategy. See /status for yours.", reason="no such strategy")
        return strategy


class _GridCheck:
    """A grid's start put through the risk gate before Confirm, as the engine will when it starts."""

    def __init__(self, rules: MarketRules, info: Any, symbol: str, price: Decimal, params: Any) -> None:
        self.rules, self.symbol, self.price, self.params = rules, symbol, price, params
        self.market = MarketInfo(info.symbol, info.base, info.quote, info.min_amount, info.min_cost,
                                 amount_step=info.amount_step)

    def plan(self, budget: Decimal, levels: int) -> GridPlan:
        """How the grid starts with `budget` and `levels` at today's price (`Grid.decide` plans the same way)."""
        prices = prices_of({**self.params, "levels": levels})
        return plan_grid(prices, self.price, Budget(total=budget, fee_rate=self.rules.fee_rate).spendable,
                         self.market)

    def per_level_if_short(self, budget: Decimal, levels: int) -> Decimal | None:
        """The budget per level when some order of the grid falls below the market minimum, else None."""
        plan = self.plan(budget, levels)
        if plan.shortfall(self.market) is not None or not self._passes(plan.per_level, plan.prices):
            return plan.per_level
        for i, amount in plan.sell_amounts.items():
            order = DesiredOrder(self.symbol, "sell", "limit", "allocation-check", amount=amount,
                                 price=plan.prices[i + 1])
            if not self._approved(order):
                return plan.per_level
        return None

    def buys_pass(self, per_level: Decimal) -> bool:
        """Whether a buy for `per_level` passes the minimums at every level's price (a started grid's budget)."""
        return per_level > 0 and self._passes(per_level, prices_of(self.params))

    def _passes(self, per_level: Decimal, prices: tuple[Decimal, ...]) -> bool:
        for price in prices[:-1]:  # every level buys at its price sooner or later
            amount = amount_for_cost(per_level, price)
            if amount <= 0:
                return False
            if not self._approved(DesiredOrder(self.symbol, "buy", "limit", "allocation-check", amount=amount,
                                               price=price)):
                return False
        return True

    def _approved(self, order: DesiredOrder) -> bool:
        verdict = check_order(order, self.rules, last_price=self.price, ledger=Ledger(order.value(self.price) * 2),
                              free_quote=None)
        return not (isinstance(verdict, Refused) and verdict.kind == "minimum")

    def smallest_budget(self, budget: Decimal, levels: int) -> Decimal:
        """The smallest budget (in cents, or 1e-8 below one unit) whose every order of the grid passes the minimums."""
        return self.smallest(lambda b: self.per_level_if_short(b, levels) is None, budget)

    @staticmethod
    def smallest(passes: Any, budget: Decimal) -> Decimal:
        """The smallest budget (in cents, or 1e-8 below one unit) from `budget` up for which `passes(budget)`."""
        unit = Decimal("0.01") if budget >= 1 else Decimal("1e-8")
        low, high = budget, budget * 2
        for _ in range(200):  # the per-level value grows with the budget: double until it passes
            if passes(high):
                break
            low, high = high, high * 2
        while high - low > unit:
            middle = floor_to((low + high) / 2, unit)
            if middle <= low:
                break
            if passes(middle):
                high = middle
            else:
                low = middle
        return (high / unit).to_integral_value(rounding=ROUND_CEILING) * unit


@contextmanager
def _fixed_at(step: str) -> Iterator[None]:
    """Name the allocation step that can fix a refusal raised inside (unless it already names one)."""
    try:
        yield
    except UserError as exc:
        if exc.step is None:
            exc.step = step
        raise


def _strategy(kind: str) -> Any:
    try:
        return get_strategy(kind)
    except ParamError as exc:
        raise UserError(exc.message) from None


_SEPARATORS = re.compile(r"\s*[/\-_ ]\s*")


def market_names(symbols: list[str], *, futures: bool) -> list[str]:
    """The venue's markets as users write them: `BTC/USDT` (a futures `BTC/USDT:USDT` without its suffix)."""
    names = {s.split(":")[0] for s in symbols if (":" in s) == futures and "/" in s}
    return sorted(names)


def pick_market(typed: str, markets: list[str], where: str, aliases: Mapping[str, str] | None = None) -> str:
    """The market of `markets` that `typed` (upper case) names, or a `UserError` suggesting the closest ones.

    `aliases` are the venue's own names for its markets (ids such as `XXBTZUSD`, Kraken's `XBTUSD`), upper case.
    """
    if aliases and typed in aliases and aliases[typed] in markets:
        return aliases[typed]
    parts = [p for p in _SEPARATORS.split(typed.split(":")[0]) if p]
    by_compact: dict[str, list[str]] = {}
    for market in markets:
        by_compact.setdefault(market.replace("/", ""), []).append(market)
    if len(parts) == 2 and f"{parts[0]}/{parts[1]}" in markets:
        return f"{parts[0]}/{parts[1]}"
    # BTCUSDT: only a listed base+quote pair, never a guess; two pairs joining alike (AB/CD, ABC/D) are asked.
    if len(parts) == 1 and len(by_compact.get(parts[0], ())) == 1:
        return by_compact[parts[0]][0]
    wanted = "/".join(parts) or typed
    close = [m for c in difflib.get_close_matches("".join(parts), list(by_compact), n=3, cutoff=0.6)
             for m in by_compact[c]]
    hint = f" Did you mean {', '.join(close)}?" if close else " Write it like BTC/USDT."
    raise UserError(f"{shown(wanted)} is not traded on {where}.{hint}")


def _budget(value: Decimal | str) -> Decimal:
    """The budget within `parse_budget`'s bounds (a Decimal from code is checked like typed text)."""
    try:
        return parse_budget(str(value))
    except ParamError as exc:
        raise UserError(exc.message) from None


def _venue_symbol(venue: str, symbol: str) -> str:
    """USD-M futures markets are `BTC/USDT:USDT` in ccxt; users write `BTC/USDT`."""
    return adapter(venue).market_symbol(symbol)


def _title(strategy: Strategy) -> str:
    return title(strategy)


def _target(strategy: Strategy) -> str:
    """A strategy as the audit log names it: number, kind and market (never its user-given name)."""
    kind = STRATEGIES.get(strategy.kind)
    return f"strategy #{strategy.id} {kind.title if kind else strategy.kind} {strategy.symbol}"


def _cancel_words(done: Any) -> str:
    """What cancelling did, for the audit log: counts only (the venue's error texts stay out)."""
    words = [f"{done.canceled} order(s) cancelled"]
    if getattr(done, "filled", 0):
        words.append(f"{done.filled} had filled")
    if getattr(done, "unconfirmed", 0):
        words.append(f"{done.unconfirmed} not confirmed yet")
    if done.errors:
        words.append(f"{len(done.errors)} could not be cancelled")
    return ", ".join(words)


def _stop_words(summary: StopSummary, sell: bool) -> str:
    held = "sold what it held at market" if sell else "kept what it held"
    problems = f"; {len(summary.errors)} problem(s), see /status" if summary.errors else ""
    return f"{held}; {_cancel_words(summary)}{problems}"


def _edit_words(strategy: Strategy, checked: EditPreview) -> str:
    words = []
    if checked.new_budget is not None:
        words.append(f"budget {money(strategy.budget, strategy.quote)} → {money(checked.new_budget, strategy.quote)}")
    if checked.new_name is not None:
        words.append("renamed")
    return "; ".join(words)


def _list_title(strategy: Strategy) -> str:
    return list_title(strategy)


def _current_note(status: str, note: str | None) -> str | None:
    """The strategy's last word while it still holds: a running one's ("waiting: next buy at …"); a finished
    one's reason without its "finished: " prefix (the status says it). A paused or stopped strategy's last
    running line is stale: none (a paused one shows its pause reason instead)."""
    if status == ACTIVE:
        return note
    return finished_reason(note) if status == FINISHED else None


def _name(text: str | None) -> str | None:
    """The cleaned name= of an allocation (None without one), or a `UserError` saying what is wrong."""
    if text is None:
        return None
    try:
        return clean_name(text)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _dust(strategy: Strategy) -> Mapping[str, Decimal]:
    """What the strategy carries as unsellable dust (its state says; an unreadable state shows none)."""
    kind = STRATEGIES[strategy.kind]
    try:
        return kind.dust(kind.load_state(strategy.state), strategy.symbol)
    except (KeyError, ValueError, TypeError, ArithmeticError):
        return {}


def _q8(value: Decimal | None) -> Decimal | None:
    """Money figures to 8 decimals: divisions (average cost) would otherwise print 28 digits."""
    if value is None:
        return None
    text = format(value.quantize(Decimal("1e-8")), "f")
    return Decimal(text.rstrip("0").rstrip(".") if "." in text else text)


def _round_up_for_display(value: Decimal) -> Decimal:
    """A suggested quote amount, rounded UP (so it still works) to cents when it is at least 1."""
    step = Decimal("0.01") if value >= 1 else Decimal("1e-8")
    return (value / step).to_integral_value(rounding=ROUND_CEILING) * step


def _round_down_for_display(value: Decimal) -> Decimal:
    """A ceiling shown to the user, rounded DOWN (so typing it back is accepted) to cents when it is at least 1."""
    return floor_to(value, Decimal("0.01") if value >= 1 else Decimal("1e-8"))


def _account_name(account: Account) -> str:
    """An account as refusals name it: its label, marked when it is a Paper account."""
    return f"{account.label} ({PAPER_MARK})" if is_paper(account.venue) else account.label


def _q(value: Decimal) -> str:
    """A number the user may type back (amount=…, a budget): plain digits, no thousands separators."""
    return format_value("decimal", value)

"""Types shared by every strategy and the engine: what a strategy sees, what it asks for, what it is told.

A strategy is pure: `decide(snapshot, state, budget, params) -> Decision` reads no clock, does no I/O and
uses no randomness, so the same inputs always give the same orders with the same tags. The engine:

1. builds a `MarketSnapshot` (clock, prices, closed candles, limits, the strategy's own holdings);
2. calls `decide` and stores `Decision.state` in the same transaction as the intents of `Decision.orders`,
   deriving each client order id from (strategy id, `DesiredOrder.tag`), so re-running `decide` on the old
   state after a crash yields the same tags and never places an order twice;
3. feeds every fill — and the end of every order, filled or not — back through `on_fill(state, fill,
   params)`, storing the returned state with the fill (and its alert) in one transaction, then calls
   `decide` again soon (a strategy re-arms from fills: grid sells, rebalance buys after its sells);
4. schedules the next run at `next_run(state, params, now)`; None means "only after fills" or finished.

All money is `Decimal`. Strategy state is a frozen dataclass per strategy, stored as JSON through
`Strategy.dump_state` / `Strategy.load_state` (plain str/int/bool/list/dict values only).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Literal

from bot.strategies.params import ParamError, ParamSpec, dump_params, parse_params

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit"]
Params = Mapping[str, Any]

ZERO = Decimal(0)
# Strategies round derived quote values down to this step and base amounts down to AMOUNT_STEP, so a
# derived order never exceeds the budget it came from; the engine then applies the venue's precision.
QUOTE_STEP = Decimal("1e-8")
AMOUNT_STEP = Decimal("1e-12")
#: `Fill.refused` of an order the exchange rejected (its send failed for funds or its rules).
REJECTED_BY_VENUE = "rejected"
#: `Fill.refused` of an order the engine ended unsent: its strategy was paused or stopped between deciding it and
#: sending it, or it was cancelled before it reached the exchange. Nothing of it traded: what it was for is owed.
NOT_SENT = "not_sent"


@dataclass(frozen=True)
class Candle:
    """One OHLCV candle; `ts` is its open time (UTC), as ccxt's `fetch_ohlcv` reports it."""

    ts: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    @classmethod
    def from_ccxt(cls, row: Sequence[Any]) -> Candle:
        """Build a candle from a ccxt row `[ms, open, high, low, close, volume]` (numbers or strings)."""
        ms, o, h, low, c, v = row[:6]
        return cls(
            ts=datetime.fromtimestamp(int(ms) / 1000, tz=UTC),
            open=Decimal(str(o)),
            high=Decimal(str(h)),
            low=Decimal(str(low)),
            close=Decimal(str(c)),
            volume=Decimal(str(v)),
        )

    def closes_at(self, timeframe: timedelta) -> datetime:
        """Return when this candle closes."""
        return self.ts + timeframe


@dataclass(frozen=True)
class MarketInfo:
    """What a strategy needs to know about one market: its assets, the venue's minimums and amount step."""

    symbol: str
    base: str
    quote: str
    amount_min: Decimal | None = None
    cost_min: Decimal | None = None
    #: The venue's amount step (the gate rounds every amount down to it); None when unknown.
    amount_step: Decimal | None = None

    @classmethod
    def from_ccxt(cls, market: Mapping[str, Any]) -> MarketInfo:
        """Build from a ccxt market dict (`exchange.markets[symbol]`)."""
        limits = market.get("limits") or {}

        def _min(key: str) -> Decimal | None:
            value = (limits.get(key) or {}).get("min")
            return None if value is None else Decimal(str(value))

        return cls(
            symbol=market["symbol"],
            base=market["base"],
            quote=market["quote"],
            amount_min=_min("amount"),
            cost_min=_min("cost"),
        )

    def min_cost(self, price: Decimal) -> Decimal:
        """Return the smallest order value in quote the venue accepts at this price."""
        floor = self.cost_min or ZERO
        if self.amount_min is not None:
            floor = max(floor, self.amount_min * price)
        return floor

    def amount_down(self, amount: Decimal) -> Decimal:
        """Round a base amount down to the venue's step (as the risk gate will)."""
        if self.amount_step is None or self.amount_step <= 0:
            return amount
        return floor_to(amount, self.amount_step)

    def can_trade(self, amount: Decimal, price: Decimal) -> bool:
        """Whether an order of this (already stepped) amount at this price meets the venue's minimums."""
        if amount <= 0 or (self.amount_min is not None and amount < self.amount_min):
            return False
        return self.cost_min is None or amount * price >= self.cost_min


@dataclass(frozen=True)
class MarketSnapshot:
    """Everything a strategy may look at for one run; built by the engine, never by the strategy."""

    now: datetime
    symbol: str
    price: Decimal
    # Closed candles only, oldest first, for the strategy's timeframe (strategies re-check and drop an
    # open one anyway).
    candles: tuple[Candle, ...] = ()
    # Per-symbol market info for every symbol in `Strategy.symbols(...)`.
    markets: Mapping[str, MarketInfo] = field(default_factory=dict)
    # Last price per symbol, for strategies trading several markets (rebalance); `price` is `symbol`'s.
    prices: Mapping[str, Decimal] = field(default_factory=dict)
    # Assets this strategy owns (bought with its budget, net of fees), not the whole account's balance.
    holdings: Mapping[str, Decimal] = field(default_factory=dict)
    # True on a derivatives venue (binanceusdm): trend may hold a short there.
    futures: bool = False

    def price_of(self, symbol: str) -> Decimal | None:
        """Return the last price of a symbol, if the snapshot has it."""
        if symbol == self.symbol:
            return self.price
        return self.prices.get(symbol)


@dataclass(frozen=True)
class Budget:
    """The allocation's ceiling in quote: `spent` is net (buys + fees − sell proceeds), `reserved` is open orders.

    On futures `spent` is the open position's margin at 1x (entry × size) less the realised P&L net of fees,
    long or short alike, so the budget bounds the position's notional.
    """

    total: Decimal
    spent: Decimal = ZERO
    reserved: Decimal = ZERO
    # Fee rate the risk gate adds on top of a buy's value when it reserves the worst case.
    fee_rate: Decimal = ZERO

    @property
    def remaining(self) -> Decimal:
        """Quote still free for new buys (never negative)."""
        return max(ZERO, self.total - self.spent - self.reserved)

    @property
    def spendable(self) -> Decimal:
        """Largest buy value whose worst case with fees still fits in `remaining`."""
        return _floor(self.remaining / (1 + self.fee_rate))


@dataclass(frozen=True)
class DesiredOrder:
    """An order a strategy wants placed; `tag` names its role and is unique within the strategy's life.

    Exactly one of `amount` (base) or `cost` (quote; market buys on spot only) is set; `price` is set for
    limit orders. The engine rounds with the venue's precision and checks limits and budget.
    """

    symbol: str
    side: Side
    type: OrderType
    tag: str
    amount: Decimal | None = None
    cost: Decimal | None = None
    price: Decimal | None = None
    reduce_only: bool = False

    def __post_init__(self) -> None:
        if (self.amount is None) == (self.cost is None):
            raise ValueError(f"{self.tag}: set exactly one of amount or cost")
        if self.cost is not None and (self.type != "market" or self.side != "buy"):
            raise ValueError(f"{self.tag}: cost is only for market buys")
        if (self.type == "limit") != (self.price is not None):
            raise ValueError(f"{self.tag}: a limit order needs a price, a market order none")
        size = self.amount if self.amount is not None else self.cost
        if size is None or size <= 0:
            raise ValueError(f"{self.tag}: size must be positive")

    def value(self, price: Decimal) -> Decimal:
        """Return the order's value in quote (at its limit price, or at `price` for a market order)."""
        if self.cost is not None:
            return self.cost
        assert self.amount is not None  # noqa: S101 - guaranteed by __post_init__
        return self.amount * (self.price if self.price is not None else price)


@dataclass(frozen=True)
class Fill:
    """A fill of one of the strategy's orders, or the end of one (`closed`), as the engine reports it.

    `amount` is the base filled by this event only (0 when an order ends without more fills: cancelled,
    expired, or refused by the risk gate or the venue — report those too, so the strategy can re-arm).
    `fee` is in `fee_currency`; a fee in the base asset reduces what the strategy holds. `fee_quote` is the
    fee valued in the quote by the engine (how a fee in a third currency, e.g. BNB, counts). `refused` says the
    order never traded because it was refused: by the engine's risk gate before sending (`minimum`, `budget`,
    `unpriced`: the strategy must not simply ask for the same order again, or it would be refused on every run)
    or by the exchange (`REJECTED_BY_VENUE`, the strategy is then paused with the venue's reason).
    """

    tag: str
    symbol: str
    side: Side
    amount: Decimal
    price: Decimal
    closed: bool = True
    fee: Decimal = ZERO
    fee_currency: str | None = None
    refused: str | None = None
    fee_quote: Decimal = ZERO

    @property
    def cost(self) -> Decimal:
        return self.amount * self.price


@dataclass(frozen=True)
class Decision:
    """What `decide` returns: orders to place now, the new state, and a line for `/status`."""

    orders: tuple[DesiredOrder, ...]
    state: Any
    status: str | None = None
    finished: bool = False


@dataclass(frozen=True)
class RoundTrip:
    """A grid level's buy and the sell that closed it, for the sell's alert: profit net of both legs' fees."""

    profit: Decimal  # sell proceeds less fees, less what the sold base cost with its fees
    cost: Decimal  # what the sold base cost, fees included: the profit's percentage is of this
    buy_price: Decimal  # the level's buy price …
    sell_price: Decimal  # … and its sell price, one level up
    from_start: bool = False  # the base was bought by the grid's start purchase, not at `buy_price`

    @property
    def percent(self) -> Decimal | None:
        return self.profit / self.cost * 100 if self.cost > 0 else None


@dataclass(frozen=True)
class FillUpdate:
    """What `on_fill` returns: the new state, and for the alert the profit of a completed round trip."""

    state: Any
    profit: Decimal | None = None
    note: str | None = None
    round_trip: RoundTrip | None = None


class Strategy(ABC):
    """A named, pure strategy with declared parameters; one instance is shared by all allocations."""

    name: str  # the command word: dca, grid, rebalance, trend
    title: str  # the keyboard label: DCA, Grid, Rebalance, Trend
    description: str  # one plain sentence for /strategies
    example: str  # a one-line /allocate with typical parameters
    param_specs: tuple[ParamSpec, ...]

    def parse_params(self, raw: Mapping[str, str]) -> dict[str, Any]:
        """Parse `key=value` text into typed values (defaults filled in) or raise `ParamError`."""
        params = parse_params(self.param_specs, raw, strategy=self.name)
        self.check(params)
        return params

    def dump_params(self, params: Params) -> dict[str, str]:
        """Return canonical text for storage; `parse_params` reads it back."""
        return dump_params(self.param_specs, params)

    def check(self, params: Params) -> None:  # noqa: B027 - optional hook, no-op by default
        """Check rules between parameters (e.g. fast < slow); raise `ParamError`."""

    def check_allocation(self, symbol: str, budget: Decimal, params: Params) -> None:  # noqa: B027
        """Check the parameters against the symbol and budget of an allocation; raise `ParamError`."""

    def symbols(self, symbol: str, params: Params) -> tuple[str, ...]:
        """Return the markets whose prices and limits the snapshot must hold."""
        return (symbol,)

    def timeframe(self, params: Params) -> str | None:
        """Return the candle timeframe the snapshot must hold, or None when candles are not used."""
        return None

    @abstractmethod
    def initial_state(self, params: Params, now: datetime) -> Any:
        """Return the state of a freshly allocated strategy started at `now`."""

    @abstractmethod
    def decide(self, snapshot: MarketSnapshot, state: Any, budget: Budget, params: Params) -> Decision:
        """Return the orders to place now and the new state."""

    @abstractmethod
    def on_fill(self, state: Any, fill: Fill, params: Params) -> FillUpdate:
        """Fold a fill (or an order's end) into the state."""

    @abstractmethod
    def next_run(self, state: Any, params: Params, now: datetime) -> datetime | None:
        """Return when the strategy next wants `decide` called; None: only after fills, or finished."""

    def dust(self, state: Any, symbol: str) -> Mapping[str, Decimal]:
        """Return the amounts the strategy holds but could not sell (below the venue's step or minimum)."""
        return {}

    @abstractmethod
    def dump_state(self, state: Any) -> dict[str, Any]:
        """Return the state as JSON-ready data."""

    @abstractmethod
    def load_state(self, data: Mapping[str, Any]) -> Any:
        """Rebuild the state from `dump_state`'s output."""


def slot_index(start: datetime, every: timedelta, now: datetime) -> int:
    """Return the index k of the latest slot `start + k*every` at or before `now` (-1 before start)."""
    if now < start:
        return -1
    return (now - start) // every


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    """Round down to a multiple of `step`."""
    return value.quantize(step, rounding=ROUND_FLOOR) if _is_power_of_ten(step) else (
        (value / step).to_integral_value(rounding=ROUND_FLOOR) * step
    )


def _is_power_of_ten(step: Decimal) -> bool:
    return step.as_tuple().digits == (1,)


def amount_for_cost(cost: Decimal, price: Decimal) -> Decimal:
    """Return the base amount worth at most `cost` at `price`."""
    return floor_to(cost / price, AMOUNT_STEP)


def _floor(value: Decimal) -> Decimal:
    return floor_to(value, QUOTE_STEP)


__all__ = [
    "AMOUNT_STEP",
    "QUOTE_STEP",
    "REJECTED_BY_VENUE",
    "ZERO",
    "Budget",
    "Candle",
    "Decision",
    "DesiredOrder",
    "Fill",
    "FillUpdate",
    "MarketInfo",
    "MarketSnapshot",
    "OrderType",
    "ParamError",
    "Params",
    "RoundTrip",
    "Side",
    "Strategy",
    "amount_for_cost",
    "floor_to",
    "slot_index",
]

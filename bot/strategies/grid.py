"""Grid: buy limits below the price and sell limits above it across the whole range; every level re-arms.

`levels` prices run from `low` to `high` inclusive, `spacing=arith` (equal price steps) or `geo` (equal
percentage steps). Between two neighbouring prices lies one grid (a rung): rung i buys at price i and sells at
price i+1. When the price is first inside the range the grid starts as Binance's and Pionex's spot grids do:

- every rung whose buy price is below the price gets a buy limit for `quote_per_level` (fixed for its life);
- every other rung holds base and sells it one price up; the base those sells need is bought at start by ONE
  market buy (tag `grid:start:<seq>`), planned within the budget (`plan_grid`), and shared out to those rungs
  with its cost once it has filled;
- the budget is split so that the buys and the start purchase together fit it, the start purchase counted
  at the risk gate's worst case (`START_SLIPPAGE` above the price, plus fees).

A filled buy at rung i places a sell at price i+1 for what it bought (net of a fee paid in the base asset);
a filled sell places the buy at price i again and returns the round trip's profit — sell proceeds less what
the sold base cost, fees of both legs included — for the alert (`RoundTrip`). This goes on for as long as the
grid runs. Outside the range nothing new is needed: above `high` every sell has filled and the buys wait below;
below `low` every buy has filled and the sells wait above (both said in the status line `/status` shows).

On futures a grid is long only: its sells are reduce-only, so they never open a short and put up no margin.

Dust: a sell's amount is rounded down to the venue's step (Binance takes a buy's fee in the base asset, so
0.002 bought leaves 0.001998 to sell, and 0.00199 can be sold). What cannot be sold — the part below the step,
or a whole remainder below the market minimum — is carried in `GridState.dust` (shown in /status) and added
to the next sell, and the level re-arms: a grid never asks again and again for a sell the venue must refuse.

Tags: `grid:buy:<i>:<seq>`, `grid:sell:<i+1>:<seq>` (`seq` counting the orders of rung i, so every order of
the strategy's life has its own tag) and `grid:start:<seq>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal

from bot.formatting import amount as fmt_amount
from bot.formatting import money
from bot.formatting import price as fmt_price
from bot.strategies.base import (
    AMOUNT_STEP,
    NOT_SENT,
    QUOTE_STEP,
    REJECTED_BY_VENUE,
    ZERO,
    Budget,
    Decision,
    DesiredOrder,
    Fill,
    FillUpdate,
    MarketInfo,
    MarketSnapshot,
    Params,
    RoundTrip,
    Strategy,
    amount_for_cost,
    floor_to,
)
from bot.strategies.params import ParamError, ParamSpec, format_value

#: idle: no order (a start purchase that was refused); buy: wants/has a buy at its price; sell: holds base and
#: sells it one price up; start: a sell rung waiting for the start purchase (its `bought` is the planned amount).
Phase = Literal["idle", "buy", "sell", "start"]
POLL = timedelta(minutes=1)
SPACINGS = ("arith", "geo")
#: The risk gate reserves a market buy sized in base as if it filled this much above the last price
#: (`bot.engine.risk.MARKET_SLIPPAGE`; a test keeps them equal): the start purchase is planned at that worst case.
START_SLIPPAGE = Decimal("0.02")


@dataclass(frozen=True)
class GridLevel:
    """One rung: `buy` wants/has a buy at its price, `sell` holds `bought` and sells it one price up."""

    index: int
    phase: Phase = "idle"
    seq: int = 0
    open_tag: str | None = None  # the order placed for the current phase; None: still to place
    bought: Decimal = ZERO
    buy_cost: Decimal = ZERO
    sold: Decimal = ZERO
    proceeds: Decimal = ZERO
    from_start: bool = False  # the base it sells came from the start purchase, not from its own buy


@dataclass(frozen=True)
class GridState:
    started: bool = False
    quote_per_level: Decimal = ZERO
    levels: tuple[GridLevel, ...] = ()
    round_trips: int = 0
    profit: Decimal = ZERO
    finished: bool = False
    dust: Decimal = ZERO  # base held but not sellable yet (below the step or the minimum); joins the next sell
    #: How many `quote_per_level` the budget was split into at start (the buys, plus the start purchase's
    #: worst case in the same unit): a new budget is split the same way (/edit). 0: stored before it existed.
    shares: Decimal = ZERO
    start_tag: str | None = None  # the start purchase in flight
    start_seq: int = 0
    start_bought: Decimal = ZERO  # what the start purchase has bought so far (net of a fee in base) …
    start_cost: Decimal = ZERO  # … and what that cost, fees included


@lru_cache(maxsize=256)
def level_prices(low: Decimal, high: Decimal, levels: int, spacing: str = "arith") -> tuple[Decimal, ...]:
    """Return `levels` prices from `low` to `high`, both included: equal steps (arith) or equal ratios (geo).

    Cached: every decision and fill needs them, and geometric ones take fractional powers."""
    if spacing == "geo":
        ratio = high / low
        inner = tuple(low * ratio ** (Decimal(i) / (levels - 1)) for i in range(1, levels - 1))
        return (low, *inner, high)
    step = (high - low) / (levels - 1)
    return (*tuple(low + step * i for i in range(levels - 1)), high)


def prices_of(params: Params) -> tuple[Decimal, ...]:
    """The grid's level prices from its parameters."""
    return level_prices(params["low"], params["high"], params["levels"], params.get("spacing") or "arith")


@dataclass(frozen=True)
class GridPlan:
    """How a grid starts at `price` with `spendable` quote: what the allocation summary shows, what `decide` does.

    `buys` are the rungs that start with a buy limit at their price, `sells` the rungs whose base the start
    purchase buys (`sell_amounts`, on the venue's step) to sell one price up.
    """

    prices: tuple[Decimal, ...]
    price: Decimal  # the price it starts at (the range's nearest edge when the price is outside it)
    per_level: Decimal  # quote per buy
    shares: Decimal
    buys: tuple[int, ...]
    sells: tuple[int, ...]
    sell_amounts: Mapping[int, Decimal]

    @property
    def start_amount(self) -> Decimal:
        """Base bought at start by one market buy: what the sells above the price need."""
        return sum(self.sell_amounts.values(), ZERO)

    @property
    def start_cost(self) -> Decimal:
        """What the start purchase costs at the planned price, before fees (the fill's price decides)."""
        return self.start_amount * self.price

    def shortfall(self, market: MarketInfo | None) -> Decimal | None:
        """The quote per level the market's minimums need when this plan's is less, else None.

        Every rung buys at its price sooner or later (a start sell re-arms as a buy), so every buy price is
        checked; and every start sell's amount must itself be a valid order one price up.
        """
        if market is None:
            return None if self.per_level > 0 else QUOTE_STEP
        needed = max(_smallest_buy(market, p) for p in self.prices[:-1])
        short = self.per_level < needed or self.per_level <= 0
        for i, amount in self.sell_amounts.items():
            if not market.can_trade(amount, self.prices[i + 1]):
                short = True
                needed = max(needed, _smallest_buy(market, self.prices[i + 1]) * self.prices[i] / self.prices[i + 1])
        return needed if short else None

    def profit_per_grid(self, fee_rate: Decimal) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """(smallest, largest) profit in quote of one round trip at `per_level`, then (smallest, largest) in
        percent of what the bought base cost, fees included: buying for `per_level` at price i, selling that
        at price i+1, paying `fee_rate` on each leg."""
        amounts, percents = [], []
        for i in range(len(self.prices) - 1):
            bought = self.per_level / self.prices[i]
            cost = self.per_level * (1 + fee_rate)
            profit = bought * self.prices[i + 1] * (1 - fee_rate) - cost
            amounts.append(profit)
            percents.append(profit / cost * 100 if cost > 0 else ZERO)
        return min(amounts), max(amounts), min(percents), max(percents)


def plan_grid(prices: tuple[Decimal, ...], price: Decimal, spendable: Decimal,
              market: MarketInfo | None) -> GridPlan:
    """Split `spendable` (quote the buys may use, fees set aside) over a grid starting at `price`.

    Rungs whose buy price is below the price buy for `q` each; each other rung needs `q / its buy price` of base,
    bought at start at `price` and reserved by the gate at `price × (1 + START_SLIPPAGE)`. So
    `q × (buys + Σ price/buy price × (1 + START_SLIPPAGE)) ≤ spendable`.
    """
    price = min(max(price, prices[0]), prices[-1])
    rungs = range(len(prices) - 1)
    buys = tuple(i for i in rungs if prices[i] < price)
    sells = tuple(i for i in rungs if prices[i] >= price)
    shares = len(buys) + sum((price / prices[i] * (1 + START_SLIPPAGE) for i in sells), ZERO)
    per_level = floor_to(spendable / shares, QUOTE_STEP) if shares > 0 and spendable > 0 else ZERO
    amounts = {}
    for i in sells:
        wanted = amount_for_cost(per_level, prices[i])
        amounts[i] = market.amount_down(wanted) if market else wanted
    return GridPlan(prices, price, per_level, shares, buys, sells, amounts)


def per_level_for(state: GridState, spendable: Decimal) -> Decimal:
    """A started grid's quote per level for a new budget, split as its budget was at start (/edit); a grid started
    before `shares` was stored split it over its armed levels."""
    shares = state.shares
    if shares <= 0:
        shares = Decimal(max(1, sum(1 for lv in state.levels if lv.phase != "idle")))
    return floor_to(spendable / shares, QUOTE_STEP)


class Grid(Strategy):
    name = "grid"
    title = "Grid"
    description = (
        "Places buy limits below the price and sell limits above it on every level of a range, buying at start "
        "the coins the sells need; each filled buy is sold one level up and each filled sell bought back one "
        "level down, again and again, collecting the spread in a range-bound market."
    )
    example = "/allocate kraken grid 500 BTC/USD low=26000 high=30000 levels=5"
    param_specs = (
        ParamSpec("low", "decimal", "lowest grid price", required=True, minimum=ZERO, strict_minimum=True),
        ParamSpec("high", "decimal", "highest grid price", required=True, minimum=ZERO, strict_minimum=True),
        ParamSpec("levels", "int", "number of price levels, low and high included", default=5, minimum=2,
                  maximum=100),
        ParamSpec("spacing", "choice", "arith: equal price steps; geo: equal percentage steps", default="arith",
                  choices=SPACINGS),
    )

    def check(self, params: Params) -> None:
        if params["low"] >= params["high"]:
            raise ParamError(
                f"low ({format_value('decimal', params['low'])}) must be below high "
                f"({format_value('decimal', params['high'])})"
            )

    def initial_state(self, params: Params, now: datetime) -> GridState:
        return GridState(levels=tuple(GridLevel(i) for i in range(params["levels"] - 1)))

    def decide(self, snapshot: MarketSnapshot, state: GridState, budget: Budget, params: Params) -> Decision:
        if state.finished:
            return Decision((), state, "finished", finished=True)
        low, high = params["low"], params["high"]
        prices = prices_of(params)
        price, symbol, quote = snapshot.price, snapshot.symbol, _quote(snapshot.symbol)
        market = snapshot.markets.get(symbol)
        if not state.started:
            if not low <= price <= high:
                return Decision((), state, _waiting(price, low, high, quote))
            plan = plan_grid(prices, price, budget.spendable, market)
            needed = plan.shortfall(market)
            if needed is not None:
                done = replace(state, finished=True)
                return Decision(
                    (), done,
                    f"stopped: {money(plan.per_level, quote)} per level is below the market minimum of "
                    f"{money(needed, quote)}; use fewer levels or a larger budget",
                    finished=True,
                )
            state = _start(state, plan)
        orders: list[DesiredOrder] = []
        levels = list(state.levels)
        room = budget.spendable
        start_amount = sum((lv.bought for lv in levels if lv.phase == "start"), ZERO)
        if start_amount > 0 and state.start_tag is None:
            tag = f"grid:start:{state.start_seq}"
            orders.append(DesiredOrder(symbol, "buy", "market", tag, amount=start_amount))
            room -= start_amount * price * (1 + START_SLIPPAGE)
            state = replace(state, start_tag=tag, start_seq=state.start_seq + 1)
        dust, round_trips, profit = state.dust, state.round_trips, state.profit
        for i, level in enumerate(levels):
            if level.open_tag is not None:
                continue
            if level.phase == "sell":
                left = level.bought - level.sold
                amount = market.amount_down(left + dust) if market else left
                if market and not market.can_trade(amount, prices[i + 1]):
                    # Too little to sell at all: carried as dust (sold with a later sell); the level re-arms.
                    dust += left
                    levels[i], trip = _closed(level, prices)
                    if trip is not None:
                        round_trips, profit = round_trips + 1, profit + trip.profit
                    continue
                tag = f"grid:sell:{i + 1}:{level.seq}"
                orders.append(DesiredOrder(symbol, "sell", "limit", tag, amount=amount, price=prices[i + 1],
                                           reduce_only=snapshot.futures))
                # The level now sells `amount`: its rest below the step joins the dust, or dust joins it.
                dust += left - amount
                levels[i] = replace(level, open_tag=tag, seq=level.seq + 1, bought=level.sold + amount)
            elif level.phase == "buy":
                cost = min(state.quote_per_level, room)
                if cost <= 0 or (market and cost < _smallest_buy(market, prices[i])):
                    continue  # no room yet: a sell must return quote first; retried on the next run
                tag = f"grid:buy:{i}:{level.seq}"
                orders.append(DesiredOrder(symbol, "buy", "limit", tag,
                                           amount=amount_for_cost(cost, prices[i]), price=prices[i]))
                room -= cost
                levels[i] = replace(level, open_tag=tag, seq=level.seq + 1)
        new_state = replace(state, levels=tuple(levels), dust=dust, round_trips=round_trips, profit=profit)
        return Decision(tuple(orders), new_state, _status(new_state, price, low, high, symbol, market))

    def on_fill(self, state: GridState, fill: Fill, params: Params) -> FillUpdate:
        parts = fill.tag.split(":")
        if parts[:2] == ["grid", "start"]:
            return FillUpdate(_start_filled(state, fill))
        if len(parts) != 4 or parts[0] != "grid":
            return FillUpdate(state)
        index = int(parts[2]) - (1 if parts[1] == "sell" else 0)
        if not 0 <= index < len(state.levels):
            return FillUpdate(state)
        level = state.levels[index]
        if level.open_tag != fill.tag:
            return FillUpdate(state)  # a stale or repeated report: already folded in
        base_fee, quote_fee = _fees(fill)
        trip: RoundTrip | None = None
        dust = state.dust
        prices = prices_of(params)
        if parts[1] == "buy":
            level = replace(level, bought=level.bought + fill.amount - base_fee,
                            buy_cost=level.buy_cost + fill.cost + quote_fee)
            if fill.closed:
                level = replace(level, open_tag=None, phase="sell" if level.bought > 0 else "buy")
        else:
            level = replace(level, sold=level.sold + fill.amount,
                            proceeds=level.proceeds + fill.cost - quote_fee - base_fee * fill.price)
            if fill.refused not in (None, REJECTED_BY_VENUE, NOT_SENT) and fill.closed:
                # The gate would not send it (below the minimum at today's rules): carry it, re-arm the level.
                dust += level.bought - level.sold
                level, trip = _closed(level, prices)
            elif fill.closed:
                if level.sold >= level.bought:
                    level, trip = _closed(level, prices)
                else:
                    level = replace(level, open_tag=None)  # ended part-filled: sell the rest again
        levels = (*state.levels[:index], level, *state.levels[index + 1:])
        new_state = replace(state, levels=levels, dust=dust)
        if trip is not None:
            new_state = replace(new_state, round_trips=state.round_trips + 1, profit=state.profit + trip.profit)
            note = f"round trip {new_state.round_trips} done at level {index}"
            return FillUpdate(new_state, profit=trip.profit, note=note, round_trip=trip)
        return FillUpdate(new_state)

    def dust(self, state: GridState, symbol: str) -> Mapping[str, Decimal]:
        return {symbol.split("/")[0]: state.dust} if state.dust > 0 else {}

    def next_run(self, state: GridState, params: Params, now: datetime) -> datetime | None:
        return None if state.finished else now + POLL

    def dump_state(self, state: GridState) -> dict[str, Any]:
        return {
            "started": state.started,
            "quote_per_level": str(state.quote_per_level),
            "round_trips": state.round_trips,
            "profit": str(state.profit),
            "finished": state.finished,
            "dust": str(state.dust),
            "shares": str(state.shares),
            "start_tag": state.start_tag,
            "start_seq": state.start_seq,
            "start_bought": str(state.start_bought),
            "start_cost": str(state.start_cost),
            "levels": [
                {
                    "index": lv.index, "phase": lv.phase, "seq": lv.seq, "open_tag": lv.open_tag,
                    "bought": str(lv.bought), "buy_cost": str(lv.buy_cost),
                    "sold": str(lv.sold), "proceeds": str(lv.proceeds), "from_start": lv.from_start,
                }
                for lv in state.levels
            ],
        }

    def load_state(self, data: Mapping[str, Any]) -> GridState:
        return GridState(
            started=bool(data["started"]),
            quote_per_level=Decimal(data["quote_per_level"]),
            round_trips=int(data["round_trips"]),
            profit=Decimal(data["profit"]),
            finished=bool(data["finished"]),
            dust=Decimal(data.get("dust", "0")),
            shares=Decimal(data.get("shares", "0")),
            start_tag=data.get("start_tag"),
            start_seq=int(data.get("start_seq", 0)),
            start_bought=Decimal(data.get("start_bought", "0")),
            start_cost=Decimal(data.get("start_cost", "0")),
            levels=tuple(
                GridLevel(
                    index=int(lv["index"]), phase=lv["phase"], seq=int(lv["seq"]), open_tag=lv["open_tag"],
                    bought=Decimal(lv["bought"]), buy_cost=Decimal(lv["buy_cost"]),
                    sold=Decimal(lv["sold"]), proceeds=Decimal(lv["proceeds"]),
                    from_start=bool(lv.get("from_start", False)),
                )
                for lv in data["levels"]
            ),
        )


def _start(state: GridState, plan: GridPlan) -> GridState:
    """The state of a grid starting on `plan`: buy rungs armed, sell rungs waiting for the start purchase."""
    levels = tuple(
        replace(lv, phase="buy") if lv.index in plan.buys
        else replace(lv, phase="start", bought=plan.sell_amounts[lv.index]) if plan.sell_amounts.get(lv.index)
        else lv
        for lv in state.levels
    )
    return replace(state, started=True, quote_per_level=plan.per_level, shares=plan.shares, levels=levels)


def _start_filled(state: GridState, fill: Fill) -> GridState:
    """Fold a fill of the start purchase in; once it has ended, share what it bought (and its cost, fees
    included) out to the rungs waiting for it, in proportion to what each planned, so each sells its part."""
    if fill.tag != state.start_tag:
        return state  # stale or repeated
    base_fee, quote_fee = _fees(fill)
    bought = state.start_bought + fill.amount - base_fee
    cost = state.start_cost + fill.cost + quote_fee
    if not fill.closed:
        return replace(state, start_bought=bought, start_cost=cost)
    state = replace(state, start_tag=None, start_bought=ZERO, start_cost=ZERO)
    waiting = [lv for lv in state.levels if lv.phase == "start"]
    if bought <= 0:
        if fill.refused in (None, REJECTED_BY_VENUE, NOT_SENT):
            return state  # nothing bought (cancelled, or unsent): the next run buys again
        # The gate refused it (budget, minimum): those rungs buy at their own price instead, as any rung does.
        return replace(state, levels=tuple(replace(lv, phase="buy", bought=ZERO) if lv.phase == "start" else lv
                                           for lv in state.levels))
    planned = sum((lv.bought for lv in waiting), ZERO)
    shares: dict[int, GridLevel] = {}
    amount_left, cost_left = bought, cost
    for n, lv in enumerate(waiting):
        last = n == len(waiting) - 1
        part = amount_left if last else floor_to(bought * lv.bought / planned, AMOUNT_STEP)
        paid = cost_left if last else floor_to(cost * lv.bought / planned, QUOTE_STEP)
        amount_left, cost_left = amount_left - part, cost_left - paid
        shares[lv.index] = replace(lv, phase="sell", bought=part, buy_cost=paid, from_start=True)
    return replace(state, levels=tuple(shares.get(lv.index, lv) for lv in state.levels))


def _fees(fill: Fill) -> tuple[Decimal, Decimal]:
    """The fill's fee in base, and in quote (a fee in a third currency, e.g. BNB, at its value in quote, as the
    budget is charged)."""
    base = fill.symbol.split("/")[0]
    base_fee = fill.fee if fill.fee_currency == base else ZERO
    quote_fee = fill.fee if _is_quote(fill) else ZERO if fill.fee_currency == base else fill.fee_quote
    return base_fee, quote_fee


def _smallest_buy(market: MarketInfo, price: Decimal) -> Decimal:
    """The smallest quote a buy at `price` needs so that its amount, rounded down to the venue's step, still meets
    the market's minimums (what the risk gate checks: anything less would be refused on every run)."""
    minimum = market.min_cost(price)
    step = market.amount_step
    if step is None or step <= 0 or market.can_trade(market.amount_down(minimum / price), price):
        return minimum
    return (market.amount_down(minimum / price) + step) * price


def _closed(level: GridLevel, prices: tuple[Decimal, ...]) -> tuple[GridLevel, RoundTrip | None]:
    """A level whose sell is over re-armed to buy, and its round trip (None if it sold nothing)."""
    trip = None
    if level.sold > 0:
        trip = RoundTrip(profit=level.proceeds - level.buy_cost, cost=level.buy_cost,
                         buy_price=prices[level.index], sell_price=prices[level.index + 1],
                         from_start=level.from_start)
    return GridLevel(level.index, phase="buy", seq=level.seq), trip


def _status(state: GridState, price: Decimal, low: Decimal, high: Decimal, symbol: str,
            market: MarketInfo | None) -> str:
    """The line /status shows: the orders resting, round trips and grid profit, and what happens outside the range.

    Never the live price itself, so a run that changes nothing writes nothing."""
    quote, base = _quote(symbol), symbol.split("/")[0]
    buys = sum(1 for lv in state.levels if lv.phase == "buy")
    sells = sum(1 for lv in state.levels if lv.phase in ("sell", "start"))
    done = (f"{_count(state.round_trips, 'round trip')}, grid profit {money(state.profit, quote, signed=True)}")
    if price > high:
        if sells == 0:
            return (f"above the range (high {fmt_price(high, quote)}): everything is sold; {_count(buys, 'buy')} "
                    f"wait below for the price to come back; {done}")
        return f"above the range (high {fmt_price(high, quote)}): {_count(sells, 'sell')} still to fill; {done}"
    if price < low:
        if buys == 0:
            held = sum((lv.bought - lv.sold for lv in state.levels if lv.phase == "sell"), ZERO)
            step = market.amount_step if market else None
            return (f"below the range (low {fmt_price(low, quote)}): every buy has filled; holding "
                    f"{fmt_amount(held, base, step, held=True)}, its sells wait above for the price to come back; "
                    f"{done}")
        return f"below the range (low {fmt_price(low, quote)}): {_count(buys, 'buy')} still to fill; {done}"
    return f"running: {_count(buys, 'buy')} below, {_count(sells, 'sell')} above; {done}"


def _is_quote(fill: Fill) -> bool:
    return fill.fee_currency == fill.symbol.split("/")[1].split(":")[0]


def _waiting(price: Decimal, low: Decimal, high: Decimal, quote: str) -> str:
    return (f"waiting: price {fmt_price(price, quote)} is outside the grid range "
            f"{fmt_price(low, quote)}–{fmt_price(high, quote)}")


def _quote(symbol: str) -> str:
    return symbol.split("/")[1].split(":")[0]


GRID = Grid()


def _count(number: int, noun: str) -> str:
    """`1 round trip`, `2 round trips`, `0 buys`."""
    return f"{number} {noun}{'' if number == 1 else 's'}"

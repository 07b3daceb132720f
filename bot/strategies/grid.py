"""Grid: a ladder of limit buys between `low` and `high`; each filled buy is sold one level up, then re-armed.

`levels` prices are spaced evenly from `low` to `high` inclusive. At start (once the price is inside the
range) every level strictly below the price, except the top one, gets a buy limit, and the budget is split
evenly over them (`quote_per_level`, fixed for the strategy's life). When the buy at level i has filled and
closed, a sell limit for the amount bought (net of a fee paid in the base asset) goes at level i+1; when that
sell closes, the buy at level i is placed again and the round trip's profit (sell proceeds − buy cost, fees
included) is returned for the alert. Outside the range it places no new buys and says so; sells are always
re-armed, since they only close positions already held. On futures a grid is long only: its sells are
reduce-only, so they never open a short and put up no margin (the budget holds the buys' margin only).

Dust: a sell's amount is rounded down to the venue's step (Binance takes a buy's fee in the base asset, so
0.002 bought leaves 0.001998 to sell, and 0.00199 can be sold). What cannot be sold — the part below the step,
or a whole remainder below the market minimum — is carried in `GridState.dust` (shown in /status) and added
to the next sell, and the level re-arms: a grid never asks again and again for a sell the venue must refuse.

Tags: `grid:buy:<i>:<seq>` and `grid:sell:<i+1>:<seq>`, `seq` counting the orders of level i, so every
order of the strategy's life has its own tag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from bot.formatting import money
from bot.formatting import price as fmt_price
from bot.strategies.base import (
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
    Strategy,
    amount_for_cost,
    floor_to,
)
from bot.strategies.params import ParamError, ParamSpec, format_value

Phase = Literal["idle", "buy", "sell"]
POLL = timedelta(minutes=1)


@dataclass(frozen=True)
class GridLevel:
    """One rung: `buy` wants/has a buy at its price, `sell` holds `bought` and sells it one level up."""

    index: int
    phase: Phase = "idle"
    seq: int = 0
    open_tag: str | None = None  # the order placed for the current phase; None: still to place
    bought: Decimal = ZERO
    buy_cost: Decimal = ZERO
    sold: Decimal = ZERO
    proceeds: Decimal = ZERO


@dataclass(frozen=True)
class GridState:
    started: bool = False
    quote_per_level: Decimal = ZERO
    levels: tuple[GridLevel, ...] = ()
    round_trips: int = 0
    profit: Decimal = ZERO
    finished: bool = False
    dust: Decimal = ZERO  # base held but not sellable yet (below the step or the minimum); joins the next sell


def level_prices(low: Decimal, high: Decimal, levels: int) -> tuple[Decimal, ...]:
    """Return `levels` prices evenly spaced from `low` to `high`, both included."""
    step = (high - low) / (levels - 1)
    return (*tuple(low + step * i for i in range(levels - 1)), high)


class Grid(Strategy):
    name = "grid"
    title = "Grid"
    description = (
        "Places buy limits on evenly spaced price levels; each filled buy is sold one level higher, "
        "then bought again, collecting the spread in a range-bound market."
    )
    example = "/allocate kraken grid 500 BTC/USD low=26000 high=30000 levels=5"
    param_specs = (
        ParamSpec("low", "decimal", "lowest grid price", required=True, minimum=ZERO, strict_minimum=True),
        ParamSpec("high", "decimal", "highest grid price", required=True, minimum=ZERO, strict_minimum=True),
        ParamSpec("levels", "int", "number of price levels, low and high included", default=5, minimum=2,
                  maximum=100),
    )

    def check(self, params: Params) -> None:
        if params["low"] >= params["high"]:
            raise ParamError(
                f"low ({format_value('decimal', params['low'])}) must be below high "
                f"({format_value('decimal', params['high'])})"
            )

    def initial_state(self, params: Params, now: datetime) -> GridState:
        return GridState(levels=tuple(GridLevel(i) for i in range(params["levels"])))

    def decide(self, snapshot: MarketSnapshot, state: GridState, budget: Budget, params: Params) -> Decision:
        if state.finished:
            return Decision((), state, "finished", finished=True)
        low, high = params["low"], params["high"]
        prices = level_prices(low, high, params["levels"])
        price = snapshot.price
        in_range = low <= price <= high
        market = snapshot.markets.get(snapshot.symbol)
        if not state.started:
            if not in_range:
                return Decision((), state, _waiting(price, low, high, _quote(snapshot.symbol)))
            state = self._arm_ladder(state, prices, price, budget)
            if not state.started:
                return Decision((), state, "waiting: no grid level below the price")
            armed = [p for p, lv in zip(prices, state.levels, strict=True) if lv.phase == "buy"]
            minimum = max(_smallest_buy(market, p) for p in armed) if market else ZERO
            if state.quote_per_level < minimum or state.quote_per_level <= 0:
                done = replace(state, finished=True)
                return Decision(
                    (), done,
                    f"stopped: {money(state.quote_per_level, _quote(snapshot.symbol))} per level is below the market "
                    f"minimum of {money(minimum, _quote(snapshot.symbol))}; use fewer levels or a larger budget",
                    finished=True,
                )
        orders: list[DesiredOrder] = []
        levels = list(state.levels)
        room = budget.spendable
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
                    levels[i], trip = _closed(level)
                    if trip is not None:
                        round_trips, profit = round_trips + 1, profit + trip
                    continue
                tag = f"grid:sell:{i + 1}:{level.seq}"
                orders.append(DesiredOrder(snapshot.symbol, "sell", "limit", tag, amount=amount, price=prices[i + 1],
                                           reduce_only=snapshot.futures))
                # The level now sells `amount`: its rest below the step joins the dust, or dust joins it.
                dust += left - amount
                levels[i] = replace(level, open_tag=tag, seq=level.seq + 1, bought=level.sold + amount)
            elif level.phase == "buy" and in_range:
                cost = min(state.quote_per_level, room)
                if cost <= 0 or (market and cost < _smallest_buy(market, prices[i])):
                    continue  # no room yet: a sell must return quote first; retried on the next run
                tag = f"grid:buy:{i}:{level.seq}"
                orders.append(DesiredOrder(snapshot.symbol, "buy", "limit", tag,
                                           amount=amount_for_cost(cost, prices[i]), price=prices[i]))
                room -= cost
                levels[i] = replace(level, open_tag=tag, seq=level.seq + 1)
        new_state = replace(state, levels=tuple(levels), dust=dust, round_trips=round_trips, profit=profit)
        status = _waiting(price, low, high, _quote(snapshot.symbol)) if not in_range else self._summary(new_state)
        return Decision(tuple(orders), new_state, status)

    @staticmethod
    def _arm_ladder(state: GridState, prices: tuple[Decimal, ...], price: Decimal, budget: Budget) -> GridState:
        below = [i for i in range(len(prices) - 1) if prices[i] < price]
        if not below:
            return state
        per_level = floor_to(budget.spendable / len(below), QUOTE_STEP)
        levels = tuple(replace(lv, phase="buy") if lv.index in below else lv for lv in state.levels)
        return replace(state, started=True, quote_per_level=per_level, levels=levels)

    @staticmethod
    def _summary(state: GridState) -> str:
        buys = sum(1 for lv in state.levels if lv.phase == "buy")
        sells = sum(1 for lv in state.levels if lv.phase == "sell")
        return (f"running: {_count(buys, 'buy')} and {_count(sells, 'sell')} armed, "
                f"{_count(state.round_trips, 'round trip')} done")

    def on_fill(self, state: GridState, fill: Fill, params: Params) -> FillUpdate:
        parts = fill.tag.split(":")
        if len(parts) != 4 or parts[0] != "grid":
            return FillUpdate(state)
        index = int(parts[2]) - (1 if parts[1] == "sell" else 0)
        if not 0 <= index < len(state.levels):
            return FillUpdate(state)
        level = state.levels[index]
        if level.open_tag != fill.tag:
            return FillUpdate(state)  # a stale or repeated report: already folded in
        base = fill.symbol.split("/")[0]
        base_fee = fill.fee if fill.fee_currency == base else ZERO
        # A fee in a third currency (BNB) is charged to the budget at its value in quote: so is it here.
        quote_fee = fill.fee if _is_quote(fill) else ZERO if fill.fee_currency == base else fill.fee_quote
        profit: Decimal | None = None
        dust = state.dust
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
                level, profit = _closed(level)
            elif fill.closed:
                if level.sold >= level.bought:
                    level, profit = _closed(level)
                else:
                    level = replace(level, open_tag=None)  # ended part-filled: sell the rest again
        levels = (*state.levels[:index], level, *state.levels[index + 1:])
        new_state = replace(state, levels=levels, dust=dust)
        if profit is not None:
            new_state = replace(new_state, round_trips=state.round_trips + 1, profit=state.profit + profit)
            note = f"round trip {new_state.round_trips} done at level {index}"
            return FillUpdate(new_state, profit=profit, note=note)
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
            "levels": [
                {
                    "index": lv.index, "phase": lv.phase, "seq": lv.seq, "open_tag": lv.open_tag,
                    "bought": str(lv.bought), "buy_cost": str(lv.buy_cost),
                    "sold": str(lv.sold), "proceeds": str(lv.proceeds),
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
            levels=tuple(
                GridLevel(
                    index=int(lv["index"]), phase=lv["phase"], seq=int(lv["seq"]), open_tag=lv["open_tag"],
                    bought=Decimal(lv["bought"]), buy_cost=Decimal(lv["buy_cost"]),
                    sold=Decimal(lv["sold"]), proceeds=Decimal(lv["proceeds"]),
                )
                for lv in data["levels"]
            ),
        )


def _smallest_buy(market: MarketInfo, price: Decimal) -> Decimal:
    """The smallest quote a buy at `price` needs so that its amount, rounded down to the venue's step, still meets
    the market's minimums (what the risk gate checks: anything less would be refused on every run)."""
    minimum = market.min_cost(price)
    step = market.amount_step
    if step is None or step <= 0 or market.can_trade(market.amount_down(minimum / price), price):
        return minimum
    return (market.amount_down(minimum / price) + step) * price


def _closed(level: GridLevel) -> tuple[GridLevel, Decimal | None]:
    """A level whose sell is over re-armed to buy, and its round trip's profit (None if it sold nothing)."""
    profit = level.proceeds - level.buy_cost if level.sold > 0 else None
    return GridLevel(level.index, phase="buy", seq=level.seq), profit


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

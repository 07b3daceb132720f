"""Replay a strategy over candles: the live engine's decision core against a simulated venue, candle by candle.

Each candle is one step, at its close:

1. resting limit orders the candle's range crosses fill at their own price, as makers (a buy when the low
   reaches it, a sell when the high does), oldest order first — as the fake venues fill them when the price
   moves, and as a real book would at that price;
2. the strategy decides when the engine would run it: when its `next_run` is due, or after fills (the engine
   re-runs a strategy soon after any fill or order end), with the snapshot the engine builds (price = the close,
   the closed candles of the window, the market's limits, its own holdings);
3. the decision goes through the same risk gate (`bot.engine.core.gate_decision`) with the same ledger; a market
   order fills at once at the close as a taker (a buy by cost buys cost ÷ close rounded down to the amount step,
   as the venues do), a limit order that would cross at once fills at the close as a taker, any other rests;
4. every fill is booked and told to the strategy by the same functions as a live fill (`book_event`), and the
   strategy's value is taken at the close (`value_of`).

Fees are the market's maker/taker rates (at least the venue's published entry tier), charged in the quote and
rounded as the venue reports them (`Terms.fee_step`). A
decision the live engine would pause for (`funds`, `invalid`) ends the replay there and says so.
Pure and synchronous: no clock, no I/O; the caller runs it in a thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Any

from bot.engine.core import add_holding, book_event, budget_of, fold_refusals, gate_decision, value_of
from bot.engine.risk import Ledger, MarketRules
from bot.strategies.base import Candle, MarketInfo, MarketSnapshot, Params, Strategy
from storage.orders import NewFill

ZERO = Decimal(0)
#: Closed candles in each snapshot: the live runner asks the venue for this many (`runner.CANDLE_LIMIT`).
WINDOW = 200
#: How many times a strategy decides again at one close after its own orders filled at once (the engine re-runs
#: a strategy right after its fills; a strategy settles in one or two).
RERUNS = 4


@dataclass(frozen=True)
class Terms:
    """One market as the venue trades it: the gate's rules, what the strategy sees, the fee rates."""

    rules: MarketRules
    info: MarketInfo
    maker_fee: Decimal
    taker_fee: Decimal
    #: The venue reports each fee rounded (half up) to this step (Binance: 1e-8); None keeps it exact.
    fee_step: Decimal | None = None


@dataclass(frozen=True)
class ReplayFill:
    """One simulated fill: what the live engine would have recorded for the order."""

    at: datetime
    tag: str
    side: str
    amount: Decimal
    price: Decimal
    cost: Decimal
    fee: Decimal  # in the quote
    maker: bool
    #: The strategy's value right after the fill (for the chart's marker).
    value: Decimal


@dataclass
class _Resting:
    tag: str
    side: str
    amount: Decimal
    price: Decimal
    reserve: Decimal


@dataclass
class Replay:
    """What a replay produced: its fills, the value and buy & hold at every close, and the ledger at the end."""

    budget: Decimal
    times: list[datetime] = field(default_factory=list)
    values: list[Decimal] = field(default_factory=list)
    hold: list[Decimal] = field(default_factory=list)
    fills: list[ReplayFill] = field(default_factory=list)
    net_spent: Decimal = ZERO
    fees: Decimal = ZERO
    holdings: dict[str, Decimal] = field(default_factory=dict)
    #: Why the live engine would have paused the strategy (the replay stopped there), if it would.
    paused: str | None = None
    finished: bool = False
    #: The strategy's last status line.
    note: str | None = None
    #: Quote still reserved by resting orders at the end.
    reserved: Decimal = ZERO


def replay(
    kind: Strategy,
    params: Params,
    budget: Decimal,
    symbol: str,
    terms: Terms,
    candles: Sequence[Candle],
    step: timedelta,
    *,
    start: int = 0,
) -> Replay:
    """Run `kind` over `candles[start:]` (those before `start` are the strategy's warm-up history only)."""
    rules, info = terms.rules, terms.info
    base, quote = info.base, info.quote
    result = Replay(budget=budget)
    if start >= len(candles):
        return result
    first_close = candles[start].ts + step
    state: Any = kind.initial_state(params, first_close)
    note: str | None = None
    next_run: datetime | None = first_close
    resting: list[_Resting] = []
    used_tags: set[str] = set()
    holdings: dict[str, Decimal] = {}
    net_spent = fees = ZERO
    hold_amount = _hold_amount(budget, candles[start].close, terms)
    done = False

    def fill(order_tag: str, side: str, amount: Decimal, price: Decimal, maker: bool, at: datetime) -> None:
        nonlocal state, note, net_spent, fees
        cost = amount * price
        fee = cost * (terms.maker_fee if maker else terms.taker_fee)
        if terms.fee_step is not None:
            fee = fee.quantize(terms.fee_step, rounding=ROUND_HALF_UP)
        event = [NewFill(trade_key=f"t:{len(result.fills)}", side=side, amount=amount, price=price, cost=cost,
                         fee=fee, fee_currency=quote, fee_quote=fee, at=at)]
        booked = book_event(order_tag, symbol, side, event, closed=True, base=base)
        net_spent += booked.spent - booked.received
        fees += booked.fee_quote
        add_holding(holdings, symbol, side, amount, fee, quote)
        update = kind.on_fill(state, booked.fill, params)
        state, note = update.state, update.note or note
        value = value_of(budget, net_spent, holdings, {base: price})
        result.fills.append(ReplayFill(at, order_tag, side, amount, price, cost, fee, maker, value))

    for index in range(start, len(candles)):
        candle = candles[index]
        now = candle.ts + step
        active = False
        for order in list(resting):
            crossed = candle.low <= order.price if order.side == "buy" else candle.high >= order.price
            if crossed:
                resting.remove(order)
                fill(order.tag, order.side, order.amount, order.price, True, now)
                active = True
        reruns = 0
        while not done and (active or (next_run is not None and now >= next_run)) and reruns < RERUNS:
            reruns += 1
            window = tuple(candles[max(0, index + 1 - WINDOW): index + 1])
            snapshot = MarketSnapshot(
                now=now, symbol=symbol, price=candle.close, candles=window, markets={symbol: info},
                prices={symbol: candle.close}, holdings=dict(holdings),
            )
            reserved = sum((o.reserve for o in resting), ZERO)
            decision = kind.decide(snapshot, state, budget_of(budget, net_spent, reserved, [rules]), params)
            locked = sum((o.amount for o in resting if o.side == "sell"), ZERO)
            free = {quote: budget - net_spent - reserved, base: holdings.get(base, ZERO) - locked}
            gated = gate_decision(
                decision.orders, {symbol: rules}, snapshot.price_of, Ledger(budget, net_spent, reserved), free,
                placed=used_tags.__contains__,
            )
            if gated.halted is not None:
                desired, refused = gated.halted
                result.paused = f"the {desired.side} order on {desired.symbol} could not be placed: {refused.reason}"
                resting.clear()  # a paused strategy's resting orders are cancelled
                done = True
                break
            state, note = fold_refusals(kind, decision.state, decision.status, gated.skipped, params)
            active = False
            for desired, approved in gated.approved:
                used_tags.add(desired.tag)
                price = approved.price
                if desired.type == "market" or (price is not None and _marketable(desired.side, price, candle.close)):
                    amount = approved.amount
                    if amount is None:  # a buy by cost: the venue buys what the cost pays at the price, stepped
                        amount = _floor(approved.cost / candle.close, rules.amount_step)
                    if amount > 0:
                        fill(desired.tag, desired.side, amount, candle.close, False, now)
                        active = True
                else:
                    assert price is not None and approved.amount is not None  # noqa: S101 - a limit order
                    resting.append(_Resting(desired.tag, desired.side, approved.amount, price, approved.reserve))
            next_run = kind.next_run(state, params, now)
            if decision.finished and not gated.approved and not resting:
                result.finished = done = True
            if not active:
                break
        result.times.append(now)
        result.values.append(value_of(budget, net_spent, holdings, {base: candle.close}))
        result.hold.append(budget - hold_amount[1] + hold_amount[0] * candle.close)
    result.net_spent, result.fees, result.holdings, result.note = net_spent, fees, holdings, note
    result.reserved = sum((o.reserve for o in resting), ZERO)
    return result


def _hold_amount(budget: Decimal, price: Decimal, terms: Terms) -> tuple[Decimal, Decimal]:
    """Buy & hold: the budget (less the taker fee) bought at market at the first close; (amount, quote spent)."""
    amount = _floor(budget / (price * (1 + terms.taker_fee)), terms.rules.amount_step)
    cost = amount * price
    return amount, cost + cost * terms.taker_fee


def _marketable(side: str, price: Decimal, last: Decimal) -> bool:
    return price >= last if side == "buy" else price <= last


def _floor(value: Decimal, step: Decimal | None) -> Decimal:
    if step is None or step <= 0:
        return value
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def terms_for(info: Any, entry_taker_fee: Decimal, fee_step: Decimal | None = None) -> Terms:
    """A market's terms from the exchange layer's `MarketInfo` (fees at least the venue's entry tier)."""
    rules = MarketRules.from_info(info)
    seen = MarketInfo(info.symbol, info.base, info.quote, info.min_amount, info.min_cost, amount_step=info.amount_step)
    taker = max(info.taker_fee or ZERO, entry_taker_fee)
    maker = info.maker_fee if info.maker_fee is not None else taker
    return Terms(rules, seen, maker, taker, fee_step)


def max_drawdown(values: Sequence[Decimal]) -> Decimal:
    """The largest fall from a peak, as a fraction of that peak (0.25 = 25 %)."""
    peak, worst = ZERO, ZERO
    for value in values:
        peak = max(peak, value)
        if peak > 0:
            worst = max(worst, (peak - value) / peak)
    return worst


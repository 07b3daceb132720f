"""The risk gate: a pure, Decimal-only check of one desired order against the market, the budget and the balance.

Before an order is written as an intent, the gate rounds it to the venue's precision (amounts always DOWN, so
an order never exceeds what was asked), checks the market's minimums, and computes the worst-case quote the
order can consume — amount × price × (1 + fee), rounded UP to the quote's precision — which the engine then
reserves against the allocation. Invariant kept by the engine with this gate:

    net spent (fills, fees included) + reserved (live orders' worst case, less what they already spent) ≤ budget

On futures "net spent" is the margin of the open position at 1x (entry × size) less the realised P&L net of
fees (`bot.engine.pnl`), so the budget bounds the position's notional, long or short.

The allocation-time check (`allocation_headroom`) keeps the sum of the account's budgets within its free balance.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Literal

from bot.exchanges.models import MarketInfo
from bot.formatting import amount as fmt_amount
from bot.formatting import money
from bot.formatting import price as price_text
from bot.strategies.base import DesiredOrder
from bot.venues import ENTRY_TAKER_FEE

ZERO = Decimal(0)
#: Market orders sized in base have no price: reserve as if they filled this much worse than the last price.
MARKET_SLIPPAGE = Decimal("0.02")
#: Fee rate reserved for a market of a venue we know no fees of: the highest entry-tier taker fee of the venues
#: we support (Kraken's 0.40 %, see `bot.venues.ENTRY_TAKER_FEE`). Known venues reserve the larger of the
#: market's own fees and their entry tier's taker fee.
DEFAULT_FEE_RATE = max(ENTRY_TAKER_FEE.values())
QUOTE_STEP = Decimal("1e-8")
#: How far above its cost a buy-by-cost may be lifted to reach the venue's minimum order (rounding losses only).
MAX_LIFT = Decimal("0.05")

RefusalKind = Literal["budget", "minimum", "funds", "invalid"]


@dataclass(frozen=True)
class MarketRules:
    """One market's precision (as step sizes) and limits, in Decimal."""

    symbol: str
    base: str
    quote: str
    amount_step: Decimal | None = None
    price_step: Decimal | None = None
    quote_step: Decimal | None = None
    amount_min: Decimal | None = None
    cost_min: Decimal | None = None
    fee_rate: Decimal = DEFAULT_FEE_RATE
    contract: bool = False

    @classmethod
    def from_info(cls, info: MarketInfo) -> MarketRules:
        """Build from the exchange layer's market description (steps already in Decimal)."""
        fee = max(info.taker_fee or ZERO, info.maker_fee or ZERO, ENTRY_TAKER_FEE.get(info.venue, ZERO))
        return cls(
            symbol=info.symbol,
            base=info.base,
            quote=info.quote,
            amount_step=info.amount_step,
            price_step=info.price_tick,
            quote_step=None,  # the venue's quote precision is not in the market description: 1e-8
            amount_min=info.min_amount,
            cost_min=info.min_cost,
            fee_rate=fee if fee > 0 else DEFAULT_FEE_RATE,
            contract=info.contract,
        )

    def amount_down(self, amount: Decimal) -> Decimal:
        return _round(amount, self.amount_step, ROUND_FLOOR)

    def price_round(self, price: Decimal, side: str) -> Decimal:
        """Round a limit price to the tick: a buy never pays more, a sell never asks less than intended."""
        return _round(price, self.price_step, ROUND_FLOOR if side == "buy" else ROUND_CEILING)

    def quote_down(self, value: Decimal) -> Decimal:
        return _round(value, self.quote_step or QUOTE_STEP, ROUND_FLOOR)

    def quote_up(self, value: Decimal) -> Decimal:
        """Round a quote amount UP (reservations) to the quote's step (1e-8 unless the market says)."""
        return _round(value, self.quote_step or QUOTE_STEP, ROUND_CEILING)


@dataclass(frozen=True)
class Ledger:
    """A strategy's budget position: `spent` is net (buys + fees − sale proceeds); `reserved` by live orders."""

    budget: Decimal
    spent: Decimal = ZERO
    reserved: Decimal = ZERO

    @property
    def headroom(self) -> Decimal:
        return self.budget - self.spent - self.reserved


@dataclass(frozen=True)
class Approved:
    """The order as it will be sent (rounded) and the worst-case quote to reserve for it."""

    amount: Decimal | None
    cost: Decimal | None
    price: Decimal | None
    reserve: Decimal


@dataclass(frozen=True)
class Refused:
    """Why the gate refused: `budget`/`minimum` are skipped quietly; `funds`/`invalid` pause the strategy."""

    kind: RefusalKind
    reason: str


def check_order(
    order: DesiredOrder,
    rules: MarketRules,
    *,
    last_price: Decimal,
    ledger: Ledger,
    free_quote: Decimal | None,
    free_base: Decimal | None = None,
) -> Approved | Refused:
    """Round `order` to the venue's precision and check limits, budget and balance; never raises."""
    if last_price <= 0:
        return Refused("invalid", f"no valid price for {rules.symbol}")
    fee = rules.fee_rate
    price = rules.price_round(order.price, order.side) if order.price is not None else None
    if price is not None and price <= 0:
        shown = price_text(order.price, rules.quote)
        return Refused("minimum", f"limit price {shown} rounds to nothing at {rules.symbol}'s tick")
    cost: Decimal | None = None
    amount: Decimal | None = None
    # Spot: buys spend quote. Futures: an order that may open a position (either side) puts up margin, while a
    # reduce-only one only releases it (its loss is realised from the margin already booked as spent).
    spends_quote = not order.reduce_only if rules.contract else order.side == "buy"
    if order.cost is not None:
        cost = rules.quote_down(order.cost)
        if cost <= 0:
            return Refused("minimum", "order value rounds to nothing")
        # The venue converts the cost into an amount on its step: check the minimums on what it will buy.
        estimated_amount = rules.amount_down(cost / last_price)
        if not _meets_minimums(rules, estimated_amount, last_price):
            lifted = _smallest_amount(rules, last_price)
            if lifted is None or lifted * last_price > cost * (1 + MAX_LIFT):
                return Refused("minimum", f"{money(cost, rules.quote)} buys less than {rules.symbol}'s minimum order")
            # Rounding the amount down to the step cost the order its minimum (e.g. 10 USDT of BTC at a 10 USDT
            # minimum): buy the smallest amount that meets it instead, a hair above the cost, within the budget.
            cost, amount = None, lifted
    if amount is None and cost is not None:
        value = cost
        worst = cost * (1 + fee)
    else:
        if amount is None:
            assert order.amount is not None  # noqa: S101 - DesiredOrder guarantees one of amount/cost
            amount = rules.amount_down(order.amount)
        if amount <= 0:
            shown = fmt_amount(order.amount, rules.base)
            return Refused("minimum", f"amount {shown} rounds to nothing at {rules.symbol}'s step")
        unit = price if price is not None else last_price * (1 + MARKET_SLIPPAGE if order.side == "buy" else 1)
        if spends_quote and price is None and amount * unit * (1 + fee) > ledger.headroom:
            # A market order sized to the budget at the last price cannot also cover the slippage reserve:
            # trim it to what the budget can hold rather than skip it forever.
            amount = min(amount, rules.amount_down(max(ZERO, ledger.headroom) / (unit * (1 + fee))))
        if (rules.amount_min is not None and amount < rules.amount_min) or amount <= 0:
            shown = fmt_amount(amount, rules.base, rules.amount_step)
            return Refused("minimum", f"amount {shown} is below {rules.symbol}'s minimum")
        value = amount * (price if price is not None else last_price)
        worst = amount * unit * (1 + fee)
    # Binance USD-M waives its minimum notional for reduce-only orders: a position that fell below it can be closed.
    if rules.cost_min is not None and value < rules.cost_min and not (rules.contract and order.reduce_only):
        minimum = money(rules.cost_min, rules.quote)
        return Refused("minimum", f"order value {money(value, rules.quote)} is below the minimum {minimum}")

    reserve = rules.quote_up(worst) if spends_quote else ZERO
    if reserve > ledger.headroom:
        return Refused(
            "budget",
            f"needs up to {money(reserve, rules.quote)}, only {money(max(ZERO, ledger.headroom), rules.quote)} left",
        )
    if spends_quote and free_quote is not None and reserve > free_quote:
        return Refused(
            "funds",
            f"not enough free {rules.quote} on the account: needs up to {money(reserve, rules.quote)}, "
            f"free {money(free_quote, rules.quote)}",
        )
    if not spends_quote and not rules.contract and free_base is not None and amount is not None:
        if amount > free_base:
            return Refused("funds", f"not enough free {rules.base} to sell {fmt_amount(amount, rules.base)}: "
                                    f"free {fmt_amount(free_base, rules.base)}")
    return Approved(amount=amount, cost=cost, price=price, reserve=reserve)


def _meets_minimums(rules: MarketRules, amount: Decimal, price: Decimal) -> bool:
    if amount <= 0 or (rules.amount_min is not None and amount < rules.amount_min):
        return False
    return rules.cost_min is None or amount * price >= rules.cost_min


def _smallest_amount(rules: MarketRules, price: Decimal) -> Decimal | None:
    """The smallest amount on the venue's step that meets both minimums at `price` (None if unknown)."""
    if rules.amount_step is None or rules.amount_step <= 0:
        return None
    needed = max(rules.amount_min or ZERO, (rules.cost_min or ZERO) / price)
    amount = _round(needed, rules.amount_step, ROUND_CEILING)
    return amount if _meets_minimums(rules, amount, price) else amount + rules.amount_step


def smallest_buy_cost(rules: MarketRules, price: Decimal) -> Decimal:
    """The smallest quote a market buy by cost needs at `price` to meet the minimums once its amount is rounded
    down to the venue's step (what an allocation's per-buy amount must reach)."""
    amount = _smallest_amount(rules, price)
    if amount is None:
        return max(rules.cost_min or ZERO, (rules.amount_min or ZERO) * price)
    return rules.quote_up(amount * price)


def allocation_headroom(free_quote: Decimal, others: Iterable[Ledger]) -> Decimal:
    """What a new allocation may take: free quote minus what the account's other allocations may still spend.

    An allocation's open orders already hold their funds on the exchange (not in the free balance), so what it
    still claims from the free balance is its budget less its net spending and its reservations.
    """
    claimed = sum((max(ZERO, other.headroom) for other in others), ZERO)
    return max(ZERO, free_quote - claimed)


def _round(value: Decimal, step: Decimal | None, rounding: str) -> Decimal:
    if step is None or step <= 0:
        return value
    return (value / step).to_integral_value(rounding=rounding) * step

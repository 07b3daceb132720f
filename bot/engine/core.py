"""The decision core: the pure steps between a strategy and its orders, shared by the live engine and the backtester.

A strategy is pure (`bot.strategies.base`); what the engine does around it is pure too once the I/O is taken out:

- **apply a decision** (`gate_decision`, `fold_refusals`): each desired order goes through the risk gate with
  the ledger as it grows; a `budget`/`minimum`/`unpriced` refusal skips the order and is told back to the
  strategy as a refused end (`Fill.refused`), a `funds`/`invalid` refusal halts the whole decision;
- **apply a fill** (`book_event`, `ended`): one report of an order's new fills becomes what the budget ledger
  books (spent, received, fees valued in quote) and the `Fill` the strategy's `on_fill` is told;
- **value holdings** (`add_holding`, `holdings_of`, `value_of`): what the strategy owns from its own fills, net
  of fees taken in the base asset, and its worth at given prices.

`StrategyRunner` and `OrderDesk` call these with what they read from the database and the venue;
`bot.backtest.replay` calls them with candles. A second implementation of any of this would let a backtest
tell a different story from the live engine: keep every rule here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bot.engine.fills import ledger_fee
from bot.engine.risk import Approved, Ledger, MarketRules, Refused, check_order
from bot.strategies.base import Budget, DesiredOrder, Fill, Params, Strategy
from storage.orders import NewFill

ZERO = Decimal(0)


def budget_of(total: Decimal, net_spent: Decimal, reserved: Decimal, rules: Iterable[MarketRules]) -> Budget:
    """What `decide` is told about its allocation: the gate's fee rate is the highest of its markets'."""
    fee_rate = max((r.fee_rate for r in rules), default=ZERO)
    return Budget(total=total, spent=net_spent, reserved=reserved, fee_rate=fee_rate)


@dataclass
class Gated:
    """A decision through the risk gate: the orders to place (rounded, with their reservation), the skipped
    ones with the refusal's kind, and the refusal that halts the whole decision (funds, invalid) if any."""

    approved: list[tuple[DesiredOrder, Approved]] = field(default_factory=list)
    skipped: list[tuple[DesiredOrder, str]] = field(default_factory=list)
    halted: tuple[DesiredOrder, Refused] | None = None


def gate_decision(
    orders: Sequence[DesiredOrder],
    rules: Mapping[str, MarketRules],
    price_of: Callable[[str], Decimal | None],
    ledger: Ledger,
    free: MutableMapping[str, Decimal] | None,
    *,
    placed: Callable[[str], bool] = lambda tag: False,
) -> Gated:
    """Check a decision's orders one by one, each against the ledger and free balance the earlier ones left.

    `placed(tag)`: the order was already written by an earlier run (never twice). `free` (per asset, missing:
    none) is lowered by each approved order's reservation; None checks no balance.
    """
    gated = Gated()
    for desired in orders:
        if placed(desired.tag):
            continue
        market = rules.get(desired.symbol)
        price = price_of(desired.symbol)
        if market is None or price is None:
            gated.skipped.append((desired, "unpriced"))
            continue
        verdict = check_order(
            desired, market, last_price=price, ledger=ledger,
            free_quote=None if free is None else free.get(market.quote, ZERO),
            free_base=None if free is None else free.get(market.base, ZERO),
        )
        if isinstance(verdict, Refused):
            if verdict.kind in ("funds", "invalid"):
                gated.halted = (desired, verdict)
                return gated
            gated.skipped.append((desired, verdict.kind))
            continue
        gated.approved.append((desired, verdict))
        ledger = Ledger(ledger.budget, ledger.spent, ledger.reserved + verdict.reserve)
        if free is not None:
            free[market.quote] = free.get(market.quote, ZERO) - verdict.reserve
    return gated


def fold_refusals(
    kind: Strategy, state: Any, note: str | None, skipped: Iterable[tuple[DesiredOrder, str]], params: Params
) -> tuple[Any, str | None]:
    """Tell the strategy each skipped order closed unfilled and refused, so it re-plans instead of asking again."""
    for desired, why in skipped:
        update = kind.on_fill(state, Fill(
            tag=desired.tag, symbol=desired.symbol, side=desired.side, amount=ZERO,
            price=desired.price or ZERO, closed=True, refused=why,
        ), params)
        state, note = update.state, update.note or note
    return state, note


@dataclass(frozen=True)
class Booked:
    """One report's fills of one fee currency: what the strategy is told and what the ledger books (spot)."""

    fill: Fill
    #: The fills' quote value (their amount × price, summed as the venue reported them).
    cost: Decimal
    spent: Decimal
    received: Decimal
    #: Every fee of the event valued in quote (the ledger's `fees`).
    fee_quote: Decimal
    #: The part of the fee charged to the budget (all of it unless taken in the base asset).
    charged: Decimal


def book_event(tag: str, symbol: str, side: str, event: Sequence[NewFill], *, closed: bool, base: str) -> Booked:
    """Fold one event (new fills sharing a fee currency) into the `Fill` for `on_fill` and the ledger's entry.

    A buy spends its cost plus the charged fee; a sell returns its proceeds less it (a futures fill is booked
    from the position instead: `bot.engine.pnl.effect_of_last`, by the caller).
    """
    amount = sum((f.amount for f in event), ZERO)
    cost = sum((f.cost for f in event), ZERO)
    fee = sum((f.fee for f in event), ZERO)
    fee_quote = sum((f.fee_quote for f in event), ZERO)
    charged = sum((ledger_fee(f, base=base) for f in event), ZERO)
    currency = event[0].fee_currency if event else None
    price = cost / amount if amount else ZERO
    spent, received = (cost + charged, ZERO) if side == "buy" else (ZERO, cost - charged)
    fill = Fill(
        tag=tag, symbol=symbol, side=side, amount=amount, price=price,  # type: ignore[arg-type]
        closed=closed, fee=fee, fee_currency=currency, fee_quote=fee_quote,
    )
    return Booked(fill, cost, spent, received, fee_quote, charged)


def ended(tag: str, symbol: str, side: str, price: Decimal | None, refused: str | None) -> Fill:
    """The end of an order with nothing (more) filled: cancelled, expired, rejected (`refused`) or never sent."""
    return Fill(tag=tag, symbol=symbol, side=side, amount=ZERO, price=price or ZERO,  # type: ignore[arg-type]
                closed=True, refused=refused)


def add_holding(
    holdings: MutableMapping[str, Decimal], symbol: str, side: str, amount: Decimal, fee: Decimal,
    fee_currency: str | None,
) -> None:
    """Add one fill to what a strategy holds per base asset, net of a fee paid in that asset."""
    base = symbol.split("/")[0]
    paid = fee if fee_currency == base else ZERO
    change = amount if side == "buy" else -amount
    holdings[base] = holdings.get(base, ZERO) + change - paid


def holdings_of(fills: Iterable[tuple[str, Fill]]) -> dict[str, Decimal]:
    """What a strategy holds from its own fills `(symbol, fill)`, per base asset, net of fees in that asset."""
    result: dict[str, Decimal] = {}
    for symbol, fill in fills:
        add_holding(result, symbol, fill.side, fill.amount, fill.fee, fill.fee_currency)
    return result


def value_of(
    budget: Decimal, net_spent: Decimal, holdings: Mapping[str, Decimal], prices: Mapping[str, Decimal]
) -> Decimal:
    """A spot strategy's worth: its unspent budget plus what it holds at `prices` (per base asset)."""
    held = sum((amount * prices.get(asset, ZERO) for asset, amount in holdings.items() if amount), ZERO)
    return budget - net_spent + held

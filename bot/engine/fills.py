"""Turning what the exchange reports about an order into fill events, keyed so a re-poll never doubles one.

Two ways of keying, chosen per order and never mixed within one:

- **By trade** (Binance Spot and USD-M): each venue trade of the order is one fill keyed `t:<trade id>`,
  with the trade's own amount, price and fee. Binance reports an order's fee only with its trades, and its
  trade history can lag the order's status by a moment: an order whose trades do not yet cover its filled
  amount records what is visible and stays live until the rest is (so its fee is never lost).
- **By cumulative total** (Kraken, whose orders carry their own cumulative fee): each increase of the filled
  amount is one fill keyed `c:<cumulative filled>` carrying the difference from what was recorded before.

Either key is unique per order in the database, and the desk computes new fills under the order's lock, so
reading the same report twice, or two reports racing (a poll and a cancel), records each fill once.

Fees, valued in quote at the fill (`fee_quote`): quote as is, base at the fill price, a third currency (BNB)
at its price in quote. A fee in the base asset reduces the holdings instead of the budget; any other fee is
charged to the budget ledger (it adds to what a buy spends or subtracts from what a sell returns).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from bot.exchanges.models import Order as VenueOrder
from bot.exchanges.models import Trade
from bot.exchanges.venues import adapter
from storage.orders import NewFill

ZERO = Decimal(0)

#: Venue order statuses → ours.
_STATUS = {"open": "open", "closed": "closed", "canceled": "canceled", "expired": "canceled", "rejected": "rejected"}


@dataclass(frozen=True)
class Recorded:
    """What the database already holds for an order: its cumulative totals and its fee in its own currency."""

    filled: Decimal
    filled_cost: Decimal
    fee_native: Decimal


def order_status(order: VenueOrder) -> str:
    """Our status for a venue order (an unknown status counts as still open)."""
    return _STATUS.get(order.status or "open", "open")


def keyed_by_trade(venue: str, recorded_keys: set[str]) -> bool:
    """Whether an order's fills are keyed by trade id (an order recorded by cumulative totals stays so)."""
    return adapter(venue).fills_by_trade and not any(key.startswith("c:") for key in recorded_keys)


def fee_value(
    fee_currency: str | None,
    fee: Decimal,
    price: Decimal,
    *,
    base: str,
    quote: str,
    rates: Mapping[str, Decimal] | None = None,
) -> Decimal:
    """A fee valued in quote: quote as is, base at the fill price, a third currency at `rates` (else zero)."""
    if fee_currency == quote:
        return fee
    if fee_currency == base:
        return fee * price
    rate = (rates or {}).get(fee_currency or "")
    return fee * rate if rate is not None else ZERO


def charged_fee(fee_currency: str | None, fee_quote: Decimal, *, base: str) -> Decimal:
    """The part of a fee (valued in quote) charged to the budget: all of it unless taken in the base asset."""
    return ZERO if fee_currency == base else fee_quote


def ledger_fee(fill: NewFill, *, base: str) -> Decimal:
    """The part of a fill's fee charged to the budget."""
    return charged_fee(fill.fee_currency, fill.fee_quote, base=base)


def trades_amount(trades: tuple[Trade, ...] | list[Trade]) -> Decimal:
    return sum((t.amount or ZERO for t in trades), ZERO)


def trade_fill(
    trade: Trade, *, side: str, base: str, quote: str, rates: Mapping[str, Decimal] | None = None
) -> NewFill:
    """One venue trade as a fill keyed by its trade id."""
    amount = trade.amount or ZERO
    price = trade.price or ZERO
    cost = trade.cost if trade.cost is not None else amount * price
    fee = trade.fee_cost or ZERO
    return NewFill(
        trade_key=f"t:{trade.id}", side=side, amount=amount, price=price, cost=cost, fee=fee,
        fee_currency=trade.fee_currency,
        fee_quote=fee_value(trade.fee_currency, fee, price, base=base, quote=quote, rates=rates),
        at=datetime.fromtimestamp(trade.timestamp_ms / 1000, UTC) if trade.timestamp_ms else datetime.now(UTC),
    )


def new_fill(
    order: VenueOrder,
    recorded: Recorded,
    *,
    side: str,
    base: str = "",
    quote: str = "",
    rates: Mapping[str, Decimal] | None = None,
) -> NewFill | None:
    """The new fill implied by an order's cumulative totals and fee, or None when nothing more has filled."""
    filled = order.filled or ZERO
    if filled <= recorded.filled:
        return None
    cost_total = order.cost or ZERO
    if cost_total <= 0:
        cost_total = filled * (order.average or order.price or ZERO)
    amount = filled - recorded.filled
    cost = max(ZERO, cost_total - recorded.filled_cost)
    price = cost / amount
    fee = max(ZERO, (order.fee_cost or ZERO) - recorded.fee_native)
    return NewFill(
        trade_key=f"c:{filled.normalize()}", side=side, amount=amount, price=price, cost=cost,
        fee=fee, fee_currency=order.fee_currency,
        fee_quote=fee_value(order.fee_currency, fee, price, base=base, quote=quote, rates=rates),
        at=datetime.now(UTC),
    )

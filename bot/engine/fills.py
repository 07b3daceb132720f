"""Turning what the exchange reports about an order into fill events, keyed so a re-poll never doubles one.

The exchange reports an order's cumulative filled amount, cost and fee. Each increase of the filled amount
is one fill event keyed `c:<cumulative filled>` and carrying the difference from what was recorded before;
the key is unique per order in the database, so reading the same report twice records nothing new.

Fees are charged to the budget ledger only when paid in the quote currency (they add to what a buy spends or
subtract from what a sell returns); a fee in the base asset reduces the holdings instead and is valued at the
fill price for P&L; a fee in a third currency (e.g. BNB) is kept as reported and valued at zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from bot.exchanges.models import Order as VenueOrder
from bot.exchanges.models import Trade
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


def quote_fee(fee_currency: str | None, fee: Decimal, *, quote: str) -> Decimal:
    """The part of a fee charged in the quote currency (what moves the budget ledger)."""
    return fee if fee_currency == quote else ZERO


def fee_value(fee_currency: str | None, fee: Decimal, price: Decimal, *, base: str, quote: str) -> Decimal:
    """A fee valued in quote (for P&L): quote as is, base at the fill price, anything else as zero."""
    if fee_currency == quote:
        return fee
    if fee_currency == base:
        return fee * price
    return ZERO


def fee_from_trades(trades: Iterable[Trade], order_id: str) -> tuple[Decimal, str | None] | None:
    """The total fee of one order's trades (None when the venue listed none of them)."""
    mine = [t for t in trades if t.order_id == order_id]
    if not mine:
        return None
    currency = next((t.fee_currency for t in mine if t.fee_currency), None)
    total = sum((t.fee_cost or ZERO for t in mine if t.fee_currency in (currency, None)), ZERO)
    return total, currency


def new_fill(
    order: VenueOrder,
    recorded: Recorded,
    *,
    side: str,
    fee: tuple[Decimal, str | None] | None = None,
) -> NewFill | None:
    """The new fill implied by an order's cumulative totals, or None when nothing more has filled.

    `fee` overrides the order's own fee (Binance reports an order's fee only with its trades).
    """
    filled = order.filled or ZERO
    if filled <= recorded.filled:
        return None
    cost_total = order.cost or ZERO
    if cost_total <= 0:
        cost_total = filled * (order.average or order.price or ZERO)
    amount = filled - recorded.filled
    cost = max(ZERO, cost_total - recorded.filled_cost)
    fee_total, currency = fee if fee is not None else (order.fee_cost or ZERO, order.fee_currency)
    return NewFill(
        trade_key=f"c:{filled.normalize()}", side=side, amount=amount, price=cost / amount, cost=cost,
        fee=max(ZERO, fee_total - recorded.fee_native), fee_currency=currency, fee_quote=ZERO,
        at=datetime.now(UTC),
    )

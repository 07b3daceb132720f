"""The texts of the engine's alerts (fills, pauses, key problems, finished strategies, orders a stop resolved
later): plain data in, text out.

Alerts are sent with HTML parse mode by the notifier, so every value is escaped.
"""

from __future__ import annotations

from decimal import Decimal
from html import escape

from storage.models import Order, Strategy
from storage.orders import CLOSED

KIND_TITLES = {"dca": "DCA", "grid": "Grid", "rebalance": "Rebalance", "trend": "Trend"}


def fmt(value: Decimal, places: int | None = None) -> str:
    """A decimal without exponent or trailing zeros; `places` quantizes first (e.g. 2 for quote amounts)."""
    if places is not None:
        value = value.quantize(Decimal(1).scaleb(-places))
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def strategy_name(strategy: Strategy) -> str:
    return f"{KIND_TITLES.get(strategy.kind, strategy.kind)} #{strategy.id} {strategy.symbol}"


def fill_text(
    strategy: Strategy,
    *,
    side: str,
    amount: Decimal,
    base: str,
    price: Decimal,
    quote: str,
    cost: Decimal,
    fee: Decimal,
    fee_currency: str | None,
    used: Decimal,
    partial: bool,
    profit: Decimal | None = None,
) -> str:
    verb = "Bought" if side == "buy" else "Sold"
    lines = [
        f"<b>{escape(strategy_name(strategy))}</b>: {'partial fill' if partial else 'filled'}",
        f"{verb} {fmt(amount)} {escape(base)} at {fmt(price)} {escape(quote)} "
        f"(value {fmt(cost, 2)} {escape(quote)}, fee {fmt(fee)} {escape(fee_currency or quote)})",
        f"Budget: {fmt(used, 2)} used, {fmt(strategy.budget - used, 2)} left of {fmt(strategy.budget)} "
        f"{escape(strategy.quote)}",
    ]
    if profit is not None:
        lines.append(f"Round trip profit: {'+' if profit >= 0 else ''}{fmt(profit, 2)} {escape(quote)}")
    return "\n".join(lines)


def pause_text(strategy: Strategy, reason: str) -> str:
    return (
        f"<b>{escape(strategy_name(strategy))}</b> is paused.\n{escape(reason)}\n"
        f"Fix the cause, then /resume {strategy.id}."
    )


def key_rejected_text(label: str, venue_name: str, reason: str, paused: list[Strategy]) -> str:
    names = ", ".join(escape(strategy_name(s)) for s in paused) or "none"
    return (
        f"<b>The API key of {escape(label)} ({escape(venue_name)}) was rejected by the exchange.</b>\n"
        f"{escape(reason)}\nPaused strategies: {names}.\n"
        "Check the key on the exchange, then connect it again with /connect."
    )


def finished_text(strategy: Strategy, note: str | None) -> str:
    used = strategy.spent - strategy.received
    return (
        f"<b>{escape(strategy_name(strategy))}</b> has finished"
        + (f": {escape(note)}" if note else ".")
        + f"\nBudget used: {fmt(used, 2)} of {fmt(strategy.budget)} {escape(strategy.quote)}."
    )


def resolved_text(strategy: Strategy, order: Order, reason: str) -> str:
    """How an order ended that a stop (`reason`: "paused by /panic"…) could not confirm when it answered."""
    base, _, rest = order.symbol.partition("/")
    quote = rest.split(":")[0] or strategy.quote
    if order.amount is not None:
        what = f"{order.side} of {fmt(order.amount)} {escape(base)}"
    else:
        what = f"{order.side} for {fmt(order.cost or Decimal(0))} {escape(quote)}"
    if order.price is not None:
        what += f" at {fmt(order.price)} {escape(quote)}"
    lines = [
        f"<b>{escape(strategy_name(strategy))}</b> ({escape(reason)}): the {order.type} {what} that I could not "
        "confirm then is now settled."
    ]
    verb = "bought" if order.side == "buy" else "sold"
    closing = order.tag.startswith("stop:")  # /stop's own sale, not an order it cancels
    if order.status == CLOSED:
        lines.append(f"{'It filled' if closing else 'It had filled before it could be cancelled'}: {verb} "
                     f"{fmt(order.filled)} {escape(base)} for {fmt(order.filled_cost, 2)} {escape(quote)}.")
    elif order.exchange_order_id is not None:
        lines.append("It is cancelled on the exchange" + (
            f"; {fmt(order.filled)} {escape(base)} had filled before ({verb} for {fmt(order.filled_cost, 2)} "
            f"{escape(quote)})." if order.filled > 0 else "; nothing of it filled."
        ))
    else:
        lines.append("It never reached the exchange: nothing was placed.")
    if order.filled > 0 and not closing:
        lines.append(
            f"/resume {strategy.id} carries on from there." if strategy.status == "paused"
            else "The strategy is stopped: Strata leaves this as it is in your account."
        )
    return "\n".join(lines)

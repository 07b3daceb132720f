"""The texts of the engine's alerts (fills, pauses, key problems, finished strategies, orders a stop resolved
later): plain data in, text out.

Alerts are sent with HTML parse mode by the notifier, so every value is escaped.
"""

from __future__ import annotations

from decimal import Decimal
from html import escape

from bot.engine.pnl import AssetPnl, FillEffect
from bot.exchanges.errors import AUTH_REJECTED
from bot.strategies.naming import strategy_label
from storage.models import Order, Strategy
from storage.orders import CLOSED


def fmt(value: Decimal, places: int | None = None) -> str:
    """A decimal without exponent or trailing zeros; `places` quantizes first (e.g. 2 for quote amounts)."""
    if places is not None:
        value = value.quantize(Decimal(1).scaleb(-places))
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def strategy_name(strategy: Strategy) -> str:
    return strategy_label(strategy.kind, strategy.id, strategy.symbol, strategy.params, strategy.name)


def finished_reason(note: str | None) -> str | None:
    """A strategy's last note without its own "finished: " prefix (the message already says it finished)."""
    if note and note.startswith("finished: "):
        return note[len("finished: "):]
    return note


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
    futures: FillEffect | None = None,
) -> str:
    """A fill's alert; a futures fill also says the position it left and the P&L realised, as the venue books."""
    verb = "Bought" if side == "buy" else "Sold"
    lines = [
        f"<b>{escape(strategy_name(strategy))}</b>: {'partial fill' if partial else 'filled'}",
        f"{verb} {fmt(amount)} {escape(base)} at {fmt(price)} {escape(quote)} "
        f"(value {fmt(cost, 2)} {escape(quote)}, fee {fmt(fee)} {escape(fee_currency or quote)})",
    ]
    if futures is not None:
        lines += [
            f"Position: {position_text(futures.asset, quote)}",
            f"Realised P&amp;L net of fees: {signed(futures.realised)} {escape(quote)} on this fill, "
            f"{signed(futures.total_realised)} {escape(quote)} in total",
        ]
    lines.append(
        f"Budget: {fmt(used, 2)} used, {fmt(strategy.budget - used, 2)} left of {fmt(strategy.budget)} "
        f"{escape(strategy.quote)}"
    )
    if profit is not None:
        lines.append(f"Round trip profit: {'+' if profit >= 0 else ''}{fmt(profit, 2)} {escape(quote)}")
    return "\n".join(lines)


def signed(value: Decimal) -> str:
    """A money figure with its sign, to the cent: +12.5, -3.07, 0."""
    text = fmt(value, 2)
    return text if text.startswith("-") or text == "0" else f"+{text}"


def position_text(position: AssetPnl, quote: str) -> str:
    """A futures position in words: "short 0.003 BTC at entry 45000 USDT", or "flat"."""
    if position.held == 0 or position.entry_price is None:
        return "flat"
    return (
        f"{position.side} {fmt(abs(position.held))} {escape(position.asset)} at entry "
        f"{fmt(position.entry_price, 8)} {escape(quote)}"
    )


def pause_text(strategy: Strategy, reason: str) -> str:
    return (
        f"<b>{escape(strategy_name(strategy))}</b> is paused.\n{escape(reason)}\n"
        f"Fix the cause, then /resume {strategy.id}."
    )


def key_rejected_text(label: str, venue_name: str, reason: str, paused: list[Strategy]) -> str:
    names = ", ".join(escape(strategy_name(s)) for s in paused) or "none"
    if reason.startswith(AUTH_REJECTED):  # the generic diagnosis: the title says it, the fix follows with the label
        reason = (
            "The key may have been revoked or have expired, this server's IP may not be on its whitelist, or a "
            "permission may be missing."
        )
    return (
        f"<b>The API key of {escape(label)} ({escape(venue_name)}) was rejected by the exchange.</b>\n"
        f"{escape(reason)}\nPaused strategies: {names}.\n"
        "I try the key again every few minutes and tell you if it works again. To fix it now, send a new key "
        f"for this account with /connect replace {escape(label)} (its strategies are kept), or remove it with "
        f"/disconnect {escape(label)}."
    )


def key_unreadable_text(label: str, venue_name: str, paused: list[Strategy]) -> str:
    names = ", ".join(escape(strategy_name(s)) for s in paused) or "none"
    return (
        f"<b>The stored API key of {escape(label)} ({escape(venue_name)}) cannot be read.</b>\n"
        "It failed its integrity check: the database was changed or damaged. Nothing is traded on this "
        f"account.\nPaused strategies: {names}.\n"
        f"Send the key again with /connect replace {escape(label)} (its strategies are kept), or remove the "
        f"account with /disconnect {escape(label)}."
    )


def key_works_again_text(label: str, venue_name: str, paused: list[Strategy]) -> str:
    resume = " ".join(f"/resume {s.id}" for s in paused)
    return (
        f"✅ <b>The API key of {escape(label)} ({escape(venue_name)}) works again</b>: the account is active.\n"
        + (f"Its strategies stay paused until you resume them: {resume}" if paused else "It has no paused strategies.")
    )


def finished_text(strategy: Strategy, note: str | None) -> str:
    used = strategy.spent - strategy.received
    note = finished_reason(note)
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

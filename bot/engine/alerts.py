"""The texts of the engine's alerts (fills, pauses, key problems, finished strategies, orders a stop resolved
later): plain data in, text out.

Alerts are sent with HTML parse mode by the notifier, so every value is escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from html import escape

from bot.engine.figures import UNKNOWN_PRECISION, Figures, Precision, budget_text, fee_text, holding_text
from bot.engine.pnl import AssetPnl, FillEffect, is_contract, position_action
from bot.exchanges.errors import AUTH_REJECTED
from bot.formatting import amount as fmt_amount
from bot.formatting import money, percent
from bot.formatting import price as fmt_price
from bot.strategies.base import RoundTrip
from bot.strategies.naming import title
from bot.venues import FUTURES_LEVERAGE
from storage.models import Order, Strategy
from storage.orders import CLOSED


def strategy_name(strategy: Strategy) -> str:
    return title(strategy)


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
    figures: Figures,
    partial: bool,
    realised: Decimal | None = None,
    futures: FillEffect | None = None,
    round_trip: RoundTrip | None = None,
) -> str:
    """A fill's alert: what filled, then the strategy's figures after it (`bot.engine.figures`, as /status shows
    them). A spot sale says the P&L it realised; a futures fill what it did to the position ("Opened long"…), the
    position it left and the P&L it realised, as the venue books it. A grid sell that closes a round trip says
    that round trip's profit net of both legs' fees (`round_trip`)."""
    precision = figures.precision_of(base)
    verb = "Bought" if side == "buy" else "Sold"
    lines = [
        f"<b>{escape(strategy_name(strategy))}</b>: {'partial fill' if partial else 'filled'}",
        f"{verb} {fmt_amount(amount, escape(base), precision.amount_step)} at "
        f"{fmt_price(price, escape(quote), precision.price_tick)} (value {money(cost, escape(quote))}, "
        f"fee {fee_text(fee, fee_currency or quote, quote)})",
    ]
    if futures is not None:  # a futures fill speaks of the position instead of buying and selling
        lines[1:] = futures_fill_lines(futures, amount=amount, base=base, price=price, quote=quote, cost=cost,
                                       fee=fee, fee_currency=fee_currency, precision=precision)
    budget = budget_text(figures)
    lines.append(budget[0].upper() + budget[1:])
    if futures is None:
        held = figures.held.get(base)
        if held is not None:
            lines.append(f"Holds {holding_text(figures, held)}")
        on_fill = "" if realised is None else f"{money(realised, escape(quote), signed=True)} on this fill, "
        lines.append(
            f"Realised P&amp;L net of fees: {on_fill}{money(figures.realised, escape(quote), signed=True)} in total"
        )
    if round_trip is not None:
        lines.append(round_trip_text(round_trip, quote, precision))
    return "\n".join(lines)


def round_trip_text(trip: RoundTrip, quote: str, precision: Precision = UNKNOWN_PRECISION) -> str:
    """A grid round trip's profit net of fees: "Grid profit on this round trip (buy 105,000.00 USD, sell
    107,500.00 USD): +11.49 USD (+2.30%), fees of both legs deducted"."""
    q, tick = escape(quote), precision.price_tick
    pct = "" if trip.percent is None else f" ({percent(trip.percent)})"
    # The levels as the orders were placed: the risk gate rounds a buy's price down to the tick, a sell's up.
    buy, sell = _on_tick(trip.buy_price, tick, ROUND_FLOOR), _on_tick(trip.sell_price, tick, ROUND_CEILING)
    what = ("this sell of coins bought at start" if trip.from_start
            else f"this round trip (buy {fmt_price(buy, q, tick)}, sell {fmt_price(sell, q, tick)})")
    return f"Grid profit on {what}: {money(trip.profit, q, signed=True)}{pct}, fees of both legs deducted"


def _on_tick(price: Decimal, tick: Decimal | None, rounding: str) -> Decimal:
    return price if tick is None or tick <= 0 else (price / tick).to_integral_value(rounding=rounding) * tick


def futures_fill_lines(
    effect: FillEffect, *, amount: Decimal, base: str, price: Decimal, quote: str, cost: Decimal, fee: Decimal,
    fee_currency: str | None, precision: Precision = UNKNOWN_PRECISION,
) -> list[str]:
    """A futures fill as a trader reads it: "Opened long 0.122 ETH at 2,412.50 USDT", then the position it left
    (average entry, 1x) and the P&L it realised net of fees, on this fill and in total."""
    step = precision.amount_step
    action, before, after = effect.action, effect.held_before, effect.asset.held
    if action.startswith("Flipped"):  # one fill closed the position and opened the other side with the rest
        what = (f"{action}: closed {'long' if before > 0 else 'short'} {fmt_amount(abs(before), base, step)} and "
                f"opened {effect.asset.side} {fmt_amount(abs(after), base, step)}")
    else:
        what = f"{action} {fmt_amount(amount, base, step)}"
    return [
        f"{escape(what)} at {fmt_price(price, escape(quote), precision.price_tick)} "
        f"(notional {money(cost, escape(quote))}, fee {fee_text(fee, fee_currency or quote, quote)})",
        f"Position: {position_text(effect.asset, quote, precision)}",
        f"Realised P&amp;L net of fees: {money(effect.realised, escape(quote), signed=True)} on this fill, "
        f"{money(effect.total_realised, escape(quote), signed=True)} in total",
    ]


def position_text(position: AssetPnl, quote: str, precision: Precision = UNKNOWN_PRECISION) -> str:
    """A futures position in words: "short 0.003 BTC, entry 45,000.00 USDT, 1x", or "flat"."""
    if position.held == 0 or position.entry_price is None:
        return "flat"
    return (
        f"{position.side} {fmt_amount(abs(position.held), escape(position.asset), precision.amount_step)}, entry "
        f"{fmt_price(position.entry_price, escape(quote), precision.price_tick)}, {FUTURES_LEVERAGE}x"
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


def key_withdraw_text(label: str, venue_name: str, paused: list[Strategy]) -> str:
    """Withdrawals were turned on for a connected key: what it means and the two ways out."""
    names = ", ".join(escape(strategy_name(s)) for s in paused) or "none"
    return (
        f"🚨 <b>The API key of {escape(label)} ({escape(venue_name)}) can now withdraw funds.</b>\n"
        "Withdrawals were turned on for it after you connected it: whoever holds this key could move your funds "
        f"out. Strata stopped trading on this account.\nPaused strategies: {names}.\n"
        "Revoke the key on the exchange, or turn its withdrawals off: I check it again every few minutes and tell "
        f"you when it is safe, then /resume. Or send a new key (withdrawals off) with /connect replace "
        f"{escape(label)} (its strategies are kept). Orders already open on the exchange stay there."
    )


def trading_expiry_text(label: str, venue_name: str, expires: str, within: str) -> str:
    """The key's trading permission expires soon (Binance, a key without IP restriction): when, and the fix."""
    return (
        f"⏳ <b>Trading on the API key of {escape(label)} ({escape(venue_name)}) ends {escape(within)}</b>, on "
        f"{escape(expires)}: {escape(venue_name)} turns trading off for keys that are not restricted to an IP "
        "address. Then its strategies pause.\nTo keep trading, restrict the key to this server's IP address in "
        f"API Management (a restricted key does not expire), or create a new key and send it with /connect "
        f"replace {escape(label)} (its strategies are kept)."
    )


def key_works_again_text(label: str, venue_name: str, paused: list[Strategy], *, safe_again: bool = False) -> str:
    resume = " ".join(f"/resume {s.id}" for s in paused)
    state = "can no longer withdraw" if safe_again else "works again"
    return (
        f"✅ <b>The API key of {escape(label)} ({escape(venue_name)}) {state}</b>: the account is active.\n"
        + (f"Its strategies stay paused until you resume them: {resume}" if paused else "It has no paused strategies.")
    )


def finished_text(strategy: Strategy, note: str | None) -> str:
    note = finished_reason(note)
    q = escape(strategy.quote)
    return (
        f"<b>{escape(strategy_name(strategy))}</b> has finished"
        + (f": {escape(note)}" if note else ".")
        + f"\nBudget {money(strategy.budget, q)}: invested {money(strategy.spent, q)}, returned "
        f"{money(strategy.received, q)}. /status {strategy.id} shows its P&amp;L."
    )


def resolved_text(strategy: Strategy, order: Order, reason: str, held_before: Decimal | None = None) -> str:
    """How an order ended that a stop (`reason`: "paused by /panic"…) could not confirm when it answered; a futures
    order says what its fill did to the position ("closed long"), as fill alerts do, from `held_before` (the
    strategy's signed position before this order's fills)."""
    base, _, rest = order.symbol.partition("/")
    quote = rest.split(":")[0] or strategy.quote
    if order.amount is not None:
        what = f"{order.side} of {fmt_amount(order.amount, escape(base))}"
    else:
        what = f"{order.side} for {money(order.cost or Decimal(0), escape(quote))}"
    if order.price is not None:
        what += f" at {fmt_price(order.price, escape(quote))}"
    lines = [
        f"<b>{escape(strategy_name(strategy))}</b> ({escape(reason)}): the {order.type} {what} that I could not "
        "confirm then is now settled."
    ]
    verb = "bought" if order.side == "buy" else "sold"
    if held_before is not None and is_contract(order.symbol):
        verb = position_action(held_before, held_before + (order.filled if order.side == "buy" else -order.filled))
        verb = verb[0].lower() + verb[1:]
    closing = order.tag.startswith("stop:")  # /stop's own sale, not an order it cancels
    if order.status == CLOSED:
        lines.append(f"{'It filled' if closing else 'It had filled before it could be cancelled'}: {verb} "
                     f"{fmt_amount(order.filled, escape(base))} for {money(order.filled_cost, escape(quote))}.")
    elif order.exchange_order_id is not None:
        lines.append("It is cancelled on the exchange" + (
            f"; {fmt_amount(order.filled, escape(base))} had filled before ({verb} for "
            f"{money(order.filled_cost, escape(quote))})." if order.filled > 0 else "; nothing of it filled."
        ))
    else:
        lines.append("It never reached the exchange: nothing was placed.")
    if order.filled > 0 and not closing:
        lines.append(
            f"/resume {strategy.id} carries on from there." if strategy.status == "paused"
            else "The strategy is stopped: Strata leaves this as it is in your account."
        )
    return "\n".join(lines)



@dataclass(frozen=True)
class TradeLine:
    """One trade as an alert lists it, every figure already formatted by `bot.formatting` (plain text)."""

    market: str
    side: str
    amount: str
    price: str
    value: str
    at: str


def foreign_trades_text(label: str, venue_name: str, trades: list[TradeLine], more: int) -> str:
    """Trades on a connected account that Strata did not make (at most a few listed, and how many `more`), then
    what to do about them."""
    count = len(trades) + more
    lines = [
        f"🚨 <b>{'A trade' if count == 1 else f'{count} trades'} on {escape(label)} ({escape(venue_name)}) that "
        "Strata did not make</b>"
    ]
    for t in trades:
        verb = "Bought" if t.side == "buy" else "Sold"
        lines.append(
            f"• {escape(t.market)}: {verb} {escape(t.amount)} at {escape(t.price)} (value {escape(t.value)}), "
            f"{escape(t.at)}"
        )
    if more:
        lines.append(f"…and {more} more (the account's trade history on {escape(venue_name)} lists them all).")
    lines.append(
        f"Check the account on {escape(venue_name)}. If you did not make {'it' if count == 1 else 'them'}, someone "
        f"else has this API key: revoke it on {escape(venue_name)} now, then /disconnect {escape(label)} or send a "
        f"new key with /connect replace {escape(label)}."
    )
    lines.append("Trades you make yourself on this account are reported too: /settings turns these alerts off.")
    return "\n".join(lines)

"""Turn service results into chat text (HTML). Formatting only: no decisions, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from bot.engine.figures import Precision, budget_text, fee_text, holdings_text, pnl_text
from bot.exchanges.venues import adapter
from bot.exchanges.venues.paper import MARK as PAPER_MARK
from bot.formatting import amount as fmt_amount
from bot.formatting import money, number, percent
from bot.formatting import price as fmt_price
from bot.services.accounts import AccountView, AssetValue, Connected, LeftOpen, valuation_quote
from bot.services.positions import PositionView
from bot.venues import venue_name
from handlers.common import esc


def clip(text: str, limit: int = 200) -> str:
    """Free text (a venue's error, a strategy's note) cut to `limit` characters, so one line stays a line."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def balances_lines(balances: tuple[AssetValue, ...] | None, quote: str) -> list[str]:
    """Each asset's amount, and its value in the venue's main stable quote when it is another asset."""
    if balances is None:
        return ["  balance unavailable right now"]
    if not balances:
        return ["  no funds"]
    lines = []
    for item in balances:
        value = f" ≈ {money(item.value, esc(quote))}" if item.value is not None and item.asset != quote else ""
        shown = money(item.amount, esc(quote)) if item.asset == quote else fmt_amount(item.amount, esc(item.asset))
        lines.append(f"  {shown}{value}")
    return lines


ACCOUNT_STATES = {"active": "active", "key_rejected": "⛔ key rejected", "key_unreadable": "⛔ key unreadable",
                  "key_removed": "🔒 key removed"}


def _clock(at: datetime, now: datetime) -> str:
    """"19:45 UTC", with the date when it was not today ("3 Dec 19:45 UTC")."""
    at = at.astimezone(UTC)
    return at.strftime("%H:%M UTC") if at.date() == now.date() else f"{at.day} {at.strftime('%b %H:%M UTC')}"


def position_lines(positions: tuple[PositionView, ...] | None) -> list[str]:
    """A futures account's open positions as the venue reports them (entry, mark, unrealised P&L at 1x)."""
    if not positions:
        return ["  no open positions"]
    lines = ["  open positions (Strata runs them at 1x):"]
    for p in positions:
        lines.append(f"  • {esc(p.asset)}/{esc(p.quote)} {position_text(p)}")
    return lines


def account_lines(view: AccountView, now: datetime, *, refreshing: bool = False) -> list[str]:
    """One account of /accounts: its state, then its balances (and positions), fresh or "as of" when stored."""
    status = ACCOUNT_STATES.get(view.status, esc(view.status))
    lines = [f"<b>{esc(view.label)}</b> — {esc(view.venue_name)} — {status}"]
    if view.status == "active":
        if view.refresh_error:
            lines.append(f"  ⚠️ could not refresh: {esc(view.refresh_error)}")
        if view.as_of is not None:
            lines.append(f"  <i>as of {_clock(view.as_of, now)}</i>")
        if view.balances is not None:
            lines += balances_lines(view.balances, valuation_quote(view.venue))
        elif refreshing:
            lines.append("  checking…")
        elif not view.refresh_error:
            lines.append("  balance unavailable right now")
        if view.positions is not None:
            lines += position_lines(view.positions)
            if view.positions and view.balances:
                lines.append("  <i>(the USDT figure is the margin balance: the wallet plus unrealised P&amp;L)</i>")
    if view.note:
        lines.append(f"  <i>{esc(view.note)}</i>")
    return lines


def connected_text(result: Connected) -> str:
    view = result.account
    lines = [
        f"✅ Connected <b>{esc(view.venue_name)}</b> as <b>{esc(view.label)}</b>.",
        "Balances (top assets):",
        *balances_lines(view.balances, valuation_quote(view.venue)),
    ]
    if view.permissions:
        lines.append("Permissions seen: " + esc(", ".join(view.permissions)))
    for warning in result.warnings:
        lines.append(f"⚠️ {esc(warning)}")
    if view.testnet:
        lines.append("🧪 Testnet account: the withdraw permission could not be checked there.")
    lines.append("Next: /allocate a budget to a strategy (/strategies lists them).")
    return "\n".join(lines)


def paper_opened_text(result: Connected) -> str:
    view = result.account
    venue = adapter(view.venue)
    quote, market = venue.valuation_quote, venue.default_markets[0]
    lines = [
        f"✅ {PAPER_MARK} account <b>{esc(view.label)}</b> opened: simulated money, filled on "
        f"{esc(venue_name(adapter(view.venue).market_venue))}'s live public prices with its fees and minimums.",
        "Balance:",
        *balances_lines(view.balances, valuation_quote(view.venue)),
        "Nothing on it is real money, and every message about it says Paper.",
        f"Next, e.g. a DCA buying 10 {esc(quote)} of {esc(market.split('/')[0])} a day, 100 {esc(quote)} in all: "
        f"/allocate {esc(view.label)} dca 100 {esc(market)} every=1d amount=10 (/strategies lists them all).",
    ]
    return "\n".join(lines)


def accounts_text(views: list[AccountView], now: datetime, *, refreshing: bool = False) -> str:
    """/accounts: stored figures while `refreshing` ("as of" their fetch), then the fresh ones."""
    if not views:
        return "You have no connected accounts yet. /connect one."
    state = "refreshing…" if refreshing else f"updated {_clock(now, now)}"
    lines = [f"<b>Your accounts</b> — {state}"]
    for view in views:
        lines.append("")
        lines.extend(account_lines(view, now, refreshing=refreshing))
    return "\n".join(lines)


def replaced_text(result: Connected) -> str:
    view = result.account
    lines = [
        f"✅ New key stored for <b>{esc(view.label)}</b> ({esc(view.venue_name)}): the old key is destroyed and "
        "the account is active.",
        "Balances (top assets):",
        *balances_lines(view.balances, valuation_quote(view.venue)),
    ]
    for warning in result.warnings:
        lines.append(f"⚠️ {esc(warning)}")
    if result.paused:
        lines.append("Its strategies are kept and stay paused until you resume them: "
                     + " ".join(f"/resume {i}" for i in result.paused))
    return "\n".join(lines)


def left_open_lines(orders: tuple[LeftOpen, ...]) -> list[str]:
    """One line per order that may still be open on the exchange (the user cancels them there)."""
    lines = []
    for o in orders:
        base, _, rest = o.symbol.partition("/")
        price = f" at {fmt_price(o.price, esc(rest.split(':')[0]))}" if o.price is not None else ""
        amount = f" {fmt_amount(o.amount, esc(base))}" if o.amount is not None else ""
        ref = f"order id {esc(o.exchange_order_id)}, " if o.exchange_order_id else ""
        lines.append(
            f"  • {esc(o.symbol)} {esc(o.side)} {esc(o.type)}{amount}{price} "
            f"({ref}client id <code>{esc(o.client_order_id)}</code>)"
        )
    return lines


def param_default(p) -> str:
    """`required`, or `default: 1d` (a `ParamDescription`)."""
    return "required" if p.required else f"default: {esc(p.default)}"


def catalogue_text(descriptions) -> str:
    lines = ["<b>Strategies</b>"]
    for d in descriptions:
        lines.append("")
        lines.append(f"<b>{esc(d.title)}</b> (<code>{esc(d.name)}</code>) — {esc(d.description)}")
        for p in d.params:
            lines.append(f"  • <code>{esc(p.name)}</code> — {esc(p.description)} ({param_default(p)})")
        if d.example:
            lines.append(f"  e.g. <code>{esc(d.example)}</code>")
    return "\n".join(lines)


def preview_text(preview) -> str:
    params = " ".join(f"{k}={v}" for k, v in preview.params.items())
    return "\n".join(
        [
            "<b>Allocation summary</b>",
            f"Account: {esc(preview.account_label)} ({esc(preview.venue_name)})",
            f"Strategy: {esc(preview.title)}" + (f" “{esc(preview.name)}”" if getattr(preview, "name", None) else ""),
            f"Market: {esc(preview.symbol)}",
            f"Budget: {money(preview.budget, esc(preview.quote))} (hard ceiling; "
            f"{money(preview.available, esc(preview.quote))} available)",
            f"Parameters: <code>{esc(params) or 'defaults'}</code>",
            *([f"Leverage: {preview.leverage}x (no leverage): a position's margin is its full size, within the "
               "budget"] if getattr(preview, "leverage", None) else []),
            *(grid_summary_lines(preview.grid) if getattr(preview, "grid", None) else []),
            "",
            "Nothing trades until you press Confirm.",
        ]
    )


def grid_summary_lines(g) -> list[str]:
    """How a grid starts (a `GridSummary`): its orders below and above the price, the order size per level, the
    coins bought at start for the sells and about what they cost, and the profit of one grid net of fees."""
    plan, q, tick = g.plan, esc(g.quote), g.price_tick

    def span(prices) -> str:
        ends = [fmt_price(prices[0], q, tick), fmt_price(prices[-1], q, tick)]
        return ends[0] if ends[0] == ends[1] else f"{ends[0]}–{ends[1]}"

    lines = [""]
    if not g.in_range:
        lines.append(f"The price ({fmt_price(g.price, q, tick)}) is outside the range: the grid starts when it "
                     f"enters it. Planned at {fmt_price(plan.price, q, tick)}:")
    buys = (f"{len(plan.buys)} buy limit{'s' * (len(plan.buys) > 1)} below the price ({span(g.buys_at)})"
            if plan.buys else "no buy limit")
    sells = (f"{len(plan.sells)} sell limit{'s' * (len(plan.sells) > 1)} above it ({span(g.sells_at)})"
             if plan.sells else "no sell limit above it")
    lines.append(f"Grid: {buys} and {sells}.")
    lines.append(f"Order size: {money(plan.per_level, q)} per level (each buy, and the coins it sells one level up).")
    if plan.sells:
        lines.append(
            f"Bought at start: {fmt_amount(plan.start_amount, esc(g.base), g.amount_step)} (about "
            f"{money(plan.start_cost, q)} at {fmt_price(plan.price, q, tick)}, by one market order) for the sells "
            "above the price."
        )
    low, high, low_pct, high_pct = plan.profit_per_grid(g.fee_rate)
    amounts = (money(low, q, signed=True) if money(low, q) == money(high, q)
               else f"{money(low, q, signed=True)} to {money(high, q, signed=True)}")
    pcts = percent(low_pct) if percent(low_pct) == percent(high_pct) else f"{percent(low_pct)} to {percent(high_pct)}"
    lines.append(f"Profit per grid (a buy and its sell, fees of {percent(g.fee_rate * 100, signed=False)} a side "
                 f"deducted): {amounts} ({pcts}).")
    if high <= 0:
        lines.append("⚠️ The levels are closer than the fees of a round trip: each one loses money. Use fewer levels "
                     "or a wider range.")
    return lines


def edit_preview_text(preview) -> str:
    """The summary of an /edit: what changes, within which bounds, and that nothing changes before Confirm."""
    lines = [f"<b>Change {esc(preview.label)}</b>"]
    if preview.new_budget is not None:
        quote = preview.quote
        lines.append(f"Budget: {money(preview.budget, quote)} → <b>{money(preview.new_budget, quote)}</b>")
        lines.append(f"Used {money(preview.used, quote)}, reserved by open orders {money(preview.reserved, quote)}: "
                     f"the budget can be no less than {money(preview.minimum, quote)}"
                     + (f", and at most {money(preview.maximum, quote)} now." if preview.maximum is not None else "."))
        lines.append(f"Left after the change: {money(max(Decimal(0), preview.new_budget - preview.minimum), quote)}")
        if preview.per_level is not None:
            lines.append(f"Each grid level then buys for up to {money(preview.per_level, quote)}.")
    if preview.new_name is not None:
        lines.append(f"Name: “{esc(preview.name or '')}” → <b>“{esc(preview.new_name)}”</b>" if preview.name
                     else f"Name: <b>“{esc(preview.new_name)}”</b>")
    lines += ["", "Nothing changes until you press Confirm"
              + ("; the strategy uses the new budget from its next decision." if preview.new_budget is not None
                 else ".")]
    return "\n".join(lines)


def edited_text(preview) -> str:
    changes = []
    if preview.new_budget is not None:
        changes.append(f"budget {money(preview.new_budget, preview.quote)}")
    if preview.new_name is not None:
        changes.append(f"name “{esc(preview.new_name)}”")
    return f"✅ {esc(preview.label)} changed: {', '.join(changes)}. /status {preview.strategy_id} to follow it."


def _position(amount: Decimal, asset: str, step: Decimal | None = None) -> str:
    """A signed futures position in words: "short 0.003 BTC", "long 0.01 BTC", "flat"."""
    if amount == 0:
        return "flat"
    return f"{'long' if amount > 0 else 'short'} {fmt_amount(abs(amount), esc(asset), step)}"


def position_text(p: PositionView, precision: Precision | None = None, *, margin: bool = False) -> str:
    """An open futures position, the one way every view shows it: "long 0.003 BTC at 1x, entry 55,000.0 USDT,
    mark 54,000.0 USDT, notional 162.00 USDT, unrealised -3.00 USDT" (mark, notional and unrealised "?" when the
    mark could not be read), to the market's step and tick (`precision`, else the view's own). `margin`: with the
    margin it holds at 1x (/balance); a venue account at another leverage says so (/accounts)."""
    q, precision = esc(p.quote), p.precision if precision is None else precision
    tick = precision.price_tick
    held = f", margin {money(p.margin, q)}" if margin else ""
    text = (
        f"{p.side} {fmt_amount(abs(p.size), esc(p.asset), precision.amount_step, held=True)} at {p.leverage}x, "
        f"entry {fmt_price(p.entry, q, tick)}, mark {fmt_price(p.mark, q, tick)}, notional {money(p.notional, q)}"
        f"{held}, unrealised {money(p.unrealised, q, signed=True)}"
    )
    if p.venue_leverage is not None and p.venue_leverage != p.leverage:
        text += f" (the exchange shows {number(p.venue_leverage, 0)}x)"
    return text


def status_lines(s) -> list[str]:
    state = {"active": "▶️ running", "paused": "⏸ paused", "finished": "✅ finished", "stopped": "⏹ stopped"}
    head = f"<b>{esc(_label(s))}</b> on {esc(s.account_label)} — {state.get(s.status, s.status)}"
    lines = [head]
    if s.status == "paused" and s.pause_reason:
        lines.append(f"  reason: {esc(clip(s.pause_reason))}")
    f = s.figures
    lines.append(f"  {budget_text(f)}")
    held = holdings_text(f)
    if f.futures:
        shown = "flat" if s.position is None else position_text(s.position, f.precision_of(s.position.asset))
        lines.append(f"  position: {shown}")
    elif held:
        lines.append(f"  holds {esc(clip(held, 300))}")
    if s.dust:
        dust = ", ".join(fmt_amount(v, esc(k)) for k, v in s.dust.items())  # below the step: all its digits
        lines.append(f"  dust {clip(dust, 300)} (too little to sell yet: added to a later sell)")
    lines.append(f"  {pnl_text(f)}")
    lines.append(f"  open orders: {s.open_orders}")
    if getattr(s, "fills", None):
        lines.append(f"  fills: {s.fills}")
    if s.note:
        lines.append(f"  {esc(clip(s.note))}")
    if s.next_run is not None:
        lines.append(f"  next run: {s.next_run.strftime('%Y-%m-%d %H:%M:%S UTC')}")
    return lines


def _label(s) -> str:
    """`#1 DCA BTC/USDT “name”` (the service's label; a status built without one falls back to the parts)."""
    return s.label or f"#{s.id} {s.title} {s.symbol}"


def status_detail_text(s) -> str:
    """`/status <id>`: one strategy's lines, its parameters and, for spot, what it invested and got back."""
    lines = status_lines(s)
    if s.params:
        params = " ".join(f"{k}={v}" for k, v in s.params.items())
        lines.insert(1, f"  parameters: <code>{esc(clip(params, 300))}</code>")
    lines.append(f"{fills_footer([s], s.fill_poll_seconds)} /status lists all your strategies.")
    return "\n".join(lines)


def status_text(page) -> str:
    """One page of /status (a `StatusPage`)."""
    if not page.statuses:
        return "No strategies yet. /allocate a budget to one (/strategies lists them)."
    head = "<b>Your strategies</b>"
    if page.pages > 1:
        head += f" — page {page.page} of {page.pages} ({page.total} strategies)"
    lines = [head]
    for s in page.statuses:
        lines.append("")
        lines.extend(status_lines(s))
    lines.append("")
    lines.append(fills_footer(page.statuses, page.fill_poll_seconds))
    return "\n".join(lines)


def fills_footer(statuses, poll_seconds: float) -> str:
    """How the listed strategies' fills reach the bot, as their "fills:" lines say: pushed by the exchange's stream
    (polled only by a safety sweep), or polled every `poll_seconds` (also while a stream is down)."""
    modes = {getattr(s, "fills", None) for s in statuses}
    sweep = next((s.fill_sweep_seconds for s in statuses if getattr(s, "fill_sweep_seconds", None)), None)
    safety = f" (with a safety check every {sweep / 60:g} min)" if sweep else ""
    if "streamed" in modes and "polled" not in modes:
        return f"Fills are streamed by the exchange as they happen{safety}."
    if "streamed" in modes:
        return (f"Fills are streamed as they happen where marked “streamed”{safety} and checked every "
                f"{poll_seconds:g} s where “polled”.")
    return f"Fills are checked every {poll_seconds:g} s."


def stop_text(summary) -> str:
    f = summary.figures
    lines = [f"⏹ <b>{esc(summary.title)}</b> stopped; its budget is released."]
    if summary.canceled:
        lines.append(f"Cancelled {summary.canceled} open order(s).")
    lines += sale_lines(summary)
    lines += kept_lines(summary)
    q = esc(f.quote)
    fees = money(f.fees, q)
    if summary.futures:  # buy cost and sale proceeds mean nothing for a short: the venue's P&L says it all
        lines.append(f"Fees {fees}.")
    else:
        lines.append(f"Invested {money(f.invested, q)}, returned {money(f.returned, q)}, fees {fees}.")
    lines.append(f"Realised P&amp;L net of fees: {money(f.realised, q, signed=True)}.")
    lines += _settling_lines(summary)
    return "\n".join(lines)


def sale_lines(summary) -> list[str]:
    """What a stop's sale did, one line per asset: "Sold 0.0015 BTC at market (average 50,000.00 USDT)."."""
    f = summary.figures
    lines = []
    for asset, amount in summary.sold.items():
        precision = f.precision_of(asset)
        at = summary.sold_at.get(asset)
        average = f" (average {fmt_price(at, esc(summary.quote), precision.price_tick)})" if at is not None else ""
        if summary.futures:
            lines.append(f"Closed the {_position(amount, asset, precision.amount_step)} position at market{average}.")
        else:
            verb = "Sold" if amount > 0 else "Bought back"
            lines.append(
                f"{verb} {fmt_amount(abs(amount), esc(asset), precision.amount_step, held=True)} at market{average}."
            )
    return lines


def kept_lines(summary) -> list[str]:
    """What a stop left held, one line per asset (also what a sale left below the exchange's step: dust)."""
    f = summary.figures
    lines = []
    for asset, amount in summary.kept.items():
        step = f.precision_of(asset).amount_step
        dust = " (dust: below the market's minimum, too little to sell)" if asset in summary.dust else ""
        if summary.futures:
            lines.append(f"Kept the {_position(amount, asset, step)} position open{dust}.")
        else:
            lines.append(f"Kept {fmt_amount(amount, esc(asset), step, held=True)}{dust}.")
    return lines


PANIC_TEXT_LIMIT = 3800  # characters of per-strategy lines: the answer stays one Telegram message (4,096)


def panic_sell_text(result) -> str:
    """The answer to "Pause, cancel and sell": per strategy what was sold, at what, the dust left, the errors."""
    lines = [
        f"🛑 Cancelled {result.canceled} open order(s) and stopped {len(result.sales)} "
        f"strateg{'y' if len(result.sales) == 1 else 'ies'}, selling what they bought (futures: closing their "
        "positions) at market. Their budgets are released; /status shows them.",
    ]
    lines += _settling_lines(result)
    lines += _strategy_blocks(result.sales, _sale_outcome, PANIC_TEXT_LIMIT - sum(len(line) for line in lines))
    if not result.sales:
        lines.append("None of your strategies held anything to sell.")
    return "\n".join(lines)


def _strategy_blocks(summaries, outcome, room: int) -> list[str]:
    """A bold title and the outcome lines per strategy, as many as fit in `room` characters, then "… and N more"."""
    lines: list[str] = []
    for index, summary in enumerate(summaries):
        block = [f"<b>{esc(clip(summary.title, 80))}</b>"] + [f"  {line}" for line in outcome(summary)]
        size = sum(len(line) + 1 for line in block)
        if size > room:
            lines.append(f"… and {len(summaries) - index} more strategies (see /status).")
            break
        lines += block
        room -= size
    return lines


def _sale_outcome(summary) -> list[str]:
    lines = sale_lines(summary) or ["Nothing to sell."]
    f = summary.figures
    for asset, amount in summary.dust.items():
        step = f.precision_of(asset).amount_step
        held = _position(amount, asset, step) if summary.futures else fmt_amount(amount, esc(asset), step, held=True)
        lines.append(f"Dust left: {held} (below the market's minimum, too little to sell).")
    lines += [f"⚠️ {esc(clip(e, 200))}" for e in summary.errors]
    if summary.unconfirmed:
        lines.append(f"⚠️ {summary.unconfirmed} order(s) not confirmed yet; I keep checking.")
    return lines


def wind_down_notice_text(message: str | None, sell: bool) -> str:
    """The wind-down's first message to every user: the host's words (or ours), then what happens now."""
    head = esc(clip(message, 1500)) if message else "The host of this Strata bot is closing the service."
    what = "pausing your strategies and cancelling their open orders"
    if sell:
        what = ("stopping your strategies, cancelling their open orders and selling what they bought at market "
                "(futures: closing their positions)")
    return (f"📣 {head}\n\nI am now {what}, then deleting your API keys from this bot. You will get a summary "
            "in a moment.")


def wind_down_report_text(outcome) -> str:
    """The wind-down's last message to a user: each strategy's outcome, the keys deleted, what is left open."""
    lines = [f"🔒 <b>The service is closed.</b> Cancelled {outcome.canceled} open order(s) and stopped "
             f"{len(outcome.stopped)} strateg{'y' if len(outcome.stopped) == 1 else 'ies'}"
             + (", selling what they bought at market." if outcome.sell else "; what they bought is kept.")]
    tail = []
    if outcome.keys_removed:
        tail.append("Your API keys were deleted from this bot ("
                    + ", ".join(esc(clip(label, 40)) for label in outcome.keys_removed[:20])
                    + "); you may delete them on the exchange too. Your history stays with the host.")
    if outcome.left_open:
        tail.append(f"⚠️ {len(outcome.left_open)} order(s) could not be cancelled; cancel them on the exchange:")
        tail += [f"  {esc(clip(order, 120))}" for order in outcome.left_open[:10]]
    if outcome.kept_keys:
        tail.append("The keys of " + ", ".join(esc(clip(label, 40)) for label in outcome.kept_keys[:20])
                    + " are kept until those orders are cancelled.")
    room = PANIC_TEXT_LIMIT - sum(len(line) + 1 for line in lines + tail)
    lines += _strategy_blocks(outcome.stopped, _sale_outcome if outcome.sell else _kept_outcome, room)
    return "\n".join(lines + tail)


def _kept_outcome(summary) -> list[str]:
    return kept_lines(summary) or ["It held nothing."]


def panic_text(result) -> str:
    if result.sell:
        return panic_sell_text(result)
    lines = [
        f"🛑 Paused {result.paused} strateg{'y' if result.paused == 1 else 'ies'} and cancelled "
        f"{result.canceled} open order(s)."
        + (f" {_of_them(result.paper, result.paused)} on a {PAPER_MARK} account (simulated money)." if result.paper
           else ""),
        "When you are ready, press Resume all (or send /resume all) to resume the strategies this paused, or "
        "/resume one of them: each places the orders it needs again.",
    ]
    lines += _settling_lines(result)
    return "\n".join(lines)


def _of_them(part: int, whole: int) -> str:
    return ("It trades" if whole == 1 else "They all trade") if part == whole else f"{part} of them trade"


RESUME_ALL_SKIPPED_SHOWN = 20  # a line each; with the resumed list the reply stays one message


def resume_all_text(result) -> str:
    """The answer to Resume all / `/resume all`: what runs again, and each paused strategy left paused with why."""
    if result.resumed:
        lines = [f"▶️ Resumed {len(result.resumed)} strateg{'y' if len(result.resumed) == 1 else 'ies'} "
                 "paused by /panic: " + ", ".join(esc(clip(label, 60)) for label in result.resumed) + "."]
    else:
        lines = ["Nothing to resume: no strategy is paused by /panic any more (see /status)."]
    if result.skipped:
        lines.append(f"Still paused ({len(result.skipped)}):")
        lines += [f"  {esc(clip(label, 60))}: {esc(clip(why, 160))}"
                  for label, why in result.skipped[:RESUME_ALL_SKIPPED_SHOWN]]
        if len(result.skipped) > RESUME_ALL_SKIPPED_SHOWN:
            lines.append(f"  … and {len(result.skipped) - RESUME_ALL_SKIPPED_SHOWN} more (see /status).")
    return "\n".join(lines)


def control_text(result) -> str:
    """The answer to /pause or /resume: what changed, and for /pause what happened to the open orders."""
    if result.status != "paused":
        return f"{esc(result.title)} is running again ▶️"
    lines = [f"{esc(result.title)} is paused ⏸"]
    if result.canceled:
        lines.append(f"Cancelled {_orders(result.canceled, 'resting')}; /resume {result.strategy_id} places "
                     f"{'it' if result.canceled == 1 else 'them'} again.")
    lines += _settling_lines(result)
    return "\n".join(lines)


def _orders(count: int, kind: str = "open") -> str:
    return f"{count} {kind} order{'' if count == 1 else 's'}"


def _settling_lines(result) -> list[str]:
    """Orders that filled before the cancel, orders not confirmed yet, and the exchange's errors."""
    lines = []
    if getattr(result, "filled", 0):
        count = result.filled
        lines.append(f"{count} order{' had' if count == 1 else 's had'} already filled before the cancel.")
    if result.unconfirmed:
        count = result.unconfirmed
        lines.append(
            f"⚠️ {count} order{'' if count == 1 else 's'} could not be confirmed yet; I keep checking and will "
            "tell you how it ends."
        )
    lines += [f"⚠️ {esc(e)}" for e in result.errors]
    return lines


# --- /balance, /trades, /profit --------------------------------------------------------------------------


def balance_text(report) -> str:
    """/balance: each account's assets valued in its quote, what the strategies hold of them, totals."""
    if not report.accounts:
        return "You have no connected accounts yet. /connect one."
    lines = ["<b>Balance</b>"]
    for account in report.accounts:
        q = esc(account.quote)
        lines += ["", f"<b>{esc(account.label)}</b> — {esc(account.venue_name)}"]
        if not account.available:
            lines.append(f"  <i>{esc(account.note or 'balance unavailable right now')}</i>")
        for a in account.assets:
            value = " (no price)" if a.value is None else f" ≈ {money(a.value, q)}"
            if a.value == a.amount:  # the quote itself, or a stable coin
                value = ""
            shown = money(a.amount, q) if a.asset == account.quote else fmt_amount(a.amount, esc(a.asset))
            line = f"  {shown}{value}"
            if a.held_by_strategies:
                who = ", ".join(f"{esc(h.title)} {fmt_amount(h.amount, esc(a.asset))}" for h in a.held_by_strategies)
                line += f" — strategies hold {fmt_amount(a.strategies_amount, esc(a.asset))} ({who})"
            lines.append(line)
        if account.others:
            lines.append(f"  … and {account.others} more asset(s) ≈ {money(account.others_value, q)}")
        for p in account.positions:
            lines.append(f"  {esc(p.title)}: {position_text(p, margin=True)}")
        if account.positions:
            lines.append(f"  ({q} is the margin balance: the wallet plus the positions' unrealised P&amp;L)")
        if account.total is not None:
            unvalued = f" ({account.unvalued} asset(s) without a price not counted)" if account.unvalued else ""
            lines.append(
                f"  Total ≈ {money(account.total, q)}{unvalued}; strategies hold ≈ "
                f"{money(account.strategies_total, q)}"
            )
    if report.totals:
        lines.append("")
        lines.append("<b>Total</b> " + "; ".join(
            f"≈ {money(v, esc(q))} (strategies hold ≈ {money(report.strategy_totals.get((q, paper)), esc(q))})"
            + (f" · {PAPER_MARK}" if paper else "")
            for (q, paper), v in report.totals.items()
        ))
    return "\n".join(lines)


def _paged(head: str, page, noun: str) -> str:
    """A view's heading, with "page X of Y (N things)" when it has more than one page."""
    return head + (f" — page {page.page} of {page.pages} ({page.total} {noun})" if page.pages > 1 else "")


def trades_text(page) -> str:
    """One page of /trades (a `TradesPage`), newest first."""
    whose = "all strategies" if page.strategy_id is None else f"strategy #{page.strategy_id}"
    if not page.trades:
        return f"No fills yet ({whose})."
    lines = [_paged(f"<b>Trades</b> — {whose}, newest first", page, "fills")]
    for t in page.trades:
        asset = t.symbol.split("/")[0]
        fee = f"fee {fee_text(t.fee, t.fee_currency or t.quote, t.quote)}"
        market = t.symbol.split(":")[0]
        where = "" if market in t.title else f" {esc(market)}"  # a rebalance's title names its weights
        line = (
            f"{t.at.strftime('%Y-%m-%d %H:%M')} UTC <b>{esc(t.title)}</b>{where}: {esc(t.action)} "
            f"{fmt_amount(t.amount, esc(asset), t.precision.amount_step)} at "
            f"{fmt_price(t.price, esc(t.quote), t.precision.price_tick)}, {fee}"
        )
        if t.realised is not None:
            line += f", realised {money(t.realised, esc(t.quote), signed=True)}"
        lines.append(line)
    return "\n".join(lines)


PERIOD_WORDS = {"all": "since the start", "day": "today", "week": "this week", "month": "this month"}


def profit_text(report) -> str:
    """One page of /profit (a `ProfitReport`): per strategy and in total, net of fees, with ROI on the budget."""
    when = PERIOD_WORDS[report.period]
    if report.since is not None:
        when += f" (since {report.since.strftime('%Y-%m-%d %H:%M')} UTC)"
    if not report.strategies:
        return f"<b>Profit</b> {when}: no fills and nothing held."
    lines = [_paged(f"<b>Profit</b> {when}", report, "strategies")]
    for s in report.strategies:
        lines += ["", f"<b>{esc(s.title)}</b> — {esc(s.status)}, budget {money(s.budget, esc(s.quote))}"]
        for p in s.positions:
            lines.append(f"  position: {position_text(p)}")
        fills = f"{s.fills} fill" + ("" if s.fills == 1 else "s")
        lines.append(
            f"  realised {money(s.realised, esc(s.quote), signed=True)} ({fills}, "
            f"fees {money(s.fees, esc(s.quote))}), "
            f"unrealised {money(s.unrealised, esc(s.quote), signed=True)}"
        )
        lines.append(f"  net {money(s.net, esc(s.quote), signed=True)}, ROI {percent(s.roi)} of the budget")
    lines.append("")
    for t in report.totals:
        lines.append(
            f"<b>Total {esc(t.name)}</b>: realised {money(t.realised, esc(t.quote), signed=True)} "
            f"(fees {money(t.fees, esc(t.quote))}), "
            f"unrealised {money(t.unrealised, esc(t.quote), signed=True)}, "
            f"net {money(t.net, esc(t.quote), signed=True)}, ROI {percent(t.roi)} of "
            f"{money(t.budget, esc(t.quote))}"
        )
    lines.append("Realised P&amp;L is net of fees; unrealised is what is held now at the last price (futures: at "
                 "the exchange's mark price).")
    return "\n".join(lines)

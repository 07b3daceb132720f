"""Turn service results into chat text (HTML). Formatting only: no decisions, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from bot import formatting
from bot.services.accounts import AccountView, AssetValue, Connected, LeftOpen, valuation_quote
from handlers.common import esc


def clip(text: str, limit: int = 200) -> str:
    """Free text (a venue's error, a strategy's note) cut to `limit` characters, so one line stays a line."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fmt_amount(value: Decimal | None, places: int = 8) -> str:
    """A Decimal without float noise or trailing zeros (`0.00100000` → `0.001`)."""
    if value is None:
        return "?"
    q = value.quantize(Decimal(1).scaleb(-places)) if value.as_tuple().exponent < -places else value
    text = format(q.normalize(), "f")
    return text


def fmt_money(value: Decimal | None, currency: str = "") -> str:
    if value is None:
        return "?"
    text = f"{value.quantize(Decimal('0.01')):,}"
    return f"{text} {currency}".strip()


def balances_lines(balances: tuple[AssetValue, ...] | None, quote: str) -> list[str]:
    """An account's assets, one a line, each valued in `quote` unless it is that currency (or a stable coin)."""
    if balances is None:
        return ["  balance unavailable right now"]
    if not balances:
        return ["  no funds"]
    lines = []
    for item in balances:
        if item.value == item.amount:  # the quote itself, or a stable coin: money
            lines.append(f"  {esc(formatting.money(item.amount, item.asset))}")
            continue
        value = " (no price)" if item.value is None else f" ≈ {esc(formatting.money(item.value, quote))}"
        lines.append(f"  {esc(formatting.amount(item.amount, item.asset))}{value}")
    return lines


ACCOUNT_STATES = {"active": "active", "key_rejected": "⛔ key rejected", "key_unreadable": "⛔ key unreadable"}


def _clock(at: datetime, now: datetime) -> str:
    """"19:45 UTC", with the date when it was not today ("3 Dec 19:45 UTC")."""
    at = at.astimezone(UTC)
    return at.strftime("%H:%M UTC") if at.date() == now.date() else f"{at.day} {at.strftime('%b %H:%M UTC')}"


def position_lines(positions) -> list[str]:
    """A futures account's open positions as the venue reports them (entry, mark, unrealised P&L at 1x)."""
    if not positions:
        return ["  no open positions"]
    lines = ["  open positions (Strata runs them at 1x):"]
    for p in positions:
        leverage = ""
        if p.leverage is not None and p.leverage != 1:
            leverage = f" (the exchange shows {formatting.number(p.leverage, 0)}x)"
        lines.append(
            f"  • {esc(p.base)}/{esc(p.quote)} {esc(p.side)} {esc(formatting.amount(p.size, p.base, p.step))}, "
            f"entry {esc(formatting.price(p.entry, p.quote, p.tick))}, "
            f"mark {esc(formatting.price(p.mark, p.quote, p.tick))}, "
            f"unrealised {esc(formatting.money(p.unrealised, p.quote, signed=True))}{leverage}"
        )
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
        price = f" at {fmt_amount(o.price)}" if o.price is not None else ""
        amount = f" {fmt_amount(o.amount)}" if o.amount is not None else ""
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
            f"Budget: {fmt_amount(preview.budget)} {esc(preview.quote)} (hard ceiling; "
            f"{fmt_amount(preview.available)} {esc(preview.quote)} available)",
            f"Parameters: <code>{esc(params) or 'defaults'}</code>",
            "",
            "Nothing trades until you press Confirm.",
        ]
    )


def _pnl(value: Decimal | None, quote: str) -> str:
    if value is None:
        return "?"
    sign = "+" if value > 0 else ""
    return f"{sign}{fmt_amount(value.quantize(Decimal('0.01')))} {esc(quote)}"


def _position(amount: Decimal, asset: str) -> str:
    """A signed futures position in words: "short 0.003 BTC", "long 0.01 BTC", "flat"."""
    if amount == 0:
        return "flat"
    return f"{'long' if amount > 0 else 'short'} {fmt_amount(abs(amount))} {esc(asset)}"


def status_lines(s) -> list[str]:
    state = {"active": "▶️ running", "paused": "⏸ paused", "finished": "✅ finished", "stopped": "⏹ stopped"}
    head = f"<b>{esc(_label(s))}</b> on {esc(s.account_label)} — {state.get(s.status, s.status)}"
    lines = [head]
    if s.status == "paused" and s.pause_reason:
        lines.append(f"  reason: {esc(clip(s.pause_reason))}")
    cents = Decimal("0.01")
    lines.append(
        f"  budget {fmt_amount(s.budget)} {esc(s.quote)}: used {fmt_amount(s.used.quantize(cents))}, "
        f"reserved {fmt_amount(s.reserved.quantize(cents))}, left {fmt_amount(s.left.quantize(cents))}"
    )
    if s.futures:
        entry = "" if s.entry_price is None else f" at entry {fmt_amount(s.entry_price.quantize(cents))}"
        positions = [f"{_position(amount, asset)}{entry}" for asset, amount in s.holdings.items()]
        lines.append(f"  position {', '.join(positions) or 'flat'}")
    elif s.holdings:
        held = ", ".join(f"{fmt_amount(v)} {k}" for k, v in s.holdings.items())
        lines.append(f"  holds {esc(clip(held, 300))}")
    if s.dust:
        dust = ", ".join(f"{fmt_amount(v)} {k}" for k, v in s.dust.items())
        lines.append(f"  dust {esc(clip(dust, 300))} (too little to sell yet: added to a later sell)")
    if s.average_buy_price is not None:
        lines.append(f"  average buy price {fmt_amount(s.average_buy_price.quantize(Decimal('0.01')))}")
    lines.append(
        f"  P&amp;L net of fees: realised {_pnl(s.realised_pnl, s.quote)}, unrealised {_pnl(s.unrealised_pnl, s.quote)}"
        f" (fees {fmt_amount(s.fees.quantize(Decimal('0.0001')))})"
    )
    lines.append(f"  open orders: {s.open_orders}")
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
    if not s.futures:
        cents = Decimal("0.01")
        lines.append(f"  invested {fmt_amount(s.invested.quantize(cents))} {esc(s.quote)}, returned "
                     f"{fmt_amount(s.returned.quantize(cents))} {esc(s.quote)} (fees included)")
    lines.append(f"Fills are checked every {s.fill_poll_seconds:g} s. /status lists all your strategies.")
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
    lines.append(f"Fills are checked every {page.fill_poll_seconds:g} s.")
    return "\n".join(lines)


def stop_text(summary) -> str:
    q = esc(summary.quote)
    lines = [f"⏹ <b>{esc(summary.title)}</b> stopped; its budget is released."]
    if summary.canceled:
        lines.append(f"Cancelled {summary.canceled} open order(s).")
    for asset, amount in summary.sold.items():
        if summary.futures:
            lines.append(f"Closed the {_position(amount, asset)} position at market.")
        else:
            verb = "Sold" if amount > 0 else "Bought back"
            lines.append(f"{verb} {fmt_amount(abs(amount))} {esc(asset)} at market.")
    for asset, amount in summary.kept.items():  # also what a sale left (below the exchange's step)
        if summary.futures:
            lines.append(f"Kept the {_position(amount, asset)} position open.")
        else:
            lines.append(f"Kept {fmt_amount(amount)} {esc(asset)}.")
    fees = fmt_amount(summary.fees.quantize(Decimal("0.0001")))
    if summary.futures:  # buy cost and sale proceeds mean nothing for a short: the venue's P&L says it all
        lines.append(f"Fees {fees} {q}.")
    else:
        lines.append(
            f"Invested {fmt_amount(summary.invested.quantize(Decimal('0.01')))} {q}, "
            f"returned {fmt_amount(summary.returned.quantize(Decimal('0.01')))} {q}, fees {fees} {q}."
        )
    lines.append(f"Realised P&amp;L net of fees: {_pnl(summary.realised_pnl, summary.quote)}.")
    lines += _settling_lines(summary)
    return "\n".join(lines)


def panic_text(result) -> str:
    lines = [
        f"🛑 Paused {result.paused} strateg{'y' if result.paused == 1 else 'ies'} and cancelled "
        f"{result.canceled} open order(s).",
        "/resume a strategy when you are ready: it places the orders it needs again.",
    ]
    lines += _settling_lines(result)
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


def _signed(value: Decimal | None, quote: str) -> str:
    """A P&L figure: sign, 2 decimals, thousands separators, the currency named ("+1,234.50 USDT")."""
    if value is None:
        return "?"
    text = fmt_money(value, quote)
    return f"+{text}" if value.quantize(Decimal("0.01")) > 0 else text


def _percent(value: Decimal | None) -> str:
    return "?" if value is None else f"{value.quantize(Decimal('0.01')):+}%"


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
            value = " (no price)" if a.value is None else f" ≈ {fmt_money(a.value, q)}"
            if a.value == a.amount:  # the quote itself, or a stable coin
                value = ""
            line = f"  {esc(a.asset)}: {fmt_amount(a.amount)}{value}"
            if a.held_by_strategies:
                who = ", ".join(f"{esc(h.title)} {fmt_amount(h.amount)}" for h in a.held_by_strategies)
                line += f" — strategies hold {fmt_amount(a.strategies_amount)} ({who})"
            lines.append(line)
        if account.others:
            lines.append(f"  … and {account.others} more asset(s) ≈ {fmt_money(account.others_value, q)}")
        for p in account.positions:
            entry = "" if p.entry is None else f", entry {fmt_amount(p.entry)}"
            mark = "" if p.mark is None else f", mark {fmt_amount(p.mark)}"
            notional = "" if p.notional is None else f", notional {fmt_money(p.notional, q)}"
            margin = "" if p.margin is None else f", margin {fmt_money(p.margin, q)}"
            lines.append(
                f"  {esc(p.title)}: {_position(p.amount, p.asset)} at 1x{entry}{mark}{notional}{margin}, "
                f"unrealised {_signed(p.unrealised, account.quote)}"
            )
        if account.positions:
            lines.append(f"  ({q} is the margin balance: the wallet plus the positions' unrealised P&amp;L)")
        if account.total is not None:
            unvalued = f" ({account.unvalued} asset(s) without a price not counted)" if account.unvalued else ""
            lines.append(
                f"  Total ≈ {fmt_money(account.total, q)}{unvalued}; strategies hold ≈ "
                f"{fmt_money(account.strategies_total, q)}"
            )
    if report.totals:
        lines.append("")
        lines.append("<b>Total</b> " + "; ".join(
            f"≈ {fmt_money(v, esc(k))} (strategies hold ≈ {fmt_money(report.strategy_totals.get(k), esc(k))})"
            for k, v in report.totals.items()
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
        fee = f"fee {fmt_amount(t.fee)} {esc(t.fee_currency or t.quote)}"
        line = (
            f"{t.at.strftime('%Y-%m-%d %H:%M')} UTC <b>{esc(t.title)}</b> {esc(t.symbol)}: {esc(t.action)} "
            f"{fmt_amount(t.amount)} {esc(asset)} at {fmt_amount(t.price)} {esc(t.quote)}, {fee}"
        )
        if t.realised is not None:
            line += f", realised {_signed(t.realised, t.quote)}"
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
        lines += ["", f"<b>{esc(s.title)}</b> {esc(s.symbol)} — {esc(s.status)}, budget {fmt_money(s.budget, s.quote)}"]
        for asset, amount, entry in s.positions:
            at = "" if entry is None else f" at entry {fmt_amount(entry)}"
            lines.append(f"  position {_position(amount, asset)}{at} (1x)")
        lines.append(
            f"  realised {_signed(s.realised, s.quote)} ({s.fills} fill(s), fees {fmt_money(s.fees, s.quote)}), "
            f"unrealised {_signed(s.unrealised, s.quote)}"
        )
        lines.append(f"  net {_signed(s.net, s.quote)}, ROI {_percent(s.roi)} of the budget")
    lines.append("")
    for t in report.totals:
        lines.append(
            f"<b>Total {esc(t.quote)}</b>: realised {_signed(t.realised, t.quote)} "
            f"(fees {fmt_money(t.fees, t.quote)}), "
            f"unrealised {_signed(t.unrealised, t.quote)}, net {_signed(t.net, t.quote)}, ROI {_percent(t.roi)} of "
            f"{fmt_money(t.budget, t.quote)}"
        )
    lines.append("Realised P&amp;L is net of fees; unrealised is what is held now at the last price.")
    return "\n".join(lines)

"""/strategies, /allocate (guided and one-line), /status, /pause, /resume, /stop and /panic.

Guided allocation, one step per message, ending on a summary with a "Confirm allocation" button:

    /allocate ─► account ─► strategy ─► symbol ─► budget ─► parameters ─► summary ─► Confirm │ Cancel

One-line form (DESIGN.md section 4): `/allocate <account> <strategy> <budget> <symbol> [param=value …]`
goes straight to the summary. Nothing trades before Confirm.
"""

from __future__ import annotations

from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler, MessageHandler, filters

from bot.services.drafts import Draft, DraftStep
from bot.services.errors import UserError
from bot.services.strategies import MAX_SYMBOL_TEXT
from bot.strategies.params import ParamError, split_assignments
from handlers.common import (
    Context,
    answer_and_edit,
    callback_int,
    esc,
    keyboard,
    page_of,
    pager_row,
    parse_id,
    reply,
    runtime,
)
from handlers.render import (
    catalogue_text,
    clip,
    control_text,
    panic_text,
    preview_text,
    status_detail_text,
    status_text,
    stop_text,
)

SUGGESTED_SYMBOLS = {
    "binance": ("BTC/USDT", "ETH/USDT"),
    "binanceusdm": ("BTC/USDT", "ETH/USDT"),
    "kraken": ("BTC/USD", "ETH/USD"),
}
REBALANCE_QUOTES = {"binance": ("USDT",), "binanceusdm": ("USDT",), "kraken": ("USD",)}
CONTROL_VERBS = {"pause": "Pause", "resume": "Resume", "stop": "Stop"}
PICKER_PER_PAGE = 10
MAX_ACCOUNT_BUTTONS = 40  # Telegram caps a keyboard at 100 buttons


def _services(context: Context):
    rt = runtime(context)
    if rt.strategies is None:
        raise UserError("The trading engine is starting; try again in a moment.")
    return rt.strategies


async def _reply_error(update: Update, exc: UserError) -> None:
    if update.callback_query is not None:
        await answer_and_edit(update, f"❌ {esc(exc.message)}")
    else:
        await reply(update, f"❌ {esc(exc.message)}")


# --- /strategies ----------------------------------------------------------------------------------------


async def strategies(update: Update, context: Context) -> None:
    try:
        await reply(update, catalogue_text(_services(context).strategies_catalogue()))
    except UserError as exc:
        await _reply_error(update, exc)


# --- /allocate ------------------------------------------------------------------------------------------


async def allocate(update: Update, context: Context) -> None:
    user_id = update.effective_user.id
    try:
        services = _services(context)
        if context.args:
            await _one_line(update, context, services, user_id, context.args)
            return
        views = await runtime(context).accounts.list_accounts(user_id, with_balances=False)
        active = [v for v in views if v.status == "active"]
        if not active:
            raise UserError("Connect an exchange account first: /connect")
        runtime(context).drafts.begin(user_id)
        rows = [[(f"{v.label} ({v.venue_name})", f"alloc:acct:{v.id}")] for v in active[:MAX_ACCOUNT_BUTTONS]]
        rows.append([("Cancel", "alloc:cancel")])
        more = (f"\n(The first {MAX_ACCOUNT_BUTTONS} of {len(active)}; for another, use the one-line form: "
                "/allocate &lt;account&gt; &lt;strategy&gt; &lt;budget&gt; &lt;symbol&gt;.)"
                if len(active) > MAX_ACCOUNT_BUTTONS else "")
        await reply(update, "Which account should the strategy trade on?" + more, keyboard(rows))
    except UserError as exc:
        await _reply_error(update, exc)


async def _one_line(update: Update, context: Context, services, user_id: int, args: list[str]) -> None:
    if len(args) < 4:
        raise UserError(
            "Usage: /allocate <account> <strategy> <budget> <symbol> [param=value …], "
            "e.g. /allocate binance dca 100 BTC/USDT every=1d amount=10. Or send /allocate alone for a guided flow."
        )
    label, kind, budget, symbol, *rest = args
    try:
        params = split_assignments(rest)
    except ParamError as exc:
        raise UserError(exc.message) from None
    preview = await services.allocate(user_id, label, kind.lower(), budget, symbol, params)
    await _show_preview(update, context, preview)


async def _show_preview(update: Update, context: Context, preview) -> None:
    runtime(context).drafts.keep_preview(preview)
    markup = keyboard([[("Confirm allocation", f"alloc:confirm:{preview.token}"), ("Cancel", "alloc:cancel")]])
    if update.callback_query is not None:
        await answer_and_edit(update, preview_text(preview), markup)
    else:
        await reply(update, preview_text(preview), markup)


async def allocate_button(update: Update, context: Context) -> None:
    query = update.callback_query
    await query.answer()
    rt = runtime(context)
    user_id = update.effective_user.id
    _, action, *rest = query.data.split(":", 2)
    value = rest[0] if rest else ""
    try:
        services = _services(context)
        if action == "cancel":
            rt.drafts.pop(user_id)
            rt.drafts.drop_previews(user_id)
            await answer_and_edit(update, "Cancelled: nothing was allocated.")
            return
        if action == "confirm":
            preview = rt.drafts.take_preview(value, user_id)
            if preview is None:
                raise UserError(
                    "This summary has expired (a newer one replaced it, or it was cancelled or already used). "
                    "Send /allocate again."
                )
            allocated = await services.confirm(preview)
            rt.drafts.pop(user_id)
            await answer_and_edit(
                update,
                f"✅ {esc(preview.title)} #{allocated.strategy_id} on {esc(preview.symbol)} is running with a "
                f"budget of {esc(preview.budget)} {esc(preview.quote)}. I will message you on every fill. "
                "/status to follow it.",
            )
            return
        draft = rt.drafts.get(user_id)
        if draft is None:
            raise UserError("This menu has expired. Send /allocate again.")
        await _advance_draft(update, context, services, draft, action, value)
    except UserError as exc:
        await _reply_error(update, exc)


async def _advance_draft(update: Update, context: Context, services, draft: Draft, action: str, value: str) -> None:
    rt = runtime(context)
    if action == "acct" and draft.step is DraftStep.ACCOUNT:
        account_id = parse_id(value)
        if account_id is None:
            raise UserError("That account is not (or no longer) connected.")
        account = await rt.accounts.owned(draft.user_id, account_id)
        draft.account_label, draft.venue, draft.step = account.label, account.venue, DraftStep.STRATEGY
        rows = [[(d.title, f"alloc:kind:{d.name}")] for d in services.strategies_catalogue()]
        await answer_and_edit(update, f"Account <b>{esc(account.label)}</b>. Which strategy?", keyboard(rows))
    elif action == "kind" and draft.step is DraftStep.STRATEGY:
        catalogue = {d.name: d for d in services.strategies_catalogue()}
        if value not in catalogue:
            raise UserError("Pick one of the strategies offered.")
        services.check_venue(value, draft.venue)
        draft.kind, draft.step = value, DraftStep.SYMBOL
        if value == "rebalance":
            choices = REBALANCE_QUOTES.get(draft.venue, ("USDT",))
            prompt = "Which quote asset holds the budget? Tap one or type it (e.g. USDT)."
        else:
            choices = SUGGESTED_SYMBOLS.get(draft.venue, ("BTC/USDT",))
            prompt = "Which market? Tap one or type it (e.g. BTC/USDT)."
        rows = [[(c, f"alloc:sym:{c}") for c in choices]]
        await answer_and_edit(update, f"<b>{esc(catalogue[value].title)}</b>: {catalogue[value].description}\n{prompt}",
                              keyboard(rows))
    elif action == "sym" and draft.step is DraftStep.SYMBOL:
        await _take_symbol(update, context, draft, value)
    elif action == "defaults" and draft.step is DraftStep.PARAMS:
        await _finish_draft(update, context, services, draft)
    else:
        raise UserError("This menu has expired. Send /allocate again.")


async def _take_symbol(update: Update, context: Context, draft: Draft, symbol: str) -> None:
    symbol = symbol.strip().upper()
    if not 0 < len(symbol) <= MAX_SYMBOL_TEXT:
        raise UserError(f"'{clip(symbol, 24)}' is not a market: write it like BTC/USDT.")
    draft.symbol, draft.step = symbol, DraftStep.BUDGET
    text = f"Market <b>{esc(draft.symbol)}</b>. What budget (a hard ceiling, in the quote currency)? Type a number."
    if update.callback_query is not None:
        await answer_and_edit(update, text)
    else:
        await reply(update, text)


async def draft_text(update: Update, context: Context) -> None:
    """A typed answer to the guided flow: symbol, budget or parameters."""
    rt = runtime(context)
    user_id = update.effective_user.id
    draft = rt.drafts.get(user_id)
    text = (update.effective_message.text or "").strip()
    try:
        services = _services(context)
        if draft is None or not draft.awaits_text:
            return
        if draft.step is DraftStep.SYMBOL:
            await _take_symbol(update, context, draft, text)
        elif draft.step is DraftStep.BUDGET:
            draft.budget, draft.step = text, DraftStep.PARAMS
            description = next(d for d in services.strategies_catalogue() if d.name == draft.kind)
            params = "\n".join(
                f"  <code>{esc(p.name)}</code> — {esc(p.description)} (default {esc(p.default)})"
                for p in description.params
            )
            await reply(
                update,
                f"Parameters of {esc(description.title)}:\n{params}\n\n"
                "Type the ones you want to change as <code>name=value</code> (space separated), or use the defaults.",
                keyboard([[("Use defaults", "alloc:defaults"), ("Cancel", "alloc:cancel")]]),
            )
        elif draft.step is DraftStep.PARAMS:
            try:
                draft.params = split_assignments(text.split())
            except ParamError as exc:
                raise UserError(exc.message) from None
            await _finish_draft(update, context, services, draft)
    except UserError as exc:
        await reply(update, f"❌ {esc(exc.message)}\nTry again, or /cancel.")


async def _finish_draft(update: Update, context: Context, services, draft: Draft) -> None:
    try:
        preview = await services.allocate(
            draft.user_id, draft.account_label, draft.kind, draft.budget, draft.symbol, draft.params
        )
    except UserError:
        if draft.step is DraftStep.PARAMS and draft.params:
            draft.params = {}
        raise
    draft.step = DraftStep.CONFIRM
    await _show_preview(update, context, preview)


class _AwaitsDraftText(filters.MessageFilter):
    def __init__(self, drafts) -> None:
        super().__init__(name="AwaitsDraftText")
        self._drafts = drafts

    def filter(self, message) -> bool:
        if message.chat.type != "private" or message.from_user is None:
            return False
        draft = self._drafts.get(message.from_user.id)
        return draft is not None and draft.awaits_text


# --- /status, /pause, /resume, /stop, /panic ---------------------------------------------------------------


async def status(update: Update, context: Context) -> None:
    """/status: every strategy, a page at a time; /status <id>: that one strategy in detail."""
    try:
        if context.args:
            strategy_id = parse_id(context.args[0].lstrip("#"))
            if strategy_id is None:
                raise UserError("Usage: /status <strategy number>, e.g. /status 2, or /status alone for all of them.")
            detail = await _services(context).strategy_status(update.effective_user.id, strategy_id)
            await reply(update, status_detail_text(detail))
            return
        page = await _services(context).status_page(update.effective_user.id)
        await reply(update, status_text(page), _status_pager(page))
    except UserError as exc:
        await _reply_error(update, exc)


async def status_button(update: Update, context: Context) -> None:
    """◀ / ▶ under /status: show another page in the same message."""
    query = update.callback_query
    await query.answer()
    wanted = callback_int(query.data, 2)
    try:
        page = await _services(context).status_page(update.effective_user.id, wanted or 1)
        await answer_and_edit(update, status_text(page), _status_pager(page))
    except UserError as exc:
        await _reply_error(update, exc)


def _status_pager(page):
    row = pager_row("st:page", page.page, page.pages)
    return keyboard([row]) if row else None


async def _control_command(update: Update, context: Context, verb: str) -> None:
    user_id = update.effective_user.id
    try:
        services = _services(context)
        if context.args:
            strategy_id = parse_id(context.args[0].lstrip("#"))
            if strategy_id is None:
                raise UserError(f"Usage: /{verb} <strategy number> (see /status), or /{verb} alone to pick.")
            await _control(update, context, services, verb, user_id, strategy_id)
            return
        await _show_picker(update, services, verb, user_id, page=1)
    except UserError as exc:
        await _reply_error(update, exc)


async def _show_picker(update: Update, services, verb: str, user_id: int, page: int) -> None:
    """One button per strategy the verb applies to, a page at a time (Telegram caps a keyboard at 100)."""
    wanted = {"pause": ("active",), "resume": ("paused",), "stop": ("active", "paused", "finished")}[verb]
    candidates = [s for s in await services.status(user_id) if s.status in wanted]
    if not candidates:
        raise UserError(f"You have no strategy to {verb}. /status shows them all.")
    shown, page, pages = page_of(candidates, page, PICKER_PER_PAGE)
    rows = [[(clip(s.label or f"#{s.id} {s.title} {s.symbol}", 60), f"ctl:{verb}:{s.id}")] for s in shown]
    if pager := pager_row(f"ctlp:{verb}", page, pages):
        rows.append(pager)
    text = f"Which strategy do you want to {verb}?" + (f" (page {page} of {pages})" if pages > 1 else "")
    if update.callback_query is not None:
        await answer_and_edit(update, text, keyboard(rows))
    else:
        await reply(update, text, keyboard(rows))


async def picker_button(update: Update, context: Context) -> None:
    """◀ / ▶ under a /pause, /resume or /stop picker."""
    query = update.callback_query
    await query.answer()
    parts = query.data.split(":")
    verb, page = (parts[1] if len(parts) == 3 else ""), callback_int(query.data, 2)
    try:
        if verb not in CONTROL_VERBS or page is None:
            raise UserError("This menu has expired. Send the command again.")
        await _show_picker(update, _services(context), verb, update.effective_user.id, page)
    except UserError as exc:
        await _reply_error(update, exc)


async def _control(update: Update, context: Context, services, verb: str, user_id: int, strategy_id: int) -> None:
    if verb == "stop":
        s = await services.strategy_status(user_id, strategy_id)
        text = (
            f"Stop <b>{esc(s.label)}</b>? Its open orders are cancelled. "
            "Keep what it bought, or sell it at market (futures: close the position)?"
        )
        markup = keyboard([[("Stop and keep", f"ctl:stopkeep:{s.id}"), ("Stop and sell", f"ctl:stopsell:{s.id}")],
                           [("Cancel", "ctl:none:0")]])
        if update.callback_query is not None:
            await answer_and_edit(update, text, markup)
        else:
            await reply(update, text, markup)
        return
    result = await (services.pause if verb == "pause" else services.resume)(user_id, strategy_id)
    text = control_text(result)
    if update.callback_query is not None:
        await answer_and_edit(update, text)
    else:
        await reply(update, text)


async def control_button(update: Update, context: Context) -> None:
    query = update.callback_query
    await query.answer()
    user_id = update.effective_user.id
    parts = query.data.split(":")
    verb = parts[1] if len(parts) == 3 else "none"
    strategy_id = callback_int(query.data, 2)
    try:
        services = _services(context)
        if verb == "none" or strategy_id is None:
            await answer_and_edit(update, "Nothing was changed.")
        elif verb in ("stopkeep", "stopsell"):
            await answer_and_edit(update, "Stopping: cancelling open orders…")
            summary = await services.stop(user_id, strategy_id, sell=verb == "stopsell")
            await answer_and_edit(update, stop_text(summary))
        elif verb in CONTROL_VERBS:
            await _control(update, context, services, verb, user_id, strategy_id)
        else:
            await answer_and_edit(update, "Nothing was changed.")
    except UserError as exc:
        await _reply_error(update, exc)


async def pause(update: Update, context: Context) -> None:
    await _control_command(update, context, "pause")


async def resume(update: Update, context: Context) -> None:
    await _control_command(update, context, "resume")


async def stop(update: Update, context: Context) -> None:
    await _control_command(update, context, "stop")


async def panic(update: Update, context: Context) -> None:
    await reply(
        update,
        "🛑 Pause <b>all</b> your strategies and cancel <b>every</b> open order they placed?",
        keyboard([[("Confirm panic", "panic:yes"), ("Cancel", "panic:no")]]),
    )


async def panic_button(update: Update, context: Context) -> None:
    query = update.callback_query
    await query.answer()
    if query.data != "panic:yes":
        await answer_and_edit(update, "Nothing was changed.")
        return
    try:
        await answer_and_edit(update, "Pausing everything and cancelling orders…")
        result = await _services(context).panic(update.effective_user.id)
        await answer_and_edit(update, panic_text(result))
    except UserError as exc:
        await _reply_error(update, exc)


def handlers(drafts) -> list[tuple[int, object]]:
    return [
        (0, CommandHandler("strategies", strategies)),
        (0, CommandHandler("allocate", allocate)),
        (0, CallbackQueryHandler(allocate_button, pattern=r"^alloc:")),
        (0, MessageHandler(filters.TEXT & ~filters.COMMAND & _AwaitsDraftText(drafts), draft_text)),
        (0, CommandHandler("status", status)),
        (0, CallbackQueryHandler(status_button, pattern=r"^st:page:")),
        (0, CommandHandler("pause", pause)),
        (0, CommandHandler("resume", resume)),
        (0, CommandHandler("stop", stop)),
        (0, CallbackQueryHandler(control_button, pattern=r"^ctl:")),
        (0, CallbackQueryHandler(picker_button, pattern=r"^ctlp:")),
        (0, CommandHandler("panic", panic)),
        (0, CallbackQueryHandler(panic_button, pattern=r"^panic:")),
    ]

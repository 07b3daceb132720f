"""/strategies, /allocate (guided and one-line), /status, /pause, /resume, /stop and /panic.

Guided allocation (`/allocate` alone), one step per message; the states are `DraftStep` constants. Each answer
is checked by the service when it is given (`check_market`, `check_budget`, `check_params`, then every check of
`allocate`); a refused answer asks the same step again with the reason, and a refusal of the whole allocation
goes back to the step that can fix it (`UserError.step`). Every step has Cancel (nothing stored) and, after the
first, Back (one step, earlier answers kept).

| state      | answer (checked at once)                  | next       | Back       | refused → asks again     |
|------------|-------------------------------------------|------------|------------|--------------------------|
| `ACCOUNT`  | account button                            | `STRATEGY` | —          | `ACCOUNT`                |
| `STRATEGY` | strategy button (fits the venue)          | `SYMBOL`   | `ACCOUNT`  | `STRATEGY`               |
| `SYMBOL`   | market button or text (on the venue)      | `BUDGET`   | `STRATEGY` | `SYMBOL`                 |
| `BUDGET`   | text: number > 0, within the ceiling      | `PARAMS`   | `SYMBOL`   | `BUDGET`                 |
| `PARAMS`   | `name=value` text, Use defaults, Keep     | `CONFIRM`  | `BUDGET`   | the step it names (*)    |
| `CONFIRM`  | Confirm allocation                        | running    | `PARAMS`   | the step it names (*)    |

(*) `SYMBOL` (one futures strategy per market), `BUDGET` (over the ceiling), `PARAMS` (a grid or DCA per-order
minimum, bad `weights`…); a refusal naming no step (the strategy limit) asks `PARAMS` again, Cancel ends it.

One-line form (DESIGN.md section 4): `/allocate <account> <strategy> <budget> <symbol> [param=value …]`
goes straight to the summary. Nothing trades before Confirm.
"""

from __future__ import annotations

from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler, MessageHandler, filters

from bot.exchanges.venues import adapter
from bot.exchanges.venues.paper import MARK as PAPER_MARK
from bot.formatting import money
from bot.services.drafts import Draft, DraftStep
from bot.services.errors import UserError
from bot.services.strategies import AllocationPreview, EditPreview
from bot.strategies.params import ParamError, format_value, split_assignments
from bot.venues import is_paper
from handlers.charts import chart_buttons
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
    edit_preview_text,
    edited_text,
    panic_text,
    preview_text,
    resume_all_text,
    status_detail_text,
    status_text,
    stop_text,
)

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
        await reply(update, catalogue_text(_services(context).strategies_catalogue()),
                    keyboard([[("Backtest a strategy", "bt:menu")]]))
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
        draft = runtime(context).drafts.begin(user_id)
        await _ask(update, context, services, draft)
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


async def _show_preview(update: Update, context: Context, preview, *, guided: bool = False) -> None:
    runtime(context).drafts.keep_preview(preview)
    rows = [[("Confirm allocation", f"alloc:confirm:{preview.token}")]]
    rows.append([("Back", f"alloc:back:{DraftStep.CONFIRM.value}"), ("Cancel", "alloc:cancel")] if guided
                else [("Cancel", "alloc:cancel")])
    await _send(update, preview_text(preview), keyboard(rows))


async def _send(update: Update, text: str, markup=None) -> None:
    """Edit the message whose button was pressed, or answer a typed message with a new one."""
    if update.callback_query is not None:
        await answer_and_edit(update, text, markup)
    else:
        await reply(update, text, markup)


def _nav_row(step: DraftStep) -> list[tuple[str, str]]:
    return [("Back", f"alloc:back:{step.value}"), ("Cancel", "alloc:cancel")]


async def _ask(update: Update, context: Context, services, draft: Draft, problem: str | None = None) -> None:
    """Ask the draft's current step (after the reason the last answer was refused, if it was)."""
    step = draft.step
    if step is DraftStep.ACCOUNT:
        views = await runtime(context).accounts.list_accounts(draft.user_id, with_balances=False)
        active = [v for v in views if v.status == "active"]
        if not active:
            runtime(context).drafts.pop(draft.user_id)
            raise UserError("Connect an exchange account first: /connect")
        rows = [[(f"{v.label} ({v.venue_name})", f"alloc:acct:{v.id}")] for v in active[:MAX_ACCOUNT_BUTTONS]]
        rows.append([("Cancel", "alloc:cancel")])  # the first step: nothing to go back to
        more = (f"\n(The first {MAX_ACCOUNT_BUTTONS} of {len(active)}; for another, use the one-line form: "
                "/allocate &lt;account&gt; &lt;strategy&gt; &lt;budget&gt; &lt;symbol&gt;.)"
                if len(active) > MAX_ACCOUNT_BUTTONS else "")
        text = "Which account should the strategy trade on?" + more
    elif step is DraftStep.STRATEGY:
        rows = [[(d.title, f"alloc:kind:{d.name}")] for d in services.strategies_catalogue()]
        rows.append(_nav_row(step))
        marked = f" ({PAPER_MARK}: simulated money)" if is_paper(draft.venue) else ""
        text = f"Account <b>{esc(draft.account_label)}</b>{marked}. Which strategy?"
    elif step is DraftStep.SYMBOL:
        description = _description(services, draft.kind)
        if draft.kind == "rebalance":
            choices = adapter(draft.venue).rebalance_quotes
            prompt = "Which quote asset holds the budget? Tap one or type it (e.g. USDT)."
        else:
            choices = adapter(draft.venue).default_markets
            prompt = "Which market? Tap one or type it (e.g. BTC/USDT)."
        rows = [[(c, f"alloc:sym:{c}") for c in choices], _nav_row(step)]
        # Asked again after a refusal: the reason and the question, not the whole description once more.
        text = prompt if problem else f"<b>{esc(description.title)}</b>: {description.description}\n{prompt}"
    elif step is DraftStep.BUDGET:
        rows = [_nav_row(step)]
        market = draft.symbol.split(":")[0]
        text = (f"Market <b>{esc(market)}</b>. What budget (a hard ceiling, in {esc(draft.quote)})? Type a number.")
    elif step is DraftStep.PARAMS:
        description = _description(services, draft.kind)
        params = "\n".join(
            f"  <code>{esc(p.name)}</code> — {esc(p.description)} (default {esc(p.default)})"
            for p in description.params
        )
        choices = [("Use defaults", "alloc:defaults")]
        if draft.params:
            choices.append((clip("Keep " + " ".join(f"{k}={v}" for k, v in draft.params.items()), 60), "alloc:keep"))
        rows = [choices, _nav_row(step)]
        text = (f"Budget <b>{esc(draft.budget)} {esc(draft.quote)}</b>. Parameters of {esc(description.title)}:\n"
                f"{params}\n\nType the ones you want to change as <code>name=value</code> (space separated), "
                "or use the defaults.")
    else:  # CONFIRM: the summary is the question
        await _finish_draft(update, context, services, draft)
        return
    if problem:
        text = f"❌ {esc(problem)}\n\n{text}"
    await _send(update, text, keyboard(rows))


def _description(services, kind: str | None):
    return next(d for d in services.strategies_catalogue() if d.name == kind)


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
            await _confirm(update, context, services, value)
            return
        draft = rt.drafts.get(user_id)
        if draft is None:
            raise UserError("This menu has expired. Send /allocate again.")
        try:
            await _advance_draft(update, context, services, draft, action, value)
        except UserError as exc:
            await _reask(update, context, services, draft, exc)
    except UserError as exc:
        await _reply_error(update, exc)


async def _confirm(update: Update, context: Context, services, token: str) -> None:
    rt = runtime(context)
    user_id = update.effective_user.id
    preview = rt.drafts.take_preview(token, user_id)
    if not isinstance(preview, AllocationPreview):  # none, or an /edit summary's token
        raise UserError(
            "This summary has expired (a newer one replaced it, or it was cancelled or already used). "
            "Send /allocate again."
        )
    try:
        allocated = await services.confirm(preview)
    except UserError as exc:
        draft = rt.drafts.get(user_id)
        if draft is None or draft.step is not DraftStep.CONFIRM:
            raise
        await _reask(update, context, services, draft, exc)  # guided: back to the step that can fix it
        return
    rt.drafts.pop(user_id)
    await answer_and_edit(
        update,
        f"✅ {esc(preview.title)} #{allocated.strategy_id} on {esc(preview.symbol)}"
        f"{f' · {PAPER_MARK}' if is_paper(preview.venue) else ''} is running with a "
        f"budget of {money(preview.budget, esc(preview.quote))}. I will message you on every fill. "
        "/status to follow it.",
    )


async def _reask(update: Update, context: Context, services, draft: Draft, exc: UserError) -> None:
    """A refused answer: ask again at the step that can fix it (the refusal names it), else the same step."""
    if exc.step is not None:
        draft.go_to(DraftStep(exc.step))
    elif draft.step is DraftStep.CONFIRM:
        draft.go_to(DraftStep.PARAMS)
    runtime(context).drafts.drop_previews(draft.user_id)
    await _ask(update, context, services, draft, exc.message)


async def _advance_draft(update: Update, context: Context, services, draft: Draft, action: str, value: str) -> None:
    rt = runtime(context)
    if action == "back":
        if value == draft.step.value:
            if draft.step is DraftStep.CONFIRM:
                rt.drafts.drop_previews(draft.user_id)
            draft.back()
        await _ask(update, context, services, draft)  # an out-of-date Back shows where the user now is
    elif action == "acct" and draft.step is DraftStep.ACCOUNT:
        account_id = parse_id(value)
        if account_id is None:
            raise UserError("That account is not (or no longer) connected.")
        account = await rt.accounts.owned(draft.user_id, account_id)
        draft.set_account(account.label, account.venue)
        await _ask(update, context, services, draft)
    elif action == "kind" and draft.step is DraftStep.STRATEGY:
        if value not in {d.name for d in services.strategies_catalogue()}:
            raise UserError("Pick one of the strategies offered.")
        services.check_venue(value, draft.venue)
        draft.set_kind(value)
        await _ask(update, context, services, draft)
    elif action == "sym" and draft.step is DraftStep.SYMBOL:
        await _take_symbol(update, context, services, draft, value)
    elif action in ("defaults", "keep") and draft.step is DraftStep.PARAMS:
        if action == "defaults":
            draft.params = {}
        await _finish_draft(update, context, services, draft)
    else:  # a button of an earlier step's message: show the step the user is at
        await _ask(update, context, services, draft, "That menu was out of date; here is where you are.")


async def _take_symbol(update: Update, context: Context, services, draft: Draft, symbol: str) -> None:
    market, quote = await services.check_market(draft.user_id, draft.account_label, draft.kind, symbol)
    draft.set_symbol(market, quote)
    await _ask(update, context, services, draft)


async def draft_text(update: Update, context: Context) -> None:
    """A typed answer to the guided flow's current step: market, budget or parameters, each checked at once."""
    rt = runtime(context)
    draft = rt.drafts.get(update.effective_user.id)
    text = (update.effective_message.text or "").strip()
    if draft is None or not draft.awaits_text:
        return
    try:
        services = _services(context)
    except UserError as exc:
        await _reply_error(update, exc)
        return
    try:
        if draft.step is DraftStep.SYMBOL:
            await _take_symbol(update, context, services, draft, text)
        elif draft.step is DraftStep.BUDGET:
            amount = await services.check_budget(draft.user_id, draft.account_label, draft.quote, text)
            draft.set_budget(format_value("decimal", amount))
            await _ask(update, context, services, draft)
        elif draft.step is DraftStep.PARAMS:
            try:
                params = split_assignments(text.split())
            except ParamError as exc:
                raise UserError(exc.message, step=DraftStep.PARAMS.value) from None
            services.check_params(draft.kind, params)
            draft.params = params
            await _finish_draft(update, context, services, draft)
    except UserError as exc:
        await _reask(update, context, services, draft, exc)


async def _finish_draft(update: Update, context: Context, services, draft: Draft) -> None:
    """Every check `allocate` makes, on all the answers; a refusal goes back to the step that can fix it."""
    try:
        preview = await services.allocate(
            draft.user_id, draft.account_label, draft.kind, draft.budget, draft.symbol, draft.params
        )
    except UserError as exc:
        await _reask(update, context, services, draft, exc)
        return
    draft.step = DraftStep.CONFIRM
    await _show_preview(update, context, preview, guided=True)


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
            await reply(update, status_detail_text(detail), keyboard(chart_buttons([detail.id])))
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
    """📈 per strategy shown (/chart), then ◀ ▶ to the other pages."""
    rows = chart_buttons([s.id for s in page.statuses]) if page.statuses else []
    if row := pager_row("st:page", page.page, page.pages):
        rows.append(row)
    return keyboard(rows) if rows else None


async def _control_command(update: Update, context: Context, verb: str) -> None:
    user_id = update.effective_user.id
    try:
        services = _services(context)
        if context.args and verb == "resume" and context.args[0].lower() == "all":
            await reply(update, resume_all_text(await services.resume_all(user_id)))
            return
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
    rows.append([("Cancel", "ctl:none:0")])
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
        if s.status == "stopped":  # said at once: "keep or sell?" would only lead to this answer
            raise UserError(f"{s.label} is already stopped. /status shows what it did.")
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


PANIC_CANCEL = ("Pause and cancel", "panic:yes")
PANIC_SELL = ("Pause, cancel and sell what the strategies bought", "panic:sell")


async def panic(update: Update, context: Context) -> None:
    """/panic: confirm with "Pause and cancel" or "Pause, cancel and sell…"; `/panic sell` offers the sale only."""
    if context.args and context.args[0].lower() == "sell":
        await reply(
            update,
            "🛑 Pause <b>all</b> your strategies, cancel <b>every</b> open order, then stop each strategy and sell "
            "what it bought at market (futures: close its position)? What is below a market's minimum stays as dust.",
            keyboard([[PANIC_SELL], [("Cancel", "panic:no")]]),
        )
        return
    await reply(
        update,
        "🛑 Pause <b>all</b> your strategies and cancel <b>every</b> open order they placed? You may also sell what "
        "the strategies bought (they are then stopped: their budgets are released).",
        keyboard([[PANIC_CANCEL], [PANIC_SELL], [("Cancel", "panic:no")]]),
    )


async def panic_button(update: Update, context: Context) -> None:
    query = update.callback_query
    await query.answer()
    if query.data not in ("panic:yes", "panic:sell", "panic:resume"):
        await answer_and_edit(update, "Nothing was changed.")
        return
    try:
        if query.data == "panic:resume":  # "Resume all" under the panic's answer; a second press resumes nothing
            result = await _services(context).resume_all(update.effective_user.id)
            await answer_and_edit(update, resume_all_text(result))
            return
        sell = query.data == "panic:sell"
        await answer_and_edit(update, "Pausing everything, cancelling orders" + (" and selling…" if sell else "…"))
        result = await _services(context).panic(update.effective_user.id, sell=sell)
        resume = None if sell else keyboard([[("Resume all", "panic:resume")]])  # a stopped strategy stays stopped
        await answer_and_edit(update, panic_text(result), resume)
    except UserError as exc:
        await _reply_error(update, exc)


# --- /edit ------------------------------------------------------------------------------------------------

EDIT_USAGE = (
    "Usage: /edit <strategy number> budget=<amount> [name=<text>], e.g. /edit 3 budget=150 "
    "(see /status for the numbers)."
)


async def edit(update: Update, context: Context) -> None:
    """/edit <id> budget=… name=…: a summary of the change with Confirm/Cancel; nothing changes before Confirm."""
    user_id = update.effective_user.id
    args = context.args or []
    try:
        services = _services(context)
        strategy_id = parse_id(args[0].lstrip("#")) if args else None
        if strategy_id is None or len(args) < 2:
            raise UserError(EDIT_USAGE)
        try:
            changes = _edit_changes(args[1:])
        except ParamError as exc:
            raise UserError(f"{exc.message}. {EDIT_USAGE}") from None
        preview = await services.edit(user_id, strategy_id, changes)
        runtime(context).drafts.keep_preview(preview)
        await reply(update, edit_preview_text(preview),
                    keyboard([[("Confirm change", f"edit:confirm:{preview.token}"), ("Cancel", "edit:cancel")]]))
    except UserError as exc:
        await _reply_error(update, exc)


def _edit_changes(tokens: list[str]) -> dict[str, str]:
    """`key=value` tokens; words after `name=` without an `=` are the rest of the name (name=my savings)."""
    joined: list[str] = []
    for token in tokens:
        if "=" not in token and joined and joined[-1].lower().startswith("name="):
            joined[-1] += f" {token}"
        else:
            joined.append(token)
    return split_assignments(joined)


async def edit_button(update: Update, context: Context) -> None:
    """Confirm or Cancel under an /edit summary (a summary is confirmed at most once)."""
    query = update.callback_query
    await query.answer()
    rt = runtime(context)
    user_id = update.effective_user.id
    _, action, *rest = query.data.split(":", 2)
    try:
        if action != "confirm":
            rt.drafts.drop_previews(user_id)
            await answer_and_edit(update, "Cancelled: nothing was changed.")
            return
        preview = rt.drafts.take_preview(rest[0] if rest else "", user_id)
        if not isinstance(preview, EditPreview):
            raise UserError("This summary has expired (a newer one replaced it, or it was cancelled or already "
                            "used). Send /edit again.")
        edited = await _services(context).confirm_edit(preview)
        await answer_and_edit(update, edited_text(edited.preview))
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
        (0, CommandHandler("edit", edit)),
        (0, CallbackQueryHandler(edit_button, pattern=r"^edit:")),
        (0, CommandHandler("panic", panic)),
        (0, CallbackQueryHandler(panic_button, pattern=r"^panic:")),
    ]

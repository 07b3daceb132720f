"""/accounts and /disconnect (pick an account, confirm, then its strategies stop and its key is shredded).

An account whose key is rejected or unreadable cannot cancel anything: its confirmation lists the orders that
may still be open on the exchange (the user cancels them there), then its key is shredded and they are
abandoned here (`disc:abandon:<id>`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from telegram import Message, Update
from telegram.error import BadRequest
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.exchanges.venues.paper import MARK as PAPER_MARK
from bot.services.errors import UserError
from bot.venues import is_paper
from handlers.common import (
    Context,
    answer_and_edit,
    callback_int,
    esc,
    keyboard,
    page_of,
    pager_row,
    reply,
    runtime,
    split_html,
)
from handlers.render import accounts_text, clip, left_open_lines, stop_text

MAX_ACCOUNT_BUTTONS = 40  # Telegram caps a keyboard at 100 buttons
#: Accounts on one /accounts page: with five assets and a few positions each, a page stays one message.
ACCOUNTS_PER_PAGE = 5
_RENAME = "\n\nRename one with /accounts rename &lt;label&gt; &lt;new-label&gt;."
_NEW_KEY = " Give one a new key (strategies kept) with the buttons or /connect replace &lt;label&gt;."


async def accounts(update: Update, context: Context) -> None:
    """List the accounts at once from their stored balances, then refresh them in place.

    `/accounts rename <label> <new-label>` renames one.
    """
    rt = runtime(context)
    user_id = update.effective_user.id
    if context.args and context.args[0].lower() == "rename":
        if len(context.args) != 3:
            await reply(update, "Usage: /accounts rename &lt;label&gt; &lt;new-label&gt;")
            return
        account = await rt.accounts.by_label(user_id, context.args[1])
        try:
            if account is None:
                raise UserError(f"You have no account labelled {clip(context.args[1], 40)}.")
            renamed = await rt.accounts.rename(user_id, account.id, context.args[2])
        except UserError as exc:
            await reply(update, f"❌ {esc(exc.message)}")
            return
        marked = f" ({PAPER_MARK})" if is_paper(renamed.venue) else ""
        await reply(update, f"Renamed: <b>{esc(renamed.label)}</b>{marked}. Use this label in /allocate.")
        return
    views, page, pages = page_of(await rt.accounts.stored_accounts(user_id), 1, ACCOUNTS_PER_PAGE)
    if not views:
        await reply(update, accounts_text(views, _now()))
        return
    message = await update.effective_chat.send_message(
        _listing(views, page, pages, refreshing=True), reply_markup=_accounts_keyboard(views, user_id, page, pages)
    )
    _refresh_later(context, message, user_id, page)


async def accounts_button(update: Update, context: Context) -> None:
    """🔄 Refresh (`acc:<user>:<page>`, also ◀ ▶): the page's stored figures as refreshing, then fresh ones."""
    query = update.callback_query
    message = query.message
    user_id = update.effective_user.id
    wanted = callback_int(query.data, 2)
    if callback_int(query.data, 1) != user_id or wanted is None:  # someone else's list (a group), or forged
        await query.answer("Send /accounts to see yours.")
        return
    if message is None or _key(message) in _refreshing(context):
        await query.answer("Already refreshing…")
        return
    await query.answer()
    views, page, pages = page_of(await runtime(context).accounts.stored_accounts(user_id), wanted,
                                 ACCOUNTS_PER_PAGE)
    if not views:
        await answer_and_edit(update, accounts_text(views, _now()))
        return
    await _edit(message, _listing(views, page, pages, refreshing=True), views, user_id, page, pages)
    _refresh_later(context, message, user_id, page)


def _refresh_later(context: Context, message: Message, user_id: int, page: int) -> None:
    """Fetch the page's accounts now and edit `message` with them, without holding the user's next update."""
    refreshing = _refreshing(context)
    refreshing.add(_key(message))

    async def refresh() -> None:
        try:
            service = runtime(context).accounts
            shown, page_now, pages = page_of(await service.list_accounts(user_id, with_balances=False), page,
                                             ACCOUNTS_PER_PAGE)
            views = await service.refreshed_accounts(user_id, [v.id for v in shown])
            await _edit(message, _listing(views, page_now, pages), views, user_id, page_now, pages)
        finally:
            refreshing.discard(_key(message))

    context.application.create_task(refresh(), name=f"accounts-refresh-{user_id}")


def _listing(views, page: int, pages: int, *, refreshing: bool = False) -> str:
    """One page of the listing, in one message (cut at a line, saying so, if ever too long): it is edited."""
    text = accounts_text(views, _now(), refreshing=refreshing)
    if pages > 1:
        text = text.replace("</b>", f"</b> (page {page} of {pages})", 1)
    footer = _RENAME + (_NEW_KEY if any(not is_paper(v.venue) for v in views) else "")  # Paper has no key
    return split_html(text + footer, max_parts=1)[0]


async def _edit(message: Message, text: str, views, user_id: int, page: int, pages: int) -> None:
    try:
        await message.edit_text(text, reply_markup=_accounts_keyboard(views, user_id, page, pages))
    except BadRequest as exc:
        # Nothing changed since the last edit, or the user deleted the message meanwhile: nothing to show.
        if not any(words in exc.message.lower() for words in ("not modified", "not found")):
            raise


def _accounts_keyboard(views, user_id: int, page: int, pages: int):
    rows = [[("🔄 Refresh", f"acc:{user_id}:{page}")]]
    if pages > 1:
        rows.append(pager_row(f"acc:{user_id}", page, pages))
    rows += [[(f"🔑 New key for {v.label}", f"connect:replace:{v.id}")] for v in views if not is_paper(v.venue)]
    return keyboard(rows)


def _refreshing(context: Context) -> set[tuple[int, int]]:
    """The /accounts messages whose refresh is under way (one refresh per message at a time)."""
    return context.bot_data.setdefault("accounts_refreshing", set())


def _key(message: Message) -> tuple[int, int]:
    return message.chat_id, message.message_id


def _now() -> datetime:
    return datetime.now(UTC)


async def disconnect(update: Update, context: Context) -> None:
    rt = runtime(context)
    user_id = update.effective_user.id
    views = await rt.accounts.list_accounts(user_id, with_balances=False)
    if not views:
        await reply(update, "You have no connected accounts.")
        return
    if context.args:
        label = context.args[0]
        match = next((v for v in views if v.label == label), None)
        if match is None:
            yours = ", ".join(esc(v.label) for v in views)
            await reply(update, f"No account labelled {esc(clip(label, 40))}. Yours: {yours}")
            return
        account = await rt.accounts.owned(user_id, match.id)
        await reply(update, *await _confirmation(rt, user_id, account))
        return
    rows = [[(f"{v.label} ({v.venue_name})", f"disc:pick:{v.id}")] for v in views[:MAX_ACCOUNT_BUTTONS]]
    rows.append([("Cancel", "disc:no")])
    more = (f"\n(The first {MAX_ACCOUNT_BUTTONS} of {len(views)}; for another, send /disconnect &lt;label&gt;.)"
            if len(views) > MAX_ACCOUNT_BUTTONS else "")
    await reply(update, "Which account do you want to disconnect?" + more, keyboard(rows))


MAX_STRATEGIES_LISTED = 30


def _confirm_text(label: str, strategies: list[str], *, paper: bool = False) -> str:
    head = f"Disconnect <b>{esc(label)}</b>{f' ({PAPER_MARK})' if paper else ''}? "
    end = (
        "its simulated balances and orders are deleted (you can open a new Paper account any time)." if paper
        else "its key is destroyed (you can connect it again later)."
    )
    if not strategies:
        return head + "It runs no strategy; " + end
    return "\n".join([
        head + f"{_these(strategies)} (what they hold is kept; each gets its final summary), "
        "their open orders are cancelled, and " + end,
        *_strategy_lines(strategies),
    ])


def _these(strategies: list[str]) -> str:
    return "This strategy stops" if len(strategies) == 1 else f"These {len(strategies)} strategies stop"


def _strategy_lines(strategies: list[str]) -> list[str]:
    lines = [f"  • {esc(name)}" for name in strategies[:MAX_STRATEGIES_LISTED]]
    if len(strategies) > MAX_STRATEGIES_LISTED:
        lines.append(f"  … and {len(strategies) - MAX_STRATEGIES_LISTED} more (see /status)")
    return lines


def _confirm_keyboard(account_id: int, action: str = "yes"):
    return keyboard([[("Confirm disconnect", f"disc:{action}:{account_id}"), ("Cancel", "disc:no")]])


async def _confirmation(rt, user_id: int, account) -> tuple[str, object]:
    """The confirmation for this account: the usual one, or for a suspended key the orders left open."""
    strategies = await rt.accounts.strategies_to_stop(user_id, account.id)
    if account.status == "key_unsafe":  # the key works (it can even withdraw): its orders are cancelled with it
        text = _confirm_text(account.label, strategies)
        return text + "\nIts key can withdraw: delete it on the exchange too.", _confirm_keyboard(account.id)
    if account.status == "active":
        return _confirm_text(account.label, strategies, paper=is_paper(account.venue)), _confirm_keyboard(account.id)
    left = await rt.accounts.left_open(user_id, account.id)
    why, then = {
        "key_rejected": ("was rejected by the exchange", "its key is destroyed"),
        "key_removed": ("was removed when the service closed", "the account is removed"),
    }.get(account.status, ("cannot be read", "its key is destroyed"))
    lines = [
        f"Disconnect <b>{esc(account.label)}</b>? Its key {why}, so I cannot cancel anything on the exchange. "
        f"Its strategies stop and {then}.",
    ]
    if strategies:
        lines += [f"{_these(strategies)}:", *_strategy_lines(strategies)]
    if left:
        lines += [
            f"⚠️ These {len(left)} order(s) may still be open on the exchange: <b>cancel them there yourself</b> "
            "(I forget them and release their budget):",
            *left_open_lines(left),
        ]
    else:
        lines.append("It has no open orders.")
    return "\n".join(lines), _confirm_keyboard(account.id, "abandon")


async def disconnect_button(update: Update, context: Context) -> None:
    query = update.callback_query
    await query.answer()
    rt = runtime(context)
    user_id = update.effective_user.id
    action = query.data.split(":")[1]
    if action == "no":
        await answer_and_edit(update, "Nothing was changed.")
        return
    account_id = callback_int(query.data, 2)
    try:
        if account_id is None:
            raise UserError("That account is not (or no longer) connected.")
        if action == "pick":
            account = await rt.accounts.owned(user_id, account_id)
            await answer_and_edit(update, *await _confirmation(rt, user_id, account))
            return
        if action == "abandon":
            done = await rt.accounts.disconnect_suspended(user_id, account_id)
            lines = [f"🗑 <b>{esc(done.account.label)}</b> is disconnected and its key destroyed."]
            if done.left_open:
                lines += [
                    f"⚠️ Cancel these {len(done.left_open)} order(s) on the exchange yourself: they may still be open.",
                    *left_open_lines(done.left_open),
                ]
            await answer_and_edit(update, "\n".join(lines))
            await _send_summaries(update, done.stopped)
            return
        await answer_and_edit(update, "Disconnecting: stopping strategies and cancelling orders…")
        done = await rt.accounts.disconnect(user_id, account_id)
    except UserError as exc:
        await answer_and_edit(update, esc(exc.message))
        return
    await answer_and_edit(update, _disconnected_text(done.account))
    await _send_summaries(update, done.stopped)


def _disconnected_text(account) -> str:
    if is_paper(account.venue):
        label = esc(account.label)
        return f"🗑 {PAPER_MARK} account <b>{label}</b> is removed, its simulated balances and orders deleted."
    return f"🗑 <b>{esc(account.label)}</b> is disconnected and its key destroyed."


async def _send_summaries(update: Update, stopped) -> None:
    """Each stopped strategy's summary as /stop gives it, together (split only if over Telegram's limit)."""
    if stopped:
        await reply(update, "\n\n".join(stop_text(summary) for summary in stopped))


def handlers() -> list[tuple[int, object]]:
    return [
        (0, CommandHandler("accounts", accounts)),
        (0, CallbackQueryHandler(accounts_button, pattern=r"^acc:")),
        (0, CommandHandler("disconnect", disconnect)),
        (0, CallbackQueryHandler(disconnect_button, pattern=r"^disc:")),
    ]

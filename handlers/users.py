"""/users (admins only): every user with their access, accounts and strategies, and buttons to approve, block and
unblock; the same buttons under an access request's message. The service checks that whoever pressed is an
admin: callback data proves nothing."""

from __future__ import annotations

from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.services.access import (
    APPROVE,
    APPROVED,
    BLOCK,
    BLOCKED,
    CALLBACK_PREFIX,
    NOT_ADMIN,
    PENDING,
    UNBLOCK,
    access_button,
)
from bot.services.errors import UserError
from handlers.common import Context, answer_and_edit, esc, keyboard, page_of, pager_row, parse_id, reply, runtime
from handlers.fallback import closest_command, registered_commands, suggestion_text

USERS_PER_PAGE = 8  # a line and a button row each: far under 4,096 characters and Telegram's 100 buttons
STATE_LABELS = {PENDING: "⏳ waiting", APPROVED: "✅ approved", BLOCKED: "⛔ blocked"}
NAME_IN_BUTTON = 24
ACTIONS = (APPROVE, BLOCK, UNBLOCK)


def users_view(users, admins: frozenset[int], page: int = 1):
    shown, page, pages = page_of(users, page, USERS_PER_PAGE)
    waiting = sum(u.access == PENDING for u in users)
    lines = [
        f"<b>Users</b> — {len(users)}" + (f", {waiting} waiting" if waiting else "")
        + (f" — page {page} of {pages}" if pages > 1 else "")
    ]
    rows = []
    for user in shown:
        name = user.name or f"user {user.id}"
        state = "👑 admin" if user.id in admins else STATE_LABELS.get(user.access, user.access)
        lines.append(
            f"{esc(name)} · <code>{user.id}</code> · {state} · {user.accounts} account"
            f"{'' if user.accounts == 1 else 's'} · {user.strategies} strateg{'y' if user.strategies == 1 else 'ies'}"
        )
        short = name if len(name) <= NAME_IN_BUTTON else name[: NAME_IN_BUTTON - 1] + "…"
        if user.id in admins:
            continue
        if user.access == PENDING:
            rows.append([(f"✅ Approve {short}", access_button(APPROVE, user.id, page)),
                         (f"⛔ Block {short}", access_button(BLOCK, user.id, page))])
        elif user.access == APPROVED:
            rows.append([(f"⛔ Block {short}", access_button(BLOCK, user.id, page))])
        elif user.access == BLOCKED:
            rows.append([(f"↩️ Unblock {short}", access_button(UNBLOCK, user.id, page))])
    if not users:
        lines.append("Nobody has written /start yet.")
    else:
        lines.append("\nBlocking pauses the user's strategies and cancels their open orders (as /panic); their data is "
                     "kept. Unblocking lets them back in; their strategies stay paused until they resume them.")
    pager = pager_row(f"{CALLBACK_PREFIX}:page", page, pages)
    if pager:
        rows.append(pager)
    return "\n".join(lines), keyboard(rows) if rows else None


async def users_command(update: Update, context: Context) -> None:
    access = runtime(context).access
    if not access.is_admin(update.effective_user.id):  # others: as if the command did not exist
        others = [c for c in registered_commands(context.application) if c != "users"]
        await reply(update, suggestion_text("users", closest_command("users", others)))
        return
    text, markup = users_view(await access.users(update.effective_user.id), access.admins)
    await reply(update, text, markup)


async def users_button(update: Update, context: Context) -> None:
    """`usr:page:<n>`, or `usr:<approve|block|unblock>:<user id>[:<page>]` (from /users, or an access request)."""
    query = update.callback_query
    access = runtime(context).access
    admin_id = update.effective_user.id
    action, *rest = query.data.split(":")[1:] or [""]
    if not access.is_admin(admin_id):
        await query.answer(NOT_ADMIN, show_alert=True)
        return
    if action == "page":
        await query.answer()
        await _show(update, access, admin_id, (parse_id(rest[0]) if rest else None) or 1)
        return
    user_id = parse_id(rest[0]) if rest else None
    page = parse_id(rest[1]) if len(rest) == 2 else None
    if action not in ACTIONS or user_id is None or len(rest) > 2:
        await query.answer("That button is not valid any more.", show_alert=True)
        return
    if action == BLOCK:  # cancelling orders can outlast the press's answer window: answer first
        await query.answer("Blocking…")
    try:
        if action == BLOCK:  # after what the user sent before the block is handled (update_order.settled)
            settle = getattr(context.application.update_processor, "settled", None)
            change = await access.block(admin_id, user_id, settle=settle)
        elif action == APPROVE:
            change = await access.approve(admin_id, user_id)
        else:
            change = await access.unblock(admin_id, user_id)
    except UserError as exc:
        if action == BLOCK:
            await update.effective_chat.send_message(esc(exc.message))
        else:
            await query.answer(exc.message, show_alert=True)
        return
    if action != BLOCK:
        await query.answer()
    if page is not None:  # pressed in /users: the same page again, with the change
        await _show(update, access, admin_id, page, note=_done_text(change))
    else:
        await answer_and_edit(update, _done_text(change))


async def _show(update: Update, access, admin_id: int, page: int, note: str = "") -> None:
    text, markup = users_view(await access.users(admin_id), access.admins, page)
    await answer_and_edit(update, f"{note}\n\n{text}" if note else text, markup)


def _done_text(change) -> str:
    name = esc(change.name or f"user {change.user_id}")
    if change.access == BLOCKED:
        text = (f"⛔ Blocked {name}: paused {change.paused} strateg{'y' if change.paused == 1 else 'ies'}, cancelled "
                f"{change.canceled} open order{'' if change.canceled == 1 else 's'}; they were told.")
        if change.errors:
            text += " Not everything settled: " + esc("; ".join(change.errors))
        return text
    return f"✅ {name} is approved; they were told."


def handlers() -> list[tuple[int, object]]:
    return [
        (0, CommandHandler("users", users_command)),
        (0, CallbackQueryHandler(users_button, pattern=rf"^{CALLBACK_PREFIX}:")),
    ]

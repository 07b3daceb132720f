"""/history: the audit log as its reader sees it — one's own entries, newest first, ◀ Older / Newer ▶.

`/history` shows the caller's own entries (what they did, and what was done to their data); an admin
(STRATA_ADMINS) may add a Telegram user id (`/history 2002`) or `all`. Page buttons carry `hist:<whose>:<o|n>:<id>`
(whose: `me`, `all` or a user id; o/n: older than / newer than entry id); every press is checked again on the
server: a button of someone else's history, forwarded to a user who may not see it, shows that user their own.
Private chats only (handlers/guard.py answers the command in a group; a page button there shows nothing).
"""

from __future__ import annotations

from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.services.audit import FAILED, OK, REFUSED, AuditLog, HistoryPage
from bot.services.errors import UserError
from bot.timezones import zone
from handlers.common import Context, answer_and_edit, esc, is_private, keyboard, parse_id, reply, runtime
from storage.audit import AuditEntry

#: Each action in the words /history shows.
ACTION_WORDS = {
    "connect": "Connected an account",
    "replace-key": "Replaced an account's key",
    "disconnect": "Disconnected an account",
    "allocate": "Allocation summary",
    "confirm": "Started a strategy",
    "edit": "Edited a strategy",
    "pause": "Paused",
    "resume": "Resumed",
    "stop": "Stopped",
    "panic": "Panic",
    "settings": "Settings",
    "request-access": "Asked for access",
    "approve": "Approved",
    "block": "Blocked",
    "unblock": "Unblocked",
    "wind-down": "Wind-down",
}
OUTCOME_MARKS = {OK: "✅", REFUSED: "⛔ refused", FAILED: "⚠️ failed"}
#: An entry's text is clipped to these lengths, so a page of ten stays far below Telegram's 4,096 characters.
TARGET_CHARS = 90
DETAIL_CHARS = 140
USAGE = "Usage: /history (your own). Admins: /history <Telegram user id> or /history all."
PRIVATE_ONLY = "Send /history in a private chat with me: it lists what was done on your accounts."  # buttons


def _admins(context: Context) -> frozenset[int]:
    return runtime(context).settings.admins


def _log(context: Context) -> AuditLog:
    store = runtime(context).store
    if store is None:
        raise UserError("The bot is starting; try again in a moment.")
    return AuditLog(store)


async def history(update: Update, context: Context) -> None:
    viewer = update.effective_user.id
    try:
        subject: int | str | None = None
        if context.args:
            word = context.args[0].strip().lower()
            subject = "all" if word == "all" else parse_id(word)
            if subject is None or len(context.args) > 1:
                raise UserError(USAGE)
        page = await _log(context).history(viewer, subject, admins=_admins(context))
        await reply(update, history_text(page, viewer), _pager(page, viewer))
    except UserError as exc:
        await reply(update, f"❌ {esc(exc.message)}")


async def history_button(update: Update, context: Context) -> None:
    query = update.callback_query
    await query.answer()
    viewer = update.effective_user.id
    parts = query.data.split(":")
    cursor = parse_id(parts[3]) if len(parts) == 4 else None
    try:
        if not is_private(update):
            raise UserError(PRIVATE_ONLY)
        if cursor is None or parts[2] not in ("o", "n"):
            raise UserError("This menu has expired. Send /history again.")
        whose = parts[1]
        subject: int | str | None = None if whose == "me" else "all" if whose == "all" else parse_id(whose)
        log, admins = _log(context), _admins(context)
        if subject is not None and subject != viewer and viewer not in admins:
            # Someone else's page button (forwarded): its presser sees only their own history.
            page = await log.history(viewer, None, admins=admins)
        else:
            older = parts[2] == "o"
            page = await log.history(
                viewer, subject, admins=admins, before_id=cursor if older else None,
                after_id=None if older else cursor,
            )
        await answer_and_edit(update, history_text(page, viewer), _pager(page, viewer))
    except UserError as exc:
        await answer_and_edit(update, f"❌ {esc(exc.message)}")


def history_text(page: HistoryPage, viewer: int) -> str:
    """One line per entry: local time, what, on what, the outcome and its few words."""
    whose = "Your history" if page.subject == viewer else (
        "Everyone's history" if page.subject is None else f"History of user {page.subject}"
    )
    head = f"<b>{whose}</b> · newest first · times in {esc(page.timezone)}"
    if not page.entries:
        return f"{head}\nNothing recorded yet."
    tz = zone(page.timezone)
    return "\n".join([head, *(_line(entry, page.subject, viewer, tz) for entry in page.entries)])


def _line(entry: AuditEntry, subject: int | None, viewer: int, tz) -> str:
    when = entry.at.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    words = ACTION_WORDS.get(entry.action, entry.action)
    mark = OUTCOME_MARKS.get(entry.outcome, entry.outcome)
    line = f"<code>{when}</code> {esc(mark)} <b>{esc(words)}</b>"
    if entry.target:
        line += f" · {_fit(entry.target, TARGET_CHARS)}"
    who = _who(entry, subject, viewer)
    if who:
        line += f" · <i>{esc(who)}</i>"
    if entry.detail:
        line += f" — {_fit(entry.detail, DETAIL_CHARS)}"
    return line


def _who(entry: AuditEntry, subject: int | None, viewer: int) -> str:
    """Who acted, when it is not simply the owner acting on their own data."""
    if entry.actor_id == entry.user_id:
        return "" if subject is not None else f"user {entry.user_id}"
    by = "the host" if entry.actor_id is None else f"user {entry.actor_id}"
    if subject == viewer and entry.actor_id == viewer:
        return f"for user {entry.user_id}"  # an admin's own action on someone else's data
    if subject == viewer:
        return "by an admin" if entry.actor_id is not None else "by the host"
    return f"{by} for user {entry.user_id}"


def _fit(text: str, most: int) -> str:
    """`text` escaped for HTML in at most `most` characters (clipped with … when longer)."""
    room = most
    while True:
        clipped = text if len(text) <= room else text[: room - 1] + "…"
        if len(esc(clipped)) <= most or room <= 1:
            return esc(clipped)
        room -= max(1, (len(esc(clipped)) - most) // 4)


def _pager(page: HistoryPage, viewer: int):
    """◀ Older and Newer ▶, each pointing past the last entry shown on its side."""
    if not page.entries:
        return None
    whose = "me" if page.subject == viewer else "all" if page.subject is None else str(page.subject)
    row = []
    if page.has_older:
        row.append(("◀ Older", f"hist:{whose}:o:{page.entries[-1].id}"))
    if page.has_newer:
        row.append(("Newer ▶", f"hist:{whose}:n:{page.entries[0].id}"))
    return keyboard([row]) if row else None


def handlers() -> list[tuple[int, object]]:
    return [
        (0, CommandHandler("history", history)),
        (0, CallbackQueryHandler(history_button, pattern=r"^hist:")),
    ]

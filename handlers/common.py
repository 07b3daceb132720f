"""Small helpers shared by the Telegram handlers: reach the runtime, answer, build keyboards."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import ContextTypes

Context = ContextTypes.DEFAULT_TYPE


def runtime(context: Context):
    """The services bundle `bot.app` put in bot_data at start-up."""
    return context.application.bot_data["runtime"]


def esc(value: object) -> str:
    return html.escape(str(value), quote=False)


def keyboard(rows: Sequence[Sequence[tuple[str, str]]]) -> InlineKeyboardMarkup:
    """Inline keyboard from rows of (label, callback_data)."""
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(text, callback_data=data) for text, data in row] for row in rows]
    )


async def reply(update: Update, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """Answer in the chat the update came from."""
    chat = update.effective_chat
    if chat is None:
        return
    await chat.send_message(text, reply_markup=markup)


async def answer_and_edit(update: Update, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """Replace the message whose button was pressed (the press itself is answered by the caller first)."""
    query = update.callback_query
    if query is None or query.message is None:
        return
    await query.edit_message_text(text, reply_markup=markup)


def is_private(update: Update) -> bool:
    return update.effective_chat is not None and update.effective_chat.type == "private"


MAX_ID = 2**63 - 1  # SQLite's INTEGER range: a larger forged id must not reach a query
#: ASCII digits only (`str.isdigit` also accepts '²', which `int()` refuses), at most MAX_ID's 19 digits.
_ID_RE = re.compile(r"[0-9]{1,19}")


def parse_id(text: str) -> int | None:
    """A positive database id from user or button text, or None if forged, malformed or out of range."""
    if not _ID_RE.fullmatch(text):
        return None
    value = int(text)
    return value if 0 < value <= MAX_ID else None


def callback_int(data: str, index: int) -> int | None:
    """The id at `index` of a colon-separated callback payload, or None if forged or malformed."""
    parts = data.split(":")
    return parse_id(parts[index]) if index < len(parts) else None

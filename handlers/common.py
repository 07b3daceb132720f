"""Small helpers shared by the Telegram handlers: reach the runtime, answer, build keyboards."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest
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
    """Answer in the chat the update came from (split by `split_html` if over Telegram's limit)."""
    chat = update.effective_chat
    if chat is None:
        return
    *first, last = split_html(text)
    for part in first:
        await chat.send_message(part)
    await chat.send_message(last, reply_markup=markup)


async def answer_and_edit(update: Update, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """Replace the message whose button was pressed (the press itself is answered by the caller first).

    Text over Telegram's limit: the message shows the first part, the rest follows as new messages, the
    buttons on the last one.
    """
    query = update.callback_query
    if query is None or query.message is None:
        return
    first, *rest = split_html(text)
    try:
        await query.edit_message_text(first, reply_markup=None if rest else markup)
    except BadRequest as exc:
        if "not modified" not in exc.message.lower():  # the same page pressed twice: nothing to change
            raise
    for index, part in enumerate(rest, 1):
        await query.message.chat.send_message(part, reply_markup=markup if index == len(rest) else None)


# --- Telegram's size limits ------------------------------------------------------------------------------

#: Telegram refuses a message whose text, after entity parsing, is over 4,096 characters ("message is too
#: long"). We measure the HTML source in UTF-16 code units, which is never less than what Telegram counts.
MAX_TEXT = 4096
#: A reply longer than this many messages is cut: one command must not flood a chat.
MAX_PARTS = 4
_TRUNCATED = "\n… (cut: too long for Telegram)"
_TAG_ROOM = 200  # closing tags at the end of a part and reopened ones at the start of the next
_TOKEN = re.compile(r"<[^<>]*>|&#?\w{1,10};|[^<&]+|[<&]")
_TAG = re.compile(r"<(/?)([a-zA-Z][\w-]*)[^<>]*>")


def text_units(text: str) -> int:
    """Length as Telegram counts it at most: UTF-16 code units (an emoji outside the BMP is two)."""
    return len(text.encode("utf-16-le")) // 2


def split_html(text: str, limit: int = MAX_TEXT, max_parts: int = MAX_PARTS) -> list[str]:
    """Split HTML into messages within `limit`, at line breaks where possible, never inside a tag or entity.

    A tag open at a split is closed at the end of the part and opened again at the start of the next, so
    every part parses on its own. Beyond `max_parts` parts the text is cut, and says so.
    """
    if text_units(text) <= limit:
        return [text]
    budget = limit - _TAG_ROOM
    atoms: list[tuple[str, str]] = []  # (joiner before it, piece)
    for line_no, line in enumerate(text.split("\n")):
        for piece_no, piece in enumerate(_cut(line, budget) if text_units(line) > budget else [line]):
            atoms.append(("\n" if line_no and not piece_no else "", piece))
    parts: list[str] = []
    stack: list[tuple[str, str]] = []  # open tags: (name, opening tag as written)
    opened, body = "", ""
    for joiner, piece in atoms:
        if body and text_units(opened + body + joiner + piece) > budget:
            parts.append(opened + body + _closing(stack))
            opened, body = "".join(tag for _, tag in stack), piece
        else:
            body = body + joiner + piece if body else piece
        _track(stack, piece)
    parts.append(opened + body + _closing(stack))
    parts = [part for part in parts if _TAG.sub("", part).strip()] or [_TRUNCATED.strip()]
    if len(parts) > max_parts:
        parts = parts[:max_parts]
        parts[-1] += _TRUNCATED
    return parts


def _cut(line: str, budget: int) -> list[str]:
    """Cut one over-long line into pieces within `budget`, only between tags, entities and characters."""
    pieces, current = [], ""
    for token in _TOKEN.findall(line):
        chunks = [token] if token.startswith(("<", "&")) else [token[i:i + budget // 2]
                                                              for i in range(0, len(token), budget // 2)]
        for chunk in chunks:
            if current and text_units(current + chunk) > budget:
                pieces.append(current)
                current = ""
            current += chunk
    return [*pieces, current] if current else pieces


def _track(stack: list[tuple[str, str]], piece: str) -> None:
    for match in _TAG.finditer(piece):
        closing, name = match.group(1), match.group(2).lower()
        if not closing:
            stack.append((name, match.group(0)))
            continue
        for index in range(len(stack) - 1, -1, -1):
            if stack[index][0] == name:
                del stack[index:]
                break


def _closing(stack: list[tuple[str, str]]) -> str:
    return "".join(f"</{name}>" for name, _ in reversed(stack))


def page_of(items: Sequence, page: int, per_page: int) -> tuple[list, int, int]:
    """The items of `page` (1-based, clamped to the existing pages), that page, and the number of pages."""
    pages = max(1, -(-len(items) // per_page))
    page = min(max(1, page), pages)
    return list(items[(page - 1) * per_page: page * per_page]), page, pages


def pager_row(prefix: str, page: int, pages: int) -> list[tuple[str, str]]:
    """◀ and ▶ buttons (callback `<prefix>:<page>`) to the neighbouring pages; empty for a single page."""
    row = [(f"◀ page {page - 1}", f"{prefix}:{page - 1}")] if page > 1 else []
    if page < pages:
        row.append((f"page {page + 1} ▶", f"{prefix}:{page + 1}"))
    return row


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

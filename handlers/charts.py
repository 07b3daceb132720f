"""/chart [id]: a strategy's value since it started against buy & hold, as a photo; the 📈 buttons under /status.

Thin: parse, ask `bot.services.charts`, send the photo. `/chart` alone charts the user's only strategy or offers
one button per strategy, ten a page. Buttons: `ch:<strategy id>` (draw it), `chp:<page>` (the picker's pages).
A refusal answers in a new message, so the /status message a 📈 button sits under stays as it was.
"""

from __future__ import annotations

import contextlib
import logging

from telegram import Update
from telegram.constants import ChatAction
from telegram.error import TelegramError
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.services.errors import UserError
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
from handlers.render import clip

logger = logging.getLogger(__name__)

PICKER_PER_PAGE = 10
USAGE = "Usage: /chart <strategy number> (see /status), or /chart alone to pick one."


def chart_buttons(strategy_ids: list[int], *, per_row: int = 5) -> list[list[tuple[str, str]]]:
    """Rows of 📈 buttons, one per strategy, for the keyboards under /status."""
    if len(strategy_ids) == 1:
        return [[("📈 Chart", f"ch:{strategy_ids[0]}")]]
    buttons = [(f"📈 #{strategy_id}", f"ch:{strategy_id}") for strategy_id in strategy_ids]
    return [buttons[i:i + per_row] for i in range(0, len(buttons), per_row)]


def _charts(context: Context):
    charts = runtime(context).charts
    if charts is None:
        raise UserError("The trading engine is starting; try again in a moment.")
    return charts


async def chart(update: Update, context: Context) -> None:
    try:
        if context.args:
            strategy_id = parse_id(context.args[0].lstrip("#"))
            if strategy_id is None:
                raise UserError(USAGE)
            await _send_chart(update, context, strategy_id)
            return
        await _picker(update, context, page=1)
    except UserError as exc:
        await reply(update, f"❌ {esc(exc.message)}")


async def _picker(update: Update, context: Context, page: int) -> None:
    choices = await _charts(context).choices(update.effective_user.id)
    if not choices:
        raise UserError("No strategies yet. /allocate a budget to one (/strategies lists them).")
    if len(choices) == 1 and update.callback_query is None:
        await _send_chart(update, context, choices[0].id)
        return
    shown, page, pages = page_of(choices, page, PICKER_PER_PAGE)
    rows = [[(clip(f"📈 {c.label}", 60), f"ch:{c.id}")] for c in shown]
    if pager := pager_row("chp", page, pages):
        rows.append(pager)
    text = "Which strategy's chart?" + (f" (page {page} of {pages})" if pages > 1 else "")
    if update.callback_query is not None:
        await answer_and_edit(update, text, keyboard(rows))
    else:
        await reply(update, text, keyboard(rows))


async def _send_chart(update: Update, context: Context, strategy_id: int) -> None:
    chat = update.effective_chat
    with contextlib.suppress(TelegramError):  # "sending a photo…" while it is drawn; cosmetic
        await chat.send_action(ChatAction.UPLOAD_PHOTO)
    result = await _charts(context).chart(update.effective_user.id, strategy_id)
    logger.info("chart of strategy %s: %d points (%s), rendered in %.3f s", result.strategy_id, result.points,
                result.timeframe, result.render_seconds)
    await chat.send_photo(photo=result.png, caption=result.caption)


async def chart_button(update: Update, context: Context) -> None:
    """📈 under /status, or a strategy of the /chart picker."""
    query = update.callback_query
    await query.answer()
    strategy_id = callback_int(query.data, 1)
    try:
        if strategy_id is None or len(query.data.split(":")) != 2:
            raise UserError("This button has expired. Send /chart again.")
        await _send_chart(update, context, strategy_id)
    except UserError as exc:
        await reply(update, f"❌ {esc(exc.message)}")


async def picker_button(update: Update, context: Context) -> None:
    """◀ / ▶ under the /chart picker."""
    query = update.callback_query
    await query.answer()
    page = callback_int(query.data, 1)
    try:
        if page is None:
            raise UserError("This menu has expired. Send /chart again.")
        await _picker(update, context, page)
    except UserError as exc:
        await reply(update, f"❌ {esc(exc.message)}")


def handlers() -> list[tuple[int, object]]:
    return [
        (0, CommandHandler("chart", chart)),
        (0, CallbackQueryHandler(chart_button, pattern=r"^ch:")),
        (0, CallbackQueryHandler(picker_button, pattern=r"^chp:")),
    ]

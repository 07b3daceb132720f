"""/balance, /trades [id] and /profit [day|week|month]: the views traders use, with ◀ ▶ pages.

Thin: parse the arguments, ask `bot.services.reports`, render. Page buttons: `tr:<strategy id or 0>:<page>`
and `pf:<period>:<page>`.
"""

from __future__ import annotations

from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.services.errors import UserError
from bot.services.reports import parse_period
from handlers.common import Context, answer_and_edit, callback_int, esc, keyboard, pager_row, parse_id, reply, runtime
from handlers.render import balance_text, profit_text, trades_text


def _reports(context: Context):
    reports = runtime(context).reports
    if reports is None:
        raise UserError("The trading engine is starting; try again in a moment.")
    return reports


async def _error(update: Update, exc: UserError) -> None:
    if update.callback_query is not None:
        await answer_and_edit(update, f"❌ {esc(exc.message)}")
    else:
        await reply(update, f"❌ {esc(exc.message)}")


async def balance(update: Update, context: Context) -> None:
    try:
        await reply(update, balance_text(await _reports(context).balance(update.effective_user.id)))
    except UserError as exc:
        await _error(update, exc)


async def trades(update: Update, context: Context) -> None:
    try:
        strategy_id = None
        if context.args:
            strategy_id = parse_id(context.args[0].lstrip("#"))
            if strategy_id is None:
                raise UserError("Usage: /trades [strategy number] (see /status).")
        page = await _reports(context).trades(update.effective_user.id, strategy_id)
        await reply(update, trades_text(page), _pager("tr", page.strategy_id or 0, page.page, page.pages))
    except UserError as exc:
        await _error(update, exc)


async def trades_button(update: Update, context: Context) -> None:
    query = update.callback_query
    await query.answer()
    parts = query.data.split(":")
    strategy_id = None if len(parts) == 3 and parts[1] == "0" else callback_int(query.data, 1)
    wanted = callback_int(query.data, 2)
    try:
        if len(parts) != 3 or wanted is None or (parts[1] != "0" and strategy_id is None):
            raise UserError("This menu has expired. Send /trades again.")
        page = await _reports(context).trades(update.effective_user.id, strategy_id, wanted)
        await answer_and_edit(update, trades_text(page), _pager("tr", page.strategy_id or 0, page.page, page.pages))
    except UserError as exc:
        await _error(update, exc)


async def profit(update: Update, context: Context) -> None:
    try:
        period = parse_period(context.args[0] if context.args else None)
        report = await _reports(context).profit(update.effective_user.id, period)
        await reply(update, profit_text(report), _pager("pf", period, report.page, report.pages))
    except UserError as exc:
        await _error(update, exc)


async def profit_button(update: Update, context: Context) -> None:
    query = update.callback_query
    await query.answer()
    parts = query.data.split(":")
    wanted = callback_int(query.data, 2)
    try:
        if len(parts) != 3 or wanted is None:
            raise UserError("This menu has expired. Send /profit again.")
        period = parse_period(parts[1])
        report = await _reports(context).profit(update.effective_user.id, period, wanted)
        await answer_and_edit(update, profit_text(report), _pager("pf", period, report.page, report.pages))
    except UserError as exc:
        await _error(update, exc)


def _pager(prefix: str, key: object, page: int, pages: int):
    row = pager_row(f"{prefix}:{key}", page, pages)
    return keyboard([row]) if row else None


def handlers() -> list[tuple[int, object]]:
    return [
        (0, CommandHandler("balance", balance)),
        (0, CommandHandler("trades", trades)),
        (0, CallbackQueryHandler(trades_button, pattern=r"^tr:")),
        (0, CommandHandler("profit", profit)),
        (0, CallbackQueryHandler(profit_button, pattern=r"^pf:")),
    ]

"""/backtest: a strategy replayed over public candles, answered with a chart and its figures (no account needed).

`/backtest <strategy> <budget> <symbol> [param=value …] [days=N] [venue=binance|kraken]` runs at once;
`/backtest` alone (or the button under /strategies) offers the strategies, then a ready example to run or edit.
Under the chart, "Start this strategy" opens the usual allocation summary with the same parameters on the
user's account of that venue (a choice when there are several; /connect when there is none).
"""

from __future__ import annotations

from telegram import Update
from telegram.constants import ChatAction, ParseMode
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.services.backtests import DEFAULT_VENUE, UNSUPPORTED, BacktestRequest
from bot.services.errors import UserError
from bot.strategies import STRATEGIES
from bot.venues import venue_name
from handlers.common import Context, answer_and_edit, esc, keyboard, reply, runtime


async def _error(update: Update, exc: UserError) -> None:
    if update.callback_query is not None:
        await update.effective_chat.send_message(f"❌ {esc(exc.message)}")
    else:
        await reply(update, f"❌ {esc(exc.message)}")


def _service(context: Context):
    service = runtime(context).backtests
    if service is None:
        raise UserError("The bot is starting; try again in a moment.")
    return service


async def backtest(update: Update, context: Context) -> None:
    if not context.args:
        await _menu(update)
        return
    await _run(update, context, list(context.args))


async def _run(update: Update, context: Context, args: list[str]) -> None:
    chat = update.effective_chat
    try:
        service = _service(context)
        await chat.send_chat_action(ChatAction.UPLOAD_PHOTO)
        report = await service.run(update.effective_user.id, args)
    except UserError as exc:
        await _error(update, exc)
        return
    await chat.send_photo(
        photo=report.png, caption=report.caption, parse_mode=ParseMode.HTML,
        reply_markup=keyboard([[("Start this strategy", f"bt:start:{report.token}")]]),
    )


async def _menu(update: Update) -> None:
    rows = [[(s.title, f"bt:pick:{s.name}")] for s in STRATEGIES.values() if s.name not in UNSUPPORTED]
    text = (
        "<b>Backtest</b>: replay a strategy over the last days of a market's public candles and see how it would "
        "have done against buy &amp; hold. No account needed. Pick a strategy:"
    )
    if update.callback_query is not None:
        await answer_and_edit(update, text, keyboard(rows))
    else:
        await reply(update, text, keyboard(rows))


async def button(update: Update, context: Context) -> None:
    query = update.callback_query
    await query.answer()
    _, action, *rest = query.data.split(":")
    try:
        if action == "menu":
            await _menu(update)
        elif action == "pick" and rest and rest[0] in STRATEGIES:
            args = await _service(context).example(rest[0])
            line = "/backtest " + " ".join(args)
            await answer_and_edit(
                update,
                f"Run this example, or send your own line like it:\n<code>{esc(line)}</code>\n"
                "Add <code>days=N</code> (1–365, 30 by default) and <code>venue=kraken</code> "
                "(Binance Spot by default).",
                keyboard([[("Run this example", f"bt:ex:{rest[0]}")]]),
            )
        elif action == "ex" and rest and rest[0] in STRATEGIES:
            await _run(update, context, await _service(context).example(rest[0]))
        elif action == "start" and rest:
            request, symbol = _service(context).started(rest[0], update.effective_user.id)
            await _start(update, context, request, symbol, account_id=int(rest[1]) if len(rest) > 1 else None,
                         token=rest[0])
    except UserError as exc:
        await _error(update, exc)


async def _start(
    update: Update, context: Context, request: BacktestRequest, symbol: str, *, account_id: int | None, token: str
) -> None:
    """Open the allocation summary for the backtested strategy on one of the user's accounts of its venue."""
    from handlers.strategies import _show_preview  # the one allocation summary, with its Confirm button

    rt = runtime(context)
    user_id = update.effective_user.id
    # Its venue's accounts, and Paper accounts trading on that venue's prices (`paper:<venue>`).
    venues = (request.venue, f"paper:{request.venue}")
    accounts = [a for a in await rt.accounts.list_accounts(user_id, with_balances=False)
                if a.venue in venues and a.status == "active"]
    if account_id is not None:
        accounts = [a for a in accounts if a.id == account_id]
    chat = update.effective_chat
    if not accounts:
        venue = venue_name(request.venue or DEFAULT_VENUE)
        await chat.send_message(
            f"To run it, connect your {esc(venue)} account first with /connect (or try it without money on a Paper "
            f"account: <code>/connect paper {esc(request.venue)}</code>), then press Start this strategy again."
        )
        return
    if len(accounts) > 1:
        rows = [[(f"{a.label} ({a.venue_name})", f"bt:start:{token}:{a.id}")] for a in accounts[:20]]
        await chat.send_message("Which account should run it?", reply_markup=keyboard(rows))
        return
    services = rt.strategies
    if services is None:
        raise UserError("The trading engine is starting; try again in a moment.")
    preview = await services.allocate(
        user_id, accounts[0].label, request.kind, str(request.budget), symbol, dict(request.params)
    )
    await _show_preview(_NewMessage(update), context, preview)


class _NewMessage:
    """An update seen as a typed message, so the summary comes as a new message under the photo (a photo's
    caption cannot become the summary's text)."""

    def __init__(self, update: Update) -> None:
        self.effective_chat = update.effective_chat
        self.effective_user = update.effective_user
        self.callback_query = None


def handlers() -> list[tuple[int, object]]:
    return [
        (0, CommandHandler("backtest", backtest)),
        (0, CallbackQueryHandler(button, pattern=r"^bt:")),
    ]

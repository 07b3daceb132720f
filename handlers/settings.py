"""/settings: fill alerts per strategy (on, silent, off) and the daily summary, all by buttons."""

from __future__ import annotations

from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.services.errors import UserError
from handlers.common import Context, answer_and_edit, esc, keyboard, page_of, pager_row, parse_id, reply, runtime

SETTINGS_PER_PAGE = 8  # 3 buttons each: 24 strategy buttons, well under Telegram's 100 per keyboard
HOURS = frozenset(str(hour) for hour in range(24))
MODE_LABELS = {"on": "🔔 on", "silent": "🔕 silent", "off": "🚫 off"}


def settings_view(settings, page: int = 1):
    """The settings text and buttons, with the strategies' alert buttons one page at a time."""
    shown, page, pages = page_of(settings.strategies, page, SETTINGS_PER_PAGE)
    lines = [
        "<b>Settings</b>" + (f" — strategies page {page} of {pages}" if pages > 1 else ""),
        "Fill alerts per strategy: on, silent (no sound) or off. Pauses, errors and key problems always "
        "arrive, with sound.",
    ]
    rows = []
    for s in shown:
        lines.append(f"{esc(s.title)}: {MODE_LABELS[s.alerts]}")
        rows.append(
            [(("• " if s.alerts == mode else "") + f"#{s.id} {mode}", f"set:alerts:{s.id}:{mode}")
             for mode in ("on", "silent", "off")]
        )
    if pager := pager_row("set:page", page, pages):
        rows.append(pager)
    if not settings.strategies:
        lines.append("(no strategies yet)")
    state = f"on at {settings.summary_hour:02d}:00 UTC" if settings.summary else "off"
    lines.append(f"Daily summary (P&amp;L net of fees): {state}")
    toggle = ("Daily summary: turn off", f"set:summary:off:{page}") if settings.summary else (
        "Daily summary: turn on", f"set:summary:on:{page}")
    rows.append([toggle])
    rows.append([("Summary −1 h", f"set:hour:{(settings.summary_hour - 1) % 24}:{page}"),
                 ("Summary +1 h", f"set:hour:{(settings.summary_hour + 1) % 24}:{page}")])
    return "\n".join(lines), keyboard(rows)


def _page_of_strategy(settings, strategy_id: int) -> int:
    ids = [s.id for s in settings.strategies]
    return ids.index(strategy_id) // SETTINGS_PER_PAGE + 1 if strategy_id in ids else 1


async def settings_command(update: Update, context: Context) -> None:
    rt = runtime(context)
    await rt.store.users.upsert(update.effective_user.id, update.effective_chat.id)
    text, markup = settings_view(await rt.settings_service.get(update.effective_user.id))
    await reply(update, text, markup)


async def settings_button(update: Update, context: Context) -> None:
    query = update.callback_query
    await query.answer()
    service = runtime(context).settings_service
    user_id = update.effective_user.id
    parts = query.data.split(":")
    # The summary buttons carry the page they were shown on (older menus without it show page 1).
    page = (parse_id(parts[3]) if len(parts) == 4 else 1) or 1
    try:
        if parts[1] == "alerts" and len(parts) == 4 and (strategy_id := parse_id(parts[2])) is not None:
            settings = await service.set_alerts(user_id, strategy_id, parts[3])
            page = _page_of_strategy(settings, strategy_id)
        elif parts[1] == "summary" and len(parts) in (3, 4) and parts[2] in ("on", "off"):
            settings = await service.set_summary(user_id, enabled=parts[2] == "on")
        elif parts[1] == "hour" and len(parts) in (3, 4) and parts[2] in HOURS:
            settings = await service.set_summary(user_id, hour=int(parts[2]))
        elif parts[1] == "page" and len(parts) == 3 and (page := parse_id(parts[2])) is not None:
            settings = await service.get(user_id)
        else:
            raise UserError("This menu has expired. Send /settings again.")
    except UserError as exc:
        await answer_and_edit(update, f"❌ {esc(exc.message)}")
        return
    text, markup = settings_view(settings, page)
    await answer_and_edit(update, text, markup)


def handlers() -> list[tuple[int, object]]:
    return [
        (0, CommandHandler("settings", settings_command)),
        (0, CallbackQueryHandler(settings_button, pattern=r"^set:")),
    ]

"""/settings: fill alerts per strategy (on, silent, off) and the daily summary, all by buttons."""

from __future__ import annotations

from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.services.errors import UserError
from handlers.common import Context, answer_and_edit, esc, keyboard, parse_id, reply, runtime

HOURS = frozenset(str(hour) for hour in range(24))
MODE_LABELS = {"on": "🔔 on", "silent": "🔕 silent", "off": "🚫 off"}


def settings_view(settings):
    lines = [
        "<b>Settings</b>",
        "Fill alerts per strategy: on, silent (no sound) or off. Pauses, errors and key problems always "
        "arrive, with sound.",
    ]
    rows = []
    for s in settings.strategies:
        lines.append(f"#{s.id} {esc(s.title)}: {MODE_LABELS[s.alerts]}")
        rows.append(
            [(("• " if s.alerts == mode else "") + f"#{s.id} {mode}", f"set:alerts:{s.id}:{mode}")
             for mode in ("on", "silent", "off")]
        )
    if not settings.strategies:
        lines.append("(no strategies yet)")
    state = f"on at {settings.summary_hour:02d}:00 UTC" if settings.summary else "off"
    lines.append(f"Daily summary (P&amp;L net of fees): {state}")
    toggle = ("Daily summary: turn off", "set:summary:off") if settings.summary else (
        "Daily summary: turn on", "set:summary:on")
    rows.append([toggle])
    rows.append([("Summary −1 h", f"set:hour:{(settings.summary_hour - 1) % 24}"),
                 ("Summary +1 h", f"set:hour:{(settings.summary_hour + 1) % 24}")])
    return "\n".join(lines), keyboard(rows)


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
    try:
        if parts[1] == "alerts" and len(parts) == 4 and (strategy_id := parse_id(parts[2])) is not None:
            settings = await service.set_alerts(user_id, strategy_id, parts[3])
        elif parts[1] == "summary" and len(parts) == 3:
            settings = await service.set_summary(user_id, enabled=parts[2] == "on")
        elif parts[1] == "hour" and len(parts) == 3 and parts[2] in HOURS:
            settings = await service.set_summary(user_id, hour=int(parts[2]))
        else:
            raise UserError("This menu has expired. Send /settings again.")
    except UserError as exc:
        await answer_and_edit(update, f"❌ {esc(exc.message)}")
        return
    text, markup = settings_view(settings)
    await answer_and_edit(update, text, markup)


def handlers() -> list[tuple[int, object]]:
    return [
        (0, CommandHandler("settings", settings_command)),
        (0, CallbackQueryHandler(settings_button, pattern=r"^set:")),
    ]

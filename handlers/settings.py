"""/settings: fill alerts per strategy (on, silent, off), the daily summary (hour, time zone) and alerts on trades
Strata did not make, by buttons.

One-line forms for what buttons cannot offer: `/settings tz <IANA name>` (any zone, not only the listed
ones), `/settings hour <0-23>`, `/settings summary on|off`, `/settings chart on|off` (the summary's chart),
`/settings foreign on|off` (trades Strata did not make).
"""

from __future__ import annotations

from telegram import Update
from telegram.ext import CallbackQueryHandler, CommandHandler

from bot.services.errors import UserError
from bot.timezones import COMMON_ZONES
from handlers.common import Context, answer_and_edit, esc, keyboard, page_of, pager_row, parse_id, reply, runtime

SETTINGS_PER_PAGE = 8  # 3 buttons each: 24 strategy buttons, well under Telegram's 100 per keyboard
HOURS = frozenset(str(hour) for hour in range(24))
MODE_LABELS = {"on": "🔔 on", "silent": "🔕 silent", "off": "🚫 off"}
ZONES_PER_ROW = 3
ZONE_INDEXES = frozenset(str(index) for index in range(len(COMMON_ZONES)))
USAGE = (
    "Usage: /settings alone for the menu; /settings tz &lt;time zone&gt; (an IANA name such as Europe/Paris), "
    "/settings hour &lt;0-23&gt; (your local hour), /settings summary on|off, /settings chart on|off (a chart "
    "with the summary), /settings foreign on|off (alerts on trades Strata did not make)."
)


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
    when = f"{settings.summary_hour:02d}:00 {esc(settings.timezone)}"
    state = f"on at {when}" if settings.summary else f"off (would be at {when})"
    lines.append(f"Daily summary (the last day per strategy and totals, P&amp;L net of fees): {state}")
    chart = "on" if settings.summary_chart else "off"
    lines.append(f"Chart with the summary (your largest running strategy, as /chart draws it): {chart}")
    lines.append("Another time zone: /settings tz Europe/Paris (any IANA name).")
    lines.append(
        "Trades Strata did not make on your accounts (someone else using your key, or you by hand on the "
        f"exchange): {'alerted' if settings.foreign_alerts else 'not alerted'}"
    )
    toggle = ("Daily summary: turn off", f"set:summary:off:{page}") if settings.summary else (
        "Daily summary: turn on", f"set:summary:on:{page}")
    rows.append([toggle])
    rows.append([("Summary chart: turn off", f"set:chart:off:{page}") if settings.summary_chart
                 else ("Summary chart: turn on", f"set:chart:on:{page}")])
    rows.append([("Summary −1 h", f"set:hour:{(settings.summary_hour - 1) % 24}:{page}"),
                 ("Summary +1 h", f"set:hour:{(settings.summary_hour + 1) % 24}:{page}")])
    rows.append([(f"Time zone: {settings.timezone}", f"set:zones:{page}")])
    rows.append([("Trades not by Strata: turn off", f"set:foreign:off:{page}") if settings.foreign_alerts
                 else ("Trades not by Strata: turn on", f"set:foreign:on:{page}")])
    return "\n".join(lines), keyboard(rows)


def zones_view(settings, page: int):
    """The time-zone picker: the common zones as buttons, Back to the settings page it came from."""
    text = (
        f"<b>Time zone</b> for the daily summary — now {esc(settings.timezone)}, the summary at "
        f"{settings.summary_hour:02d}:00 local time.\nAnother zone: /settings tz &lt;IANA name&gt;, e.g. "
        "/settings tz Europe/Paris."
    )
    buttons = [(("• " if name == settings.timezone else "") + name, f"set:tz:{index}:{page}")
               for index, name in enumerate(COMMON_ZONES)]
    rows = [buttons[i:i + ZONES_PER_ROW] for i in range(0, len(buttons), ZONES_PER_ROW)]
    rows.append([("◀ Back", f"set:page:{page}")])
    return text, keyboard(rows)


def _page_of_strategy(settings, strategy_id: int) -> int:
    ids = [s.id for s in settings.strategies]
    return ids.index(strategy_id) // SETTINGS_PER_PAGE + 1 if strategy_id in ids else 1


async def settings_command(update: Update, context: Context) -> None:
    rt = runtime(context)
    user_id = update.effective_user.id
    await rt.store.users.upsert(user_id, update.effective_chat.id)
    service = rt.settings_service
    args = context.args or []
    try:
        if not args:
            settings = await service.get(user_id)
        elif args[0].lower() in ("tz", "timezone", "zone") and len(args) == 2:
            settings = await service.set_timezone(user_id, args[1])
        elif args[0].lower() == "hour" and len(args) == 2 and args[1].isascii() and args[1].isdigit():
            settings = await service.set_summary(user_id, hour=int(args[1]))
        elif args[0].lower() == "summary" and len(args) == 2 and args[1].lower() in ("on", "off"):
            settings = await service.set_summary(user_id, enabled=args[1].lower() == "on")
        elif args[0].lower() == "chart" and len(args) == 2 and args[1].lower() in ("on", "off"):
            settings = await service.set_summary(user_id, chart=args[1].lower() == "on")
        elif args[0].lower() == "foreign" and len(args) == 2 and args[1].lower() in ("on", "off"):
            settings = await service.set_foreign_alerts(user_id, args[1].lower() == "on")
        else:
            await reply(update, USAGE)
            return
    except UserError as exc:
        await reply(update, f"❌ {esc(exc.message)}")
        return
    text, markup = settings_view(settings)
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
        elif parts[1] == "chart" and len(parts) == 4 and parts[2] in ("on", "off"):
            settings = await service.set_summary(user_id, chart=parts[2] == "on")
        elif parts[1] == "foreign" and len(parts) == 4 and parts[2] in ("on", "off"):
            settings = await service.set_foreign_alerts(user_id, parts[2] == "on")
        elif parts[1] == "hour" and len(parts) in (3, 4) and parts[2] in HOURS:
            settings = await service.set_summary(user_id, hour=int(parts[2]))
        elif parts[1] == "page" and len(parts) == 3 and (page := parse_id(parts[2])) is not None:
            settings = await service.get(user_id)
        elif parts[1] == "zones" and len(parts) == 3 and (page := parse_id(parts[2])) is not None:
            text, markup = zones_view(await service.get(user_id), page)
            await answer_and_edit(update, text, markup)
            return
        elif parts[1] == "tz" and len(parts) == 4 and parts[2] in ZONE_INDEXES:
            settings = await service.set_timezone(user_id, COMMON_ZONES[int(parts[2])])
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

"""The daily summary: at the hour each user chose, in their time zone, the last day per strategy plus totals.

"The last day" is everything since the previous summary (the last 24 hours for a first one), so consecutive
summaries neither overlap nor leave a gap, even after downtime or across a DST change. Its figures and the
totals since the start are /profit's (`ReportService.profit_between`), the one P&L computation over the
stored fills; numbers go through `bot.formatting`. Every running or paused strategy is listed; a summary
over Telegram's 4,096 characters is queued in parts split between lines, all with its claim.

When it is due: the user's local time has reached their hour on a local date whose summary is not yet sent.
Compared as a local wall-clock hour, a spring-forward day whose hour does not exist (02:00 in New York) sends
at the first local time past it, and a fall-back day whose hour happens twice sends at the first. It rides on
the engine's scheduler (one job, `daily-summary`, every quarter hour, for zones half an hour off UTC). A
user's summary is claimed (`last_summary` = that local date) and queued in one transaction, so a restart or an
overlapping run never sends it twice; after downtime, a summary whose hour has passed today still goes out once.

A user who asked for it (`/settings chart on`) also gets the chart of their largest running strategy (`/chart`'s,
`bot.services.charts`) as a photo right after the summary. Charts are drawn in the background once every due
summary is queued, one user after another, so no summary waits for anyone's chart; a chart that cannot be drawn
(a venue unreachable) is skipped with a log line, the summary having gone out anyway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from decimal import Decimal
from html import escape

from apscheduler.triggers.cron import CronTrigger

from bot.engine.pnl import is_contract
from bot.formatting import amount, money, percent, price
from bot.services.errors import UserError
from bot.services.reports import ProfitReport, ProfitTotal, StrategyProfit
from bot.services.settings import DEFAULT_SUMMARY_HOUR
from bot.strategies.naming import list_title
from bot.timezones import DEFAULT_ZONE, zone
from storage.strategies import STOPPED

logger = logging.getLogger(__name__)

JOB_ID = "daily-summary"
TELEGRAM_TEXT_LIMIT = 4096
MORE = "… (cut: more in /profit)"
ZERO = Decimal(0)


def due_day(now: datetime, tz: tzinfo, hour: int, last_day: str | None) -> str | None:
    """The user's local date whose summary is owed at `now` (None: not yet, or already sent)."""
    local = now.astimezone(tz)
    if local.hour < hour:
        return None
    day = local.date().isoformat()
    return None if day == last_day else day


def window_start(now: datetime, last_sent: datetime | None) -> datetime:
    """Where "the last day" starts: the previous summary, or 24 hours ago for a first one."""
    return last_sent if last_sent is not None and last_sent < now else now - timedelta(days=1)


@dataclass(frozen=True)
class DailyReport:
    """What one user's summary says: the window, its /profit figures and /profit's totals since the start."""

    at: datetime  # the send time: the window's end
    zone_name: str
    since: datetime
    first: bool  # no previous summary: the window is the last 24 hours
    last_day: ProfitReport
    totals: ProfitReport
    unfilled: tuple[StrategyProfit, ...] = ()  # running or paused strategies with no fill yet: listed too


def summary_text(report: DailyReport) -> str:
    tz = zone(report.zone_name)
    since = "the last 24 hours" if report.first else "since the last summary"
    start = _when(report.since, tz, year=report.since.year != report.at.year)
    lines = [
        f"📊 <b>Daily summary</b> — {_when(report.at, tz, year=True)} {escape(report.zone_name)}",
        f"<b>Last day</b> = {since}, {start} → now. P&amp;L net of fees; unrealised at the "
        "last price.",
    ]
    listed = sorted((*report.totals.strategies, *report.unfilled), key=lambda s: s.id)
    if not listed:
        lines.append("No strategies yet: /allocate one.")
        return "\n".join(lines)
    today = {s.id: s for s in report.last_day.strategies}
    quiet_stopped = 0
    for s in listed:
        day = today.get(s.id)
        if s.status == STOPPED and (day is None or not day.fills):
            quiet_stopped += 1
            continue
        lines += ["", *_strategy_lines(s, day)]
    if quiet_stopped:
        lines += ["", f"{quiet_stopped} stopped strateg{'y' if quiet_stopped == 1 else 'ies'} without fills in the "
                      "last day: in the totals only."]
    day_totals = {(t.quote, t.paper): t for t in report.last_day.totals}
    lines.append("")
    for total in report.totals.totals:
        fills = sum(
            s.fills for s in report.last_day.strategies if (s.quote, s.paper) == (total.quote, total.paper)
        )
        lines.append(_total_line(total, day_totals.get((total.quote, total.paper)), fills))
    return "\n".join(lines)


def _strategy_lines(s: StrategyProfit, day: StrategyProfit | None) -> list[str]:
    q = s.quote
    # The title names the market too, as /status and /profit do ("#1 DCA BTC/USDT “savings”").
    lines = [f"<b>{escape(s.title)}</b> ({escape(s.status)}), budget {money(s.budget, q)}"]
    if day is None or not day.fills:
        lines.append("  last day: no fills")
    else:
        lines.append(
            f"  last day: {_fills(day.fills)}, bought {money(day.bought, q)}, sold {money(day.sold, q)}, "
            f"fees {money(day.fees, q)}, realised {money(day.realised, q, signed=True)}"
        )
    for p in s.positions:
        at = "" if p.entry is None else f" at entry {price(p.entry, q)}"
        lines.append(f"  position {p.side} {amount(abs(p.size), escape(p.asset))}{at} (1x)")
    lines.append(f"  since the start: {_figures(s)}")
    return lines


def _total_line(total: ProfitTotal, day: ProfitTotal | None, fills: int) -> str:
    q = total.quote
    last_day = "no fills" if day is None or not fills else (
        f"{_fills(fills)}, realised {money(day.realised, q, signed=True)}, fees {money(day.fees, q)}"
    )
    return (f"<b>Total {escape(total.name)}</b> — last day: {last_day}; since the start: {_figures(total)} of "
            f"{money(total.budget, q)}")


def _figures(s: StrategyProfit | ProfitTotal) -> str:
    q = s.quote
    return (
        f"realised {money(s.realised, q, signed=True)}, unrealised {money(s.unrealised, q, signed=True)}, "
        f"fees {money(s.fees, q)}, net {money(s.net, q, signed=True)}, ROI {percent(s.roi)}"
    )


def _fills(count: int) -> str:
    return f"{count} fill" + ("" if count == 1 else "s")


def _when(at: datetime, tz: tzinfo, *, year: bool = False) -> str:
    """"Thu 4 Dec 09:00" (with the year: "Thu 4 Dec 2026, 09:00") in the user's zone."""
    local = at.astimezone(tz)
    date = f"{local:%a} {local.day} {local:%b}" + (f" {local.year}," if year else "")
    return f"{date} {local:%H:%M}"


MAX_PARTS = 10  # 50 strategies (the most a user may have) of the longest lines fit in far fewer
_CONTINUED = "📊 <b>Daily summary</b>, continued ({part}/{parts})"


def _units(text: str) -> int:
    """Length as Telegram counts it at most: UTF-16 code units (an emoji outside the BMP is two)."""
    return len(text.encode("utf-16-le")) // 2


def _parts(text: str, limit: int = TELEGRAM_TEXT_LIMIT) -> list[str]:
    """The summary as messages within Telegram's limit, split between lines (each line's tags are balanced), the
    later ones headed "continued (2/3)": every strategy is in it, none cut off. Beyond MAX_PARTS it is cut at a
    line and says so."""
    room = limit - _units(_CONTINUED.format(part=MAX_PARTS, parts=MAX_PARTS)) - 1
    chunks: list[list[str]] = [[]]
    for line in text.split("\n"):
        line = line if _units(line) <= room else line[: room // 2 - 1] + "…"  # one absurd line cannot overflow
        if chunks[-1] and _units("\n".join([*chunks[-1], line])) > room:
            chunks.append([])
        chunks[-1].append(line)
    if len(chunks) > MAX_PARTS:
        chunks = chunks[:MAX_PARTS]
        chunks[-1].append(MORE)
    parts = ["\n".join(chunk) for chunk in chunks]
    return [parts[0]] + [f"{_CONTINUED.format(part=i, parts=len(parts))}\n{part}"
                         for i, part in enumerate(parts[1:], 2)]


def _sent_at(text: object) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


CHART_TIMEOUT_S = 60.0  # one user's chart (candles, figures, PNG); past it the next user's chart goes on


class DailySummary:
    def __init__(self, store, reports, notifier, clock: Callable[[], datetime], charts=None) -> None:
        self._store = store
        self._reports = reports
        self._notifier = notifier
        self._clock = clock
        self._charts = charts  # ChartService, for the users who want a chart with their summary
        self._chart_tasks: set[asyncio.Task] = set()

    def schedule(self, scheduler) -> None:
        scheduler.add_job(
            self.run_due, CronTrigger(minute="0,15,30,45", second=5, timezone="UTC"), id=JOB_ID, name=JOB_ID,
            replace_existing=True, misfire_grace_time=None, coalesce=True,
        )

    async def run_due(self) -> int:
        """Queue the summary of every user whose local hour has come today; return how many were queued."""
        now = self._clock()
        queued = 0
        with_chart = []
        for user in await self._store.users.with_daily_summary():
            try:
                settings = user.settings
                zone_name = settings.get("tz") or DEFAULT_ZONE
                hour = int(settings.get("summary_hour", DEFAULT_SUMMARY_HOUR))
                day = due_day(now, zone(zone_name), hour, settings.get("last_summary"))
                if day is None:
                    continue
                last_sent = _sent_at(settings.get("last_summary_at"))
                since = window_start(now, last_sent)
                prices: dict = {}  # shared by both reports: each market priced once per summary
                totals = await self._reports.profit_between(user.id, None, None, period="all", per_page=None,
                                                            prices=prices)
                report = DailyReport(
                    at=now, zone_name=zone_name, since=since, first=since != last_sent,
                    last_day=await self._reports.profit_between(user.id, since, now, per_page=None, prices=prices),
                    totals=totals, unfilled=await self._unfilled(user.id, totals),
                )
                parts = _parts(summary_text(report))
                async with self._store.db.transaction() as tx:
                    if not await self._store.users.claim_daily_summary(tx, user.id, day, now):
                        continue
                    for text in parts:  # all queued with the claim, or none: never half a summary
                        await self._store.outbox.enqueue(
                            tx, user_id=user.id, chat_id=user.chat_id, kind="summary", text=text, silent=True
                        )
            except Exception:  # one user's failure must not cost the others their summary; retried next run
                logger.exception("daily summary for user %s failed", user.id)
                continue
            queued += 1
            if user.settings.get("summary_chart"):
                with_chart.append(user)
        if queued:
            self._notifier.wake()
            logger.info("queued %d daily summaries", queued)
        if with_chart and self._charts is not None:
            task = asyncio.create_task(self._queue_charts(with_chart), name="daily-summary-charts")
            self._chart_tasks.add(task)
            task.add_done_callback(self._chart_tasks.discard)
        return queued

    async def _queue_charts(self, users) -> None:
        """Each user's chart as a photo alert, queued after their summary (the notifier keeps a chat's order)."""
        for user in users:
            try:
                chart = await asyncio.wait_for(self._charts.summary_chart(user.id), CHART_TIMEOUT_S)
                if chart is None:  # no running strategy: the summary says so
                    continue
                async with self._store.db.transaction() as tx:
                    await self._store.outbox.enqueue(tx, user_id=user.id, chat_id=user.chat_id, kind="summary",
                                                     text=chart.caption, silent=True, photo=chart.png)
                self._notifier.wake()
            except (UserError, TimeoutError) as exc:
                logger.warning("no chart with the daily summary of user %s: %s", user.id,
                               getattr(exc, "message", "timed out"))
            except Exception:  # one user's chart must not cost the others theirs
                logger.exception("the daily summary chart of user %s failed", user.id)

    async def wait_charts(self) -> None:
        """Until the charts being drawn are queued (tests; shutdown cancels them instead)."""
        while self._chart_tasks:
            await asyncio.gather(*self._chart_tasks, return_exceptions=True)

    async def close(self) -> None:
        """Stop drawing charts: a summary's chart is a nicety, not worth delaying shutdown for."""
        for task in list(self._chart_tasks):
            task.cancel()
        await asyncio.gather(*self._chart_tasks, return_exceptions=True)

    async def _unfilled(self, user_id: int, totals: ProfitReport) -> tuple[StrategyProfit, ...]:
        """The running or paused strategies /profit leaves out (no fill yet), as rows of zeros to list them."""
        shown = {s.id for s in totals.strategies}
        return tuple(
            StrategyProfit(
                id=s.id, title=list_title(s), symbol=s.symbol, quote=s.quote,
                status=s.status, budget=s.budget, futures=is_contract(s.symbol), fills=0, realised=ZERO, fees=ZERO,
                unrealised=ZERO, positions=(),
            )
            for s in await self._store.strategies.list_for_user(user_id, ("active", "paused", "finished"))
            if s.id not in shown
        )

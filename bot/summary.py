"""The daily summary: once a day, at the hour each user chose (UTC), P&L net of fees per strategy.

It rides on the engine's scheduler (one job, `daily-summary`, every hour). A user's summary is claimed and
queued in one transaction, so a restart or an overlapping run never sends it twice; after downtime, a summary
whose hour has passed today still goes out once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from html import escape

from apscheduler.triggers.cron import CronTrigger

from bot.formatting import amount, money

logger = logging.getLogger(__name__)

JOB_ID = "daily-summary"


def summary_text(day: str, statuses) -> str:
    lines = [f"📊 <b>Daily summary</b> {escape(day)} (P&amp;L net of fees)"]
    if not statuses:
        lines.append("No strategies yet: /allocate one.")
    for s in statuses:
        unrealised = "?" if s.unrealised_pnl is None else _signed(s.unrealised_pnl)
        # What went in and what came back, not their difference: once sales return more than the buys cost,
        # "used" turns negative ("used -78.92 of 1000"), which reads as a loss or a bug. A futures position has
        # no such flows (a short's sale is not money returned): its size, then the venue's P&L, say it all.
        if s.futures:
            held = ", ".join(_position(amount, asset) for asset, amount in s.holdings.items()) or "flat"
            flows = f"position {held}"
        else:
            flows = f"invested {_money(s.invested)}, returned {_money(s.returned)}"
        lines.append(
            f"{escape(s.label or f'#{s.id} {s.title} {s.symbol}')} ({escape(s.status)}), budget {_money(s.budget)} "
            f"{escape(s.quote)}: {flows}; realised {_signed(s.realised_pnl)}, unrealised {unrealised}, "
            f"fees {_money(s.fees)}"
        )
    return "\n".join(lines)


TELEGRAM_TEXT_LIMIT = 4096


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
        chunks[-1].append("… (cut: more in /status)")
    parts = ["\n".join(chunk) for chunk in chunks]
    return [parts[0]] + [f"{_CONTINUED.format(part=i, parts=len(parts))}\n{part}"
                         for i, part in enumerate(parts[1:], 2)]


def _position(size: Decimal, asset: str) -> str:
    side = "long" if size > 0 else "short"
    return f"{side} {amount(abs(size), escape(asset))}"


def _money(value: Decimal) -> str:
    return money(value, "")


def _signed(value: Decimal) -> str:
    return money(value, "", signed=True)


class DailySummary:
    def __init__(self, store, strategies, notifier, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._strategies = strategies
        self._notifier = notifier
        self._clock = clock

    def schedule(self, scheduler) -> None:
        scheduler.add_job(
            self.run_due, CronTrigger(minute=0, second=5, timezone="UTC"), id=JOB_ID, name=JOB_ID,
            replace_existing=True, misfire_grace_time=None, coalesce=True,
        )

    async def run_due(self) -> int:
        """Queue today's summary for every user whose chosen hour has come; return how many were queued."""
        now = self._clock()
        day = now.date().isoformat()
        queued = 0
        for user in await self._store.users.with_daily_summary():
            if int(user.settings.get("summary_hour", 8)) > now.hour or user.settings.get("last_summary") == day:
                continue
            try:
                parts = _parts(summary_text(day, await self._strategies.status(user.id)))
                async with self._store.db.transaction() as tx:
                    if not await self._store.users.claim_daily_summary(tx, user.id, day):
                        continue
                    for text in parts:  # all queued with the claim, or none: never half a summary
                        await self._store.outbox.enqueue(
                            tx, user_id=user.id, chat_id=user.chat_id, kind="summary", text=text, silent=True
                        )
            except Exception:  # one user's failure must not cost the others their summary; retried next hour
                logger.exception("daily summary for user %s failed", user.id)
                continue
            queued += 1
        if queued:
            self._notifier.wake()
            logger.info("queued %d daily summaries", queued)
        return queued

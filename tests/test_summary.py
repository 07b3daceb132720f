"""The daily summary: when it is due in the user's zone (DST included), what "the last day" covers, its text.

The end-to-end tests run the real bot on the fake Telegram and fake venues and move the engine's clock:
a New York user's 09:00 arrives at 14:00 UTC in winter and 13:00 UTC in summer, once across a restart; the
last day's figures equal a computation from the fake exchange's own trades of that window, and the totals
equal /profit's.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from bot.formatting import money, percent
from bot.services.positions import PositionView
from bot.services.reports import ProfitReport, ProfitTotal, StrategyProfit
from bot.summary import (
    MAX_PARTS,
    TELEGRAM_TEXT_LIMIT,
    DailyReport,
    _parts,
    _units,
    due_day,
    summary_text,
    window_start,
)
from tests.chat_helpers import USER, connect_with_key
from tests.test_chat_strategies import allocate_one_line

D = Decimal
NEW_YORK = ZoneInfo("America/New_York")


# --- when it is due -----------------------------------------------------------------------------------


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_new_york_9_o_clock_is_14_utc_in_winter_and_13_utc_in_summer():
    assert due_day(at(2027, 1, 14, 13, 59, 59), NEW_YORK, 9, None) is None
    assert due_day(at(2027, 1, 14, 14, 0, 5), NEW_YORK, 9, None) == "2027-01-14"
    assert due_day(at(2027, 7, 15, 12, 59, 59), NEW_YORK, 9, None) is None
    assert due_day(at(2027, 7, 15, 13, 0, 5), NEW_YORK, 9, None) == "2027-07-15"
    assert due_day(at(2027, 7, 15, 13, 0, 5), NEW_YORK, 9, "2027-07-15") is None, "already sent today"
    # After downtime the day's summary still goes out, once: 23:30 local is still that local date.
    assert due_day(at(2027, 7, 16, 3, 30), NEW_YORK, 9, "2027-07-14") == "2027-07-15"


def test_spring_forward_hour_that_does_not_exist_sends_at_the_first_time_past_it():
    # 14 March 2027, New York: 01:59:59 EST is followed by 03:00:00 EDT; 02:00 never happens.
    assert due_day(at(2027, 3, 14, 6, 59, 59), NEW_YORK, 2, "2027-03-13") is None
    assert due_day(at(2027, 3, 14, 7, 0, 5), NEW_YORK, 2, "2027-03-13") == "2027-03-14"


def test_fall_back_hour_that_happens_twice_sends_at_the_first():
    # 1 November 2026, New York: 01:00–01:59 happens in EDT (05:00 UTC), then again in EST (06:00 UTC).
    assert due_day(at(2026, 11, 1, 4, 59), NEW_YORK, 1, "2026-10-31") is None
    assert due_day(at(2026, 11, 1, 5, 0, 5), NEW_YORK, 1, "2026-10-31") == "2026-11-01"
    assert due_day(at(2026, 11, 1, 6, 0, 5), NEW_YORK, 1, "2026-11-01") is None, "no second one at 01:00 EST"


def test_every_local_day_gets_exactly_one_summary_across_both_dst_changes():
    """The scheduler's quarter-hour runs over a winter, claiming like `run_due`: no local date doubled or
    skipped, each sent at the first run at or past the user's hour (or the first local time after it)."""
    for name in ("America/New_York", "Europe/Berlin", "Australia/Sydney", "Asia/Kolkata", "UTC"):
        tz = ZoneInfo(name)
        for hour in (0, 1, 2, 3, 9, 23):
            sent: dict[str, datetime] = {}
            last = None
            start = now = at(2026, 10, 20, 0, 0, 5)
            while now < at(2027, 4, 20):
                day = due_day(now, tz, hour, last)
                if day is not None:
                    assert day not in sent, (name, hour, day)
                    sent[day] = now
                    last = day
                now += timedelta(minutes=15)
            first, final = date(2026, 10, 21), date(2027, 4, 18)
            wanted = {(first + timedelta(days=n)).isoformat() for n in range((final - first).days + 1)}
            assert wanted <= set(sent), (name, hour, sorted(wanted - set(sent))[:3])
            for day, when in sent.items():
                if when == start:
                    continue  # the first run catches up on its local date
                local = when.astimezone(tz)
                assert local.date().isoformat() == day and local.hour >= hour
                earlier = (when - timedelta(minutes=15)).astimezone(tz)
                assert earlier.date().isoformat() != day or earlier.hour < hour, (name, hour, day, "late")


def test_the_last_day_starts_at_the_previous_summary_or_24_hours_ago():
    now = at(2026, 12, 4, 14, 0, 5)
    assert window_start(now, at(2026, 12, 3, 14, 0, 5)) == at(2026, 12, 3, 14, 0, 5)
    assert window_start(now, at(2026, 11, 20, 14, 0, 5)) == at(2026, 11, 20, 14, 0, 5), "after downtime: no gap"
    assert window_start(now, None) == now - timedelta(days=1)
    assert window_start(now, now + timedelta(hours=1)) == now - timedelta(days=1), "a clock gone backwards"


# --- the text -----------------------------------------------------------------------------------------


def profit(**changes) -> StrategyProfit:
    fields = dict(id=3, title="#3 DCA BTC/USDT", symbol="BTC/USDT", quote="USDT", status="active", budget=D(1000),
                  futures=False, fills=0, realised=D(0), fees=D(0), unrealised=D(0), positions=())
    fields.update(changes)
    return StrategyProfit(**fields)


def report(day: list[StrategyProfit], total: list[StrategyProfit], first: bool = False) -> DailyReport:
    def totals(rows):
        by_quote: dict[str, ProfitTotal] = {}
        for r in rows:
            t = by_quote.get(r.quote) or ProfitTotal(r.quote, D(0), D(0), D(0), D(0))
            by_quote[r.quote] = ProfitTotal(r.quote, t.realised + r.realised, t.fees + r.fees,
                                            t.unrealised + r.unrealised, t.budget + r.budget)
        return tuple(by_quote.values())

    now = at(2026, 12, 4, 14, 0, 5)
    return DailyReport(
        at=now, zone_name="America/New_York", since=now - timedelta(days=1), first=first,
        last_day=ProfitReport("window", now - timedelta(days=1), tuple(day), totals(day), 1, 1, len(day)),
        totals=ProfitReport("all", None, tuple(total), totals(total), 1, 1, len(total)),
    )


def test_the_text_names_the_local_day_and_zone_the_last_day_and_the_totals_per_quote():
    day = [profit(fills=2, bought=D("20"), sold=D("1234.5"), fees=D("0.04"), realised=D("3.111"))]
    total = [
        profit(fills=5, realised=D("5.5"), fees=D("0.1"), unrealised=D("-1.25")),
        profit(id=4, title="#4 Grid BTC/USD", symbol="BTC/USD", quote="USD", budget=D(500), realised=D(-2), fees=D(1)),
        profit(id=5, title="#5 Trend ETH/USDT:USDT", symbol="ETH/USDT:USDT", futures=True, unrealised=D("1.5"),
               positions=(PositionView("ETH/USDT:USDT", "ETH", "USDT", D("-0.05"), D("3000.5"), None),)),
    ]
    lines = summary_text(report(day, total)).splitlines()
    assert lines[0] == "📊 <b>Daily summary</b> — Fri 4 Dec 2026, 09:00 America/New_York"
    assert "since the last summary, Thu 3 Dec 09:00 → now" in lines[1]
    text = "\n".join(lines)
    assert ("  last day: 2 fills, bought 20.00 USDT, sold 1,234.50 USDT, fees 0.04 USDT, realised +3.11 USDT"
            in text)
    assert ("  since the start: realised +5.50 USDT, unrealised -1.25 USDT, fees 0.10 USDT, net +4.25 USDT, "
            "ROI +0.43%") in text
    assert "<b>#4 Grid BTC/USD</b> (active), budget 500.00 USD\n  last day: no fills" in text
    assert "  position short 0.05 ETH at entry 3,000.50 USDT (1x)" in text
    assert lines[-2].startswith("<b>Total USDT</b> — last day: 2 fills, realised +3.11 USDT, fees 0.04 USDT; "
                                "since the start: realised +5.50 USDT, unrealised +0.25 USDT")
    assert lines[-1].startswith("<b>Total USD</b> — last day: no fills; since the start: realised -2.00 USD")
    assert lines[-1].endswith("ROI -0.40% of 500.00 USD")
    assert "the last 24 hours" in summary_text(report(day, total, first=True))


def test_stopped_strategies_without_fills_are_only_in_the_totals_and_names_are_escaped():
    total = [profit(title="#3 DCA BTC/USDT “<core>”"), profit(id=6, status="stopped", realised=D(2))]
    text = summary_text(report([], total))
    assert "“&lt;core&gt;”" in text and "#6" not in text
    assert "1 stopped strategy without fills in the last day: in the totals only." in text
    assert "No strategies yet" in summary_text(report([], []))


def test_fifty_long_named_strategies_arrive_in_parts_between_lines_with_every_line_and_the_totals_kept():
    total = [profit(id=i, title=f"#{i} Rebalance BTC 50 / ETH 50 “retirement savings plan no. {i:02d}”", fills=9,
                    realised=D("-123456.78")) for i in range(1, 51)]
    text = summary_text(report(total, total))
    assert _units(text) > TELEGRAM_TEXT_LIMIT
    parts = _parts(text)
    assert 1 < len(parts) <= MAX_PARTS
    assert all(_units(part) <= TELEGRAM_TEXT_LIMIT for part in parts)
    assert parts[1].startswith(f"📊 <b>Daily summary</b>, continued (2/{len(parts)})\n")
    kept = [line for part in parts for line in part.split("\n") if "continued (" not in line]
    assert kept == text.split("\n")
    assert parts[-1].splitlines()[-1].startswith("<b>Total USDT</b> — last day: 450 fills")
    assert _parts("short") == ["short"]
    cut = _parts("\n".join(["x" * 4000] * (MAX_PARTS + 3)))
    assert len(cut) == MAX_PARTS and cut[-1].endswith("… (cut: more in /profit)")


# --- end to end ---------------------------------------------------------------------------------------


def summaries(s) -> list:
    return [m for m in s.tg.sent if m.chat_id == USER and "📊" in (m.text or "")]


async def settings(s, *lines: str) -> None:
    for line in lines:
        await s.send(USER, line)
        await s.next_reply(USER, contains="Settings")


async def test_new_york_9_o_clock_arrives_at_14_utc_in_winter_13_in_summer_once_across_a_restart(
    make_strata, fake_exchanges
):
    async with make_strata() as strata:
        fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
        await connect_with_key(strata, fake_exchanges, "binance")
        await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=10")
        await strata.next_reply(USER, contains="Bought", timeout=15)
        await settings(strata, "/settings tz america/new_york", "/settings hour 9", "/settings summary on")
        engine, summary = strata.runtime.engine, strata.runtime.summary
        engine.ctx.clock = lambda: at(2027, 1, 14, 13, 59, 59)
        assert await summary.run_due() == 0, "08:59 in New York"
        engine.ctx.clock = lambda: at(2027, 1, 14, 14, 0, 5)
        assert await summary.run_due() == 1
        winter = await strata.next_reply(USER, contains="📊", timeout=10)
        assert "Thu 14 Jan 2027, 09:00 America/New_York" in winter.plain_text
        assert "#1 DCA" in winter.plain_text

    async with make_strata() as strata:  # a restart at the same moment: nothing owed
        strata.runtime.engine.ctx.clock = lambda: at(2027, 1, 14, 14, 15, 5)
        assert await strata.runtime.summary.run_due() == 0
        strata.runtime.engine.ctx.clock = lambda: at(2027, 1, 15, 13, 59, 59)
        assert await strata.runtime.summary.run_due() == 0
        strata.runtime.engine.ctx.clock = lambda: at(2027, 7, 15, 12, 59, 59)
        assert await strata.runtime.summary.run_due() == 0, "08:59 EDT"
        strata.runtime.engine.ctx.clock = lambda: at(2027, 7, 15, 13, 0, 5)
        assert await strata.runtime.summary.run_due() == 1
        summer = await strata.next_reply(USER, contains="📊", timeout=10)
        assert "Thu 15 Jul 2027, 09:00 America/New_York" in summer.plain_text
        assert "since the last summary, Thu 14 Jan 09:00 → now" in summer.plain_text
        assert await strata.runtime.summary.run_due() == 0
        assert len(summaries(strata)) == 2, "one in winter, one in summer: none doubled by the restart"


async def test_an_old_user_with_an_hour_and_no_zone_keeps_utc(strata, fake_exchanges):
    await strata.send(USER, "/start")
    await strata.next_reply(USER)
    # As stored before zones existed: the hour was UTC, and no zone is set.
    await strata.runtime.store.users.merge_settings(USER, {"summary": 1, "summary_hour": 8})
    await strata.send(USER, "/settings")
    assert "on at 08:00 UTC" in (await strata.next_reply(USER, contains="Settings")).plain_text
    strata.runtime.engine.ctx.clock = lambda: at(2026, 11, 25, 7, 59, 59)
    assert await strata.runtime.summary.run_due() == 0
    strata.runtime.engine.ctx.clock = lambda: at(2026, 11, 25, 8, 0, 5)
    assert await strata.runtime.summary.run_due() == 1
    assert "Wed 25 Nov 2026, 08:00 UTC" in (await strata.next_reply(USER, contains="📊")).plain_text
    # Off and on again: the next summary covers the last 24 hours, not the weeks it was off; today's stays sent.
    await settings(strata, "/settings summary off", "/settings summary on")
    stored = (await strata.runtime.store.users.get(USER)).settings
    assert "last_summary_at" not in stored and stored["last_summary"] == "2026-11-25"
    assert await strata.runtime.summary.run_due() == 0


async def test_moving_west_after_today_s_summary_sends_no_second_one_that_evening(strata):
    await strata.send(USER, "/start")
    await strata.next_reply(USER)
    await settings(strata, "/settings hour 2", "/settings summary on")
    strata.runtime.engine.ctx.clock = lambda: at(2026, 12, 4, 2, 0, 5)
    assert await strata.runtime.summary.run_due() == 1
    # 03:00 UTC is 19:00 on 3 December in Los Angeles: that local day's summary is the one just sent.
    strata.runtime.engine.ctx.clock = lambda: at(2026, 12, 4, 3, 0, 5)
    await settings(strata, "/settings tz America/Los_Angeles")
    assert await strata.runtime.summary.run_due() == 0
    strata.runtime.engine.ctx.clock = lambda: at(2026, 12, 4, 10, 0, 5)  # 02:00 on 4 December there
    assert await strata.runtime.summary.run_due() == 1


def figures(line: str) -> dict[str, str]:
    """"realised +1.23 USDT, fees 0.04 USDT, …" → {"realised": "+1.23 USDT", "fees": "0.04 USDT", …}."""
    return {m[1]: m[2] for m in re.finditer(r"(\w+):? (\d+ fills?|[+-]?[\d,.]+(?: USDT|%))", line)}


def last_day_of(text: str, strategy_id: int) -> dict[str, str]:
    block = text.split(f"#{strategy_id} DCA", 1)[1]
    return figures(next(line for line in block.splitlines() if "last day:" in line))


def total_of(text: str) -> tuple[dict[str, str], dict[str, str]]:
    line = next(row for row in text.splitlines() if row.startswith("Total USDT"))
    day, start = line.split("since the start:")
    return figures(day), figures(start)


async def test_the_last_day_equals_the_venues_trades_of_that_window_and_the_totals_equal_profit(
    strata, fake_exchanges
):
    """Summary 1 covers the first buy; then a buy at a higher price and a stop that sells everything; summary 2,
    a day later, covers exactly those two fills — computed here from the fake venue's trades — and its totals
    are /profit's."""
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance")
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=20")
    await strata.next_reply(USER, contains="Bought", timeout=15)
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)
    await settings(strata, "/settings tz Asia/Tokyo", "/settings hour 0", "/settings summary on")

    assert await strata.runtime.summary.run_due() == 1  # the engine's clock is the real one here
    first = (await strata.next_reply(USER, contains="📊", timeout=10)).plain_text
    sent_at = datetime.fromisoformat((await strata.runtime.store.users.get(USER)).settings["last_summary_at"])
    [buy] = book.trades(api_key, "BTC/USDT")
    assert sent_at - timedelta(days=1) <= datetime.fromtimestamp(buy.time_ms / 1000, UTC) < sent_at
    assert "the last 24 hours" in first
    assert last_day_of(first, strategy.id) == {
        "day": "1 fill", "bought": money(buy.cost, "USDT"), "sold": money(D(0), "USDT"),
        "fees": money(buy.fee, "USDT"), "realised": money(D(0), "USDT", signed=True),
    }

    # A day later: one more buy at 55,000, then /stop sells everything.
    book.set_price("BTC/USDT", "55000")
    strata.runtime.engine.ctx.clock = lambda: datetime.now(UTC) + timedelta(days=1, seconds=1)
    await strata.runtime.engine.run_strategy(strategy.id)
    await strata.next_reply(USER, contains="Bought", timeout=15)
    await strata.send(USER, f"/stop {strategy.id}")
    question = await strata.next_reply(USER, contains="Keep what it bought")
    await strata.press(USER, question, "Stop and sell")
    await strata.next_reply(USER, contains="Realised", timeout=15)

    assert await strata.runtime.summary.run_due() == 1
    second = (await strata.next_reply(USER, contains="since the last summary", timeout=10)).plain_text
    trades = book.trades(api_key, "BTC/USDT")
    window = [t for t in trades if t.time_ms >= sent_at.timestamp() * 1000]
    assert [t.side for t in window] == ["buy", "sell"] and trades[0] not in window
    buys = [t for t in trades if t.side == "buy"]
    [sell] = [t for t in window if t.side == "sell"]
    assert sell.amount == sum(t.amount for t in buys) and {t.fee_currency for t in trades} == {"USDT"}
    # Everything bought was sold: the sale realised what came back less everything that went in.
    realised = (sell.cost - sell.fee) - sum(t.cost + t.fee for t in buys)
    assert last_day_of(second, strategy.id) == {
        "day": "2 fills", "bought": money(window[0].cost, "USDT"), "sold": money(sell.cost, "USDT"),
        "fees": money(window[0].fee + sell.fee, "USDT"), "realised": money(realised, "USDT", signed=True),
    }
    day, start = total_of(second)
    assert day == {"day": "2 fills", "realised": money(realised, "USDT", signed=True),
                   "fees": money(window[0].fee + sell.fee, "USDT")}
    assert start["realised"] == money(realised, "USDT", signed=True)
    assert start["fees"] == money(sum(t.fee for t in trades), "USDT")

    # The totals are /profit's, at the same moment.
    await strata.send(USER, "/profit")
    shown = (await strata.next_reply(USER, contains="Profit")).plain_text
    profit_total = next(row for row in shown.splitlines() if row.startswith("Total USDT"))
    report = await strata.runtime.reports.profit(USER)
    [total] = report.totals
    assert start == {
        "realised": money(total.realised, "USDT", signed=True), "unrealised": money(total.unrealised, "USDT",
                                                                                    signed=True),
        "fees": money(total.fees, "USDT"), "net": money(total.net, "USDT", signed=True),
        "ROI": percent(total.roi), "of": money(total.budget, "USDT"),
    }
    assert f"realised {start['realised']}" in profit_total and f"net {start['net']}" in profit_total

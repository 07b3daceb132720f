"""Pure parts of the views: the per-fill realised P&L adds up to the strategy's, periods start where they say,
and a page of /profit or /trades with long names stays within one Telegram message."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bot.engine.pnl import compute, realised_by_fill
from bot.services.errors import UserError
from bot.services.positions import PositionView
from bot.services.reports import (
    PROFIT_PER_PAGE,
    TRADES_PER_PAGE,
    ProfitReport,
    ProfitTotal,
    StrategyProfit,
    TradeLine,
    TradesPage,
    parse_period,
    period_start,
)
from handlers.common import MAX_TEXT, text_units
from handlers.render import profit_text, trades_text
from tests.test_engine_pnl import FUT, fill

D = Decimal


@pytest.mark.parametrize(
    ("fills", "reduced"),
    [
        # spot: fees in quote and in base, a partial sale, a sale of the rest
        ([fill("buy", "0.01", "20000", "0.2", symbol="BTC/USDT"),
          fill("buy", "0.01", "22000", "0.00001", "BTC", symbol="BTC/USDT"),
          fill("sell", "0.005", "25000", "0.125", symbol="BTC/USDT"),
          fill("sell", "0.01499", "19000", "0.28481", symbol="BTC/USDT")], [False, False, True, True]),
        # futures: long, flip to short in one fill, close
        ([fill("buy", "0.01", "20000", "0.1"), fill("sell", "0.03", "21000", "0.315"),
          fill("buy", "0.02", "19500", "0.195")], [False, True, True]),
    ],
)
def test_the_fills_realised_add_up_to_the_strategys(fills, reduced):
    booked = realised_by_fill(fills, "USDT")
    assert sum(b.realised for b in booked) == compute(fills, "USDT").realised
    assert [b.reduced for b in booked] == reduced
    assert all(b.realised == 0 for b in booked if not b.reduced and ":" not in b.item.symbol)


def test_a_futures_fill_that_only_opens_books_its_fee_as_realised():
    [opened] = realised_by_fill([fill("buy", "0.01", "20000", "0.1", symbol=FUT)], "USDT")
    assert opened.realised == D("-0.1") and not opened.reduced


def test_periods_start_today_on_monday_and_on_the_first_utc():
    now = datetime(2026, 12, 4, 18, 30, tzinfo=UTC)  # a Friday
    assert period_start("day", now) == datetime(2026, 12, 4, tzinfo=UTC)
    assert period_start("week", now) == datetime(2026, 11, 30, tzinfo=UTC)
    assert period_start("month", now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert period_start("all", now) is None
    assert [parse_period(w) for w in (None, "today", "Week", "monthly")] == ["all", "day", "week", "month"]
    with pytest.raises(UserError):
        parse_period("year")


def test_a_full_page_of_profit_or_trades_fits_one_message():
    name = "#9223372036854775807 Rebalance"
    profits = tuple(
        StrategyProfit(id=i, title=name, symbol="1000SATS/USDT:USDT", quote="USDT", status="active",
                       budget=D("123456789.12"), futures=True, fills=99999, realised=D("-123456789.123"),
                       fees=D("1234567.891"), unrealised=D("123456789.5"),
                       positions=(PositionView("1000SATS/USDT:USDT", "1000SATS", "USDT", D("-123456789.12345678"),
                                               D("0.00012345"), D("0.00012346")),))
        for i in range(PROFIT_PER_PAGE)
    )
    total = ProfitTotal("USDT", D("-1e9"), D("1e7"), D("1e9"), D("1e9"))
    report = ProfitReport("week", datetime.now(UTC), profits, (total,) * 3, 1, 4, 30)
    assert text_units(profit_text(report)) <= MAX_TEXT
    lines = tuple(
        TradeLine(strategy_id=1, title=name, symbol="1000SATS/USDT:USDT", quote="USDT",
                  at=datetime.now(UTC) - timedelta(days=i), side="sell", futures=True, action="close short",
                  amount=D("123456789.12345678"), price=D("0.00012345"), fee=D("1234.12345678"),
                  fee_currency="USDT", realised=D("-123456.78"))
        for i in range(TRADES_PER_PAGE)
    )
    assert text_units(trades_text(TradesPage(lines, 2, 300, 3000, None))) <= MAX_TEXT

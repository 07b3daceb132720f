"""The value chart renders a PNG from its series and refuses series that do not line up."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bot.charts import ChartFill, ValueChart, render_png_async


async def test_a_value_chart_is_a_png_with_fills_and_budget() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    times = [start + timedelta(hours=i) for i in range(48)]
    values = [Decimal(1000 + i) for i in range(48)]
    hold = [Decimal(1000 - i) for i in range(48)]
    chart = ValueChart(
        "DCA BTC/USDT", "USDT", times, values, hold, budget=Decimal(1000),
        fills=[ChartFill(times[3], "buy", values[3]), ChartFill(times[9], "sell", values[9])],
    )
    png = await render_png_async(chart)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert 5_000 < len(png) < 2_000_000


def test_series_of_different_lengths_are_refused() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        ValueChart("x", "USDT", [now], [Decimal(1)], [])
    with pytest.raises(ValueError):
        ValueChart("x", "USDT", [], [], [])


async def test_characters_the_font_cannot_draw_are_left_out_not_boxed() -> None:
    """A strategy named with an emoji, the Paper mark: matplotlib would warn (an error under pytest) and draw
    a box; the chart draws the rest of the text."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    chart = ValueChart("#1 DCA BTC/USDT “🚀 moon”", "USDT", [start, start + timedelta(hours=1)],
                       [Decimal(100), Decimal(101)], [Decimal(100), Decimal(99)],
                       subtitle="📝 Paper (Binance Spot prices), 1m candles")
    assert (await render_png_async(chart)).startswith(b"\x89PNG")

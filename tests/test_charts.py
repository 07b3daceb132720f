"""The value chart renders a PNG from its series and refuses series that do not line up."""

import asyncio
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


async def test_a_burst_of_charts_is_drawn_two_at_a_time(monkeypatch) -> None:
    """Twelve charts asked at once (a crowd pressing 📈): drawn at most MAX_RENDERS at a time, each still a PNG,
    while the event loop keeps answering."""
    import threading
    import time

    import bot.charts as charts

    drawing, most, lock = 0, 0, threading.Lock()
    real = charts.render_png

    def counting(chart: ValueChart) -> bytes:
        nonlocal drawing, most
        with lock:
            drawing += 1
            most = max(most, drawing)
        try:
            return real(chart)
        finally:
            with lock:
                drawing -= 1

    monkeypatch.setattr(charts, "render_png", counting)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    chart = ValueChart("#1 DCA BTC/USDT", "USDT", [start, start + timedelta(hours=1)], [Decimal(1), Decimal(2)],
                       [Decimal(1), Decimal(1)])
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    beating = asyncio.create_task(heartbeat())
    began = time.perf_counter()
    pngs = await asyncio.gather(*(render_png_async(chart) for _ in range(12)))
    elapsed = time.perf_counter() - began
    beating.cancel()
    assert all(png.startswith(b"\x89PNG") for png in pngs)
    assert most == charts.MAX_RENDERS
    assert ticks >= elapsed / 0.01 / 4, (ticks, elapsed)  # the loop kept running between the draws

"""Charts sent as photos: a strategy's value against buy & hold, its fills, its budget.

One picture serves `/backtest` (a replay over public candles) and `/chart` (a live strategy since it started),
so both describe what they show with the same `ValueChart` and get the same PNG. Rendering is synchronous and
CPU-bound (~0.1–0.3 s): callers run it off the event loop (`await render_png_async(chart)`), so one user's
chart never delays another user's reply.

matplotlib with its Agg backend (no display, no GUI toolkit) draws it: a well-kept library for exactly this,
where hand-written PNG drawing would be hundreds of lines of our own.
"""

from __future__ import annotations

import asyncio
import io
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

#: Telegram shows photos up to 1280 px wide; 1200×675 (16:9) stays sharp on phones and small in bytes.
WIDTH_IN, HEIGHT_IN, DPI = 8.0, 4.5, 150
#: The shortest time axis drawn: a chart of a few seconds would otherwise be labelled in microseconds.
MIN_SPAN = timedelta(minutes=5)


@dataclass(frozen=True)
class ChartFill:
    """One fill marked on the value line: when, which side, and the strategy's value at that moment."""

    at: datetime
    side: str  # "buy" | "sell"
    value: Decimal


@dataclass(frozen=True)
class ValueChart:
    """What a value chart shows. `times`, `values` and `hold` are parallel series (same length, time order)."""

    title: str
    #: The currency every value is in (the strategy's quote: USDT, USD…).
    quote: str
    times: list[datetime]
    #: The strategy's value at each time: what it holds at that time's price plus its unspent budget.
    values: list[Decimal]
    #: Buy & hold: the same budget put into the base at the first time, valued at each time.
    hold: list[Decimal]
    budget: Decimal | None = None
    fills: list[ChartFill] = field(default_factory=list)
    #: A short line under the title (e.g. "Paper" or "Backtest, Binance Spot 1h candles").
    subtitle: str | None = None

    def __post_init__(self) -> None:
        if not (len(self.times) == len(self.values) == len(self.hold)):
            raise ValueError("times, values and hold must have the same length")
        if not self.times:
            raise ValueError("a chart needs at least one point")


def render_png(chart: ValueChart) -> bytes:
    """Draw `chart` and return the PNG bytes (blocking: call `render_png_async` from the event loop)."""
    # Imported here: matplotlib costs ~0.3 s to import, and most processes (tests, the worker) never draw.
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    # A Figure without pyplot: no global state, safe from worker threads running side by side.
    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI)
    axes = figure.add_subplot()
    values = [float(v) for v in chart.values]
    hold = [float(v) for v in chart.hold]
    axes.plot(chart.times, values, color="#1f6feb", linewidth=1.6, label="Strategy")
    axes.plot(chart.times, hold, color="#8b949e", linewidth=1.2, linestyle="--", label="Buy & hold")
    if chart.budget is not None:
        axes.axhline(float(chart.budget), color="#d29922", linewidth=0.9, linestyle=":", label="Budget")
    for side, color, marker in (("buy", "#2da44e", "^"), ("sell", "#cf222e", "v")):
        points = [(f.at, float(f.value)) for f in chart.fills if f.side == side]
        if points:
            xs, ys = zip(*points, strict=True)
            axes.scatter(xs, ys, color=color, marker=marker, s=22, zorder=3, label=f"{side.capitalize()}s")
    locator = AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # "Mar", "12:00", not "2026-03-02 12:00:00"
    if chart.times[-1] - chart.times[0] < MIN_SPAN:  # a strategy started seconds ago: minutes, not microseconds
        axes.set_xlim(chart.times[0], chart.times[0] + MIN_SPAN)
    axes.set_ylabel(chart.quote)
    axes.grid(True, alpha=0.25)
    axes.legend(loc="best", fontsize=8, frameon=False)
    axes.set_title(_drawable(chart.title), fontsize=11, loc="left")
    if chart.subtitle:
        axes.set_title(_drawable(chart.subtitle), fontsize=8, loc="right", color="#57606a")
    figure.autofmt_xdate()
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


#: Charts drawn at once. Drawing is CPU work that mostly holds the GIL: a burst of charts (many users pressing
#: 📈, the daily summaries) queues here rather than crowding the event loop's thread out.
MAX_RENDERS = 2
#: One semaphore per event loop (a semaphore serves the loop it first waited in; tests run many loops).
_renders: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


async def render_png_async(chart: ValueChart) -> bytes:
    """`render_png` in a worker thread, so the event loop keeps serving every other user meanwhile."""
    renders = _renders.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(MAX_RENDERS))
    async with renders:
        return await asyncio.to_thread(render_png, chart)


def _drawable(text: str) -> str:
    """`text` without the characters the chart's font has no glyph for (emoji in a strategy's name, the Paper
    mark): matplotlib would draw an empty box and warn on every chart."""
    from matplotlib.font_manager import FontProperties, findfont, get_font

    font = get_font(findfont(FontProperties()))  # the default font, which titles are drawn in
    kept = "".join(ch for ch in text if ch.isspace() or font.get_char_index(ord(ch)))
    return " ".join(kept.split())

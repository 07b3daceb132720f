"""Backtest speed: a year of hourly candles through DCA and a 20-level grid, each with its chart.

What /backtest does once its candles are on disk: the replay (`bot.backtest.replay`, the engine's decision core
over every candle) and the PNG (`bot.charts`). The year is the recorded BTC/USDT hours of `bot/sandbox/data`
(560 of them) chained until 8,760: each copy is scaled to open where the previous one closed, so the prices keep
the recorded hour-to-hour moves (real volatility, real ranges crossing the grid's levels) over a whole year.
The market's terms are Binance Spot BTC/USDT's (amount step 0.00001, tick 0.01, minimum 5 USDT, 0.1 % fees).

Ends with one JSON line:

    {"bench": "backtest", "candles": 8760, "seconds_per_strategy": …, "chart_seconds": …, …}

`seconds_per_strategy` is the slowest strategy's replay plus its chart; target ≤ 1 s on this machine.
Run: `python bench/backtest.py` or `python bench/backtest.py --quick` (30 days: CI size).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.backtest.replay import Terms, max_drawdown, replay
from bot.charts import ChartFill, ValueChart, render_png
from bot.engine.risk import MarketRules
from bot.sandbox.series import recorded
from bot.strategies import STRATEGIES
from bot.strategies.base import Candle, MarketInfo

HOUR = timedelta(hours=1)
YEAR = 8760
QUICK = 720
BUDGET = Decimal(10_000)
PLACES = Decimal("0.01")
TERMS = Terms(
    rules=MarketRules("BTC/USDT", "BTC", "USDT", amount_step=Decimal("0.00001"), price_step=Decimal("0.01"),
                      amount_min=Decimal("0.00001"), cost_min=Decimal(5), fee_rate=Decimal("0.001")),
    info=MarketInfo("BTC/USDT", "BTC", "USDT", Decimal("0.00001"), Decimal(5), amount_step=Decimal("0.00001")),
    maker_fee=Decimal("0.001"), taker_fee=Decimal("0.001"), fee_step=Decimal("1e-8"),
)


def year_of_hours(count: int) -> list[Candle]:
    """`count` hourly candles: the recorded hours chained, each copy scaled to open at the last close."""
    source = recorded("BTC", "1h")
    start = datetime(2023, 1, 1, tzinfo=UTC)
    out: list[Candle] = []
    scale = Decimal(1)
    while len(out) < count:
        for row in source:
            if len(out) == count:
                break
            o, h, lo, c = (v * scale for v in (row.open, row.high, row.low, row.close))
            out.append(Candle(start + HOUR * len(out), *(v.quantize(PLACES) for v in (o, h, lo, c)), row.volume))
        scale = out[-1].close / source[0].open
    return out


def run(name: str, params: dict[str, str], candles: list[Candle]) -> dict[str, object]:
    strategy = STRATEGIES[name]
    parsed = strategy.parse_params(params)
    started = time.perf_counter()
    result = replay(strategy, parsed, BUDGET, "BTC/USDT", TERMS, candles, HOUR)
    replay_s = time.perf_counter() - started
    chart = ValueChart(
        title=f"{strategy.title} on BTC/USDT: backtest", quote="USDT", times=result.times, values=result.values,
        hold=result.hold, budget=BUDGET, fills=[ChartFill(f.at, f.side, f.value) for f in result.fills],
        subtitle=f"bench, {len(candles):,} 1h candles",
    )
    started = time.perf_counter()
    png = render_png(chart)
    chart_s = time.perf_counter() - started
    pnl = result.values[-1] - BUDGET
    print(f"{name:5} {' '.join(f'{k}={v}' for k, v in params.items())}: {len(result.fills):,} fills, "
          f"P&L {pnl.quantize(PLACES):+} USDT, fees {result.fees.quantize(PLACES)} USDT, "
          f"max drawdown {(max_drawdown(result.values) * 100).quantize(PLACES)} %, "
          f"buy & hold {(result.hold[-1] - BUDGET).quantize(PLACES):+} USDT; "
          f"replay {replay_s:.3f} s, chart {chart_s:.3f} s ({len(png) // 1024} KiB)")
    return {"replay_s": replay_s, "chart_s": chart_s, "fills": len(result.fills)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK} candles (CI size) instead of {YEAR}")
    args = parser.parse_args()
    candles = year_of_hours(QUICK if args.quick else YEAR)
    low = min(c.low for c in candles)
    high = max(c.high for c in candles)
    print(f"{len(candles):,} hourly candles, {candles[0].ts:%Y-%m-%d} → {candles[-1].ts:%Y-%m-%d}, "
          f"BTC/USDT {low.quantize(PLACES)} – {high.quantize(PLACES)}")
    render_png(ValueChart("warm-up", "USDT", [candles[0].ts], [BUDGET], [BUDGET]))  # import matplotlib once
    results = {
        "dca": run("dca", {"every": "1d", "amount": "25"}, candles),
        "grid": run("grid", {"low": str(low.quantize(Decimal(1))), "high": str(high.quantize(Decimal(1))),
                             "levels": "20"}, candles),
    }
    slowest = max(r["replay_s"] + r["chart_s"] for r in results.values())
    print(json.dumps({
        "bench": "backtest",
        "candles": len(candles),
        "seconds_per_strategy": round(slowest, 3),
        "chart_seconds": round(max(r["chart_s"] for r in results.values()), 3),
        "replay_seconds": {name: round(r["replay_s"], 3) for name, r in results.items()},
        "fills": {name: r["fills"] for name, r in results.items()},
    }))


if __name__ == "__main__":
    main()

"""The pure steps of /chart (`bot.services.charts`): the timeframe, the price path, buy & hold and the value at
each point, checked against a plain cash-and-coins computation written here; and how long a full-size chart
takes to compute and draw."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bot.charts import ValueChart, render_png
from bot.engine.core import holdings_of, value_of
from bot.engine.pnl import compute, running
from bot.exchanges.market_data import Candle
from bot.services.charts import (
    MAX_POINTS,
    buy_and_hold,
    pick_timeframe,
    price_path,
    start_price,
    value_series,
)
from storage.models import Fill
from storage.orders import StrategyFill

D = Decimal
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
HOUR = 3_600_000


def fill(side: str, amount: str, price: str, at: datetime, fee: str = "0", currency: str = "USDT",
         symbol: str = "BTC/USDT") -> StrategyFill:
    amount_d, price_d = D(amount), D(price)
    fee_quote = D(fee) if currency == "USDT" else D(fee) * price_d
    return StrategyFill(
        fill=Fill(id=0, order_id=0, strategy_id=1, trade_key="k", side=side, amount=amount_d, price=price_d,
                  cost=amount_d * price_d, fee=D(fee), fee_currency=currency, at=at),
        symbol=symbol, fee_quote=fee_quote, profit=None,
    )


def candle(open_ms: int, open_: str, close: str) -> Candle:
    return Candle(open_ms, D(open_), max(D(open_), D(close)), min(D(open_), D(close)), D(close), D(1))


@pytest.mark.parametrize(("age", "timeframe"), [
    (timedelta(0), "1m"),
    (timedelta(minutes=718), "1m"),  # 718 candles + the start's + the open one = 720
    (timedelta(minutes=719), "5m"),
    (timedelta(hours=12), "5m"),
    (timedelta(days=3), "15m"),
    (timedelta(days=14), "30m"),
    (timedelta(days=29), "1h"),
    (timedelta(days=100), "4h"),
    (timedelta(days=700), "1d"),
    (timedelta(days=365 * 12), "1w"),
    (timedelta(days=365 * 40), "1w"),  # longer than 720 weeks: the last 720
])
def test_the_timeframe_fits_the_strategys_life_in_at_most_720_candles(age, timeframe):
    chosen, count = pick_timeframe(T0, T0 + age)
    assert chosen == timeframe and count <= MAX_POINTS


def test_the_price_path_holds_the_candles_closed_after_the_start_and_by_now():
    start = T0 + timedelta(minutes=30)  # within the 10:00 candle
    base = int(T0.timestamp() * 1000)
    candles = [candle(base - HOUR, "90", "95"), candle(base, "100", "110"), candle(base + HOUR, "110", "120"),
               candle(base + 2 * HOUR, "120", "125")]
    now = T0 + timedelta(hours=2, minutes=10)  # the 12:00 candle is still open
    assert price_path(candles, "1h", start, now) == [(T0 + timedelta(hours=1), D(110)),
                                                     (T0 + timedelta(hours=2), D(120))]
    assert start_price(candles, "1h", start) == D(100)  # the open of the candle it started in
    assert start_price(candles[2:], "1h", start) == D(110)  # history begins later: the first open after
    assert start_price([], "1h", start) is None
    bought_at_once = fill("buy", "0.01", "104", start + timedelta(minutes=1))
    assert start_price(candles, "1h", start, bought_at_once) == D(104)  # a DCA's first buy: its price
    bought_later = fill("buy", "0.01", "118", T0 + timedelta(hours=1, minutes=5))
    assert start_price(candles, "1h", start, bought_later) == D(100)


def test_buy_and_hold_pays_the_taker_fee_once_and_keeps_the_quotes_weight_in_cash():
    hold = buy_and_hold(D(1000), {"BTC": D(100)}, {"BTC": D(50000)}, D("0.001"))
    assert hold.units == {"BTC": D("0.01998")} and hold.cash == 0
    assert hold.value({"BTC": D(55000)}) == D("1098.900")
    basket = buy_and_hold(D(1000), {"BTC": D(40), "ETH": D(40)}, {"BTC": D(50000), "ETH": D(2000)}, D(0))
    assert basket.cash == D(200) and basket.value({"BTC": D(50000), "ETH": D(1000)}) == D(800)


def test_running_is_compute_on_every_prefix():
    fills = [fill("buy", "0.01", "50000", T0, "0.00001", "BTC"), fill("buy", "0.02", "48000", T0, "0.96"),
             fill("sell", "0.015", "52000", T0, "0.78"), fill("buy", "1", "2000", T0, "2", symbol="ETH/USDT"),
             fill("sell", "0.01499", "51000", T0, "0.76")]
    for count, snapshot in enumerate(running(fills, "USDT"), 1):
        assert snapshot == compute(fills[:count], "USDT")


def test_the_value_is_cash_plus_coins_at_each_point_and_fills_are_marked():
    """Independently: cash = budget − buys' cost − quote fees + sales' proceeds; coins at the last price."""
    budget = D(1000)
    at = [T0 + timedelta(hours=h) for h in range(6)]
    fills = [fill("buy", "0.01", "50000", at[0] + timedelta(minutes=5), "0.5"),
             fill("buy", "0.01", "40000", at[2] + timedelta(minutes=20), "0.4"),
             fill("sell", "0.015", "60000", at[4] + timedelta(minutes=1), "0.9")]
    path = [(at[1], D(45000)), (at[2], D(42000)), (at[3], D(41000)), (at[4], D(58000)), (at[5], D(61000))]
    hold = buy_and_hold(budget, {"BTC": D(100)}, {"BTC": D(50000)}, D(0))
    series = value_series(budget=budget, quote="USDT", start=at[0], fills=fills, paths={"BTC": path},
                          start_prices={"BTC": D(50000)}, hold=hold, fill_points=False)

    assert series.times == at
    cash_and_coins = [
        budget,  # the start, before the first fill
        budget - 500 - D("0.5") + D("0.01") * 45000,
        budget - 500 - D("0.5") + D("0.01") * 42000,
        budget - 900 - D("0.9") + D("0.02") * 41000,
        budget - 900 - D("0.9") + D("0.02") * 58000,
        budget - 900 - D("0.9") + 900 - D("0.9") + D("0.005") * 61000,
    ]
    assert series.values == cash_and_coins
    assert series.hold == [D("0.02") * p for p in (50000, 45000, 42000, 41000, 58000, 61000)]
    assert [(f.at, f.side) for f in series.fills] == [(f.fill.at, f.fill.side) for f in fills]
    assert [f.value for f in series.fills] == [  # each at its own price
        budget - D("0.5"), budget - 900 - D("0.9") + D("0.02") * 40000,
        budget - 900 - D("0.9") + 900 - D("0.9") + D("0.005") * 60000,
    ]

    # With fill points, the lines also pass through each fill, at its own price: the marker sits on the line.
    through = value_series(budget=budget, quote="USDT", start=at[0], fills=fills, paths={"BTC": path},
                           start_prices={"BTC": D(50000)}, hold=hold)
    assert through.times == sorted(at + [f.fill.at for f in fills])
    points = dict(zip(through.times, through.values, strict=True))
    assert [points[f.at] for f in through.fills] == [f.value for f in series.fills]
    assert dict(zip(through.times, through.hold, strict=True))[fills[1].fill.at] == D("0.02") * 40000
    assert [points[t] for t in at] == cash_and_coins

    # The engine's own worth of a spot strategy (`core.value_of`: unspent budget plus holdings) agrees.
    for when, value in zip(at, series.values, strict=True):
        done = [f for f in fills if f.fill.at <= when]
        net_spent = sum((f.fill.cost + f.fee_quote if f.fill.side == "buy" else -(f.fill.cost - f.fee_quote)
                         for f in done), D(0))
        price = dict(path).get(when, D(50000))
        assert value == value_of(budget, net_spent, holdings_of((f.symbol, f.fill) for f in done), {"BTC": price})


def test_a_basket_is_valued_with_each_assets_last_price():
    budget = D(1000)
    fills = [fill("buy", "0.01", "50000", T0, symbol="BTC/USDT"), fill("buy", "0.25", "2000", T0, symbol="ETH/USDT")]
    paths = {"BTC": [(T0 + timedelta(hours=1), D(51000))], "ETH": [(T0 + timedelta(hours=1), D(1900)),
                                                                 (T0 + timedelta(hours=2), D(2100))]}
    starts = {"BTC": D(50000), "ETH": D(2000)}
    hold = buy_and_hold(budget, {"BTC": D(50), "ETH": D(50)}, starts, D(0))
    series = value_series(budget=budget, quote="USDT", start=T0, fills=fills, paths=paths, start_prices=starts,
                          hold=hold)
    assert series.times == [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
    assert series.values == [budget, D(510) + D(475), D(510) + D(525)]  # one point per time, both assets moved
    assert series.hold == [budget, D(510) + D(475), D(510) + D(525)]


@pytest.mark.timing
@pytest.mark.parametrize("count", [MAX_POINTS, 1000])
def test_a_full_size_chart_is_computed_and_drawn_in_under_a_second(count):
    """720 hourly candles and 720 fills (each also a point of the lines) or 1,000 (a busy grid: markers only, as
    the service draws them): the value series plus the PNG, timed."""
    start = T0
    path = [(start + timedelta(hours=h), D(50000) + D(h % 50) * 100) for h in range(1, MAX_POINTS)]
    fills = []
    for i in range(count):
        at = start + timedelta(minutes=int(43_000 / count) * i + 1)
        price = str(50000 + (i % 50) * 100)
        fills.append(fill("buy" if i % 2 == 0 else "sell", "0.001", price, at, "0.05"))
    hold = buy_and_hold(D(1000), {"BTC": D(100)}, {"BTC": D(50000)}, D("0.001"))
    began = time.perf_counter()
    series = value_series(budget=D(1000), quote="USDT", start=start, fills=fills, paths={"BTC": path},
                          start_prices={"BTC": D(50000)}, hold=hold, fill_points=count <= MAX_POINTS)
    computed = time.perf_counter() - began
    chart = ValueChart("#1 Grid BTC/USDT", "USDT", series.times, series.values, series.hold, budget=D(1000),
                       fills=series.fills, subtitle="Binance Spot, 1h candles")
    png = render_png(chart)  # the first chart of a process also imports matplotlib
    total = time.perf_counter() - began
    again = time.perf_counter()
    render_png(chart)
    warm = time.perf_counter() - again
    print(f"\nchart: {len(series.times)} points, {len(series.fills)} fills: series {computed:.3f} s, "
          f"series + PNG {total:.3f} s (the next PNG {warm:.3f} s), {len(png)} bytes")
    lines = len(series.times)  # a fill at a candle's close time shares its point
    assert (MAX_POINTS < lines <= 2 * MAX_POINTS if count <= MAX_POINTS else lines == MAX_POINTS), lines
    assert len(series.fills) == count
    assert total < 1.0, f"{total:.3f} s"

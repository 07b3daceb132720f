"""The replay's simulated venue and figures, on small hand-made candles (the engine match is in
test_backtest_matches_engine.py): limits fill at their price when a candle's range crosses them, as makers;
a market order or a crossing limit fills at the close as a taker; fees round as the venue reports them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bot.backtest.replay import Terms, max_drawdown, replay
from bot.engine.risk import MarketRules
from bot.services.backtests import choose_timeframe
from bot.services.errors import UserError
from bot.strategies import STRATEGIES
from bot.strategies.base import Candle, MarketInfo

D = Decimal
HOUR = timedelta(hours=1)
T0 = datetime(2024, 1, 1, tzinfo=UTC)
TERMS = Terms(
    rules=MarketRules("BTC/USDT", "BTC", "USDT", amount_step=D("0.001"), price_step=D("0.01"),
                      amount_min=D("0.001"), cost_min=D(5), fee_rate=D("0.002")),
    info=MarketInfo("BTC/USDT", "BTC", "USDT", D("0.001"), D(5), amount_step=D("0.001")),
    maker_fee=D("0.001"), taker_fee=D("0.002"), fee_step=D("1e-8"),
)


def candles(*rows: tuple[str, str, str, str]) -> list[Candle]:
    return [Candle(T0 + HOUR * i, D(o), D(h), D(lo), D(c), D(1)) for i, (o, h, lo, c) in enumerate(rows)]


def test_a_grid_buy_fills_at_its_limit_when_the_low_reaches_it_and_its_sell_when_the_high_does():
    grid = STRATEGIES["grid"]
    params = grid.parse_params({"low": "90", "high": "110", "levels": "3"})  # levels 90, 100, 110
    series = candles(
        ("105", "106", "104", "105"),  # arms buys at 90 and 100
        ("105", "105", "100.5", "101"),  # 100.5 > 100: nothing fills
        ("101", "102", "99.9", "101"),  # the 100 buy fills at 100 (maker), its sell at 110 is armed
        ("101", "109.99", "100", "105"),  # 109.99 < 110: nothing
        ("105", "111", "104", "108"),  # the sell fills at 110
    )
    result = replay(grid, params, D(1000), "BTC/USDT", TERMS, series, HOUR)
    assert [(f.side, f.price, f.maker, f.at) for f in result.fills] == [
        ("buy", D(100), True, T0 + 3 * HOUR),
        ("sell", D(110), True, T0 + 5 * HOUR),
    ]
    buy, sell = result.fills
    assert buy.fee == (buy.amount * 100 * D("0.001")).quantize(D("1e-8"))
    assert sell.amount == buy.amount  # quote fee: the whole amount bought is sold
    assert result.net_spent == buy.cost + buy.fee - (sell.cost - sell.fee)
    assert len(result.values) == len(result.hold) == len(series)


def test_dca_buys_at_market_at_the_close_as_a_taker_amount_stepped_down():
    dca = STRATEGIES["dca"]
    series = candles(("100", "101", "99", "100.7"), ("100", "100", "100", "100"), ("100", "100", "100", "99"))
    result = replay(dca, dca.parse_params({"every": "2h", "amount": "50"}), D(200), "BTC/USDT", TERMS, series, HOUR)
    first, second = result.fills
    assert (first.price, first.amount, first.maker) == (D("100.7"), D("0.496"), False)  # 50 / 100.7 = 0.4965…
    assert first.fee == (D("0.496") * D("100.7") * D("0.002")).quantize(D("1e-8"))
    assert (second.price, second.at) == (D(99), T0 + 3 * HOUR)
    # Value at each close: unspent budget + holdings at the close; buy & hold bought at the first close.
    held = first.amount + second.amount
    assert result.values[-1] == D(200) - result.net_spent + held * D(99)


def test_trend_buys_on_the_way_up_and_sells_all_it_holds_on_the_way_down():
    trend = STRATEGIES["trend"]
    params = trend.parse_params({"timeframe": "1h", "fast": "1", "slow": "2", "entry": "now"})
    # Its two first candles are the warm-up (start=2): decisions begin at the third close.
    series = candles(*[(p, p, p, p) for p in ("100", "101", "102", "103", "99", "98", "97")])
    result = replay(trend, params, D(500), "BTC/USDT", TERMS, series, HOUR, start=2)
    assert [f.side for f in result.fills] == ["buy", "sell"] and result.paused is None
    assert result.holdings["BTC"] == 0


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["100", "110", "99", "120"], D("0.1")),  # 110 → 99
        (["100", "90", "80", "120", "60"], D("0.5")),  # 120 → 60
        (["100", "101", "102"], D(0)),
    ],
)
def test_max_drawdown_is_the_largest_fall_from_a_peak(values, expected):
    assert max_drawdown([D(v) for v in values]) == expected


@pytest.mark.parametrize(
    ("kind", "params", "days", "expected"),
    [
        ("dca", {"every": "1d"}, 30, "1h"),
        ("dca", {"every": "1d"}, 365, "1h"),  # 8,760 candles
        ("dca", {"every": "15m"}, 30, "15m"),
        ("dca", {"every": "15m"}, 365, "1h"),  # 35,040 15m candles would be too many
        ("grid", {"low": "1", "high": "2"}, 365, "1h"),
        ("trend", {"timeframe": "4h"}, 365, "4h"),
    ],
)
def test_the_timeframe_follows_the_strategy_within_9000_candles(kind, params, days, expected):
    strategy = STRATEGIES[kind]
    assert choose_timeframe(kind, strategy.parse_params(params), days) == expected


def test_trend_on_minutes_over_a_year_is_refused():
    with pytest.raises(UserError, match="more than 9,000 candles"):
        choose_timeframe("trend", STRATEGIES["trend"].parse_params({"timeframe": "1m"}), 365)

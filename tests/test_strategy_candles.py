"""Real candles for the strategy tests, and checks that they load into closed, ordered `Candle`s.

Other `test_strategy_*` modules import the loaders from here; the data's sources are in tests/data/README.md.
"""

from __future__ import annotations

import csv
import itertools
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path

from bot.strategies.base import Candle

DATA = Path(__file__).parent / "data" / "ohlcv"
ONE_MINUTE = timedelta(minutes=1)
ONE_DAY = timedelta(days=1)


@cache
def kraken_1m() -> tuple[Candle, ...]:
    """Kraken XBT/USDT 1-minute candles (2025-11-10), oldest first."""
    body = json.loads((DATA / "kraken_XBTUSDT-1m.json").read_text())
    rows = body["result"]["XBTUSDT"]
    # Kraken rows: [time_s, open, high, low, close, vwap, volume, count].
    return tuple(Candle.from_ccxt([int(r[0]) * 1000, r[1], r[2], r[3], r[4], r[6]]) for r in rows)


@cache
def bittrex_1d() -> tuple[Candle, ...]:
    """Bittrex BTC/USDT daily candles, 2017-11-01 to 2018-02-28, oldest first."""
    with (DATA / "bittrex_BTC_USDT-1d_2017-11_2018-02.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return tuple(
        Candle(
            ts=datetime.fromisoformat(row["date"]).replace(tzinfo=UTC),
            open=Decimal(row["open"]),
            high=Decimal(row["high"]),
            low=Decimal(row["low"]),
            close=Decimal(row["close"]),
            volume=Decimal(row["volume"]),
        )
        for row in rows
    )


def test_kraken_candles_load_in_order_one_minute_apart():
    candles = kraken_1m()
    assert len(candles) == 721
    assert all(b.ts - a.ts == ONE_MINUTE for a, b in itertools.pairwise(candles))
    assert candles[0].ts == datetime(2025, 11, 10, 12, 17, tzinfo=UTC)
    assert all(c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high for c in candles)


def test_bittrex_candles_are_consecutive_days():
    candles = bittrex_1d()
    assert len(candles) == 120
    assert all(b.ts - a.ts == ONE_DAY for a, b in itertools.pairwise(candles))
    assert candles[0].close == Decimal("6720")


def test_candle_from_ccxt_row_keeps_decimal_precision():
    candle = Candle.from_ccxt([1762777200000, 106038.1, "106044.3", 106038.1, 106040.1, "0.08317981"])
    assert candle.ts == datetime(2025, 11, 10, 12, 20, tzinfo=UTC)
    assert candle.high == Decimal("106044.3")
    assert candle.close == Decimal("106040.1")
    assert candle.volume == Decimal("0.08317981")
    assert candle.closes_at(ONE_MINUTE) == datetime(2025, 11, 10, 12, 21, tzinfo=UTC)

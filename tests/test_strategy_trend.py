"""Trend on real Kraken XBT/USDT 1-minute candles: closed candles only, long/short flips on futures, flat on spot."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

import pytest

from bot.strategies.base import Budget, Candle, Decision, DesiredOrder, Fill, MarketInfo, MarketSnapshot
from bot.strategies.params import ParamError
from bot.strategies.trend import TREND
from tests.test_strategy_candles import kraken_1m

SYMBOL = "BTC/USDT:USDT"
# entry=now: these tests follow the averages from the first candle; `entry=cross` (the default) has its own.
PARAMS = TREND.parse_params({"timeframe": "1m", "fast": "9", "slow": "21", "entry": "now"})
MARKET = MarketInfo(SYMBOL, "BTC", "USDT", amount_min=Decimal("0.001"), cost_min=Decimal(5))


def reference_is_long(candles: tuple[Candle, ...]) -> bool:
    """An independent SMA crossover in exact fractions over the given (closed) candles."""
    closes = [Fraction(str(c.close)) for c in candles[-21:]]
    return sum(closes[-9:]) / 9 > sum(closes[-21:]) / 21


def snapshot(index: int, *, futures: bool, open_close: Decimal | None = None) -> MarketSnapshot:
    """The market at the open of candle `index`: candles before it closed, candle `index` still open."""
    candles = kraken_1m()
    current = candles[index]
    window = candles[max(0, index - 50):index]  # what the engine fetches: enough for the slow average
    shown = window + ((replace(current, close=open_close),) if open_close is not None else (current,))
    return MarketSnapshot(now=current.ts, symbol=SYMBOL, price=current.open, candles=shown,
                          markets={SYMBOL: MARKET}, futures=futures)


@dataclass
class Account:
    """A minimal engine: market orders fill at once at the snapshot price; decide runs again after fills."""

    futures: bool
    total: Decimal = Decimal(1000)
    state: object = field(default_factory=lambda: TREND.initial_state(PARAMS, kraken_1m()[0].ts))
    spent: Decimal = Decimal(0)
    entry: Decimal = Decimal(0)
    orders: list[tuple[int, DesiredOrder]] = field(default_factory=list)

    def step(self, index: int) -> list[Decision]:
        decisions = []
        for _ in range(3):  # the run at the candle close, then runs after each fill
            snap = snapshot(index, futures=self.futures)
            decision = TREND.decide(snap, self.state, Budget(self.total, self.spent), PARAMS)
            self.state = decision.state
            decisions.append(decision)
            if not decision.orders:
                break
            for order in decision.orders:
                self.orders.append((index, order))
                amount = order.amount if order.amount is not None else order.cost / snap.price
                value = amount * snap.price
                if "open" in order.tag:
                    self.spent, self.entry = self.spent + value, value
                else:  # closing frees the position's notional (P&L is the engine's ledger's business)
                    self.spent, self.entry = self.spent - self.entry, Decimal(0)
                fill = Fill(order.tag, SYMBOL, order.side, amount, snap.price)
                self.state = TREND.on_fill(self.state, fill, PARAMS).state
            assert self.spent <= self.total
        return decisions


@pytest.mark.parametrize("futures", [True, False])
def test_an_open_candle_never_changes_the_decision(futures):
    candles = kraken_1m()
    state = TREND.initial_state(PARAMS, candles[0].ts)
    for index in range(21, 200, 7):
        base = TREND.decide(snapshot(index, futures=futures), state, Budget(Decimal(1000)), PARAMS)
        for extreme in (candles[index].open * 2, candles[index].open / 2):
            other = TREND.decide(snapshot(index, futures=futures, open_close=extreme), state,
                                 Budget(Decimal(1000)), PARAMS)
            assert other == base


def test_it_waits_until_enough_candles_have_closed():
    decision = TREND.decide(snapshot(20, futures=True), TREND.initial_state(PARAMS, kraken_1m()[0].ts),
                            Budget(Decimal(1000)), PARAMS)
    assert decision.orders == () and decision.status == "waiting: 20 of 21 closed candles"


def test_on_futures_it_holds_the_side_of_the_averages_and_flips_at_each_cross():
    candles = kraken_1m()
    account = Account(futures=True)
    flips = 0
    for index in range(21, len(candles)):
        decisions = account.step(index)
        expected = 1 if reference_is_long(candles[:index]) else -1
        assert account.state.position * expected > 0, f"wrong side at candle {index}"
        if any(d.orders and d.orders[0].reduce_only for d in decisions):
            flips += 1
    assert flips >= 30  # 38 crosses of the 9/21 averages in these 12 hours


def test_on_futures_a_cross_closes_reduce_only_then_opens_by_cost_over_price():
    candles = kraken_1m()
    cross = next(i for i in range(22, len(candles)) if reference_is_long(candles[:i]))
    account = Account(futures=True)
    for index in range(21, cross + 1):
        account.step(index)  # 21 opens short; at `cross` the averages have just crossed upwards
    first, close, reopen = (order for _, order in account.orders)
    price = candles[cross].open
    assert (first.side, first.tag, first.reduce_only) == ("sell", "trend:0:open-short", False)
    assert first.amount == (Decimal(1000) / candles[21].open).quantize(Decimal("1e-12"), rounding="ROUND_FLOOR")
    assert (close.side, close.tag, close.reduce_only, close.amount) == ("buy", "trend:1:close", True, first.amount)
    assert (reopen.side, reopen.tag, reopen.cost) == ("buy", "trend:2:open-long", None)
    assert reopen.amount * price <= Decimal(1000) < (reopen.amount + Decimal("1e-9")) * price


def test_on_spot_a_down_cross_goes_flat_and_never_short():
    candles = kraken_1m()
    account = Account(futures=False)
    for index in range(21, len(candles)):
        account.step(index)
        assert account.state.position >= 0
        assert (account.state.position > 0) == reference_is_long(candles[:index])
    sides = {(o.side, o.cost is not None, o.reduce_only) for _, o in account.orders}
    assert sides == {("buy", True, False), ("sell", False, False)}  # buys by cost, sells of the position


def test_while_an_order_is_open_nothing_else_is_placed():
    account = Account(futures=True)
    opened = TREND.decide(snapshot(30, futures=True), account.state, Budget(Decimal(1000)), PARAMS)
    assert len(opened.orders) == 1
    again = TREND.decide(snapshot(31, futures=True), opened.state, Budget(Decimal(1000)), PARAMS)
    assert again.orders == () and "still open" in again.status


def test_a_budget_below_the_market_minimum_waits():
    decision = TREND.decide(snapshot(30, futures=True), TREND.initial_state(PARAMS, kraken_1m()[0].ts),
                            Budget(Decimal(1000), spent=Decimal(996)), PARAMS)
    assert decision.orders == () and "below the market minimum" in decision.status


@pytest.mark.parametrize(
    ("timeframe", "now", "expected"),
    [
        ("1m", datetime(2025, 11, 10, 12, 17, 30, tzinfo=UTC), datetime(2025, 11, 10, 12, 18, tzinfo=UTC)),
        ("1h", datetime(2025, 11, 10, 12, 17, 30, tzinfo=UTC), datetime(2025, 11, 10, 13, 0, tzinfo=UTC)),
        ("4h", datetime(2025, 11, 10, 12, 0, tzinfo=UTC), datetime(2025, 11, 10, 16, 0, tzinfo=UTC)),
        ("1d", datetime(2025, 11, 10, 23, 59, tzinfo=UTC), datetime(2025, 11, 11, 0, 0, tzinfo=UTC)),
    ],
)
def test_it_runs_again_at_the_next_candle_close(timeframe, now, expected):
    params = TREND.parse_params({"timeframe": timeframe})
    assert TREND.next_run(TREND.initial_state(params, now), params, now) == expected
    assert TREND.timeframe(params) == timeframe


def test_a_base_fee_on_a_spot_buy_is_not_counted_as_held():
    state = replace(TREND.initial_state(PARAMS, kraken_1m()[0].ts), pending="trend:0:open-long", seq=1)
    fill = Fill("trend:0:open-long", "BTC/USDT", "buy", Decimal("0.01"), Decimal(100000), fee=Decimal("0.00001"),
                fee_currency="BTC")
    assert TREND.on_fill(state, fill, PARAMS).state.position == Decimal("0.00999")


def test_state_survives_a_json_round_trip():
    account = Account(futures=True)
    for index in range(21, 40):
        account.step(index)
    state = account.state
    assert TREND.load_state(json.loads(json.dumps(TREND.dump_state(state)))) == state


def test_by_default_it_waits_for_the_next_crossing_and_then_follows_the_averages():
    """entry=cross (the default): the signal found at start is not traded; the first order comes at the first
    candle whose averages are on the other side, and from then on it holds the averages' side as entry=now does."""
    candles = kraken_1m()
    params = TREND.parse_params({"timeframe": "1m", "fast": "9", "slow": "21"})
    assert params["entry"] == "cross"
    at_start = reference_is_long(candles[:21])
    cross = next(i for i in range(22, len(candles)) if reference_is_long(candles[:i]) != at_start)
    state = TREND.initial_state(params, candles[0].ts)
    for index in range(21, cross):
        decision = TREND.decide(snapshot(index, futures=True), state, Budget(Decimal(1000)), params)
        state = decision.state
        assert decision.orders == () and decision.status.startswith("waiting for the next crossing")
    [order] = TREND.decide(snapshot(cross, futures=True), state, Budget(Decimal(1000)), params).orders
    assert order.side == ("buy" if not at_start else "sell") and "open" in order.tag
    assert TREND.load_state(json.loads(json.dumps(TREND.dump_state(state)))) == state


@pytest.mark.parametrize("futures", [True, False])
def test_entry_now_acts_on_the_signal_found_at_start(futures):
    candles = kraken_1m()
    index = next(i for i in range(21, len(candles)) if reference_is_long(candles[:i]))
    params = TREND.parse_params({"timeframe": "1m", "entry": "now"})
    decision = TREND.decide(snapshot(index, futures=futures), TREND.initial_state(params, candles[0].ts),
                            Budget(Decimal(1000)), params)
    [order] = decision.orders
    assert (order.side, order.tag) == ("buy", "trend:0:open-long")


def test_a_trend_stored_before_entry_existed_keeps_trading_on_its_signal():
    state = TREND.load_state({"position": "0", "pending": None, "seq": 0})
    assert state.entered and state.start_signal is None


@pytest.mark.parametrize(("text", "message"), [
    ("later", "entry: 'later' is not an option; choose cross or now"),
    ("", "entry: a value is needed after 'entry='"),
])
def test_a_wrong_entry_gets_a_friendly_message(text, message):
    with pytest.raises(ParamError) as raised:
        TREND.parse_params({"entry": text})
    assert raised.value.message == message

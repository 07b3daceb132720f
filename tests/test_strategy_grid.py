"""Grid on real candles: buys below and sells above across the whole range from the start (with the base the sells
need bought at start, within the budget), every level re-arming after every fill, and each round trip's profit
exact net of fees — paid in quote (Kraken) or, on buys, in base (Binance)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.engine.risk import MARKET_SLIPPAGE
from bot.formatting import amount
from bot.sandbox.series import recorded
from bot.strategies.base import (
    Budget,
    Candle,
    DesiredOrder,
    Fill,
    MarketInfo,
    MarketSnapshot,
    Params,
    RoundTrip,
    floor_to,
)
from bot.strategies.grid import GRID, START_SLIPPAGE, level_prices, per_level_for, plan_grid, prices_of
from tests.test_strategy_candles import ONE_MINUTE, bittrex_1d, kraken_1m

SYMBOL = "BTC/USDT"
# 104800, 105000, … 106400: the 12 hours of Kraken minutes move between 104711 and 106536.
PARAMS = GRID.parse_params({"low": "104800", "high": "106400", "levels": "9"})
LEVELS = level_prices(PARAMS["low"], PARAMS["high"], PARAMS["levels"])
MARKET = MarketInfo(SYMBOL, "BTC", "USDT", amount_min=Decimal("0.00001"), cost_min=Decimal(5))
#: Binance's BTC/USDT rules: a 0.00001 step and a 10 USDT minimum order.
BINANCE_MARKET = MarketInfo(SYMBOL, "BTC", "USDT", amount_min=Decimal("0.00001"), cost_min=Decimal(10),
                            amount_step=Decimal("0.00001"))
ETH_MARKET = MarketInfo("ETH/USDT", "ETH", "USDT", amount_min=Decimal("0.0001"), cost_min=Decimal(5),
                        amount_step=Decimal("0.0001"))


@cache
def binance_1h(asset: str) -> tuple[Candle, ...]:
    """The recorded Binance <asset>/USDT hours the fake venues replay (bot/sandbox/data), as strategy candles."""
    return tuple(Candle(datetime.fromtimestamp(c.timestamp_ms / 1000, tz=UTC), c.open, c.high, c.low, c.close,
                        c.volume) for c in recorded(asset, "1h"))


def snapshot(candle: Candle, price: Decimal | None = None, market: MarketInfo = MARKET) -> MarketSnapshot:
    return MarketSnapshot(now=candle.ts + ONE_MINUTE, symbol=market.symbol,
                          price=candle.close if price is None else price, markets={market.symbol: market})


def rung_of(tag: str) -> int | None:
    """The rung an order belongs to: a buy at price i and a sell at price i+1 are rung i's; the start buy none."""
    parts = tag.split(":")
    if parts[1] == "buy":
        return int(parts[2])
    if parts[1] == "sell":
        return int(parts[2]) - 1
    return None


@dataclass
class Replay:
    """A minimal engine over candles, independent of the strategy's bookkeeping.

    Each candle: resting limits that the candle trades through fill at their price; then `decide` runs (again
    after fills, as the engine does) and its orders pass a gate like the engine's: amounts rounded down to the
    step, orders below the minimums refused (reported to the strategy as refused), buys reserved at their worst
    case (a market buy at the price + `MARKET_SLIPPAGE`, plus fees) and refused beyond the budget. Market
    orders fill at the candle's close. Fees: `fee_rate` of the value in quote, or for buys with `fee_in_base`
    `fee_rate` of the amount in the base asset, as Binance charges without BNB.
    """

    total: Decimal
    params: Params = field(default_factory=lambda: PARAMS)
    fee_rate: Decimal = Decimal(0)
    fee_in_base: bool = False
    market: MarketInfo = MARKET
    state: object = None
    refused: list[tuple[str, str]] = field(default_factory=list)
    open: dict[str, DesiredOrder] = field(default_factory=dict)
    spent: Decimal = Decimal(0)  # net: buys + quote fees − sell proceeds + quote fees
    most_committed: Decimal = Decimal(0)  # the largest spent + reserved seen right after a decision
    placed: list[DesiredOrder] = field(default_factory=list)
    batches: list[list[DesiredOrder]] = field(default_factory=list)  # the orders placed by each decision
    fills: list[Fill] = field(default_factory=list)
    trips: list[tuple[RoundTrip, Decimal]] = field(default_factory=list)  # with the profit computed here
    statuses: list[str] = field(default_factory=list)
    _rung_buy: dict[int, Fill] = field(default_factory=dict)
    _start_fill: Fill | None = None
    _start_share: Decimal = Decimal(0)  # what the sells of base bought at start have been charged so far

    @property
    def reserved(self) -> Decimal:
        return sum((self._reserve(o, o.price) for o in self.open.values() if o.side == "buy"), Decimal(0))

    def _reserve(self, order: DesiredOrder, price: Decimal | None) -> Decimal:
        return order.amount * price * (1 + self.fee_rate)

    def run(self, candles: tuple[Candle, ...]) -> Replay:
        if self.state is None:
            self.state = GRID.initial_state(self.params, candles[0].ts)
        for candle in candles:
            for tag, order in list(self.open.items()):
                crossed = candle.low <= order.price if order.side == "buy" else candle.high >= order.price
                if crossed:
                    del self.open[tag]
                    self._fill(order, order.price)
            for _ in range(4):  # the run, then the runs after fills
                decision = GRID.decide(snapshot(candle, market=self.market), self.state, self._budget(), self.params)
                self.state = decision.state
                self.statuses.append(decision.status)
                market_orders = self._gate(decision.orders, candle.close)
                self.most_committed = max(self.most_committed, self.spent + self.reserved
                                          + sum((self._reserve(o, candle.close * (1 + MARKET_SLIPPAGE))
                                                 for o in market_orders), Decimal(0)))
                assert self.most_committed <= self.total, "committed more than the budget"
                for order in market_orders:
                    self._fill(order, candle.close)
                if not decision.orders:
                    break
        return self

    def _budget(self) -> Budget:
        return Budget(self.total, self.spent, self.reserved, fee_rate=self.fee_rate)

    def _gate(self, orders: tuple[DesiredOrder, ...], price: Decimal) -> list[DesiredOrder]:
        market_orders = []
        headroom = self.total - self.spent - self.reserved
        if orders:
            self.batches.append([])
        for order in orders:
            assert order.tag not in {o.tag for o in self.placed}, "a tag was reused"
            unit = order.price if order.price is not None else price
            amount = floor_to(order.amount, self.market.amount_step) if self.market.amount_step else order.amount
            why = None
            if not self.market.can_trade(amount, unit):
                why = "minimum"
            elif order.side == "buy":
                reserve = amount * (order.price or price * (1 + MARKET_SLIPPAGE)) * (1 + self.fee_rate)
                if reserve > headroom:
                    why = "budget"
                else:
                    headroom -= reserve
            if why is not None:
                self.refused.append((order.tag, why))
                self.state = GRID.on_fill(self.state, Fill(order.tag, order.symbol, order.side, Decimal(0),
                                                           order.price or Decimal(0), refused=why),
                                          self.params).state
                continue
            order = replace(order, amount=amount)
            self.placed.append(order)
            self.batches[-1].append(order)
            if order.type == "market":
                market_orders.append(order)
            else:
                self.open[order.tag] = order
        return market_orders

    def _fill(self, order: DesiredOrder, price: Decimal) -> None:
        value = order.amount * price
        if order.side == "buy" and self.fee_in_base:
            fee, currency = order.amount * self.fee_rate, self.market.base
        else:
            fee, currency = value * self.fee_rate, self.market.quote
        quote_fee = fee if currency == self.market.quote else Decimal(0)
        self.spent += value + quote_fee if order.side == "buy" else -(value - quote_fee)
        fill = Fill(order.tag, order.symbol, order.side, order.amount, price, closed=True, fee=fee,
                    fee_currency=currency)
        self.fills.append(fill)
        update = GRID.on_fill(self.state, fill, self.params)
        self.state = update.state
        rung = rung_of(order.tag)
        if order.type == "market":
            self._start_fill = fill
        elif order.side == "buy":
            self._rung_buy[rung] = fill
        if update.round_trip is not None:
            self.trips.append((update.round_trip, self._expected_profit(update.round_trip, rung, fill)))

    def _expected_profit(self, trip: RoundTrip, rung: int, sell: Fill) -> Decimal:
        """The round trip's profit from this replay's own fills: the sell's proceeds net of its fee, less what its
        buy cost with its fee (a sell of base bought at start: less its share of the start purchase's cost)."""
        proceeds = sell.amount * sell.price - (sell.fee if sell.fee_currency == "USDT" else sell.fee * sell.price)
        if trip.from_start:
            self._start_share += trip.cost
            return proceeds - trip.cost
        buy = self._rung_buy.pop(rung)
        return proceeds - (buy.amount * buy.price + (buy.fee if buy.fee_currency == "USDT" else 0))

    def start_cost(self) -> Decimal:
        """What the start purchase cost on this replay's books, fees included."""
        fill = self._start_fill
        return fill.amount * fill.price + (fill.fee if fill.fee_currency == "USDT" else 0)

    def open_by_rung(self) -> dict[int, list[DesiredOrder]]:
        result: dict[int, list[DesiredOrder]] = {}
        for order in self.open.values():
            result.setdefault(rung_of(order.tag), []).append(order)
        return result


# --- the table: real candles, both spacings, fees in quote and in base ---------------------------------------

CASES = [
    # (id, candles, market, params, budget)
    ("kraken-1m-12h", kraken_1m, MARKET, {"low": "104800", "high": "106400", "levels": "9"}, "700"),
    ("kraken-1m-12h-geo", kraken_1m, MARKET, {"low": "104800", "high": "106400", "levels": "9", "spacing": "geo"},
     "700"),
    ("bittrex-1d-4months", bittrex_1d, BINANCE_MARKET, {"low": "10000", "high": "12000", "levels": "10"}, "1000"),
    ("binance-btc-1h-23days-geo", lambda: binance_1h("BTC"), BINANCE_MARKET,
     {"low": "27000", "high": "31000", "levels": "21", "spacing": "geo"}, "2000"),
    ("binance-eth-1h-23days", lambda: binance_1h("ETH"), ETH_MARKET,
     {"low": "1800", "high": "2100", "levels": "13"}, "1500"),
]
FEES = [("no-fee", "0", False), ("fee-in-quote", "0.0026", False), ("fee-in-base", "0.001", True)]


def _replay(case, fee) -> Replay:
    _, candles, market, raw, budget = case
    _, rate, in_base = fee
    return Replay(total=Decimal(budget), params=GRID.parse_params(raw), fee_rate=Decimal(rate), fee_in_base=in_base,
                  market=market).run(candles())


@cache
def replayed(case_id: str, fee_id: str) -> Replay:
    case = next(c for c in CASES if c[0] == case_id)
    return _replay(case, next(f for f in FEES if f[0] == fee_id))


TABLE = pytest.mark.parametrize(("case_id", "fee_id"), [(c[0], f[0]) for c in CASES for f in FEES])


@TABLE
def test_on_real_candles_every_level_rearms_after_every_fill(case_id, fee_id):
    """After each fill at rung i the next order of rung i is the other side (a buy's coins sold one price up, a
    sell bought back one price down), and at the end every rung has exactly one order resting."""
    replay = replayed(case_id, fee_id)
    prices = prices_of(replay.params)
    limits = [o for o in replay.placed if o.type == "limit"]
    filled = {f.tag for f in replay.fills}
    for rung in range(len(prices) - 1):
        orders = [o for o in limits if rung_of(o.tag) == rung]
        for order, following in itertools.pairwise(orders):
            assert order.tag in filled, f"rung {rung}: {order.tag} was followed before it filled"
            if order.side == "buy":
                assert (following.side, following.price) == ("sell", prices[rung + 1])
            else:
                assert (following.side, following.price) == ("buy", prices[rung])
    by_rung = replay.open_by_rung()
    assert sorted(by_rung) == list(range(len(prices) - 1))
    assert all(len(orders) == 1 for orders in by_rung.values())
    assert len(replay.trips) >= 5  # the grid really traded
    assert replay.refused == []  # nothing asked for that the gate must refuse, even with fees in BTC


@TABLE
def test_on_real_candles_the_start_purchase_stays_within_the_budget(case_id, fee_id):
    """The grid starts with buys below the first in-range price and sells above it, their base bought by one
    market buy; that buy's worst case and the buys' reservations fit the budget, and so does what it really cost."""
    replay = replayed(case_id, fee_id)
    prices = prices_of(replay.params)
    starts = [o for o in replay.placed if o.type == "market"]
    assert [o.tag for o in starts] == ["grid:start:0"]
    first_price = replay._start_fill.price
    start, *buys = replay.batches[0]  # the first decision: the start purchase and the buys …
    sells = replay.batches[1]  # … then, once it has filled, the sells of what it bought
    assert start == starts[0] and buys and sells
    assert {o.side for o in buys} == {"buy"} and {o.side for o in sells} == {"sell"}
    assert len(buys) + len(sells) == len(prices) - 1
    assert all(o.price < first_price for o in buys) and all(o.price > first_price for o in sells)
    # The start purchase bought what the sells above the price sell (less a fee taken in the coin: dust).
    bought = starts[0].amount - (replay._start_fill.fee if replay.fee_in_base else 0)
    assert sum(o.amount for o in sells) <= bought
    assert bought - sum(o.amount for o in sells) < (replay.market.amount_step or Decimal("1e-8")) * len(sells)
    assert replay.most_committed <= replay.total
    assert replay.start_cost() + sum(o.amount * o.price * (1 + replay.fee_rate) for o in buys) <= replay.total


@TABLE
def test_on_real_candles_each_round_trip_profit_is_exact_net_of_fees(case_id, fee_id):
    """Every round trip's profit is its sell's proceeds less fees, less what the coins it sold cost with fees —
    computed here from the fills — to the last digit; the sells of the start purchase's coins are charged exactly
    that purchase's cost between them, and the grid's profit is the sum of its round trips."""
    replay = replayed(case_id, fee_id)
    assert replay.trips
    for trip, expected in replay.trips:
        assert trip.profit == expected
        assert trip.percent == trip.profit / trip.cost * 100
    assert replay.state.profit == sum(trip.profit for trip, _ in replay.trips)
    assert replay.state.round_trips == len(replay.trips)
    assert replay._start_share <= replay.start_cost()
    if not any(lv.from_start for lv in replay.state.levels):  # every coin bought at start has been sold
        assert replay._start_share == replay.start_cost()
    if fee_id == "no-fee":
        assert all(trip.profit > 0 for trip, _ in replay.trips if not trip.from_start)


@pytest.mark.parametrize("fee_rate", ["0", "0.001", "0.0026"])
def test_the_profit_per_grid_in_the_summary_is_what_a_round_trip_makes(fee_rate):
    """The allocation summary's profit per grid (smallest and largest) brackets the round trips the grid then
    really makes with fees in quote, and equals them at the rungs where they occur."""
    replay = replayed("kraken-1m-12h", "fee-in-quote") if fee_rate == "0.0026" else _replay(
        CASES[0], ("custom", fee_rate, False))
    plan = plan_grid(LEVELS, kraken_1m()[0].close, Budget(Decimal(700), fee_rate=Decimal(fee_rate)).spendable,
                     MARKET)
    low, high, low_pct, high_pct = plan.profit_per_grid(Decimal(fee_rate))
    trips = [trip for trip, _ in replay.trips if not trip.from_start]
    assert trips
    tiny = Decimal("1e-20")
    assert all(low_pct - tiny <= trip.percent <= high_pct + tiny for trip in trips)
    # A buy of the whole quote per level (not one the budget left smaller after losing trips) makes exactly it.
    # (Amounts are on a 1e-12 step, so a buy's cost is a hair under the quote per level: within a millionth.)
    near = Decimal("1e-6")
    full = [t for t in trips if abs(t.cost - plan.per_level * (1 + Decimal(fee_rate))) < near]
    assert full and all(low - near <= trip.profit <= high + near for trip in full)
    # 200 USDT steps at ~105,000 are 0.19 %: with 0.1 % or more a side a round trip loses, as the summary says.
    assert (high > 0) == (fee_rate == "0")


# --- one decision at a time --------------------------------------------------------------------------------


def test_at_start_it_buys_below_the_price_and_sells_above_it_with_the_base_bought_by_one_market_buy():
    candle = kraken_1m()[0]  # close 106038.2: levels 104800 … 106000 are below, 106200 above
    decision = GRID.decide(snapshot(candle), GRID.initial_state(PARAMS, candle.ts), Budget(Decimal(700)), PARAMS)
    start, *buys = decision.orders
    assert (start.side, start.type, start.tag) == ("buy", "market", "grid:start:0")
    assert [(o.side, o.price, o.tag) for o in buys] == [("buy", LEVELS[i], f"grid:buy:{i}:0") for i in range(7)]
    per_level = decision.state.quote_per_level
    # 7 buys and 106200's coins (bought at 106038.2, reserved 2 % above): 700 split so all of it fits.
    assert per_level == floor_to(Decimal(700) / (7 + candle.close / LEVELS[7] * (1 + START_SLIPPAGE)),
                                 Decimal("1e-8"))
    assert all(o.amount == floor_to(per_level / o.price, Decimal("1e-12")) for o in buys)
    assert start.amount == floor_to(per_level / LEVELS[7], Decimal("1e-12"))
    assert 7 * per_level + start.amount * candle.close * (1 + START_SLIPPAGE) <= Decimal(700)
    # /edit splits a new budget the same way: the same budget gives the same size, twice the budget twice it.
    assert per_level_for(decision.state, Decimal(700)) == per_level
    assert per_level_for(decision.state, Decimal(1400)) in (2 * per_level, 2 * per_level + Decimal("1e-8"))
    assert "7 buys below, 1 sell above" in decision.status
    # The start purchase fills: its coins are sold one level up, at 106400.
    fill = Fill(start.tag, SYMBOL, "buy", start.amount, candle.close, fee=Decimal("0.25"), fee_currency="USDT")
    state = GRID.on_fill(decision.state, fill, PARAMS).state
    [sell] = GRID.decide(snapshot(candle), state, Budget(Decimal(700), Decimal(700)), PARAMS).orders
    assert (sell.side, sell.price, sell.amount, sell.tag) == ("sell", LEVELS[8], start.amount, "grid:sell:8:0")
    assert state.levels[7].buy_cost == start.amount * candle.close + Decimal("0.25")


def test_the_start_slippage_is_the_risk_gates():
    assert START_SLIPPAGE == MARKET_SLIPPAGE


def test_geometric_levels_are_equal_ratios_and_arithmetic_ones_equal_steps():
    geo = level_prices(Decimal(100), Decimal(400), 3, "geo")
    assert geo == (Decimal(100), Decimal(200), Decimal(400))
    geo = level_prices(Decimal(27000), Decimal(31000), 21, "geo")
    ratios = [b / a for a, b in itertools.pairwise(geo)]
    assert geo[0] == 27000 and geo[-1] == 31000
    assert max(ratios) - min(ratios) < Decimal("1e-20")
    arith = level_prices(Decimal(100), Decimal(400), 4)
    assert arith == (Decimal(100), Decimal(200), Decimal(300), Decimal(400))
    params = GRID.parse_params({"low": "100", "high": "400", "levels": "3", "spacing": "geo"})
    assert prices_of(params) == (Decimal(100), Decimal(200), Decimal(400))


def test_at_the_top_of_the_range_every_level_buys_and_nothing_is_bought_at_start():
    candle = kraken_1m()[0]
    decision = GRID.decide(snapshot(candle, price=Decimal("106400")), GRID.initial_state(PARAMS, candle.ts),
                           Budget(Decimal(800)), PARAMS)
    assert [o.type for o in decision.orders] == ["limit"] * 8
    assert max(o.price for o in decision.orders) == LEVELS[-2]


def test_at_the_bottom_of_the_range_every_level_sells_the_base_bought_at_start():
    candle = kraken_1m()[0]
    decision = GRID.decide(snapshot(candle, price=Decimal("104800")), GRID.initial_state(PARAMS, candle.ts),
                           Budget(Decimal(800)), PARAMS)
    [start] = decision.orders
    assert start.type == "market" and start.amount * Decimal("104800") * (1 + START_SLIPPAGE) <= 800
    fill = Fill(start.tag, SYMBOL, "buy", start.amount, Decimal("104800"))
    state = GRID.on_fill(decision.state, fill, PARAMS).state
    sells = GRID.decide(snapshot(candle, price=Decimal("104800")), state, Budget(Decimal(800), Decimal(800)),
                        PARAMS).orders
    assert [o.price for o in sells] == list(LEVELS[1:])
    assert sum(o.amount for o in sells) == start.amount


def test_a_start_purchase_that_fills_in_parts_shares_out_what_it_bought_and_what_it_cost():
    candle = kraken_1m()[0]
    decision = GRID.decide(snapshot(candle, price=Decimal("105500")), GRID.initial_state(PARAMS, candle.ts),
                           Budget(Decimal(800)), PARAMS)
    start = decision.orders[0]
    first = Fill(start.tag, SYMBOL, "buy", start.amount / 2, Decimal("105500"), closed=False, fee=Decimal("0.1"),
                 fee_currency="USDT")
    state = GRID.on_fill(decision.state, first, PARAMS).state
    assert GRID.on_fill(state, first, PARAMS).state.start_bought == start.amount  # each event counts
    rest = Fill(start.tag, SYMBOL, "buy", start.amount / 4, Decimal("105600"), closed=True, fee=Decimal("0.05"),
                fee_currency="USDT")
    state = GRID.on_fill(state, rest, PARAMS).state
    sold = [lv for lv in state.levels if lv.from_start]
    assert [lv.index for lv in sold] == [4, 5, 6, 7]
    assert sum(lv.bought for lv in sold) == start.amount * 3 / 4
    assert sum(lv.buy_cost for lv in sold) == first.cost + rest.cost + Decimal("0.15")
    assert state.start_tag is None and all(lv.phase == "sell" for lv in sold)


def test_a_start_purchase_cancelled_unfilled_is_asked_again_and_one_the_gate_refuses_turns_into_buys():
    candle = kraken_1m()[0]
    decision = GRID.decide(snapshot(candle), GRID.initial_state(PARAMS, candle.ts), Budget(Decimal(700)), PARAMS)
    start = decision.orders[0]
    nothing = Fill(start.tag, SYMBOL, "buy", Decimal(0), Decimal(0), closed=True)
    state = GRID.on_fill(decision.state, nothing, PARAMS).state
    again = GRID.decide(snapshot(candle), state, Budget(Decimal(700)), PARAMS).orders
    assert [(o.tag, o.amount) for o in again] == [("grid:start:1", start.amount)]
    refused = replace(nothing, refused="budget")
    state = GRID.on_fill(decision.state, refused, PARAMS).state
    assert state.levels[7].phase == "buy" and state.levels[7].bought == 0


def test_a_filled_buy_arms_a_sell_one_level_up_whose_fill_rearms_the_buy_with_profit():
    candle = kraken_1m()[0]
    budget = Budget(Decimal(700))
    ladder = GRID.decide(snapshot(candle), GRID.initial_state(PARAMS, candle.ts), budget, PARAMS)
    buy = next(o for o in ladder.orders if o.tag == "grid:buy:3:0")  # at 105400
    state = GRID.on_fill(ladder.state, Fill(buy.tag, SYMBOL, "buy", buy.amount, buy.price), PARAMS).state
    armed = GRID.decide(snapshot(candle, Decimal(105450)), state, Budget(Decimal(700), Decimal(700)), PARAMS)
    [sell] = [o for o in armed.orders if o.side == "sell"]
    assert (sell.type, sell.tag, sell.price, sell.amount) == ("limit", "grid:sell:4:1", LEVELS[4], buy.amount)

    update = GRID.on_fill(armed.state, Fill(sell.tag, SYMBOL, "sell", sell.amount, sell.price), PARAMS)
    assert update.profit == update.round_trip.profit == buy.amount * (LEVELS[4] - LEVELS[3])
    assert (update.round_trip.buy_price, update.round_trip.sell_price) == (LEVELS[3], LEVELS[4])
    assert update.note == "round trip 1 done at level 3"
    rearmed = GRID.decide(snapshot(candle, Decimal(105650)), update.state, Budget(Decimal(700), Decimal(600)), PARAMS)
    [again] = [o for o in rearmed.orders if o.tag.startswith("grid:buy:3")]
    assert (again.side, again.tag, again.price, again.amount) == ("buy", "grid:buy:3:2", LEVELS[3], buy.amount)
    assert rearmed.state.round_trips == 1 and rearmed.state.profit == update.profit


@pytest.mark.parametrize(
    ("buy_fee", "buy_currency", "sell_fee", "expected"),
    [
        # 0.001 BTC bought at 100,000 and sold at 102,500, a 0.1 % fee on each leg.
        ("0.1", "USDT", "0.1025", Decimal("102.5") - Decimal("0.1025") - Decimal(100) - Decimal("0.1")),
        # Binance: the buy's fee in BTC: 0.000999 BTC is left to sell.
        ("0.000001", "BTC", "0.1023975", Decimal("0.000999") * 102500 - Decimal("0.1023975") - Decimal(100)),
        # A fee in BNB counts at its value in quote (fee_quote).
        ("0.0002", "BNB", "0.1025", Decimal("102.5") - Decimal("0.1025") - Decimal(100) - Decimal("0.12")),
    ],
    ids=["quote", "base", "third-currency"],
)
def test_a_round_trip_profit_is_exact_net_of_both_fees(buy_fee, buy_currency, sell_fee, expected):
    params = GRID.parse_params({"low": "100000", "high": "105000", "levels": "3"})
    candle = kraken_1m()[0]
    ladder = GRID.decide(snapshot(candle, Decimal(101000)), GRID.initial_state(params, candle.ts),
                         Budget(Decimal(1000)), params)
    buy = next(o for o in ladder.orders if o.tag == "grid:buy:0:0")
    fill = Fill(buy.tag, SYMBOL, "buy", Decimal("0.001"), Decimal(100000), fee=Decimal(buy_fee),
                fee_currency=buy_currency, fee_quote=Decimal("0.12") if buy_currency == "BNB" else Decimal(0))
    state = GRID.on_fill(ladder.state, fill, params).state
    [sell] = [o for o in GRID.decide(snapshot(candle, Decimal(101000)), state, Budget(Decimal(1000), Decimal(1000)),
                                     params).orders if o.side == "sell"]
    assert sell.amount == Decimal("0.001") - (Decimal(buy_fee) if buy_currency == "BTC" else 0)
    armed = GRID.decide(snapshot(candle, Decimal(101000)), state, Budget(Decimal(1000), Decimal(1000)), params).state
    update = GRID.on_fill(armed, Fill(sell.tag, SYMBOL, "sell", sell.amount, Decimal(102500), fee=Decimal(sell_fee),
                                      fee_currency="USDT"), params)
    assert update.round_trip.profit == expected
    assert update.round_trip.percent == expected / update.round_trip.cost * 100


def test_partial_fills_sell_what_was_bought_once_the_buy_closes():
    candle = kraken_1m()[0]
    ladder = GRID.decide(snapshot(candle), GRID.initial_state(PARAMS, candle.ts), Budget(Decimal(700)), PARAMS)
    buy = next(o for o in ladder.orders if o.tag == "grid:buy:2:0")
    half = buy.amount / 2
    state = GRID.on_fill(ladder.state, Fill(buy.tag, SYMBOL, "buy", half, buy.price, closed=False), PARAMS).state
    assert GRID.decide(snapshot(candle), state, Budget(Decimal(700), Decimal(700)), PARAMS).orders == ()
    state = GRID.on_fill(state, Fill(buy.tag, SYMBOL, "buy", Decimal(0), buy.price, closed=True), PARAMS).state
    [sell] = GRID.decide(snapshot(candle), state, Budget(Decimal(700), Decimal(700)), PARAMS).orders
    assert (sell.side, sell.amount, sell.price) == ("sell", half, LEVELS[3])


def test_a_repeated_fill_report_is_folded_in_once():
    candle = kraken_1m()[0]
    ladder = GRID.decide(snapshot(candle), GRID.initial_state(PARAMS, candle.ts), Budget(Decimal(700)), PARAMS)
    for order in ladder.orders[:2]:  # the start purchase and a buy
        fill = Fill(order.tag, SYMBOL, "buy", order.amount, order.price or candle.close)
        once = GRID.on_fill(ladder.state, fill, PARAMS).state
        assert GRID.on_fill(once, fill, PARAMS).state == once


@pytest.mark.parametrize("price", [Decimal("104700"), Decimal("106536")])
def test_before_it_starts_outside_the_range_it_waits_and_says_so(price):
    candle = kraken_1m()[0]
    decision = GRID.decide(snapshot(candle, price), GRID.initial_state(PARAMS, candle.ts), Budget(Decimal(700)),
                           PARAMS)
    assert decision.orders == ()
    assert "outside the grid range 104,800.00 USDT–106,400.00 USDT" in decision.status
    assert not decision.state.started


def test_once_running_the_status_says_what_happens_outside_the_range():
    """Above the range everything is sold and the buys wait below; below it every buy has filled and the coins
    are held with their sells above — each said in the status line /status shows."""
    candles = kraken_1m()
    replay = Replay(total=Decimal(700)).run(candles[:5])
    above = replace(candles[5], low=Decimal(106300), high=Decimal(106600), close=Decimal(106550))
    replay.run((above, above))
    assert replay.statuses[-1].startswith("above the range (high 106,400.00 USDT): everything is sold; 8 buys wait "
                                          "below for the price to come back")
    below = replace(candles[5], low=Decimal(104500), high=Decimal(104700), close=Decimal(104600))
    replay.run((below, below))
    held = sum(lv.bought - lv.sold for lv in replay.state.levels)
    assert replay.statuses[-1].startswith(
        f"below the range (low 104,800.00 USDT): every buy has filled; holding {amount(held, 'BTC', held=True)}, "
        "its sells wait above for the price to come back")
    assert len(replay.statuses[-1]) <= 200  # one /status line


def test_a_budget_too_small_per_level_stops_with_an_explanation():
    candle = kraken_1m()[0]
    decision = GRID.decide(snapshot(candle), GRID.initial_state(PARAMS, candle.ts), Budget(Decimal(20)), PARAMS)
    assert decision.orders == () and decision.finished
    assert "below the market minimum" in decision.status


def test_a_budget_per_level_that_the_step_rounds_below_the_minimum_stops_instead_of_being_refused_each_run():
    """10 USDT per level at 104999.9: 0.00009 BTC on Binance's 0.00001 step, 9.45 USDT, below its 10 USDT
    minimum — the gate would refuse that buy every minute. The grid says so at once, with what a level needs."""
    params = GRID.parse_params({"low": "104999.9", "high": "107000", "levels": "2"})
    candle = kraken_1m()[0]
    decision = GRID.decide(snapshot(candle, market=BINANCE_MARKET), GRID.initial_state(params, candle.ts),
                           Budget(Decimal(10)), params)
    assert decision.orders == () and decision.finished
    assert "10.00 USDT per level is below the market minimum of 10.50 USDT" in decision.status


def test_state_survives_a_json_round_trip():
    replay = Replay(total=Decimal(700)).run(kraken_1m()[:300])
    assert GRID.load_state(json.loads(json.dumps(GRID.dump_state(replay.state)))) == replay.state


def test_a_grid_stored_before_the_start_purchase_existed_loads_and_keeps_its_ladder():
    old = {"started": True, "quote_per_level": "100", "round_trips": 2, "profit": "3.5", "finished": False,
           "dust": "0", "levels": [{"index": i, "phase": "buy" if i < 3 else "idle", "seq": 1, "open_tag": None,
                                    "bought": "0", "buy_cost": "0", "sold": "0", "proceeds": "0"}
                                   for i in range(5)]}
    state = GRID.load_state(old)
    assert state.shares == 0 and state.start_tag is None and not any(lv.from_start for lv in state.levels)
    assert per_level_for(state, Decimal(600)) == 200  # a new budget split over its 3 armed levels, as before
    candle = kraken_1m()[0]
    params = GRID.parse_params({"low": "104000", "high": "106400", "levels": "5"})
    orders = GRID.decide(snapshot(candle), state, Budget(Decimal(700)), params).orders
    assert [o.tag for o in orders] == ["grid:buy:0:1", "grid:buy:1:1", "grid:buy:2:1"]


@settings(max_examples=40, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=700),
    length=st.integers(min_value=1, max_value=300),
    total=st.decimals(min_value=60, max_value=5000, places=2),
    fee_rate=st.sampled_from(["0", "0.001", "0.0026"]),
    fee_in_base=st.booleans(),
    spacing=st.sampled_from(["arith", "geo"]),
)
def test_open_buys_plus_net_spent_never_exceed_the_budget(start, length, total, fee_rate, fee_in_base, spacing):
    """Over any window of real candles the start purchase, the ladder and its re-arms stay inside the budget
    (the replay asserts it after every decision, counting the start purchase at its worst case)."""
    params = GRID.parse_params({"low": "104800", "high": "106400", "levels": "9", "spacing": spacing})
    replay = Replay(total=total, fee_rate=Decimal(fee_rate), fee_in_base=fee_in_base, params=params)
    replay.run(kraken_1m()[start: start + length])
    assert replay.most_committed <= total
    assert [why for _, why in replay.refused if why == "budget"] == []


@pytest.mark.parametrize(
    ("candles", "raw_params", "budget"),
    [
        (kraken_1m, {"low": "104800", "high": "106400", "levels": "9"}, "700"),
        (bittrex_1d, {"low": "10000", "high": "12000", "levels": "10"}, "1000"),
    ],
    ids=["kraken-1m-12h", "bittrex-1d-4months"],
)
def test_on_real_candles_a_grid_paying_fees_in_base_makes_the_round_trips_of_one_paying_in_quote(
    candles, raw_params, budget
):
    """Binance takes a buy's fee in BTC and sells only on its 0.00001 step: the unsellable rest becomes dust,
    never a sell refused on every run, so the grid completes as many round trips as with fees in quote."""
    params = GRID.parse_params(raw_params)
    runs = {
        fee_in_base: Replay(total=Decimal(budget), fee_rate=Decimal("0.001"), fee_in_base=fee_in_base,
                            market=BINANCE_MARKET, params=params).run(candles())
        for fee_in_base in (False, True)
    }
    assert runs[False].state.round_trips == runs[True].state.round_trips >= 20
    assert runs[True].refused == []
    # The dust is what the fees in BTC left unsold: less than one step per fill.
    assert 0 < runs[True].state.dust < len(runs[True].fills) * BINANCE_MARKET.amount_step


def test_a_sell_the_gate_refuses_is_carried_as_dust_and_the_level_rearms_instead_of_asking_again():
    candle = kraken_1m()[0]
    ladder = GRID.decide(snapshot(candle), GRID.initial_state(PARAMS, candle.ts), Budget(Decimal(700)), PARAMS)
    buy = next(o for o in ladder.orders if o.tag == "grid:buy:3:0")
    state = GRID.on_fill(ladder.state, Fill(buy.tag, SYMBOL, "buy", buy.amount, buy.price), PARAMS).state
    armed = GRID.decide(snapshot(candle), state, Budget(Decimal(700), Decimal(700)), PARAMS)
    [sell] = armed.orders
    refused = GRID.on_fill(armed.state, Fill(sell.tag, SYMBOL, "sell", Decimal(0), sell.price, refused="minimum"),
                           PARAMS).state
    assert refused.dust == sell.amount and GRID.dust(refused, SYMBOL) == {"BTC": sell.amount}
    level = refused.levels[3]
    assert (level.phase, level.open_tag, level.bought) == ("buy", None, Decimal(0))
    again = GRID.decide(snapshot(candle, Decimal(105450)), refused, Budget(Decimal(700)), PARAMS)
    assert [(o.side, o.price) for o in again.orders] == [("buy", LEVELS[3])]


def test_a_ladder_cancelled_unfilled_by_a_pause_is_placed_again_whole_on_resume():
    candle = kraken_1m()[0]
    budget = Budget(Decimal(700))
    ladder = GRID.decide(snapshot(candle), GRID.initial_state(PARAMS, candle.ts), budget, PARAMS)
    start, *buys = ladder.orders
    state = GRID.on_fill(ladder.state, Fill(start.tag, SYMBOL, "buy", start.amount, candle.close), PARAMS).state
    spent = start.amount * candle.close
    for order in buys:  # /pause cancels every resting buy; the engine reports each closed unfilled
        state = GRID.on_fill(state, Fill(order.tag, SYMBOL, "buy", Decimal(0), order.price, closed=True), PARAMS).state
    again = GRID.decide(snapshot(candle), state, Budget(Decimal(700), spent), PARAMS)
    rebuys = [o for o in again.orders if o.side == "buy"]
    assert [(o.price, o.amount) for o in rebuys] == [(o.price, o.amount) for o in buys]
    assert {o.tag for o in rebuys}.isdisjoint(o.tag for o in buys)  # new client order ids
    assert [o.side for o in again.orders if o.type == "market"] == []  # the start purchase is not made twice


def test_a_sell_cancelled_after_a_partial_fill_places_the_rest_again():
    candle = kraken_1m()[0]
    ladder = GRID.decide(snapshot(candle), GRID.initial_state(PARAMS, candle.ts), Budget(Decimal(700)), PARAMS)
    buy = next(o for o in ladder.orders if o.tag == "grid:buy:3:0")
    state = GRID.on_fill(ladder.state, Fill(buy.tag, SYMBOL, "buy", buy.amount, buy.price), PARAMS).state
    armed = GRID.decide(snapshot(candle), state, Budget(Decimal(700), Decimal(700)), PARAMS)
    [sell] = armed.orders
    third = sell.amount / 3
    state = GRID.on_fill(armed.state, Fill(sell.tag, SYMBOL, "sell", third, sell.price, closed=True), PARAMS).state
    [rest] = GRID.decide(snapshot(candle), state, Budget(Decimal(700), Decimal(700)), PARAMS).orders
    assert (rest.side, rest.price, rest.amount) == ("sell", sell.price, sell.amount - third)

"""Grid on real Kraken XBT/USDT 1-minute candles: ladder, re-arming one level up and back, profit, waiting."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.strategies.base import Budget, Candle, DesiredOrder, Fill, MarketInfo, MarketSnapshot, Params, floor_to
from bot.strategies.grid import GRID, level_prices
from tests.test_strategy_candles import ONE_MINUTE, bittrex_1d, kraken_1m

SYMBOL = "BTC/USDT"
# 104800, 105000, … 106400: the 12 hours of candles move between 104711 and 106536.
PARAMS = GRID.parse_params({"low": "104800", "high": "106400", "levels": "9"})
LEVELS = level_prices(PARAMS["low"], PARAMS["high"], PARAMS["levels"])
MARKET = MarketInfo(SYMBOL, "BTC", "USDT", amount_min=Decimal("0.00001"), cost_min=Decimal(5))


def snapshot(candle: Candle, price: Decimal | None = None, market: MarketInfo = MARKET) -> MarketSnapshot:
    return MarketSnapshot(now=candle.ts + ONE_MINUTE, symbol=SYMBOL, price=candle.close if price is None else price,
                          markets={SYMBOL: market})


@dataclass
class Replay:
    """A minimal engine: limit orders fill at their price when a later candle trades through it.

    With a `market` that has an amount step, orders pass the engine's gate first: amounts rounded down to the
    step, an order below the minimums refused and reported to the strategy as refused (as the runner does).
    """

    total: Decimal
    fee_rate: Decimal = Decimal(0)
    fee_in_base: bool = False
    market: MarketInfo = MARKET
    params: Params = field(default_factory=lambda: PARAMS)
    state: object = None
    refused: int = 0
    open: dict[str, DesiredOrder] = field(default_factory=dict)
    spent: Decimal = Decimal(0)  # net: buys + quote fees − sell proceeds
    placed: list[DesiredOrder] = field(default_factory=list)
    profits: list[Decimal] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)

    @property
    def reserved(self) -> Decimal:
        worst = (o.amount * o.price * (1 + self.fee_rate) for o in self.open.values() if o.side == "buy")
        return sum(worst, Decimal(0))

    def run(self, candles: tuple[Candle, ...]) -> Replay:
        if self.state is None:
            self.state = GRID.initial_state(self.params, candles[0].ts)
        for candle in candles:
            self._fill_crossed(candle)
            budget = Budget(self.total, self.spent, self.reserved, fee_rate=self.fee_rate)
            decision = GRID.decide(snapshot(candle, market=self.market), self.state, budget, self.params)
            self.state = decision.state
            self.statuses.append(decision.status)
            for order in decision.orders:
                assert order.tag not in {o.tag for o in self.placed}, "a tag was reused"
                step = self.market.amount_step
                if step is not None:
                    amount = floor_to(order.amount, step)
                    if self.market.can_trade(amount, order.price):
                        order = replace(order, amount=amount)
                    else:
                        self.refused += 1
                        self.state = GRID.on_fill(self.state, Fill(
                            order.tag, SYMBOL, order.side, Decimal(0), order.price, closed=True, refused="minimum",
                        ), self.params).state
                        continue
                self.placed.append(order)
                self.open[order.tag] = order
            assert self.spent + self.reserved <= self.total
        return self

    def _fill_crossed(self, candle: Candle) -> None:
        for tag, order in list(self.open.items()):
            crossed = candle.low <= order.price if order.side == "buy" else candle.high >= order.price
            if not crossed:
                continue
            value = order.amount * order.price
            if order.side == "buy" and self.fee_in_base:
                fee, currency = order.amount * self.fee_rate, "BTC"
            else:
                fee, currency = value * self.fee_rate, "USDT"
            self.spent += (value if order.side == "buy" else -value) + (fee if currency == "USDT" else 0)
            fill = Fill(tag, SYMBOL, order.side, order.amount, order.price, closed=True, fee=fee,
                        fee_currency=currency)
            self.fills.append(fill)
            del self.open[tag]
            update = GRID.on_fill(self.state, fill, self.params)
            self.state = update.state
            if update.profit is not None:
                self.profits.append(update.profit)


def test_ladder_buys_below_the_price_within_range_and_budget():
    candle = kraken_1m()[0]  # close 106038.2
    state = GRID.initial_state(PARAMS, candle.ts)
    decision = GRID.decide(snapshot(candle), state, Budget(Decimal(700)), PARAMS)
    prices = [o.price for o in decision.orders]
    assert prices == list(LEVELS[:7])  # 104800 … 106000: every level below 106038.2
    assert all(PARAMS["low"] <= p <= PARAMS["high"] and p < candle.close for p in prices)
    assert all((o.side, o.type) == ("buy", "limit") for o in decision.orders)
    assert [o.tag for o in decision.orders] == [f"grid:buy:{i}:0" for i in range(7)]
    values = [o.amount * o.price for o in decision.orders]
    assert sum(values) <= Decimal(700)
    assert all(Decimal("99.99") < v <= 100 for v in values)  # the budget split evenly


def test_the_top_level_never_gets_a_buy():
    candle = kraken_1m()[0]
    decision = GRID.decide(snapshot(candle, price=Decimal("106399")), GRID.initial_state(PARAMS, candle.ts),
                           Budget(Decimal(800)), PARAMS)
    assert max(o.price for o in decision.orders) == LEVELS[-2]


def test_a_filled_buy_arms_a_sell_one_level_up_whose_fill_rearms_the_buy_with_profit():
    candle = kraken_1m()[0]
    budget = Budget(Decimal(700))
    ladder = GRID.decide(snapshot(candle), GRID.initial_state(PARAMS, candle.ts), budget, PARAMS)
    buy = next(o for o in ladder.orders if o.tag == "grid:buy:3:0")  # at 105400
    state = GRID.on_fill(ladder.state, Fill(buy.tag, SYMBOL, "buy", buy.amount, buy.price), PARAMS).state
    spent = buy.amount * buy.price
    reserved = sum(o.amount * o.price for o in ladder.orders) - spent

    armed = GRID.decide(snapshot(candle, Decimal(105450)), state, Budget(Decimal(700), spent, reserved), PARAMS)
    [sell] = armed.orders
    assert (sell.side, sell.type, sell.tag) == ("sell", "limit", "grid:sell:4:1")
    assert sell.price == LEVELS[4] == Decimal(105600)
    assert sell.amount == buy.amount

    update = GRID.on_fill(armed.state, Fill(sell.tag, SYMBOL, "sell", sell.amount, sell.price), PARAMS)
    assert update.profit == buy.amount * (LEVELS[4] - LEVELS[3])
    assert update.note == "round trip 1 done at level 3"  # its P&L is the one /status computes from the fills
    spent -= sell.amount * sell.price
    rearmed = GRID.decide(snapshot(candle, Decimal(105650)), update.state,
                          Budget(Decimal(700), spent, reserved), PARAMS)
    [again] = rearmed.orders
    assert (again.side, again.tag, again.price, again.amount) == ("buy", "grid:buy:3:2", LEVELS[3], buy.amount)
    assert rearmed.state.round_trips == 1 and rearmed.state.profit == update.profit


def test_a_buy_fee_paid_in_base_is_not_sold_and_is_counted_in_the_profit():
    candle = kraken_1m()[0]
    ladder = GRID.decide(snapshot(candle), GRID.initial_state(PARAMS, candle.ts), Budget(Decimal(700)), PARAMS)
    buy = ladder.orders[3]
    fee = buy.amount / 1000
    state = GRID.on_fill(ladder.state, Fill(buy.tag, SYMBOL, "buy", buy.amount, buy.price, fee=fee,
                                            fee_currency="BTC"), PARAMS).state
    [sell] = GRID.decide(snapshot(candle), state, Budget(Decimal(700), Decimal(700)), PARAMS).orders
    assert sell.amount == buy.amount - fee
    armed = GRID.decide(snapshot(candle), state, Budget(Decimal(700), Decimal(700)), PARAMS).state
    update = GRID.on_fill(armed, Fill(sell.tag, SYMBOL, "sell", sell.amount, sell.price, fee=Decimal("0.1"),
                                      fee_currency="USDT"), PARAMS)
    assert update.profit == sell.amount * sell.price - Decimal("0.1") - buy.amount * buy.price


def test_partial_fills_sell_what_was_bought_once_the_buy_closes():
    candle = kraken_1m()[0]
    ladder = GRID.decide(snapshot(candle), GRID.initial_state(PARAMS, candle.ts), Budget(Decimal(700)), PARAMS)
    buy = ladder.orders[2]
    half = buy.amount / 2
    state = GRID.on_fill(ladder.state, Fill(buy.tag, SYMBOL, "buy", half, buy.price, closed=False), PARAMS).state
    assert GRID.decide(snapshot(candle), state, Budget(Decimal(700), Decimal(700)), PARAMS).orders == ()
    state = GRID.on_fill(state, Fill(buy.tag, SYMBOL, "buy", Decimal(0), buy.price, closed=True), PARAMS).state
    [sell] = GRID.decide(snapshot(candle), state, Budget(Decimal(700), Decimal(700)), PARAMS).orders
    assert (sell.side, sell.amount, sell.price) == ("sell", half, LEVELS[3])


def test_a_repeated_fill_report_is_folded_in_once():
    candle = kraken_1m()[0]
    ladder = GRID.decide(snapshot(candle), GRID.initial_state(PARAMS, candle.ts), Budget(Decimal(700)), PARAMS)
    buy = ladder.orders[0]
    fill = Fill(buy.tag, SYMBOL, "buy", buy.amount, buy.price)
    once = GRID.on_fill(ladder.state, fill, PARAMS).state
    assert GRID.on_fill(once, fill, PARAMS).state == once


@pytest.mark.parametrize("price", [Decimal("104700"), Decimal("106536")])
def test_outside_the_range_it_waits_and_says_so(price):
    candle = kraken_1m()[0]
    decision = GRID.decide(snapshot(candle, price), GRID.initial_state(PARAMS, candle.ts), Budget(Decimal(700)),
                           PARAMS)
    assert decision.orders == ()
    assert "outside the grid range 104,800.00 USDT–106,400.00 USDT" in decision.status
    assert not decision.state.started


def test_a_budget_too_small_per_level_stops_with_an_explanation():
    candle = kraken_1m()[0]
    decision = GRID.decide(snapshot(candle), GRID.initial_state(PARAMS, candle.ts), Budget(Decimal(20)), PARAMS)
    assert decision.orders == () and decision.finished
    assert "below the market minimum" in decision.status


def test_twelve_hours_of_real_candles_complete_round_trips_within_budget():
    replay = Replay(total=Decimal(700)).run(kraken_1m())
    assert len(replay.profits) >= 10
    assert all(p > 0 for p in replay.profits)
    assert replay.state.profit == sum(replay.profits)
    assert replay.state.round_trips == len(replay.profits)
    buys = [o for o in replay.placed if o.side == "buy"]
    assert all(o.price in LEVELS[:-1] for o in buys)
    assert all(o.price in LEVELS[1:] for o in replay.placed if o.side == "sell")
    # Each sell sits exactly one level above the buy whose amount it sells.
    for sell in (o for o in replay.placed if o.side == "sell"):
        level = int(sell.tag.split(":")[2])
        assert sell.price == LEVELS[level]


def test_the_grid_waits_while_the_price_is_above_the_range():
    candles = kraken_1m()
    above = [i for i, c in enumerate(candles) if c.close > PARAMS["high"]]
    replay = Replay(total=Decimal(700)).run(candles[above[0]: above[0] + 3])
    assert replay.placed == []
    assert all("outside the grid range" in s for s in replay.statuses)


def test_state_survives_a_json_round_trip():
    replay = Replay(total=Decimal(700)).run(kraken_1m()[:300])
    assert GRID.load_state(json.loads(json.dumps(GRID.dump_state(replay.state)))) == replay.state


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=700),
    length=st.integers(min_value=1, max_value=300),
    total=st.decimals(min_value=50, max_value=5000, places=2),
    fee_rate=st.sampled_from(["0", "0.001", "0.0026"]),
    fee_in_base=st.booleans(),
)
def test_open_buys_plus_net_spent_never_exceed_the_budget(start, length, total, fee_rate, fee_in_base):
    """Over any window of real candles the ladder and its re-arms stay inside the budget (checked each run)."""
    replay = Replay(total=total, fee_rate=Decimal(fee_rate), fee_in_base=fee_in_base)
    replay.run(kraken_1m()[start: start + length])
    assert replay.spent + replay.reserved <= total


#: Binance's BTC/USDT rules: a 0.00001 step and a 10 USDT minimum order.
BINANCE_MARKET = MarketInfo(SYMBOL, "BTC", "USDT", amount_min=Decimal("0.00001"), cost_min=Decimal(10),
                            amount_step=Decimal("0.00001"))


@pytest.mark.parametrize(
    ("candles", "raw_params", "budget", "round_trips"),
    [
        # 12 hours of Kraken XBT/USDT minutes, 9 levels 200 apart.
        (kraken_1m, {"low": "104800", "high": "106400", "levels": "9"}, "700", 20),
        # Four months of Bittrex BTC/USDT days (Nov 2017 – Feb 2018), 10 levels from 10000 to 12000.
        (bittrex_1d, {"low": "10000", "high": "12000", "levels": "10"}, "1000", 30),
    ],
    ids=["kraken-1m-12h", "bittrex-1d-4months"],
)
def test_on_real_candles_a_grid_paying_fees_in_base_makes_the_round_trips_of_one_paying_in_quote(
    candles, raw_params, budget, round_trips
):
    """Binance takes a buy's fee in BTC and sells only on its 0.00001 step: the unsellable rest becomes dust,
    never a sell refused on every run, so the grid completes as many round trips as with fees in quote."""
    params = GRID.parse_params(raw_params)
    runs = {
        fee_in_base: Replay(total=Decimal(budget), fee_rate=Decimal("0.001"), fee_in_base=fee_in_base,
                            market=BINANCE_MARKET, params=params).run(candles())
        for fee_in_base in (False, True)
    }
    assert runs[False].state.round_trips == runs[True].state.round_trips == round_trips
    assert runs[True].refused == 0
    # The dust is what the fees in BTC left unsold: less than one step per round trip.
    assert 0 < runs[True].state.dust < round_trips * BINANCE_MARKET.amount_step


def test_a_sell_the_gate_refuses_is_carried_as_dust_and_the_level_rearms_instead_of_asking_again():
    candle = kraken_1m()[0]
    ladder = GRID.decide(snapshot(candle), GRID.initial_state(PARAMS, candle.ts), Budget(Decimal(700)), PARAMS)
    buy = ladder.orders[3]
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


def test_a_budget_per_level_that_the_step_rounds_below_the_minimum_stops_instead_of_being_refused_each_run():
    """10 USDT per level at 104999.9: 0.00009 BTC on Binance's 0.00001 step, 9.45 USDT, below its 10 USDT
    minimum — the gate would refuse that buy every minute. The grid says so at once, with what a level needs."""
    params = GRID.parse_params({"low": "104999.9", "high": "107000", "levels": "2"})
    candle = kraken_1m()[0]
    decision = GRID.decide(snapshot(candle, market=BINANCE_MARKET), GRID.initial_state(params, candle.ts),
                           Budget(Decimal(10)), params)
    assert decision.orders == () and decision.finished
    assert "10.00 USDT per level is below the market minimum of 10.50 USDT" in decision.status


def test_a_ladder_cancelled_unfilled_by_a_pause_is_placed_again_whole_on_resume():
    candle = kraken_1m()[0]
    budget = Budget(Decimal(700))
    ladder = GRID.decide(snapshot(candle), GRID.initial_state(PARAMS, candle.ts), budget, PARAMS)
    state = ladder.state
    for order in ladder.orders:  # /pause cancels every resting buy; the engine reports each closed unfilled
        state = GRID.on_fill(state, Fill(order.tag, SYMBOL, "buy", Decimal(0), order.price, closed=True), PARAMS).state
    again = GRID.decide(snapshot(candle), state, budget, PARAMS)
    assert [(o.side, o.price, o.amount) for o in again.orders] == [(o.side, o.price, o.amount) for o in ladder.orders]
    assert {o.tag for o in again.orders}.isdisjoint(o.tag for o in ladder.orders)  # new client order ids


def test_a_sell_cancelled_after_a_partial_fill_places_the_rest_again():
    candle = kraken_1m()[0]
    ladder = GRID.decide(snapshot(candle), GRID.initial_state(PARAMS, candle.ts), Budget(Decimal(700)), PARAMS)
    buy = ladder.orders[3]
    state = GRID.on_fill(ladder.state, Fill(buy.tag, SYMBOL, "buy", buy.amount, buy.price), PARAMS).state
    armed = GRID.decide(snapshot(candle), state, Budget(Decimal(700), Decimal(700)), PARAMS)
    [sell] = armed.orders
    third = sell.amount / 3
    state = GRID.on_fill(armed.state, Fill(sell.tag, SYMBOL, "sell", third, sell.price, closed=True), PARAMS).state
    [rest] = GRID.decide(snapshot(candle), state, Budget(Decimal(700), Decimal(700)), PARAMS).orders
    assert (rest.side, rest.price, rest.amount) == ("sell", sell.price, sell.amount - third)

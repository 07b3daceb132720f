"""DCA on real Bittrex BTC/USDT daily candles: first buy at once, last buy shrunk, finished, catch-up once."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.strategies.base import REJECTED_BY_VENUE, Budget, Fill, MarketInfo, MarketSnapshot
from bot.strategies.dca import DCA
from tests.test_strategy_candles import bittrex_1d

SYMBOL = "BTC/USDT"
DAY = timedelta(days=1)


def snapshot_at(index: int, *, offset: timedelta = timedelta(0), cost_min: str | None = None) -> MarketSnapshot:
    """The market just after candle `index` closed (plus `offset`), priced at its close."""
    candle = bittrex_1d()[index]
    market = MarketInfo(SYMBOL, "BTC", "USDT", cost_min=None if cost_min is None else Decimal(cost_min))
    return MarketSnapshot(now=candle.ts + DAY + offset, symbol=SYMBOL, price=candle.close,
                          markets={SYMBOL: market})


def run_daily(budget_total: str, raw: dict[str, str], *, cost_min: str | None = None, days: int = 60):
    """Run DCA once a day over the candles, every buy filling in full at the close; return buys and state."""
    params = DCA.parse_params(raw)
    start = snapshot_at(0, cost_min=cost_min).now
    state = DCA.initial_state(params, start)
    spent = Decimal(0)
    buys: list[Decimal] = []
    decisions = []
    for day in range(days):
        snap = snapshot_at(day, cost_min=cost_min)
        decision = DCA.decide(snap, state, Budget(Decimal(budget_total), spent), params)
        decisions.append(decision)
        state = decision.state
        for order in decision.orders:
            buys.append(order.cost)
            spent += order.cost
            fill = Fill(order.tag, SYMBOL, "buy", order.cost / snap.price, snap.price)
            state = DCA.on_fill(state, fill, params).state
    return buys, state, decisions


def test_first_buy_is_placed_at_once_as_a_market_buy_by_cost():
    params = DCA.parse_params({"every": "1d", "amount": "10"})
    snap = snapshot_at(0)
    state = DCA.initial_state(params, snap.now)
    decision = DCA.decide(snap, state, Budget(Decimal(100)), params)
    [order] = decision.orders
    assert (order.symbol, order.side, order.type) == (SYMBOL, "buy", "market")
    assert order.cost == Decimal(10) and order.amount is None and order.price is None
    assert order.tag == "dca:slot:0"
    assert DCA.next_run(decision.state, params, snap.now) == snap.now + DAY


@pytest.mark.parametrize(
    ("budget", "raw", "cost_min", "expected"),
    [
        ("100", {"amount": "30"}, None, ["30", "30", "30", "10"]),
        ("100", {"amount": "25"}, None, ["25", "25", "25", "25"]),
        ("100", {}, None, ["10"] * 10),  # amount defaults to budget/10
        ("100", {"amount": "33"}, "5", ["33", "33", "33"]),  # 1 left < minimum 5: the third is the last
        ("100", {"amount": "40"}, "5", ["40", "40", "20"]),
        ("12.5", {"amount": "5"}, "1", ["5", "5", "2.5"]),
    ],
)
def test_buys_until_the_budget_is_used_the_last_shrunk_then_finishes(budget, raw, cost_min, expected):
    buys, state, decisions = run_daily(budget, raw, cost_min=cost_min)
    assert buys == [Decimal(x) for x in expected]
    assert sum(buys) <= Decimal(budget)
    assert state.finished
    last_buy = max(i for i, d in enumerate(decisions) if d.orders)
    assert decisions[last_buy].finished and "finished" in decisions[last_buy].status
    assert all(d.finished and not d.orders for d in decisions[last_buy + 1:])
    assert DCA.next_run(state, DCA.parse_params(raw), snapshot_at(30).now) is None


def test_budget_left_below_the_market_minimum_finishes_without_buying():
    params = DCA.parse_params({"amount": "10"})
    snap = snapshot_at(3, cost_min="5")
    state = DCA.initial_state(params, snap.now)
    decision = DCA.decide(snap, state, Budget(Decimal(100), spent=Decimal(97)), params)
    assert decision.orders == ()
    assert decision.finished and decision.state.finished
    assert "below the market minimum" in decision.status


def test_an_earlier_buy_still_open_keeps_the_slot_owed_instead_of_finishing():
    params = DCA.parse_params({"amount": "10"})
    snap = snapshot_at(3, cost_min="5")
    state = DCA.initial_state(params, snap.now)
    waiting = DCA.decide(snap, state, Budget(Decimal(100), spent=Decimal(90), reserved=Decimal(8)), params)
    assert waiting.orders == () and not waiting.finished
    settled = DCA.decide(snap, waiting.state, Budget(Decimal(100), spent=Decimal(90)), params)
    assert [o.cost for o in settled.orders] == [Decimal(10)]


def test_three_missed_slots_catch_up_with_exactly_one_buy_for_the_latest():
    params = DCA.parse_params({"every": "1d", "amount": "10"})
    first = snapshot_at(0)
    state = DCA.decide(first, DCA.initial_state(params, first.now), Budget(Decimal(100)), params).state
    late = snapshot_at(3, offset=timedelta(hours=5))  # slots 1, 2 and 3 passed unseen
    decision = DCA.decide(late, state, Budget(Decimal(100), spent=Decimal(10)), params)
    assert [o.tag for o in decision.orders] == ["dca:slot:3"]
    assert [o.cost for o in decision.orders] == [Decimal(10)]
    again = DCA.decide(late, decision.state, Budget(Decimal(100), spent=Decimal(20)), params)
    assert again.orders == ()
    assert DCA.next_run(decision.state, params, late.now) == first.now + 4 * DAY


def test_a_run_before_the_next_slot_buys_nothing():
    params = DCA.parse_params({"every": "1d", "amount": "10"})
    first = snapshot_at(0)
    state = DCA.decide(first, DCA.initial_state(params, first.now), Budget(Decimal(100)), params).state
    early = snapshot_at(0, offset=timedelta(hours=23, minutes=59))
    decision = DCA.decide(early, state, Budget(Decimal(100), spent=Decimal(10)), params)
    assert decision.orders == () and decision.status.startswith("waiting: next buy at")


def test_a_placed_buy_says_when_the_next_one_is_due():
    params = DCA.parse_params({"every": "1d", "amount": "10"})
    first = snapshot_at(0)
    decision = DCA.decide(first, DCA.initial_state(params, first.now), Budget(Decimal(100)), params)
    assert len(decision.orders) == 1
    assert decision.status == f"bought; next buy at {first.now + DAY:%Y-%m-%d %H:%M:%S} UTC"


def test_a_rerun_on_the_old_state_after_a_crash_gives_the_same_tag():
    params = DCA.parse_params({"every": "1d", "amount": "10"})
    snap = snapshot_at(5)
    state = DCA.initial_state(params, snapshot_at(0).now)
    first = DCA.decide(snap, state, Budget(Decimal(100)), params)
    replay = DCA.decide(snap, state, Budget(Decimal(100)), params)
    assert first == replay


def test_state_survives_a_json_round_trip():
    params = DCA.parse_params({"every": "1d", "amount": "30"})
    _, state, _ = run_daily("100", {"amount": "30"})
    assert DCA.load_state(json.loads(json.dumps(DCA.dump_state(state)))) == state
    fresh = DCA.initial_state(params, snapshot_at(0).now)
    assert DCA.load_state(json.loads(json.dumps(DCA.dump_state(fresh)))) == fresh


@settings(max_examples=200, deadline=None)
@given(
    budget=st.decimals(min_value=1, max_value=10_000, places=2),
    amount=st.decimals(min_value="0.01", max_value=5_000, places=2),
    every_minutes=st.integers(min_value=1, max_value=3 * 24 * 60),
    gaps=st.lists(st.integers(min_value=0, max_value=5 * 24 * 60), min_size=1, max_size=80),
    fee_rate=st.sampled_from(["0", "0.001", "0.0026"]),
)
def test_desired_buys_over_any_run_sequence_never_exceed_the_budget(budget, amount, every_minutes, gaps, fee_rate):
    """Runs at arbitrary times (late, early, coalesced), each buy filling in full: total ≤ budget."""
    params = DCA.parse_params({"every": f"{every_minutes}m", "amount": str(amount)})
    candles = bittrex_1d()
    now = candles[0].ts + DAY
    state = DCA.initial_state(params, now)
    spent = Decimal(0)
    total = Decimal(0)
    for i, gap in enumerate(gaps):
        now += timedelta(minutes=gap)
        price = candles[i % len(candles)].close
        budget_now = Budget(budget, spent, fee_rate=Decimal(fee_rate))
        decision = DCA.decide(MarketSnapshot(now, SYMBOL, price), state, budget_now, params)
        assert len(decision.orders) <= 1
        for order in decision.orders:
            total += order.cost
            spent += order.cost * (1 + Decimal(fee_rate))  # the worst case the risk gate books
        state = decision.state
        assert total <= budget
        assert spent <= budget


def test_a_buy_the_gate_refuses_is_not_counted_and_the_schedule_moves_to_the_next_slot():
    params = DCA.parse_params({"every": "1d", "amount": "10"})
    snap = snapshot_at(0)
    decision = DCA.decide(snap, DCA.initial_state(params, snap.now), Budget(Decimal(100)), params)
    [order] = decision.orders
    update = DCA.on_fill(decision.state, Fill(order.tag, SYMBOL, "buy", Decimal(0), Decimal(0), refused="minimum"),
                         params)
    assert update.state.buys == 0 and not update.state.finished and update.state.refused_slot == 0
    assert "slot 0 missed" in update.note
    assert DCA.next_run(update.state, params, snap.now) == snap.now + DAY  # not again at once
    again = DCA.decide(snap, update.state, Budget(Decimal(100)), params)
    assert again.orders == () and "missed" in again.status
    tomorrow = DCA.decide(snapshot_at(1), update.state, Budget(Decimal(100)), params)
    assert [o.tag for o in tomorrow.orders] == ["dca:slot:1"] and tomorrow.state.buys == 1


def test_a_refused_last_buy_finishes_without_counting_it():
    params = DCA.parse_params({"every": "1d", "amount": "10"})
    snap = snapshot_at(0, cost_min="10")
    decision = DCA.decide(snap, DCA.initial_state(params, snap.now), Budget(Decimal(15)), params)
    assert decision.state.finished
    [order] = decision.orders
    update = DCA.on_fill(decision.state, Fill(order.tag, SYMBOL, "buy", Decimal(0), Decimal(0), refused="minimum"),
                         params)
    assert update.state.finished and update.state.buys == 0 and "finished" in update.note


def test_a_buy_the_exchange_rejects_keeps_its_slot_owed_under_a_new_tag_each_time():
    params = DCA.parse_params({"every": "1d", "amount": "10"})
    snap = snapshot_at(0)
    state = DCA.initial_state(params, snap.now)
    tags = []
    for _ in range(2):  # rejected twice in the same slot (the user resumed before topping up)
        decision = DCA.decide(snap, state, Budget(Decimal(100)), params)
        [order] = decision.orders
        tags.append(order.tag)
        state = DCA.on_fill(decision.state, Fill(order.tag, SYMBOL, "buy", Decimal(0), Decimal(0),
                                                 refused=REJECTED_BY_VENUE), params).state
        assert state.buys == 0 and state.last_slot == -1 and not state.finished
        assert DCA.next_run(state, params, snap.now) <= snap.now  # owed: runs as soon as it is resumed
    decision = DCA.decide(snap, state, Budget(Decimal(100)), params)
    [order] = decision.orders
    tags.append(order.tag)
    assert tags == ["dca:slot:0", "dca:slot:0:1", "dca:slot:0:2"]  # each try its own client order id
    assert decision.state.buys == 1 and decision.state.last_slot == 0
    # A gate refusal of the retried buy is still recognised as this slot's.
    refused = DCA.on_fill(decision.state, Fill(order.tag, SYMBOL, "buy", Decimal(0), Decimal(0), refused="minimum"),
                          params)
    assert refused.state.buys == 0 and refused.state.refused_slot == 0
    assert DCA.load_state(DCA.dump_state(decision.state)) == decision.state

"""The decision core's pure steps (bot/engine/core.py), shared by the live engine and the backtester."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bot.engine.core import book_event, budget_of, ended, gate_decision, holdings_of, value_of
from bot.engine.risk import Ledger, MarketRules
from bot.strategies.base import DesiredOrder, Fill
from storage.orders import NewFill

D = Decimal
RULES = MarketRules("BTC/USDT", "BTC", "USDT", amount_step=D("0.001"), price_step=D("0.01"), amount_min=D("0.001"),
                    cost_min=D(5), fee_rate=D("0.001"))
AT = datetime(2024, 1, 1, tzinfo=UTC)


def buy(tag: str, cost: str) -> DesiredOrder:
    return DesiredOrder("BTC/USDT", "buy", "market", tag, cost=D(cost))


def price_of(symbol: str) -> Decimal | None:
    return D(100) if symbol == "BTC/USDT" else None


def test_each_approved_order_narrows_the_ledger_and_free_balance_for_the_next():
    free = {"USDT": D(1000)}
    gated = gate_decision([buy("a", "60"), buy("b", "60")], {"BTC/USDT": RULES}, price_of, Ledger(D(100)), free)
    assert [d.tag for d, _ in gated.approved] == ["a"]
    assert gated.skipped == [(buy("b", "60"), "budget")]  # 60.06 reserved leaves 39.94 of 100
    assert free["USDT"] == D(1000) - D("60.06") and gated.halted is None


@pytest.mark.parametrize(
    ("orders", "free", "skipped", "halted"),
    [
        ([buy("tiny", "1")], {"USDT": D(1000)}, ["minimum"], None),
        ([DesiredOrder("ETH/USDT", "buy", "market", "other", cost=D(10))], {"USDT": D(1000)}, ["unpriced"], None),
        ([buy("a", "10"), buy("b", "10")], {"USDT": D(15)}, [], "funds"),  # the second has no free quote left
        ([DesiredOrder("BTC/USDT", "sell", "limit", "s", amount=D("0.5"), price=D(110))], {"BTC": D("0.1")}, [],
         "funds"),
    ],
)
def test_refusals_skip_the_order_or_halt_the_decision(orders, free, skipped, halted):
    gated = gate_decision(orders, {"BTC/USDT": RULES}, price_of, Ledger(D(1000)), free)
    assert [why for _, why in gated.skipped] == skipped
    assert (gated.halted[1].kind if gated.halted else None) == halted


def test_an_order_already_placed_is_never_gated_again():
    gated = gate_decision([buy("a", "10")], {"BTC/USDT": RULES}, price_of, Ledger(D(100)), None,
                          placed={"a"}.__contains__)
    assert gated.approved == gated.skipped == [] and gated.halted is None


def fill(side: str, amount: str, price: str, fee: str, currency: str, key: str = "t:1") -> NewFill:
    cost = D(amount) * D(price)
    fee_quote = D(fee) * (D(price) if currency == "BTC" else 1)
    return NewFill(key, side, D(amount), D(price), cost, D(fee), currency, fee_quote, AT)


@pytest.mark.parametrize(
    ("event", "spent", "received", "charged"),
    [
        ([fill("buy", "0.5", "100", "0.05", "USDT")], D("50.05"), D(0), D("0.05")),
        ([fill("buy", "0.5", "100", "0.0005", "BTC")], D(50), D(0), D(0)),  # a base fee shrinks the holding
        ([fill("sell", "0.5", "110", "0.055", "USDT")], D(0), D("54.945"), D("0.055")),
        ([fill("buy", "0.2", "100", "0.02", "USDT"), fill("buy", "0.3", "102", "0.0306", "USDT", "t:2")],
         D("50.6506"), D(0), D("0.0506")),
    ],
)
def test_an_event_is_booked_to_the_ledger_and_told_to_the_strategy(event, spent, received, charged):
    booked = book_event("g:1", "BTC/USDT", event[0].side, event, closed=True, base="BTC")
    assert (booked.spent, booked.received, booked.charged) == (spent, received, charged)
    amount = sum((f.amount for f in event), D(0))
    assert booked.fill.amount == amount and booked.fill.price == booked.cost / amount and booked.fill.closed


def test_holdings_are_net_of_base_fees_and_value_adds_the_unspent_budget():
    fills = [
        ("BTC/USDT", Fill("a", "BTC/USDT", "buy", D("0.5"), D(100), fee=D("0.0005"), fee_currency="BTC")),
        ("BTC/USDT", Fill("b", "BTC/USDT", "sell", D("0.2"), D(110), fee=D("0.022"), fee_currency="USDT")),
        ("BTC/USDT", ended("c", "BTC/USDT", "buy", D(90), "minimum")),
    ]
    held = holdings_of(fills)
    assert held == {"BTC": D("0.2995")}
    assert value_of(D(100), D(50) - D("21.978"), held, {"BTC": D(120)}) == D(100) - D("28.022") + D("35.94")
    assert budget_of(D(100), D(10), D(5), [RULES]).fee_rate == D("0.001")

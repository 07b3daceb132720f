"""The risk gate and the budget ledger: rounding, minimums, balance, and the ceiling as a property.

Property: over many rounds of orders (market buys by cost, limit buys, sells) with random partial fills at
any price the order allows, random fees (in quote or base, never above the market's fee rate) and random
cancellations, net spent (fills, fees included) + reserved (live orders' worst case, less what they already
spent) never exceeds the budget.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.engine.fills import charged_fee
from bot.engine.risk import Approved, Ledger, MarketRules, Refused, allocation_headroom, check_order
from bot.exchanges.models import MarketInfo
from bot.strategies.base import DesiredOrder
from storage.models import Order
from storage.orders import outstanding

D = Decimal
RULES = MarketRules(
    symbol="BTC/USDT", base="BTC", quote="USDT", amount_step=D("0.00001"), price_step=D("0.01"),
    quote_step=D("0.01"), amount_min=D("0.00001"), cost_min=D("5"), fee_rate=D("0.001"),
)


def test_amounts_round_down_and_the_reserve_rounds_up_with_the_fee():
    order = DesiredOrder("BTC/USDT", "buy", "limit", "t", amount=D("0.123456789"), price=D("60000.019"))
    verdict = check_order(order, RULES, last_price=D(61000), ledger=Ledger(D(10000)), free_quote=D(10000))
    assert verdict == Approved(amount=D("0.12345"), cost=None, price=D("60000.01"), reserve=D("7414.41"))
    # 0.12345 × 60000.01 × 1.001 = 7414.408… → rounded UP to the cent


def test_orders_below_the_market_minimums_are_refused_as_minimum():
    tiny = DesiredOrder("BTC/USDT", "buy", "limit", "t", amount=D("0.00005"), price=D(60000))
    verdict = check_order(tiny, RULES, last_price=D(60000), ledger=Ledger(D(100)), free_quote=D(100))
    assert isinstance(verdict, Refused) and verdict.kind == "minimum"
    truncated = DesiredOrder("BTC/USDT", "buy", "market", "t", cost=D("5.00"))
    verdict = check_order(truncated, RULES, last_price=D("60001"), ledger=Ledger(D(100)), free_quote=D(100))
    assert isinstance(verdict, Refused) and verdict.kind == "minimum"  # 0.00008 BTC × 60001 < 5


def test_the_budget_and_the_free_balance_bound_every_buy():
    buy = DesiredOrder("BTC/USDT", "buy", "market", "t", cost=D(50))
    over_budget = check_order(buy, RULES, last_price=D(100), ledger=Ledger(D(100), D(30), D(20)), free_quote=D(1000))
    assert isinstance(over_budget, Refused) and over_budget.kind == "budget"
    no_funds = check_order(buy, RULES, last_price=D(100), ledger=Ledger(D(100)), free_quote=D(40))
    assert isinstance(no_funds, Refused) and no_funds.kind == "funds"
    sell = DesiredOrder("BTC/USDT", "sell", "market", "t", amount=D(1))
    assert check_order(sell, RULES, last_price=D(100), ledger=Ledger(D(0)), free_quote=D(0), free_base=D(1)) == \
        Approved(amount=D(1), cost=None, price=None, reserve=D(0))


def test_allocation_headroom_subtracts_what_other_allocations_may_still_spend():
    others = [Ledger(D(100), spent=D(30), reserved=D(20)), Ledger(D(50), spent=D(60))]
    assert allocation_headroom(D(500), others) == D(450)
    assert allocation_headroom(D(40), others) == D(0)


def _order(index: int, desired: DesiredOrder, verdict: Approved) -> Order:
    return Order(
        id=index, strategy_id=1, account_id=1, client_order_id=f"c{index}", tag=desired.tag, symbol="BTC/USDT",
        side=desired.side, type=desired.type, amount=verdict.amount, price=verdict.price, cost=verdict.cost,
        reserved=verdict.reserve, status="open", exchange_order_id=str(index), filled=D(0), filled_cost=D(0),
        fee=D(0), error=None, created_at=datetime.now(UTC),
    )


money = st.decimals(min_value=D("0.01"), max_value=D(500), places=2)
fraction = st.sampled_from([D(0), D(1)]) | st.decimals(min_value=D(0), max_value=D(1), places=2)
step = st.tuples(
    st.sampled_from(["market_buy", "limit_buy", "sell", "fill", "fill", "cancel"]),
    money,
    fraction,  # which order / limit price offset
    fraction,  # how much of what is left fills (1: all of it, closing the order)
    fraction,  # price improvement of the fill (0: exactly at the limit)
    fraction,  # fee, as a share of the market's fee rate
    st.booleans(),  # fee paid in quote (else in base)
)


@settings(max_examples=150, deadline=None)
@given(
    budget=st.decimals(min_value=D(10), max_value=D(2000), places=2),
    price=st.decimals(min_value=D(100), max_value=D(100000), places=2),
    steps=st.lists(step, min_size=1, max_size=60),
)
def test_spent_plus_reserved_never_exceeds_the_budget(budget, price, steps):
    spent = D(0)  # net: buys + quote fees − sale proceeds
    held = D(0)
    orders: list[Order] = []
    for index, (action, size, frac_a, frac_b, better, fee_share, fee_in_quote) in enumerate(steps):
        live = [o for o in orders if o.status == "open"]
        ledger = Ledger(budget, spent, sum((outstanding(o) for o in live), D(0)))
        if action in ("market_buy", "limit_buy", "sell"):
            # Half the buys ask for everything that is left, as strategies do with the spendable budget.
            if frac_b >= D("0.5"):
                size = ledger.headroom.quantize(D("0.01"), rounding=ROUND_FLOOR)
                if size <= 0:
                    continue
            if action == "market_buy":
                desired = DesiredOrder("BTC/USDT", "buy", "market", f"t{index}", cost=size)
            elif action == "limit_buy":
                limit = price * (D("0.9") + frac_a / 5)
                desired = DesiredOrder("BTC/USDT", "buy", "limit", f"t{index}", amount=size / limit, price=limit)
            else:
                if held * frac_a <= 0:
                    continue
                desired = DesiredOrder("BTC/USDT", "sell", "market", f"t{index}", amount=held * frac_a)
            verdict = check_order(desired, RULES, last_price=price, ledger=ledger, free_quote=D(10**9),
                                  free_base=held)
            if isinstance(verdict, Approved):
                orders.append(_order(index, desired, verdict))
        elif action == "fill" and live:
            order = live[int(frac_a * (len(live) - 1))]
            # Fill part of what is left, at any price the order allows (a buy never above its limit).
            if order.cost is not None:
                cost_left = order.cost - order.filled_cost
                cost = (cost_left * frac_b).quantize(D("0.00000001"))
                fill_price = price * (D(1) - better / 5)
                amount = cost / fill_price
            else:
                amount = ((order.amount - order.filled) * frac_b).quantize(D("0.00000001"))
                limit = order.price if order.price is not None else price
                fill_price = limit * (D(1) - better / 10) if order.side == "buy" else price
                cost = amount * fill_price
            if amount <= 0:
                continue
            fee_rate = RULES.fee_rate * fee_share
            fee, currency = (cost * fee_rate, "USDT") if fee_in_quote else (amount * fee_rate, "BTC")
            charged = charged_fee(currency, fee, base="BTC")  # a USDT fee is its own value in quote
            if order.side == "buy":
                spent += cost + charged
                held += amount - (fee if currency == "BTC" else 0)
            else:
                spent -= cost - charged
                held -= amount + (fee if currency == "BTC" else 0)
            done = frac_b == 1
            orders[orders.index(order)] = replace(
                order, filled=order.filled + amount, filled_cost=order.filled_cost + cost, fee=order.fee + charged,
                status="closed" if done else "open",
            )
        elif action == "cancel" and live:
            order = live[int(frac_a * (len(live) - 1))]
            orders[orders.index(order)] = replace(order, status="canceled")
        reserved = sum((outstanding(o) for o in orders if o.status == "open"), D(0))
        assert spent + reserved <= budget, (spent, reserved, budget)


def test_a_buy_by_cost_that_rounding_pushed_under_the_minimum_buys_the_smallest_valid_amount():
    rules = replace(RULES, cost_min=D(10))
    ten = DesiredOrder("BTC/USDT", "buy", "market", "t", cost=D(10))
    # 10 / 50123 = 0.000199… → 0.00019 BTC on the step, worth 9.52 < 10: the venue would refuse it.
    verdict = check_order(ten, rules, last_price=D(50123), ledger=Ledger(D(100)), free_quote=D(100))
    assert isinstance(verdict, Approved)
    assert verdict.cost is None and verdict.amount == D("0.0002")  # 10.02 USDT: the smallest valid order
    assert verdict.reserve <= D(100)
    one = DesiredOrder("BTC/USDT", "buy", "market", "t", cost=D(1))  # far below: never lifted 10×
    assert check_order(one, rules, last_price=D(50123), ledger=Ledger(D(100)), free_quote=D(100)).kind == "minimum"


def test_a_market_order_sized_to_the_whole_budget_is_trimmed_to_fit_the_slippage_reserve():
    futures = replace(RULES, contract=True, cost_min=D(5))
    whole = DesiredOrder("BTC/USDT", "buy", "market", "t", amount=D("0.01"))  # 0.01 × 100000 = the budget
    verdict = check_order(whole, futures, last_price=D(100000), ledger=Ledger(D(1000)), free_quote=D(5000))
    assert isinstance(verdict, Approved)
    assert verdict.amount < D("0.01") and verdict.reserve <= D(1000)


def _market(venue: str, taker: str | None, maker: str | None) -> MarketInfo:
    return MarketInfo(
        venue=venue, symbol="BTC/USD", venue_symbol="XXBTZUSD", base="BTC", quote="USD", type="spot",
        contract=False, amount_step=D("0.00000001"), price_tick=D("0.1"), min_amount=D("0.0001"), max_amount=None,
        min_cost=D("0.5"), maker_fee=None if maker is None else D(maker), taker_fee=None if taker is None else D(taker),
        contract_size=None, active=True,
    )


def test_the_gate_reserves_at_least_the_entry_tier_taker_fee_of_the_venue():
    # Kraken's AssetPairs (and ccxt) say 0.26 % taker, but an account under 10,000 USD of monthly volume pays
    # 0.40 %: reserving 0.26 % would let a fill's fee push the strategy past its budget.
    assert MarketRules.from_info(_market("kraken", "0.0026", "0.0016")).fee_rate == D("0.004")
    assert MarketRules.from_info(_market("binance", "0.001", "0.001")).fee_rate == D("0.001")
    assert MarketRules.from_info(_market("binanceusdm", "0.0005", "0.0002")).fee_rate == D("0.0005")
    # A market that states a higher fee than the venue's entry tier keeps its own.
    assert MarketRules.from_info(_market("binance", "0.0075", "0.0075")).fee_rate == D("0.0075")


def test_a_market_without_fees_is_reserved_at_the_highest_entry_tier_taker_fee():
    assert MarketRules.from_info(_market("somevenue", None, None)).fee_rate == D("0.004")
    buy = DesiredOrder("BTC/USD", "buy", "limit", "t", amount=D("0.01"), price=D(50000))
    rules = MarketRules.from_info(_market("kraken", "0.0026", "0.0016"))
    verdict = check_order(buy, rules, last_price=D(50000), ledger=Ledger(D(1000)), free_quote=D(1000))
    assert verdict == Approved(amount=D("0.01"), cost=None, price=D(50000), reserve=D("502.00000000"))


def test_a_futures_reduce_only_order_reserves_nothing_and_an_opening_one_reserves_its_margin():
    futures = replace(RULES, symbol="BTC/USDT:USDT", contract=True)
    short_held = Ledger(D(200), spent=D("165.22"))  # a short's margin at 1x plus a loss already booked
    close = DesiredOrder("BTC/USDT:USDT", "buy", "market", "t", amount=D("0.003"), reduce_only=True)
    verdict = check_order(close, futures, last_price=D(40000), ledger=short_held, free_quote=D(0))
    assert verdict == Approved(amount=D("0.003"), cost=None, price=None, reserve=D(0))
    more = DesiredOrder("BTC/USDT:USDT", "sell", "market", "t", amount=D("0.003"))
    verdict = check_order(more, futures, last_price=D(40000), ledger=short_held, free_quote=D(1000))
    assert isinstance(verdict, Approved) and verdict.amount < D("0.003")  # trimmed to the 34.78 left
    assert 0 < verdict.reserve <= D("34.78")


def test_only_a_futures_reduce_only_order_may_be_below_the_minimum_notional():
    futures = replace(RULES, symbol="BTC/USDT:USDT", contract=True)
    close = DesiredOrder("BTC/USDT:USDT", "sell", "market", "t", amount=D("0.00005"), reduce_only=True)
    verdict = check_order(close, futures, last_price=D(60000), ledger=Ledger(D(100)), free_quote=D(0))
    assert verdict == Approved(amount=D("0.00005"), cost=None, price=None, reserve=D(0))  # 3 USDT: the venue waives it
    opening = replace(close, reduce_only=False)
    verdict = check_order(opening, futures, last_price=D(60000), ledger=Ledger(D(100)), free_quote=D(100))
    assert verdict.kind == "minimum"
    spot = replace(close, symbol="BTC/USDT", reduce_only=False)
    assert check_order(spot, RULES, last_price=D(60000), ledger=Ledger(D(100)), free_quote=D(100),
                       free_base=D(1)).kind == "minimum"

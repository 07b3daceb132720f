"""Rebalance with BTC priced by real Kraken candles (ETH and SOL scripted): buy to weights, trade back on drift."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.strategies.base import Budget, Decision, Fill, MarketInfo, MarketSnapshot
from bot.strategies.rebalance import REBALANCE
from tests.test_strategy_candles import kraken_1m

HOUR = timedelta(hours=1)
START = kraken_1m()[0].ts + timedelta(minutes=1)
BTC = kraken_1m()[0].close  # 106038.2
MARKETS = {
    f"{a}/USDT": MarketInfo(f"{a}/USDT", a, "USDT", amount_min=Decimal("0.00001"), cost_min=Decimal(5))
    for a in ("BTC", "ETH", "SOL")
}


@dataclass
class Book:
    """A minimal engine for one rebalance allocation: market orders fill at once at the snapshot price."""

    total: Decimal
    params: dict
    fee_rate: Decimal = Decimal(0)
    markets: dict = field(default_factory=lambda: dict(MARKETS))
    holdings: dict[str, Decimal] = field(default_factory=dict)
    spent: Decimal = Decimal(0)
    state: object = None
    bought: Decimal = Decimal(0)
    sold: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        self.state = REBALANCE.initial_state(self.params, START)

    def snapshot(self, now: datetime, prices: dict[str, Decimal]) -> MarketSnapshot:
        return MarketSnapshot(now=now, symbol="USDT", price=Decimal(1), markets=self.markets,
                              prices={f"{a}/USDT": p for a, p in prices.items()}, holdings=dict(self.holdings))

    def decide(self, now: datetime, prices: dict[str, Decimal]) -> Decision:
        budget = Budget(self.total, self.spent, fee_rate=self.fee_rate)
        decision = REBALANCE.decide(self.snapshot(now, prices), self.state, budget, self.params)
        self.state = decision.state
        return decision

    def fill(self, decision: Decision, prices: dict[str, Decimal]) -> None:
        for order in decision.orders:
            asset = order.symbol.split("/")[0]
            price = prices[asset]
            amount = order.amount if order.amount is not None else order.cost / price
            fee = amount * price * self.fee_rate
            if order.side == "buy":
                self.holdings[asset] = self.holdings.get(asset, Decimal(0)) + amount
                # A buy by cost spends exactly its cost (amount × price may differ in the 28th digit).
                value = order.cost if order.cost is not None else amount * price
                self.spent += value + fee
                self.bought += value
            else:
                assert amount <= self.holdings[asset], "sold more than held"
                self.holdings[asset] -= amount
                self.spent -= amount * price - fee
                self.sold += amount * price
            fill = Fill(order.tag, order.symbol, order.side, amount, price, fee=fee, fee_currency="USDT")
            self.state = REBALANCE.on_fill(self.state, fill, self.params).state

    def weights(self, prices: dict[str, Decimal]) -> dict[str, Decimal]:
        values = {a: h * prices[a] for a, h in self.holdings.items()}
        total = sum(values.values()) + (self.total - self.spent)
        return {a: v * 100 / total for a, v in values.items()}


def basket(total: str = "500", weights: str = "BTC:50,ETH:50", **raw: str) -> Book:
    return Book(Decimal(total), REBALANCE.parse_params({"weights": weights, **raw}))


def test_first_run_buys_the_basket_at_target_weights_with_the_budget():
    book = basket()
    prices = {"BTC": BTC, "ETH": Decimal(3500)}
    decision = book.decide(START, prices)
    assert [(o.symbol, o.side, o.type, o.cost, o.tag) for o in decision.orders] == [
        ("BTC/USDT", "buy", "market", Decimal(250), "rebalance:0:buy:BTC"),
        ("ETH/USDT", "buy", "market", Decimal(250), "rebalance:0:buy:ETH"),
    ]
    book.fill(decision, prices)
    assert book.weights(prices) == {"BTC": 50, "ETH": 50}
    quiet = book.decide(START + HOUR, prices)
    assert quiet.orders == () and quiet.status.startswith("within band")


def test_a_thirty_percent_rise_sells_first_then_buys_back_within_band_and_budget():
    book = basket()
    prices = {"BTC": BTC, "ETH": Decimal(3500)}
    book.fill(book.decide(START, prices), prices)
    risen = {"BTC": BTC * Decimal("1.3"), "ETH": Decimal(3500)}  # weights now 56.5 / 43.5
    selling = book.decide(START + HOUR, risen)
    [sell] = selling.orders
    assert (sell.symbol, sell.side, sell.tag) == ("BTC/USDT", "sell", "rebalance:1:sell:BTC")
    assert abs(sell.amount * risen["BTC"] - Decimal("37.5")) < Decimal("0.0001")
    assert book.decide(START + HOUR + timedelta(minutes=1), risen).orders == ()  # nothing before the sell ends
    book.fill(selling, risen)
    buying = book.decide(START + HOUR + timedelta(minutes=2), risen)
    [buy] = buying.orders
    assert (buy.symbol, buy.side, buy.tag) == ("ETH/USDT", "buy", "rebalance:1:buy:ETH")
    assert buy.cost <= Budget(book.total, book.spent).spendable
    book.fill(buying, risen)
    assert all(abs(w - 50) <= 5 for w in book.weights(risen).values())
    assert book.spent <= book.total
    assert book.decide(START + 2 * HOUR, risen).orders == ()


def test_trades_below_the_market_minimum_are_skipped_not_refused():
    book = basket(weights="BTC:50,ETH:30,SOL:20")
    book.markets = {s: MarketInfo(s, m.base, "USDT", cost_min=Decimal(20)) for s, m in MARKETS.items()}
    prices = {"BTC": BTC, "ETH": Decimal(3500), "SOL": Decimal(160)}
    book.fill(book.decide(START, prices), prices)
    risen = {**prices, "BTC": BTC * Decimal("1.3")}
    # Total 575: BTC 325 → 287.5 (sell 37.5), ETH 150 → 172.5 (buy 22.5), SOL 100 → 115 (buy 15 < 20: skipped).
    book.fill(book.decide(START + HOUR, risen), risen)
    buying = book.decide(START + HOUR + timedelta(minutes=1), risen)
    assert [(o.symbol, o.side) for o in buying.orders] == [("ETH/USDT", "buy")]
    assert abs(buying.orders[0].cost - Decimal("22.5")) < Decimal("0.0001")


def test_a_late_check_runs_once_for_the_latest_slot():
    book = basket()
    prices = {"BTC": BTC, "ETH": Decimal(3500)}
    book.fill(book.decide(START, prices), prices)
    risen = {"BTC": BTC * Decimal("1.3"), "ETH": Decimal(3500)}
    late = START + 5 * HOUR + timedelta(minutes=7)
    decision = book.decide(late, risen)
    assert [o.tag for o in decision.orders] == ["rebalance:5:sell:BTC"]
    assert REBALANCE.next_run(book.state, book.params, late) == late + timedelta(minutes=1)  # polls its sells
    book.fill(decision, risen)
    book.decide(late, risen)
    assert REBALANCE.next_run(book.state, book.params, late) == START + 6 * HOUR


def test_sells_that_never_report_release_the_buys_after_one_period():
    book = basket()
    prices = {"BTC": BTC, "ETH": Decimal(3500)}
    book.fill(book.decide(START, prices), prices)
    risen = {"BTC": BTC * Decimal("1.3"), "ETH": Decimal(3500)}
    assert book.decide(START + HOUR, risen).orders  # the sell, whose fill we never report
    assert book.decide(START + HOUR + timedelta(minutes=59), risen).orders == ()
    later = book.decide(START + 2 * HOUR, risen)
    assert all(o.side == "buy" for o in later.orders)


def test_a_missing_price_waits_instead_of_trading():
    book = basket()
    decision = book.decide(START, {"BTC": BTC})
    assert decision.orders == () and "price is missing" in decision.status


def test_a_quote_weight_stays_in_cash():
    book = basket(weights="BTC:40,ETH:40,USDT:20")
    decision = book.decide(START, {"BTC": BTC, "ETH": Decimal(3500)})
    assert [o.cost for o in decision.orders] == [Decimal(200), Decimal(200)]


def test_state_survives_a_json_round_trip():
    book = basket()
    prices = {"BTC": BTC, "ETH": Decimal(3500)}
    book.fill(book.decide(START, prices), prices)
    book.decide(START + HOUR, {"BTC": BTC * 2, "ETH": Decimal(3500)})
    assert book.state.phase == "selling"
    assert REBALANCE.load_state(json.loads(json.dumps(REBALANCE.dump_state(book.state)))) == book.state


@settings(max_examples=40, deadline=None)
@given(
    eth_moves=st.lists(st.decimals(min_value="0.5", max_value="2", places=3), min_size=1, max_size=12),
    total=st.decimals(min_value=20, max_value=10_000, places=2),
    fee_rate=st.sampled_from(["0", "0.001"]),
    band=st.sampled_from(["1", "5", "10"]),
)
def test_hourly_rebalancing_on_real_prices_never_spends_past_the_budget(eth_moves, total, fee_rate, band):
    book = Book(total, REBALANCE.parse_params({"weights": "BTC:60,ETH:40", "band": band}), Decimal(fee_rate))
    candles = kraken_1m()
    for hour, move in enumerate(eth_moves):
        prices = {"BTC": candles[(hour * 60) % len(candles)].close, "ETH": 3500 * move}
        for minute in range(2):  # the sells, then the buys
            decision = book.decide(START + hour * HOUR + minute * timedelta(minutes=1), prices)
            # Buys never ask for more than what is left of the budget (net of what sells brought back).
            assert sum((o.cost for o in decision.orders if o.cost), Decimal(0)) <= book.total - book.spent
            book.fill(decision, prices)
            assert book.spent <= book.total

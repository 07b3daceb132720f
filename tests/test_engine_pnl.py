"""P&L from a strategy's fills (`bot.engine.pnl`): spot by average cost, futures as the venue books them.

The futures rows are also replayed on the fake USD-M book, whose wallet is the reference: realised P&L net of
fees must equal the wallet's change, the position and entry the venue's, unrealised the venue's at the mark.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bot.engine.pnl import compute, effect_of_last, position_action
from bot.sandbox.exchange_book import ExchangeBook, MarketSpec
from storage.models import Fill
from storage.orders import StrategyFill

D = Decimal
FUT = "BTC/USDT:USDT"


def fill(side: str, amount: str, price: str, fee: str = "0", currency: str | None = "USDT", *,
         fee_quote: str | None = None, symbol: str = FUT) -> StrategyFill:
    amount_d, price_d = D(amount), D(price)
    value = D(fee_quote) if fee_quote is not None else (
        D(fee) if currency == "USDT" else D(fee) * price_d if currency == "BTC" else D(0)
    )
    return StrategyFill(
        fill=Fill(id=0, order_id=0, strategy_id=1, trade_key="k", side=side, amount=amount_d, price=price_d,
                  cost=amount_d * price_d, fee=D(fee), fee_currency=currency, at=datetime.now(UTC)),
        symbol=symbol, fee_quote=value, profit=None,
    )


# ------------------------------------------------------------------------------------------------- futures
FUTURES_CASES = {
    # name: (fills as (side, amount, price, fee)), realised net of fees, position, entry
    "long closed in two parts": (
        [("buy", "0.02", "20000", "0.2"), ("sell", "0.01", "21000", "0.105"), ("sell", "0.01", "19000", "0.095")],
        D("10") - D("10") - D("0.4"), D(0), None,
    ),
    "short closed at a profit": (
        [("sell", "0.01", "20000", "0.1"), ("buy", "0.01", "19000", "0.095")],
        D("10") - D("0.195"), D(0), None,
    ),
    "short closed at a loss, in two parts": (
        [("sell", "0.02", "20000", "0.2"), ("buy", "0.005", "21000", "0.0525"), ("buy", "0.015", "22000", "0.165")],
        D("-5") - D("30") - D("0.4175"), D(0), None,
    ),
    "short added to: entry averages": (
        [("sell", "0.01", "20000", "0"), ("sell", "0.01", "22000", "0")],
        D(0), D("-0.02"), D("21000"),
    ),
    "partial close keeps the entry": (
        [("sell", "0.03", "20000", "0"), ("buy", "0.01", "18000", "0")],
        D("20"), D("-0.02"), D("20000"),
    ),
    "long → short flip in one order": (
        [("buy", "0.01", "20000", "0.1"), ("sell", "0.03", "21000", "0.315")],
        D("10") - D("0.415"), D("-0.02"), D("21000"),
    ),
    "flip whose fee does not split evenly": (
        [("buy", "0.01", "20000", "0.1"), ("sell", "0.03", "21000", "0.1")],
        D("10") - D("0.2"), D("-0.02"), D("21000"),
    ),
    "short → long flip, then flat": (
        [("sell", "0.01", "20000", "0"), ("buy", "0.02", "21000", "0"), ("sell", "0.01", "23000", "0")],
        D("-10") + D("20"), D(0), None,
    ),
}


@pytest.mark.parametrize("rows, realised, position, entry", FUTURES_CASES.values(), ids=FUTURES_CASES.keys())
def test_futures_realised_position_and_entry(rows, realised, position, entry):
    pnl = compute([fill(*row) for row in rows], "USDT")
    btc = pnl.assets["BTC"]
    assert (pnl.realised, btc.held, btc.entry_price) == (realised, position, entry)
    # The ledger's net (money in the position − P&L) is the margin at entry less the realised P&L.
    assert pnl.invested - pnl.returned == abs(position) * (entry or 0) - realised


def futures_book() -> ExchangeBook:
    market = MarketSpec(symbol=FUT, venue_symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.1"),
                        amount_step=D("0.001"), min_amount=D("0.001"), maker_fee=D("0.0002"), taker_fee=D("0.0005"))
    book = ExchangeBook("testusdm", [market], futures=True, clock=lambda: 1_700_000_000_000)
    book.add_key("k", "s", balances={"USDT": "10000"})
    return book


@pytest.mark.parametrize("rows", [case[0] for case in FUTURES_CASES.values()], ids=FUTURES_CASES.keys())
def test_futures_figures_equal_the_fake_venues_wallet_position_and_unrealised(rows):
    book = futures_book()
    for side, amount, price, _ in rows:
        book.set_price(FUT, price)
        book.place_order("k", FUT, side, "market", amount=amount)
    book.set_price(FUT, "20500")
    trades = book.trades("k", FUT)
    pnl = compute([fill(t.side, str(t.amount), str(t.price), str(t.fee)) for t in trades], "USDT")
    [position] = book.positions("k")
    assert pnl.realised == book.keys["k"].total("USDT") - 10000
    assert pnl.realised == sum(t.realized_pnl - t.fee for t in trades)
    assert pnl.assets["BTC"].held == position.amount
    if position.amount:
        assert pnl.assets["BTC"].entry_price == position.entry_price
    assert pnl.unrealised({"BTC": D("20500")}) == book.unrealized_pnl(position)


def test_the_fake_flips_a_long_into_a_short_as_binance_does():
    book = futures_book()
    book.set_price(FUT, "20000")
    book.place_order("k", FUT, "buy", "market", amount="0.01")
    book.set_price(FUT, "21000")
    book.place_order("k", FUT, "sell", "market", amount="0.03")
    [position] = book.positions("k")
    assert (position.amount, position.entry_price, position.realized_pnl) == (D("-0.02"), D(21000), D(10))
    fees = D("0.1") + D("0.315")
    assert book.keys["k"].total("USDT") == D(10000) + 10 - fees
    book.set_price(FUT, "20000")
    assert book.unrealized_pnl(position) == D(20)  # a short gains as the price falls


def test_the_effect_of_a_flip_books_the_closed_part_as_received_and_the_opened_part_as_spent():
    fills = [fill("buy", "0.01", "20000", "0.1"), fill("sell", "0.03", "21000", "0.315")]
    effect = effect_of_last(fills, "USDT")
    assert effect.realised == D(10) - D("0.315")
    assert effect.total_realised == D(10) - D("0.415")
    assert effect.received == D(200) + D(10) - D("0.105")  # margin back + gain − a third of the fee
    assert effect.spent == D(420) + D("0.21")  # margin for the 0.02 short + two thirds of the fee
    assert (effect.asset.side, effect.asset.entry_price) == ("short", D(21000))


@pytest.mark.parametrize(("before", "after", "action"), [
    ("0", "0.01", "Opened long"), ("0", "-0.01", "Opened short"),
    ("0.01", "0.03", "Added to long"), ("-0.01", "-0.02", "Added to short"),
    ("0.03", "0.01", "Reduced long"), ("-0.03", "-0.01", "Reduced short"),
    ("0.01", "0", "Closed long"), ("-0.01", "0", "Closed short"),
    ("0.01", "-0.02", "Flipped to short"), ("-0.01", "0.02", "Flipped to long"),
])
def test_position_action_names_what_a_fill_did_to_the_position(before, after, action):
    assert position_action(D(before), D(after)) == action


def test_the_effect_of_fills_knows_the_position_before_them():
    fills = [fill("buy", "0.01", "20000"), fill("buy", "0.02", "21000"), fill("sell", "0.05", "22000")]
    assert (effect_of_last(fills[:1], "USDT").action, effect_of_last(fills[:2], "USDT").action) == (
        "Opened long", "Added to long")
    flip = effect_of_last(fills, "USDT")
    assert (flip.held_before, flip.asset.held, flip.action) == (D("0.03"), D("-0.02"), "Flipped to short")
    two = effect_of_last(fills, "USDT", count=2)  # one order's two fills: the effect of both
    assert (two.held_before, two.action) == (D("0.01"), "Flipped to short")


# ------------------------------------------------------------------------------------------------- spot
SPOT = "BTC/USDT"


def test_spot_fee_in_quote_is_in_the_cost_and_the_proceeds():
    rows = [fill("buy", "0.01", "20000", "0.2", symbol=SPOT), fill("sell", "0.01", "21000", "0.21", symbol=SPOT)]
    pnl = compute(rows, "USDT")
    assert (pnl.invested, pnl.returned, pnl.fees) == (D("200.2"), D("209.79"), D("0.41"))
    assert pnl.realised == D("209.79") - D("200.2")


def test_spot_fee_in_base_reduces_the_holding_and_counts_once():
    pnl = compute([fill("buy", "0.01", "20000", "0.00001", "BTC", symbol=SPOT)], "USDT")
    btc = pnl.assets["BTC"]
    assert btc.held == D("0.00999") and pnl.invested == D(200) and pnl.fees == D("0.2")
    assert pnl.unrealised({"BTC": D(20000)}).quantize(D("1e-12")) == D("-0.2")  # the fee, once


def test_spot_fee_in_a_third_currency_counts_at_its_quote_value_once():
    rows = [fill("buy", "0.01", "20000", "0.0005", "BNB", fee_quote="0.15", symbol=SPOT),
            fill("sell", "0.01", "21000", "0.0005", "BNB", fee_quote="0.16", symbol=SPOT)]
    pnl = compute(rows, "USDT")
    assert pnl.assets["BTC"].held == D("0.01") - D("0.01")
    assert pnl.realised == D(10) - D("0.31")
    assert pnl.fees == D("0.31")


def test_spot_partial_sells_realise_against_the_average_cost():
    rows = [fill("buy", "0.01", "20000", symbol=SPOT), fill("buy", "0.01", "22000", symbol=SPOT),
            fill("sell", "0.005", "23000", symbol=SPOT)]
    pnl = compute(rows, "USDT")
    btc = pnl.assets["BTC"]
    assert (btc.held, btc.average_cost, pnl.realised) == (D("0.015"), D(21000), D(10))
    assert btc.average_buy_price == D(21000)


def test_futures_fee_in_a_third_currency_is_realised_at_its_quote_value():
    rows = [fill("sell", "0.01", "20000", "0.0002", "BNB", fee_quote="0.06"),
            fill("buy", "0.01", "19000", "0.0002", "BNB", fee_quote="0.06")]
    assert compute(rows, "USDT").realised == D(10) - D("0.12")

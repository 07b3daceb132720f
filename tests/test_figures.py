"""The figures of a strategy (`bot.engine.figures`), pure: the words and the arithmetic every message shares.

The chat tests (`test_chat_figures.py`) check the same figures end to end against the fake venues; these pin
the cases the issue found: reservations ignored, a negative "used", the average of lots already sold.
"""

from __future__ import annotations

from decimal import Decimal

from bot.engine.figures import Precision, budget_text, figures_of, holdings_text, pnl_text
from bot.engine.pnl import compute
from tests.test_engine_pnl import fill

D = Decimal
SPOT = "BTC/USDT"


def spot(*rows, reserved: str = "0", budget: str = "500", prices=None, step=None, tick=None):
    fills = [fill(side, amount, price, fee, "USDT", symbol=SPOT) for side, amount, price, fee in rows]
    pnl = compute(fills, "USDT")
    return figures_of(
        budget=D(budget), quote="USDT", spent=pnl.invested, received=pnl.returned, reserved=D(reserved), pnl=pnl,
        prices=prices, precision={"BTC": Precision(step, tick)},
    )


def test_left_counts_the_resting_orders_reservations():
    f = spot(("buy", "0.004", "62500", "0.25"), reserved="249.62")
    assert (f.used, f.reserved, f.left) == (D("250.25"), D("249.62"), D("0.13"))
    assert budget_text(f) == (
        "budget 500.00 USDT: invested 250.25 USDT, returned 0.00 USDT, reserved 249.62 USDT, left 0.13 USDT"
    )


def test_a_spot_strategy_in_profit_shows_invested_and_returned_never_a_negative_used():
    f = spot(("buy", "0.002", "50000", "0.1"), ("sell", "0.002", "55000", "0.11"))
    assert f.used == D("100.1") - D("109.89") < 0
    text = budget_text(f)
    assert "used" not in text and "-" not in text
    assert "invested 100.10 USDT, returned 109.89 USDT, reserved 0.00 USDT, left 509.79 USDT" in text
    assert pnl_text(f) == "P&amp;L net of fees: realised +9.79 USDT, unrealised 0.00 USDT, fees 0.21 USDT"


def test_the_average_entry_is_what_the_coins_still_held_cost_not_every_buys_average():
    # Bought at 100, sold that, bought again at 200: what is held cost 200 each (a plain average says 150).
    f = spot(("buy", "1", "100", "0"), ("sell", "1", "110", "0"), ("buy", "1", "200", "0"), prices={"BTC": D(210)})
    assert holdings_text(f) == "1 BTC, average entry 200.00 USDT"
    # Fees count in the cost of what is held: 0.004 BTC for 250 USDT plus 0.25 USDT fee.
    g = spot(("buy", "0.004", "62500", "0.25"), step=D("0.00001"), tick=D("0.1"))
    assert holdings_text(g) == "0.00400 BTC, average entry 62,562.5 USDT"
    assert f.unrealised == D(10) and f.net == D(20)


def test_a_futures_position_shows_its_margin_at_1x_and_its_entry():
    fills = [fill("sell", "0.003", "45000", "0.0675")]
    pnl = compute(fills, "USDT")
    f = figures_of(budget=D(200), quote="USDT", spent=pnl.invested, received=pnl.returned, reserved=D(0), pnl=pnl,
                   futures=True, prices={"BTC": D(40000)})
    assert f.margin == D("135") and f.realised == D("-0.0675")
    # used + left = budget: the fee booked is in `used`, next to the margin.
    assert budget_text(f) == (
        "budget 200.00 USDT: used 135.07 USDT (margin 135.00 USDT at 1x, less realised P&amp;L), "
        "reserved 0.00 USDT, left 64.93 USDT"
    )
    assert holdings_text(f) == "short 0.003 BTC at entry 45,000.00 USDT"
    assert f.unrealised == D("15")

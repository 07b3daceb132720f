"""The futures fill alert's wording (`bot.engine.alerts.fill_text`): the position named by its side, the fill's
size, price and notional, the position left (entry, 1x) and the realised P&L net of fees. A grid on the fake
Binance USD-M reduces its long through the real engine; a flip, which no strategy makes in one order (a trend
closes first, then opens), is checked on the pure function."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from bot import formatting
from bot.engine.alerts import fill_text, resolved_text
from bot.engine.figures import figures_of
from bot.engine.pnl import compute, effect_of_last
from bot.services.positions import position_of
from storage.models import Order, Strategy
from tests.engine_world import open_world
from tests.test_engine_dca import wait_for
from tests.test_engine_pnl import FUT, fill

D = Decimal


def strategy() -> Strategy:
    now = datetime.now(UTC)
    return Strategy(id=7, user_id=1, account_id=1, kind="grid", symbol=FUT, quote="USDT", budget=D(1000),
                    params={"low": "18000", "high": "24000", "levels": "4"}, state={}, status="active",
                    pause_reason=None, spent=D(0), received=D(0), fees=D(0), last_slot=None, next_run=None,
                    alerts="on", created_at=now)


def alert(fills, *, count: int = 1) -> str:
    last = fills[-count:]
    amount = sum((f.fill.amount for f in last), D(0))
    cost = sum((f.fill.cost for f in last), D(0))
    fee = sum((f.fill.fee for f in last), D(0))
    figures = figures_of(budget=D(1000), quote="USDT", spent=D(0), received=D(0), reserved=D(0),
                         pnl=compute(fills, "USDT"), futures=True)
    return fill_text(strategy(), side=last[-1].fill.side, amount=amount, base="BTC", price=cost / amount,
                     quote="USDT", cost=cost, fee=fee, fee_currency="USDT", figures=figures, partial=False,
                     futures=effect_of_last(fills, "USDT", count=count))


def test_a_flip_says_what_it_closed_and_what_it_opened():
    text = alert([fill("buy", "0.01", "20000", "0.1"), fill("sell", "0.03", "21000", "0.315")])
    lines = text.splitlines()
    assert lines[1] == ("Flipped to short: closed long 0.01 BTC and opened short 0.02 BTC at 21,000.00 USDT "
                        "(notional 630.00 USDT, fee 0.32 USDT)")
    assert lines[2] == "Position: short 0.02 BTC, entry 21,000.00 USDT, 1x"
    assert lines[3] == "Realised P&amp;L net of fees: +9.69 USDT on this fill, +9.59 USDT in total"
    assert "Sold" not in text


def test_a_partial_close_reduces_the_position_and_keeps_its_entry():
    text = alert([fill("sell", "0.03", "20000", "0.3"), fill("buy", "0.01", "18000", "0.09")])
    assert "Reduced short 0.01 BTC at 18,000.00 USDT (notional 180.00 USDT, fee 0.09 USDT)" in text
    assert "Position: short 0.02 BTC, entry 20,000.00 USDT, 1x" in text
    assert "+19.91 USDT on this fill, +19.61 USDT in total" in text


def test_an_order_filled_in_two_parts_is_one_action():
    text = alert([fill("buy", "0.01", "20000"), fill("buy", "0.01", "20000"), fill("buy", "0.02", "22000")],
                 count=2)
    assert "Added to long 0.03 BTC at 21,333.33 USDT (notional 640.00 USDT, fee 0.00 USDT)" in text
    assert "Position: long 0.04 BTC, entry 21,000.00 USDT, 1x" in text


def test_the_position_view_values_the_position_at_the_mark():
    pnl = compute([fill("sell", "0.02", "20000"), fill("sell", "0.01", "23000")], "USDT")
    view = position_of(pnl.assets, FUT, "USDT", D("20500"))
    assert view is not None
    assert (view.side, view.size, view.entry, view.leverage) == ("short", D("-0.03"), D(21000), 1)
    assert (view.notional, view.unrealised) == (D(615), D(15))  # a short gains as the mark falls below entry
    assert position_of(pnl.assets, FUT, "USDT", None).unrealised is None  # no mark: unknown, never a made-up zero
    flat = compute([fill("buy", "0.01", "20000"), fill("sell", "0.01", "21000")], "USDT")
    assert position_of(flat.assets, FUT, "USDT", D(1)) is None


async def test_a_futures_grid_that_sells_one_of_two_levels_reduces_its_long(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binanceusdm"]
    book.add_key("grid-reduce", "secret", balances={"USDT": "1000"})
    book.set_price(FUT, "52000")
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(41, "binanceusdm", "grid-reduce", "secret")
        strategy_id = await world.allocate(41, "binanceusdm", "grid", "300", "BTC/USDT", low="45000", high="55000",
                                           levels="3")
        await world.engine.settle()
        book.set_price(FUT, "44990")  # both buys fill: a long of two levels
        await world.engine.poll_once()
        await world.engine.settle()

        async def sells_armed() -> bool:
            await world.engine.run_strategy(strategy_id)
            return sum(o.side == "sell" for o in book.open_orders("grid-reduce")) == 2

        await wait_for(sells_armed)
        book.set_price(FUT, "50000")  # the lower sell fills: half the long is closed
        await world.engine.poll_once()
        await world.engine.settle()
        texts = [row["text"] for row in await world.alerts("fill")]
        trades = book.trades("grid-reduce", FUT)
        assert [t.side for t in trades] == ["buy", "buy", "sell"]
        [position] = [p for p in book.positions("grid-reduce") if p.symbol == FUT]
        assert position.amount == trades[0].amount + trades[1].amount - trades[2].amount > 0
        market = book.market(FUT)  # amounts to its step, prices to its tick
        first, second, sale = (f"{formatting.amount(t.amount, 'BTC', market.amount_step)} at "
                               f"{formatting.price(t.price, 'USDT', market.tick_size)}" for t in trades)
        assert texts[0].splitlines()[1].startswith(f"Opened long {first}"), texts[0]
        assert texts[1].splitlines()[1].startswith(f"Added to long {second}"), texts[1]
        reduced = texts[2].splitlines()
        assert reduced[1].startswith(f"Reduced long {sale}") and trades[2].price == 50000, texts[2]
        assert reduced[2] == (f"Position: long {formatting.amount(position.amount, 'BTC', market.amount_step)}, "
                              f"entry {formatting.price(position.entry_price, 'USDT', market.tick_size)}, 1x")
        booked = trades[2].realized_pnl - trades[2].fee  # what the venue booked to the wallet for this sale
        assert reduced[3].startswith(f"Realised P&amp;L net of fees: {booked:+,.2f} USDT on this fill"), texts[2]
    finally:
        await world.close()


def test_an_order_a_stop_settles_later_names_what_it_did_to_the_position_not_bought_or_sold():
    """`resolved_text` (an order /panic or /stop could not confirm, settled later) speaks of the position on
    futures, as fill alerts do; spot keeps "bought/sold"."""
    now = datetime.now(UTC)
    order = Order(id=3, strategy_id=7, account_id=1, client_order_id="c3", tag="grid:1", symbol=FUT, side="sell",
                  type="limit", amount=D("0.003"), price=D("21000"), cost=None, reserved=D(0), status="closed",
                  exchange_order_id="9", filled=D("0.003"), filled_cost=D("63"), fee=D(0), error=None,
                  created_at=now)
    text = resolved_text(strategy(), order, "paused by /panic", held_before=D("0.003"))
    assert "It had filled before it could be cancelled: closed long 0.003 BTC for 63.00 USDT." in text, text
    assert "sold" not in text, text
    opened = resolved_text(strategy(), order, "paused by /panic", held_before=D(0))
    assert "opened short 0.003 BTC" in opened, opened
    spot = replace(order, symbol="BTC/USDT")
    assert "sold 0.003 BTC for 63.00 USDT" in resolved_text(strategy(), spot, "paused by /panic", held_before=D(0))


async def test_an_unconfirmed_futures_buy_settled_after_a_pause_is_alerted_as_the_long_it_opened(
    fake_exchanges, tmp_path
):
    """The real engine on the fake USD-M: a DCA's market buy whose answer is lost, then /pause: once the order is
    found filled, its alert says "opened long", not "bought" (a position, as the fill alert would)."""
    book = fake_exchanges.books["binanceusdm"]
    book.set_price(FUT, "50000")
    book.add_key("late-fut", "secret", balances={"USDT": "1000"})
    book.hang_seconds = 2.0
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, timeout_ms=600, unknown_grace_seconds=4.0)
    try:
        await world.connect(23, "binanceusdm", "late-fut", "secret")
        book.inject("timeout", path="/fapi/v1/order", method="POST")
        strategy_id = await world.allocate(23, "binanceusdm", "dca", "200", "BTC/USDT", every="1d", amount="100")
        await world.engine.settle()
        assert [r["status"] for r in await world.orders()] == ["unknown"]
        assert (await world.service.pause(23, strategy_id)).unconfirmed == 1

        async def resolved() -> bool:
            return bool(await world.alerts("info"))

        await wait_for(resolved, timeout=15)
        [alert] = await world.alerts("info")
        [position] = [p for p in book.positions("late-fut") if p.amount]
        assert f"opened long {formatting.amount(position.amount, 'BTC')}" in alert["text"], alert["text"]
        assert "bought" not in alert["text"], alert["text"]
    finally:
        await world.close()

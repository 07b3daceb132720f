"""/settings end to end: silent fill alerts carry disable_notification, off sends none, pauses always go out;
the daily summary is queued once per day at the chosen hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.chat_helpers import USER, connect_with_key
from tests.test_chat_strategies import allocate_one_line


async def set_mode(s, strategy_id: int, mode: str) -> None:
    await s.send(USER, "/settings")
    menu = await s.next_reply(USER, contains="Settings")
    await s.press(USER, menu, f"#{strategy_id} {mode}")
    await s.next_reply(USER, contains=f"#{strategy_id}")


def fills(s) -> list:
    return [m for m in s.tg.sent if m.chat_id == USER and "Bought" in (m.text or "")]


async def test_silent_alerts_are_sent_without_sound_and_off_sends_none_but_pauses_still_go_out(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    await connect_with_key(strata, fake_exchanges, "binance")
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1m amount=10")
    await strata.next_reply(USER, contains="Bought", timeout=15)
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)

    await set_mode(strata, strategy.id, "silent")
    assert (await strata.runtime.store.strategies.get(strategy.id)).alerts == "silent"
    before = len(fills(strata))
    await _run_next_slot(strata, strategy.id, minutes=1)
    silent = await strata.next_reply(USER, contains="Bought", timeout=15)
    assert silent.disable_notification is True
    assert len(fills(strata)) == before + 1

    await set_mode(strata, strategy.id, "off")
    await _run_next_slot(strata, strategy.id, minutes=2)
    book.inject("revoked", count=50)  # the next private call fails with -2015: the account pauses, loudly
    await _run_next_slot(strata, strategy.id, minutes=3)
    pause = await strata.next_reply(USER, contains="rejected", timeout=20)
    assert pause.disable_notification is False
    assert len(fills(strata)) == before + 1, "no fill alert while alerts are off"
    orders = await strata.runtime.store.orders.fills_for_strategy(strategy.id)
    assert len(orders) == 3, "the silent and the unannounced buys both happened"


async def _run_next_slot(s, strategy_id: int, *, minutes: int) -> None:
    """Move the engine's clock `minutes` ahead (DCA every=1m owes a slot each minute) and run the strategy."""
    offset = timedelta(minutes=minutes, seconds=1)
    s.runtime.engine.ctx.clock = lambda: datetime.now(UTC) + offset
    await s.runtime.engine.run_strategy(strategy_id)


async def test_daily_summary_is_queued_once_at_the_chosen_hour(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_with_key(strata, fake_exchanges, "binance")
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=10")
    await strata.send(USER, "/settings")
    menu = await strata.next_reply(USER, contains="Daily summary")
    await strata.press(USER, menu, "Daily summary: turn on")
    await strata.next_reply(USER, contains="on at 08:00 UTC")
    summary = strata.runtime.summary
    summary._clock = lambda: datetime(2026, 11, 25, 7, 0, 5, tzinfo=UTC)
    assert await summary.run_due() == 0, "not before the chosen hour"
    summary._clock = lambda: datetime(2026, 11, 25, 8, 0, 5, tzinfo=UTC)
    assert await summary.run_due() == 1
    assert await summary.run_due() == 0, "once a day"
    text = await strata.next_reply(USER, contains="Daily summary", timeout=10)
    assert "DCA" in text.text and "realised" in text.text


async def test_daily_summary_shows_invested_returned_and_pnl_never_a_negative_used(strata, fake_exchanges):
    # Bought at 50,000 and sold at 55,000: more came back than went in, which a "used of budget" line shows as
    # a negative amount. The summary says what went in, what came back and the P&L, from the venue's trades.
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance")
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=20")
    await strata.next_reply(USER, contains="Bought", timeout=15)
    book.set_price("BTC/USDT", "55000")
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)
    await strata.send(USER, f"/stop {strategy.id}")
    question = await strata.next_reply(USER, contains="Keep what it bought")
    await strata.press(USER, question, "Stop and sell")
    await strata.next_reply(USER, contains="Realised", timeout=15)
    await strata.send(USER, "/settings")
    menu = await strata.next_reply(USER, contains="Daily summary")
    await strata.press(USER, menu, "Daily summary: turn on")
    await strata.next_reply(USER, contains="on at 08:00 UTC")
    strata.runtime.summary._clock = lambda: datetime(2026, 11, 25, 8, 0, 5, tzinfo=UTC)

    assert await strata.runtime.summary.run_due() == 1
    text = (await strata.next_reply(USER, contains="Daily summary", timeout=10)).plain_text

    trades = book.trades(api_key, "BTC/USDT")
    buys = [t for t in trades if t.side == "buy"]
    sells = [t for t in trades if t.side == "sell"]
    invested = sum(t.cost for t in buys) + sum(t.fee for t in buys if t.fee_currency == "USDT")
    returned = sum(t.cost for t in sells) - sum(t.fee for t in sells if t.fee_currency == "USDT")
    assert returned > invested
    line = next(row for row in text.splitlines() if f"#{strategy.id} " in row)
    assert "used" not in line and "-" not in line.split(":", 1)[1], line
    assert f"invested {invested.quantize(Decimal('0.01'))}" in line
    assert f"returned {returned.quantize(Decimal('0.01'))}" in line
    assert "budget 100.00 USDT" in line and "realised +" in line

"""Money figures of a Binance Futures strategy, end to end: a trend that goes long → short → flat reports the
realised P&L the fake USD-M venue booked to the wallet (wallet change = realised P&L net of fees) in every fill
alert, in /status, in the /stop summary and in the daily summary — real PTB against the fake Telegram, real
ccxt against the fake Binance USD-M."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.chat_helpers import USER, connect_with_key
from tests.test_chat_strategies import allocate_one_line

SYMBOL = "BTC/USDT:USDT"
DAY = 86_400_000
CENT = Decimal("0.01")


def script_candles(book, start: int, step: int, last: int) -> None:
    """30 closed daily candles moving by `step` from `start`, then today's open candle at `last`."""
    today = int(datetime.now(UTC).timestamp() * 1000) // DAY * DAY
    rows = [(Decimal(today - (30 - i) * DAY), *(Decimal(start + i * step),) * 4, Decimal(10)) for i in range(30)]
    rows.append((Decimal(today), *(Decimal(last),) * 4, Decimal(1)))
    book.load_candles(SYMBOL, "1d", rows)


def figure(text: str, label: str) -> Decimal:
    """The signed money figure that follows `label` as a word in a message ('realised +12.34 USDT' → 12.34; the
    'realised' of 'unrealised' does not count)."""
    found = re.search(r"(?<!\w)" + re.escape(label) + r"\s*([+-]?[\d,]+(?:\.\d+)?)", text, flags=re.IGNORECASE)
    assert found, f"no '{label}' figure in:\n{text}"
    return Decimal(found.group(1).replace(",", ""))


def total_realised(alert: str) -> Decimal:
    """A futures fill alert's strategy-wide realised P&L ('… -30.22 USDT in total')."""
    found = re.search(r"([+-]?[\d,]+(?:\.\d+)?) USDT in total", alert)
    assert found, f"no realised total in:\n{alert}"
    return Decimal(found.group(1).replace(",", ""))


def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT)


def fill_alerts(s) -> list[str]:
    return [m.plain_text for m in s.tg.sent if m.chat_id == USER and " filled" in (m.text or "")]


async def wait_for_fill_alerts(s, count: int, timeout: float = 15.0) -> list[str]:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(alerts := fill_alerts(s)) < count:
        assert asyncio.get_running_loop().time() < deadline, f"{len(alerts)} fill alerts, expected {count}"
        await asyncio.sleep(0.05)
    return alerts


async def test_a_futures_trend_long_short_flat_reports_the_wallets_realised_pnl_everywhere(strata, fake_exchanges):
    book = fake_exchanges.books["binanceusdm"]
    script_candles(book, 40000, 500, 55000)  # rising: fast > slow, go long
    book.set_price(SYMBOL, "55000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binanceusdm", balances={"USDT": Decimal(1000)})
    account = book.keys[api_key]
    wallet_at_start = account.total("USDT")

    def realised_by_venue() -> Decimal:
        return account.total("USDT") - wallet_at_start

    def position():
        return next(p for p in book.positions(api_key) if p.symbol == SYMBOL)

    await allocate_one_line(strata, "/allocate binanceusdm trend 200 BTC/USDT timeframe=1d fast=3 slow=5 entry=now")
    [opened] = await wait_for_fill_alerts(strata, 1)
    assert position().amount > 0
    assert total_realised(opened) == cents(realised_by_venue()), opened  # only the opening fee so far

    # The averages cross down: one order closes the long at a loss, the next opens a short.
    script_candles(book, 60000, -500, 45000)
    book.set_price(SYMBOL, "45000")
    strata.runtime.gateway.market_data.invalidate()
    strata.runtime.engine.ctx.clock = lambda: datetime.now(UTC) + timedelta(days=1)
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)
    deadline = asyncio.get_running_loop().time() + 15
    while position().amount >= 0 or len(fill_alerts(strata)) < 3:
        assert asyncio.get_running_loop().time() < deadline, "the trend did not flip to a short"
        await strata.runtime.engine.run_strategy(strategy.id)
        await asyncio.sleep(0.1)
    closed_long, opened_short = (await wait_for_fill_alerts(strata, 3))[1:]
    assert realised_by_venue() < -20, "the long was closed at a loss"
    assert "flat" in closed_long.lower() and "short" in opened_short.lower()
    assert total_realised(opened_short) == cents(realised_by_venue()), opened_short

    # The short gains as the price falls: realised is still the wallet's, unrealised is the venue's own.
    book.set_price(SYMBOL, "40000")
    strata.runtime.gateway.market_data.invalidate()
    await strata.send(USER, "/status")
    status = (await strata.next_reply(USER, contains="Your strategies")).plain_text
    assert figure(status, "realised") == cents(realised_by_venue()), status
    assert figure(status, "unrealised") == cents(book.unrealized_pnl(position())) > 0, status
    assert re.search(r"position: short 0\.003 BTC at 1x, entry 45,000(\.0+)? USDT", status), status
    assert "average entry" not in status
    margin = abs(position().amount) * position().entry_price  # at leverage 1
    assert figure(status, "margin") == cents(margin) <= 200, status  # the short is not income
    assert figure(status, "left") == cents(200 - margin + realised_by_venue()), status  # nothing rests

    # /stop and close the position: flat on the venue, and the summary reports the wallet's figure.
    await strata.send(USER, f"/stop {strategy.id}")
    question = await strata.next_reply(USER, contains="Keep what it bought")
    await strata.press(USER, question, "Stop and sell")
    summary = (await strata.next_reply(USER, contains="Realised", timeout=15)).plain_text
    assert position().amount == 0
    [close] = [t for t in book.trades(api_key, SYMBOL) if t.side == "buy"][-1:]
    assert f"Closed the short 0.003 BTC position at market (average {close.price:,.1f} USDT)." in summary
    assert "Invested" not in summary
    realised = realised_by_venue()
    assert realised == sum(t.realized_pnl - t.fee for t in book.trades(api_key, SYMBOL))
    assert figure(summary, "Realised P&L net of fees:") == cents(realised), summary
    closing = (await wait_for_fill_alerts(strata, 4))[-1]
    assert total_realised(closing) == cents(realised), closing

    await strata.send(USER, "/settings")
    menu = await strata.next_reply(USER, contains="Daily summary")
    await strata.press(USER, menu, "Daily summary: turn on")
    await strata.next_reply(USER, contains="on at 08:00 UTC")
    daily = strata.runtime.summary
    daily._clock = lambda: datetime.now(UTC).replace(hour=23, minute=0, second=5)
    assert await daily.run_due() == 1
    text = (await strata.next_reply(USER, contains="Daily summary", timeout=10)).plain_text
    assert figure(text, "realised") == cents(realised), text

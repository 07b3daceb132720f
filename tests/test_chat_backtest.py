"""/backtest end to end — real PTB against the fake Telegram, real ccxt paging the fake Binance's public klines —
with the caption's figures recomputed here from the fake venue's own candles and fee, never from the bot."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

import pytest

from tests.chat_helpers import USER, connect_account

CENT = Decimal("0.01")


def photo(s, timeout: float = 30.0):
    return s.tg.wait_for_message(USER, timeout=timeout, predicate=lambda m: m.method == "sendPhoto")


def figure(caption: str, pattern: str) -> Decimal:
    found = re.search(pattern, caption)
    assert found, f"no {pattern!r} in:\n{caption}"
    return Decimal(found.group(1).replace(",", "").replace("+", ""))


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def klines_requests(fake_exchanges) -> list:
    return [r for r in fake_exchanges.books["binance"].requests if r.path.endswith("/klines")]


async def test_dca_backtest_answers_a_chart_whose_figures_match_the_venues_candles(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    market = book.market("BTC/USDT")
    # The example. The fake Binance holds about 24 days of hours (recorded history, then the replayed
    # minutes): the replay covers what the venue gives, and the caption says the range is shorter than asked.
    await strata.send(USER, "/backtest dca 1000 BTC/USDT every=1d amount=50 days=90")
    sent = await photo(strata)
    caption = sent.plain_text
    assert "fewer days than the 90 asked" in caption
    assert sent.buttons and sent.button_texts == ["Start this strategy"]
    assert "Backtest: DCA on BTC/USDT" in caption and "Binance" in caption
    # The range the bot replayed, from its caption; the candles of that range from the fake venue itself.
    begin_text, end_text = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d) → (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", caption).groups()
    begin = int(datetime.strptime(begin_text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp() * 1000)
    end = int(datetime.strptime(end_text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp() * 1000)
    hour = 3_600_000
    candles = [c for c in book.candles("BTC/USDT", "1h") if begin <= c.timestamp_ms and c.timestamp_ms + hour <= end]
    assert len(candles) >= 20 * 24 - 1 and f"{len(candles):,} 1h candles" in caption

    # DCA: 50 USDT at market at the close of every 24th candle from the first, fee at the venue's taker rate
    # in the quote, to the venue's fee decimals; the budget's last buy is what is left once the fee is reserved.
    fee_rate = market.taker_fee
    cash, held, fees, buys = Decimal(1000), Decimal(0), Decimal(0), 0
    values = []
    for index, candle in enumerate(candles):
        if index % 24 == 0 and buys < 20:
            spend = min(Decimal(50), floor_to(cash / (1 + fee_rate), Decimal("1e-8")))
            amount = floor_to(spend / candle.close, market.amount_step)
            cost = amount * candle.close
            fee = (cost * fee_rate).quantize(Decimal(1).scaleb(-market.fee_decimals), rounding=ROUND_HALF_UP)
            cash -= cost + fee
            held += amount
            fees += fee
            buys += 1
        values.append(cash + held * candle.close)
    pnl = values[-1] - 1000
    peak, drawdown = Decimal(0), Decimal(0)
    for value in values:
        peak = max(peak, value)
        drawdown = max(drawdown, (peak - value) / peak)
    first = candles[0].close
    hold_amount = floor_to(Decimal(1000) / (first * (1 + fee_rate)), market.amount_step)
    hold_pnl = hold_amount * candles[-1].close - hold_amount * first * (1 + fee_rate)

    assert figure(caption, r"P&L net of fees: ([+-][\d,.]+) USDT") == pnl.quantize(CENT)
    assert figure(caption, r"\(([+-][\d.]+)%\)\nFees") == (pnl / 10).quantize(CENT)
    assert figure(caption, r"Fees: ([\d,.]+) USDT") == fees.quantize(CENT)
    assert figure(caption, r"Trades: (\d+)") == buys == 20
    assert figure(caption, r"Max drawdown: ([\d.]+)%") == (drawdown * 100).quantize(CENT)
    assert figure(caption, r"Buy & hold: ([+-][\d,.]+) USDT") == hold_pnl.quantize(CENT)
    assert len(sent.caption) <= 1024

    # A second run over the same range reads the candles kept on disk: no more klines pages than one new one.
    pages = len(klines_requests(fake_exchanges))
    assert pages >= 1
    await strata.send(USER, "/backtest dca 1000 BTC/USDT every=1d amount=50 days=90")
    await photo(strata)
    assert len(klines_requests(fake_exchanges)) - pages <= 1


async def test_kraken_backtest_says_when_the_venue_gives_fewer_days_than_asked(strata, fake_exchanges):
    await strata.send(USER, "/backtest dca 500 BTC/USD every=1d amount=20 days=60 venue=kraken")
    sent = await photo(strata)
    assert "(Kraken)" in sent.plain_text
    assert "fewer days than the 60 asked (Kraken serves only its latest 720 candles)" in sent.plain_text


async def test_start_this_strategy_opens_the_allocation_summary_or_asks_to_connect(strata, fake_exchanges):
    await strata.send(USER, "/backtest dca 500 BTC/USDT every=1d amount=25 days=5")
    sent = await photo(strata)
    await strata.press(USER, sent, "Start this strategy")
    answer = await strata.next_reply(USER, contains="/connect")
    assert "connect your Binance" in answer.text
    await connect_account(strata, fake_exchanges, "binance")
    await strata.press(USER, sent, "Start this strategy")
    summary = await strata.next_reply(USER, contains="Allocation summary")
    assert "500" in summary.text and "BTC/USDT" in summary.text and "Confirm allocation" in summary.button_texts
    assert "every" in summary.text and "25" in summary.text
    await strata.press(USER, summary, "Confirm allocation")
    running = await strata.next_reply(USER, contains="is running")
    assert "DCA" in running.text

    # With a second account of that venue (a Paper one on its prices), the user picks which runs it.
    await strata.send(USER, "/connect paper binance")
    await strata.next_reply(USER, contains="Paper")
    await strata.press(USER, sent, "Start this strategy")
    choice = await strata.next_reply(USER, contains="Which account")
    assert len(choice.buttons) == 2


async def test_guided_backtest_from_strategies(strata, fake_exchanges):
    await strata.send(USER, "/strategies")
    listing = await strata.next_reply(USER, contains="DCA")
    await strata.press(USER, listing, "Backtest a strategy")
    menu = await strata.next_reply(USER, contains="Pick a strategy")
    await strata.press(USER, menu, "DCA")
    offer = await strata.next_reply(USER, contains="Run this example")
    assert "/backtest dca" in offer.text
    await strata.press(USER, offer, "Run this example")
    sent = await photo(strata)
    assert "Backtest: DCA on BTC/USDT" in sent.caption


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/backtest dca 1000 NOPE/USDT", "not traded on Binance"),
        ("/backtest moon 1000 BTC/USDT", "Unknown strategy"),
        ("/backtest dca 1000 BNB/USDT", "has no 1h candles of BNB/USDT"),
        ("/backtest dca 1000 BTC/USDT days=0", "days must be from 1 to 365"),
        ("/backtest dca 1000 BTC/USDT days=10000", "days must be from 1 to 365"),
        ("/backtest dca 1000 BTC/USDT days=soon", "days must be a whole number"),
        ("/backtest dca 1000 BTC/USDT venue=ftx", "venue must be one of"),
        ("/backtest dca 5 BTC/USDT", "below BTC/USDT's minimum order"),
        ("/backtest dca 1000 BTC/USDT every=1d amount=5", "below BTC/USDT's minimum order"),
        ("/backtest grid 1000 BTC/USDT low=5", "high"),
        ("/backtest dca", "Usage: /backtest"),
    ],
)
async def test_bad_input_gets_a_short_clear_message(strata, fake_exchanges, line, expected):
    await strata.send(USER, line)
    answer = await strata.next_reply(USER, contains="❌")
    assert expected in answer.text and len(answer.text) < 400, answer.text

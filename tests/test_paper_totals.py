"""Paper money is never added to real money: /profit and the daily summary total a Paper account's strategies
apart from the real ones of the same currency, marked Paper. Before, one "Total USDT" line summed both.

Real PTB against the fake Telegram Bot API, real ccxt against the fake Binance."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from bot.exchanges.venues.paper import MARK
from tests.chat_helpers import USER, connect_with_key
from tests.test_chat_strategies import allocate_one_line


def total_lines(text: str) -> list[str]:
    """The summary's and /profit's total lines, one per currency (and Paper apart)."""
    return [line for line in text.splitlines() if line.startswith("Total")]


async def test_profit_totals_paper_and_real_money_apart(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_with_key(strata, fake_exchanges, "binance")
    await strata.send(USER, "/connect paper binance")
    await strata.next_reply(USER, contains="opened")
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=20")
    await strata.next_reply(USER, contains="Bought", timeout=15)
    await allocate_one_line(strata, "/allocate paper dca 300 BTC/USDT every=1d amount=30")
    await strata.next_reply(USER, contains="Bought", timeout=15)

    await strata.send(USER, "/profit")
    report = (await strata.next_reply(USER, contains="Total", timeout=15)).plain_text
    real, paper = total_lines(report)
    assert MARK not in real and re.search(r"of 100\.00 USDT$", real), real
    assert MARK in paper and re.search(r"of 300\.00 USDT$", paper), paper

    await strata.send(USER, "/balance")
    balance = (await strata.next_reply(USER, contains="Total", timeout=15)).plain_text
    [total] = [line for line in balance.splitlines() if line.startswith("Total")]
    real, paper = total.split(";")
    assert MARK not in real and MARK in paper, total

    # The daily summary, due at the next full hour.
    due = (datetime.now(UTC) + timedelta(hours=1)).replace(minute=0, second=5, microsecond=0)
    for line in (f"/settings hour {due.hour}", "/settings summary on"):
        await strata.send(USER, line)
        await strata.next_reply(USER, contains="Settings")
    strata.runtime.engine.ctx.clock = lambda: due
    assert await strata.runtime.summary.run_due() == 1
    summary = (await strata.next_reply(USER, contains="📊", timeout=15)).plain_text
    real, paper = total_lines(summary)
    assert MARK not in real and re.search(r"of 100\.00 USDT$", real), real
    assert MARK in paper and re.search(r"of 300\.00 USDT$", paper), paper

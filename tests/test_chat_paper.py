"""Paper accounts end to end (issue 19, item 2): /connect → Paper → a price source, or `/connect paper binance
5000`; strategies fill on the fake venue's moving public prices; every message about them says Paper; the
figures equal the Paper book's own fills; the fake venue never sees a signed request; /stop sells.

Real PTB against the fake Telegram Bot API, real ccxt (public calls only) against the fake exchanges."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from bot.exchanges.venues.paper import MARK
from tests.chat_helpers import USER
from tests.test_chat_strategies import allocate_one_line

SYMBOL = "BTC/USDT"


def signed_requests(fake_exchanges, venue: str) -> list:
    return [r for r in fake_exchanges.books[venue].requests if r.signature_valid is not None or r.api_key]


async def paper_account(s, user: int = USER):
    [account] = [a for a in await s.runtime.store.accounts.list_for_user(user) if a.venue.startswith("paper")]
    return account


async def wait_for(predicate, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await predicate()):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)
    return result


async def test_guided_paper_account_buys_on_public_prices_and_sends_no_signed_request(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    book.set_price(SYMBOL, "50000")
    await strata.send(USER, "/connect")
    menu = await strata.next_reply(USER, contains="Which exchange")
    await strata.press(USER, menu, "Paper")
    sources = await strata.next_reply(USER, contains="Which exchange's prices")
    await strata.press(USER, sources, "Binance Spot")
    opened = await strata.next_reply(USER, contains="opened")
    assert MARK in opened.plain_text and "10,000.00 USDT" in opened.plain_text, opened.plain_text
    account = await paper_account(strata)
    assert account.label == "paper"

    await allocate_one_line(strata, "/allocate paper dca 100 BTC/USDT every=1d amount=20")
    alert = await strata.next_reply(USER, contains="Bought", timeout=15)
    assert MARK in alert.plain_text, alert.plain_text
    [trade] = await strata.runtime.store.paper.trades(account.id)
    assert trade.side == "buy" and trade.cost <= Decimal(20)
    assert trade.price == book.ticker(SYMBOL).ask  # a market buy pays the ask, with the venue's taker fee
    assert trade.fee == (trade.cost * Decimal("0.001")).quantize(Decimal("1e-8"))
    balances = await strata.runtime.store.paper.balances(account.id)
    assert balances["BTC"][0] == trade.amount
    assert balances["USDT"][0] == Decimal(10_000) - trade.cost - trade.fee
    assert any("ticker" in r.path for r in book.requests)  # it priced on the venue's public data…
    assert signed_requests(fake_exchanges, "binance") == []  # …and never signed a request

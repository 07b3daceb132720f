"""Paper accounts end to end (issue 19, item 2): /connect → Paper → a price source, or `/connect paper binance
5000`; strategies fill on the fake venue's moving public prices; every message about them says Paper; the
figures equal the Paper book's own fills; the fake venue never sees a signed request; /stop sells.

Real PTB against the fake Telegram Bot API, real ccxt (public calls only) against the fake exchanges."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from decimal import Decimal

from bot.exchanges.venues import adapter
from bot.exchanges.venues.paper import MARK
from bot.formatting import money
from handlers.connect import PAPER_BUTTON
from tests.chat_helpers import USER
from tests.test_chat_strategies import allocate_one_line
from tests.test_chat_views import spot_pnl

SYMBOL = "BTC/USDT"
KRAKEN = "BTC/USD"
FEE_QUANTUM = Decimal("1e-8")


def signed_requests(fake_exchanges, venue: str) -> list:
    return [r for r in fake_exchanges.books[venue].requests if r.signature_valid is not None or r.api_key]


async def paper_account(s, user: int = USER, label: str = "paper"):
    [account] = [a for a in await s.runtime.store.accounts.list_for_user(user) if a.label == label]
    return account


def paper_fills(s) -> list[str]:
    """The fill alerts the bot sent about Paper strategies (each one's plain text)."""
    return [m.plain_text for m in s.tg.sent if m.chat_id == USER and MARK in (m.text or "") and ": filled" in m.text]


async def wait_for_paper_fills(s, count: int, timeout: float = 15.0) -> list[str]:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(alerts := paper_fills(s)) < count:
        assert asyncio.get_running_loop().time() < deadline, f"{len(alerts)} fill alerts, expected {count}"
        await asyncio.sleep(0.05)
    return alerts


async def resting(s, account_id: int, count: int, timeout: float = 10.0) -> list:
    """The account's open Paper orders once there are `count` of them."""
    deadline = asyncio.get_running_loop().time() + timeout
    while len(orders := await s.runtime.store.paper.orders(account_id, statuses=("open",))) != count:
        assert asyncio.get_running_loop().time() < deadline, f"{len(orders)} resting Paper orders, expected {count}"
        await asyncio.sleep(0.05)
    return orders


async def ask(s, command: str, contains: str, timeout: float = 15.0):
    await s.send(USER, command)
    return await s.next_reply(USER, contains=contains, timeout=timeout)


def book_balances(trades, funded: Decimal, quote: str, base: str) -> dict[str, Decimal]:
    """A Paper account's balances computed from its fills alone (every fee in the quote)."""
    q = funded - sum((t.cost + t.fee for t in trades if t.side == "buy"), Decimal(0)) + sum(
        (t.cost - t.fee for t in trades if t.side == "sell"), Decimal(0))
    b = sum((t.amount for t in trades if t.side == "buy"), Decimal(0)) - sum(
        (t.amount for t in trades if t.side == "sell"), Decimal(0))
    return {quote: q, base: b}


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
    await strata.press(USER, menu, PAPER_BUTTON)
    sources = await strata.next_reply(USER, contains="Which exchange's prices")
    await strata.press(USER, sources, "Binance Spot")
    opened = await strata.next_reply(USER, contains="opened")
    assert MARK in opened.plain_text and "10,000.00 USDT" in opened.plain_text, opened.plain_text
    assert "/allocate paper dca 100 BTC/USDT every=1d amount=10" in opened.plain_text, opened.plain_text
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


async def test_one_line_paper_accounts_are_funded_in_the_sources_quote_and_labelled_paper_then_paper_2(
    strata, fake_exchanges
):
    opened = await ask(strata, "/connect paper binance 5000", "opened")
    assert MARK in opened.plain_text and "5,000.00 USDT" in opened.plain_text, opened.plain_text
    first = await paper_account(strata)
    assert first.venue == "paper:binance"
    assert await strata.runtime.store.paper.balances(first.id) == {"USDT": (Decimal(5000), Decimal(0))}
    opened = await ask(strata, "/connect paper kraken", "opened")
    assert "paper-2" in opened.plain_text and "10,000.00 USD" in opened.plain_text, opened.plain_text
    second = await paper_account(strata, label="paper-2")
    assert second.venue == "paper:kraken"
    assert await strata.runtime.store.paper.balances(second.id) == {"USD": (Decimal(10_000), Decimal(0))}

    # Mistyped: a short friendly answer, nothing opened.
    for text, expected in [
        ("/connect paper", "Usage: /connect paper"), ("/connect paper nowhere", "Usage: /connect paper"),
        ("/connect paper binance abc", "Usage: /connect paper"), ("/connect paper binance 5 6", "Usage"),
        ("/connect paper binance -5", "more than 0"), ("/connect paper binance 0", "more than 0"),
        ("/connect paper binance 1e12", "at most 10,000,000.00 USDT"), ("/connect paper kraken nan", "Usage"),
    ]:
        answer = await ask(strata, text, "")
        assert expected in answer.plain_text, (text, answer.plain_text)
        assert len(answer.plain_text) < 300 and "Traceback" not in answer.plain_text, answer.plain_text
    assert len(await strata.runtime.store.accounts.list_for_user(USER)) == 2

    # A Paper account has no key: no "New key" button, and /connect replace says why instead of asking for one.
    await strata.send(USER, "/accounts")
    fresh = await strata.next_reply(USER, contains="— updated", timeout=15)
    assert fresh.plain_text.count(MARK) == 2, fresh.plain_text
    assert "10,000.00 USD" in fresh.plain_text and "5,000.00 USDT" in fresh.plain_text, fresh.plain_text
    assert not [b for b in fresh.buttons if "New key" in b["text"]], fresh.buttons
    assert "new key" not in fresh.plain_text, fresh.plain_text
    refusal = await ask(strata, "/connect replace paper-2", "")
    assert "Paper" in refusal.plain_text and "no key" in refusal.plain_text, refusal.plain_text
    assert strata.runtime.intakes.get(USER) is None  # no key is asked for
    strata.tg.press_callback_data(USER, fresh, f"connect:replace:{second.id}")  # a button it no longer has
    refusal = await strata.next_reply(USER, contains="no key")
    assert strata.runtime.intakes.get(USER) is None
    balance = await ask(strata, "/balance", "Balance")
    assert balance.plain_text.count(MARK) == 4, balance.plain_text  # two accounts, and their two totals
    for venue in ("binance", "kraken"):
        assert signed_requests(fake_exchanges, venue) == []


def about_paper(text: str, labels: tuple[str, ...]) -> bool:
    """Whether a message names a strategy (`#1`) or one of the Paper account's labels."""
    return bool(re.search(r"#\d", text)) or any(re.search(rf"\b{re.escape(label)}\b", text) for label in labels)


async def test_every_message_about_a_paper_account_or_strategy_says_paper(strata, fake_exchanges):
    book = fake_exchanges.books["kraken"]
    book.set_price(KRAKEN, "65000")
    await ask(strata, "/connect paper kraken 5000", "opened")
    account = await paper_account(strata)
    await allocate_one_line(strata, f"/allocate paper grid 500 {KRAKEN} low=60000 high=65000 levels=3 name=ladder")
    # The DCA through the guided steps.
    accounts = await ask(strata, "/allocate", "Which account")
    await strata.press(USER, accounts, 0)
    await strata.press(USER, await strata.next_reply(USER, contains="Which strategy"), "DCA")
    await strata.send(USER, KRAKEN)
    await strata.next_reply(USER, contains="What budget")
    await strata.send(USER, "100")
    await strata.send(USER, "every=1d amount=20")
    summary = await strata.next_reply(USER, contains="Allocation summary")
    await strata.press(USER, summary, "Confirm allocation")
    await strata.next_reply(USER, contains="is running")
    await wait_for_paper_fills(strata, 1)
    await resting(strata, account.id, 2)
    book.set_price(KRAKEN, "62000")
    await wait_for_paper_fills(strata, 2)
    book.set_price(KRAKEN, "65000")
    await wait_for_paper_fills(strata, 3)
    grid, dca = await strata.runtime.store.strategies.list_for_user(USER)
    for command, answer in [
        ("/status", "Your strategies"), (f"/status {grid.id}", "parameters"), ("/balance", "Balance"),
        ("/trades", "Trades"), ("/profit", "Profit"), ("/accounts", "— updated"), (f"/pause {grid.id}", "paused"),
        (f"/resume {grid.id}", "running again"), ("/pause", "Which strategy"), ("/stop", "Which strategy"),
        ("/accounts rename paper sim", "Renamed"), ("/accounts rename sim paper", "Renamed"),
        ("/connect replace paper", "no key"),
    ]:
        await ask(strata, command, answer)
    change = await ask(strata, f"/edit {grid.id} budget=600", "Confirm")
    await strata.press(USER, change, "Confirm change")
    await strata.next_reply(USER, contains="changed")
    question = await ask(strata, f"/stop {dca.id}", "Keep what it bought")
    await strata.press(USER, question, "Stop and sell")
    await strata.next_reply(USER, contains="Realised", timeout=15)
    panic = await ask(strata, "/panic", "Pause")
    await strata.press(USER, panic, "Pause and cancel")
    paused = await strata.next_reply(USER, contains="Paused", timeout=15)
    assert f"It trades on a {MARK} account" in paused.plain_text, paused.plain_text
    await strata.press(USER, paused, "Resume all")
    await strata.next_reply(USER, contains="Resumed", timeout=15)
    for line in ("/settings summary on", "/settings hour 9"):
        await ask(strata, line, "Settings")
    engine = strata.runtime.engine
    clock, engine.ctx.clock = engine.ctx.clock, lambda: clock().replace(hour=9, minute=0, second=5) + timedelta(days=1)
    assert await strata.runtime.summary.run_due() == 1
    await strata.next_reply(USER, contains="📊")
    engine.ctx.clock = clock
    picker = await ask(strata, "/disconnect", "Which account")
    await strata.press(USER, picker, 0)
    confirm = await strata.next_reply(USER, contains="Disconnect")
    await strata.press(USER, confirm, "Confirm disconnect")
    await strata.next_reply(USER, contains="stopped; its budget is released", timeout=20)

    messages = [m for m in strata.tg.outbox if m.chat_id == USER and m.plain_text]
    unmarked = [
        m.plain_text for m in messages
        if about_paper(m.plain_text, ("paper", "sim"))
        and MARK not in m.plain_text + " ".join(b["text"] for b in m.buttons)
    ]
    assert unmarked == [], "\n----\n".join(unmarked)
    assert len(messages) > 30
    assert signed_requests(fake_exchanges, "kraken") == []


async def test_a_paper_grid_rests_fills_at_its_price_as_maker_and_its_figures_equal_the_books_fills(
    strata, fake_exchanges
):
    book = fake_exchanges.books["kraken"]
    book.set_price(KRAKEN, "65000")
    await ask(strata, "/connect paper kraken 5000", "opened")
    account = await paper_account(strata)
    await allocate_one_line(strata, f"/allocate paper grid 500 {KRAKEN} low=60000 high=65000 levels=3")
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)
    buys = await resting(strata, account.id, 2)
    assert sorted(o.price for o in buys) == [Decimal(60000), Decimal(62500)]
    held = sum(o.reserved for o in buys)  # a resting buy holds its value and its maker fee
    assert await strata.runtime.store.paper.balances(account.id) == {"USD": (Decimal(5000) - held, held)}
    maker = adapter("kraken").entry_maker_fee  # Kraken Pro's entry tier, not AssetPairs' 0.16 %

    # The price falls through 62,500: that buy fills at its own price, as a maker, and its sell one level up rests.
    book.set_price(KRAKEN, "62000")
    [bought] = await wait_for_paper_fills(strata, 1)
    [buy] = await strata.runtime.store.paper.trades(account.id)
    assert (buy.side, buy.price, buy.maker) == ("buy", Decimal(62500), True)
    assert buy.fee == (buy.cost * maker).quantize(FEE_QUANTUM) and buy.cost == buy.amount * buy.price
    assert "Bought" in bought and "at 62,500.0 USD" in bought, bought
    sell = next(o for o in await resting(strata, account.id, 2) if o.side == "sell")
    assert (sell.price, sell.amount) == (Decimal(65000), buy.amount)

    # Back up through 65,000: the sell fills at its price, and the 62,500 buy is armed again.
    book.set_price(KRAKEN, "65000")
    sold = (await wait_for_paper_fills(strata, 2))[1]
    assert "Sold" in sold and "at 65,000.0 USD" in sold, sold
    trades = await strata.runtime.store.paper.trades(account.id)
    assert [(t.side, t.price, t.maker) for t in trades] == [
        ("buy", Decimal(62500), True), ("sell", Decimal(65000), True)]
    assert trades[1].fee == (trades[1].cost * maker).quantize(FEE_QUANTUM)
    rearmed = await resting(strata, account.id, 2)
    assert sorted((o.side, o.price) for o in rearmed) == [("buy", Decimal(60000)), ("buy", Decimal(62500))]

    # /status <id> says what the Paper book's fills say, valued at the venue's price now.
    realised, unrealised, fees = spot_pnl(trades, Decimal(65000))
    assert realised > 0
    detail = (await ask(strata, f"/status {strategy.id}", "parameters")).plain_text
    assert MARK in detail
    assert f"realised {money(realised, 'USD', signed=True)}" in detail, detail
    assert f"unrealised {money(unrealised, 'USD', signed=True)}" in detail, detail
    assert f"fees {money(fees, 'USD')}" in detail, detail
    balances = await strata.runtime.store.paper.balances(account.id)
    computed = book_balances(trades, Decimal(5000), "USD", "BTC")
    assert balances["BTC"] == (computed["BTC"], Decimal(0))
    assert sum(balances["USD"]) == computed["USD"]

    # /panic cancels the Paper orders and gives back what they held.
    panic = await ask(strata, "/panic", "Pause")
    await strata.press(USER, panic, "Pause and cancel")
    paused = await strata.next_reply(USER, contains="Paused", timeout=15)
    assert "cancelled 2 open order(s)" in paused.plain_text and MARK in paused.plain_text, paused.plain_text
    assert await strata.runtime.store.paper.orders(account.id, statuses=("open",)) == []
    assert await strata.runtime.store.paper.balances(account.id) == {
        "USD": (computed["USD"], Decimal(0)), "BTC": (Decimal(0), Decimal(0))}
    assert signed_requests(fake_exchanges, "kraken") == []


async def test_a_resting_paper_order_fills_once_after_a_restart(make_strata, fake_exchanges):
    book = fake_exchanges.books["kraken"]
    book.set_price(KRAKEN, "65000")
    async with make_strata() as strata:
        await ask(strata, "/connect paper kraken 5000", "opened")
        account = await paper_account(strata)
        await allocate_one_line(strata, f"/allocate paper grid 500 {KRAKEN} low=60000 high=65000 levels=3")
        await resting(strata, account.id, 2)
    book.set_price(KRAKEN, "62000")  # while the bot is down the price crosses the 62,500 buy

    async with make_strata() as strata:
        [bought] = await wait_for_paper_fills(strata, 1)
        assert "Bought" in bought and "at 62,500.0 USD" in bought, bought
        await resting(strata, account.id, 2)  # the 60,000 buy and the new sell at 65,000
        await asyncio.sleep(2)  # more polls: nothing fills or alerts twice
        trades = await strata.runtime.store.paper.trades(account.id)
        assert [(t.side, t.price) for t in trades] == [("buy", Decimal(62500))]
        assert len(paper_fills(strata)) == 1
        [strategy] = await strata.runtime.store.strategies.list_for_user(USER)
        detail = (await ask(strata, f"/status {strategy.id}", "parameters")).plain_text
        assert "invested" in detail and MARK in detail
    assert signed_requests(fake_exchanges, "kraken") == []


async def test_a_paper_dca_stopped_with_sell_sells_at_the_bid_then_disconnect_deletes_the_book(
    strata, fake_exchanges
):
    book = fake_exchanges.books["binance"]
    book.set_price(SYMBOL, "50000")
    await ask(strata, "/connect paper binance", "opened")
    account = await paper_account(strata)
    await allocate_one_line(strata, f"/allocate paper dca 100 {SYMBOL} every=1d amount=20")
    await wait_for_paper_fills(strata, 1)
    book.set_price(SYMBOL, "55000")
    strata.runtime.gateway.market_data.invalidate()
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)
    question = await ask(strata, f"/stop {strategy.id}", "Keep what it bought")
    await strata.press(USER, question, "Stop and sell")
    summary = (await strata.next_reply(USER, contains="Realised", timeout=15)).plain_text
    buy, sell = await strata.runtime.store.paper.trades(account.id)
    assert (sell.side, sell.price, sell.amount, sell.maker) == ("sell", book.ticker(SYMBOL).bid, buy.amount, False)
    assert sell.fee == (sell.cost * Decimal("0.001")).quantize(FEE_QUANTUM)  # Binance Spot's taker fee
    assert MARK in summary and Decimal(re.search(r"Sold ([\d.]+) BTC at market", summary)[1]) == buy.amount
    invested, returned = buy.cost + buy.fee, sell.cost - sell.fee
    assert f"Invested {money(invested, 'USDT')}, returned {money(returned, 'USDT')}" in summary, summary
    # Everything is back in the quote, exactly as the book's two fills say.
    usdt = Decimal(10_000) - invested + returned
    assert await strata.runtime.store.paper.balances(account.id) == {
        "USDT": (usdt, Decimal(0)), "BTC": (Decimal(0), Decimal(0))}

    confirm = await ask(strata, "/disconnect paper", "Disconnect")
    assert MARK in confirm.plain_text and "key" not in confirm.plain_text, confirm.plain_text
    await strata.press(USER, confirm, "Confirm disconnect")
    done = await strata.next_reply(USER, contains="removed", timeout=15)
    assert MARK in done.plain_text, done.plain_text
    assert await strata.runtime.store.accounts.list_for_user(USER) == []
    assert await strata.runtime.store.paper.balances(account.id) == {}
    assert await strata.runtime.store.paper.orders(account.id) == []
    assert await strata.runtime.store.paper.trades(account.id) == []
    assert signed_requests(fake_exchanges, "binance") == []


async def test_two_paper_accounts_on_one_market_share_its_public_requests(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    book.set_price(SYMBOL, "50000")
    for label in ("paper", "paper-2"):
        await ask(strata, "/connect paper binance", "opened")
        await allocate_one_line(strata, f"/allocate {label} grid 300 {SYMBOL} low=45000 high=50000 levels=3")
        await resting(strata, (await paper_account(strata, label=label)).id, 2)
    accounts = await strata.runtime.store.accounts.list_for_user(USER)
    gateway, engine = strata.runtime.gateway, strata.runtime.engine

    def tickers() -> int:
        return sum(1 for r in book.requests if "ticker" in r.path.lower())

    # One round: every Paper account's orders read (as the fill poller does), the prices fetched once.
    gateway.market_data.invalidate()
    before = tickers()
    creds = [await engine.ctx.credentials(a) for a in accounts]
    reads = await asyncio.gather(*(gateway.fetch_open_orders(a.venue, c) for a, c in zip(accounts, creds, strict=True)))
    assert [len(r) for r in reads] == [2, 2]
    assert tickers() - before == 1
    # And while the bot runs: each account is polled every 0.5 s, the shared price at most once a second.
    before, started = tickers(), asyncio.get_running_loop().time()
    await asyncio.sleep(3)
    elapsed = asyncio.get_running_loop().time() - started
    assert tickers() - before <= elapsed / 1.0 + 1, book.requests[-10:]
    assert signed_requests(fake_exchanges, "binance") == []


async def test_a_paper_account_refuses_what_a_real_one_refuses_with_the_same_answer(strata, fake_exchanges):
    from tests.chat_helpers import connect_with_key

    book = fake_exchanges.books["binance"]
    book.set_price(SYMBOL, "50000")
    await connect_with_key(strata, fake_exchanges, "binance", balances={"USDT": Decimal(10_000)})
    await ask(strata, "/connect paper binance", "opened")
    for args in (f"dca 100 {SYMBOL} every=1d amount=5", f"dca 20000 {SYMBOL} every=1d amount=20",
                 f"grid 30 {SYMBOL} low=40000 high=60000 levels=9"):
        real = (await ask(strata, f"/allocate binance {args}", "")).plain_text
        answer = (await ask(strata, f"/allocate paper {args}", "")).plain_text
        if "can allocate" in answer:  # a refusal naming the account says it is Paper
            assert f"paper ({MARK})" in answer, answer
        paper = re.sub(r"\bpaper\b", "binance", answer.replace(f" ({MARK})", ""))
        assert "Allocation summary" not in real and paper == real, (args, real, paper)
    assert await strata.runtime.store.strategies.list_for_user(USER) == []


async def test_a_paper_grid_across_the_price_buys_its_upper_levels_coins_at_the_ask_and_rests_their_sells(
    strata, fake_exchanges
):
    book = fake_exchanges.books["kraken"]
    book.set_price(KRAKEN, "65000")
    await ask(strata, "/connect paper kraken 5000", "opened")
    account = await paper_account(strata)
    await allocate_one_line(strata, f"/allocate paper grid 500 {KRAKEN} low=60000 high=70000 levels=5")
    orders = await resting(strata, account.id, 4)
    assert sorted((o.side, o.price) for o in orders) == [
        ("buy", Decimal(60000)), ("buy", Decimal(62500)), ("sell", Decimal(67500)), ("sell", Decimal(70000))]
    # The coins of the two upper levels were bought at start by one market buy: at the ask, Kraken's taker fee.
    [start] = await strata.runtime.store.paper.trades(account.id)
    assert (start.side, start.price, start.maker) == ("buy", Decimal(65000), False)
    assert start.fee == (start.cost * Decimal("0.004")).quantize(FEE_QUANTUM)
    sells = [o for o in orders if o.side == "sell"]
    assert sum(o.amount for o in sells) <= start.amount
    balances = await strata.runtime.store.paper.balances(account.id)
    held_usd = sum(o.reserved for o in orders if o.side == "buy")
    assert balances["USD"] == (Decimal(5000) - start.cost - start.fee - held_usd, held_usd)
    assert balances["BTC"] == (start.amount - sum(o.amount for o in sells), sum(o.amount for o in sells))

    # Up through 67,500: that sell fills at its price as a maker, and its buy one level down is armed.
    book.set_price(KRAKEN, "68000")
    sold = (await wait_for_paper_fills(strata, 2))[1]
    assert "Sold" in sold and "at 67,500.0 USD" in sold, sold
    trades = await strata.runtime.store.paper.trades(account.id)
    assert [(t.side, t.price, t.maker) for t in trades[1:]] == [("sell", Decimal(67500), True)]
    rearmed = await resting(strata, account.id, 4)
    assert ("buy", Decimal(65000)) in {(o.side, o.price) for o in rearmed}
    assert signed_requests(fake_exchanges, "kraken") == []

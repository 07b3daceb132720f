"""One source for every figure (issue 18, items 1 and 2), end to end: a grid with resting orders after a fill
shows the same invested, returned, reserved, left and realised figures in its fill alert, in /status, in
/status <id> and in /stop's summary, each equal to an independent computation from the fake Kraken's own
trades and open orders; and no message of the flow shows a money figure unformatted ("0.01995195 USD",
"65000.0 USD", a figure without its currency).

Real PTB against the fake Telegram Bot API, real ccxt against the fake Kraken."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

from bot.engine.figures import GLOSSARY
from bot.exchanges.venues import adapter
from handlers.common import esc
from handlers.start import help_text
from tests.chat_helpers import USER, connect_with_key
from tests.test_chat_futures_pnl import cents, wait_for_fill_alerts
from tests.test_chat_strategies import allocate_one_line, wait_for_open_orders
from tests.test_chat_views import spot_pnl

SYMBOL = "BTC/USD"
BUDGET = Decimal(500)
LABELS = ("invested", "returned", "reserved", "left")


def money_after(text: str, label: str, quote: str = "USD") -> Decimal:
    """The money figure after `label` ("reserved 1,004.00 USD" → 1004.00); it must name its currency."""
    found = re.search(rf"\b{label} ([+-]?[\d,]+\.\d\d) {quote}\b", text)
    assert found, f"no '{label} … {quote}' figure in:\n{text}"
    return Decimal(found.group(1).replace(",", ""))


def budget_figures(text: str) -> dict[str, Decimal]:
    return {label: money_after(text, label) for label in LABELS}


def realised_in_total(alert: str) -> Decimal:
    found = re.search(r"([+-]?[\d,]+\.\d\d) USD in total", alert)
    assert found, f"no realised total in:\n{alert}"
    return Decimal(found.group(1).replace(",", ""))


def reserved_by_venue(book, api_key: str) -> Decimal:
    """What the resting buys hold at worst, from the venue's open orders: their value plus the highest fee the
    bot reserves for a Kraken market (the market's own rates or Kraken's entry taker tier)."""
    market = book.market(SYMBOL)
    rate = max(market.maker_fee, market.taker_fee, adapter("kraken").entry_taker_fee)
    return sum(
        ((o.amount - o.filled) * o.price * (1 + rate) for o in book.open_orders(api_key) if o.side == "buy"),
        Decimal(0),
    )


def expected(book, api_key: str, price: Decimal) -> dict[str, Decimal]:
    """Every budget figure computed from the venue alone: its trades (fees included) and its open orders."""
    trades = book.trades(api_key, SYMBOL)
    invested = sum((t.cost + t.fee for t in trades if t.side == "buy"), Decimal(0))  # Kraken: fees in USD
    returned = sum((t.cost - t.fee for t in trades if t.side == "sell"), Decimal(0))
    reserved = reserved_by_venue(book, api_key)
    realised, _, fees = spot_pnl(trades, price)
    return {
        "invested": cents(invested), "returned": cents(returned), "reserved": cents(reserved),
        "left": cents(BUDGET - invested + returned - reserved), "realised": cents(realised), "fees": cents(fees),
    }


async def status_of(s, command: str, contains: str) -> str:
    await s.send(USER, command)
    return (await s.next_reply(USER, contains=contains, timeout=15)).plain_text


async def test_alert_status_and_stop_show_one_set_of_figures_equal_to_the_venues(strata, fake_exchanges):
    book = fake_exchanges.books["kraken"]
    book.set_price(SYMBOL, "65000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "kraken", balances={"USD": Decimal(5000)})
    await allocate_one_line(strata, f"/allocate kraken grid {BUDGET} {SYMBOL} low=60000 high=65000 levels=3")
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)
    assert len(await wait_for_open_orders(fake_exchanges, "kraken", api_key)) == 2  # buys at 60,000 and 62,500

    # The 62,500 buy fills; the 60,000 one keeps resting, holding part of the budget.
    book.set_price(SYMBOL, "62000")
    [bought] = await wait_for_fill_alerts(strata, 1)
    venue = expected(book, api_key, Decimal(62000))
    assert venue["reserved"] > 0 and venue["left"] < BUDGET - venue["invested"]  # reservations count
    status = await status_of(strata, "/status", "Your strategies")
    detail = await status_of(strata, f"/status {strategy.id}", "parameters")
    for text in (bought, status, detail):
        assert budget_figures(text) == {k: venue[k] for k in LABELS}, text
    assert realised_in_total(bought) == 0 and money_after(status, "realised") == 0
    # The average entry is what the BTC held cost, fee included, per BTC (not a plain average of buy prices).
    [buy] = book.trades(api_key, SYMBOL)
    entry = (buy.cost + buy.fee) / buy.amount
    assert f"average entry {entry.quantize(Decimal('0.1')):,} USD" in bought, bought
    assert f"average entry {entry.quantize(Decimal('0.1')):,} USD" in status, status

    # The sell at 65,000 fills: a realised gain; the grid then arms the 62,500 buy again.
    book.set_price(SYMBOL, "65000")
    sold = (await wait_for_fill_alerts(strata, 2))[1]
    assert "Sold" in sold
    await wait_for_open_orders(fake_exchanges, "kraken", api_key)
    venue = expected(book, api_key, Decimal(65000))
    assert venue["realised"] > 0
    assert realised_in_total(sold) == venue["realised"], sold
    assert money_after(sold, "returned") == venue["returned"] and money_after(sold, "invested") == venue["invested"]
    while len(book.open_orders(api_key)) < 2:  # the re-armed buy is placed after the alert
        await wait_for_open_orders(fake_exchanges, "kraken", api_key)
    venue = expected(book, api_key, Decimal(65000))
    status = await status_of(strata, f"/status {strategy.id}", "parameters")
    assert budget_figures(status) == {k: venue[k] for k in LABELS}, status
    assert money_after(status, "realised") == venue["realised"], status
    assert money_after(status, "fees") == venue["fees"], status

    # /stop keeps what is held: the same invested, returned, fees and realised P&L.
    await strata.send(USER, f"/stop {strategy.id}")
    question = await strata.next_reply(USER, contains="Keep what it bought")
    await strata.press(USER, question, "Stop and keep")
    summary = (await strata.next_reply(USER, contains="Realised", timeout=15)).plain_text
    venue = expected(book, api_key, Decimal(65000))
    assert money_after(summary, "Invested") == venue["invested"], summary
    assert money_after(summary, "returned") == venue["returned"], summary
    assert money_after(summary, "fees") == venue["fees"], summary
    assert money_after(summary, "net of fees:") == venue["realised"], summary

    # Every money figure of the whole flow is formatted: cents, separators, the currency named.
    messages = [m.plain_text for m in strata.tg.sent if m.chat_id == USER and m.text]
    for text in messages:
        assert not re.search(r"\d\.\d{3,} USD\b", text), f"a USD figure with more than cents:\n{text}"
        assert not re.search(r"(?<![\d,.])\d{4,}(\.\d+)? (USD|BTC)\b", text), f"no thousands separator:\n{text}"
        assert "finished: finished" not in text and "1 round trips" not in text


def test_the_words_of_the_figures_are_defined_once_alike_in_help_and_the_readme():
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    shown = help_text()
    for word, meaning in GLOSSARY:
        assert f"- **{word}** — {meaning}\n" in readme, word
        assert f"<i>{esc(word)}</i> — {esc(meaning)}" in shown, word
    assert len(shown) <= 4096


UNFORMATTED = (
    (r"(?<![\d,.])\d[\d,]*\.\d{3,} USDT?\b", "money with more than cents"),  # "0.01995195 USDT"
    (r"(?<![\d,.])\d{4,}(\.\d+)? (USDT?|BTC)\b", "a figure without thousands separators"),  # "9940.12 USDT"
    (r"≈ [\d,.]+(?![\d,.]| [A-Z])", "a value without its currency"),  # "≈ 1,693.20"
    (r"-0\.00\b", "a negative zero"),
)


def unformatted(text: str) -> list[str]:
    """What a message shows unformatted: each pattern's match (money below a cent keeps two significant
    digits, "0.0042 USDT", by design: not counted)."""
    found = []
    for pattern, what in UNFORMATTED:
        for match in re.finditer(pattern, text):
            if not match.group(0).startswith("0.00"):
                found.append(f"{what}: {match.group(0)!r}")
    return found


async def test_no_message_of_a_whole_spot_flow_shows_an_unformatted_figure(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50123.37")  # odd prices and a fee in USDT with many digits
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance", balances={"USDT": Decimal("9940.1229843")})
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=19.95195")
    await wait_for_fill_alerts(strata, 1)
    book.set_price("BTC/USDT", "52345.61")
    strata.runtime.gateway.market_data.invalidate()
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)
    for command, answer in (("/accounts", "Your accounts"), ("/status", "Your strategies"),
                            (f"/status {strategy.id}", "parameters"), ("/balance", "Balance"),
                            ("/trades", "Trades"), ("/profit", "Profit")):
        await strata.send(USER, command)
        await strata.next_reply(USER, contains=answer, timeout=15)
    await strata.send(USER, f"/stop {strategy.id}")
    question = await strata.next_reply(USER, contains="Keep what it bought")
    await strata.press(USER, question, "Stop and sell")
    await strata.next_reply(USER, contains="Realised", timeout=15)
    await wait_for_fill_alerts(strata, 2)
    assert [t.side for t in book.trades(api_key, "BTC/USDT")] == ["buy", "sell"]

    messages = [m.plain_text for m in strata.tg.sent if m.chat_id == USER and m.text]
    problems = {text.splitlines()[0]: unformatted(text) for text in messages if unformatted(text)}
    assert problems == {}, problems

"""/accounts end to end — real PTB against the fake Telegram, real ccxt against the fake venues: it answers at once
from the stored balances while the venue is held, then edits the same message with the fake wallet's figures; a
failing venue keeps its stored figures with a short reason while another account refreshes; futures accounts show
the positions the fake USD-M venue reports (positionRisk); 🔄 Refresh edits in place."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from decimal import Decimal

import bot.services.accounts as account_service
from bot.services.accounts import AccountView, AssetValue
from bot.services.positions import stored_position_view
from handlers.render import accounts_text
from storage.models import StoredPosition
from tests.chat_helpers import USER, connect_with_key, list_accounts
from tests.test_chat_futures_pnl import SYMBOL as FUTURES
from tests.test_chat_strategies import allocate_one_line
from tests.test_chat_views import block


def asset_amount(section: str, asset: str) -> Decimal:
    """The amount on an account's '<amount> <ASSET>' balance line (thousands separators removed)."""
    found = re.search(rf"^\s+([\d,.]+) {asset}\b", section, flags=re.MULTILINE)
    assert found, f"no {asset} line in:\n{section}"
    return Decimal(found.group(1).replace(",", ""))


def figure(text: str, pattern: str) -> Decimal:
    found = re.search(pattern, text)
    assert found, f"no {pattern!r} in:\n{text}"
    return Decimal(found.group(1).replace(",", ""))


async def test_accounts_answers_at_once_from_stored_balances_then_edits_in_the_fresh_wallet(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance")  # 5,000 USDT and 0.5 BTC, stored
    wallet = book.keys[api_key].balances
    wallet["USDT"], wallet["BTC"] = Decimal("4321.5"), Decimal("0.25")  # moved on the exchange since
    book.inject("hold", path="/api/v3/account", seconds=3)  # the venue is slow to answer the balance

    sent = time.time()
    await strata.send(USER, "/accounts")
    first = await strata.next_reply(USER, contains="Your accounts")
    assert first.time - sent < 1.0, "the stored figures must not wait for the venue"
    stored = block(first.plain_text, "binance —")
    assert "refreshing…" in first.plain_text and re.search(r"as of \d\d:\d\d UTC", stored), first.plain_text
    assert asset_amount(stored, "USDT") == 5000 and asset_amount(stored, "BTC") == Decimal("0.5")
    assert "≈ 25,000.00 USDT" in stored  # 0.5 BTC valued when connected
    await strata.send(USER, "/help")  # the refresh under way does not hold the user's next command
    helped = await strata.next_reply(USER, contains="/status")
    assert helped.time - sent < 1.5

    fresh = await strata.next_reply(USER, contains="— updated", timeout=15)
    assert fresh.message_id == first.message_id and fresh.method == "editMessageText"
    assert fresh.time - sent >= 2.5, "the fresh figures came from the held venue"
    section = block(fresh.plain_text, "binance —")
    assert asset_amount(section, "USDT") == wallet["USDT"] and asset_amount(section, "BTC") == wallet["BTC"]
    assert f"≈ {wallet['BTC'] * 50000:,.2f} USDT" in section and "as of" not in section
    assert "🔄 Refresh" in fresh.button_texts

    # Stored now: the next /accounts starts from these figures, and 🔄 Refresh fetches again, in place.
    wallet["USDT"] = Decimal("1000")
    await strata.press(USER, fresh, "🔄 Refresh")
    again = await strata.next_reply(USER, contains="refreshing…")
    assert again.message_id == first.message_id and asset_amount(block(again.plain_text, "binance —"), "USDT") == 4321.5
    refreshed = await strata.next_reply(USER, contains="— updated", timeout=15)
    assert refreshed.message_id == first.message_id
    assert asset_amount(block(refreshed.plain_text, "binance —"), "USDT") == 1000
    assert not [m for m in strata.tg.sent if m.chat_id == USER and "went wrong" in (m.text or "")]


async def test_an_account_never_fetched_shows_checking_until_it_is(strata, fake_exchanges):
    await connect_with_key(strata, fake_exchanges, "binance")
    await strata.runtime.store.db.execute("DELETE FROM account_balances")  # as before this release
    first, fresh = await list_accounts(strata)
    assert "checking…" in block(first.plain_text, "binance —")
    assert asset_amount(block(fresh.plain_text, "binance —"), "USDT") == 5000


async def test_a_failing_venue_keeps_its_stored_figures_with_the_reason_while_another_account_refreshes(
    strata, fake_exchanges, monkeypatch
):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    fake_exchanges.books["kraken"].set_price("BTC/USD", "60000")
    _, binance_key = await connect_with_key(strata, fake_exchanges, "binance")
    _, kraken_key = await connect_with_key(strata, fake_exchanges, "kraken")
    fake_exchanges.books["binance"].keys[binance_key].balances["USDT"] = Decimal(777)
    fake_exchanges.books["kraken"].keys[kraken_key].balances["USD"] = Decimal(888)

    # Kraken answers every balance call with a 503 (the gateway's retries too).
    fake_exchanges.books["kraken"].inject("server_error", count=10, path="Balance")
    _, fresh = await list_accounts(strata)
    kraken = block(fresh.plain_text, "kraken —")
    assert "could not refresh: the exchange did not answer or had an internal error" in kraken, fresh.plain_text
    assert re.search(r"as of \d\d:\d\d UTC", kraken) and asset_amount(kraken, "USD") == 5000  # the stored figure
    assert asset_amount(block(fresh.plain_text, "binance —"), "USDT") == 777
    fake_exchanges.books["kraken"].faults.clear()

    # Kraken holds its answer past the refresh's time limit: Binance is not held with it.
    monkeypatch.setattr(account_service, "REFRESH_TIMEOUT_S", 1.0)
    fake_exchanges.books["binance"].keys[binance_key].balances["USDT"] = Decimal(666)
    fake_exchanges.books["kraken"].inject("hold", path="Balance", seconds=3)
    sent = time.time()
    _, fresh = await list_accounts(strata)
    assert fresh.time - sent < 2.5, "one slow venue held the listing"
    assert "could not refresh: no answer within 1 s" in block(fresh.plain_text, "kraken —"), fresh.plain_text
    assert asset_amount(block(fresh.plain_text, "kraken —"), "USD") == 5000
    assert asset_amount(block(fresh.plain_text, "binance —"), "USDT") == 666


async def test_a_futures_account_shows_the_positions_the_venue_reports_at_1x(
    strata, fake_exchanges, exchange_client
):
    book = fake_exchanges.books["binanceusdm"]
    book.set_price(FUTURES, "50000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binanceusdm", balances={"USDT": Decimal(10000)})
    client = exchange_client("binanceusdm", api_key, book.keys[api_key].secret)
    await client.set_leverage(1, FUTURES)
    await client.create_order(FUTURES, "market", "buy", 0.05)  # a long opened outside any strategy
    book.set_price(FUTURES, "52000.5")

    _, fresh = await list_accounts(strata)
    section = block(fresh.plain_text, "binanceusdm —")
    assert "open positions (Strata runs them at 1x)" in section, section
    [line] = [line for line in section.splitlines() if "BTC/USDT long" in line]
    [row] = [r for r in await client.fapiPrivateV3GetPositionRisk() if Decimal(r["positionAmt"]) != 0]
    assert row["symbol"] == "BTCUSDT"
    assert figure(line, r"long ([\d.]+) BTC") == Decimal(row["positionAmt"])
    assert figure(line, r"entry ([\d,.]+) USDT") == Decimal(row["entryPrice"])
    assert figure(line, r"mark ([\d,.]+) USDT") == Decimal(row["markPrice"])
    assert figure(line, r"unrealised ([+-][\d,.]+) USDT") == Decimal(row["unRealizedProfit"]).quantize(Decimal("0.01"))
    assert Decimal(row["unRealizedProfit"]) == (Decimal("52000.5") - Decimal(row["entryPrice"])) * Decimal("0.05")

    # Stored with the balance: the next /accounts shows them at once, as of then.
    await strata.send(USER, "/accounts")
    first = await strata.next_reply(USER, contains="refreshing…")
    assert line in first.plain_text
    await strata.next_reply(USER, contains="— updated", timeout=15)


async def test_disconnect_names_the_strategies_it_stops_and_sends_each_ones_stop_summary(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance")
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=20")
    await allocate_one_line(strata, "/allocate binance grid 300 BTC/USDT low=40000 high=50000 levels=3 name=ladder")
    dca, grid = await strata.runtime.store.strategies.list_for_user(USER)
    deadline = time.monotonic() + 15
    while not (book.trades(api_key, "BTC/USDT") and book.open_orders(api_key)):
        assert time.monotonic() < deadline, "the DCA did not buy or the grid did not rest its orders"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the grid's whole ladder
    resting = len(book.open_orders(api_key))
    bought = sum(t.amount for t in book.trades(api_key, "BTC/USDT") if t.side == "buy")

    await strata.send(USER, "/disconnect binance")
    confirm = await strata.next_reply(USER, contains="Disconnect")
    text = confirm.plain_text
    assert "These 2 strategies stop" in text, text
    assert f"• #{dca.id} DCA BTC/USDT" in text and f"• #{grid.id} Grid BTC/USDT “ladder”" in text, text
    await strata.press(USER, confirm, "Confirm disconnect")
    await strata.next_reply(USER, contains="destroyed", timeout=20)
    summaries = (await strata.next_reply(USER, contains="stopped; its budget is released", timeout=10)).plain_text

    assert book.open_orders(api_key) == []
    dca_part, grid_part = (block(summaries, f"⏹ {title}") for title in (f"DCA #{dca.id}", f"Grid #{grid.id}"))
    assert figure(dca_part, r"Kept ([\d.]+) BTC") == bought, summaries  # what it bought stays in the wallet
    assert f"Cancelled {resting} open order(s)" in grid_part and "“ladder”" in grid_part, summaries
    assert "Realised P&L" in dca_part and "Realised P&L" in grid_part
    assert await strata.runtime.store.accounts.list_for_user(USER) == []


def test_stored_figures_from_another_day_name_the_day_and_a_position_at_another_leverage_says_so():
    position = StoredPosition("ETH/USDT:USDT", "short", Decimal("1.5"), Decimal("3000"), Decimal("2990.25"),
                              Decimal("14.625"), Decimal(5), Decimal("0.001"), Decimal("0.01"))
    view = AccountView(
        7, "binanceusdm", "Binance Futures", "futures", "active", False, (),
        (AssetValue("USDT", Decimal("1234.5"), Decimal("1234.5")),), positions=(stored_position_view(position),),
        as_of=datetime(2026, 12, 3, 19, 45, tzinfo=UTC),
    )
    text = accounts_text([view], datetime(2026, 12, 4, 8, 0, tzinfo=UTC), refreshing=True)
    assert "refreshing…" in text and "as of 3 Dec 19:45 UTC" in text and "  1,234.50 USDT" in text, text
    assert ("• ETH/USDT short 1.500 ETH at 1x, entry 3,000.00 USDT, mark 2,990.25 USDT, notional 4,485.38 USDT, "
            "unrealised +14.63 USDT (the exchange shows 5x)") in text, text


async def test_disconnect_of_an_account_whose_key_the_wind_down_removed_says_so(strata, fake_exchanges):
    """After `wind-down` an account is kept with its key destroyed (`key_removed`): /disconnect's confirmation says
    the key was removed when the service closed, not that it was rejected or cannot be read."""
    account, _ = await connect_with_key(strata, fake_exchanges, "binance")
    await strata.runtime.accounts.remove_key(account.id)

    await strata.send(USER, f"/disconnect {account.label}")
    confirm = await strata.next_reply(USER, contains="Disconnect")
    text = confirm.plain_text
    assert "removed when the service closed" in text, text
    assert "rejected" not in text and "cannot be read" not in text, text
    await strata.press(USER, confirm, "Confirm disconnect")
    done = await strata.next_reply(USER, contains=account.label, timeout=20)
    assert "Traceback" not in done.plain_text and "wrong" not in done.plain_text, done.plain_text
    assert await strata.runtime.store.accounts.list_for_user(USER) == []

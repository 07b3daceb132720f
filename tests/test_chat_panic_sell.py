""""Pause, cancel and sell what the strategies bought" under /panic — real PTB against the fake Telegram, real
ccxt against the fake Binance: the holdings end in quote in the fake's wallet, what is below a market's minimum
is reported as dust, and the audit log says which option was chosen."""

from __future__ import annotations

from decimal import Decimal

from tests.chat_helpers import USER, connect_with_key
from tests.test_chat_strategies import allocate_one_line, open_orders, wait_for_open_orders

MARKETS = ("BTC/USDT", "ETH/USDT", "BNB/USDT")


async def test_panic_sell_leaves_the_holdings_in_quote_and_reports_sales_and_dust(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    book.set_price("ETH/USDT", "2500")
    book.set_price("BNB/USDT", "600")
    # Fees taken in the coin bought: what a strategy holds is off the step, so a sale leaves dust.
    _, api_key = await connect_with_key(
        strata, fake_exchanges, "binance", balances={"USDT": Decimal(2000)}, fee_mode="received"
    )
    wallet = book.key(api_key)
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=20")
    await strata.next_reply(USER, contains="Bought 0.00040 BTC", timeout=15)
    await allocate_one_line(strata, "/allocate binance dca 100 ETH/USDT every=1d amount=10")
    await strata.next_reply(USER, contains="ETH at", timeout=15)
    await allocate_one_line(strata, "/allocate binance grid 300 BNB/USDT low=400 high=800 levels=4")
    await wait_for_open_orders(fake_exchanges, "binance", api_key)
    book.set_price("BTC/USDT", "55000")
    book.set_price("ETH/USDT", "2000")  # what the ETH strategy holds is now worth less than the 10 USDT minimum
    eth_held = wallet.total("ETH")
    usdt_before = wallet.total("USDT")
    trades_before = {symbol: len(book.trades(api_key, symbol)) for symbol in MARKETS}

    await strata.send(USER, "/panic")
    question = await strata.next_reply(USER, contains="Pause")
    await strata.press(USER, question, "Pause, cancel and sell what the strategies bought")
    answer = await strata.next_reply(USER, contains="stopped 3 strategies", timeout=30)

    assert open_orders(fake_exchanges, "binance", api_key) == []
    strategies = await strata.runtime.store.strategies.list_for_user(USER)
    assert {s.status for s in strategies} == {"stopped"}
    after = {symbol: book.trades(api_key, symbol)[trades_before[symbol]:] for symbol in MARKETS}
    assert {t.side for trades in after.values() for t in trades} == {"sell"}
    sells = after["BTC/USDT"]
    assert sells and {t.side for t in sells} == {"sell"}
    sold = sum(t.amount for t in sells)
    average = sum(t.cost for t in sells) / sold
    dust = wallet.total("BTC")
    assert Decimal(0) < dust < Decimal("0.00001")  # below BTC/USDT's step: all that is left of the BTC
    text = answer.plain_text
    assert f"Sold {sold:.5f} BTC at market (average {average:,.2f} USDT)" in text
    assert f"Dust left: {dust.normalize():f} BTC" in text
    assert wallet.total("ETH") == eth_held  # too little to sell: kept, reported as dust
    assert f"Dust left: {eth_held.normalize():f} ETH" in text
    proceeds = sum(t.cost - t.fee for trades in after.values() for t in trades)  # a sale's fee is taken in USDT
    assert wallet.total("USDT") == usdt_before + proceeds  # the grid's cancelled buys had only locked theirs
    assert f"Dust left: {wallet.total('BNB').normalize():f} BNB" in text  # what the grid bought, less its step
    assert "Resume all" not in str(answer.reply_markup)  # stopped strategies cannot be resumed

    [entry] = [e for e in await strata.runtime.store.audit.page(user_id=USER) if e.action == "panic"]
    assert entry.actor_id == USER and entry.outcome == "ok"
    assert entry.detail == "3 paused; 3 order(s) cancelled; 3 stopped and sold (pause, cancel and sell)"


async def test_panic_sell_as_one_line_asks_once_and_panic_alone_still_only_pauses(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance", balances={"USDT": Decimal(1000)})
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=20")
    await strata.next_reply(USER, contains="Bought", timeout=15)

    await strata.send(USER, "/panic")
    question = await strata.next_reply(USER, contains="Pause")
    await strata.press(USER, question, "Pause and cancel")
    await strata.next_reply(USER, contains="Paused 1 strategy", timeout=15)
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)
    assert strategy.status == "paused"
    assert book.key(api_key).total("BTC") == Decimal("0.0004")  # nothing sold

    await strata.send(USER, "/panic sell")
    question = await strata.next_reply(USER, contains="sell what it bought")
    assert "Pause and cancel" not in str(question.reply_markup)
    await strata.press(USER, question, "Pause, cancel and sell what the strategies bought")
    answer = await strata.next_reply(USER, contains="Sold 0.00040 BTC", timeout=30)
    assert "stopped 1 strategy" in answer.text
    assert book.key(api_key).total("BTC") == 0
    panics = [e.detail for e in await strata.runtime.store.audit.page(user_id=USER) if e.action == "panic"]
    assert panics == ["0 paused; 0 order(s) cancelled; 1 stopped and sold (pause, cancel and sell)",
                      "1 paused; 0 order(s) cancelled"]  # newest first: the option each panic chose


async def test_panic_sell_closes_a_futures_position_reduce_only(strata, fake_exchanges):
    book = fake_exchanges.books["binanceusdm"]
    eth = "ETH/USDT:USDT"
    book.set_price(eth, "2400")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binanceusdm", balances={"USDT": Decimal(1000)})
    await allocate_one_line(strata, "/allocate binanceusdm dca 100 ETH/USDT every=1d amount=30")
    await strata.next_reply(USER, contains="Opened long 0.012 ETH", timeout=15)
    book.set_price(eth, "2500")

    await strata.send(USER, "/panic sell")
    question = await strata.next_reply(USER, contains="sell what it bought")
    await strata.press(USER, question, "Pause, cancel and sell what the strategies bought")
    answer = await strata.next_reply(USER, contains="stopped 1 strategy", timeout=30)

    opened, closed = book.trades(api_key, eth)
    assert (opened.side, closed.side) == ("buy", "sell") and closed.amount == opened.amount
    [order] = [o for o in book.all_orders(api_key) if o.id == closed.order_id]
    assert order.reduce_only
    assert not [p for p in book.key(api_key).positions.values() if p.amount]
    assert f"Closed the long 0.012 ETH position at market (average {closed.price:,.2f} USDT)" in answer.plain_text

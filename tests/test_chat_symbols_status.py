"""Through the real bot: markets written the usual ways (`BTCUSDT`, `btc-usdt`…) in both /allocate forms, the
closest markets for an unknown one; `/status <id>` in detail; no stale lines on stopped strategies."""

from __future__ import annotations

from tests.chat_helpers import USER, connect_account


async def test_one_line_allocate_understands_usual_spellings_on_each_venue(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    fake_exchanges.books["binanceusdm"].set_price("BTC/USDT:USDT", "50000")
    await connect_account(strata, fake_exchanges, "binance")
    await connect_account(strata, fake_exchanges, "binanceusdm")
    for text in ("/allocate binance dca 100 BTCUSDT amount=20", "/allocate binance dca 100 btc-usdt amount=20",
                 "/allocate binance dca 100 BTC_USDT amount=20", "/allocate binanceusdm dca 200 btcusdt amount=60"):
        await strata.send(USER, text)
        summary = await strata.next_reply(USER, contains="Allocation summary")
        assert "Market: BTC/USDT" in summary.text, (text, summary.text)


async def test_an_unknown_market_gets_the_closest_ones(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_account(strata, fake_exchanges, "binance")
    await strata.send(USER, "/allocate binance dca 100 btc-usd amount=20")
    answer = await strata.next_reply(USER, contains="not traded")
    assert "BTC/USD is not traded on Binance Spot. Did you mean BTC/USDT" in answer.text


async def test_guided_allocate_understands_a_typed_concatenated_market(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_account(strata, fake_exchanges, "binance")
    await strata.send(USER, "/allocate")
    menu = await strata.next_reply(USER, contains="Which account")
    await strata.press(USER, menu, 0)
    kinds = await strata.next_reply(USER, contains="Which strategy")
    await strata.press(USER, kinds, "DCA")
    await strata.next_reply(USER, contains="Which market")
    await strata.send(USER, "btcusdt")
    await strata.next_reply(USER, contains="What budget")
    await strata.send(USER, "100")
    await strata.next_reply(USER, contains="Parameters of")
    await strata.send(USER, "amount=20")
    summary = await strata.next_reply(USER, contains="Allocation summary")
    assert "Market: BTC/USDT" in summary.text

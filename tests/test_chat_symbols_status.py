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
    await strata.send(USER, "amount=20 name=stack")  # the guided parameters step takes name= too
    summary = await strata.next_reply(USER, contains="Allocation summary")
    assert "Market: BTC/USDT" in summary.text and "“stack”" in summary.text


async def _allocate(strata, text: str):
    await strata.send(USER, text)
    summary = await strata.next_reply(USER, contains="Allocation summary")
    await strata.press(USER, summary, "Confirm allocation")
    return await strata.next_reply(USER, contains="is running")


async def test_a_stopped_or_paused_strategy_keeps_no_running_line(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_account(strata, fake_exchanges, "binance")
    await _allocate(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=20")
    await strata.next_reply(USER, contains="Bought", timeout=15)
    await strata.send(USER, "/status 1")
    running = await strata.next_reply(USER, contains="#1 DCA")
    assert "next buy at" in running.text  # the note of a running DCA: when it buys next (also before its fill)
    await strata.send(USER, "/pause 1")
    await strata.next_reply(USER, contains="paused")
    await strata.send(USER, "/status 1")
    paused = await strata.next_reply(USER, contains="#1 DCA")
    assert "next buy" not in paused.text and "next run" not in paused.text and "paused by you" in paused.text
    await strata.send(USER, "/stop 1")
    confirm = await strata.next_reply(USER, contains="Keep what it bought")
    await strata.press(USER, confirm, "Stop and keep")
    await strata.next_reply(USER, contains="stopped;")
    await strata.send(USER, "/status")
    stopped = await strata.next_reply(USER, contains="Your strategies")
    assert "stopped" in stopped.text and "next buy" not in stopped.text and "next run" not in stopped.text


async def test_status_with_an_id_shows_that_strategy_in_detail(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    fake_exchanges.books["binance"].set_price("ETH/USDT", "2500")
    await connect_account(strata, fake_exchanges, "binance", balances={"USDT": 5000})
    await _allocate(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=20 name=stack")
    await _allocate(strata, "/allocate binance rebalance 300 USDT weights=BTC:50,ETH:50")
    await _allocate(strata, "/allocate binance rebalance 300 USDT weights=BTC:80,ETH:20")
    await strata.send(USER, "/status 2")
    detail = await strata.next_reply(USER, contains="#2 Rebalance")
    assert "#2 Rebalance BTC 50 / ETH 50" in detail.text
    assert "#1 DCA" not in detail.text and "#3" not in detail.text  # that one strategy only
    assert "weights=BTC:50,ETH:50" in detail.text  # its parameters
    await strata.send(USER, "/status #1")
    named = await strata.next_reply(USER, contains="#1 DCA")
    assert "#1 DCA BTC/USDT “stack”" in named.text and "every=1d" in named.text
    await strata.send(USER, "/status")
    listing = await strata.next_reply(USER, contains="Your strategies")
    assert "#3 Rebalance BTC 80 / ETH 20" in listing.text and "#1 DCA BTC/USDT “stack”" in listing.text
    await strata.send(USER, "/status 99")
    assert "No such strategy" in (await strata.next_reply(USER)).text
    await strata.send(USER, "/status two")
    assert "Usage: /status" in (await strata.next_reply(USER)).text
    await strata.send(USER, "/pause")
    picker = await strata.next_reply(USER, contains="Which strategy")
    assert "#1 DCA BTC/USDT “stack”" in str(picker.reply_markup)
    await strata.send(USER, "/settings")
    settings = await strata.next_reply(USER, contains="Settings")
    assert "DCA #1 BTC/USDT “stack”: " in settings.text and "Rebalance #2 BTC 50 / ETH 50: " in settings.text
    assert "#1 DCA #1" not in settings.text


async def test_a_name_is_bounded_and_escaped(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_account(strata, fake_exchanges, "binance")
    await strata.send(USER, "/allocate binance dca 100 BTC/USDT amount=20 name=" + "x" * 40)
    assert "at most 32 characters" in (await strata.next_reply(USER)).text
    await _allocate(strata, "/allocate binance dca 100 BTC/USDT amount=20 name=<b>&me")
    alert = await strata.next_reply(USER, contains="Bought", timeout=15)
    assert "“&lt;b&gt;&amp;me”" in alert.text
    await strata.send(USER, "/status 1")
    assert "“&lt;b&gt;&amp;me”" in (await strata.next_reply(USER, contains="#1 DCA")).text

"""The guided /allocate forgives mistakes: every step checks its answer when it is given and asks the same step
again with the reason, a refusal of the whole allocation goes back to the step that can fix it, and every step
has Back and Cancel — real PTB against the fake Telegram, real ccxt against the fake venues."""

from __future__ import annotations

from decimal import Decimal

from tests.chat_helpers import USER, connect_with_key


def buttons(message) -> list[str]:
    return [b["text"] for row in (message.reply_markup or {}).get("inline_keyboard", []) for b in row]


async def nothing_stored(s, fake_exchanges, api_key: str) -> None:
    assert await s.runtime.store.strategies.list_for_user(USER) == []
    assert fake_exchanges.books["binance"].all_orders(api_key) == []


async def start(s):
    await s.send(USER, "/allocate")
    return await s.next_reply(USER, contains="Which account")


async def to_params(s, budget: str = "100", kind: str = "DCA", market: str = "BTC/USDT"):
    await s.press(USER, await start(s), 0)
    await s.press(USER, await s.next_reply(USER, contains="Which strategy"), kind)
    await s.press(USER, await s.next_reply(USER, contains="Which market"), market)
    await s.next_reply(USER, contains="What budget")
    await s.send(USER, budget)
    return await s.next_reply(USER, contains="Parameters of")


async def test_a_flow_answered_wrongly_at_every_step_recovers_without_cancel(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance")

    accounts = await start(strata)
    strata.tg.press_callback_data(USER, accounts, "alloc:acct:999")  # an account that is not (or no longer) yours
    accounts = await strata.next_reply(USER, contains="Which account")
    assert "not (or no longer) connected" in accounts.text
    await strata.press(USER, accounts, 0)

    kinds = await strata.next_reply(USER, contains="Which strategy")
    strata.tg.press_callback_data(USER, kinds, "alloc:kind:moon")
    kinds = await strata.next_reply(USER, contains="Which strategy")
    assert "Pick one of the strategies" in kinds.text
    await strata.press(USER, kinds, "DCA")

    market = await strata.next_reply(USER, contains="Which market")
    for wrong in ("btc-usd", "NOPE/USDT"):
        await strata.send(USER, wrong)
        again = await strata.next_reply(USER, contains="Which market")
        assert again.text.startswith("❌") and {"Back", "Cancel"} <= set(buttons(again)), again.text
    await strata.send(USER, "btc/usdt")

    await strata.next_reply(USER, contains="What budget")
    # A button of the market step pressed now is not read as an answer to the budget step, nor changes the market.
    await strata.press(USER, market, "ETH/USDT")
    stale = await strata.next_reply(USER, contains="out of date")
    assert "What budget" in stale.text and "Market <b>BTC/USDT" in stale.text
    for wrong, reason in (("-50", "greater than 0"), ("lots", "not a number"), ("999999", "at most")):
        await strata.send(USER, wrong)
        again = await strata.next_reply(USER, contains="What budget")
        assert reason in again.text and {"Back", "Cancel"} <= set(buttons(again)), (wrong, again.text)
    await strata.send(USER, "100")

    await strata.next_reply(USER, contains="Parameters of")
    # A bad parameter, a word that is no parameter, and one that only the whole allocation can refuse.
    for wrong, reason in (("every=0m", "every"), ("sometimes", "name=value"), ("amount=0.01", "minimum")):
        await strata.send(USER, wrong)
        again = await strata.next_reply(USER, contains="Parameters of")
        assert reason in again.text and "Budget <b>100 USDT" in again.text, (wrong, again.text)
        await nothing_stored(strata, fake_exchanges, api_key)
    await strata.send(USER, "every=1d amount=20")

    summary = await strata.next_reply(USER, contains="Allocation summary")
    assert {"Confirm allocation", "Back", "Cancel"} <= set(buttons(summary))
    await strata.press(USER, summary, "Confirm allocation")
    await strata.next_reply(USER, contains="is running")
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)
    assert (strategy.symbol, strategy.budget) == ("BTC/USDT", Decimal(100))
    assert strategy.params["amount"] == "20" and strategy.params["every"] == "1d"


async def test_a_grid_refused_for_its_per_level_minimum_is_fixed_in_place_by_its_budget(strata, fake_exchanges):
    # At 50,000 a 9-level grid from 40,000 to 60,000 arms 4 levels: 30 USDT is below the 10 USDT minimum each.
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance", balances={"USDT": Decimal(1000)})
    await to_params(strata, budget="30", kind="Grid")
    await strata.send(USER, "low=40000 high=60000 levels=9")
    refused = await strata.next_reply(USER, contains="Parameters of")
    assert "minimum" in refused.text and "Keep low=40000 high=60000 levels=9" in buttons(refused)
    await nothing_stored(strata, fake_exchanges, api_key)

    await strata.press(USER, refused, "Back")  # the budget is what to change
    budget = await strata.next_reply(USER, contains="What budget")
    assert "BTC/USDT" in budget.text
    await strata.send(USER, "100")
    params = await strata.next_reply(USER, contains="Parameters of")
    await strata.press(USER, params, "Keep low=40000 high=60000 levels=9")
    summary = await strata.next_reply(USER, contains="Allocation summary")
    assert "levels=9" in summary.text and "100" in summary.text
    await strata.press(USER, summary, "Confirm allocation")
    await strata.next_reply(USER, contains="is running")
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)
    assert strategy.budget == Decimal(100) and strategy.params["levels"] == "9"


async def test_back_goes_back_one_step_keeping_the_earlier_answers(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    fake_exchanges.books["binance"].set_price("ETH/USDT", "3000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance")
    await to_params(strata)
    await strata.send(USER, "every=1h amount=20")
    summary = await strata.next_reply(USER, contains="Allocation summary")

    await strata.press(USER, summary, "Back")
    params = await strata.next_reply(USER, contains="Parameters of")
    assert "Budget <b>100 USDT" in params.text and "Keep every=1h amount=20" in buttons(params)
    # The summary left behind can no longer be confirmed.
    await strata.press(USER, params, "Back")
    budget = await strata.next_reply(USER, contains="What budget")
    assert "Market <b>BTC/USDT" in budget.text
    await strata.press(USER, budget, "Back")
    market = await strata.next_reply(USER, contains="Which market")
    await strata.press(USER, market, "Back")
    kinds = await strata.next_reply(USER, contains="Which strategy")
    assert "Account <b>binance" in kinds.text
    await strata.press(USER, kinds, "Back")
    accounts = await strata.next_reply(USER, contains="Which account")
    assert "Back" not in buttons(accounts)  # the first step: Cancel only
    await nothing_stored(strata, fake_exchanges, api_key)

    # Forward again, now on another market: the earlier answers are asked again only where they changed.
    await strata.press(USER, accounts, 0)
    await strata.press(USER, await strata.next_reply(USER, contains="Which strategy"), "DCA")
    await strata.send(USER, "ETH/USDT")
    await strata.next_reply(USER, contains="Market <b>ETH/USDT")
    await strata.send(USER, "200")
    params = await strata.next_reply(USER, contains="Parameters of")
    assert not [b for b in buttons(params) if b.startswith("Keep")]  # parameters of another market are not kept
    await strata.press(USER, params, "Use defaults")
    summary = await strata.next_reply(USER, contains="Allocation summary")
    assert "ETH/USDT" in summary.text and "200.00 USDT" in summary.text


async def test_cancel_at_every_step_ends_the_flow_with_nothing_stored(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance")

    async def account(s):
        return await start(s)

    async def strategy(s):
        await s.press(USER, await start(s), 0)
        return await s.next_reply(USER, contains="Which strategy")

    async def market(s):
        await s.press(USER, await strategy(s), "DCA")
        return await s.next_reply(USER, contains="Which market")

    async def budget(s):
        await s.press(USER, await market(s), "BTC/USDT")
        return await s.next_reply(USER, contains="What budget")

    async def params(s):
        return await to_params(s)

    async def summary(s):
        await params(s)
        await s.send(USER, "every=1d amount=20")
        return await s.next_reply(USER, contains="Allocation summary")

    for step in (account, strategy, market, budget, params, summary):
        message = await step(strata)
        assert "Cancel" in buttons(message), (step.__name__, buttons(message))
        await strata.press(USER, message, "Cancel")
        await strata.next_reply(USER, contains="nothing was allocated")
        assert strata.runtime.drafts.get(USER) is None, step.__name__
        await nothing_stored(strata, fake_exchanges, api_key)
    # Typed text is no longer read as an answer: it reaches no guided step, so the next reply is /status's.
    await strata.send(USER, "100")
    await strata.send(USER, "/status")
    after = await strata.next_reply(USER)
    assert after.text.startswith("No strategies yet"), after.text
    await nothing_stored(strata, fake_exchanges, api_key)


async def test_the_strategy_pickers_have_cancel(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_with_key(strata, fake_exchanges, "binance")
    await strata.press(USER, await start(strata), 0)
    kinds = await strata.next_reply(USER, contains="Which strategy")
    assert {"DCA", "Grid", "Back", "Cancel"} <= set(buttons(kinds))

    await strata.send(USER, "/allocate binance dca 100 BTC/USDT every=1d amount=20")
    await strata.press(USER, await strata.next_reply(USER, contains="Allocation summary"), "Confirm allocation")
    await strata.next_reply(USER, contains="is running")
    [running] = await strata.runtime.store.strategies.list_for_user(USER)
    await strata.send(USER, "/pause")
    picker = await strata.next_reply(USER, contains="Which strategy do you want to pause")
    await strata.press(USER, picker, "Cancel")
    await strata.next_reply(USER, contains="Nothing was changed")
    [still] = await strata.runtime.store.strategies.list_for_user(USER)
    assert still.status == running.status == "active"

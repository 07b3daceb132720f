"""The Paper venue refuses what its source venue refuses, the same way: an order under the market's minimum or
beyond the free balance raises the failure (and so the engine action) a real account's order gets from the
fake Binance through real ccxt, and a Paper refusal met by a running strategy pauses it as a real one does.

Real ccxt against the fake Binance for the real account and for the Paper account's public prices."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bot.exchanges.failures import ExchangeFailure
from bot.exchanges.paper import PaperCredentials
from bot.secret import Credentials
from storage.strategies import PAUSED
from tests.engine_world import open_world

SYMBOL = "BTC/USDT"


async def paper_account(world, user_id: int, funds: Decimal) -> int:
    await world.store.users.upsert(user_id, user_id)
    async with world.store.db.transaction() as tx:
        account_id = await world.store.accounts.create(tx, user_id=user_id, venue="paper:binance", label="paper")
        await world.store.paper.fund(tx, account_id, "USDT", funds)
    return account_id


@pytest.mark.parametrize(
    ("case", "amount", "cost"),
    [("under the minimum value", Decimal("0.0001"), None), ("beyond the balance", None, Decimal(900))],
)
async def test_a_paper_order_is_refused_with_the_same_action_as_the_real_venues(
    fake_exchanges, tmp_path, case, amount, cost
):
    book = fake_exchanges.books["binance"]
    book.set_price(SYMBOL, "50000")
    book.add_key("real", "secret", balances={"USDT": "500"})
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, start=False)
    try:
        account_id = await paper_account(world, 7, Decimal(500))
        answers = {}
        real, paper = Credentials("real", "secret"), PaperCredentials(account_id)
        for venue, creds in (("binance", real), ("paper:binance", paper)):
            with pytest.raises(ExchangeFailure) as refused:
                await world.gateway.create_order(venue, creds, SYMBOL, "buy", "market", amount=amount, cost=cost)
            answers[venue] = refused.value
        assert answers["paper:binance"].action is answers["binance"].action, (case, answers)
        assert answers["paper:binance"].user_message and "Traceback" not in answers["paper:binance"].user_message
        assert await world.store.paper.balances(account_id) == {"USDT": (Decimal(500), Decimal(0))}  # untouched
        assert await world.store.paper.orders(account_id) == []
        assert book.all_orders("real") == []
    finally:
        await world.close()


async def test_a_paper_refusal_for_funds_pauses_the_strategy_as_a_real_one_does(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    book.set_price(SYMBOL, "50000")
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        account_id = await paper_account(world, 9, Decimal(1000))
        preview = await world.service.allocate(9, "paper", "dca", "100", SYMBOL, {"every": "1d", "amount": "20"})
        # Between the balance check and the order the Paper account's money goes (as on the real test's venue).
        await world.store.paper.save(account_id, {"USDT": (Decimal(5), Decimal(0))})
        original = world.gateway.fetch_balance

        async def stale_balance(venue, creds):  # the balance read before the money went
            lines = await original(venue, creds)
            return {**lines, "USDT": type(lines["USDT"])(free=lines["USDT"].free + 995, used=lines["USDT"].used,
                                                      total=lines["USDT"].total + 995)}

        world.gateway.fetch_balance = stale_balance
        strategy_id = (await world.service.confirm(preview)).strategy_id
        await world.engine.settle()
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.status == PAUSED
        [pause] = await world.alerts("pause")
        assert "Not enough USDT on the Paper account" in pause["text"] and "📝 Paper" in pause["text"], pause["text"]
        assert [r["status"] for r in await world.orders()] == ["rejected"]
        assert await world.store.paper.trades(account_id) == []
        assert strategy.state["buys"] == 0
    finally:
        await world.close()


def _short_reservation(rate: Decimal) -> tuple[Decimal, Decimal]:
    """A Kraken BTC/USD limit buy (8-decimal amount, 0.1 tick) whose value plus fee, each kept to 1e-8 as the fill
    books them, is 1e-8 more than the same sum rounded once."""
    q = Decimal("1e-8")
    for step in range(1, 10_000):
        amount, price = Decimal("0.00123457") + step * q, Decimal("60000.3")
        once = (amount * price * (1 + rate)).quantize(q)
        cost = (amount * price).quantize(q)
        if once < cost + (cost * rate).quantize(q):
            return amount, price
    raise AssertionError("no such order")


async def test_a_resting_buy_that_held_all_the_free_money_fills_when_crossed(fake_exchanges, tmp_path):
    book = fake_exchanges.books["kraken"]
    book.set_price("BTC/USD", "65000")
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, start=False)
    try:
        await world.store.users.upsert(5, 5)
        async with world.store.db.transaction() as tx:
            account_id = await world.store.accounts.create(tx, user_id=5, venue="paper:kraken", label="paper")
        amount, price = _short_reservation(book.market("BTC/USD").maker_fee)
        rate, q = book.market("BTC/USD").maker_fee, Decimal("1e-8")
        cost = (amount * price).quantize(q)
        needed = cost + (cost * rate).quantize(q)  # what the fill costs, fee included
        # The account holds just what the order needs: every cent of it is held while the order rests.
        await world.store.paper.save(account_id, {"USD": (needed, Decimal(0))})
        creds = PaperCredentials(account_id)
        order = await world.gateway.create_order("paper:kraken", creds, "BTC/USD", "buy", "limit", amount=amount,
                                                 price=price)
        assert order.status == "open"
        assert await world.store.paper.balances(account_id) == {"USD": (Decimal(0), needed)}
        book.set_price("BTC/USD", "60000")
        world.gateway.market_data.invalidate()
        assert await world.gateway.fetch_open_orders("paper:kraken", creds) == []  # it filled, as a maker
        assert await world.store.paper.balances(account_id) == {
            "USD": (Decimal(0), Decimal(0)), "BTC": (amount, Decimal(0))}
    finally:
        await world.close()

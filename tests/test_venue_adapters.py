"""One adapter per venue (`bot.exchanges.venues`): each venue's capability table as the code relied on it before
the move, and a new venue registered with nothing but an adapter reaches /connect, /allocate and the engine —
real PTB against the fake Telegram, real ccxt against the fake venues."""

from __future__ import annotations

import asyncio
import dataclasses
from decimal import Decimal

import pytest

from bot.exchanges.venues import adapter, adapters, binance, connectable, find, paper_venues, register, unregister
from tests.chat_helpers import USER, send_key_pair
from tests.chat_helpers import register as register_key


def test_the_registry_offers_the_three_venues_in_button_order_with_their_names():
    assert connectable() == ("binance", "binanceusdm", "kraken")
    assert [a.name for a in adapters() if not a.simulated] == ["Binance Spot", "Binance Futures", "Kraken"]
    # Paper trades on the spot venues' prices, behind its own button; its labels are `paper`, `paper-2`…
    assert [(p.id, p.market_venue, p.label) for p in paper_venues()] == [
        ("paper:binance", "binance", "paper"), ("paper:kraken", "kraken", "paper")
    ]
    assert find("nope") is None
    with pytest.raises(KeyError):
        adapter("nope")


@pytest.mark.parametrize(
    ("venue", "futures", "fee", "quote", "family", "by_trade", "per_symbol", "weights", "testnet"),
    [
        ("binance", False, "0.001", "USDT", "binance", True, True, (6, 80), True),
        ("binanceusdm", True, "0.0005", "USDT", "binance", True, True, (1, 40), True),
        ("kraken", False, "0.004", "USD", "kraken", False, False, None, False),
    ],
)
def test_each_venue_keeps_the_capabilities_the_code_branched_on(
    venue, futures, fee, quote, family, by_trade, per_symbol, weights, testnet
):
    table = adapter(venue)
    assert (table.futures, table.entry_taker_fee, table.valuation_quote, table.owner_family) == (
        futures, Decimal(fee), quote, family
    )
    assert (table.fills_by_trade, table.open_orders_per_symbol, table.open_orders_weights, table.testnet) == (
        by_trade, per_symbol, weights, testnet
    )
    assert table.reduce_only_params(True) == ({"reduceOnly": True} if futures else None)
    assert table.market_symbol("BTC/USDT") == ("BTC/USDT:USDT" if futures else "BTC/USDT")
    assert table.key_names[1] == ("private key" if venue == "kraken" else "secret key")
    assert ("rebalance" in table.unsupported) is futures


#: A venue the code has never heard of: Binance Spot's rules (and its fake) under another id and name, with its
#: own markets on the buttons and a strategy it refuses. Nothing else is edited for it.
NEW_VENUE = dataclasses.replace(
    binance.ADAPTER,
    id="testex",
    name="Test Exchange",
    owner_family="testex",
    owner_name="Test Exchange",
    default_markets=("ETH/USDT", "BTC/USDT"),
    unsupported={"grid": "Test Exchange cannot run a grid here."},
)


@pytest.fixture
def new_venue():
    register(NEW_VENUE)
    try:
        yield NEW_VENUE
    finally:
        unregister(NEW_VENUE.id)


def buttons(message) -> list[str]:
    return [b["text"] for row in (message.reply_markup or {}).get("inline_keyboard", []) for b in row]


async def test_a_registered_adapter_is_offered_by_connect_checked_by_allocate_and_traded_by_the_engine(
    make_strata, fake_exchanges, new_venue
):
    book = fake_exchanges.books["binance"]  # the new venue's server: Binance's fake under another origin name
    book.set_price("BTC/USDT", "50000")
    book.set_price("ETH/USDT", "3000")
    urls = f"{fake_exchanges.exchange_urls},testex={fake_exchanges.origins['binance']}"
    async with make_strata(STRATA_EXCHANGE_URLS=urls) as s:
        # /connect: a button of its own, its key guide, its key check (apiRestrictions on the fake).
        await s.send(USER, "/connect")
        menu = await s.next_reply(USER, contains="Which exchange")
        assert "Test Exchange" in buttons(menu)
        await s.press(USER, menu, "Test Exchange")
        guide = await s.next_reply(USER, contains="send the")
        assert "<b>Test Exchange</b>" in guide.text and "API Management" in guide.text
        api_key, secret = register_key(fake_exchanges, "binance")
        await send_key_pair(s, api_key, secret)
        done = await s.next_reply(USER, contains="Connected")
        assert "testex" in done.text
        [account] = await s.runtime.store.accounts.list_for_user(USER)
        assert (account.venue, account.label) == ("testex", "testex")

        # /allocate: the strategy it refuses, its markets on the guided flow's buttons.
        await s.send(USER, "/allocate testex grid 100 BTC/USDT low=40000 high=60000 levels=3")
        assert "cannot run a grid here" in (await s.next_reply(USER)).text
        await s.send(USER, "/allocate")
        await s.press(USER, await s.next_reply(USER, contains="Which account"), 0)
        await s.press(USER, await s.next_reply(USER, contains="Which strategy"), "DCA")
        markets = await s.next_reply(USER, contains="Which market")
        assert buttons(markets)[:2] == ["ETH/USDT", "BTC/USDT"]
        await s.send(USER, "/cancel")
        await s.next_reply(USER)

        # The engine: the first DCA buy goes to the venue behind `testex`, signed with the key, its fill recorded.
        await s.send(USER, "/allocate testex dca 100 BTC/USDT every=1d amount=20")
        summary = await s.next_reply(USER, contains="Allocation summary")
        await s.press(USER, summary, "Confirm allocation")
        await s.next_reply(USER, contains="is running")
        alert = await s.next_reply(USER, contains="Bought", timeout=15)
        assert "BTC" in alert.text
        [order] = book.all_orders(api_key)
        assert order.side == "buy" and new_venue.is_valid_client_order_id(order.client_order_id)
        deadline = asyncio.get_running_loop().time() + 10
        while not (rows := await s.runtime.store.db.fetchall("SELECT * FROM fills")):
            assert asyncio.get_running_loop().time() < deadline, "the fill was not recorded"
            await asyncio.sleep(0.05)
        assert len(rows) == len(book.trades(api_key)) >= 1
        # Its requests were charged to its own budget (per venue and host), not Binance Spot's.
        budgets = s.runtime.gateway.pool.budgets.budgets()
        assert any(venue == "testex" for venue, _ in budgets)


# --- key health (issue 21 item 3): the venue's answer read by its adapter ---------------------------------


async def test_binance_health_reads_withdrawals_trading_and_its_expiry_and_refuses_an_answer_that_proves_nothing():
    from datetime import UTC, datetime, timedelta

    from bot.exchanges.failures import UnknownFailure
    from bot.exchanges.venues import adapter

    now = datetime(2026, 12, 4, tzinfo=UTC)
    soon = int((now + timedelta(days=3)).timestamp() * 1000)
    past = int((now - timedelta(seconds=1)).timestamp() * 1000)

    def once_answering(answer):
        async def once(op):
            return answer

        return once

    spot, usdm = adapter("binance"), adapter("binanceusdm")
    base = {"enableWithdrawals": False, "enableSpotAndMarginTrading": True, "enableFutures": False}
    health = await spot.check_health(once_answering({**base, "tradingAuthorityExpirationTime": soon}),
                                     testnet=False, now=now)
    assert (health.can_withdraw, health.can_trade) == (False, True)
    assert health.trading_expires_at == now + timedelta(days=3)
    expired = await spot.check_health(once_answering({**base, "tradingAuthorityExpirationTime": past}),
                                      testnet=False, now=now)
    assert expired.can_trade is False  # the time has passed: trading is gone
    restricted = await spot.check_health(
        once_answering({**base, "ipRestrict": True, "tradingAuthorityExpirationTime": past}), testnet=False, now=now
    )
    assert (restricted.can_trade, restricted.trading_expires_at) == (True, None)  # an IP restriction lifts it
    futures = await usdm.check_health(once_answering({**base, "tradingAuthorityExpirationTime": soon}),
                                      testnet=False, now=now)
    assert (futures.can_trade, futures.trading_expires_at) == (False, None)  # futures: enableFutures; no expiry
    assert (await spot.check_health(once_answering({**base, "enableWithdrawals": True}), testnet=False, now=now)
            ).can_withdraw is True
    with pytest.raises(UnknownFailure):
        await spot.check_health(once_answering({"msg": "?"}), testnet=False, now=now)
    assert await spot.check_health(once_answering(base), testnet=True, now=now) is None  # no sapi on the testnet
    assert await adapter("paper:binance").check_health(once_answering(base), testnet=False, now=now) is None

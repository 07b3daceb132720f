"""The gateway against the fake venues through real ccxt: orders by cost, client ids, errors, futures."""

from __future__ import annotations

import asyncio
import base64
from decimal import Decimal

import pytest

from bot.exchanges.client_ids import client_order_id_for
from bot.exchanges.clients import ClientPool
from bot.exchanges.errors import (
    Action,
    AuthFailure,
    FundsFailure,
    InvalidOrderFailure,
    OrderNotFoundFailure,
    RetryPolicy,
    TransientFailure,
)
from bot.exchanges.gateway import ExchangeGateway
from bot.secret import Credentials

BINANCE = Credentials("g" * 64, "G" * 64)
KRAKEN = Credentials("q" * 56, base64.b64encode(bytes(range(1, 65))).decode())
SYMBOL = {"binance": "BTC/USDT", "binanceusdm": "BTC/USDT:USDT", "kraken": "BTC/USDT"}
CREDS = {"binance": BINANCE, "binanceusdm": BINANCE, "kraken": KRAKEN}


async def no_sleep(_seconds: float) -> None:
    return None


@pytest.fixture
async def gateway(fake_exchanges):
    for venue in ("binance", "binanceusdm"):
        fake_exchanges.books[venue].add_key(
            BINANCE.api_key.reveal(), BINANCE.secret.reveal(), balances={"USDT": "10000"}
        )
    fake_exchanges.books["kraken"].add_key(
        KRAKEN.api_key.reveal(), KRAKEN.secret.reveal(), balances={"USDT": "10000"}
    )
    pool = ClientPool(fake_exchanges.origins, timeout_ms=5_000)
    gw = ExchangeGateway(pool, retry=RetryPolicy(attempts=3, base_delay=0), sleep=no_sleep)
    yield gw
    await gw.close()


def sent(book, suffix: str):
    return [r for r in book.requests if r.path.endswith(suffix)]


@pytest.mark.parametrize("venue", ["binance", "binanceusdm", "kraken"])
async def test_market_buy_by_cost_spends_about_that_much_quote(fake_exchanges, gateway, venue):
    book = fake_exchanges.books[venue]
    price = book.price(SYMBOL[venue])
    cid = client_order_id_for(venue, 7, "buy-by-cost")
    order = await gateway.create_order(
        venue, CREDS[venue], SYMBOL[venue], "buy", "market", cost=Decimal(100), client_order_id=cid
    )
    assert order.client_order_id == cid
    (placed,) = book.all_orders(CREDS[venue].api_key.reveal())
    assert placed.api_key == CREDS[venue].api_key.reveal()
    # at most one amount step below the cost asked (USD-M has no buy-by-cost: amount = cost / price, floored)
    assert Decimal(100) - book.market(SYMBOL[venue]).amount_step * price < placed.cost <= Decimal(100)
    params = (sent(book, "/order") or sent(book, "/AddOrder"))[-1].params
    if venue == "binance":
        assert params["quoteOrderQty"] == "100" and "quantity" not in params
    elif venue == "kraken":
        assert params["volume"] == "100" and "viqc" in params["oflags"]
    else:  # no cost orders on USD-M: amount = cost / price, truncated to the step
        step = (await gateway.market(venue, SYMBOL[venue])).amount_step
        assert Decimal(params["quantity"]) == (Decimal(100) / price).quantize(step, rounding="ROUND_DOWN")


@pytest.mark.parametrize("venue", ["binance", "binanceusdm", "kraken"])
async def test_an_order_is_found_again_by_its_client_order_id(fake_exchanges, gateway, venue):
    book = fake_exchanges.books[venue]
    price = book.price(SYMBOL[venue])
    step = (await gateway.market(venue, SYMBOL[venue])).price_tick
    cid = client_order_id_for(venue, 9, "limit-1")
    limit_price = (price * Decimal("0.5")).quantize(step)
    placed = await gateway.create_order(
        venue,
        CREDS[venue],
        SYMBOL[venue],
        "buy",
        "limit",
        amount=Decimal("0.01"),
        price=limit_price,
        client_order_id=cid,
    )
    found = await gateway.fetch_order_by_client_id(venue, CREDS[venue], SYMBOL[venue], cid)
    assert found is not None and found.id == placed.id and found.status == "open"
    assert found.client_order_id == cid and found.price == limit_price
    missing = client_order_id_for(venue, 9, "never-sent")
    assert await gateway.fetch_order_by_client_id(venue, CREDS[venue], SYMBOL[venue], missing) is None
    open_orders = await gateway.fetch_open_orders(venue, CREDS[venue], SYMBOL[venue])
    assert [o.id for o in open_orders] == [placed.id]
    every_symbol = await gateway.fetch_open_orders(venue, CREDS[venue])  # /panic needs all symbols
    assert [o.id for o in every_symbol] == [placed.id]
    canceled = await gateway.cancel_order(venue, CREDS[venue], SYMBOL[venue], client_order_id=cid)
    assert canceled.client_order_id == cid
    after = await gateway.fetch_order_by_client_id(venue, CREDS[venue], SYMBOL[venue], cid)
    assert after is not None and after.status == "canceled"
    with pytest.raises(OrderNotFoundFailure):
        await gateway.cancel_order(venue, CREDS[venue], SYMBOL[venue], client_order_id=missing)


@pytest.mark.parametrize("venue", ["binance", "kraken"])
async def test_filled_orders_show_up_as_trades_with_decimal_fees(fake_exchanges, gateway, venue):
    await gateway.create_order(venue, CREDS[venue], SYMBOL[venue], "buy", "market", cost=Decimal(50))
    trades = await gateway.fetch_my_trades(venue, CREDS[venue], SYMBOL[venue])
    assert len(trades) == 1
    assert trades[0].side == "buy" and isinstance(trades[0].amount, Decimal) and trades[0].fee_cost > 0


async def test_insufficient_funds_is_a_funds_failure(gateway):
    with pytest.raises(FundsFailure) as info:
        await gateway.create_order("binance", BINANCE, "BTC/USDT", "buy", "market", cost=Decimal(50_000))
    assert info.value.action is Action.FUNDS


async def test_an_order_below_the_minimum_is_an_invalid_order(gateway):
    with pytest.raises(InvalidOrderFailure) as info:
        await gateway.create_order(
            "kraken", KRAKEN, "BTC/USDT", "buy", "limit", amount=Decimal("0.00001"), price=Decimal(1000)
        )
    assert "refused" in info.value.user_message


async def test_a_revoked_key_is_an_auth_failure_and_is_not_retried(fake_exchanges, gateway):
    book = fake_exchanges.books["binance"]
    await gateway.fetch_balance("binance", BINANCE)  # a success first: ccxt then calls -2015 DDoSProtection
    book.revoke_key(BINANCE.api_key.reveal())
    before = len(sent(book, "/account"))
    with pytest.raises(AuthFailure) as info:
        await gateway.fetch_balance("binance", BINANCE)
    assert len(sent(book, "/account")) == before + 1
    for text in (str(info.value), repr(info.value), info.value.user_message):
        assert BINANCE.api_key.reveal() not in text and BINANCE.secret.reveal() not in text
        assert "signature" not in text


async def test_server_errors_are_retried_then_succeed(fake_exchanges, gateway):
    book = fake_exchanges.books["binance"]
    book.inject("server_error", count=2, path="/api/v3/account")
    balances = await gateway.fetch_balance("binance", BINANCE)
    assert balances["USDT"].free == Decimal(10000)
    assert len(sent(book, "/api/v3/account")) == 3


async def test_a_create_order_timeout_is_not_retried_and_says_the_outcome_is_unknown(fake_exchanges, gateway):
    book = fake_exchanges.books["binance"]
    book.hang_seconds = 1.0
    impatient = ExchangeGateway(ClientPool(fake_exchanges.origins, timeout_ms=600), sleep=no_sleep)
    try:
        await impatient.load_markets("binance")
        book.inject("timeout", path="/api/v3/order")
        cid = client_order_id_for("binance", 1, "timeout")
        with pytest.raises(TransientFailure) as info:
            await impatient.create_order(
                "binance", BINANCE, "BTC/USDT", "buy", "market", cost=Decimal(20), client_order_id=cid
            )
    finally:
        await impatient.close()
    assert info.value.outcome_unknown
    await asyncio.sleep(0.5)  # the fake finishes the hung request: the venue did act on it
    assert len(sent(book, "/api/v3/order")) == 1  # sent once, never retried blindly
    found = await gateway.fetch_order_by_client_id("binance", BINANCE, "BTC/USDT", cid)
    assert found is not None and found.status == "closed"  # reconciliation by client id finds it


async def test_rate_limited_calls_back_off_and_retry(fake_exchanges, gateway):
    book = fake_exchanges.books["kraken"]
    book.inject("rate_limit", path="/0/private/BalanceEx")
    assert (await gateway.fetch_balance("kraken", KRAKEN))["USDT"].total == Decimal(10000)


async def test_an_invalid_nonce_is_resynced_and_retried_once(fake_exchanges, gateway):
    book = fake_exchanges.books["kraken"]
    book.inject("invalid_nonce", path="/0/private/BalanceEx")
    assert (await gateway.fetch_balance("kraken", KRAKEN))["USDT"].total == Decimal(10000)
    assert len(sent(book, "/BalanceEx")) == 2


async def test_market_info_and_precision_helpers_use_the_venue_rules(gateway):
    market = await gateway.market("binance", "BTC/USDT")
    assert market.amount_step == Decimal("0.00001") and market.min_cost == Decimal(10)
    assert await gateway.amount_to_precision("binance", "BTC/USDT", Decimal("0.123456789")) == Decimal(
        "0.12345"
    )
    assert await gateway.price_to_precision("binance", "BTC/USDT", Decimal("50000.126")) == Decimal(
        "50000.13"
    )
    with pytest.raises(InvalidOrderFailure):
        await gateway.amount_to_precision("binance", "BTC/USDT", Decimal("0.000001"))
    with pytest.raises(InvalidOrderFailure):
        await gateway.market("binance", "NOPE/USDT")


async def test_futures_settings_and_positions(fake_exchanges, gateway):
    venue, symbol = "binanceusdm", "BTC/USDT:USDT"
    assert await gateway.fetch_position_mode(venue, BINANCE) is False
    await gateway.set_leverage(venue, BINANCE, symbol, 5)
    await gateway.set_margin_mode(venue, BINANCE, symbol, "isolated")
    await gateway.set_margin_mode(venue, BINANCE, symbol, "isolated")  # already set: still success
    account = fake_exchanges.books[venue].keys[BINANCE.api_key.reveal()]
    assert account.leverage["BTC/USDT:USDT"] == 5 and account.margin_type["BTC/USDT:USDT"] == "isolated"
    await gateway.create_order(venue, BINANCE, symbol, "buy", "market", amount=Decimal("0.01"))
    positions = await gateway.fetch_positions(venue, BINANCE, [symbol])
    assert len(positions) == 1
    assert positions[0].side == "long" and positions[0].contracts == Decimal("0.01")


async def test_the_mark_price_is_the_venues_premium_index(fake_exchanges, gateway):
    book, symbol = fake_exchanges.books["binanceusdm"], "BTC/USDT:USDT"
    book.set_price(symbol, "30000")
    book.set_mark(symbol, "30012.34")
    assert await gateway.fetch_mark_price("binanceusdm", symbol) == Decimal("30012.34")
    assert sent(book, "/premiumIndex")
    with pytest.raises(ValueError, match="not a futures venue"):
        await gateway.fetch_mark_price("binance", "BTC/USDT")


async def test_market_data_goes_through_the_cache(fake_exchanges, gateway):
    for _ in range(3):
        candles = await gateway.fetch_ohlcv("binance", "BTC/USDT", "1d", 10)
        ticker = await gateway.fetch_ticker("binance", "BTC/USDT", round_id=1)
    assert len(candles.closed) == 9 and candles.open is not None
    assert ticker.last == fake_exchanges.books["binance"].price("BTC/USDT")
    assert gateway.market_data.md_requests_per_key() == {
        "binance:BTC/USDT:1d": 1,
        "binance:BTC/USDT:ticker": 1,
    }


async def test_markets_that_failed_to_load_are_loaded_on_the_next_try(fake_exchanges, gateway):
    fake_exchanges.books["binance"].inject("server_error", count=1, path="/api/v3/exchangeInfo")
    market = await gateway.market("binance", "BTC/USDT")
    assert market.min_cost == Decimal(10)
    assert len(sent(fake_exchanges.books["binance"], "/exchangeInfo")) == 2


async def test_a_stored_kraken_secret_that_is_not_base64_pauses_the_account_without_a_request(
    fake_exchanges, gateway
):
    broken = Credentials(KRAKEN.api_key.reveal(), "not base64 at all!")
    await gateway.load_markets("kraken")
    with pytest.raises(AuthFailure) as info:
        await gateway.fetch_balance("kraken", broken)
    assert sent(fake_exchanges.books["kraken"], "/BalanceEx") == []
    assert "not base64 at all" not in str(info.value)


@pytest.mark.parametrize("venue", ["binance", "binanceusdm", "kraken"])
async def test_sending_the_same_client_order_id_twice_returns_the_existing_order(
    fake_exchanges, gateway, venue
):
    book = fake_exchanges.books[venue]
    tick = (await gateway.market(venue, SYMBOL[venue])).price_tick
    price = (book.price(SYMBOL[venue]) * Decimal("0.5")).quantize(tick)
    cid = client_order_id_for(venue, 3, "resent-after-crash")
    args = (venue, CREDS[venue], SYMBOL[venue], "buy", "limit")
    first = await gateway.create_order(*args, amount=Decimal("0.01"), price=price, client_order_id=cid)
    again = await gateway.create_order(*args, amount=Decimal("0.01"), price=price, client_order_id=cid)
    assert again.id == first.id and again.client_order_id == cid
    assert len(book.all_orders(CREDS[venue].api_key.reveal())) == 1

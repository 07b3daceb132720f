"""The fake Kraken spot server, proven through the real ccxt 4.5.90 async `kraken` client."""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
from collections.abc import AsyncIterator, Callable
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources

import aiohttp
import ccxt.async_support as ccxt
import pytest
from aiohttp.test_utils import TestServer

from bot.sandbox import series
from bot.sandbox.exchange_book import ExchangeBook
from bot.sandbox.kraken import (
    kraken_signature,
    kraken_txid,
    make_kraken_app,
    make_kraken_book,
)

SECRET = base64.b64encode(bytes(range(64))).decode()
WITHDRAW_SECRET = base64.b64encode(bytes(range(64, 128))).decode()
FUNDS = {"USD": "20000", "USDT": "5000", "BTC": "1", "ETH": "2"}

MakeClient = Callable[..., ccxt.kraken]


@pytest.fixture
def book() -> ExchangeBook:
    book = make_kraken_book()
    book.add_key("trade-key", SECRET, balances=FUNDS)
    book.add_key("withdraw-key", WITHDRAW_SECRET, can_withdraw=True, balances=FUNDS)
    book.set_price("ETH/USD", "3000")
    book.hang_seconds = 1.0
    return book


@pytest.fixture
async def origin(book: ExchangeBook) -> AsyncIterator[str]:
    server = TestServer(make_kraken_app(book))
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
async def make_client(origin: str) -> AsyncIterator[MakeClient]:
    clients: list[ccxt.kraken] = []

    def make(api_key: str = "trade-key", secret: str = SECRET, **config: object) -> ccxt.kraken:
        client = ccxt.kraken(
            {"apiKey": api_key, "secret": secret, "enableRateLimit": False, "timeout_on_exit": 0, **config}
        )
        client.urls["api"]["public"] = origin
        client.urls["api"]["private"] = origin
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def ex(make_client: MakeClient) -> ccxt.kraken:
    client = make_client()
    await client.load_markets()
    return client


def private_calls(book: ExchangeBook, method: str) -> list:
    return [r for r in book.requests if r.path == f"/0/private/{method}"]


# ------------------------------------------------------------------------------------------ public data
async def test_load_markets_parses_kraken_pairs_into_unified_symbols(make_client: MakeClient) -> None:
    client = make_client()
    markets = await client.load_markets()

    assert {"BTC/USD", "BTC/USDT", "ETH/USD", "ETH/USDT", "ETH/BTC"} <= set(markets)
    btc_usd = markets["BTC/USD"]
    assert (btc_usd["id"], btc_usd["altname"], btc_usd["baseId"], btc_usd["quoteId"]) == (
        "XXBTZUSD",
        "XBTUSD",
        "BTC",
        "USD",
    )
    assert markets["BTC/USDT"]["id"] == "XBTUSDT"  # the real recorded pair
    assert btc_usd["precision"] == {"amount": 1e-08, "price": 0.1}
    assert btc_usd["limits"]["amount"]["min"] == 0.00005
    assert btc_usd["limits"]["cost"]["min"] == 0.5
    assert (btc_usd["maker"], btc_usd["taker"]) == (0.0025, 0.004)
    assert client.currencies["BTC"]["id"] == "XXBT"
    assert client.currencies["USD"]["id"] == "ZUSD"


async def test_fetch_ticker_reports_the_book_price(ex: ccxt.kraken, book: ExchangeBook) -> None:
    book.set_price("ETH/USD", "3012.34")
    ticker = await ex.fetch_ticker("ETH/USD")
    assert (ticker["symbol"], ticker["last"], ticker["bid"], ticker["ask"]) == ("ETH/USD", 3012.34, 3012.34, 3012.34)


async def test_fetch_ohlcv_serves_the_recorded_btc_candles_on_krakens_tick(ex: ccxt.kraken) -> None:
    recorded = series.recorded("BTC", "1m")
    start = series.FEED_START  # the feed opens at this recorded minute
    candles = await ex.fetch_ohlcv("BTC/USD", "1m", limit=5)

    assert len(candles) == 5
    tick = Decimal("0.1")  # XXBTZUSD's tick_size: Binance's 0.01 prices are rounded to it

    def on_tick(value: Decimal) -> float:
        return float((value / tick).to_integral_value(ROUND_HALF_UP) * tick)

    rows = recorded[start - 4 : start + 1]
    expected = [[*map(on_tick, (r.open, r.high, r.low, r.close)), float(r.volume)] for r in rows]
    assert [c[1:] for c in candles] == expected
    assert all(b[0] - a[0] == 60_000 for a, b in itertools.pairwise(candles))


async def test_fetch_time_answers_the_book_clock(ex: ccxt.kraken, book: ExchangeBook) -> None:
    assert abs(await ex.fetch_time() - book.now_ms()) < 2000


# ------------------------------------------------------------------------------------------ balances
async def test_fetch_balance_reports_totals_and_amounts_held_by_open_orders(ex: ccxt.kraken) -> None:
    await ex.create_order("ETH/USD", "limit", "buy", 1, 2500)
    balance = await ex.fetch_balance()

    assert balance["total"]["USD"] == 20000
    assert balance["total"]["BTC"] == 1
    assert balance["used"]["USD"] == 2500 * (1 + 0.004)  # reserved with the worst-case fee
    assert balance["free"]["USD"] == 20000 - 2510


# ------------------------------------------------------------------------------------------ orders
async def test_market_buy_fills_at_the_book_price_with_the_taker_fee(ex: ccxt.kraken, book: ExchangeBook) -> None:
    created = await ex.create_order("ETH/USD", "market", "buy", 0.5)
    order = await ex.fetch_order(created["id"])

    assert (order["status"], order["filled"], order["average"]) == ("closed", 0.5, 3000)
    # ccxt 4.5.90 leaves `fee.cost` a string for kraken orders; `fees` holds the parsed number
    assert order["fees"] == [{"cost": 6.0, "rate": None, "currency": "USD"}]
    assert private_calls(book, "AddOrder")[-1].params["volume"] == "0.5"
    balance = await ex.fetch_balance()
    assert (balance["total"]["ETH"], balance["total"]["USD"]) == (2.5, 20000 - 1500 - 6)


async def test_market_buy_by_cost_sends_viqc_and_spends_at_most_the_cost(ex: ccxt.kraken, book: ExchangeBook) -> None:
    created = await ex.create_order("ETH/USD", "market", "buy", None, params={"cost": 60})
    sent = private_calls(book, "AddOrder")[-1].params

    assert (sent["volume"], sent["oflags"]) == ("60", "viqc")
    assert created["cost"] == 60  # ccxt reads the quote amount back from the order description
    order = await ex.fetch_order(created["id"])
    assert order["filled"] == 0.02
    assert order["cost"] == 60


async def test_limit_order_with_client_order_id_rests_then_fills_when_the_price_crosses(
    ex: ccxt.kraken, book: ExchangeBook
) -> None:
    created = await ex.create_order("ETH/USD", "limit", "buy", 0.5, 2900, params={"clientOrderId": "intent-7"})
    assert private_calls(book, "AddOrder")[-1].params["cl_ord_id"] == "intent-7"
    assert created["clientOrderId"] is None  # Kraken's AddOrder echoes only descr and txid

    [resting] = await ex.fetch_open_orders(params={"clientOrderId": "intent-7"})
    assert (resting["id"], resting["clientOrderId"], resting["status"]) == (created["id"], "intent-7", "open")
    assert (resting["price"], resting["amount"], resting["filled"]) == (2900, 0.5, 0)

    book.set_price("ETH/USD", "2950")
    assert await ex.fetch_closed_orders(params={"clientOrderId": "intent-7"}) == []
    book.set_price("ETH/USD", "2899")
    assert await ex.fetch_open_orders() == []
    [closed] = await ex.fetch_closed_orders(params={"clientOrderId": "intent-7"})
    assert (closed["id"], closed["status"], closed["filled"], closed["average"]) == (created["id"], "closed", 0.5, 2900)

    [trade] = await ex.fetch_my_trades()
    assert (trade["order"], trade["symbol"], trade["side"], trade["price"], trade["amount"]) == (
        created["id"],
        "ETH/USD",
        "buy",
        2900,
        0.5,
    )
    assert trade["takerOrMaker"] == "maker"
    assert trade["fee"] == {"cost": 3.625, "currency": "USD"}  # 0.25 % maker fee on 1450


async def test_a_hold_rests_the_order_at_once_and_only_delays_the_answer(ex: ccxt.kraken, book: ExchangeBook) -> None:
    book.inject("hold", path="AddOrder", seconds=0.6)
    sending = asyncio.ensure_future(
        ex.create_order("ETH/USD", "limit", "buy", 0.5, 2900, params={"clientOrderId": "held-2"})
    )
    deadline = asyncio.get_running_loop().time() + 0.5
    while not book.open_orders("trade-key"):
        assert asyncio.get_running_loop().time() < deadline, "the held order was not placed at once"
        await asyncio.sleep(0.01)
    assert not sending.done()
    created = await sending
    [resting] = await ex.fetch_open_orders(params={"clientOrderId": "held-2"})
    assert resting["id"] == created["id"]


async def test_open_and_closed_orders_filter_by_userref(ex: ccxt.kraken, book: ExchangeBook) -> None:
    tagged = await ex.create_order("ETH/USD", "limit", "buy", 0.1, 2000, params={"userref": 42})
    await ex.create_order("ETH/USD", "limit", "buy", 0.1, 2001)

    [found] = await ex.fetch_open_orders(params={"userref": 42})
    assert (found["id"], found["clientOrderId"]) == (tagged["id"], "42")

    await ex.cancel_order(tagged["id"])
    [canceled] = await ex.fetch_closed_orders(params={"userref": 42})
    assert (canceled["id"], canceled["status"]) == (tagged["id"], "canceled")
    assert canceled["info"]["reason"] == "User requested"


async def test_cancel_order_by_txid_and_by_client_order_id(ex: ccxt.kraken, book: ExchangeBook) -> None:
    by_id = await ex.create_order("ETH/USD", "limit", "sell", 0.2, 3500)
    await ex.create_order("ETH/USD", "limit", "sell", 0.3, 3600, params={"clientOrderId": "c-1"})

    await ex.cancel_order(by_id["id"])
    await ex.cancel_order(None, params={"clientOrderId": "c-1"})

    assert private_calls(book, "CancelOrder")[-1].params.get("cl_ord_id") == "c-1"
    assert await ex.fetch_open_orders() == []
    assert sorted(o["status"] for o in await ex.fetch_closed_orders()) == ["canceled", "canceled"]
    balance = await ex.fetch_balance()
    assert balance["used"]["ETH"] == 0


async def test_cancel_of_an_unknown_order_raises_order_not_found(ex: ccxt.kraken) -> None:
    with pytest.raises(ccxt.OrderNotFound):
        await ex.cancel_order(kraken_txid(999))


async def test_order_refusals_map_to_kraken_errors_and_ccxt_classes(ex: ccxt.kraken) -> None:
    with pytest.raises(ccxt.InsufficientFunds, match="EOrder:Insufficient funds"):
        await ex.create_order("ETH/USD", "market", "buy", 10)
    with pytest.raises(ccxt.InvalidOrder, match="EOrder:Order minimum not met"):
        await ex.create_order("ETH/USD", "limit", "buy", 0.0001, 2000)


async def test_order_body_has_the_recorded_query_orders_fields(ex: ccxt.kraken) -> None:
    recorded_body = json.loads(
        (resources.files("bot.sandbox") / "data" / "kraken_query_orders_closed_market.json").read_text()
    )
    [recorded] = recorded_body["result"].values()
    created = await ex.create_order("ETH/USD", "market", "buy", 0.1)
    order = await ex.fetch_order(created["id"])  # ccxt asks with trades=True, as in the recording

    served = dict(order["info"])
    served.pop("id")  # ccxt injects the txid
    assert set(served) == set(recorded)
    assert set(served["descr"]) == set(recorded["descr"])
    assert len(served["trades"]) == 1


# ------------------------------------------------------------------------------------------ authentication
async def test_valid_signature_is_recorded_as_verified(ex: ccxt.kraken, book: ExchangeBook) -> None:
    await ex.fetch_balance()
    [call] = private_calls(book, "BalanceEx")
    assert (call.api_key, call.signature_valid) == ("trade-key", True)


async def test_wrong_secret_surfaces_as_plain_exchange_error(make_client: MakeClient, book: ExchangeBook) -> None:
    client = make_client(secret=WITHDRAW_SECRET)  # valid base64, not this key's secret
    await client.load_markets()
    with pytest.raises(ccxt.ExchangeError, match="EAPI:Invalid signature") as caught:
        await client.fetch_balance()
    # ccxt 4.5.90 has no mapping for it: not AuthenticationError, so map it ourselves.
    assert type(caught.value) is ccxt.ExchangeError
    assert private_calls(book, "BalanceEx")[-1].signature_valid is False


async def test_unknown_and_revoked_keys_raise_authentication_error(make_client: MakeClient, book: ExchangeBook) -> None:
    stranger = make_client(api_key="nobody")
    with pytest.raises(ccxt.AuthenticationError, match="EAPI:Invalid key"):
        await stranger.fetch_balance()

    book.revoke_key("trade-key")
    revoked = make_client()
    with pytest.raises(ccxt.AuthenticationError, match="EAPI:Invalid key"):
        await revoked.fetch_balance()


async def test_malformed_secret_raises_binascii_error_before_any_request(
    make_client: MakeClient, book: ExchangeBook
) -> None:
    client = make_client(secret="not base64!")
    await client.load_markets()
    with pytest.raises(binascii.Error):  # not a ccxt.BaseError: `except ccxt.BaseError` misses it
        await client.fetch_balance()
    assert private_calls(book, "BalanceEx") == []


async def test_reused_nonce_raises_invalid_nonce(make_client: MakeClient, book: ExchangeBook) -> None:
    first = make_client()
    await first.fetch_balance()
    lagging = make_client(options={"timeDifference": 60_000})  # its nonces are a minute behind
    with pytest.raises(ccxt.InvalidNonce, match="EAPI:Invalid nonce"):
        await lagging.fetch_balance()


async def test_same_nonce_twice_is_refused_on_the_wire(origin: str) -> None:
    body = "nonce=1700000000000"
    headers = {
        "API-Key": "trade-key",
        "API-Sign": kraken_signature(SECRET, "/0/private/Balance", "1700000000000", body),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    async with aiohttp.ClientSession() as session:
        answers = []
        for _ in range(2):
            async with session.post(f"{origin}/0/private/Balance", data=body, headers=headers) as response:
                assert response.status == 200
                answers.append(await response.json())
    assert answers[0]["error"] == []
    assert answers[0]["result"]["ZUSD"] == "20000.0000"
    assert answers[1] == {"error": ["EAPI:Invalid nonce"]}


# ------------------------------------------------------------------------------------------ permissions
async def test_withdraw_methods_probe_refuses_a_trade_only_key(ex: ccxt.kraken) -> None:
    with pytest.raises(ccxt.PermissionDenied, match="EGeneral:Permission denied"):
        await ex.private_post_withdrawmethods({"asset": "XBT"})


async def test_withdraw_methods_probe_answers_a_withdraw_enabled_key(make_client: MakeClient) -> None:
    client = make_client(api_key="withdraw-key", secret=WITHDRAW_SECRET)
    response = await client.private_post_withdrawmethods({"asset": "XBT"})
    assert response["error"] == []
    assert {m["asset"] for m in response["result"]} == {"XXBT"}
    assert {m["method"] for m in response["result"]} >= {"Bitcoin"}


# ------------------------------------------------------------------------------------------ faults
@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("rate_limit", ccxt.DDoSProtection),  # "EAPI:Rate limit exceeded" is an exact match to DDoSProtection
        ("invalid_nonce", ccxt.InvalidNonce),
        ("revoked", ccxt.AuthenticationError),
        ("server_error", ccxt.ExchangeNotAvailable),
    ],
)
async def test_injected_faults_surface_as_ccxt_errors(
    ex: ccxt.kraken, book: ExchangeBook, fault: str, error: type[Exception]
) -> None:
    book.inject(fault, path="/0/private/BalanceEx")
    with pytest.raises(error):
        await ex.fetch_balance()
    assert (await ex.fetch_balance())["total"]["USD"] == 20000  # one request only


async def test_injected_timeout_hangs_until_the_client_gives_up(make_client: MakeClient, book: ExchangeBook) -> None:
    client = make_client(timeout=200)
    await client.load_markets()
    book.inject("timeout", path="/0/public/Ticker")
    with pytest.raises(ccxt.RequestTimeout):
        await client.fetch_ticker("ETH/USD")


async def test_public_rate_limit_is_refused_as_too_many_requests(ex: ccxt.kraken, book: ExchangeBook) -> None:
    book.inject("rate_limit", path="/0/public/Ticker")
    with pytest.raises(ccxt.DDoSProtection, match="EGeneral:Too many requests"):
        await ex.fetch_ticker("ETH/USD")


def test_kraken_markets_round_fees_to_the_pair_cost_decimals(book: ExchangeBook) -> None:
    book.set_price("ETH/USD", "3000.01")
    order = book.place_order("trade-key", "ETH/USD", "buy", "market", amount="0.001")
    assert order.fee == Decimal("0.01200")  # 0.4 % of 3.00001 = 0.01200004, at XETHZUSD's 5 cost decimals
    assert order.fee.as_tuple().exponent == -5


async def test_partially_filled_order_stays_open_then_cancels_with_its_fill(
    ex: ccxt.kraken, book: ExchangeBook
) -> None:
    created = await ex.create_order("ETH/USD", "limit", "buy", 1, 2800, params={"clientOrderId": "part"})
    book.fill_partially(book.open_orders("trade-key")[0].id, "0.4")

    [resting] = await ex.fetch_open_orders()
    assert (resting["status"], resting["filled"], resting["remaining"]) == ("open", 0.4, 0.6)
    await ex.cancel_order(created["id"])
    [canceled] = await ex.fetch_closed_orders(params={"clientOrderId": "part"})
    assert (canceled["status"], canceled["filled"], canceled["average"]) == ("canceled", 0.4, 2800)
    assert (await ex.fetch_balance())["total"]["ETH"] == 2.4


async def test_client_order_id_in_use_by_an_open_order_is_refused(ex: ccxt.kraken) -> None:
    await ex.create_order("ETH/USD", "limit", "buy", 0.1, 2000, params={"clientOrderId": "once"})
    with pytest.raises(ccxt.ExchangeError, match="cl_ord_id"):
        await ex.create_order("ETH/USD", "limit", "buy", 0.1, 2001, params={"clientOrderId": "once"})


async def test_public_pairs_answer_by_id_altname_or_wsname_and_refuse_unknown(ex: ccxt.kraken) -> None:
    for name in ("XXBTZUSD", "XBTUSD", "XBT/USD"):
        response = await ex.public_get_assetpairs({"pair": name})
        assert list(response["result"]) == ["XXBTZUSD"]
    with pytest.raises(ccxt.ExchangeError, match="EQuery:Unknown asset pair"):
        await ex.public_get_ticker({"pair": "NOPEUSD"})


async def test_launcher_serves_kraken_to_a_client_pointed_by_origin(fake_exchanges, exchange_client) -> None:
    book = fake_exchanges.books["kraken"]
    book.add_key("launch-key", SECRET, balances={"USD": "100"})
    client = exchange_client("kraken", "launch-key", SECRET)

    assert (await client.fetch_balance())["total"]["USD"] == 100
    assert (await client.fetch_ticker("BTC/USD"))["last"] == float(book.price("BTC/USD"))

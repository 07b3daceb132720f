"""The fake Binance Spot and USD-M servers, proven through real ccxt clients parsing what they serve."""

from __future__ import annotations

import asyncio
import sys
import time
from decimal import Decimal
from pathlib import Path

import aiohttp
import ccxt.async_support as ccxt
import pytest

from bot.sandbox.binance import make_binance_book
from bot.sandbox.exchanges import sandbox_credentials, start_fake_exchanges
from tests.plugins.exchanges import make_client, point_at

BTC = "BTC/USDT"
BTC_PERP = "BTC/USDT:USDT"


@pytest.fixture
def spot(fake_exchanges):
    book = fake_exchanges.books["binance"]
    book.set_price(BTC, "20000")
    book.add_key("spot-key", "spot-secret", balances={"USDT": "1000"})
    return book


@pytest.fixture
def usdm(fake_exchanges):
    book = fake_exchanges.books["binanceusdm"]
    book.set_price(BTC_PERP, "20000")
    book.add_key("fut-key", "fut-secret", balances={"USDT": "1000"})
    return book


# ------------------------------------------------------------------------------------------- spot: market data
async def test_load_markets_serves_the_recorded_filters(fake_exchanges, exchange_client):
    client = exchange_client("binance")
    markets = await client.load_markets()
    assert sorted(markets) == ["BNB/USDT", "BTC/USDT", "ETH/USDT"]
    btc = markets[BTC]
    assert btc["precision"]["amount"] == 0.00001
    assert btc["precision"]["price"] == 0.01
    assert btc["limits"]["amount"]["min"] == 0.00001
    assert btc["limits"]["cost"]["min"] == 10
    assert [r.path for r in fake_exchanges.books["binance"].requests] == ["/api/v3/exchangeInfo"]


async def test_ticker_follows_the_scripted_price(spot, exchange_client):
    client = exchange_client("binance")
    assert (await client.fetch_ticker(BTC))["last"] == 20000
    spot.set_price(BTC, "21000.5")
    ticker = await client.fetch_ticker(BTC)
    assert ticker["last"] == 21000.5
    assert ticker["symbol"] == BTC


async def test_ohlcv_returns_the_recorded_candles_with_the_open_one_last(spot, exchange_client):
    client = exchange_client("binance")
    candles = await client.fetch_ohlcv(BTC, "1d", limit=3)
    expected = spot.candles(BTC, "1d", limit=3)
    assert [c[0] for c in candles] == [r.timestamp_ms for r in expected]
    assert [c[1:5] for c in candles[:-1]] == [
        [float(r.open), float(r.high), float(r.low), float(r.close)] for r in expected[:-1]
    ]
    assert candles[-1][4] == 20000  # the open candle closes at the live price
    day = 86_400_000
    assert candles[-1][0] == int(time.time() * 1000) // day * day


# ------------------------------------------------------------------------------------------- spot: trading
async def test_market_buy_by_cost_fills_and_moves_balances(spot, exchange_client):
    client = exchange_client("binance", "spot-key", "spot-secret")
    order = await client.create_order(BTC, "market", "buy", None, None, {"cost": 50, "clientOrderId": "dca-1"})
    assert order["status"] == "closed"
    assert order["clientOrderId"] == "dca-1"
    assert order["amount"] == 0.0025
    assert order["filled"] == 0.0025
    assert order["cost"] == 50
    assert order["average"] == 20000
    assert order["fee"] == {"currency": "USDT", "cost": 0.05}
    balance = await client.fetch_balance()
    assert balance["USDT"]["free"] == 949.95
    assert balance["BTC"]["free"] == 0.0025
    sent = next(r for r in spot.requests if r.path == "/api/v3/order")
    assert sent.params["quoteOrderQty"] == "50" and sent.params["newClientOrderId"] == "dca-1"


async def test_limit_order_rests_then_fills_partially_and_fully_as_the_price_crosses(spot, exchange_client):
    client = exchange_client("binance", "spot-key", "spot-secret")
    order = await client.create_order(BTC, "limit", "buy", 0.001, 19000, {"clientOrderId": "grid-1"})
    assert order["status"] == "open" and order["filled"] == 0
    balance = await client.fetch_balance()
    assert balance["USDT"]["used"] == 19.019  # amount × price × (1 + fee) reserved

    spot.set_liquidity(BTC, "0.0004")
    spot.set_price(BTC, "18990")
    partial = await client.fetch_order(order["id"], BTC)
    assert (partial["status"], partial["filled"], partial["remaining"]) == ("open", 0.0004, 0.0006)
    assert partial["info"]["status"] == "PARTIALLY_FILLED"

    spot.set_liquidity(BTC, None)
    spot.set_price(BTC, "18900")
    done = await client.fetch_order(None, BTC, {"clientOrderId": "grid-1"})
    assert (done["id"], done["status"], done["filled"], done["cost"]) == (order["id"], "closed", 0.001, 19)
    assert await client.fetch_open_orders(BTC) == []

    trades = await client.fetch_my_trades(BTC)
    assert [(t["amount"], t["price"], t["takerOrMaker"], t["fee"]["cost"]) for t in trades] == [
        (0.0004, 19000, "maker", 0.0076),
        (0.0006, 19000, "maker", 0.0114),
    ]
    assert all(t["order"] == order["id"] for t in trades)
    balance = await client.fetch_balance()
    assert balance["USDT"]["total"] == 980.981 and balance["USDT"]["used"] == 0
    assert balance["BTC"]["total"] == 0.001


async def test_open_orders_list_and_cancel_releases_the_reserve(spot, exchange_client):
    client = exchange_client("binance", "spot-key", "spot-secret")
    order = await client.create_order(BTC, "limit", "buy", 0.001, 15000, {"clientOrderId": "grid-2"})
    opened = await client.fetch_open_orders(BTC)
    assert [(o["id"], o["clientOrderId"], o["price"], o["amount"]) for o in opened] == [
        (order["id"], "grid-2", 15000, 0.001)
    ]
    canceled = await client.cancel_order(None, BTC, {"clientOrderId": "grid-2"})
    assert canceled["id"] == order["id"] and canceled["status"] == "canceled"
    assert canceled["info"]["origClientOrderId"] == "grid-2"
    assert (await client.fetch_balance())["USDT"]["free"] == 1000
    with pytest.raises(ccxt.OrderNotFound, match="-2011"):
        await client.cancel_order(order["id"], BTC)


async def test_all_orders_serve_fetch_orders_and_fetch_closed_orders(spot, exchange_client):
    client = exchange_client("binance", "spot-key", "spot-secret")
    resting = await client.create_order(BTC, "limit", "buy", 0.001, 15000)
    filled = await client.create_order(BTC, "market", "buy", 0.001)
    assert [o["id"] for o in await client.fetch_orders(BTC)] == [resting["id"], filled["id"]]
    assert [(o["id"], o["status"]) for o in await client.fetch_closed_orders(BTC)] == [(filled["id"], "closed")]


async def test_a_duplicate_open_client_order_id_is_refused(spot, exchange_client):
    client = exchange_client("binance", "spot-key", "spot-secret")
    await client.create_order(BTC, "limit", "buy", 0.001, 15000, {"clientOrderId": "same"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        await client.create_order(BTC, "limit", "buy", 0.001, 15000, {"clientOrderId": "same"})


async def test_insufficient_balance_raises_insufficient_funds(spot, exchange_client):
    client = exchange_client("binance", "spot-key", "spot-secret")
    with pytest.raises(ccxt.InsufficientFunds, match="insufficient balance"):
        await client.create_order(BTC, "market", "buy", 0.1)
    assert spot.open_orders("spot-key") == []


async def test_an_order_below_the_minimum_notional_is_a_filter_failure(spot, exchange_client):
    client = exchange_client("binance", "spot-key", "spot-secret")
    with pytest.raises(ccxt.BadRequest, match="Filter failure: NOTIONAL"):
        await client.create_order(BTC, "market", "buy", 0.0001)


# ------------------------------------------------------------------------------------------- auth and keys
async def test_every_private_call_reaches_the_fake_correctly_signed(spot, exchange_client):
    client = exchange_client("binance", "spot-key", "spot-secret")
    await client.fetch_balance()
    await client.create_order(BTC, "limit", "buy", 0.001, 15000)
    await client.fetch_open_orders(BTC)
    private = [r for r in spot.requests if r.api_key is not None]
    assert [r.path for r in private] == ["/api/v3/account", "/api/v3/order", "/api/v3/openOrders"]
    assert all(r.api_key == "spot-key" and r.signature_valid and r.status == 200 for r in private)


async def test_a_wrong_secret_is_an_authentication_error(spot, exchange_client):
    client = exchange_client("binance", "spot-key", "not-the-secret")
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        await client.fetch_balance()
    assert spot.requests[-1].signature_valid is False


async def test_a_revoked_or_unknown_key_gets_2015(spot, exchange_client):
    spot.revoke_key("spot-key")
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        await exchange_client("binance", "spot-key", "spot-secret").fetch_balance()
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        await exchange_client("binance", "nobody", "x").fetch_balance()
    assert spot.requests[-1].status == 401


async def test_api_restrictions_report_the_key_flags(spot, exchange_client):
    spot.add_key(
        "w-key", "w-secret", can_withdraw=True, ip_restrict=True, trading_authority_expiration_ms=1628985600000
    )
    flags = await exchange_client("binance", "w-key", "w-secret").sapi_get_account_apirestrictions()
    assert flags["enableWithdrawals"] is True
    assert flags["ipRestrict"] is True
    assert flags["enableSpotAndMarginTrading"] is True
    assert flags["enableReading"] is True
    assert flags["tradingAuthorityExpirationTime"] == 1628985600000
    assert flags["createTime"] == spot.keys["w-key"].created_ms
    safe = await exchange_client("binance", "spot-key", "spot-secret").sapi_get_account_apirestrictions()
    assert safe["enableWithdrawals"] is False and "tradingAuthorityExpirationTime" not in safe
    expected = {
        "ipRestrict", "createTime", "enableReading", "enableWithdrawals", "enableInternalTransfer", "enableMargin",
        "enableFutures", "permitsUniversalTransfer", "enableVanillaOptions", "enableSpotAndMarginTrading",
        "enablePortfolioMarginTrading", "enableFixApiTrade", "enableFixReadOnly",
    }  # fmt: skip
    assert set(safe) == expected


async def test_a_key_edited_after_creation_reports_its_new_restrictions_and_sapi_counts_apart(
    spot, exchange_client
):
    spot.add_key("e-key", "e-secret")
    client = exchange_client("binance", "e-key", "e-secret")
    with pytest.raises(ValueError, match="restricted to trusted IPs"):
        spot.edit_key("e-key", can_withdraw=True)  # Binance: withdrawals need an IP restriction
    spot.edit_key("e-key", ip_restrict=True)
    spot.edit_key("e-key", can_withdraw=True, trading_authority_expiration_ms=int(time.time() * 1000) - 1)
    flags = await client.sapi_get_account_apirestrictions()
    assert (flags["enableWithdrawals"], flags["ipRestrict"], flags["enableSpotAndMarginTrading"]) == (True, True, True)
    spot.edit_key("e-key", ip_restrict=False, can_withdraw=False)  # unrestricted and past its time: trading gone
    flags = await client.sapi_get_account_apirestrictions()
    assert (flags["enableWithdrawals"], flags["enableSpotAndMarginTrading"]) == (False, False)
    assert client.last_response_headers["X-SAPI-USED-IP-WEIGHT-1M"] == "2"  # its own count
    assert "X-MBX-USED-WEIGHT-1M" not in client.last_response_headers
    spot.edit_key("e-key", can_trade=False, trading_authority_expiration_ms=None)
    flags = await client.sapi_get_account_apirestrictions()
    assert flags["enableSpotAndMarginTrading"] is False and "tradingAuthorityExpirationTime" not in flags


async def test_an_expired_unrestricted_key_can_read_but_trading_gets_2015_which_ccxt_calls_ddos(spot, exchange_client):
    spot.add_key("old", "s", trading_authority_expiration_ms=int(time.time() * 1000) - 1000)
    client = exchange_client("binance", "old", "s")
    assert (await client.fetch_balance())["USDT"]["free"] == 1000
    # after one successful signed call ccxt reports -2015 as DDoSProtection (LIBRARY-FACTS): map by code
    with pytest.raises(ccxt.DDoSProtection, match="-2015"):
        await client.create_order(BTC, "market", "buy", 0.001)


async def test_a_stale_timestamp_is_rejected_with_1021():
    ahead = make_binance_book("spot", clock=lambda: int(time.time() * 1000) + 60_000)
    ahead.add_key("k", "s")
    running = await start_fake_exchanges(books={"binance": ahead})
    client = make_client(running, "binance", "k", "s")
    try:
        with pytest.raises(ccxt.InvalidNonce, match="-1021"):
            await client.fetch_balance()
    finally:
        await client.close()
        await running.close()


# ------------------------------------------------------------------------------------------- faults and weight
@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("rate_limit", (ccxt.DDoSProtection, ccxt.RateLimitExceeded)),
        ("ban", ccxt.DDoSProtection),
        ("server_error", ccxt.ExchangeNotAvailable),
        ("invalid_nonce", ccxt.InvalidNonce),
        ("revoked", ccxt.AuthenticationError),
    ],
)
async def test_an_injected_fault_surfaces_as_its_ccxt_error_once(spot, exchange_client, fault, error):
    client = exchange_client("binance", "spot-key", "spot-secret")
    spot.inject(fault, path="/api/v3/account")
    with pytest.raises(error):
        await client.fetch_balance()
    assert (await client.fetch_balance())["USDT"]["free"] == 1000


async def test_a_hang_longer_than_the_client_timeout_is_a_request_timeout(spot, exchange_client):
    spot.hang_seconds = 0.3
    client = exchange_client("binance", "spot-key", "spot-secret", timeout=100)
    spot.inject("timeout", path="/api/v3/ticker")
    with pytest.raises(ccxt.RequestTimeout):
        await client.fetch_ticker(BTC)


async def test_a_hold_places_the_order_at_once_and_only_delays_the_answer(spot, exchange_client):
    client = exchange_client("binance", "spot-key", "spot-secret")
    spot.inject("hold", path="/api/v3/order", method="POST", seconds=0.6)
    started = time.monotonic()
    sending = asyncio.ensure_future(
        client.create_order(BTC, "limit", "buy", 0.001, 19000, {"clientOrderId": "held-1"})
    )
    while not spot.open_orders("spot-key"):
        assert time.monotonic() - started < 0.5, "the held order was not placed at once"
        await asyncio.sleep(0.01)
    assert not sending.done()  # on the book, while the client still waits for the answer
    placed = await sending
    assert time.monotonic() - started >= 0.6
    assert placed["clientOrderId"] == "held-1" and placed["status"] == "open"


async def test_used_weight_is_reported_per_ip_and_429_past_the_limit():
    # Binance counts weight per calendar minute: start early in one, so every request below shares it (a test
    # that crossed a minute boundary saw its count reset and no 429).
    second = time.time() % 60
    if second > 45:
        await asyncio.sleep(60.5 - second)
    running = await start_fake_exchanges(books={"binance": make_binance_book("spot")}, weight_limits={"binance": 45})
    origin = running.origins["binance"]
    try:
        async with aiohttp.ClientSession() as http:
            seen = []
            for _ in range(2):
                async with http.get(f"{origin}/api/v3/exchangeInfo") as resp:
                    assert resp.status == 200
                    seen.append(int(resp.headers["X-MBX-USED-WEIGHT-1M"]))
            async with http.get(f"{origin}/api/v3/ticker/price", params={"symbol": "BTCUSDT"}) as resp:
                seen.append(int(resp.headers["X-MBX-USED-WEIGHT-1M"]))
            assert seen == [20, 40, 42]
            async with http.get(f"{origin}/api/v3/exchangeInfo") as resp:
                assert resp.status == 429
                body = await resp.json()
                assert body["code"] == -1003 and "request weight per minute is 45" in body["msg"]
        client = make_client(running, "binance")
        try:
            with pytest.raises(ccxt.DDoSProtection):
                await client.load_markets()
        finally:
            await client.close()
    finally:
        await running.close()


# ------------------------------------------------------------------------------------------- usdm
async def test_usdm_markets_balance_and_key_permissions(fake_exchanges, usdm, exchange_client):
    client = exchange_client("binanceusdm", "fut-key", "fut-secret")
    markets = await client.load_markets()
    assert sorted(markets) == ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    assert markets[BTC_PERP]["precision"]["amount"] == 0.001 and markets[BTC_PERP]["limits"]["cost"]["min"] == 10
    balance = await client.fetch_balance()
    assert (balance["USDT"]["free"], balance["USDT"]["total"]) == (1000, 1000)
    flags = await client.sapi_get_account_apirestrictions()
    assert flags["enableFutures"] is True
    assert [r.path for r in usdm.requests] == [
        "/fapi/v1/exchangeInfo",
        "/fapi/v3/account",
        "/sapi/v1/account/apiRestrictions",
    ]


async def test_a_key_without_futures_permission_is_refused_on_fapi_but_can_read_its_flags(usdm, exchange_client):
    usdm.add_key("spot-only", "s", futures=False)
    client = exchange_client("binanceusdm", "spot-only", "s")
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        await client.fetch_balance()
    assert (await client.sapi_get_account_apirestrictions())["enableFutures"] is False


async def test_leverage_margin_mode_and_position_mode(usdm, exchange_client):
    client = exchange_client("binanceusdm", "fut-key", "fut-secret")
    assert (await client.set_leverage(10, BTC_PERP))["leverage"] == 10
    assert (await client.set_margin_mode("isolated", BTC_PERP))["msg"] == "success"
    with pytest.raises(ccxt.MarginModeAlreadySet, match="-4046"):
        await client.set_margin_mode("isolated", BTC_PERP)
    account = usdm.keys["fut-key"]
    assert usdm.leverage_of(account, BTC_PERP) == 10 and usdm.margin_type_of(account, BTC_PERP) == "isolated"
    assert (await client.fetch_position_mode())["hedged"] is False
    usdm.add_key("hedge-key", "h", dual_side=True)
    assert (await exchange_client("binanceusdm", "hedge-key", "h").fetch_position_mode())["hedged"] is True


async def test_a_futures_order_opens_then_closes_a_position(usdm, exchange_client):
    client = exchange_client("binanceusdm", "fut-key", "fut-secret")
    await client.set_leverage(10, BTC_PERP)
    order = await client.create_order(BTC_PERP, "market", "buy", 0.01, None, {"clientOrderId": "perp-1"})
    assert (order["status"], order["filled"], order["average"], order["clientOrderId"]) == (
        "closed",
        0.01,
        20000,
        "perp-1",
    )
    usdm.set_price(BTC_PERP, "21000")
    [position] = await client.fetch_positions()
    assert position["symbol"] == BTC_PERP
    assert (position["side"], position["contracts"], position["entryPrice"]) == ("long", 0.01, 20000)
    assert position["unrealizedPnl"] == 10 and position["notional"] == 210
    assert position["initialMargin"] == 21  # notional / leverage 10
    balance = await client.fetch_balance()
    assert balance["USDT"]["total"] == 1009.9  # wallet 1000 − 0.1 taker fee + 10 unrealized
    await client.create_order(BTC_PERP, "market", "sell", 0.01, None, {"reduceOnly": True})
    assert await client.fetch_positions() == []
    trades = await client.fetch_my_trades(BTC_PERP)
    assert [t["info"]["realizedPnl"] for t in trades] == ["0.00000000", "10.00000000"]
    assert [t["fee"]["cost"] for t in trades] == [0.1, 0.105]
    assert (await client.fetch_balance())["USDT"]["total"] == 1009.795


async def test_the_mark_price_follows_the_last_price_until_set_apart_and_values_the_position(usdm, exchange_client):
    client = exchange_client("binanceusdm", "fut-key", "fut-secret")
    assert (await client.fetch_mark_price(BTC_PERP))["markPrice"] == 20000
    await client.create_order(BTC_PERP, "market", "sell", 0.01)
    usdm.set_mark(BTC_PERP, "19900.5")
    assert (await client.fetch_mark_price(BTC_PERP))["markPrice"] == 19900.5
    assert (await client.fetch_ticker(BTC_PERP))["last"] == 20000  # the last trade did not move
    [position] = await client.fetch_positions([BTC_PERP])
    assert (position["markPrice"], position["unrealizedPnl"], position["notional"]) == (19900.5, 0.995, 199.005)
    assert position["info"]["markPrice"] == "19900.50000000"
    marks = await client.fetch_mark_prices()  # every priced market, as premiumIndex without a symbol
    assert marks[BTC_PERP]["markPrice"] == 19900.5
    usdm.set_price(BTC_PERP, "20100")  # a trade: the mark follows the last price again
    assert (await client.fetch_mark_price(BTC_PERP))["markPrice"] == 20100


async def test_a_futures_limit_order_fills_when_the_price_crosses(usdm, exchange_client):
    client = exchange_client("binanceusdm", "fut-key", "fut-secret")
    order = await client.create_order(BTC_PERP, "limit", "sell", 0.002, 20500)
    assert [o["id"] for o in await client.fetch_open_orders(BTC_PERP)] == [order["id"]]
    usdm.set_price(BTC_PERP, "20600")
    filled = await client.fetch_order(order["id"], BTC_PERP)
    assert (filled["status"], filled["filled"], filled["average"]) == ("closed", 0.002, 20500)
    [position] = await client.fetch_positions([BTC_PERP])
    assert (position["side"], position["contracts"]) == ("short", 0.002)


async def test_futures_margin_shortfall_carries_code_2019(usdm, exchange_client):
    client = exchange_client("binanceusdm", "fut-key", "fut-secret")
    with pytest.raises(ccxt.ExchangeError, match="-2019"):
        await client.create_order(BTC_PERP, "market", "buy", 2)  # 40,000 notional / 20× > 1,000


async def test_a_hedge_mode_key_trades_by_position_side(usdm, exchange_client):
    usdm.add_key("hedge-key", "h", dual_side=True)
    client = exchange_client("binanceusdm", "hedge-key", "h")
    await client.create_order(BTC_PERP, "market", "sell", 0.001, None, {"positionSide": "SHORT"})
    [position] = await client.fetch_positions()
    assert (position["side"], position["hedged"], position["info"]["positionSide"]) == ("short", True, "SHORT")
    assert usdm.positions("hedge-key")[1].amount == Decimal("-0.001")


# ------------------------------------------------------------------------------------------- separate process
async def test_the_launcher_runs_the_venues_in_another_process_with_sandbox_keys_and_a_control_api():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.sandbox.exchanges", "--keys", "2", "--balance", "500",
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=20)).decode()
        assert line.startswith("READY STRATA_EXCHANGE_URLS=")
        urls_part, control_part = line.split()[1:]
        origins = dict(item.split("=", 1) for item in urls_part.removeprefix("STRATA_EXCHANGE_URLS=").split(","))
        control = control_part.removeprefix("CONTROL=")
        assert {"binance", "binanceusdm"} <= set(origins)

        async with aiohttp.ClientSession() as http:
            async with http.post(f"{control}/books/binance/price", json={"symbol": BTC, "price": "30000"}) as r:
                assert r.status == 200
            api_key, secret = sandbox_credentials(1)
            client = point_at(
                ccxt.binance({"apiKey": api_key, "secret": secret, "enableRateLimit": False,
                              "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                                          "fetchMargins": False}}),
                origins["binance"],
            )  # fmt: skip
            try:
                assert (await client.fetch_balance())["USDT"]["free"] == 500
                assert (await client.fetch_ticker(BTC))["last"] == 30000
            finally:
                await client.close()
            async with http.get(f"{control}/books/binance/stats") as r:
                stats = await r.json()
            # The benchmarks drop the user-data stream connections and count the reconnects from here.
            ws_url = origins["binance"].replace("http://", "ws://") + "/ws-api/v3"
            async with http.ws_connect(ws_url) as ws:
                async with http.get(f"{control}/streams/binance/stats") as r:
                    before = await r.json()
                async with http.post(f"{control}/streams/binance/drop") as r:
                    assert (await r.json()) == {"dropped": 1}
                closing = await asyncio.wait_for(ws.receive(), timeout=5)
                assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            async with http.get(f"{control}/streams/binance/stats") as r:
                after = await r.json()
            async with http.get(f"{control}/streams/nowhere/stats") as r:
                assert r.status == 404  # a venue without a stream fake: the benchmarks skip it with a line
        assert stats["requests"]["GET /api/v3/account"] == 1
        assert sum(stats["weight_by_ip"].values()) == 20 + 20 + 2  # exchangeInfo + account + ticker
        assert stats["weight_by_path"] == {"GET /api/v3/exchangeInfo": 20, "GET /api/v3/account": 20,
                                           "GET /api/v3/ticker/24hr": 2}
        assert (len(before["attempts"]), before["connections"]) == (1, 1)
        assert (len(after["attempts"]), after["connections"]) == (1, 0)
        assert before["attempts"][0] <= after["now"]
    finally:
        proc.terminate()
        await proc.wait()


async def test_the_price_feed_opens_the_next_recorded_candle_on_its_own(fake_exchanges):
    book = fake_exchanges.books["binance"]
    before = book.candles(BTC, "1m")
    feed = asyncio.create_task(fake_exchanges.run_price_feed(0.01))
    try:
        while len(book.candles(BTC, "1m")) == len(before):
            await asyncio.sleep(0.01)
    finally:
        feed.cancel()
    after = book.candles(BTC, "1m")
    assert len(after) == len(before) + 1
    assert (after[-2].open, after[-2].close) == (before[-1].open, before[-1].close)
    assert book.price(BTC) == after[-1].close

"""Fake Binance Spot and Binance USD-M REST servers (aiohttp) over an `ExchangeBook`.

They answer the endpoints ccxt 4.5.90 calls for markets, balances, tickers, candles, orders, trades, key
permissions and futures settings, in Binance's own JSON shapes (started from recorded responses, see
`data/README.md`), and they are strict where Binance is strict: HMAC-SHA256 signatures over the exact query
string or form body, `X-MBX-APIKEY`, `timestamp`/`recvWindow`, request weight per origin IP per minute
reported in `X-MBX-USED-WEIGHT-1M` (429 past the limit; `sapi` apart, in `X-SAPI-USED-IP-WEIGHT-1M`), and
Binance's error codes and messages. Faults
injected on the book (5xx, hangs, 429, -1021, revoked key, 418 ban) are consumed one per request.

A ccxt client points here by replacing the origin of every URL in `exchange.urls['api']` (paths unchanged):
the spot app serves `/api/v3/…` (and the WebSocket API's user-data stream at `/ws-api/v3`: `binance_ws`) and
the usdm app `/fapi/v1|v2|v3/…` (and its listenKeys' `/private/stream`: `binance_usdm_ws`); both serve
`/sapi/v1/account/apiRestrictions`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from bot.sandbox.exchange_book import (
    BookError,
    D,
    ExchangeBook,
    KeyAccount,
    MarketSpec,
    Order,
    Position,
    Trade,
    timeframe_ms,
)
from bot.sandbox.series import feed_book

SPOT_WEIGHT_LIMIT = 6000
USDM_WEIGHT_LIMIT = 2400
#: Per IP and per IP-limited sapi endpoint (`X-SAPI-USED-IP-WEIGHT-1M`), counted apart from the weight above.
SAPI_WEIGHT_LIMIT = 12_000
SPOT_MAKER_FEE = Decimal("0.001")
SPOT_TAKER_FEE = Decimal("0.001")
# The recorded GET /fapi/v1/commissionRate of BTCUSDT (nautilus http_futures_wallet_commission_rate_btcusdt)
USDM_MAKER_FEE = Decimal("0.0002")
USDM_TAKER_FEE = Decimal("0.0005")
MAX_RECV_WINDOW = 60_000

Json = dict[str, Any] | list[Any]


class BinanceError(Exception):
    """An error answer: HTTP status and Binance's `{"code", "msg"}` body."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"{status} {code} {msg}")
        self.status, self.code, self.msg = status, code, msg


INVALID_KEY = (401, -2015, "Invalid API-key, IP, or permissions for action.")


# ---------------------------------------------------------------------------------------------- data
def load_json(name: str) -> Any:
    """Read a package data file of `bot/sandbox/data`."""
    return json.loads(resources.files("bot.sandbox").joinpath("data", name).read_text())


def _filters(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["filterType"]: f for f in raw.get("filters", [])}


def binance_markets(info: dict[str, Any], *, futures: bool) -> list[MarketSpec]:
    """Build book markets from a recorded exchangeInfo, keeping the real filters."""
    markets = []
    for raw in info["symbols"]:
        filters = _filters(raw)
        price_filter, lot = filters["PRICE_FILTER"], filters["LOT_SIZE"]
        notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
        min_cost = notional.get("minNotional") or notional.get("notional") or "0"
        base, quote = raw["baseAsset"], raw["quoteAsset"]
        symbol = f"{base}/{quote}:{raw['marginAsset']}" if futures else f"{base}/{quote}"
        markets.append(
            MarketSpec(
                symbol=symbol,
                venue_symbol=raw["symbol"],
                base=base,
                quote=quote,
                tick_size=D(price_filter["tickSize"]).normalize(),
                amount_step=D(lot["stepSize"]).normalize(),
                min_amount=D(lot["minQty"]).normalize(),
                min_cost=D(min_cost).normalize(),
                maker_fee=USDM_MAKER_FEE if futures else SPOT_MAKER_FEE,
                taker_fee=USDM_TAKER_FEE if futures else SPOT_TAKER_FEE,
                max_amount=D(lot["maxQty"]).normalize(),
                fee_decimals=8,
                raw=raw,
            )
        )
    return markets


def exchange_info(*, futures: bool) -> dict[str, Any]:
    """The recorded exchangeInfo; spot gains a synthesized BNBUSDT (fees paid in BNB are valued on it)."""
    info = load_json("binance_usdm_exchange_info.json" if futures else "binance_spot_exchange_info.json")
    if futures:
        return info
    eth = next(s for s in info["symbols"] if s["symbol"] == "ETHUSDT")
    filters = [
        {**f, "minQty": "0.00100000", "stepSize": "0.00100000"} if f["filterType"] == "LOT_SIZE" else f
        for f in eth["filters"]
    ]
    bnb = {**eth, "symbol": "BNBUSDT", "baseAsset": "BNB", "filters": filters}
    return {**info, "symbols": [*info["symbols"], bnb]}


def make_binance_book(kind: str = "spot", *, clock: Callable[[], int] | None = None) -> ExchangeBook:
    """A book for "spot" (venue binance) or "usdm" (venue binanceusdm) with markets and a price feed."""
    futures = kind == "usdm"
    info = exchange_info(futures=futures)
    book = ExchangeBook(
        "binanceusdm" if futures else "binance", binance_markets(info, futures=futures), futures=futures, clock=clock
    )
    feed_book(book)
    return book


# ---------------------------------------------------------------------------------------------- weights
@dataclass
class WeightCounter:
    """Request weight per origin IP per clock minute, as Binance counts it."""

    limit: int
    used: dict[tuple[str, int], int] = field(default_factory=dict)

    def add(self, ip: str, minute: int, weight: int) -> int:
        key = (ip, minute)
        self.used[key] = self.used.get(key, 0) + weight
        for stale in [k for k in self.used if k[1] < minute - 1]:
            del self.used[stale]
        return self.used[key]

    def current(self, ip: str, minute: int) -> int:
        return self.used.get((ip, minute), 0)


# ---------------------------------------------------------------------------------------------- formatting
def _fmt(value: Decimal | None, places: int = 8) -> str:
    if value is None:
        value = Decimal(0)
    return f"{value.quantize(Decimal(1).scaleb(-places)):f}"


def _plain(value: Decimal) -> str:
    """Exact decimal text without exponent (for computed futures figures)."""
    text = f"{value.normalize():f}"
    return text if text != "-0" else "0"


_STATUS = {"canceled": "CANCELED", "closed": "FILLED"}


def _status(order: Order) -> str:
    if order.status == "open":
        return "PARTIALLY_FILLED" if order.filled else "NEW"
    return _STATUS[order.status]


def _uid(api_key: str) -> int:
    return int.from_bytes(hashlib.sha256(api_key.encode()).digest()[:4], "big")


def _new_client_id() -> str:
    return "web_" + secrets.token_hex(9)[:18]


# ---------------------------------------------------------------------------------------------- the venue
Handler = Callable[["Call"], Awaitable[Json]]


@dataclass
class Call:
    """One parsed request, after weight, fault, signature and key checks."""

    request: web.Request
    params: dict[str, str]
    account: KeyAccount | None

    @property
    def key(self) -> KeyAccount:
        """The authenticated account (signed routes only)."""
        if self.account is None:
            raise RuntimeError("a signed route was called without an authenticated key")
        return self.account


@dataclass(frozen=True)
class Route:
    handler: Handler
    weight: Callable[[dict[str, str]], int]
    signed: bool
    require_futures: bool | None = None  # None: the book's default


def _w(n: int) -> Callable[[dict[str, str]], int]:
    return lambda _params: n


def _w_symbol(with_symbol: int, without: int) -> Callable[[dict[str, str]], int]:
    return lambda params: with_symbol if params.get("symbol") else without


class BinanceVenue:
    """One fake Binance API family (spot or usdm) bound to a book; `app` is the aiohttp application."""

    def __init__(self, book: ExchangeBook, *, weight_limit: int | None = None) -> None:
        self.book = book
        self.futures = book.futures
        self.weights = WeightCounter(weight_limit or (USDM_WEIGHT_LIMIT if self.futures else SPOT_WEIGHT_LIMIT))
        self.sapi_weights = WeightCounter(SAPI_WEIGHT_LIMIT)
        #: Weight charged per (method, path) since start, every minute and IP together (benchmarks: how much
        #: of the budget fill tracking spends).
        self.weight_by_path: Counter[tuple[str, str]] = Counter()
        info = exchange_info(futures=self.futures)
        served = {m.venue_symbol for m in book.markets.values()}
        self._info = {**info, "symbols": [s for s in info["symbols"] if s["symbol"] in served]}
        self.routes: dict[tuple[str, str], Route] = {}
        self._register()
        self.app = web.Application()
        self.app[VENUE_KEY] = self
        self.streams = None
        if not self.futures:
            from bot.sandbox.binance_ws import WS_API_PATH, UserDataStreams  # it builds on this module

            self.streams = UserDataStreams(self)
            self.app.router.add_get(WS_API_PATH, self.streams.handle)
            self.app.on_shutdown.append(lambda _app: self.streams.drop())
        else:
            from bot.sandbox.binance_usdm_ws import serve  # listenKeys and the `/private` stream

            self.streams = serve(self)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)

    # ---------------------------------------------------------------- routing
    def _register(self) -> None:
        r = self.routes
        r[("GET", "/sapi/v1/account/apiRestrictions")] = Route(self.api_restrictions, _w(1), True, False)
        if self.futures:
            p = "/fapi/v1"
            r[("GET", f"{p}/ping")] = Route(self.ping, _w(1), False)
            r[("GET", f"{p}/time")] = Route(self.time, _w(1), False)
            r[("GET", f"{p}/exchangeInfo")] = Route(self.exchange_info, _w(1), False)
            r[("GET", f"{p}/ticker/24hr")] = Route(self.ticker_24hr, _w_symbol(1, 40), False)
            r[("GET", f"{p}/ticker/price")] = Route(self.ticker_price, _w_symbol(1, 2), False)
            r[("GET", f"{p}/klines")] = Route(self.klines, self._kline_weight, False)
            r[("GET", f"{p}/premiumIndex")] = Route(self.premium_index, _w_symbol(1, 10), False)
            for version in ("v2", "v3"):
                r[("GET", f"/fapi/{version}/account")] = Route(self.futures_account, _w(5), True)
                r[("GET", f"/fapi/{version}/positionRisk")] = Route(self.position_risk, _w(5), True)
            r[("GET", f"{p}/leverageBracket")] = Route(self.leverage_bracket, _w(1), True)
            r[("POST", f"{p}/leverage")] = Route(self.set_leverage, _w(1), True)
            r[("POST", f"{p}/marginType")] = Route(self.set_margin_type, _w(1), True)
            r[("GET", f"{p}/positionSide/dual")] = Route(self.get_position_mode, _w(30), True)
            r[("POST", f"{p}/positionSide/dual")] = Route(self.set_position_mode, _w(1), True)
            r[("GET", f"{p}/userTrades")] = Route(self.my_trades, _w(5), True)
            # The same key's spot account on api.binance.com (where ccxt's binanceusdm sends `private` calls):
            # the one place Binance names the key's account (`uid`). One book per venue here, so its balances
            # are this book's; only the uid matters to callers.
            r[("GET", "/api/v3/account")] = Route(self.spot_account, _w(20), True, False)
        else:
            p = "/api/v3"
            r[("GET", f"{p}/ping")] = Route(self.ping, _w(1), False)
            r[("GET", f"{p}/time")] = Route(self.time, _w(1), False)
            r[("GET", f"{p}/exchangeInfo")] = Route(self.exchange_info, _w(20), False)
            r[("GET", f"{p}/ticker/24hr")] = Route(self.ticker_24hr, _w_symbol(2, 80), False)
            r[("GET", f"{p}/ticker/price")] = Route(self.ticker_price, _w_symbol(2, 4), False)
            r[("GET", f"{p}/klines")] = Route(self.klines, _w(2), False)
            r[("GET", f"{p}/account")] = Route(self.spot_account, _w(20), True)
            r[("GET", f"{p}/myTrades")] = Route(self.my_trades, _w(20), True)
        r[("POST", f"{p}/order")] = Route(self.create_order, _w(1), True)
        r[("GET", f"{p}/order")] = Route(self.get_order, _w(1 if self.futures else 4), True)
        r[("DELETE", f"{p}/order")] = Route(self.cancel_order, _w(1), True)
        r[("GET", f"{p}/allOrders")] = Route(self.all_orders, _w(5 if self.futures else 20), True)
        r[("GET", f"{p}/openOrders")] = Route(
            self.open_orders, _w_symbol(1, 40) if self.futures else _w_symbol(6, 80), True
        )

    @staticmethod
    def _kline_weight(params: dict[str, str]) -> int:
        limit = int(params.get("limit") or 500)
        return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        ip = request.remote or "unknown"
        minute = self.book.now_ms() // 60_000
        route = self.routes.get((request.method, path))
        raw_body = await request.text() if request.method == "POST" else ""
        params = dict(request.rel_url.query)
        params.update(dict(parse_qsl(raw_body, keep_blank_values=True)))
        sapi = path.startswith("/sapi/")
        # Each IP-limited sapi endpoint counts on its own (12,000 per minute), apart from the api/fapi weight.
        counter = self.sapi_weights if sapi else self.weights
        weight = route.weight(params) if route else 1
        used = counter.add(f"{ip} {path}" if sapi else ip, minute, weight)
        self.weight_by_path[(request.method, path)] += weight
        headers = {"X-SAPI-USED-IP-WEIGHT-1M" if sapi else "X-MBX-USED-WEIGHT-1M": str(used)}
        api_key = request.headers.get("X-MBX-APIKEY")
        checked: dict[str, bool | None] = {"signature_valid": None}
        hold: float | None = None
        try:
            if sapi and used > self.sapi_weights.limit:  # always a 429 on sapi: no ban escalation
                raise BinanceError(429, -1003, f"Too many requests; current limit of IP({ip}) is exceeded.")
            if not sapi and used > self.weights.limit:
                raise BinanceError(
                    429,
                    -1003,
                    f"Too many requests; current limit of IP({ip}) request weight per minute is "
                    f"{self.weights.limit}. Please use WebSocket Streams for live updates to avoid polling the API.",
                )
            await self._apply_fault(path, ip, request.method)
            hold = self.book.take_hold(path, request.method)
            if route is None:
                raise web.HTTPNotFound()
            account = None
            if route.signed:
                account = self._check_signed(request, raw_body, params, api_key, route, checked)
            body = await route.handler(Call(request, params, account))
            status = 200
        except BinanceError as err:
            status, body = err.status, {"code": err.code, "msg": err.msg}
        except BookError as err:
            status, code, msg = self._book_error(err, request.method)
            body = {"code": code, "msg": msg}
        except web.HTTPNotFound:
            self.book.record_request(request.method, path, api_key, checked["signature_valid"], params, 404)
            return web.Response(status=404, text="", headers=headers)
        except _ServerError as err:
            self.book.record_request(request.method, path, api_key, checked["signature_valid"], params, err.status)
            return web.Response(status=err.status, text=err.text, headers=headers)
        self.book.record_request(request.method, path, api_key, checked["signature_valid"], params, status)
        if hold:
            await asyncio.sleep(hold)  # the venue has acted; only its answer is late
        return web.json_response(body, status=status, headers=headers, dumps=json.dumps)

    async def _apply_fault(self, path: str, ip: str, method: str | None = None) -> None:
        fault = self.book.take_fault(path, method)
        if fault is None:
            return
        if fault == "server_error":
            raise _ServerError(503, "Service Unavailable.")
        if fault == "timeout":
            # Hang past the client's timeout, then go on: like a real venue that did receive the request.
            await asyncio.sleep(self.book.hang_seconds)
            return
        if fault == "rate_limit":
            raise BinanceError(
                429,
                -1003,
                f"Too many requests; current limit of IP({ip}) request weight per minute is "
                f"{self.weights.limit}. Please use WebSocket Streams for live updates to avoid polling the API.",
            )
        if fault == "ban":
            until = self.book.now_ms() + 120_000
            raise BinanceError(
                418,
                -1003,
                f"Way too many requests; IP({ip}) banned until {until}. "
                "Please use the websocket for live updates to avoid bans.",
            )
        if fault == "invalid_nonce":
            raise BinanceError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        if fault == "revoked":
            raise BinanceError(*INVALID_KEY)

    def _check_signed(
        self,
        request: web.Request,
        raw_body: str,
        params: dict[str, str],
        api_key: str | None,
        route: Route,
        checked: dict[str, bool | None],
    ) -> KeyAccount:
        """Apply Binance's checks in its order: key, signature, timestamp, permissions."""
        if not api_key:
            raise BinanceError(401, -2014, "API-key format invalid.")
        account = self.book.key(api_key)
        if account is None or account.revoked:
            raise BinanceError(*INVALID_KEY)
        signature = params.get("signature")
        if not signature:
            raise BinanceError(
                400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."
            )
        total = _without_signature(request.rel_url.raw_query_string) + _without_signature(raw_body)
        expected = hmac.new(account.secret.encode(), total.encode(), hashlib.sha256).hexdigest()
        valid = hmac.compare_digest(expected, signature.lower())
        checked["signature_valid"] = valid
        if not valid:
            raise BinanceError(400, -1022, "Signature for this request is not valid.")
        self._check_timestamp(params)
        try:
            self.book.authenticate(api_key, require_futures=route.require_futures)
        except BookError:
            raise BinanceError(*INVALID_KEY) from None
        return account

    def _check_timestamp(self, params: dict[str, str]) -> None:
        try:
            timestamp = int(params["timestamp"])
        except (KeyError, ValueError):
            raise BinanceError(
                400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."
            ) from None
        try:
            recv_window = int(params.get("recvWindow") or 5000)
        except ValueError:
            raise BinanceError(400, -1100, "Illegal characters found in parameter 'recvWindow'.") from None
        if recv_window > MAX_RECV_WINDOW or recv_window <= 0:
            raise BinanceError(400, -1131, "recvWindow must be less than 60000")
        now = self.book.now_ms()
        if timestamp > now + 1000:
            raise BinanceError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - timestamp > recv_window:
            raise BinanceError(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    def _book_error(self, err: BookError, method: str) -> tuple[int, int, str]:
        kind, fut = err.kind, self.futures
        if kind in ("unknown_key", "revoked", "permission"):
            return INVALID_KEY
        if kind == "insufficient_funds":
            return 400, -2010, "Account has insufficient balance for requested action."
        if kind == "margin_insufficient":
            return 400, -2019, "Margin is insufficient."
        if kind == "duplicate_client_id":
            return (400, -4116, "ClientOrderId is duplicated.") if fut else (400, -2010, "Duplicate order sent.")
        if kind == "min_notional":
            if fut:
                return (
                    400,
                    -4164,
                    f"Order's notional must be no smaller than {err.message.split()[-1]} "
                    "(unless you choose reduce only).",
                )
            return 400, -1013, "Filter failure: NOTIONAL"
        if kind in ("precision", "min_amount"):
            if fut and err.field == "price":
                return 400, -4014, "Price not increased by tick size."
            if fut:
                return 400, -1111, "Precision is over the maximum defined for this asset."
            return 400, -1013, "Filter failure: PRICE_FILTER" if err.field == "price" else "Filter failure: LOT_SIZE"
        if kind in ("order_not_found", "order_not_open"):
            return (400, -2011, "Unknown order sent.") if method == "DELETE" else (400, -2013, "Order does not exist.")
        if kind == "unknown_symbol":
            return 400, -1121, "Invalid symbol."
        if kind == "reduce_only":
            return 400, -2022, "ReduceOnly Order is rejected."
        if kind == "post_only":
            if fut:
                return (
                    400,
                    -5022,
                    "Due to the order could not be executed as maker, the Post Only order will be rejected.",
                )
            return 400, -2010, "Order would immediately match and take."
        if kind == "no_price":
            return 400, -1013, "Market is closed."
        if fut and "positionSide" in err.message:
            return 400, -4061, "Order's position side does not match user's setting."
        return 400, -1102, err.message

    # ---------------------------------------------------------------- helpers
    def _market(self, params: dict[str, str]) -> MarketSpec:
        market = self._market_opt(params)
        if market is None:
            raise BinanceError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        return market

    def _market_opt(self, params: dict[str, str]) -> MarketSpec | None:
        venue_symbol = params.get("symbol")
        return self.book.market_by_venue_symbol(venue_symbol) if venue_symbol else None

    def _decimal(self, params: dict[str, str], name: str) -> Decimal | None:
        value = params.get(name)
        if value is None or value == "":
            return None
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise BinanceError(
                400,
                -1100,
                f"Illegal characters found in parameter '{name}'; "
                "legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
            ) from None
        if not number.is_finite():
            raise BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'.")
        return number

    def _qty(self, market: MarketSpec, value: Decimal) -> str:
        return _fmt(value, int(market.raw["quantityPrecision"])) if self.futures else _fmt(value)

    def _px(self, market: MarketSpec, value: Decimal | None) -> str:
        return _fmt(value, int(market.raw["pricePrecision"])) if self.futures else _fmt(value)

    # ---------------------------------------------------------------- public endpoints
    async def ping(self, call: Call) -> Json:
        return {}

    async def time(self, call: Call) -> Json:
        return {"serverTime": self.book.now_ms()}

    async def exchange_info(self, call: Call) -> Json:
        info = dict(self._info)
        info["serverTime"] = self.book.now_ms()
        info["rateLimits"] = [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.weights.limit},
            *[x for x in info.get("rateLimits", []) if x.get("rateLimitType") != "REQUEST_WEIGHT"],
        ]
        symbol = call.params.get("symbol")
        if symbol:
            self.book.market_by_venue_symbol(symbol)
            info["symbols"] = [s for s in info["symbols"] if s["symbol"] == symbol]
        return info

    def _ticker_json(self, market: MarketSpec) -> dict[str, Any]:
        t = self.book.ticker(market.symbol)
        change = t.last - t.open
        pct = (change / t.open * 100) if t.open else Decimal(0)
        vwap = t.quote_volume / t.base_volume if t.base_volume else t.last
        body: dict[str, Any] = {
            "symbol": market.venue_symbol,
            "priceChange": self._px(market, change),
            "priceChangePercent": _fmt(pct, 3),
            "weightedAvgPrice": self._px(market, vwap),
        }
        if not self.futures:
            body["prevClosePrice"] = _fmt(t.open)
        body.update(
            {
                "lastPrice": self._px(market, t.last),
                "lastQty": self._qty(market, market.min_amount),
            }
        )
        if not self.futures:
            body.update(
                {
                    "bidPrice": _fmt(t.bid),
                    "bidQty": _fmt(market.min_amount),
                    "askPrice": _fmt(t.ask),
                    "askQty": _fmt(market.min_amount),
                }
            )
        body.update(
            {
                "openPrice": self._px(market, t.open),
                "highPrice": self._px(market, t.high),
                "lowPrice": self._px(market, t.low),
                "volume": self._qty(market, t.base_volume),
                "quoteVolume": _fmt(t.quote_volume),
                "openTime": t.timestamp_ms - 86_400_000,
                "closeTime": t.timestamp_ms,
                "firstId": 0,
                "lastId": 0,
                "count": 0,
            }
        )
        return body

    def _priced_markets(self, params: dict[str, str]) -> list[MarketSpec]:
        market = self._market_opt(params)
        if market is not None:
            return [market]
        return [m for m in self.book.markets.values() if self.book.price(m.symbol) is not None]

    async def ticker_24hr(self, call: Call) -> Json:
        tickers = [self._ticker_json(m) for m in self._priced_markets(call.params)]
        return tickers[0] if call.params.get("symbol") else tickers

    async def ticker_price(self, call: Call) -> Json:
        now = self.book.now_ms()
        out = []
        for m in self._priced_markets(call.params):
            entry = {"symbol": m.venue_symbol, "price": self._px(m, self.book.ticker(m.symbol).last)}
            if self.futures:
                entry["time"] = now
            out.append(entry)
        return out[0] if call.params.get("symbol") else out

    async def premium_index(self, call: Call) -> Json:
        """USD-M mark price and funding: the mark is the book's (`set_mark`), the index the same; funding every 8 h."""
        now = self.book.now_ms()
        funding_every = 8 * 3_600_000
        out = []
        for m in self._priced_markets(call.params):
            mark = self.book.mark_price(m.symbol)
            out.append({
                "symbol": m.venue_symbol,
                "markPrice": _fmt(mark),
                "indexPrice": _fmt(mark),
                "estimatedSettlePrice": _fmt(mark),
                "lastFundingRate": "0.00010000",
                "interestRate": "0.00010000",
                "nextFundingTime": (now // funding_every + 1) * funding_every,
                "time": now,
            })
        return out[0] if call.params.get("symbol") else out

    async def klines(self, call: Call) -> Json:
        market = self._market(call.params)
        interval = call.params.get("interval") or ""
        try:
            step = timeframe_ms(interval)
        except BookError:
            raise BinanceError(400, -1120, "Invalid interval.") from None
        limit = int(call.params.get("limit") or 500)
        limit = max(1, min(limit, 1500 if self.futures else 1000))
        start = call.params.get("startTime")
        end = call.params.get("endTime")
        rows = self.book.candles(market.symbol, interval)
        if start:
            rows = [r for r in rows if r.timestamp_ms >= int(start)]
        if end:
            rows = [r for r in rows if r.timestamp_ms <= int(end)]
        rows = rows[:limit] if start else rows[-limit:]
        return [
            [
                r.timestamp_ms,
                self._px(market, r.open),
                self._px(market, r.high),
                self._px(market, r.low),
                self._px(market, r.close),
                self._qty(market, r.volume),
                r.timestamp_ms + step - 1,
                _fmt(r.volume * r.close),
                0,
                self._qty(market, r.volume / 2),
                _fmt(r.volume * r.close / 2),
                "0",
            ]
            for r in rows
        ]

    # ---------------------------------------------------------------- key permissions
    async def api_restrictions(self, call: Call) -> Json:
        a = call.key
        expires = a.trading_authority_expiration_ms
        # Binance takes spot trading away from an unrestricted key once its expiration time has passed.
        expired = expires is not None and not a.ip_restrict and self.book.now_ms() >= expires
        body: dict[str, Any] = {
            "ipRestrict": a.ip_restrict,
            "createTime": a.created_ms,
            "enableReading": a.can_read,
            "enableWithdrawals": a.can_withdraw,
            "enableInternalTransfer": False,
            "enableMargin": False,
            "enableFutures": a.futures,
            "permitsUniversalTransfer": False,
            "enableVanillaOptions": False,
            "enableFixApiTrade": False,
            "enableFixReadOnly": False,
            "enableSpotAndMarginTrading": a.can_trade and not expired,
            "enablePortfolioMarginTrading": False,
        }
        if expires is not None:
            body["tradingAuthorityExpirationTime"] = expires
        return body

    # ---------------------------------------------------------------- spot account
    async def spot_account(self, call: Call) -> Json:
        a = call.key
        assets = list(dict.fromkeys([*a.balances, *(x for m in self.book.markets.values() for x in (m.base, m.quote))]))
        if call.params.get("omitZeroBalances") == "true":
            assets = [x for x in assets if a.total(x)]
        maker = next(iter(self.book.markets.values())).maker_fee
        taker = next(iter(self.book.markets.values())).taker_fee
        return {
            "makerCommission": int(maker * 10000),
            "takerCommission": int(taker * 10000),
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {"maker": _fmt(maker), "taker": _fmt(taker), "buyer": _fmt(None), "seller": _fmt(None)},
            "canTrade": a.can_trade,
            # An account-level flag on Binance, true whatever the key may do: never a key's withdraw permission.
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": self.book.now_ms(),
            "accountType": "SPOT",
            "balances": [
                {"asset": x, "free": _fmt(a.free(x)), "locked": _fmt(a.locked.get(x, Decimal(0)))} for x in assets
            ],
            "permissions": ["SPOT"],
            "uid": _uid(a.home),
        }

    # ---------------------------------------------------------------- orders
    def _order_json(
        self, order: Order, *, for_create: bool = False, fills: list[Trade] | None = None
    ) -> dict[str, Any]:
        market = self.book.market(order.symbol)
        if self.futures:
            body: dict[str, Any] = {
                "orderId": order.id,
                "symbol": market.venue_symbol,
                "status": _status(order),
                "clientOrderId": order.client_order_id,
                "price": self._px(market, order.price),
                "avgPrice": _plain(order.average) if order.average is not None else "0.00",
                "origQty": self._qty(market, order.amount),
                "executedQty": self._qty(market, order.filled),
                "cumQty": self._qty(market, order.filled),
                "cumQuote": _plain(order.cost) if order.cost else "0",
                "timeInForce": order.extra.get("timeInForce", "GTC"),
                "type": order.type.upper(),
                "reduceOnly": order.reduce_only,
                "closePosition": False,
                "side": order.side.upper(),
                "positionSide": order.position_side,
                "stopPrice": "0",
                "workingType": "CONTRACT_PRICE",
                "priceProtect": False,
                "origType": order.type.upper(),
                "priceMatch": "NONE",
                "selfTradePreventionMode": "EXPIRE_MAKER",
                "goodTillDate": 0,
            }
            if not for_create:
                body["time"] = order.created_ms
            body["updateTime"] = order.updated_ms
            return body
        body = {
            "symbol": market.venue_symbol,
            "orderId": order.id,
            "orderListId": -1,
            "clientOrderId": order.client_order_id,
        }
        if for_create:
            body["transactTime"] = order.created_ms
        body.update(
            {
                "price": _fmt(order.price),
                "origQty": _fmt(order.amount),
                "executedQty": _fmt(order.filled),
                "cummulativeQuoteQty": _fmt(order.cost),
                "status": _status(order),
                "timeInForce": order.extra.get("timeInForce", "GTC"),
                "type": order.extra.get("binanceType", order.type.upper()),
                "side": order.side.upper(),
            }
        )
        if not for_create:
            body.update(
                {
                    "stopPrice": _fmt(None),
                    "icebergQty": _fmt(None),
                    "time": order.created_ms,
                    "updateTime": order.updated_ms,
                    "isWorking": True,
                }
            )
        body["workingTime"] = order.created_ms
        body["origQuoteOrderQty"] = _fmt(order.quote_cost)
        if for_create and fills is not None:
            body["fills"] = [
                {
                    "price": _fmt(t.price),
                    "qty": _fmt(t.amount),
                    "commission": _fmt(t.fee),
                    "commissionAsset": t.fee_currency,
                    "tradeId": t.id,
                }
                for t in fills
            ]
        body["selfTradePreventionMode"] = "EXPIRE_MAKER" if for_create else "NONE"
        return body

    async def create_order(self, call: Call) -> Json:
        p = call.params
        market = self._market(p)
        expires = call.key.trading_authority_expiration_ms
        if expires is not None and not call.key.ip_restrict and self.book.now_ms() >= expires:
            # Binance withdraws trading from keys without an IP restriction once this time has passed.
            raise BinanceError(*INVALID_KEY)
        side = (p.get("side") or "").upper()
        order_type = (p.get("type") or "").upper()
        if side not in ("BUY", "SELL"):
            raise BinanceError(400, -1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed.")
        allowed = market.raw.get("orderTypes", [])
        if order_type not in allowed:
            raise BinanceError(400, -1116, "Invalid orderType.")
        post_only = order_type == "LIMIT_MAKER" or p.get("timeInForce") == "GTX"
        if order_type not in ("LIMIT", "MARKET", "LIMIT_MAKER"):
            raise BinanceError(400, -1116, "Invalid orderType.")
        quantity = self._decimal(p, "quantity")
        price = self._decimal(p, "price")
        quote_qty = None if self.futures else self._decimal(p, "quoteOrderQty")
        if order_type in ("LIMIT", "LIMIT_MAKER") and price is None:
            raise BinanceError(400, -1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
        if quantity is None and quote_qty is None:
            raise BinanceError(400, -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        if order_type == "LIMIT" and not p.get("timeInForce"):
            raise BinanceError(
                400, -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed."
            )
        client_id = p.get("newClientOrderId") or _new_client_id()
        extra = {"timeInForce": p.get("timeInForce", "GTC")}
        if order_type == "LIMIT_MAKER":
            extra["binanceType"] = "LIMIT_MAKER"
        before = len(self.book.trades(call.key))
        order = self.book.place_order(
            call.key,
            market.symbol,
            side.lower(),
            "market" if order_type == "MARKET" else "limit",
            amount=quantity,
            price=price if order_type != "MARKET" else None,
            quote_cost=quote_qty if quantity is None else None,
            client_order_id=client_id,
            reduce_only=p.get("reduceOnly") == "true",
            post_only=post_only,
            position_side=p.get("positionSide"),
            extra=extra,
        )
        fills = [t for t in self.book.trades(call.key)[before:] if t.order_id == order.id]
        resp_type = p.get("newOrderRespType") or ("RESULT" if self.futures else "FULL")
        if resp_type == "ACK" and not self.futures:
            return {
                "symbol": market.venue_symbol,
                "orderId": order.id,
                "orderListId": -1,
                "clientOrderId": order.client_order_id,
                "transactTime": order.created_ms,
            }
        return self._order_json(order, for_create=True, fills=fills if resp_type == "FULL" else None)

    def _find(self, call: Call) -> Order:
        market = self._market(call.params)
        order_id = call.params.get("orderId")
        client_id = call.params.get("origClientOrderId")
        if not order_id and not client_id:
            raise BinanceError(
                400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )
        return self.book.get_order(
            call.key, market.symbol, int(order_id) if order_id else None, None if order_id else client_id
        )

    async def get_order(self, call: Call) -> Json:
        return self._order_json(self._find(call))

    async def cancel_order(self, call: Call) -> Json:
        order = self._find(call)
        self.book.cancel_order(call.key, order.symbol, order.id)
        if self.futures:
            return self._order_json(order)
        body = self._order_json(order, for_create=True)
        body.pop("workingTime", None)
        body.pop("origQuoteOrderQty", None)
        cancel_id = call.params.get("newClientOrderId") or _new_client_id()
        body["transactTime"] = order.updated_ms
        return {
            "symbol": body.pop("symbol"),
            "origClientOrderId": order.client_order_id,
            **body,
            "clientOrderId": cancel_id,
        }

    async def open_orders(self, call: Call) -> Json:
        market = self._market_opt(call.params)
        orders = self.book.open_orders(call.key, market.symbol if market else None)
        return [self._order_json(o) for o in orders]

    async def all_orders(self, call: Call) -> Json:
        market = self._market(call.params)
        orders = self.book.all_orders(call.key, market.symbol)
        start, end, from_id = (call.params.get(k) for k in ("startTime", "endTime", "orderId"))
        if from_id:
            orders = [o for o in orders if o.id >= int(from_id)]
        if start:
            orders = [o for o in orders if o.created_ms >= int(start)]
        if end:
            orders = [o for o in orders if o.created_ms <= int(end)]
        limit = max(1, min(int(call.params.get("limit") or 500), 1000))
        orders = orders[:limit] if (start or from_id) else orders[-limit:]
        return [self._order_json(o) for o in orders]

    async def my_trades(self, call: Call) -> Json:
        market = self._market(call.params)
        start = call.params.get("startTime")
        trades = self.book.visible_trades(self.book.trades(call.key, market.symbol, int(start) if start else None))
        if call.params.get("orderId"):
            trades = [t for t in trades if t.order_id == int(call.params["orderId"])]
        if call.params.get("fromId"):
            trades = [t for t in trades if t.id >= int(call.params["fromId"])]
        limit = max(1, min(int(call.params.get("limit") or 500), 1000))
        trades = trades[:limit] if (start or call.params.get("fromId")) else trades[-limit:]
        if self.futures:
            return [
                {
                    "symbol": market.venue_symbol,
                    "id": t.id,
                    "orderId": t.order_id,
                    "side": t.side.upper(),
                    "price": _plain(t.price),
                    "qty": self._qty(market, t.amount),
                    "realizedPnl": _fmt(t.realized_pnl),
                    "quoteQty": _plain(t.cost),
                    "commission": _fmt(t.fee),
                    "commissionAsset": t.fee_currency,
                    "time": t.time_ms,
                    "positionSide": t.position_side,
                    "buyer": t.side == "buy",
                    "maker": t.maker,
                }
                for t in trades
            ]
        return [
            {
                "symbol": market.venue_symbol,
                "id": t.id,
                "orderId": t.order_id,
                "orderListId": -1,
                "price": _fmt(t.price),
                "qty": _fmt(t.amount),
                "quoteQty": _fmt(t.cost),
                "commission": _fmt(t.fee),
                "commissionAsset": t.fee_currency,
                "time": t.time_ms,
                "isBuyer": t.side == "buy",
                "isMaker": t.maker,
                "isBestMatch": True,
            }
            for t in trades
        ]

    # ---------------------------------------------------------------- futures account
    def _position_figures(self, account: KeyAccount, position: Position) -> dict[str, Decimal]:
        market = self.book.market(position.symbol)
        mark = self.book.mark_price(position.symbol) or position.entry_price
        notional = position.amount * mark
        leverage = self.book.leverage_of(account, position.symbol)
        initial = abs(notional) / leverage
        ratio = self._maint_ratio(market, abs(notional))
        open_margin = sum(
            (
                o.margin
                for o in self.book.open_orders(account, position.symbol)
                if o.position_side == position.position_side
            ),
            Decimal(0),
        )
        return {
            "mark": mark,
            "notional": notional,
            "upnl": self.book.unrealized_pnl(position),
            "initial": initial,
            "maint": abs(notional) * ratio,
            "open_margin": open_margin,
            "leverage": Decimal(leverage),
        }

    def _maint_ratio(self, market: MarketSpec, notional: Decimal) -> Decimal:
        ratio = Decimal("0.004")
        for entry in load_brackets():
            if entry["symbol"] == market.venue_symbol:
                for bracket in entry["brackets"]:
                    if notional >= D(bracket["notionalFloor"]):
                        ratio = D(bracket["maintMarginRatio"])
        return ratio

    async def futures_account(self, call: Call) -> Json:
        a = call.key
        v3 = call.request.path.startswith("/fapi/v3")
        positions = [p for p in self.book.positions(a)]
        figures = [(p, self._position_figures(a, p)) for p in positions]
        upnl = sum((f["upnl"] for _, f in figures), Decimal(0))
        pos_margin = sum((f["initial"] for _, f in figures), Decimal(0))
        order_margin = sum((o.margin for o in self.book.open_orders(a)), Decimal(0))
        maint = sum((f["maint"] for _, f in figures), Decimal(0))
        wallet = a.total("USDT")
        available = self.book.available_margin(a)
        updated = max([a.created_ms, *(p.updated_ms for p in positions)])
        asset = {
            "asset": "USDT",
            "walletBalance": _fmt(wallet),
            "unrealizedProfit": _fmt(upnl),
            "marginBalance": _fmt(wallet + upnl),
            "maintMargin": _fmt(maint),
            "initialMargin": _fmt(pos_margin + order_margin),
            "positionInitialMargin": _fmt(pos_margin),
            "openOrderInitialMargin": _fmt(order_margin),
            "crossWalletBalance": _fmt(wallet),
            "crossUnPnl": _fmt(upnl),
            "availableBalance": _fmt(available),
            "maxWithdrawAmount": _fmt(max(Decimal(0), min(available, wallet))),
            "updateTime": updated,
        }
        if not v3:
            asset["marginAvailable"] = True
        body: dict[str, Any] = {}
        if not v3:
            body.update(
                {
                    "feeTier": 0,
                    "canTrade": a.can_trade,
                    "canDeposit": True,
                    "canWithdraw": True,
                    "updateTime": 0,
                    "multiAssetsMargin": False,
                    "tradeGroupId": -1,
                }
            )
        body.update(
            {
                "totalInitialMargin": _fmt(pos_margin + order_margin),
                "totalMaintMargin": _fmt(maint),
                "totalWalletBalance": _fmt(wallet),
                "totalUnrealizedProfit": _fmt(upnl),
                "totalMarginBalance": _fmt(wallet + upnl),
                "totalPositionInitialMargin": _fmt(pos_margin),
                "totalOpenOrderInitialMargin": _fmt(order_margin),
                "totalCrossWalletBalance": _fmt(wallet),
                "totalCrossUnPnl": _fmt(upnl),
                "availableBalance": _fmt(available),
                "maxWithdrawAmount": _fmt(max(Decimal(0), min(available, wallet))),
                "assets": [asset],
            }
        )
        listed = [(p, f) for p, f in figures if p.amount or f["open_margin"]] if v3 else figures
        body["positions"] = [
            {
                "symbol": self.book.market(p.symbol).venue_symbol,
                "positionSide": p.position_side,
                "positionAmt": self._qty(self.book.market(p.symbol), p.amount),
                "unrealizedProfit": _fmt(f["upnl"]),
                "isolatedMargin": _fmt(
                    f["initial"] + f["upnl"] if self.book.margin_type_of(a, p.symbol) == "isolated" else None
                ),
                "notional": _fmt(f["notional"]),
                "isolatedWallet": _fmt(f["initial"] if self.book.margin_type_of(a, p.symbol) == "isolated" else None),
                "initialMargin": _fmt(f["initial"] + f["open_margin"]),
                "maintMargin": _fmt(f["maint"]),
                "updateTime": p.updated_ms,
                **(
                    {}
                    if v3
                    else {
                        "leverage": str(self.book.leverage_of(a, p.symbol)),
                        "isolated": self.book.margin_type_of(a, p.symbol) == "isolated",
                        "entryPrice": _plain(p.entry_price) if p.amount else "0.0",
                        "maxNotional": "250000",
                        "positionInitialMargin": _fmt(f["initial"]),
                        "openOrderInitialMargin": _fmt(f["open_margin"]),
                        "bidNotional": "0",
                        "askNotional": "0",
                    }
                ),
            }
            for p, f in listed
        ]
        return body

    async def position_risk(self, call: Call) -> Json:
        a = call.key
        v3 = call.request.path.startswith("/fapi/v3")
        market = self._market_opt(call.params)
        out = []
        for p in self.book.positions(a):
            if market is not None and p.symbol != market.symbol:
                continue
            f = self._position_figures(a, p)
            if v3 and not p.amount and not f["open_margin"]:
                continue
            m = self.book.market(p.symbol)
            isolated = self.book.margin_type_of(a, p.symbol) == "isolated"
            common = {
                "symbol": m.venue_symbol,
                "positionSide": p.position_side,
                "positionAmt": self._qty(m, p.amount),
                "entryPrice": _plain(p.entry_price) if p.amount else "0.0",
                "breakEvenPrice": _plain(p.entry_price) if p.amount else "0.0",
                "markPrice": _fmt(f["mark"]),
                "unRealizedProfit": _fmt(f["upnl"]),
                "liquidationPrice": "0",
                "isolatedMargin": _fmt(f["initial"] + f["upnl"] if isolated else None),
                "notional": _fmt(f["notional"]),
                "marginAsset": "USDT",
                "isolatedWallet": _fmt(f["initial"] if isolated else None),
            }
            if v3:
                common.update(
                    {
                        "initialMargin": _fmt(f["initial"] + f["open_margin"]),
                        "maintMargin": _fmt(f["maint"]),
                        "positionInitialMargin": _fmt(f["initial"]),
                        "openOrderInitialMargin": _fmt(f["open_margin"]),
                        "adl": 0,
                        "bidNotional": "0",
                        "askNotional": "0",
                        "updateTime": p.updated_ms,
                    }
                )
            else:
                common.pop("marginAsset")
                common.update(
                    {
                        "leverage": str(self.book.leverage_of(a, p.symbol)),
                        "maxNotionalValue": "250000",
                        "marginType": "isolated" if isolated else "cross",
                        "isAutoAddMargin": "false",
                        "updateTime": p.updated_ms,
                    }
                )
            out.append(common)
        return out

    async def leverage_bracket(self, call: Call) -> Json:
        brackets = load_brackets()
        symbol = call.params.get("symbol")
        if symbol:
            self.book.market_by_venue_symbol(symbol)
            return [b for b in brackets if b["symbol"] == symbol]
        return brackets

    async def set_leverage(self, call: Call) -> Json:
        market = self._market(call.params)
        try:
            leverage = int(call.params.get("leverage") or "")
        except ValueError:
            raise BinanceError(
                400, -1102, "Mandatory parameter 'leverage' was not sent, was empty/null, or malformed."
            ) from None
        if not 1 <= leverage <= 125:
            raise BinanceError(400, -4028, f"Leverage {leverage} is not valid")
        self.book.set_leverage(call.key, market.symbol, leverage)
        return {"leverage": leverage, "maxNotionalValue": "1000000", "symbol": market.venue_symbol}

    async def set_margin_type(self, call: Call) -> Json:
        market = self._market(call.params)
        wanted = (call.params.get("marginType") or "").upper()
        if wanted not in ("ISOLATED", "CROSSED"):
            raise BinanceError(
                400, -1102, "Mandatory parameter 'marginType' was not sent, was empty/null, or malformed."
            )
        new = "isolated" if wanted == "ISOLATED" else "cross"
        if self.book.margin_type_of(call.key, market.symbol) == new:
            raise BinanceError(400, -4046, "No need to change margin type.")
        try:
            self.book.set_margin_type(call.key, market.symbol, new)
        except BookError:
            raise BinanceError(400, -4048, "Margin type cannot be changed if there exists position.") from None
        return {"code": 200, "msg": "success"}

    async def get_position_mode(self, call: Call) -> Json:
        return {"dualSidePosition": call.key.dual_side}

    async def set_position_mode(self, call: Call) -> Json:
        raw = (call.params.get("dualSidePosition") or "").lower()
        if raw not in ("true", "false"):
            raise BinanceError(
                400, -1102, "Mandatory parameter 'dualSidePosition' was not sent, was empty/null, or malformed."
            )
        wanted = raw == "true"
        if call.key.dual_side == wanted:
            raise BinanceError(400, -4059, "No need to change position side.")
        try:
            self.book.set_dual_side(call.key, wanted)
        except BookError:
            raise BinanceError(400, -4068, "The position side cannot be changed if there exists position.") from None
        return {"code": 200, "msg": "success"}


class _ServerError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


def _without_signature(raw: str) -> str:
    """The signed payload: the raw query or body minus its `signature=` parameter."""
    if not raw:
        return ""
    return "&".join(part for part in raw.split("&") if not part.startswith("signature="))


_BRACKETS: list[dict[str, Any]] = []


def load_brackets() -> list[dict[str, Any]]:
    if not _BRACKETS:
        _BRACKETS.extend(load_json("binance_usdm_leverage_brackets.json"))
    return _BRACKETS


VENUE_KEY = web.AppKey("binance_venue", BinanceVenue)


def make_binance_app(book: ExchangeBook, *, weight_limit: int | None = None) -> web.Application:
    """The aiohttp application of a fake Binance venue (spot or usdm, from `book.futures`)."""
    return BinanceVenue(book, weight_limit=weight_limit).app

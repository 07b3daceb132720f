"""Fake Kraken spot REST API (aiohttp) over a venue-neutral `ExchangeBook`.

It serves the endpoints ccxt's `kraken` calls — public Assets, AssetPairs, Ticker, OHLC, Time; private
Balance, BalanceEx, AddOrder, QueryOrders, OpenOrders, ClosedOrders, CancelOrder, TradesHistory and
WithdrawMethods (the withdraw-permission probe), GetWebSocketsToken (for `kraken_ws`'s `/v2` executions
channel) — in the shapes of real recorded Kraken bodies, verifies
`API-Sign` (HMAC-SHA512 over the path and SHA-256 of nonce + body) and the per-key increasing nonce, and
answers errors as Kraken does: HTTP 200 with `{"error": ["EAPI:Invalid key"]}`. Trading rules, balances,
faults and the request log live in the book; this module only translates.

Public API: `kraken_markets()`, `make_kraken_book()`, `make_kraken_app(book)`, `kraken_signature()`,
`kraken_txid()`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from decimal import Decimal
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from bot.sandbox.exchange_book import (
    BookError,
    ExchangeBook,
    KeyAccount,
    MarketSpec,
    Order,
    Trade,
)
from bot.sandbox.kraken_ws import WS_V2_PATH, ExecutionStreams
from bot.sandbox.series import feed_book

_DATA = resources.files("bot.sandbox") / "data"

#: ccxt's unified codes that differ from Kraken's altnames (ccxt maps XBT → BTC, XDG → DOGE).
_UNIFIED_TO_ALTNAME = {"BTC": "XBT", "DOGE": "XDG"}

#: Kraken's OHLC `interval` (minutes) → the book's timeframe.
_INTERVALS = {1: "1m", 5: "5m", 15: "15m", 30: "30m", 60: "1h", 240: "4h", 1440: "1d", 10080: "1w"}

#: The book's venue-neutral refusals → Kraken's error strings (as ccxt 4.5.90 maps them: see the tests).
_BOOK_ERRORS = {
    "unknown_key": "EAPI:Invalid key",
    "revoked": "EAPI:Invalid key",
    "permission": "EGeneral:Permission denied",
    "unknown_symbol": "EQuery:Unknown asset pair",
    "bad_request": "EGeneral:Invalid arguments",
    "min_amount": "EOrder:Order minimum not met",
    "min_notional": "EOrder:Cost minimum not met",
    "insufficient_funds": "EOrder:Insufficient funds",
    "margin_insufficient": "EOrder:Insufficient margin",
    "duplicate_client_id": "EGeneral:Invalid arguments:cl_ord_id",
    "order_not_found": "EOrder:Unknown order",
    "order_not_open": "EOrder:Unknown order",
    "reduce_only": "EGeneral:Invalid arguments",
    "no_price": "EService:Unavailable",
    "post_only": "EOrder:Post only order",
}

#: Faults the book can inject → what Kraken answers (HTTP status, error string).
_FAULT_ERRORS = {
    "rate_limit": (200, "EAPI:Rate limit exceeded"),
    "invalid_nonce": (200, "EAPI:Invalid nonce"),
    "revoked": (200, "EAPI:Invalid key"),
    "ban": (200, "EGeneral:Temporary lockout"),
    "server_error": (503, "EService:Unavailable"),
}

_CLOSED_PAGE = 50  # Kraken pages ClosedOrders and TradesHistory by 50


def _load(name: str) -> dict[str, Any]:
    return json.loads((_DATA / name).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------- catalogue
def _assets() -> dict[str, dict[str, Any]]:
    return _load("kraken_assets.json")["result"]


def _asset_pairs() -> dict[str, dict[str, Any]]:
    """The real recorded XBTUSDT pair plus the synthesized ones (same template, other assets)."""
    pairs = dict(_load("kraken_asset_pairs_xbtusdt.json")["result"])
    pairs.update(_load("kraken_asset_pairs_synthesized.json")["result"])
    return pairs


def _unified(asset_id: str, assets: dict[str, dict[str, Any]]) -> str:
    altname = assets.get(asset_id, {}).get("altname", asset_id)
    return {v: k for k, v in _UNIFIED_TO_ALTNAME.items()}.get(altname, altname)


def kraken_markets() -> list[MarketSpec]:
    """The fake's markets, from Kraken AssetPairs records: BTC/USD, BTC/USDT, ETH/USD, ETH/USDT, …

    `venue_symbol` is the pair id (the key in AssetPairs, e.g. XXBTZUSD); `raw` is the pair record served
    as is. Fees are the first tier of `fees_maker`/`fees` (percent), rounded to the pair's cost decimals.
    """
    assets = _assets()
    markets = []
    for pair_id, raw in _asset_pairs().items():
        base, quote = _unified(raw["base"], assets), _unified(raw["quote"], assets)
        markets.append(
            MarketSpec(
                symbol=f"{base}/{quote}",
                venue_symbol=pair_id,
                base=base,
                quote=quote,
                tick_size=Decimal(raw["tick_size"]),
                amount_step=Decimal(1).scaleb(-int(raw["lot_decimals"])),
                min_amount=Decimal(raw["ordermin"]),
                min_cost=Decimal(raw["costmin"]),
                maker_fee=Decimal(str(raw["fees_maker"][0][1])) / 100,
                taker_fee=Decimal(str(raw["fees"][0][1])) / 100,
                fee_decimals=int(raw["cost_decimals"]),
                raw=raw,
            )
        )
    return markets


def make_kraken_book(*, clock: Callable[[], int] | None = None) -> ExchangeBook:
    """A spot book with Kraken's markets, each fed the recorded series that prices it (`bot.sandbox.series`).

    BTC/USD and BTC/USDT (USD ones too: USDT ≈ USD), ETH/USD, ETH/USDT and SOL/USD replay the Binance
    recordings every fake venue shares, ETH/BTC their cross. Every market listed has a series (a fake venue
    that lists a market it cannot price would fail the bot where the real one never does).
    """
    book = ExchangeBook("kraken", kraken_markets(), clock=clock)
    feed_book(book)
    return book


# ---------------------------------------------------------------------------------------------- signing
def kraken_signature(secret_b64: str, path: str, nonce: str, body: str | bytes) -> str:
    """Kraken's `API-Sign`: b64(HMAC-SHA512(b64decode(secret), path + SHA256(nonce + body)))."""
    if isinstance(body, str):
        body = body.encode()
    digest = hashlib.sha256(nonce.encode() + body).digest()
    mac = hmac.new(base64.b64decode(secret_b64), path.encode() + digest, hashlib.sha512)
    return base64.b64encode(mac.digest()).decode()


def _signature_ok(secret_b64: str, path: str, nonce: str, body: bytes, sent: str) -> bool:
    try:
        expected = kraken_signature(secret_b64, path, nonce, body)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(expected, sent)


# ---------------------------------------------------------------------------------------------- ids
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_ID_MOD = 32**16
_ID_MUL = 0x9E3779B97F4A7C15F39D  # odd (so invertible modulo 32**16) and ~0.62 × the modulus: ids look random
_ID_INV = pow(_ID_MUL, -1, _ID_MOD)


def kraken_txid(book_id: int, prefix: str = "O") -> str:
    """Kraken-looking id ("OQCLML-BW3P3-BUCMWZ") for a book order ("O") or trade ("T") id, reversibly."""
    n = (book_id * _ID_MUL) % _ID_MOD
    chars = []
    for _ in range(16):
        n, r = divmod(n, 32)
        chars.append(_ID_ALPHABET[r])
    s = prefix + "".join(chars)
    return f"{s[:6]}-{s[6:11]}-{s[11:]}"


def _book_id(txid: str, prefix: str = "O") -> int | None:
    s = txid.strip().replace("-", "")
    if len(s) != 17 or s[0] != prefix or any(c not in _ID_ALPHABET for c in s[1:]):
        return None
    n = 0
    for c in reversed(s[1:]):
        n = n * 32 + _ID_ALPHABET.index(c)
    return (n * _ID_INV) % _ID_MOD


# ---------------------------------------------------------------------------------------------- rendering
class _KrakenError(Exception):
    """A Kraken error string to answer with (HTTP 200 unless `status` says otherwise)."""

    def __init__(self, message: str, status: int = 200) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _book_error(exc: BookError) -> _KrakenError:
    if exc.kind == "precision" and exc.field == "price":
        return _KrakenError("EOrder:Invalid price")
    if exc.kind == "precision":
        return _KrakenError("EGeneral:Invalid arguments:volume")
    return _KrakenError(_BOOK_ERRORS.get(exc.kind, "EGeneral:Internal error"))


def _fixed(value: Decimal | int | None, places: int) -> str:
    return f"{Decimal(value or 0):.{places}f}"


def _seconds(ms: int) -> float:
    return round(ms / 1000, 4)


class _Venue:
    """Kraken's view of one book: pair ids and names, asset ids, and the JSON renderers."""

    def __init__(self, book: ExchangeBook) -> None:
        self.book = book
        self.streams = ExecutionStreams(book, kraken_txid)
        self.assets = _assets()
        # balances are keyed by ccxt's unified codes (BTC); Kraken's altnames (XBT) and ids (XXBT) work too
        self._asset_by_code = {aid: aid for aid in self.assets}
        self._asset_by_code.update({info["altname"]: aid for aid, info in self.assets.items()})
        self._asset_by_code.update({_unified(aid, self.assets): aid for aid in self.assets})
        self.pairs: dict[str, dict[str, Any]] = {m.venue_symbol: m.raw for m in book.markets.values()}
        self._pair_names: dict[str, MarketSpec] = {}
        for m in book.markets.values():
            for name in (m.venue_symbol, m.raw.get("altname"), m.raw.get("wsname")):
                if name:
                    self._pair_names[name] = m

    # names
    def market(self, pair: str | None) -> MarketSpec:
        if not pair or pair not in self._pair_names:
            raise _KrakenError("EQuery:Unknown asset pair")
        return self._pair_names[pair]

    def asset_id(self, code: str) -> str:
        return self._asset_by_code.get(code, code)

    def asset_decimals(self, code: str) -> int:
        return int(self.assets.get(self.asset_id(code), {}).get("decimals", 8))

    def decimals(self, market: MarketSpec) -> tuple[int, int, int]:
        raw = market.raw
        return int(raw.get("pair_decimals", 8)), int(raw.get("lot_decimals", 8)), int(raw.get("cost_decimals", 8))

    # orders
    def order(self, order: Order, *, with_trades: bool) -> dict[str, Any]:
        """One order in QueryOrders/OpenOrders/ClosedOrders shape (field set of the recorded body)."""
        market = self.book.market(order.symbol)
        pd, ld, cd = self.decimals(market)
        altname = market.raw.get("altname", market.venue_symbol)
        extra = order.extra
        oflags = extra.get("kraken_oflags", "fciq")
        if order.type == "limit":
            descr_price = _fixed(order.price, pd)
            descr_order = f"{order.side} {_fixed(order.amount, ld)} {altname} @ limit {descr_price}"
        else:
            descr_price = "0"
            descr_order = f"{order.side} {_fixed(order.amount, ld)} {altname} @ market"
        cl_ord_id = order.client_order_id
        userref = extra.get("kraken_userref")
        body: dict[str, Any] = {
            "refid": None,
            "userref": userref if userref is not None else (None if cl_ord_id else 0),
        }
        if cl_ord_id is not None:
            body["cl_ord_id"] = cl_ord_id
        body.update(
            {
                "status": order.status,
                "opentm": _seconds(order.created_ms),
                "starttm": 0,
                "expiretm": 0,
                "descr": {
                    "pair": altname,
                    "type": order.side,
                    "ordertype": order.type,
                    "price": descr_price,
                    "price2": "0",
                    "leverage": "none",
                    "order": descr_order,
                    "close": "",
                },
                "vol": _fixed(order.amount, ld),
                "vol_exec": _fixed(order.filled, ld),
                "cost": _fixed(order.cost, cd),
                "fee": _fixed(order.fee, cd),
                "price": _fixed(order.average, pd),
                "stopprice": _fixed(0, pd),
                "limitprice": _fixed(0, pd),
                "misc": "",
                "oflags": oflags,
            }
        )
        if with_trades:
            ids = [kraken_txid(t.id, "T") for t in self.book.trades(order.api_key) if t.order_id == order.id]
            if ids:
                body["trades"] = ids
        body["reason"] = "User requested" if order.status == "canceled" else None
        if order.status != "open":
            body["closetm"] = _seconds(order.updated_ms)
        return body

    def trade(self, trade: Trade) -> dict[str, Any]:
        """One fill in TradesHistory shape (field set of the nautilus fixture and ccxt's comments)."""
        market = self.book.market(trade.symbol)
        pd, ld, cd = self.decimals(market)
        order = self.book.find_order(trade.order_id)
        return {
            "ordertxid": kraken_txid(trade.order_id),
            "postxid": kraken_txid(trade.id, "P"),
            "pair": market.venue_symbol,
            "time": _seconds(trade.time_ms),
            "type": trade.side,
            "ordertype": order.type,
            "price": _fixed(trade.price, pd),
            "cost": _fixed(trade.cost, cd),
            "fee": _fixed(trade.fee, cd),
            "vol": _fixed(trade.amount, ld),
            "margin": _fixed(0, cd),
            "misc": "",
            "trade_id": trade.id,
            "maker": trade.maker,
            "ledgers": [kraken_txid(trade.id, "L")],
        }

    def ticker(self, market: MarketSpec) -> dict[str, Any]:
        t = self.book.ticker(market.symbol)
        pd, ld, _ = self.decimals(market)
        vwap = t.quote_volume / t.base_volume if t.base_volume else t.last
        return {
            "a": [_fixed(t.ask, pd), "1", "1.000"],
            "b": [_fixed(t.bid, pd), "1", "1.000"],
            "c": [_fixed(t.last, pd), _fixed(0, ld)],
            "v": [_fixed(t.base_volume, ld), _fixed(t.base_volume, ld)],
            "p": [_fixed(vwap, pd), _fixed(vwap, pd)],
            "t": [0, 0],
            "l": [_fixed(t.low, pd), _fixed(t.low, pd)],
            "h": [_fixed(t.high, pd), _fixed(t.high, pd)],
            "o": _fixed(t.open, pd),
        }


# ---------------------------------------------------------------------------------------------- params
def _int_param(params: dict[str, str], name: str) -> int | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise _KrakenError(f"EGeneral:Invalid arguments:{name}") from None


def _decimal_param(params: dict[str, str], name: str) -> Decimal | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    try:
        return Decimal(value)
    except ArithmeticError:
        raise _KrakenError(f"EGeneral:Invalid arguments:{name}") from None


def _flag(params: dict[str, str], name: str) -> bool:
    return params.get(name, "").lower() in ("true", "1")


def _time_filter(items: list[Any], params: dict[str, str], time_of: Callable[[Any], int]) -> list[Any]:
    start, end = params.get("start"), params.get("end")
    if start:
        items = [i for i in items if time_of(i) > float(start) * 1000]
    if end:
        items = [i for i in items if time_of(i) <= float(end) * 1000]
    return items


# ---------------------------------------------------------------------------------------------- the app
_BOOK_KEY = web.AppKey("kraken_book", ExchangeBook)
_VENUE_KEY = web.AppKey("kraken_venue", _Venue)


def _ok(result: Any) -> web.Response:
    return web.json_response({"error": [], "result": result})


def _fail(error: _KrakenError) -> web.Response:
    return web.json_response({"error": [error.message]}, status=error.status)


async def _apply_fault(book: ExchangeBook, path: str, *, private: bool) -> None:
    """Consume a pending injected fault for this path: hang, or raise the Kraken error it stands for."""
    kind = book.take_fault(path)
    if kind is None:
        return
    if kind == "timeout":
        await asyncio.sleep(book.hang_seconds)
        raise _KrakenError("EService:Unavailable", 503)
    if kind in ("invalid_nonce", "revoked") and not private:
        return
    if kind == "rate_limit" and not private:
        raise _KrakenError("EGeneral:Too many requests")
    status, message = _FAULT_ERRORS[kind]
    raise _KrakenError(message, status)


# public ---------------------------------------------------------------------------------------------------
async def _public(request: web.Request) -> web.Response:
    book, venue = request.app[_BOOK_KEY], request.app[_VENUE_KEY]
    method = request.match_info["method"]
    params = dict(request.query)
    book.record_request(request.method, request.path, None, None, params)
    handler = _PUBLIC.get(method)
    try:
        await _apply_fault(book, request.path, private=False)
        if handler is None:
            raise _KrakenError("EGeneral:Unknown method")
        return _ok(handler(venue, params))
    except _KrakenError as exc:
        return _fail(exc)
    except BookError as exc:
        return _fail(_book_error(exc))


def _pub_time(venue: _Venue, params: dict[str, str]) -> dict[str, Any]:
    now = venue.book.now_ms() // 1000
    return {"unixtime": now, "rfc1123": time.strftime("%a, %d %b %y %H:%M:%S +0000", time.gmtime(now))}


def _pub_assets(venue: _Venue, params: dict[str, str]) -> dict[str, Any]:
    used = {m.raw.get(side) for m in venue.book.markets.values() for side in ("base", "quote")}
    wanted = params.get("asset")
    result = {aid: info for aid, info in venue.assets.items() if aid in used}
    if wanted:
        names = set(wanted.split(","))
        result = {aid: info for aid, info in result.items() if aid in names or info["altname"] in names}
        if not result:
            raise _KrakenError("EQuery:Unknown asset")
    return result


def _pub_asset_pairs(venue: _Venue, params: dict[str, str]) -> dict[str, Any]:
    wanted = params.get("pair")
    if not wanted:
        return dict(venue.pairs)
    markets = [venue.market(p) for p in wanted.split(",")]
    return {m.venue_symbol: m.raw for m in markets}


def _pub_ticker(venue: _Venue, params: dict[str, str]) -> dict[str, Any]:
    wanted = params.get("pair")
    if wanted:
        return {m.venue_symbol: venue.ticker(m) for m in (venue.market(p) for p in wanted.split(","))}
    return {
        m.venue_symbol: venue.ticker(m) for m in venue.book.markets.values() if venue.book.price(m.symbol) is not None
    }


def _pub_ohlc(venue: _Venue, params: dict[str, str]) -> dict[str, Any]:
    market = venue.market(params.get("pair"))
    interval = _int_param(params, "interval") or 1
    if interval not in _INTERVALS:
        raise _KrakenError("EGeneral:Invalid arguments")
    since = _int_param(params, "since")
    rows = venue.book.candles(market.symbol, _INTERVALS[interval])
    if since is not None:
        rows = [r for r in rows if r.timestamp_ms // 1000 > since]
    rows = rows[-720:]
    pd, ld, _ = venue.decimals(market)
    out = [
        [
            c.timestamp_ms // 1000,
            _fixed(c.open, pd),
            _fixed(c.high, pd),
            _fixed(c.low, pd),
            _fixed(c.close, pd),
            _fixed((c.high + c.low + c.close) / 3, pd),  # vwap: typical price (the book keeps no vwap)
            _fixed(c.volume, ld),
            1 if c.volume else 0,  # trade count: the book keeps none
        ]
        for c in rows
    ]
    last = out[-2][0] if len(out) > 1 else (out[-1][0] if out else 0)
    return {market.venue_symbol: out, "last": last}


_PUBLIC: dict[str, Callable[[_Venue, dict[str, str]], Any]] = {
    "Time": _pub_time,
    "Assets": _pub_assets,
    "AssetPairs": _pub_asset_pairs,
    "Ticker": _pub_ticker,
    "OHLC": _pub_ohlc,
}


# private --------------------------------------------------------------------------------------------------
async def _private(request: web.Request) -> web.Response:
    book, venue = request.app[_BOOK_KEY], request.app[_VENUE_KEY]
    method = request.match_info["method"]
    body = await request.read()
    try:
        params = dict(parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        params = {}
    api_key = request.headers.get("API-Key")
    account = book.key(api_key)
    signed_path = f"/0/private/{method}"
    nonce = params.get("nonce", "")
    valid = account is not None and _signature_ok(
        account.secret, signed_path, nonce, body, request.headers.get("API-Sign", "")
    )
    book.record_request(request.method, request.path, api_key, valid, {k: v for k, v in params.items()})
    try:
        await _apply_fault(book, request.path, private=True)
        hold = book.take_hold(request.path, request.method)
        if account is None or account.revoked:
            raise _KrakenError("EAPI:Invalid key")
        if not valid:
            raise _KrakenError("EAPI:Invalid signature")
        _check_nonce(account, nonce)
        handler = _PRIVATE.get(method)
        if handler is None:
            raise _KrakenError("EGeneral:Unknown method")
        answer = _ok(handler(venue, account, params))
        if hold:
            await asyncio.sleep(hold)  # the venue has acted; only its answer is late
        return answer
    except _KrakenError as exc:
        return _fail(exc)
    except BookError as exc:
        return _fail(_book_error(exc))


def _check_nonce(account: KeyAccount, nonce: str) -> None:
    """Kraken refuses a nonce not greater than the last one the key used (and then forgets nothing)."""
    try:
        value = int(nonce)
    except ValueError:
        raise _KrakenError("EAPI:Invalid nonce") from None
    if value <= account.extra.get("kraken_nonce", 0):
        raise _KrakenError("EAPI:Invalid nonce")
    account.extra["kraken_nonce"] = value


def _need_read(account: KeyAccount) -> None:
    if not account.can_read:
        raise _KrakenError("EGeneral:Permission denied")


def _need_order_read(account: KeyAccount) -> None:
    """Orders and trades need their own "Query … Orders & Trades" permissions on Kraken (not "Query Funds")."""
    _need_read(account)
    if not account.can_query_orders:
        raise _KrakenError("EGeneral:Permission denied")


def _priv_balance(venue: _Venue, account: KeyAccount, params: dict[str, str]) -> dict[str, Any]:
    _need_read(account)
    return {venue.asset_id(code): _fixed(total, venue.asset_decimals(code)) for code, total in account.balances.items()}


def _priv_balance_ex(venue: _Venue, account: KeyAccount, params: dict[str, str]) -> dict[str, Any]:
    _need_read(account)
    result = {}
    for code, total in account.balances.items():
        places = venue.asset_decimals(code)
        result[venue.asset_id(code)] = {
            "balance": _fixed(total, places),
            "hold_trade": _fixed(account.locked.get(code, Decimal(0)), places),
        }
    return result


def _priv_add_order(venue: _Venue, account: KeyAccount, params: dict[str, str]) -> dict[str, Any]:
    market = venue.market(params.get("pair"))
    side, ordertype = params.get("type", ""), params.get("ordertype", "")
    if side not in ("buy", "sell"):
        raise _KrakenError("EGeneral:Invalid arguments:type")
    if ordertype not in ("market", "limit"):
        raise _KrakenError("EGeneral:Invalid arguments:ordertype")
    volume = _decimal_param(params, "volume")
    if volume is None or volume <= 0:
        raise _KrakenError("EGeneral:Invalid arguments:volume")
    flags = [f for f in params.get("oflags", "").split(",") if f]
    viqc = "viqc" in flags
    if viqc and (ordertype != "market" or side != "buy"):
        raise _KrakenError("EGeneral:Invalid arguments:viqc")
    price = _decimal_param(params, "price") if ordertype == "limit" else None
    if ordertype == "limit" and (price is None or price <= 0):
        raise _KrakenError("EGeneral:Invalid arguments:price")
    userref = _int_param(params, "userref")
    cl_ord_id = params.get("cl_ord_id") or None
    kept_flags = [f for f in flags if f in ("post", "viqc")]
    extra = {"kraken_oflags": ",".join([*kept_flags, "fciq"]), "kraken_userref": userref}
    pd, ld, _ = venue.decimals(market)
    altname = market.raw.get("altname", market.venue_symbol)
    descr = f"{side} {_fixed(volume, ld)} {altname} @ " + (f"limit {_fixed(price, pd)}" if price else "market")
    if _flag(params, "validate"):
        return {"descr": {"order": descr}}
    order = venue.book.place_order(
        account,
        market.symbol,
        side,
        ordertype,
        amount=None if viqc else volume,
        price=price,
        quote_cost=volume if viqc else None,
        client_order_id=cl_ord_id,
        post_only="post" in flags,
        extra=extra,
    )
    return {"descr": {"order": descr}, "txid": [kraken_txid(order.id)]}


def _orders_of(venue: _Venue, account: KeyAccount, orders: list[Order], params: dict[str, str]) -> list[Order]:
    userref = _int_param(params, "userref")
    cl_ord_id = params.get("cl_ord_id")
    if userref is not None:
        orders = [o for o in orders if o.extra.get("kraken_userref") == userref]
    if cl_ord_id:
        orders = [o for o in orders if o.client_order_id == cl_ord_id]
    return orders


def _priv_query_orders(venue: _Venue, account: KeyAccount, params: dict[str, str]) -> dict[str, Any]:
    _need_order_read(account)
    txids = [t for t in params.get("txid", "").split(",") if t]
    if not txids:
        raise _KrakenError("EGeneral:Invalid arguments:txid")
    mine = {o.id: o for o in venue.book.all_orders(account)}
    found = []
    for txid in txids:
        book_id = _book_id(txid)
        if book_id is None or book_id not in mine:
            raise _KrakenError("EOrder:Invalid order")
        found.append(mine[book_id])
    found = _orders_of(venue, account, found, params)
    with_trades = _flag(params, "trades")
    return {kraken_txid(o.id): venue.order(o, with_trades=with_trades) for o in found}


def _priv_open_orders(venue: _Venue, account: KeyAccount, params: dict[str, str]) -> dict[str, Any]:
    _need_order_read(account)
    orders = _orders_of(venue, account, venue.book.open_orders(account), params)
    with_trades = _flag(params, "trades")
    return {"open": {kraken_txid(o.id): venue.order(o, with_trades=with_trades) for o in reversed(orders)}}


def _priv_closed_orders(venue: _Venue, account: KeyAccount, params: dict[str, str]) -> dict[str, Any]:
    _need_order_read(account)
    orders = _orders_of(venue, account, venue.book.closed_orders(account), params)
    orders = _time_filter(orders, params, lambda o: o.updated_ms)
    orders.sort(key=lambda o: (o.updated_ms, o.id), reverse=True)  # newest first, as Kraken lists them
    offset = _int_param(params, "ofs") or 0
    page = orders[offset : offset + _CLOSED_PAGE]
    with_trades = _flag(params, "trades")
    return {"closed": {kraken_txid(o.id): venue.order(o, with_trades=with_trades) for o in page}, "count": len(orders)}


def _priv_cancel_order(venue: _Venue, account: KeyAccount, params: dict[str, str]) -> dict[str, Any]:
    cl_ord_id = params.get("cl_ord_id")
    txid = params.get("txid", "")
    if cl_ord_id:
        targets = [o for o in venue.book.open_orders(account) if o.client_order_id == cl_ord_id]
    elif txid.isdigit():  # a userref cancels every open order carrying it
        targets = [o for o in venue.book.open_orders(account) if o.extra.get("kraken_userref") == int(txid)]
    elif txid:
        book_id = _book_id(txid)
        targets = [o for o in venue.book.open_orders(account) if o.id == book_id]
    else:
        raise _KrakenError("EGeneral:Invalid arguments:txid")
    if not targets:
        raise _KrakenError("EOrder:Unknown order")
    for order in targets:
        venue.book.cancel_order(account, order_id=order.id)
    return {"count": len(targets)}


def _priv_trades_history(venue: _Venue, account: KeyAccount, params: dict[str, str]) -> dict[str, Any]:
    _need_order_read(account)
    trades = _time_filter(venue.book.trades(account), params, lambda t: t.time_ms)
    trades.sort(key=lambda t: (t.time_ms, t.id), reverse=True)
    offset = _int_param(params, "ofs") or 0
    page = trades[offset : offset + _CLOSED_PAGE]
    return {"trades": {kraken_txid(t.id, "T"): venue.trade(t) for t in page}, "count": len(trades)}


def _priv_withdraw_methods(venue: _Venue, account: KeyAccount, params: dict[str, str]) -> list[dict[str, Any]]:
    """Kraken needs "Funds – Query" and "Funds – Withdraw" here: the probe for a withdraw-enabled key."""
    if not account.can_withdraw:
        raise _KrakenError("EGeneral:Permission denied")
    methods = _load("kraken_withdraw_methods.json")["result"]
    asset = params.get("asset")
    if asset:
        methods = [m for m in methods if m["asset"] == venue.asset_id(asset)]
    return methods


def _priv_get_websockets_token(venue: _Venue, account: KeyAccount, params: dict[str, str]) -> dict[str, Any]:
    """A token for the authenticated WebSocket (`bot.sandbox.kraken_ws`), to be used within 15 minutes."""
    _need_read(account)
    return venue.streams.issue_token(account)


_PRIVATE: dict[str, Callable[[_Venue, KeyAccount, dict[str, str]], Any]] = {
    "Balance": _priv_balance,
    "BalanceEx": _priv_balance_ex,
    "AddOrder": _priv_add_order,
    "QueryOrders": _priv_query_orders,
    "OpenOrders": _priv_open_orders,
    "ClosedOrders": _priv_closed_orders,
    "CancelOrder": _priv_cancel_order,
    "TradesHistory": _priv_trades_history,
    "WithdrawMethods": _priv_withdraw_methods,
    "GetWebSocketsToken": _priv_get_websockets_token,
}


def make_kraken_app(book: ExchangeBook) -> web.Application:
    """An aiohttp app serving Kraken's `/0/public/*` and `/0/private/*` over `book`.

    Point ccxt at it by replacing the origin of `urls['api']['public']` and `['private']`. Run it with
    `access_log=None` like the other fakes.
    """
    app = web.Application()
    app[_BOOK_KEY] = book
    venue = _Venue(book)
    app[_VENUE_KEY] = venue
    app.router.add_route("*", "/0/public/{method}", _public)
    app.router.add_post("/0/private/{method}", _private)
    app.router.add_get(WS_V2_PATH, venue.streams.handle)
    app.on_shutdown.append(lambda _app: venue.streams.drop())
    return app


def kraken_streams(app: web.Application) -> ExecutionStreams:
    """The fake's WebSocket v2 `executions` channel (faults, counts) of an app `make_kraken_app` built."""
    return app[_VENUE_KEY].streams

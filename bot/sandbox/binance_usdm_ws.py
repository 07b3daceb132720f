"""The fake Binance USD-M user-data stream: listenKeys by REST, their events on the `/private` WebSocket stream.

What it serves, as Binance documents it (2026) and ccxt's `pro/binance.py` uses it:

- `POST /fapi/v1/listenKey` (API-key header `X-MBX-APIKEY`, no signature, weight 1): `{"listenKey": …}`, valid
  60 minutes; a POST while the account's listenKey is valid returns that one and extends it. `PUT` extends it
  (`{"listenKey": …}`), or answers 400 `{"code": -1125, "msg": "This listenKey does not exist."}` once it has
  expired; `DELETE` ends it (`{}`). A missing key: -2014; an unknown or revoked key, or one without futures
  permission: -2015. One listenKey per exchange account (keys of one account share it).
- `/private/stream` (WebSocket, stream mode): several listenKeys per connection, added with
  `{"method": "SUBSCRIBE", "params": [<listenKey>, …], "id": n}` → `{"result": null, "id": n}` (and
  `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`); each event wrapped `{"stream": <listenKey>, "data": {...}}`.
- `ORDER_TRADE_UPDATE` for every fill (`x=TRADE`) and cancel (`x=CANCELED`) of the listenKey's account, with
  the fields Binance lists (`c`, `i`, `l`/`L`, `n`/`N`, `t`, `rp`, `X`, `z`, `ap`…); `listenKeyExpired`
  (`{"e", "E", "listenKey"}`) when a subscribed listenKey expires, after which its events stop.

Synthesized (not from a recording or the docs): the SUBSCRIBE item for a listenKey is the bare listenKey (a
`<listenKey>@<event>` item is accepted too); the `stream` name of an event is the bare listenKey; a SUBSCRIBE
naming an unknown or expired listenKey answers `{"code": 3, "msg": "Invalid listenKey.", "id": n}`; listenKeys
in the URL query (`?listenKey=…&events=…`) and the `/private/ws` path are not served; expiry is checked when an
event is due, on every request and by `expire_due()` (no timer of its own); only JSON messages count against
the 10 messages per second of a connection (Binance counts pings and pongs too); the event's `E`/`T` come from
the book's clock. Faults (from `binance_ws.UserDataStreams`): `drop()`, `stall(seconds)`, `refuse(n)`,
`lifetime`; and `expire(api_key)`: the account's listenKey expires now.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from bot.sandbox.binance import INVALID_KEY, BinanceError, BinanceVenue, Call, Route, _plain, _status, _w
from bot.sandbox.binance_ws import UserDataStreams
from bot.sandbox.exchange_book import BookError, Order, Trade
from bot.sandbox.stream_server import StreamSession

PRIVATE_STREAM_PATH = "/private/stream"
LISTEN_KEY_PATH = "/fapi/v1/listenKey"
#: Streams one connection may carry (Binance: 1,024) and JSON messages it may send per second (10).
MAX_STREAMS = 1024
MESSAGES_PER_SECOND = 10
VALIDITY_MS = 60 * 60 * 1000
LISTEN_KEY_GONE = (400, -1125, "This listenKey does not exist.")


@dataclass
class _ListenKey:
    key: str
    home: str
    expires_ms: int


class UsdmUserDataStreams(UserDataStreams):
    """The listenKeys and `/private` stream connections of one fake Binance USD-M venue."""

    def __init__(self, venue: BinanceVenue) -> None:
        super().__init__(venue)
        self.max_subscriptions = MAX_STREAMS
        self.validity_ms = VALIDITY_MS
        self.listen_keys: dict[str, _ListenKey] = {}  # listenKey → its account
        self._by_home: dict[str, str] = {}  # account (`KeyAccount.home`) → its listenKey
        self._sent: dict[StreamSession, deque[float]] = {}
        self.expired_events = 0

    # ---------------------------------------------------------------- REST: /fapi/v1/listenKey
    def routes(self) -> dict[tuple[str, str], Any]:
        """(method, path) → handler, for `BinanceVenue` to serve with weight 1 each."""
        return {
            ("POST", LISTEN_KEY_PATH): self.create,
            ("PUT", LISTEN_KEY_PATH): self.keep_alive,
            ("DELETE", LISTEN_KEY_PATH): self.close,
        }

    def _account_home(self, call: Call) -> str:
        api_key = call.request.headers.get("X-MBX-APIKEY")
        if not api_key:
            raise BinanceError(401, -2014, "API-key format invalid.")
        try:
            return self.book.authenticate(api_key).home
        except BookError:
            raise BinanceError(*INVALID_KEY) from None

    def _valid(self, home: str) -> _ListenKey | None:
        self.expire_due()
        key = self._by_home.get(home)
        return self.listen_keys.get(key) if key is not None else None

    async def create(self, call: Call) -> dict[str, Any]:
        home = self._account_home(call)
        entry = self._valid(home)
        if entry is None:
            entry = _ListenKey(secrets.token_hex(32), home, 0)
            self.listen_keys[entry.key] = entry
            self._by_home[home] = entry.key
        entry.expires_ms = self.book.now_ms() + self.validity_ms
        return {"listenKey": entry.key}

    async def keep_alive(self, call: Call) -> dict[str, Any]:
        entry = self._valid(self._account_home(call))
        if entry is None:
            raise BinanceError(*LISTEN_KEY_GONE)
        entry.expires_ms = self.book.now_ms() + self.validity_ms
        return {"listenKey": entry.key}

    async def close(self, call: Call) -> dict[str, Any]:
        entry = self._valid(self._account_home(call))
        if entry is None:
            raise BinanceError(*LISTEN_KEY_GONE)
        self._forget(entry)
        for session in self.sessions:
            session.subscriptions.pop(entry.key, None)
        return {}

    # ---------------------------------------------------------------- expiry
    def expire(self, api_key: str) -> bool:
        """Fault: the account's listenKey expires now (its subscribers get `listenKeyExpired`)."""
        account = self.book.key(api_key)
        key = self._by_home.get(account.home if account is not None else api_key)
        if key is None:
            return False
        self.listen_keys[key].expires_ms = self.book.now_ms()
        self.expire_due()
        return True

    def expire_due(self) -> None:
        """End every listenKey past its validity: `listenKeyExpired` to each connection subscribed to it."""
        now = self.book.now_ms()
        for entry in [e for e in self.listen_keys.values() if e.expires_ms <= now]:
            self._forget(entry)
            for session in self.sessions:
                if session.subscriptions.pop(entry.key, None) is not None:
                    event = {"e": "listenKeyExpired", "E": now, "listenKey": entry.key}
                    session.queue.put_nowait({"stream": entry.key, "data": event})
                    self.expired_events += 1

    def _forget(self, entry: _ListenKey) -> None:
        self.listen_keys.pop(entry.key, None)
        if self._by_home.get(entry.home) == entry.key:
            del self._by_home[entry.home]

    def listen_key(self, api_key: str) -> str | None:
        """The account's valid listenKey, if any (tests)."""
        account = self.book.key(api_key)
        entry = self._valid(account.home) if account is not None else None
        return entry.key if entry is not None else None

    def subscribed(self, api_key: str) -> bool:
        """Whether a connection is subscribed to the account's valid listenKey (tests)."""
        key = self.listen_key(api_key)
        return key is not None and any(key in session.subscriptions for session in self.sessions)

    # ---------------------------------------------------------------- the connection
    async def _request(self, session: StreamSession, text: str) -> None:
        if self._over_rate(session):
            await session.ws.close(code=1008, message=b"Too many requests")  # Binance disconnects
            return
        self.expire_due()
        try:
            request = json.loads(text)
            request_id, method, params = request.get("id"), request.get("method"), request.get("params") or []
        except (ValueError, AttributeError):
            session.queue.put_nowait({"code": 3, "msg": "Invalid JSON: expected a JSON object", "id": None})
            return
        if method == "SUBSCRIBE":
            streams = [str(p).split("@", 1)[0] for p in params]
            if any(s not in self.listen_keys for s in streams):
                session.queue.put_nowait({"code": 3, "msg": "Invalid listenKey.", "id": request_id})
                return
            if len(set(session.subscriptions) | set(streams)) > self.max_subscriptions:
                session.queue.put_nowait({"code": 3, "msg": "Too many streams on this connection.",
                                          "id": request_id})
                return
            for stream in streams:
                session.subscriptions[stream] = self.listen_keys[stream].home
            session.queue.put_nowait({"result": None, "id": request_id})
        elif method == "UNSUBSCRIBE":
            for stream in params:
                session.subscriptions.pop(str(stream).split("@", 1)[0], None)
            session.queue.put_nowait({"result": None, "id": request_id})
        elif method == "LIST_SUBSCRIPTIONS":
            session.queue.put_nowait({"result": list(session.subscriptions), "id": request_id})
        else:
            session.queue.put_nowait({"code": 2, "msg": f"Invalid request: unknown method {method!r}",
                                      "id": request_id})

    def _over_rate(self, session: StreamSession) -> bool:
        now = time.monotonic()
        sent = self._sent.setdefault(session, deque())
        while sent and sent[0] <= now - 1.0:
            sent.popleft()
        sent.append(now)
        for gone in [s for s in self._sent if s not in self.sessions]:
            del self._sent[gone]
        return len(sent) > MESSAGES_PER_SECOND

    # ---------------------------------------------------------------- events
    def _on_order(self, order: Order, trade: Trade | None) -> None:
        account = self.book.keys.get(order.api_key)
        if account is None:
            return
        self.expire_due()
        event: dict[str, Any] | None = None
        for session in self.sessions:
            for stream, home in session.subscriptions.items():
                if home != account.home:
                    continue
                event = event or self.order_trade_update(order, trade)
                session.queue.put_nowait({"stream": stream, "data": event})
                self.events_sent += 1

    def order_trade_update(self, order: Order, trade: Trade | None) -> dict[str, Any]:
        """Binance's `ORDER_TRADE_UPDATE` of one fill (`trade`) or of the order's cancel (`trade` None)."""
        market = self.book.market(order.symbol)
        now = self.book.now_ms()
        venue = self.venue
        body: dict[str, Any] = {
            "s": market.venue_symbol,
            "c": order.client_order_id,
            "S": order.side.upper(),
            "o": order.type.upper(),
            "f": order.extra.get("timeInForce", "GTC"),
            "q": venue._qty(market, order.amount),
            "p": venue._px(market, order.price),
            "ap": _plain(order.average) if order.average is not None else "0",
            "sp": "0",
            "x": "TRADE" if trade is not None else "CANCELED",
            "X": _status(order),
            "i": order.id,
            "l": venue._qty(market, trade.amount) if trade is not None else "0",
            "z": venue._qty(market, order.filled),
            "L": _plain(trade.price) if trade is not None else "0",
            "T": trade.time_ms if trade is not None else now,
            "t": trade.id if trade is not None else 0,
            "b": "0",
            "a": "0",
            "m": bool(trade.maker) if trade is not None else False,
            "R": order.reduce_only,
            "wt": "CONTRACT_PRICE",
            "ot": order.type.upper(),
            "ps": order.position_side,
            "cp": False,
            "rp": _plain(trade.realized_pnl) if trade is not None else "0",
            "pP": False,
            "si": 0,
            "ss": 0,
            "V": "EXPIRE_MAKER",
            "pm": "NONE",
            "gtd": 0,
        }
        if trade is not None and trade.fee:  # Binance: "will not push if no commission"
            body["N"], body["n"] = trade.fee_currency, _plain(trade.fee)
        return {"e": "ORDER_TRADE_UPDATE", "E": now, "T": body["T"], "o": body}


def serve(venue: BinanceVenue) -> UsdmUserDataStreams:
    """Add the listenKey endpoints and the `/private/stream` WebSocket to a fake USD-M venue."""
    streams = UsdmUserDataStreams(venue)
    for key, handler in streams.routes().items():
        venue.routes[key] = Route(handler, _w(1), False)  # key-only: checked by the handler
    venue.app.router.add_get(PRIVATE_STREAM_PATH, streams.handle)
    venue.app.on_shutdown.append(lambda _app: streams.drop())
    return streams


__all__ = ["LISTEN_KEY_PATH", "PRIVATE_STREAM_PATH", "UsdmUserDataStreams", "serve"]

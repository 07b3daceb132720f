"""The fake Binance Spot WebSocket API (`/ws-api/v3`): user-data subscriptions pushing `executionReport`s.

What it serves, as Binance documents it (and ccxt's `pro/binance.py` parses it):

- `userDataStream.subscribe.signature` with `apiKey`, `timestamp`, optional `recvWindow` and `signature`: an
  HMAC-SHA256 with the key's secret over the other parameters sorted by name and joined as a query string.
  Answer `{"id", "status": 200, "result": {"subscriptionId": N}}`; several subscriptions per connection (up to
  `max_subscriptions`, 1,000 on Binance), each event wrapped `{"subscriptionId": N, "event": {...}}`.
- `userDataStream.unsubscribe` with `subscriptionId`: `{"id", "status": 200, "result": {}}`, then the
  subscription's `eventStreamTerminated` event.
- errors `{"id", "status", "error": {"code", "msg"}}` with the REST codes (-1022 signature, -2015 key, -1021).
- `executionReport` for every fill (`x=TRADE`) and cancel (`x=CANCELED`, the original client id in `C`, a new
  one in `c`) of any key of the subscribed account; fields as the docs list them.

Synthesized (not from a recording): the event's `E`/`T` come from the book's clock; the `rateLimits` array
is omitted; `I`, `W`, `V` carry plausible constants; a refused connection is an HTTP 503 before the upgrade.
Trades Strata did not make: `place_by_hand(api_key, …)` places an order as Binance's website does (its client order
id `web_…`, the apps' `and_…`/`ios_…`), on the key's exchange account; its fills are reported like any other.
Faults on demand: `redeliver(order_id)` sends an order's fills again (a venue may deliver an event twice),
`drop()` closes every connection, `stall(seconds)` stops every connection reading, sending and
answering pings, `refuse(n)` refuses the next n connection attempts, `lifetime` closes a connection that long
after it opened (Binance: 24 h). `attempts` logs every connection attempt (for the 300 per 5 minutes rule).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

from bot.sandbox.binance import INVALID_KEY, BinanceError, BinanceVenue, _fmt, _status
from bot.sandbox.exchange_book import Order, Trade
from bot.sandbox.stream_server import StreamServer, StreamSession

WS_API_PATH = "/ws-api/v3"
MAX_SUBSCRIPTIONS = 1000


class UserDataStreams(StreamServer):
    """The WebSocket API user-data subscriptions of one fake Binance Spot venue."""

    def __init__(self, venue: BinanceVenue) -> None:
        super().__init__(venue.book)
        self.venue = venue
        self.max_subscriptions = MAX_SUBSCRIPTIONS
        self._next_subscription = 0

    # ---------------------------------------------------------------- orders by hand, faults and counts
    def place_by_hand(
        self, api_key: str, symbol: str, side: str, type: str = "market", amount: str | None = None,
        price: str | None = None, *, app: str = "web",
    ) -> Order:
        """An order placed on Binance's website (`app="web"`) or app (`"and"`, `"ios"`) on the exchange account of
        `api_key`: Binance names it `<app>_` and 18 random characters, never an id Strata sends."""
        client_id = f"{app}_" + secrets.token_hex(9)
        return self.book.place_order(api_key, symbol, side, type, amount, price, client_order_id=client_id)

    def redeliver(self, order_id: int) -> int:
        """Send the fills of an order again to every subscription of its account; return how many."""
        order = self.book.find_order(order_id)
        trades = [t for t in self.book.trades(order.api_key) if t.order_id == order_id]
        for trade in trades:
            self._on_order(order, trade)
        return len(trades)

    async def _request(self, session: StreamSession, text: str) -> None:
        try:
            request = json.loads(text)
            request_id, method, params = request.get("id"), request.get("method"), request.get("params") or {}
        except (ValueError, AttributeError):
            session.queue.put_nowait({"id": None, "status": 400, "error": {"code": -1102, "msg": "Invalid JSON."}})
            return
        try:
            if method == "userDataStream.subscribe.signature":
                result = self._subscribe(session, params)
            elif method == "userDataStream.unsubscribe":
                result = self._unsubscribe(session, params)
            elif method == "ping":
                result = {}
            else:
                raise BinanceError(400, -1102, f"Unknown method '{method}'.")
        except BinanceError as err:
            error = {"code": err.code, "msg": err.msg}
            session.queue.put_nowait({"id": request_id, "status": err.status, "error": error})
            return
        session.queue.put_nowait({"id": request_id, "status": 200, "result": result})

    def _subscribe(self, session: StreamSession, params: dict[str, Any]) -> dict[str, Any]:
        params = {k: str(v) for k, v in params.items()}
        api_key, signature = params.get("apiKey"), params.get("signature")
        if not api_key:
            raise BinanceError(400, -1102, "Mandatory parameter 'apiKey' was not sent, was empty/null, or malformed.")
        account = self.book.key(api_key)
        if account is None or account.revoked:
            raise BinanceError(*INVALID_KEY)
        if not signature:
            raise BinanceError(
                400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."
            )
        payload = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "signature")
        expected = hmac.new(account.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise BinanceError(400, -1022, "Signature for this request is not valid.")
        self.venue._check_timestamp(params)
        if len(session.subscriptions) >= self.max_subscriptions:
            raise BinanceError(400, -1210, "Too many subscriptions on this connection.")  # synthesized code
        subscription = self._next_subscription
        self._next_subscription += 1
        session.subscriptions[subscription] = account.home
        return {"subscriptionId": subscription}

    def _unsubscribe(self, session: StreamSession, params: dict[str, Any]) -> dict[str, Any]:
        wanted = params.get("subscriptionId")
        ids = list(session.subscriptions) if wanted is None else [int(wanted)]
        for subscription in ids:
            if session.subscriptions.pop(subscription, None) is not None:
                session.queue.put_nowait({
                    "subscriptionId": subscription,
                    "event": {"e": "eventStreamTerminated", "E": self.book.now_ms()},
                })
        return {}

    # ---------------------------------------------------------------- events
    def _on_order(self, order: Order, trade: Trade | None) -> None:
        account = self.book.keys.get(order.api_key)
        if account is None:
            return
        event: dict[str, Any] | None = None
        for session in self.sessions:
            for subscription, home in session.subscriptions.items():
                if home != account.home:
                    continue
                event = event or self.execution_report(order, trade)
                session.queue.put_nowait({"subscriptionId": subscription, "event": event})
                self.events_sent += 1

    def execution_report(self, order: Order, trade: Trade | None) -> dict[str, Any]:
        """Binance's `executionReport` of one fill (`trade`) or of the order's cancel (`trade` None)."""
        market = self.book.market(order.symbol)
        now = self.book.now_ms()
        cancel = trade is None
        return {
            "e": "executionReport",
            "E": now,
            "s": market.venue_symbol,
            "c": ("web_" + secrets.token_hex(9)[:18]) if cancel else order.client_order_id,
            "S": order.side.upper(),
            "o": order.extra.get("binanceType", order.type.upper()),
            "f": order.extra.get("timeInForce", "GTC"),
            "q": _fmt(order.amount),
            "p": _fmt(order.price),
            "P": _fmt(None),
            "F": _fmt(None),
            "g": -1,
            "C": order.client_order_id if cancel else "",
            "x": "CANCELED" if cancel else "TRADE",
            "X": _status(order),
            "r": "NONE",
            "i": order.id,
            "l": _fmt(trade.amount if trade else None),
            "z": _fmt(order.filled),
            "L": _fmt(trade.price if trade else None),
            "n": _fmt(trade.fee if trade else None),
            "N": trade.fee_currency if trade else None,
            "T": trade.time_ms if trade else now,
            "t": trade.id if trade else -1,
            "I": 0,
            "w": order.status == "open",
            "m": bool(trade.maker) if trade else False,
            "M": True,
            "O": order.created_ms,
            "Z": _fmt(order.cost),
            "Y": _fmt(trade.cost if trade else None),
            "Q": _fmt(order.quote_cost),
            "W": order.created_ms,
            "V": "EXPIRE_MAKER",
        }

"""The fake Kraken WebSocket v2 `executions` channel (`/v2` on the fake's origin) and its tokens.

What it serves, as Kraken documents it (docs.kraken.com, spot-websocket-v2/executions) and ccxt's
`pro/kraken.py` (`authenticate`, `watch_private`, `handle_my_trades`, `parse_ws_order`) reads it:

- `GetWebSocketsToken` (REST, private, signed like every Kraken private call: see `bot.sandbox.kraken`):
  `{"token": …, "expires": 900}`; a token not used to subscribe within 15 minutes is refused.
- `{"method": "subscribe", "params": {"channel": "executions", "token", "snap_trades", "snap_orders"},
  "req_id"}` → `{"method": "subscribe", "req_id", "success": true, "result": {"channel": "executions",
  "snapshot": …}, "time_in", "time_out"}`, then one `{"channel": "executions", "type": "snapshot", "data": [...],
  "sequence"}` (the last 50 fills with `snap_trades`, open orders with `snap_orders`, default true).
- Every fill of an order of the token's account: `{"channel": "executions", "type": "update", "data": [{exec_type
  "trade", order_id, cl_ord_id, exec_id, trade_id, symbol, side, last_qty, last_price, liquidity_ind, cost,
  order_status, order_type, order_qty, cum_qty, cum_cost, avg_price, fees [{asset, qty}], fee_usd_equiv,
  timestamp}], "sequence"}`, followed by an `exec_type` `filled` event when the order is done; a cancel is an
  `exec_type` `canceled` event.
- `{"method": "unsubscribe", "params": {"channel": "executions", "token"}, "req_id"}` → a success answer.

Synthesized (not from a recording): the refusal text of a bad or expired token (`ESession:Invalid session`, the
v1 text; v2's `error` field carries a text like it); `fee_usd_equiv` equals the fee when the quote is USD, else
0; `exec_id`/`order_id` are the REST txids of the same trade/order; `sequence` counts per connection;
`maxratecount`, `warnings` and the per-second heartbeat are omitted; a refused connection is an HTTP 503 before
the upgrade. Faults on demand: `drop()`, `stall(seconds)`, `refuse(n)`, `lose(n)` (events that never arrive) and
`expire_tokens()`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bot.sandbox.exchange_book import ExchangeBook, KeyAccount, Order, Trade
from bot.sandbox.stream_server import StreamServer, StreamSession

WS_V2_PATH = "/v2"
#: Seconds a token may wait before it is used to subscribe (Kraken: 15 minutes).
TOKEN_TTL = 900.0
#: Fills in a `snap_trades` snapshot.
SNAPSHOT_TRADES = 50
#: Kraken's order states in the v2 channel (`new`, `partially_filled`, `filled`, `canceled`, `expired`).
_STATUS = {"open": "new", "closed": "filled", "canceled": "canceled", "expired": "expired"}
INVALID_TOKEN = "ESession:Invalid session"


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _number(value: Decimal | None) -> float:
    return float(value) if value is not None else 0.0


class ExecutionStreams(StreamServer):
    """The `executions` subscriptions of one fake Kraken, and the tokens `GetWebSocketsToken` hands out."""

    def __init__(self, book: ExchangeBook, txid: Callable[..., str]) -> None:
        super().__init__(book)
        self.txid = txid  # `bot.sandbox.kraken.kraken_txid`: the REST ids of the same orders and trades
        #: token → (its key's account, monotonic time issued).
        self.tokens: dict[str, tuple[KeyAccount, float]] = {}
        self.token_ttl = TOKEN_TTL
        self.tokens_issued = 0
        self._lose = 0

    # ---------------------------------------------------------------- tokens
    def issue_token(self, account: KeyAccount) -> dict[str, Any]:
        """`GetWebSocketsToken`'s result for this key."""
        token = secrets.token_urlsafe(32)
        self.tokens[token] = (account, time.monotonic())
        self.tokens_issued += 1
        return {"token": token, "expires": int(self.token_ttl)}

    def expire_tokens(self) -> None:
        """Every token handed out so far is refused from now on (as Kraken does after an upgrade)."""
        self.tokens.clear()

    # ---------------------------------------------------------------- faults and counts
    def lose(self, events: int) -> None:
        """The next `events` fills or cancels reach no subscriber (lost on the way; the connection stays)."""
        self._lose = events

    # ---------------------------------------------------------------- the connection
    def greeting(self) -> dict[str, Any]:
        return {"channel": "status", "type": "update", "data": [{
            "version": "2.0.0", "system": "online", "api_version": "v2", "connection_id": secrets.randbits(63),
        }]}

    async def _request(self, session: StreamSession, text: str) -> None:
        time_in = _rfc3339(self.book.now_ms())
        try:
            request = json.loads(text)
            method, params, req_id = request.get("method"), request.get("params") or {}, request.get("req_id")
        except (ValueError, AttributeError):
            session.queue.put_nowait({"error": "EGeneral:Invalid arguments", "success": False})
            return
        answer: dict[str, Any] = {"method": method, "req_id": req_id, "time_in": time_in}
        if method == "ping":
            session.queue.put_nowait({"method": "pong", "req_id": req_id, "time_in": time_in,
                                      "time_out": _rfc3339(self.book.now_ms())})
            return
        error, snapshot = None, None
        if method not in ("subscribe", "unsubscribe") or params.get("channel") != "executions":
            error = "EGeneral:Invalid arguments"
        else:
            token = str(params.get("token") or "")
            issued = self.tokens.get(token)
            account = issued[0] if issued is not None else None
            if method == "unsubscribe":
                session.subscriptions.pop(token, None)
            elif issued is None or account is None or account.revoked:
                error = INVALID_TOKEN
            elif token not in session.subscriptions and time.monotonic() - issued[1] > self.token_ttl:
                error = INVALID_TOKEN  # not used within its 15 minutes
            elif session.subscriptions and token not in session.subscriptions:
                error = "EGeneral:Invalid arguments:already subscribed"  # synthesized: one token per connection
            else:
                session.subscriptions[token] = account.home
                snapshot = self._snapshot(account, params)
        if error is not None:
            answer.update({"success": False, "error": error})
        else:
            result: dict[str, Any] = {"channel": "executions"}
            if method == "subscribe":
                result["snapshot"] = snapshot is not None
            answer.update({"success": True, "result": result})
        answer["time_out"] = _rfc3339(self.book.now_ms())
        session.queue.put_nowait(answer)
        if snapshot is not None:
            session.sequence += 1
            session.queue.put_nowait(
                {"channel": "executions", "type": "snapshot", "data": snapshot, "sequence": session.sequence}
            )

    def _snapshot(self, account: KeyAccount, params: dict[str, Any]) -> list[dict[str, Any]] | None:
        """The subscription's snapshot, or None when neither open orders nor trades were asked for."""
        if not params.get("snap_orders", True) and not params.get("snap_trades", False):
            return None
        data: list[dict[str, Any]] = []
        if params.get("snap_orders", True):
            data += [self.order_event(o, None) for o in self.book.open_orders(account)]
        if params.get("snap_trades", False):
            for trade in self.book.trades(account)[-SNAPSHOT_TRADES:]:
                order = self.book.find_order(trade.order_id)
                data.append(self.trade_event(order, trade))
        return data

    # ---------------------------------------------------------------- events
    def _on_order(self, order: Order, trade: Trade | None) -> None:
        account = self.book.keys.get(order.api_key)
        if account is None:
            return
        if self._lose > 0:
            self._lose -= 1
            return
        events: list[dict[str, Any]] | None = None
        for session in self.sessions:
            if account.home not in session.subscriptions.values():
                continue
            if events is None:
                events = [self.trade_event(order, trade)] if trade is not None else [self.order_event(order, None)]
                if trade is not None and order.status == "closed":
                    events.append(self.order_event(order, "filled"))
            for event in events:
                session.sequence += 1
                session.queue.put_nowait(
                    {"channel": "executions", "type": "update", "data": [event], "sequence": session.sequence}
                )
                self.events_sent += 1

    def _order_fields(self, order: Order) -> dict[str, Any]:
        market = self.book.market(order.symbol)
        fields: dict[str, Any] = {
            "order_id": self.txid(order.id),
            "symbol": market.raw.get("wsname", market.symbol),
            "side": order.side,
            "order_type": order.type,
            "order_qty": _number(order.amount),
            "cum_qty": _number(order.filled),
            "cum_cost": _number(order.cost),
            "avg_price": _number(order.average),
            "fee_usd_equiv": _number(order.fee) if market.quote == "USD" else 0.0,
            "order_userref": order.extra.get("kraken_userref") or 0,
        }
        if order.client_order_id is not None:
            fields["cl_ord_id"] = order.client_order_id
        if order.type == "limit":
            fields["limit_price"] = _number(order.price)
        return fields

    def order_event(self, order: Order, exec_type: str | None) -> dict[str, Any]:
        """A status event: `new` (snapshot), `filled` (after the last trade), `canceled`."""
        status = _STATUS.get(order.status, "new")
        if status == "new" and order.filled > 0:
            status = "partially_filled"
        return {
            "exec_type": exec_type or ("new" if order.status == "open" else status),
            "exec_id": secrets.token_hex(8).upper(),
            **self._order_fields(order),
            "order_status": status,
            "timestamp": _rfc3339(order.updated_ms),
            **({"reason": "User requested", "cancel_reason": "User requested"} if order.status == "canceled" else {}),
        }

    def trade_event(self, order: Order, trade: Trade) -> dict[str, Any]:
        """One fill: `exec_type` `trade`, with the order's cumulative totals at this point."""
        done = order.status == "closed" and trade.id == max(
            (t.id for t in self.book.trades(order.api_key) if t.order_id == order.id), default=trade.id
        )
        return {
            "exec_type": "trade",
            **self._order_fields(order),
            "exec_id": self.txid(trade.id, "T"),
            "trade_id": trade.id,
            "last_qty": _number(trade.amount),
            "last_price": _number(trade.price),
            "liquidity_ind": "m" if trade.maker else "t",
            "cost": _number(trade.cost),
            "order_status": "filled" if done else "partially_filled",
            "fees": [{"asset": trade.fee_currency, "qty": _number(trade.fee)}],
            "fee_usd_equiv": _number(trade.fee) if trade.fee_currency == "USD" else 0.0,
            "timestamp": _rfc3339(trade.time_ms),
        }

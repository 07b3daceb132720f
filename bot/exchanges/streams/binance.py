"""Binance Spot's user-data stream: the WebSocket API (`/ws-api/v3`) with `userDataStream.subscribe.signature`.

The listenKey REST flow was switched off on 2026-02-20; the WebSocket API takes a signed subscription per
account (any key type, no logon), up to 1,000 per connection, each event wrapped with its `subscriptionId`:
`{"subscriptionId": 0, "event": {"e": "executionReport", ...}}`. A connection lives at most 24 h; one IP may
make 300 connection attempts per 5 minutes. Shapes as Binance documents them and ccxt's `pro/binance.py`
(`ensure_user_data_stream_ws_subscribe_signature`, `handle_order_update`) parses them.

An `executionReport` of a fill (`x=TRADE`) becomes our `Order` with its cumulative totals (`z`, `Z`) and the
one trade (`t`, `l`, `L`, `Y`, `n`, `N`): the engine records it keyed by trade id, like a polled trade, so a
fill seen by both is recorded once. A cancel (`x=CANCELED`) names our order in `C` (its `c` is the cancel's).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from decimal import Decimal
from typing import Any

from bot.exchanges.models import Order, Trade
from bot.exchanges.streams.base import Reply, Update
from bot.secret import Credentials, Secret

#: Binance order status → ccxt's (what `bot.engine.fills.order_status` reads).
_STATUS = {
    "NEW": "open", "PARTIALLY_FILLED": "open", "PENDING_NEW": "open", "FILLED": "closed",
    "CANCELED": "canceled", "PENDING_CANCEL": "canceled", "REJECTED": "rejected",
    "EXPIRED": "expired", "EXPIRED_IN_MATCH": "expired",
}
#: Execution types that tell something our fill path records (NEW is the send's own answer).
_EXECUTIONS = frozenset({"TRADE", "CANCELED", "EXPIRED", "REJECTED", "TRADE_PREVENTION"})
#: Refusals that mean the key itself is not accepted (see `bot.exchanges.venues.binance.BINANCE_CODES`).
_KEY_CODES = frozenset({-1002, -1022, -2014, -2015, -2008})


def _decimal(value: Any) -> Decimal | None:
    return Decimal(str(value)) if value not in (None, "") else None


class BinanceSpotStream:
    """The message shapes of Binance Spot's WebSocket API user-data subscriptions."""

    venue = "binance"
    max_subscriptions = 1000
    lifetime = 24 * 3600.0
    attempt_limit = 300
    attempt_window = 300.0

    def __init__(self, clock_ms=None) -> None:
        self._clock_ms = clock_ms or (lambda: int(time.time() * 1000))

    #: The subscribe is signed with the key itself: nothing to fetch first.
    rest_credential = None

    def subscribe(self, request_id: str, creds: Credentials, credential: Secret | None = None) -> dict[str, Any]:
        """`userDataStream.subscribe.signature`: HMAC-SHA256 over the parameters sorted by name."""
        params: dict[str, Any] = {"apiKey": creds.api_key.reveal(), "timestamp": self._clock_ms()}
        payload = "&".join(f"{key}={params[key]}" for key in sorted(params))
        params["signature"] = hmac.new(
            creds.secret.reveal().encode(), payload.encode(), hashlib.sha256
        ).hexdigest()
        return {"id": request_id, "method": "userDataStream.subscribe.signature", "params": params}

    def unsubscribe(self, request_id: str, handle: Any) -> dict[str, Any]:
        return {"id": request_id, "method": "userDataStream.unsubscribe", "params": {"subscriptionId": handle}}

    def read(self, message: Any) -> Reply | Update | None:
        if not isinstance(message, dict):
            return None
        if "subscriptionId" in message and isinstance(message.get("event"), dict):
            event = message["event"]
            handle = message["subscriptionId"]
            if event.get("e") == "eventStreamTerminated":
                return Update(handle, ended=True)
            order = execution_order(event)
            return Update(handle, order=order) if order is not None else None
        if "id" in message and ("result" in message or "error" in message):
            request_id = str(message["id"])
            error = message.get("error")
            if isinstance(error, dict) or message.get("status") not in (200, None):
                code = error.get("code") if isinstance(error, dict) else None
                text = f"{code} {error.get('msg', '')}" if isinstance(error, dict) else str(message.get("status"))
                return Reply(request_id, error=text[:200], key_rejected=code in _KEY_CODES)
            result = message.get("result") or {}
            return Reply(request_id, handle=result.get("subscriptionId") if isinstance(result, dict) else None)
        return None


def execution_order(event: dict[str, Any]) -> Order | None:
    """Our order update from an `executionReport` (None for other events and for `x=NEW`, `REPLACED`…)."""
    if event.get("e") != "executionReport" or event.get("x") not in _EXECUTIONS:
        return None
    execution = event["x"]
    client_id = event.get("C") if execution == "CANCELED" and event.get("C") else event.get("c")
    order_id = str(event["i"])
    side = str(event.get("S", "")).lower() or None
    filled = _decimal(event.get("z"))
    cost = _decimal(event.get("Z"))
    trades: tuple[Trade, ...] = ()
    trade_id = event.get("t")
    if execution == "TRADE" and trade_id is not None and int(trade_id) >= 0:
        amount, price = _decimal(event.get("l")), _decimal(event.get("L"))
        quote = _decimal(event.get("Y"))
        trades = (Trade(
            venue="binance", id=str(trade_id), order_id=order_id, symbol="", side=side, price=price, amount=amount,
            cost=quote if quote else (amount * price if amount is not None and price is not None else None),
            fee_cost=_decimal(event.get("n")), fee_currency=event.get("N") or None, maker=bool(event.get("m")),
            timestamp_ms=int(event["T"]) if event.get("T") is not None else None,
        ),)
    amount_total = _decimal(event.get("q"))
    return Order(
        venue="binance", id=order_id, client_order_id=client_id, symbol="", side=side,
        type=str(event.get("o", "")).lower() or None, status=_STATUS.get(str(event.get("X")), "open"),
        amount=amount_total, filled=filled,
        remaining=amount_total - filled if amount_total is not None and filled is not None else None,
        price=_decimal(event.get("p")) or None, average=cost / filled if cost and filled else None, cost=cost,
        fee_cost=None, fee_currency=None,
        timestamp_ms=int(event["T"]) if event.get("T") is not None else None, trades=trades,
        market_id=str(event["s"]) if event.get("s") else None,
    )

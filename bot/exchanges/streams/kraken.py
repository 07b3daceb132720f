"""Kraken's user-data stream: WebSocket v2 `executions` on the authenticated endpoint (`wss://ws-auth.kraken.com/v2`).

A subscription is authorised by a token from the private REST call `GetWebSocketsToken`, not by a signature:
the token must be used within 15 minutes and then lasts as long as its subscription. Events name no token or
subscription, so a connection carries one account (`max_subscriptions = 1`): the hub's handle for it is the
channel name. The token is the protocol's `rest_credential`: the hub fetches it right before each subscribe (a
new one on every reconnect) through the gateway's private path, which respects Kraken's per-key call counter and
nonce, and hands it to `subscribe`.

Shapes as Kraken documents them (spot-websocket-v2/executions) and ccxt's `pro/kraken.py` (`watch_private`,
`handle_my_trades`, `parse_ws_order`) reads them: answers `{"method": "subscribe", "req_id", "success", "result"
| "error"}`; events `{"channel": "executions", "type": "snapshot" | "update", "data": [...]}`. No snapshot is
asked for: every confirmed subscription is backfilled from REST by the engine anyway.

Kraken's fills are recorded from an order's cumulative totals (`cum_qty`, `cum_cost`); an event carries only
its own trade's fee (`fees`), so the order comes with `fee_cost` None and that trade, and the fill path adds the
trade's fee to what is recorded (`OrderDesk._cumulative_fills`).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from bot.exchanges.models import Order, Trade
from bot.exchanges.streams.base import Reply, RestCredential, SubscribeRefused, Update
from bot.secret import Credentials, Secret

#: The hub's handle of a connection's one subscription.
CHANNEL = "executions"
#: Kraken's v2 order status → ccxt's (what `bot.engine.fills.order_status` reads).
_STATUS = {
    "pending_new": "open", "new": "open", "partially_filled": "open", "filled": "closed",
    "canceled": "canceled", "expired": "expired",
}
#: Execution types that tell something our fill path records (`new`, `pending_new`, `amended`… do not).
_EXECUTIONS = frozenset({"trade", "filled", "canceled", "expired"})
#: Refusals of a subscription that mean the key itself is not accepted (not just its token).
_KEY_ERRORS = ("EAPI:Invalid key", "EGeneral:Permission denied", "EAPI:Feature disabled")


def _decimal(value: Any) -> Decimal | None:
    return Decimal(str(value)) if value not in (None, "") else None


def _ms(text: Any) -> int | None:
    if not text:
        return None
    return int(datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp() * 1000)


class KrakenExecutionsStream:
    """The message shapes of Kraken's WebSocket v2 `executions` channel."""

    venue = "kraken"
    max_subscriptions = 1
    #: Kraken names no connection lifetime; a day keeps tokens and connections fresh.
    lifetime = 24 * 3600.0
    #: Kraken: about 150 connection attempts per rolling 10 minutes per IP (the documented limit for v2).
    attempt_limit = 150
    attempt_window = 600.0

    #: `GetWebSocketsToken` (one call on the key's counter): the subscription's token, to be used within 15
    #: minutes; it then lasts as long as the subscription.
    rest_credential = RestCredential(
        "WebSocket token", lambda ex: ex.private_post_getwebsocketstoken(),
        lambda answer: ((answer or {}).get("result") or {}).get("token"),
    )

    def subscribe(self, request_id: str, creds: Credentials, credential: Secret | None) -> dict[str, Any]:
        if credential is None:
            raise SubscribeRefused("a Kraken subscription needs the key's WebSocket token")
        return {
            "method": "subscribe",
            "params": {"channel": CHANNEL, "token": credential.reveal(), "snap_trades": False, "snap_orders": False},
            "req_id": int(request_id),
        }

    def unsubscribe(self, request_id: str, handle: Any) -> dict[str, Any]:
        # Kraken asks for the token again; a connection carries one subscription, which ends with it anyway.
        return {"method": "unsubscribe", "params": {"channel": CHANNEL}, "req_id": int(request_id)}

    def read(self, message: Any) -> Reply | list[Update] | None:
        if not isinstance(message, dict):
            return None
        if message.get("method") in ("subscribe", "unsubscribe") and message.get("req_id") is not None:
            request_id = str(message["req_id"])
            if message.get("success") is False or message.get("error"):
                error = str(message.get("error") or "refused")
                return Reply(request_id, error=error[:200], key_rejected=error.startswith(_KEY_ERRORS))
            return Reply(request_id, handle=CHANNEL)
        if message.get("channel") == CHANNEL and message.get("type") == "update":
            orders = [execution_order(event) for event in message.get("data") or () if isinstance(event, dict)]
            return [Update(CHANNEL, order=order) for order in orders if order is not None] or None
        return None


def execution_order(event: dict[str, Any]) -> Order | None:
    """Our order update from one execution event (None for `new`, `pending_new`, `amended`…)."""
    execution = event.get("exec_type")
    if execution not in _EXECUTIONS:
        return None
    order_id = str(event["order_id"])
    side = event.get("side") or None
    filled, cost = _decimal(event.get("cum_qty")), _decimal(event.get("cum_cost"))
    at = _ms(event.get("timestamp"))
    trades: tuple[Trade, ...] = ()
    if execution == "trade":
        fees = [f for f in event.get("fees") or () if isinstance(f, dict)]
        currency = next((f.get("asset") for f in fees if f.get("asset")), None)
        amount, price = _decimal(event.get("last_qty")), _decimal(event.get("last_price"))
        trades = (Trade(
            venue="kraken", id=str(event["exec_id"]), order_id=order_id, symbol="", side=side, price=price,
            amount=amount, cost=_decimal(event.get("cost")) or (amount * price if amount and price else None),
            fee_cost=sum((_decimal(f.get("qty")) or Decimal(0) for f in fees if f.get("asset") == currency),
                         Decimal(0)),
            fee_currency=currency, maker=event.get("liquidity_ind") == "m", timestamp_ms=at,
        ),)
    amount_total = _decimal(event.get("order_qty"))
    return Order(
        venue="kraken", id=order_id, client_order_id=event.get("cl_ord_id") or None, symbol="", side=side,
        type=event.get("order_type") or None, status=_STATUS.get(str(event.get("order_status")), "open"),
        amount=amount_total, filled=filled,
        remaining=amount_total - filled if amount_total is not None and filled is not None else None,
        price=_decimal(event.get("limit_price")) or None,
        average=_decimal(event.get("avg_price")) or (cost / filled if cost and filled else None), cost=cost,
        fee_cost=None, fee_currency=None, timestamp_ms=at, trades=trades,
    )

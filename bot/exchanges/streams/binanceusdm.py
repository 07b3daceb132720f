"""Binance USD-M futures' user-data stream: a listenKey per account, many listenKeys on one `/private` connection.

How Binance documents it (2026; ccxt's `pro/binance.py` `authenticate`, `keep_alive_listen_key`,
`handle_order_update`):

- `POST /fapi/v1/listenKey` (API-key header only, weight 1) gives the account's listenKey, valid 60 minutes; a
  POST while one is active returns that one, extended. `PUT` extends it (answer -1125 "This listenKey does not
  exist." once it has expired: a new POST makes a new one). They go through the gateway's private REST path,
  charged to the IP's shared weight budget like any other call.
- The `/private` stream (the old `/ws/<listenKey>` URLs retire on 2026-04-23) takes several listenKeys on one
  connection; in stream mode each event comes wrapped `{"stream": <listenKey>, "data": {...}}`. We connect to
  `/private/stream` and add each account with `{"method": "SUBSCRIBE", "params": [<listenKey>], "id": n}`
  (answer `{"result": null, "id": n}`). One connection takes 1,024 streams and 10 incoming messages per second
  (subscribes, pings and pongs all count): subscribes are paced below that (6 a second: 1,000 accounts take
  under 3 minutes). Connections live 24 h; 300 attempts
  per 5 minutes per IP.
- `ORDER_TRADE_UPDATE` with `o.x=TRADE` is a fill: `c` client order id, `i` order id, `l`/`L` last quantity
  and price, `n`/`N` commission, `t` trade id, `z` cumulative quantity, `ap` average price, `X` status, `rp`
  the trade's realised profit (not read: a fill is recorded alike whichever path sees it first, the stream, a
  backfill or a poll, and REST trades reach us without it through ccxt's unified fields; Strata books futures
  P&L from its own fills as Binance does, which the tests check against the venue's wallet). A cancel keeps our
  client id in `c`. `listenKeyExpired` ends that account's subscription: the hub subscribes it again (a new
  listenKey) and the engine backfills the gap from REST.

Our `Order` with its one trade comes out exactly as Binance Spot's stream gives it (`binance.execution_order`),
so a fill seen by the stream, a backfill and a poll is recorded once, by trade id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bot.exchanges.failures import Action, ExchangeFailure
from bot.exchanges.models import Order, Trade
from bot.exchanges.streams.base import Reply, RestCall, RestCredential, SubscribeRefused, Update
from bot.secret import Credentials, Secret

#: Binance futures order status → ccxt's (what `bot.engine.fills.order_status` reads).
_STATUS = {
    "NEW": "open", "PARTIALLY_FILLED": "open", "FILLED": "closed", "CANCELED": "canceled",
    "EXPIRED": "expired", "EXPIRED_IN_MATCH": "expired", "REJECTED": "rejected",
}
#: Execution types our fill path records: fills (CALCULATED is a liquidation's), and an order's end.
_EXECUTIONS = frozenset({"TRADE", "CALCULATED", "CANCELED", "EXPIRED"})
_FILLS = frozenset({"TRADE", "CALCULATED"})
#: "This listenKey does not exist." (expired): a new one is needed.
_LISTEN_KEY_GONE = "-1125"


def _decimal(value: Any) -> Decimal | None:
    return Decimal(str(value)) if value not in (None, "") else None


@dataclass
class _ListenKey:
    creds: Credentials
    renewed: float
    #: When a failed renewal may be tried again.
    retry_at: float = 0.0


class BinanceUsdmStream:
    """listenKeys by REST, their events on the `/private` stream."""

    venue = "binanceusdm"
    #: `POST /fapi/v1/listenKey` (API-key header, weight 1): the account's listenKey, fetched by the hub.
    rest_credential = RestCredential(
        "listenKey", lambda ex: ex.fapiPrivatePostListenKey(),
        lambda answer: answer.get("listenKey") if isinstance(answer, dict) else None,
    )
    max_subscriptions = 1000  # Binance: 1,024 streams per connection
    lifetime = 24 * 3600.0
    attempt_limit = 300
    attempt_window = 300.0
    #: Subscribes sent per second at most (Binance: 10 incoming messages per second, pings and pongs included;
    #: the margin absorbs the network or the venue bunching what we spaced).
    messages_per_second = 6.0
    #: A listenKey is valid 60 minutes: renewed every 30.
    renew_seconds = 30 * 60.0
    #: A renewal that failed for a passing reason (network, 5xx, budget) is tried again this much later.
    retry_seconds = 60.0
    #: Renewals in flight at once.
    renew_concurrency = 10

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._keys: dict[str, _ListenKey] = {}  # listenKey → its key and last renewal
        self._requests: dict[str, str] = {}  # subscribe request id → listenKey
        self._last_send = float("-inf")

    # --- subscriptions ---------------------------------------------------------------------------------------

    async def subscribe(self, request_id: str, creds: Credentials, credential: Secret | None) -> dict[str, Any]:
        """Subscribe the account's listenKey (`credential`, just fetched by the hub) on the connection."""
        if credential is None:
            raise SubscribeRefused("a USD-M subscription needs the account's listenKey")
        listen_key = credential.reveal()
        self._keys[listen_key] = _ListenKey(creds, renewed=self._clock())
        self._requests[request_id] = listen_key
        await self._pace()
        return {"method": "SUBSCRIBE", "params": [listen_key], "id": int(request_id)}

    async def _pace(self) -> None:
        """Keep this venue's subscribes and unsubscribes under its per-connection message rate (shared by all
        connections: stricter than needed, never over). Spaced by the times they are actually let out, not by
        slots handed out in advance: after the event loop was busy, waiters that all wake at once still leave one
        `1 / messages_per_second` apart (a connection over Binance's rate is closed, losing every subscription)."""
        while True:
            now = self._clock()
            wait = self._last_send + 1.0 / self.messages_per_second - now
            if wait <= 0:
                self._last_send = now
                return
            await asyncio.sleep(wait)

    async def unsubscribe(self, request_id: str, handle: Any) -> dict[str, Any]:
        """Stop receiving the listenKey's events; it is no longer renewed (it expires within the hour). Paced
        like subscribes: dropping many accounts at once must not get the connection closed."""
        self._keys.pop(handle, None)
        await self._pace()
        return {"method": "UNSUBSCRIBE", "params": [handle], "id": int(request_id)}

    async def keepalive(self, rest: RestCall, handles: set[Any]) -> set[Any]:
        """Renew (`PUT /fapi/v1/listenKey`) the listenKeys of `handles` last renewed `renew_seconds` ago; return
        those the venue no longer knows (expired) or whose key it refused: they need a new subscription."""
        now = self._clock()
        for listen_key, entry in list(self._keys.items()):  # forget what nobody renewed for an hour: expired
            if listen_key not in handles and now - entry.renewed > 2 * self.renew_seconds:
                del self._keys[listen_key]
        due = [
            key for key in handles
            if (entry := self._keys.get(key)) is not None
            and now - entry.renewed >= self.renew_seconds and now >= entry.retry_at
        ]
        unknown = {key for key in handles if key not in self._keys}
        gate = asyncio.Semaphore(self.renew_concurrency)

        async def renew(listen_key: str) -> str | None:
            entry = self._keys[listen_key]
            async with gate:
                try:
                    await rest(entry.creds, lambda ex: ex.fapiPrivatePutListenKey())
                except ExchangeFailure as failure:
                    if failure.code == _LISTEN_KEY_GONE or failure.action is Action.AUTH:
                        self._keys.pop(listen_key, None)
                        return listen_key
                    entry.retry_at = self._clock() + self.retry_seconds
                    return None
            entry.renewed = self._clock()
            return None

        ended = await asyncio.gather(*(renew(key) for key in due))
        return unknown | {key for key in ended if key is not None}

    # --- what arrives ----------------------------------------------------------------------------------------

    def read(self, message: Any) -> Reply | Update | None:
        if not isinstance(message, dict):
            return None
        if "stream" in message and isinstance(message.get("data"), dict):
            handle = str(message["stream"]).split("@", 1)[0]
            event = message["data"]
            if event.get("e") == "listenKeyExpired":
                self._keys.pop(handle, None)
                return Update(handle, ended=True)
            order = trade_update_order(event)
            return Update(handle, order=order) if order is not None else None
        if "id" in message and ("result" in message or "error" in message or "code" in message):
            request_id = str(message["id"])
            listen_key = self._requests.pop(request_id, None)
            error = message.get("error") if isinstance(message.get("error"), dict) else None
            if error is None and "code" in message:
                error = message
            if error is not None:
                if listen_key is not None:
                    self._keys.pop(listen_key, None)
                return Reply(request_id, error=f"{error.get('code')} {error.get('msg', '')}"[:200])
            return Reply(request_id, handle=listen_key)
        return None


def trade_update_order(event: dict[str, Any]) -> Order | None:
    """Our order update from an `ORDER_TRADE_UPDATE` (None for other events and for `x=NEW`, `AMENDMENT`…)."""
    if event.get("e") != "ORDER_TRADE_UPDATE" or not isinstance(event.get("o"), dict):
        return None
    o = event["o"]
    execution = o.get("x")
    if execution not in _EXECUTIONS:
        return None
    order_id = str(o["i"])
    side = str(o.get("S", "")).lower() or None
    filled = _decimal(o.get("z"))
    average = _decimal(o.get("ap")) or None
    cost = average * filled if average is not None and filled is not None else None
    trades: tuple[Trade, ...] = ()
    trade_id = o.get("t")
    amount, price = _decimal(o.get("l")), _decimal(o.get("L"))
    if execution in _FILLS and trade_id not in (None, 0, "0") and amount:
        trades = (Trade(
            venue="binanceusdm", id=str(trade_id), order_id=order_id, symbol="", side=side, price=price,
            amount=amount, cost=amount * price if price is not None else None,
            fee_cost=_decimal(o.get("n")), fee_currency=o.get("N") or None, maker=bool(o.get("m")),
            timestamp_ms=int(o["T"]) if o.get("T") is not None else None,
        ),)
    amount_total = _decimal(o.get("q"))
    return Order(
        venue="binanceusdm", id=order_id, client_order_id=o.get("c") or None, symbol="", side=side,
        type=str(o.get("ot") or o.get("o") or "").lower() or None, status=_STATUS.get(str(o.get("X")), "open"),
        amount=amount_total, filled=filled,
        remaining=amount_total - filled if amount_total is not None and filled is not None else None,
        price=_decimal(o.get("p")) or None, average=average, cost=cost, fee_cost=None, fee_currency=None,
        timestamp_ms=int(o["T"]) if o.get("T") is not None else None, trades=trades,
        market_id=str(o["s"]) if o.get("s") else None,
    )

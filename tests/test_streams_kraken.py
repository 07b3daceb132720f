"""Kraken fills pushed by the WebSocket v2 `executions` channel (issue 21, items 1 and 4), end to end.

A real engine (`tests.engine_world`) with its real stream listener and real ccxt against the fake Kraken on
127.0.0.1: the token comes from the fake's signed `GetWebSocketsToken` through the gateway's private path, the
fake's `/v2` checks it and pushes an execution for every fill of the token's account. Faults come from the fake:
dropped connections, refused reconnects, fills during the gap, expired tokens, a revoked key. Figures are
checked against the fake's own trades.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from decimal import Decimal

import aiohttp
import ccxt.pro

from bot.exchanges.streams import Backoff
from bot.exchanges.streams.kraken import KrakenExecutionsStream, execution_order
from bot.sandbox.kraken import kraken_signature
from bot.secret import Credentials, Secret
from tests.engine_world import open_world
from tests.stream_helpers import _true, streamed_grid_world, wait_for
from tests.test_streams_binance import _more, fill_rows

USER = 41


def keypair() -> tuple[str, str]:
    return base64.b64encode(os.urandom(42)).decode(), base64.b64encode(os.urandom(64)).decode()


def token_requests(book) -> int:
    return sum(1 for r in book.requests if r.path.endswith("/GetWebSocketsToken"))


_ORDER_LOOKUPS = ("/QueryOrders", "/QueryTrades", "/OpenOrders", "/ClosedOrders", "/TradesHistory")


def order_lookups(book) -> int:
    """Signed reads of orders or trades: what a poll or a backfill makes, and a streamed fill must not."""
    return sum(1 for r in book.requests if r.path.endswith(_ORDER_LOOKUPS))


async def streamed_grid(fake_exchanges, tmp_path, *, poll_seconds: float = 3600.0, **stream_options):
    """A Kraken grid resting one buy of about 0.002 BTC at 50000, its account subscribed on the fake's channel."""
    key, secret = keypair()
    book, world, strategy_id, order, account_id = await streamed_grid_world(
        fake_exchanges, tmp_path, user=USER, venue="kraken", key=key, secret=secret, symbol="BTC/USD",
        budget="100.5", balances={"USD": "1000"}, poll_seconds=poll_seconds, **stream_options,
    )
    return book, key, world, strategy_id, order, account_id


async def receive(ws) -> dict:
    return json.loads((await asyncio.wait_for(ws.receive(), 5)).data)


async def signed_token(origin: str, key: str, secret: str) -> str:
    """GetWebSocketsToken signed as Kraken documents it (and ccxt does)."""
    nonce = str(time.time_ns())
    body = f"nonce={nonce}"
    headers = {"API-Key": key, "API-Sign": kraken_signature(secret, "/0/private/GetWebSocketsToken", nonce, body),
               "Content-Type": "application/x-www-form-urlencoded"}
    async with aiohttp.ClientSession() as session, session.post(
        f"{origin}/0/private/GetWebSocketsToken", data=body, headers=headers
    ) as answer:
        payload = await answer.json()
    assert payload["error"] == [] and payload["result"]["expires"] == 900
    return payload["result"]["token"]


# --- the fake venue and the protocol, against each other and against ccxt's own parser --------------------


async def test_the_fake_channel_takes_a_signed_token_and_pushes_each_fill_with_the_order_totals(fake_exchanges):
    book, streams = fake_exchanges.books["kraken"], fake_exchanges.kraken_streams
    key, secret = keypair()
    book.add_key(key, secret, balances={"USD": "1000"})
    book.set_price("BTC/USD", "50500")
    origin = fake_exchanges.origins["kraken"]
    protocol = KrakenExecutionsStream()
    url = origin.replace("http://", "ws://") + "/v2"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        assert (await receive(ws))["channel"] == "status"
        creds = Credentials(key, secret)
        await ws.send_str(json.dumps(protocol.subscribe("1", creds, Secret("not-a-token"))))
        refused = protocol.read(await receive(ws))
        assert refused.request_id == "1" and refused.error and not refused.key_rejected  # the token, not the key
        token = await signed_token(origin, key, secret)
        await ws.send_str(json.dumps(protocol.subscribe("2", creds, Secret(token))))
        answer = protocol.read(await receive(ws))
        assert (answer.request_id, answer.error, answer.handle) == ("2", None, "executions")
        placed = book.place_order(key, "BTC/USD", "buy", "limit", "0.002", "50000", client_order_id="mine-1")
        book.fill_partially(placed.id, "0.0005")
        book.set_price("BTC/USD", "49900")
        messages = [await receive(ws) for _ in range(3)]  # two trades, then the order's `filled`
        assert [m["data"][0]["exec_type"] for m in messages] == ["trade", "trade", "filled"]
        first, second = book.trades(key)
        [update] = protocol.read(messages[1])
        order = update.order
        assert (order.client_order_id, order.status) == ("mine-1", "closed")
        assert (order.filled, order.cost, order.fee_cost) == (Decimal("0.002"), Decimal("100"), None)
        [trade] = order.trades
        assert (trade.amount, trade.price, trade.fee_cost, trade.fee_currency) == (
            second.amount, second.price, second.fee, second.fee_currency
        )
        assert protocol.read(messages[0])[0].order.filled == first.amount
        # ccxt's own parser of Kraken's v2 executions reads the fake's events the same way.
        parsed = ccxt.pro.kraken().parse_ws_trade(messages[1]["data"][0])
        assert Decimal(str(parsed["amount"])) == second.amount and Decimal(str(parsed["price"])) == second.price
        assert Decimal(str(parsed["fee"]["cost"])) == second.fee and parsed["id"] == trade.id
    assert streams.tokens_issued == 1 and streams.events_sent == 3


def test_an_execution_maps_to_our_order_and_status_only_events_carry_no_trade():
    event = {
        "exec_type": "canceled", "order_id": "OABCDE-FGHIJ-KLMNOP", "cl_ord_id": "ours-7", "side": "buy",
        "order_type": "limit", "order_qty": 0.002, "cum_qty": 0.001, "cum_cost": 50.0, "order_status": "canceled",
        "timestamp": "2026-01-01T00:00:00.000000Z",
    }
    order = execution_order(event)
    assert (order.client_order_id, order.status, order.filled, order.trades) == (
        "ours-7", "canceled", Decimal("0.001"), ()
    )
    assert order.timestamp_ms == 1767225600000
    assert execution_order({**event, "exec_type": "new", "order_status": "new"}) is None
    assert execution_order({**event, "exec_type": "pending_new"}) is None


# --- the engine ---------------------------------------------------------------------------------------------


async def test_a_kraken_fill_alert_is_queued_within_a_second_with_the_poller_off(fake_exchanges, tmp_path):
    book, key, world, strategy_id, order, _ = await streamed_grid(fake_exchanges, tmp_path)
    try:
        lookups = order_lookups(book)
        latencies = []
        for fill in (lambda: book.fill_partially(order.id, "0.0005"), lambda: book.set_price("BTC/USD", "49900")):
            alerts = len(await world.alerts("fill"))
            started = time.monotonic()
            fill()
            await wait_for(lambda n=alerts: _more(world.alerts("fill"), n), timeout=1.0)
            latencies.append(time.monotonic() - started)
        print(f"kraken fill -> alert queued: {', '.join(f'{x * 1000:.0f} ms' for x in latencies)}")
        assert max(latencies) < 1.0
        partial, rest = await world.alerts("fill")
        assert "Bought 0.0005" in partial["text"] and "Bought 0.0015" in rest["text"]
        trades = book.trades(key)
        fills = await fill_rows(world, strategy_id)
        assert [(f.fill.amount, f.fill.fee) for f in fills] == [(t.amount, t.fee) for t in trades]
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.spent == sum((t.cost + t.fee for t in trades), Decimal(0))
        [row] = [r for r in await world.orders() if r["client_order_id"] == order.client_order_id]
        assert row["status"] == "closed"
        # The alert goes out before the grid places its sell; once the sell rests, nothing read an order back.
        await wait_for(lambda: _true(any(o.side == "sell" for o in book.open_orders(key))), timeout=5)
        await world.engine.settle()
        assert order_lookups(book) == lookups  # each streamed fill needed no REST read
        await world.engine.poll_once()  # a poll of the same order afterwards records nothing more
        assert len(await fill_rows(world, strategy_id)) == 2 and len(await world.alerts("fill")) == 2
    finally:
        await world.close()


async def test_a_kraken_fill_while_the_connection_is_down_is_backfilled_once(fake_exchanges, tmp_path):
    book, key, world, strategy_id, order, account_id = await streamed_grid(fake_exchanges, tmp_path)
    streams = fake_exchanges.kraken_streams
    try:
        tokens = token_requests(book)
        book.fill_partially(order.id, "0.001")  # streamed
        await wait_for(lambda: fill_rows(world, strategy_id))
        streams.refuse(2)  # the next two reconnects are refused
        await streams.drop()
        await wait_for(lambda: _true(not world.engine.streams.streamed(account_id)))
        book.set_price("BTC/USD", "49900")  # the rest fills in the gap: no stream carries it
        await wait_for(lambda: _true(world.engine.streams.streamed(account_id)), timeout=10)
        rows = await wait_for(lambda: _two(fill_rows(world, strategy_id)))
        await world.engine.streams.settle()
        await world.engine.poll_once()  # stream, backfill and poll all saw the order: still once each
        rows = await fill_rows(world, strategy_id)
        trades = book.trades(key)
        assert sum((r.fill.amount for r in rows), Decimal(0)) == sum((t.amount for t in trades), Decimal(0))
        assert len(rows) == 2 and sum(t.amount for t in trades) == order.amount
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.spent == sum((t.cost + t.fee for t in trades), Decimal(0))
        assert len(await world.alerts("fill")) == 2
        assert len(streams.attempts) >= 4  # first, two refused, the one that worked
        assert token_requests(book) == tokens + 1  # a fresh token for the new connection, not one per attempt
    finally:
        await world.close()


async def _two(rows_coro):
    rows = await rows_coro
    return rows if len(rows) == 2 else None


async def test_an_expired_token_is_renewed_on_reconnect(fake_exchanges, tmp_path):
    book, _key, world, strategy_id, _order, account_id = await streamed_grid(fake_exchanges, tmp_path)
    streams = fake_exchanges.kraken_streams
    try:
        tokens = token_requests(book)
        streams.expire_tokens()  # Kraken forgets the tokens (an upgrade); the live subscription goes on
        streams.token_ttl = 1.0  # and a token not used within a second is refused: only a fresh one works
        await streams.drop()
        await wait_for(lambda: _true(not world.engine.streams.streamed(account_id)))
        await wait_for(lambda: _true(world.engine.streams.streamed(account_id)), timeout=10)
        assert token_requests(book) >= tokens + 1
        started = time.monotonic()
        book.set_price("BTC/USD", "49900")
        await wait_for(lambda: world.alerts("fill"), timeout=1.0)
        assert time.monotonic() - started < 1.0 and len(await fill_rows(world, strategy_id)) == 1
    finally:
        await world.close()


async def test_a_refused_token_leaves_the_account_polled_and_its_key_checked(fake_exchanges, tmp_path):
    book = fake_exchanges.books["kraken"]
    key, secret = keypair()
    book.add_key(key, secret, balances={"USD": "1000"})
    book.set_price("BTC/USD", "50500")
    options = {"heartbeat": 0.5, "backoff": Backoff(base=0.05, cap=0.5)}
    world = await open_world(
        tmp_path, fake_exchanges.exchange_urls, poll_seconds=0.2, streams=True, stream_options=options
    )
    try:
        await world.connect(USER, "kraken", key, secret)
        account_id = (await world.store.accounts.list_for_user(USER))[0].id

        def checks() -> int:
            return sum(1 for r in book.requests if r.path.endswith("/WithdrawMethods"))

        before = checks()
        book.inject("revoked", count=1, path="/0/private/GetWebSocketsToken")  # the key refused for a token
        strategy_id = await world.allocate(
            USER, "kraken", "grid", "100.5", "BTC/USD", low="50000", high="60000", levels="2"
        )
        await world.engine.settle()
        await wait_for(lambda: _true(token_requests(book) == 1))
        await wait_for(lambda: _true(checks() == before + 1), timeout=5)  # its key checked at once (still good)
        assert not world.engine.streams.streamed(account_id)
        assert world.engine.fill_mode(await world.store.accounts.get(account_id)) == "polled"
        assert fake_exchanges.kraken_streams.subscriptions == 0
        [order] = book.open_orders(key)
        book.set_price("BTC/USD", "49900")
        [row] = await wait_for(lambda: fill_rows(world, strategy_id), timeout=3)  # the poller records it
        assert row.fill.amount == book.find_order(order.id).amount
        assert token_requests(book) == 1  # refused once: not asked again before `refused_retry`
    finally:
        await world.close()


async def test_a_fill_whose_earlier_trade_never_arrived_is_recorded_whole_with_the_order_fee(fake_exchanges, tmp_path):
    book, key, world, strategy_id, order, _ = await streamed_grid(fake_exchanges, tmp_path)
    streams = fake_exchanges.kraken_streams
    try:
        streams.lose(1)
        book.fill_partially(order.id, "0.0005")  # its event is lost: the stream says nothing
        await asyncio.sleep(0.2)
        assert await fill_rows(world, strategy_id) == []
        book.set_price("BTC/USD", "49900")  # the next event carries only its own trade's fee
        [row] = await wait_for(lambda: fill_rows(world, strategy_id), timeout=2)
        trades = book.trades(key)
        assert row.fill.amount == sum((t.amount for t in trades), Decimal(0)) == order.amount
        assert row.fill.fee == sum((t.fee for t in trades), Decimal(0))  # the order's fee, looked up once
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.spent == sum((t.cost + t.fee for t in trades), Decimal(0))
    finally:
        await world.close()


async def test_a_stalled_kraken_connection_is_replaced_and_its_gap_backfilled(fake_exchanges, tmp_path):
    book, key, world, strategy_id, _order, _account_id = await streamed_grid(fake_exchanges, tmp_path)
    streams = fake_exchanges.kraken_streams
    try:
        attempts, tokens = len(streams.attempts), token_requests(book)
        streams.stall(30)  # the connection stays open but goes silent, pings unanswered
        book.set_price("BTC/USD", "49900")  # filled during the stall
        await wait_for(lambda: _true(len(streams.attempts) > attempts), timeout=5)  # the heartbeat noticed
        [row] = await wait_for(lambda: fill_rows(world, strategy_id), timeout=5)
        [trade] = book.trades(key)
        assert (row.fill.amount, row.fill.fee) == (trade.amount, trade.fee)
        assert len(await world.alerts("fill")) == 1
        await wait_for(lambda: _true(token_requests(book) > tokens), timeout=5)  # the new connection's own token
    finally:
        await world.close()


async def test_one_connection_per_account_never_takes_the_rest_calls_connection_slots(fake_exchanges, tmp_path):
    """Kraken streams one account per connection: with 100 accounts the stream connections must not fill the
    REST session's connection pool (100), or every poll, backfill and key check waits forever (found by
    `bench/latency.py --venue kraken --accounts 100`: 0 alerts for 1,000 fills)."""
    book = fake_exchanges.books["kraken"]
    key, secret = keypair()
    book.add_key(key, secret, balances={"USD": "1000"})
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    url = fake_exchanges.origins["kraken"].replace("http://", "ws://") + "/v2"
    session = world.gateway.pool.stream_session()
    sockets = []
    try:
        sockets = [await session.ws_connect(url) for _ in range(100)]
        balance = await asyncio.wait_for(world.gateway.fetch_balance("kraken", Credentials(key, secret)), 5)
        assert balance["USD"].total == Decimal("1000")
    finally:
        for ws in sockets:
            await ws.close()
        await world.close()

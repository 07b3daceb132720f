"""Binance USD-M futures fills pushed by its user-data stream (issue 21, items 1 and 4), end to end.

A real engine (`tests.engine_world`) with its real stream listener and real ccxt against the fake Binance USD-M
on 127.0.0.1: listenKeys are created and renewed through the gateway's private REST path (`POST/PUT
/fapi/v1/listenKey`, ccxt's own signing: API-key header only), several accounts' listenKeys share one
`/private/stream` connection, and the fake pushes `ORDER_TRADE_UPDATE` for every fill of a subscribed account.
Faults come from the fake: dropped connections, a listenKey expiring, refused reconnects, fills during a gap.
Figures are checked against the fake's own trades.
"""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import aiohttp
import ccxt.pro

from bot.exchanges.clients import ClientPool
from bot.exchanges.errors import RetryPolicy
from bot.exchanges.gateway import ExchangeGateway
from bot.exchanges.streams import Backoff, SubscribeRefused, UserStreamHub
from bot.exchanges.streams.base import Update
from bot.exchanges.streams.binanceusdm import BinanceUsdmStream, trade_update_order
from bot.secret import Credentials, Secret
from tests.stream_helpers import _true, streamed_grid_world, wait_for

USER = 37
SECRET = "usdm-stream-secret"
FUT = "BTC/USDT:USDT"





def requests_to(book, method: str, suffix: str, api_key: str | None = None) -> int:
    return sum(
        1 for r in book.requests
        if r.method == method and r.path.endswith(suffix) and (api_key is None or r.api_key == api_key)
    )


async def receive(ws) -> dict:
    return json.loads((await asyncio.wait_for(ws.receive(), 5)).data)


async def streamed_futures_grid(fake_exchanges, tmp_path, key: str, *, poll_seconds: float = 3600.0, **options):
    """A USD-M grid resting one buy of 0.002 BTC at 50000, its account's listenKey subscribed on the fake."""
    return await streamed_grid_world(
        fake_exchanges, tmp_path, user=USER, venue="binanceusdm", key=key, secret=SECRET, symbol=FUT,
        budget="100.1", balances={"USDT": "1000"}, poll_seconds=poll_seconds, **options,
    )


async def fill_rows(world, strategy_id):
    return await world.store.orders.fills_for_strategy(strategy_id)


async def _count(rows_coro, wanted: int):
    rows = await rows_coro
    return rows if len(rows) == wanted else None


# --- the fake venue and the protocol, against each other and against ccxt's own parser --------------------


async def test_listen_keys_by_rest_several_on_one_connection_and_their_fills_and_expiry(fake_exchanges):
    book = fake_exchanges.books["binanceusdm"]
    streams = fake_exchanges.binanceusdm_streams
    for key in ("usdm-a", "usdm-b"):
        book.add_key(key, SECRET, balances={"USDT": "1000"})
    book.add_key("usdm-revoked", SECRET, balances={"USDT": "1000"})
    book.revoke_key("usdm-revoked")
    book.set_price(FUT, "50500")
    gateway = ExchangeGateway(ClientPool(fake_exchanges.origins, timeout_ms=5_000),
                              retry=RetryPolicy(attempts=2, base_delay=0))
    protocol = BinanceUsdmStream()

    async def rest(creds, op):
        return await gateway.private_call("binanceusdm", creds, op)

    async def subscribe(request_id, creds):  # what the hub does: the listenKey by REST, then the subscribe
        return await protocol.subscribe(request_id, creds, await protocol.rest_credential.fetch(rest, creds))

    url = fake_exchanges.origins["binanceusdm"].replace("http://", "ws://") + "/private/stream"
    try:
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            try:
                await subscribe("1", Credentials("usdm-revoked", SECRET))
                raise AssertionError("a revoked key got a listenKey")
            except SubscribeRefused as refused:
                assert refused.key_rejected and "-2015" in refused.error
            for request_id, key in (("2", "usdm-a"), ("3", "usdm-b")):  # two accounts on one connection
                await ws.send_str(json.dumps(await subscribe(request_id, Credentials(key, SECRET))))
            first, second = [protocol.read(await receive(ws)) for _ in range(2)]
            assert (first.request_id, second.request_id) == ("2", "3")
            assert (first.handle, second.handle) == (streams.listen_key("usdm-a"), streams.listen_key("usdm-b"))
            # POST /fapi/v1/listenKey with the API-key header, weight 1 each on the IP's futures budget.
            assert requests_to(book, "POST", "/fapi/v1/listenKey") == 3
            assert gateway.pool.budgets.used_per_minute("binanceusdm") >= 2

            placed = book.place_order("usdm-b", FUT, "buy", "limit", "0.002", "50000", client_order_id="mine-b")
            book.set_price(FUT, "49900")
            message = await receive(ws)
            assert message["stream"] == second.handle  # routed to the listenKey of its account only
            update = protocol.read(message)
            [trade] = book.trades("usdm-b")
            order = update.order
            assert (order.client_order_id, order.id, order.status) == ("mine-b", str(placed.id), "closed")
            assert (order.filled, order.cost) == (Decimal("0.002"), trade.cost)
            [streamed] = order.trades
            assert (streamed.id, streamed.amount, streamed.price) == (str(trade.id), trade.amount, trade.price)
            assert (streamed.fee_cost, streamed.fee_currency) == (trade.fee, trade.fee_currency)
            # ccxt's own parser of Binance's ORDER_TRADE_UPDATE reads the fake's event the same way.
            parsed = ccxt.pro.binanceusdm().parse_ws_order(message["data"]["o"])
            assert parsed["clientOrderId"] == "mine-b" and parsed["status"] == "closed"
            assert Decimal(str(parsed["filled"])) == order.filled
            assert Decimal(str(parsed["fee"]["cost"])) == trade.fee

            assert await protocol.keepalive(rest, {first.handle, second.handle}) == set()  # nothing due yet
            protocol.renew_seconds = 0.0
            assert await protocol.keepalive(rest, {first.handle, second.handle}) == set()
            assert requests_to(book, "PUT", "/fapi/v1/listenKey") == 2  # both renewed, still valid

            assert streams.expire("usdm-a")
            # A renewal after the expiry gets -1125 "This listenKey does not exist.": a new subscription is due.
            assert await protocol.keepalive(rest, {first.handle, second.handle}) == {first.handle}
            ended = protocol.read(await receive(ws))  # and the stream says so too
            assert isinstance(ended, Update) and ended.ended and ended.handle == first.handle
            assert not streams.subscribed("usdm-a") and streams.subscribed("usdm-b")
    finally:
        await gateway.close()


async def test_the_fake_closes_a_connection_that_sends_more_than_ten_messages_a_second(fake_exchanges):
    url = fake_exchanges.origins["binanceusdm"].replace("http://", "ws://") + "/private/stream"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for request_id in range(11):
            await ws.send_str(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": request_id}))
        answers = []
        while (message := await asyncio.wait_for(ws.receive(), 5)).type == aiohttp.WSMsgType.TEXT:
            answers.append(json.loads(message.data))
        assert len(answers) <= 10 and message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


def test_a_cancel_and_a_new_order_update():
    event = {
        "e": "ORDER_TRADE_UPDATE", "E": 1, "T": 1,
        "o": {"s": "BTCUSDT", "c": "ours-9", "S": "SELL", "o": "LIMIT", "q": "0.003", "p": "61000", "ap": "61000",
              "x": "CANCELED", "X": "CANCELED", "i": 44, "l": "0", "z": "0.001", "L": "0", "T": 5, "t": 0,
              "m": False, "ot": "LIMIT", "rp": "0"},
    }
    order = trade_update_order(event)
    assert (order.client_order_id, order.status, order.filled, order.trades) == ("ours-9", "canceled",
                                                                                Decimal("0.001"), ())
    assert order.cost == Decimal("61.000") and order.side == "sell"
    assert trade_update_order({**event, "o": {**event["o"], "x": "NEW", "X": "NEW"}}) is None
    assert trade_update_order({"e": "ACCOUNT_UPDATE", "E": 1}) is None


# --- the engine ---------------------------------------------------------------------------------------------


async def test_a_futures_fill_alert_is_queued_within_a_second_with_the_poller_off(fake_exchanges, tmp_path):
    book, world, strategy_id, order, _ = await streamed_futures_grid(fake_exchanges, tmp_path, "usdm-fast")
    try:
        trades_before = requests_to(book, "GET", "/userTrades")
        latencies = []
        for fill in (lambda: book.fill_partially(order.id, "0.001"), lambda: book.set_price(FUT, "49900")):
            alerts = len(await world.alerts("fill"))
            started = time.monotonic()
            fill()
            await wait_for(lambda n=alerts: _count(world.alerts("fill"), n + 1), timeout=1.0)
            latencies.append(time.monotonic() - started)
        print(f"futures fill -> alert queued: {', '.join(f'{x * 1000:.0f} ms' for x in latencies)}")
        assert max(latencies) < 1.0
        first, rest = await world.alerts("fill")
        assert "0.001" in first["text"] and "0.001" in rest["text"]
        trades = book.trades("usdm-fast")
        fills = await fill_rows(world, strategy_id)
        assert [(f.fill.trade_key, f.fill.amount, f.fill.fee) for f in fills] == [
            (f"t:{t.id}", t.amount, t.fee) for t in trades
        ]
        assert requests_to(book, "GET", "/userTrades") == trades_before  # each streamed trade needed no REST read
        await world.engine.poll_once()  # a poll of the same order afterwards records nothing more
        assert len(await fill_rows(world, strategy_id)) == 2 and len(await world.alerts("fill")) == 2
    finally:
        await world.close()


async def test_a_futures_fill_while_the_connection_is_down_is_backfilled_once(fake_exchanges, tmp_path):
    book, world, strategy_id, order, account_id = await streamed_futures_grid(fake_exchanges, tmp_path, "usdm-gap")
    streams = fake_exchanges.binanceusdm_streams
    try:
        book.fill_partially(order.id, "0.001")  # streamed
        await wait_for(lambda: fill_rows(world, strategy_id))
        streams.refuse(2)  # the next two reconnects are refused
        await streams.drop()
        await wait_for(lambda: _true(not world.engine.streams.streamed(account_id)))
        book.set_price(FUT, "49900")  # the rest fills in the gap: no stream carries it
        await wait_for(lambda: _true(world.engine.streams.streamed(account_id)), timeout=10)
        rows = await wait_for(lambda: _count(fill_rows(world, strategy_id), 2))
        trades = book.trades("usdm-gap")
        assert sorted(r.fill.trade_key for r in rows) == sorted(f"t:{t.id}" for t in trades)
        await world.engine.poll_once()  # stream, backfill and poll all saw the order: still once each
        await world.engine.streams.settle()
        assert len(await fill_rows(world, strategy_id)) == 2 and len(await world.alerts("fill")) == 2
        assert len(streams.attempts) >= 4  # first, two refused, the one that worked
    finally:
        await world.close()


async def test_an_expired_listen_key_is_replaced_and_the_fill_in_its_gap_recorded_once(fake_exchanges, tmp_path):
    book, world, strategy_id, order, account_id = await streamed_futures_grid(fake_exchanges, tmp_path, "usdm-exp")
    streams = fake_exchanges.binanceusdm_streams
    try:
        old_key = streams.listen_key("usdm-exp")
        attempts, backfills = len(streams.attempts), world.engine.streams.backfills
        streams.expire("usdm-exp")
        book.fill_partially(order.id, "0.001")  # after the expiry, before a new listenKey: in the gap
        await wait_for(lambda: _true(streams.subscribed("usdm-exp")), timeout=5)  # a new listenKey, subscribed
        assert streams.listen_key("usdm-exp") not in (None, old_key)
        assert len(streams.attempts) == attempts  # on the same connection
        [row] = await wait_for(lambda: fill_rows(world, strategy_id), timeout=5)  # backfilled
        assert row.fill.amount == Decimal("0.001")
        assert world.engine.streams.backfills > backfills
        started = time.monotonic()
        book.set_price(FUT, "49900")  # the rest: streamed on the new listenKey
        await wait_for(lambda: _count(fill_rows(world, strategy_id), 2), timeout=1.0)
        assert time.monotonic() - started < 1.0
        trades = book.trades("usdm-exp")
        rows = await fill_rows(world, strategy_id)
        assert sorted(r.fill.trade_key for r in rows) == sorted(f"t:{t.id}" for t in trades)
        await world.engine.poll_once()
        assert len(await fill_rows(world, strategy_id)) == 2 and len(await world.alerts("fill")) == 2
        assert world.engine.streams.streamed(account_id)
    finally:
        await world.close()


async def test_the_listen_key_is_renewed_by_put_without_a_new_subscription(fake_exchanges, tmp_path):
    book, world, _strategy_id, _order, account_id = await streamed_futures_grid(
        fake_exchanges, tmp_path, "usdm-renew", resync_seconds=0.1
    )
    streams = fake_exchanges.binanceusdm_streams
    try:
        hub = world.engine.streams.hubs["binanceusdm"]
        key = streams.listen_key("usdm-renew")
        posts, backfills = requests_to(book, "POST", "/fapi/v1/listenKey"), world.engine.streams.backfills
        hub.protocol.renew_seconds = 0.2  # Binance: every 30 minutes of its 60
        await wait_for(lambda: _true(requests_to(book, "PUT", "/fapi/v1/listenKey", "usdm-renew") >= 2), timeout=5)
        assert streams.listen_key("usdm-renew") == key and streams.subscribed("usdm-renew")
        assert requests_to(book, "POST", "/fapi/v1/listenKey") == posts  # renewed, not recreated
        assert world.engine.streams.backfills == backfills and world.engine.streams.streamed(account_id)
    finally:
        await world.close()


# --- the hub: many listenKeys on few connections, within the venue's message rate --------------------------


async def test_many_listen_keys_share_one_connection_within_its_message_rate(fake_exchanges):
    book = fake_exchanges.books["binanceusdm"]
    streams = fake_exchanges.binanceusdm_streams
    keys = {account_id: f"usdm-hub-{account_id}" for account_id in range(1, 13)}
    for key in keys.values():
        book.add_key(key, SECRET, balances={"USDT": "1000"})
    book.set_price(FUT, "50500")
    live: list[int] = []
    orders: list[tuple[int, str]] = []

    async def credentials(account_id):
        return Credentials(keys[account_id], SECRET)

    async def on_order(account_id, order):
        orders.append((account_id, order.client_order_id))

    async def on_live(account_id):
        live.append(account_id)

    gateway = ExchangeGateway(ClientPool(fake_exchanges.origins, timeout_ms=5_000),
                              retry=RetryPolicy(attempts=2, base_delay=0))
    protocol = BinanceUsdmStream()
    url = fake_exchanges.origins["binanceusdm"].replace("http://", "ws://") + "/private/stream"
    try:
        async with aiohttp.ClientSession() as session:
            hub = UserStreamHub(
                "binanceusdm", url, protocol, session, credentials=credentials, on_order=on_order, on_live=on_live,
                rest=lambda creds, op: gateway.private_call("binanceusdm", creds, op),
                heartbeat=0.5, backoff=Backoff(base=0.05, cap=0.2),
            )
            try:
                started = time.monotonic()
                hub.follow(set(keys))
                # An account is streamed (left to the stream by the poller) as soon as its subscription is
                # confirmed, not only once the connection's whole first round of subscribes is done.
                await wait_for(lambda: _true(hub.live_accounts))
                assert 0 < len(hub.live_accounts) < len(keys)
                await wait_for(lambda: _true(hub.live_accounts == set(keys)))
                # 12 subscribes on one connection: paced under Binance's 10 messages per second (the fake closes
                # a connection past it), so it takes over a second and a single connection attempt.
                assert time.monotonic() - started >= 11 / protocol.messages_per_second
                assert len(streams.attempts) == 1 and hub.connections == 1 and streams.subscriptions == 12
                book.place_order(keys[7], FUT, "buy", "limit", "0.002", "50000", client_order_id="hub-7")
                book.set_price(FUT, "49900")
                await wait_for(lambda: _true(orders == [(7, "hub-7")]))  # routed to its account only

                await streams.drop()
                await wait_for(lambda: _true(hub.live_accounts == set(keys) and len(live) == 24))
                assert len(streams.attempts) == 2  # one reconnect for the connection, not one per account
                assert sorted(live) == sorted([*keys, *keys])  # each account's gap backfilled after each subscribe
                # the same listenKeys again: a POST while one is valid returns it
                assert len(streams.listen_keys) == 12 and streams.subscriptions == 12

                hub.follow({1})  # eleven unsubscribes: paced too, the connection stays
                await wait_for(lambda: _true(streams.subscriptions == 1))
                assert len(streams.attempts) == 2 and hub.live_accounts == {1}
            finally:
                await hub.close()
    finally:
        await gateway.close()


async def test_a_revoked_key_loses_its_stream_gets_checked_and_is_polled(fake_exchanges, tmp_path):
    book, world, _strategy_id, _order, account_id = await streamed_futures_grid(
        fake_exchanges, tmp_path, "usdm-revoked-later"
    )
    streams = fake_exchanges.binanceusdm_streams

    def checks() -> int:
        return requests_to(book, "GET", "/apiRestrictions", "usdm-revoked-later")

    try:
        before, posts = checks(), requests_to(book, "POST", "/fapi/v1/listenKey", "usdm-revoked-later")
        book.revoke_key("usdm-revoked-later")
        streams.expire("usdm-revoked-later")  # its listenKey cannot be replaced: POST answers -2015
        await wait_for(lambda: _true(requests_to(book, "POST", "/fapi/v1/listenKey", "usdm-revoked-later") > posts))
        await wait_for(lambda: _true(checks() > before), timeout=5)  # the key is checked at once
        assert not world.engine.streams.streamed(account_id)
        assert world.engine.streams.hubs["binanceusdm"].refused_until.get(account_id, 0) > time.monotonic() + 60
    finally:
        await world.close()


async def test_a_stalled_futures_stream_is_replaced_and_its_gap_backfilled(fake_exchanges, tmp_path):
    book, world, strategy_id, _order, _account_id = await streamed_futures_grid(fake_exchanges, tmp_path, "usdm-stall")
    streams = fake_exchanges.binanceusdm_streams
    try:
        attempts = len(streams.attempts)
        streams.stall(30)  # the connection stays open but goes silent, pings unanswered
        book.set_price(FUT, "49900")  # filled during the stall
        await wait_for(lambda: _true(len(streams.attempts) > attempts), timeout=5)  # the heartbeat noticed
        [row] = await wait_for(lambda: fill_rows(world, strategy_id), timeout=5)
        [trade] = book.trades("usdm-stall")
        assert row.fill.trade_key == f"t:{trade.id}"
        await world.engine.streams.settle()
        assert len(await world.alerts("fill")) == 1
    finally:
        await world.close()


async def test_a_futures_trade_made_on_binance_by_hand_is_alerted_once_naming_its_market(fake_exchanges, tmp_path):
    book, world, _strategy_id, _order, account_id = await streamed_futures_grid(fake_exchanges, tmp_path, "usdm-hand")
    streams = fake_exchanges.binanceusdm_streams
    try:
        world.engine.streams.foreign.window = 0.1
        placed = streams.place_by_hand("usdm-hand", FUT, "sell", "market", "0.001")  # on Binance's website
        assert placed.client_order_id.startswith("web_")
        await wait_for(lambda: world.alerts("error"), timeout=5)
        await world.engine.streams.settle()
        [alert] = await world.alerts("error")
        [recorded] = await world.store.foreign_trades.for_account(account_id)
        [trade] = [t for t in book.trades("usdm-hand") if t.order_id == placed.id]
        assert recorded.market == FUT and "BTC/USDT:USDT" in alert["text"]
        assert streams.redeliver(placed.id) == 1  # the venue sends it again: still one trade, one alert
        await asyncio.sleep(0.3)
        assert len(await world.store.foreign_trades.for_account(account_id)) == 1
        assert len(await world.alerts("error")) == 1 and trade.amount == Decimal("0.001")
    finally:
        await world.close()


async def test_subscribes_stay_under_ten_a_second_even_after_the_event_loop_stalls():
    """Binance closes a connection that receives more than 10 messages in a second (every subscription on it is
    lost). A busy event loop must not make paced subscribes bunch up: the pace counts the sends actually made."""
    protocol = BinanceUsdmStream()
    sent: list[float] = []

    async def one(n: int) -> None:
        await protocol.subscribe(str(n), Credentials("k", SECRET), Secret(f"listen-key-{n}"))
        sent.append(time.monotonic())

    tasks = [asyncio.create_task(one(n)) for n in range(24)]
    await asyncio.sleep(0.3)
    time.sleep(1.0)  # the point: the event loop is busy for a second (a CPU-bound burst)
    await asyncio.gather(*tasks)
    most = max(sum(1 for t in sent if start <= t < start + 1.0) for start in sent)
    assert most <= protocol.messages_per_second + 1 < 10  # under Binance's 10, with room for pings and pongs


async def test_a_listen_key_goes_ahead_of_reads_when_the_ip_budget_is_spent(fake_exchanges, tmp_path):
    """USD-M's budget is 2,400 weight a minute for the whole IP: reads (strategies' balance and position-mode
    checks, polls) can spend it for minutes. Re-subscribing after a drop needs each account's listenKey (weight
    1): it goes with the trading calls, ahead of the reads, or every fill of the account waits for polling."""
    book, world, _strategy_id, _order, account_id = await streamed_futures_grid(fake_exchanges, tmp_path, "usdm-busy")
    streams = fake_exchanges.binanceusdm_streams
    try:
        while time.time() % 60 > 45:  # this minute's budget stays spent for the whole test
            await asyncio.sleep(0.5)
        [budget] = [b for (venue, _), b in world.gateway.pool.budgets.budgets().items() if venue == "binanceusdm"]
        budget.observe_used(budget.read_limit)  # every read now waits for the next minute
        posts = requests_to(book, "POST", "/fapi/v1/listenKey")
        await streams.drop()
        await wait_for(lambda: _true(not world.engine.streams.streamed(account_id)))
        await wait_for(lambda: _true(world.engine.streams.streamed(account_id)), timeout=5)
        assert requests_to(book, "POST", "/fapi/v1/listenKey") == posts + 1
    finally:
        await world.close()

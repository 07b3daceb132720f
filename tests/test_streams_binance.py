"""Binance Spot fills pushed by the WebSocket API user-data stream (issue 21, item 1), end to end.

A real engine (`tests.engine_world`) with its real stream listener (aiohttp WebSocket client) and real ccxt
against the fake Binance on 127.0.0.1, whose `/ws-api/v3` verifies each subscription's signature and pushes an
`executionReport` for every fill of the subscribed account. Faults come from the fake: dropped connections,
stalls, refused reconnects, fills during the gap. Figures are checked against the fake's own trades.
"""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import aiohttp
import ccxt.pro

from bot.exchanges.streams import AttemptWindow, Backoff, UserStreamHub
from bot.exchanges.streams.binance import BinanceSpotStream, execution_order
from bot.secret import Credentials
from tests.engine_world import open_world
from tests.stream_helpers import _true, streamed_grid_world, wait_for

USER = 31
SECRET = "stream-secret"


def trade_requests(book) -> int:
    return sum(1 for r in book.requests if r.path.endswith("/myTrades"))


def open_orders_requests(book) -> int:
    return sum(1 for r in book.requests if r.path.endswith("/openOrders"))


async def streamed_grid(
    fake_exchanges, tmp_path, key: str, *, poll_seconds: float = 3600.0, world_options=None, **stream_options
):
    """A Binance grid resting one buy of 0.002 BTC at 50000, its account subscribed on the fake's stream."""
    return await streamed_grid_world(
        fake_exchanges, tmp_path, user=USER, venue="binance", key=key, secret=SECRET, symbol="BTC/USDT",
        budget="100.1", balances={"USDT": "1000"}, poll_seconds=poll_seconds, world_options=world_options,
        **stream_options,
    )


async def receive(ws) -> dict:
    return json.loads((await asyncio.wait_for(ws.receive(), 5)).data)





async def fill_rows(world, strategy_id):
    return await world.store.orders.fills_for_strategy(strategy_id)


# --- the fake venue and the protocol, against each other and against ccxt's own parser --------------------


async def test_the_fake_ws_api_checks_the_signature_and_wraps_each_fill_with_its_subscription(fake_exchanges):
    book = fake_exchanges.books["binance"]
    book.add_key("ws-key", SECRET, balances={"USDT": "1000"})
    book.set_price("BTC/USDT", "50500")
    protocol = BinanceSpotStream()
    url = fake_exchanges.origins["binance"].replace("http://", "ws://") + "/ws-api/v3"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await ws.send_str(json.dumps(protocol.subscribe("1", Credentials("ws-key", "wrong"))))
        refused = protocol.read(await receive(ws))
        assert refused.error.startswith("-1022") and refused.key_rejected
        for request_id in ("2", "3"):  # two subscriptions of one account on one connection
            await ws.send_str(json.dumps(protocol.subscribe(request_id, Credentials("ws-key", SECRET))))
        first, second = [protocol.read(await receive(ws)) for _ in range(2)]
        assert (first.request_id, second.request_id) == ("2", "3") and first.handle != second.handle
        placed = book.place_order("ws-key", "BTC/USDT", "buy", "limit", "0.002", "50000", client_order_id="mine-1")
        book.set_price("BTC/USDT", "49900")
        messages = [await receive(ws) for _ in range(2)]
        assert {m["subscriptionId"] for m in messages} == {first.handle, second.handle}
        event = messages[0]["event"]
        [trade] = book.trades("ws-key")
        update = protocol.read(messages[0])
        assert update.handle == messages[0]["subscriptionId"]
        order = update.order
        assert (order.client_order_id, order.id, order.status) == ("mine-1", str(placed.id), "closed")
        assert (order.filled, order.cost) == (Decimal("0.002"), Decimal("100"))
        [streamed] = order.trades
        assert (streamed.id, streamed.amount, streamed.price) == (str(trade.id), trade.amount, trade.price)
        assert (streamed.fee_cost, streamed.fee_currency) == (trade.fee, trade.fee_currency)
        # ccxt's own parser of Binance's executionReport reads the fake's event the same way.
        parsed = ccxt.pro.binance().parse_ws_order(event)
        assert parsed["clientOrderId"] == "mine-1" and parsed["status"] == "closed"
        assert Decimal(str(parsed["filled"])) == order.filled and Decimal(str(parsed["cost"])) == order.cost
        await ws.send_str(json.dumps(protocol.unsubscribe("4", first.handle)))
        replies = [protocol.read(await receive(ws)) for _ in range(2)]
        assert any(getattr(r, "ended", False) and r.handle == first.handle for r in replies)
    assert fake_exchanges.binance_streams.subscriptions == 0


def test_a_cancel_report_names_our_order_by_its_original_client_id():
    event = {
        "e": "executionReport", "x": "CANCELED", "X": "CANCELED", "c": "web_abc", "C": "ours-7", "i": 12,
        "S": "BUY", "o": "LIMIT", "q": "0.00200000", "p": "50000.00000000", "z": "0.00100000",
        "Z": "50.00000000", "l": "0.00000000", "L": "0.00000000", "n": "0", "N": None, "t": -1, "T": 1,
    }
    order = execution_order(event)
    assert (order.client_order_id, order.status, order.filled, order.trades) == ("ours-7", "canceled",
                                                                                Decimal("0.001"), ())
    assert execution_order({**event, "x": "NEW", "X": "NEW"}) is None


# --- the engine ---------------------------------------------------------------------------------------------


async def test_a_fill_alert_is_queued_within_a_second_with_the_poller_off(fake_exchanges, tmp_path):
    book, world, strategy_id, order, _ = await streamed_grid(fake_exchanges, tmp_path, "fast-key")
    try:
        trades_before = trade_requests(book)
        latencies = []
        for fill in (lambda: book.fill_partially(order.id, "0.0005"), lambda: book.set_price("BTC/USDT", "49900")):
            alerts = len(await world.alerts("fill"))
            started = time.monotonic()
            fill()
            await wait_for(lambda n=alerts: _more(world.alerts("fill"), n), timeout=1.0)
            latencies.append(time.monotonic() - started)
        print(f"fill -> alert queued: {', '.join(f'{x * 1000:.0f} ms' for x in latencies)}")
        assert max(latencies) < 1.0
        partial, rest = await world.alerts("fill")
        assert "Bought 0.0005" in partial["text"] and "Bought 0.0015" in rest["text"]
        trades = book.trades("fast-key")
        fills = await fill_rows(world, strategy_id)
        assert [(f.fill.trade_key, f.fill.amount, f.fill.fee) for f in fills] == [
            (f"t:{t.id}", t.amount, t.fee) for t in trades
        ]
        [row] = [r for r in await world.orders() if r["client_order_id"] == order.client_order_id]
        assert row["status"] == "closed"
        assert trade_requests(book) == trades_before  # each streamed trade needed no REST read
        await world.engine.poll_once()  # a poll of the same order afterwards records nothing more
        assert len(await fill_rows(world, strategy_id)) == 2 and len(await world.alerts("fill")) == 2
    finally:
        await world.close()


async def test_a_fill_while_the_connection_is_down_is_backfilled_once(fake_exchanges, tmp_path):
    book, world, strategy_id, order, account_id = await streamed_grid(fake_exchanges, tmp_path, "gap-key")
    streams = fake_exchanges.binance_streams
    try:
        book.fill_partially(order.id, "0.001")  # streamed
        await wait_for(lambda: fill_rows(world, strategy_id))
        streams.refuse(2)  # the next two reconnects are refused
        await streams.drop()
        await wait_for(lambda: _true(not world.engine.streams.streamed(account_id)))
        book.set_price("BTC/USDT", "49900")  # the rest fills in the gap: no stream carries it
        await wait_for(lambda: _true(world.engine.streams.streamed(account_id)), timeout=10)
        await wait_for(lambda: _true(book.find_order(order.id).status == "closed"))
        rows = await wait_for(lambda: _two(fill_rows(world, strategy_id)))
        trades = book.trades("gap-key")
        assert sorted(r.fill.trade_key for r in rows) == sorted(f"t:{t.id}" for t in trades)
        await world.engine.poll_once()  # stream, backfill and poll all saw the order: still once each
        assert len(await fill_rows(world, strategy_id)) == 2
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.spent == sum((t.cost + t.fee for t in trades), Decimal(0)) == Decimal("100.10")
        assert len(await world.alerts("fill")) == 2
        assert len(streams.attempts) >= 4  # first, two refused, the one that worked
    finally:
        await world.close()


async def _more(rows_coro, count: int):
    rows = await rows_coro
    return rows if len(rows) > count else None


async def _two(rows_coro):
    rows = await rows_coro
    return rows if len(rows) == 2 else None


async def test_a_stalled_connection_is_replaced_and_its_gap_backfilled(fake_exchanges, tmp_path):
    book, world, strategy_id, _order, _account_id = await streamed_grid(fake_exchanges, tmp_path, "stall-key")
    streams = fake_exchanges.binance_streams
    try:
        attempts = len(streams.attempts)
        streams.stall(30)  # the connection stays open but goes silent, pings unanswered
        book.set_price("BTC/USDT", "49900")  # filled during the stall
        await wait_for(lambda: _true(len(streams.attempts) > attempts), timeout=5)  # the heartbeat noticed
        [row] = await wait_for(lambda: fill_rows(world, strategy_id), timeout=5)
        [trade] = book.trades("stall-key")
        assert row.fill.trade_key == f"t:{trade.id}"
        assert len(await world.alerts("fill")) == 1
    finally:
        await world.close()


async def test_the_connection_is_rolled_over_before_its_lifetime_without_a_gap(fake_exchanges, tmp_path):
    book, world, strategy_id, _order, account_id = await streamed_grid(
        fake_exchanges, tmp_path, "roll-key", lifetime=0.6
    )
    streams = fake_exchanges.binance_streams
    try:
        attempts = len(streams.attempts)
        await wait_for(lambda: _true(len(streams.attempts) >= attempts + 2), timeout=5)  # two rollovers
        assert world.engine.streams.streamed(account_id)
        assert len(streams.sessions) <= 2  # the old connection closes once the new one is subscribed
        started = time.monotonic()
        book.set_price("BTC/USDT", "49900")
        await wait_for(lambda: world.alerts("fill"), timeout=1.0)
        assert time.monotonic() - started < 1.0
        assert len(await fill_rows(world, strategy_id)) == 1
    finally:
        await world.close()


async def test_polling_resumes_at_the_normal_interval_while_the_stream_is_down(fake_exchanges, tmp_path):
    book, world, strategy_id, _order, account_id = await streamed_grid(
        fake_exchanges, tmp_path, "fallback-key", poll_seconds=0.2
    )
    streams = fake_exchanges.binance_streams
    try:
        world.engine.sweep_seconds = 3600.0
        await asyncio.sleep(0.5)  # the sweep of the newly streamed account has run by now
        polls = open_orders_requests(book)
        await asyncio.sleep(1.0)
        assert open_orders_requests(book) == polls  # streamed: left to the stream
        streams.refuse(10_000)
        await streams.drop()
        await wait_for(lambda: _true(open_orders_requests(book) >= polls + 3), timeout=3)  # polled every 0.2 s
        assert world.engine.fill_mode(await world.store.accounts.get(account_id)) == "polled"
        book.set_price("BTC/USDT", "49900")
        [row] = await wait_for(lambda: fill_rows(world, strategy_id), timeout=3)  # the poller records it
        assert row.fill.amount == Decimal("0.002")
    finally:
        streams.refuse(0)
        await world.close()


async def test_an_unknown_order_of_a_streamed_account_is_still_resolved_at_the_normal_interval(
    fake_exchanges, tmp_path
):
    book, world, _strategy_id, _order, account_id = await streamed_grid(
        fake_exchanges, tmp_path, "unknown-key", poll_seconds=0.2, world_options={"timeout_ms": 600}
    )
    try:
        world.engine.sweep_seconds = 3600.0
        await asyncio.sleep(0.5)
        book.hang_seconds = 1.2
        book.inject("timeout", count=1, path="/api/v3/order")  # the grid's next order: its answer never comes
        book.set_price("BTC/USDT", "49900")  # the buy fills (streamed); the grid sends its sell

        async def sell_status():
            rows = [r for r in await world.orders() if r["side"] == "sell"]
            return rows[0]["status"] if rows else None

        await wait_for(lambda: _status_is(sell_status(), "unknown"), timeout=5)
        assert world.engine.streams.streamed(account_id)
        await wait_for(lambda: _status_is(sell_status(), "open"), timeout=5)  # found by client id, not resent
        assert len([o for o in book.all_orders("unknown-key") if o.side == "sell"]) == 1
    finally:
        await world.close()


async def _status_is(status_coro, wanted: str) -> bool:
    return await status_coro == wanted


async def test_an_account_is_unsubscribed_when_its_strategy_stops(fake_exchanges, tmp_path):
    book, world, strategy_id, _order, account_id = await streamed_grid(fake_exchanges, tmp_path, "stop-key")
    streams = fake_exchanges.binance_streams
    try:
        assert streams.subscribed("stop-key")
        checks = sum(1 for r in book.requests if r.path.endswith("/apiRestrictions"))
        # With alerts on trades Strata did not make (the default) an idle account stays followed for them.
        await world.store.users.merge_settings(USER, {"foreign_alerts": 0})
        await world.service.stop(USER, strategy_id, sell=False)
        await wait_for(lambda: _true(not streams.subscribed("stop-key")), timeout=5)
        assert not world.engine.streams.streamed(account_id)
        await asyncio.sleep(0.3)
        assert sum(1 for r in book.requests if r.path.endswith("/apiRestrictions")) == checks  # not a failure
    finally:
        await world.close()


# --- the hub: many accounts on few connections, within the venue's connection limit ----------------------


async def test_many_accounts_share_one_connection_and_a_drop_costs_one_attempt_per_connection(fake_exchanges):
    book = fake_exchanges.books["binance"]
    streams = fake_exchanges.binance_streams
    keys = {account_id: f"hub-key-{account_id}" for account_id in range(1, 6)}
    for key in keys.values():
        book.add_key(key, SECRET, balances={"USDT": "1000"})
    book.set_price("BTC/USDT", "50500")
    live: list[int] = []
    orders: list[tuple[int, str]] = []

    async def credentials(account_id):
        return Credentials(keys[account_id], SECRET)

    async def on_order(account_id, order):
        orders.append((account_id, order.client_order_id))

    async def on_live(account_id):
        live.append(account_id)

    protocol = BinanceSpotStream()
    protocol.max_subscriptions = 3  # Binance: 1,000; small here to see a second connection
    url = fake_exchanges.origins["binance"].replace("http://", "ws://") + "/ws-api/v3"
    async with aiohttp.ClientSession() as session:
        hub = UserStreamHub(
            "binance", url, protocol, session, credentials=credentials, on_order=on_order, on_live=on_live,
            heartbeat=0.5, backoff=Backoff(base=0.05, cap=0.2),
        )
        try:
            hub.follow(set(keys))
            await wait_for(lambda: _true(hub.live_accounts == set(keys)))
            assert len(streams.attempts) == 2 and hub.connections == 2 and streams.subscriptions == 5
            book.place_order(keys[4], "BTC/USDT", "buy", "limit", "0.002", "50000", client_order_id="hub-4")
            book.set_price("BTC/USDT", "49900")
            await wait_for(lambda: _true(orders == [(4, "hub-4")]))  # routed to its account only

            await streams.drop()
            await wait_for(lambda: _true(hub.live_accounts == set(keys) and len(live) == 10))
            assert len(streams.attempts) == 4  # one reconnect per connection, not per account
            assert sorted(live) == sorted([*keys, *keys])  # each account's gap backfilled after each subscribe

            hub.follow({1})
            await wait_for(lambda: _true(streams.subscriptions == 1 and hub.connections == 1))
        finally:
            await hub.close()


def test_connection_attempts_stay_within_the_venue_window():
    now = [0.0]
    window = AttemptWindow(limit=3, window=300.0, clock=lambda: now[0])
    for _ in range(3):
        assert window.delay() == 0.0
        window._times.append(now[0])
    now[0] = 100.0
    assert window.delay() == 200.0  # the oldest attempt leaves the window at t=300
    now[0] = 300.0
    assert window.delay() == 0.0


def test_backoff_grows_to_its_cap_with_jitter():
    backoff = Backoff(base=1.0, cap=8.0)
    for failures, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (10, 8.0)):
        delays = [backoff.delay(failures) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays) and len(set(delays)) > 1


async def test_a_stream_that_ends_unexpectedly_gets_its_key_checked_at_once(fake_exchanges, tmp_path):
    book, world, _strategy_id, _order, _account_id = await streamed_grid(fake_exchanges, tmp_path, "health-key")

    def checks() -> int:
        return sum(1 for r in book.requests if r.path.endswith("/apiRestrictions") and r.api_key == "health-key")

    try:
        before = checks()
        await fake_exchanges.binance_streams.drop()
        await wait_for(lambda: _true(checks() == before + 1), timeout=5)  # withdrawals on? trading gone?
    finally:
        await world.close()


async def test_a_streamed_fill_is_recorded_while_its_strategy_waits_on_a_slow_balance_read(fake_exchanges, tmp_path):
    """The grid's run reads the balance (weight 20, a REST call that can queue behind the IP's weight) when it
    places an order; a fill of the same strategy streamed meanwhile is recorded and alerted at once, not after it."""
    key = "slow-balance-key"
    book = fake_exchanges.books["binance"]
    book.add_key(key, SECRET, balances={"USDT": "1000"})
    book.set_price("BTC/USDT", "55000")
    world = await open_world(
        tmp_path, fake_exchanges.exchange_urls, poll_seconds=3600.0, streams=True,
        stream_options={"heartbeat": 0.5, "backoff": Backoff(base=0.05, cap=0.5)},
    )
    try:
        await world.connect(USER, "binance", key, SECRET)
        strategy_id = await world.allocate(USER, "binance", "grid", "250", "BTC/USDT", low="49000", high="60000",
                                           levels="3")
        await world.engine.settle()
        assert sorted(o.price for o in book.open_orders(key)) == [Decimal(49000), Decimal(54500)]
        account_id = (await world.store.accounts.list_for_user(USER))[0].id
        await wait_for(lambda: _true(world.engine.streams.streamed(account_id) and world.engine.streams.backfills))
        await world.engine.streams.settle()
        balance_reads = sum(1 for r in book.requests if r.path.endswith("/account"))
        book.inject("hold", path="/api/v3/account", seconds=3)
        book.set_price("BTC/USDT", "54000")  # the buy at 54,500 fills: the grid now wants its sell at 60,000
        await wait_for(lambda: _true(sum(1 for r in book.requests if r.path.endswith("/account")) > balance_reads))
        started = time.monotonic()
        book.set_price("BTC/USDT", "48000")  # the buy at 49,000 fills while that balance answer is late
        await wait_for(lambda: _more(world.alerts("fill"), 1), timeout=5)
        waited = time.monotonic() - started
        print(f"fill -> alert queued while a balance read is in flight: {waited * 1000:.0f} ms")
        assert waited < 1.0
        await world.engine.settle()
        fills = await fill_rows(world, strategy_id)
        assert sorted(f.fill.trade_key for f in fills) == sorted(f"t:{t.id}" for t in book.trades(key))
        assert len(fills) == 2 and len(await world.alerts("fill")) == 2
        sells = [o for o in book.open_orders(key) if o.side == "sell"]
        assert sorted(o.price for o in sells) == [Decimal(54500), Decimal(60000)]  # each bought level sells
    finally:
        await world.close()


async def test_a_streamed_fill_is_recorded_while_a_budget_edit_waits_on_a_slow_balance_read(fake_exchanges, tmp_path):
    """/edit's Confirm checks a raised budget against the free balance, under the strategy's lock (so no decision
    runs on the old budget meanwhile); that read is made before the lock, so a fill streamed meanwhile is not held
    up behind it."""
    book, world, strategy_id, _order, _ = await streamed_grid(fake_exchanges, tmp_path, "edit-key")
    try:
        preview = await world.service.edit(USER, strategy_id, {"budget": "150"})
        balance_reads = sum(1 for r in book.requests if r.path.endswith("/account"))
        book.inject("hold", path="/api/v3/account", seconds=3)
        confirming = asyncio.create_task(world.service.confirm_edit(preview))
        await wait_for(lambda: _true(sum(1 for r in book.requests if r.path.endswith("/account")) > balance_reads))
        started = time.monotonic()
        book.set_price("BTC/USDT", "49900")  # the grid's buy fills while the balance answer is late
        await wait_for(lambda: world.alerts("fill"), timeout=5)
        waited = time.monotonic() - started
        print(f"fill -> alert queued while /edit reads the balance: {waited * 1000:.0f} ms")
        assert waited < 1.0
        await confirming
        assert (await world.store.strategies.get(strategy_id)).budget == Decimal(150)
        [trade] = book.trades("edit-key")
        assert [f.fill.trade_key for f in await fill_rows(world, strategy_id)] == [f"t:{trade.id}"]
    finally:
        await world.close()

"""Shared rate budget: weight per (venue, host), waits past the margin, reads the server's weight header."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from urllib.parse import urlsplit

import ccxt.async_support as ccxt_async
import pytest

from bot.exchanges.clients import ClientPool, key_id
from bot.exchanges.gateway import ExchangeGateway
from bot.exchanges.rate_budget import (
    BudgetWait,
    KeyCallCounter,
    RateBudgets,
    WeightBudget,
    binance_weight,
    charged_to,
    decision_read,
    trading_call,
)
from bot.sandbox.binance import VENUE_KEY
from bot.sandbox.exchanges import make_books, start_fake_exchanges
from bot.secret import Credentials
from bot.services.accounts import AccountService
from tests.engine_world import open_world


class StepClock:
    def __init__(self, start: float = 1_700_000_020.0) -> None:  # 40 s into a minute
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_callers_wait_for_the_next_minute_when_the_safety_margin_would_be_passed():
    clock = StepClock()
    budget = WeightBudget(100, margin=0.9, clock=clock, sleep=clock.sleep)
    for _ in range(9):
        await budget.acquire(10)
    assert budget.headroom() == 0 and clock.slept == []
    await budget.acquire(10)  # 100 > 90: wait until the minute rolls over
    assert clock.slept == [pytest.approx(20.0)]
    assert budget.used_per_minute() == 90  # the previous full minute
    assert budget.headroom() == 80


async def test_the_servers_weight_header_raises_our_count():
    clock = StepClock()
    budget = WeightBudget(6000, clock=clock, sleep=clock.sleep)
    await budget.acquire(4)
    budget.observe_used(5_390)  # other processes on this IP spent weight too
    assert budget.used_per_minute() == 5_390
    assert budget.headroom() == 5_400 - 5_390
    budget.observe_used(10)  # a lower, older figure never lowers it
    assert budget.used_per_minute() == 5_390


async def test_retry_after_on_429_holds_every_caller():
    clock = StepClock()
    budgets = RateBudgets(clock=clock, sleep=clock.sleep)
    budgets.observe(
        "binance", "http://h/api/v3/order", 429, {"Retry-After": "7", "X-MBX-USED-WEIGHT-1M": "10"}
    )
    await budgets.acquire("binance", "public", "http://h/api/v3", 0.4)
    assert clock.slept and clock.slept[0] == pytest.approx(7.0)


async def test_ccxt_costs_convert_to_binance_weights():
    spot = ccxt_async.binance()
    spot.timeout_on_exit = 0
    try:
        api = spot.api
        assert binance_weight("binance", api["private"]["get"]["order"]["cost"]) == 4
        assert binance_weight("binance", api["private"]["get"]["myTrades"]["cost"]) == 20
        assert binance_weight("binance", api["private"]["get"]["openOrders"]["noSymbol"]) == 80
        assert binance_weight("binanceusdm", api["fapiPrivate"]["get"]["userTrades"]["cost"]) == 5
    finally:
        await spot.close()


async def test_sapi_calls_are_not_charged_to_the_ip_weight():
    budgets = RateBudgets()
    await budgets.acquire("binance", "sapi", "http://h/sapi/v1", 0.1)
    assert budgets.budgets() == {}


async def test_sapi_calls_are_charged_to_a_side_budget_of_their_own_shared_by_spot_and_usdm():
    # apiRestrictions: ccxt cost 0.1 = Binance weight 1, on each IP-limited sapi endpoint's 12,000 per minute.
    budgets = RateBudgets()
    await budgets.acquire("binance", "sapi", "https://api.binance.com/sapi/v1", 0.1)
    await budgets.acquire("binanceusdm", "sapi", "https://api.binance.com/sapi/v1", 0.1)
    [side] = budgets.side_budgets().values()
    assert (side.requests, side.used_per_minute(), side.limit_per_minute) == (2, 2, 12_000)
    budgets.observe("binance", "https://api.binance.com/sapi/v1/account/apiRestrictions", 200,
                    {"X-SAPI-USED-IP-WEIGHT-1M": "7"})
    assert side.used_per_minute() == 7 and budgets.budgets() == {}


async def test_kraken_key_counter_waits_when_the_key_is_over_its_points():
    clock = StepClock()
    counter = KeyCallCounter(max_points=3, decay_per_second=0.5, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        await counter.acquire("key", 1)
    await counter.acquire("key", 1)
    assert clock.slept == [pytest.approx(2.0)]
    await counter.acquire("other", 1)  # another key has its own counter
    assert len(clock.slept) == 1


async def test_a_kraken_read_over_its_points_on_a_pooled_client_gives_the_client_up_to_wait():
    clock = StepClock()
    counter = KeyCallCounter(max_points=2, decay_per_second=0.5, clock=clock, sleep=clock.sleep)
    for _ in range(2):
        await counter.acquire("key", 1, release_to_wait=True)
    with pytest.raises(BudgetWait) as no_room:
        await counter.acquire("key", 1, release_to_wait=True)
    assert clock.slept == []
    await no_room.value.wait()
    assert clock.slept == [pytest.approx(2.0)]
    await counter.acquire("key", 1, release_to_wait=True)


async def test_kraken_trading_calls_cost_no_counter_points():
    clock = StepClock()
    budgets = RateBudgets(clock=clock, monotonic=clock, sleep=clock.sleep)
    for _ in range(50):
        await budgets.acquire("kraken", "private", "http://h", 0, "key")  # AddOrder costs 0 in ccxt
    assert clock.slept == []


# ------------------------------------------------------------------------------------------ against the fakes
async def test_budget_reads_the_weight_header_of_the_fake_binance(fake_exchanges, exchange_client):
    book = fake_exchanges.books["binance"]
    creds = Credentials("w" * 64, "W" * 64)
    book.add_key(creds.api_key.reveal(), creds.secret.reveal())
    other = exchange_client("binance")  # another client on the same IP spends weight too
    await other.load_markets()
    for _ in range(5):
        await other.fetch_ticker("BTC/USDT")
    pool = ClientPool(fake_exchanges.origins)
    venue = fake_exchanges.apps["binance"][VENUE_KEY]
    minute = book.now_ms() // 60_000
    try:
        await ExchangeGateway(pool).fetch_balance("binance", creds)
        host = urlsplit(fake_exchanges.origins["binance"]).netloc
        budget = pool.budgets.budgets()[("binance", host)]
        if book.now_ms() // 60_000 != minute:
            pytest.skip("the minute rolled over during the test; counts restarted")
        # We sent exchangeInfo (20) + account (20) = 40; the server also counted the other client's
        # exchangeInfo (20) and 5 tickers (2 each): only the header can tell us about those.
        assert venue.weights.current("127.0.0.1", minute) == 70
        assert budget.used_per_minute() == 70
        assert pool.budgets.used_per_minute("binance") == 70
        assert pool.budgets.headroom("binance") == budget.safe_limit - 70
    finally:
        await pool.close()


async def test_kraken_private_calls_are_counted_per_key(fake_exchanges):
    book = fake_exchanges.books["kraken"]
    creds = Credentials("c" * 56, base64.b64encode(bytes(64)).decode())
    book.add_key(creds.api_key.reveal(), creds.secret.reveal())
    pool = ClientPool(fake_exchanges.origins)
    try:
        await ExchangeGateway(pool).fetch_balance("kraken", creds)
        assert pool.budgets.kraken_keys.level(key_id(creds)) == pytest.approx(1.0, abs=0.05)
    finally:
        await pool.close()


async def test_the_shared_budget_keeps_the_whole_process_under_the_venues_weight_limit():
    """100 callers (5 in flight at a time) against a fake Binance allowing 100 weight/min: never a 429.

    The fake and our budget share one clock that jumps to the next minute when callers wait, so the test
    takes no real minutes. The 10 % safety margin covers requests still in flight at a minute boundary.
    """
    clock = StepClock(start=float(int(time.time()) // 60 * 60 + 30))
    books = make_books(("binance",), clock=lambda: int(clock() * 1000))
    fake = await start_fake_exchanges(books=books, weight_limits={"binance": 100})

    async def next_minute(seconds: float) -> None:
        clock.slept.append(seconds)
        clock.now = max(clock.now, (clock.now // 60 + 1) * 60)  # every waiter wakes in the same new minute
        await asyncio.sleep(0)

    budgets = RateBudgets(limits={"binance": 100}, clock=clock, sleep=next_minute)
    pool = ClientPool(fake.origins, budgets=budgets)
    in_flight = asyncio.Semaphore(5)

    async def ticker(master):
        async with in_flight:
            return await master.fetch_ticker("BTC/USDT")

    try:
        master = await pool.master("binance")  # exchangeInfo: weight 20
        await asyncio.gather(*(ticker(master) for _ in range(100)))  # weight 2 each
    finally:
        await pool.close()
        await fake.close()
    statuses = [r.status for r in books["binance"].requests]
    assert len(statuses) == 101 and set(statuses) == {200}
    budget = next(iter(budgets.budgets().values()))
    assert budget.waits >= 2  # 220 weight at 90 per minute: spread over three minutes


# ---------------------------------------------------------------------------------------------- fair shares
async def test_reads_stop_short_of_the_reserve_that_orders_and_cancels_keep():
    clock = StepClock()
    budget = WeightBudget(100, margin=1.0, trade_reserve=0.2, clock=clock, sleep=clock.sleep)
    assert (budget.safe_limit, budget.read_limit) == (100, 80)
    for _ in range(8):
        await budget.acquire(10)
    with pytest.raises(BudgetWait):
        await budget.acquire(10, release_to_wait=True)  # the 9th read: no room left for reads
    for _ in range(2):
        await budget.acquire(10, trading=True)  # orders still go, at once
    assert clock.slept == []


async def test_the_engines_background_reads_leave_room_for_what_decisions_wait_on():
    """A start-up's fill polls and stream backfills (the engine's background reads, by the thousand) used to take
    the whole read budget, so a strategy's ticker, or the balance a DCA reads before its buy, waited for the next
    minute: bench/engine.py's buying DCAs stalled behind 1,000 accounts' backfills."""
    clock = StepClock()
    budget = WeightBudget(
        100, margin=1.0, trade_reserve=0.2, foreground_reserve=0.25, clock=clock, sleep=clock.sleep
    )
    assert (budget.read_limit, budget.engine_read_limit) == (80, 60)
    for _ in range(6):
        await budget.acquire(10)  # polls and backfills: up to their limit
    with pytest.raises(BudgetWait):
        await budget.acquire(10, release_to_wait=True)
    await budget.acquire(10, foreground=True)  # a ticker or a decision's balance still goes at once
    await budget.acquire(10, owner="user:A")  # and so does a user's read (it has its own shares)
    assert clock.slept == []


async def test_a_waiting_decision_read_goes_before_background_reads_at_the_next_minute():
    clock = StepClock()

    async def slow_sleep(seconds: float) -> None:  # a sleeper wakes a few loop turns after its time came
        await clock.sleep(seconds)
        for _ in range(3):
            await asyncio.sleep(0)

    budget = WeightBudget(100, margin=1.0, trade_reserve=0.2, foreground_reserve=0.5, clock=clock, sleep=slow_sleep)
    for _ in range(8):
        await budget.acquire(10, foreground=True)  # the minute's reads are spent
    order: list[str] = []

    async def read(name: str, **kind) -> None:
        await budget.acquire(10, **kind)
        order.append(name)

    decision = asyncio.create_task(read("decision", foreground=True))
    await asyncio.sleep(0)  # it waits for the next minute; the minute comes while it still sleeps
    background = asyncio.create_task(read("backfill"))
    await asyncio.gather(decision, background)
    assert order == ["decision", "backfill"]


async def test_a_balance_read_before_an_order_is_a_decision_read_of_the_venue_budget():
    clock = StepClock()
    budgets = RateBudgets(clock=clock, sleep=clock.sleep, limits={"binance": 100}, margin=1.0)
    url = "https://api.binance.com/api/v3"
    with pytest.raises(BudgetWait):  # background reads stop at their share
        for _ in range(100):
            await budgets.acquire("binance", "private", url, 1.0, path="account", release_to_wait=True)
    with decision_read():
        await budgets.acquire("binance", "private", url, 1.0, path="account", release_to_wait=True)
    assert clock.slept == []


async def test_market_data_is_the_public_api_of_the_weight_budget():
    clock = StepClock()
    budgets = RateBudgets(clock=clock, sleep=clock.sleep, limits={"binance": 100}, margin=1.0)
    url = "https://api.binance.com/api/v3"
    with pytest.raises(BudgetWait):  # private engine reads until their share is spent
        for _ in range(100):
            await budgets.acquire("binance", "private", url, 1.0, path="order", release_to_wait=True)
    await budgets.acquire("binance", "public", url, 1.0, path="ticker/24hr", release_to_wait=True)
    assert clock.slept == []


async def test_one_owners_reads_stop_at_their_share_while_others_still_read():
    clock = StepClock()
    budget = WeightBudget(200, margin=1.0, trade_reserve=0.2, user_share=0.25, users_share=0.5,
                          clock=clock, sleep=clock.sleep)
    assert (budget.read_limit, budget.user_limit, budget.users_limit) == (160, 40, 80)
    for _ in range(2):
        await budget.acquire(20, owner="user:A")
    with pytest.raises(BudgetWait) as no_room:
        await budget.acquire(20, owner="user:A", release_to_wait=True)
    await budget.acquire(20, owner="user:B")  # another user is not held up by A
    await budget.acquire(20, owner="user:C")
    with pytest.raises(BudgetWait):  # all users together: at most half the reads
        await budget.acquire(20, owner="user:D", release_to_wait=True)
    await budget.acquire(40)  # the engine's own reads keep the other half
    assert clock.slept == []
    assert budget.owner_used("user:A") == 40
    await no_room.value.wait()  # A's room comes back with the next minute
    assert clock.slept == [pytest.approx(20.0)] and budget.owner_used("user:A") == 0


async def test_a_trading_call_waiting_for_the_ip_goes_before_reads_waiting_with_it():
    clock = StepClock()
    budget = WeightBudget(6000, trade_reserve=0.2, clock=clock, sleep=clock.sleep)
    budget.observe_used(5_400)  # other processes on this IP spent the minute: everyone waits
    went: list[str] = []

    async def call(name: str, trading: bool) -> None:
        await budget.acquire(10, trading=trading)
        went.append(name)

    await asyncio.gather(call("read-1", False), call("order", True), call("read-2", False))
    assert went[0] == "order"


async def test_the_budgets_take_the_class_and_owner_from_the_calling_context():
    clock = StepClock()
    budgets = RateBudgets(limits={"binance": 100}, margin=1.0, clock=clock, sleep=clock.sleep)
    with charged_to("user:7"):
        await budgets.acquire("binance", "private", "http://h/api/v3", 4.0)  # account: weight 20
        with trading_call():
            await budgets.acquire("binance", "private", "http://h/api/v3", 0.2)  # an order: weight 1
    budget = budgets.weight_budget("binance", "h")
    assert budget.owner_used("user:7") == 20 and budget.used_per_minute() == 21
    with charged_to("user:7"), pytest.raises(BudgetWait):
        await budgets.acquire("binance", "private", "http://h/api/v3", 4.0, release_to_wait=True)


async def test_one_users_accounts_flood_leaves_orders_panic_and_other_users_reads_on_time(tmp_path):
    """User A hammers /accounts (20 accounts, 10 times at once: 4,000 weight against a 1,200 limit) while B's
    grid places its orders and B's /panic cancels them, and C reads their one balance: all served at once.

    The fake Binance and our budget share a clock that starts one second into a minute, so anything that
    waits for the next minute waits ~59 real seconds — far past the bounds asserted here.
    """
    shift = time.time() % 60 - 1.0
    books = make_books(("binance",), clock=lambda: int((time.time() - shift) * 1000))
    book = books["binance"]
    book.set_price("BTC/USDT", "50500")
    fake = await start_fake_exchanges(books=books, weight_limits={"binance": 1200})
    budgets = RateBudgets(limits={"binance": 1200}, clock=lambda: time.time() - shift)
    world = await open_world(tmp_path, fake.exchange_urls, budgets=budgets, poll_seconds=1.0)
    accounts = AccountService(world.store, world.vault, world.gateway)
    flood: list[asyncio.Task] = []
    try:
        for n in range(20):
            await world.connect(ALICE, "binance", *register_key(book, {"USDT": 1000}), label=f"binance-{n}")
        await world.connect(CAROL, "binance", *register_key(book, {"USDT": 1000}))
        bob_key, bob_secret = register_key(book, {"USDT": 1000})
        await world.connect(BOB, "binance", bob_key, bob_secret)
        await world.gateway.load_markets("binance")
        flood = [asyncio.create_task(accounts.list_accounts(ALICE)) for _ in range(10)]
        while sum(r.path.endswith("/account") for r in book.requests) < 10:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # A's share is spent: the rest of the flood waits for the next minute

        started = time.perf_counter()
        grid = await world.allocate(BOB, "binance", "grid", "300", "BTC/USDT", low="45000", high="52500",
                                    levels="4")
        await asyncio.wait_for(world.engine.settle(), 10)
        placed = time.perf_counter() - started
        assert len(book.open_orders(bob_key)) == 3  # the buys below the price rest on the book
        started = time.perf_counter()
        panic = await asyncio.wait_for(world.service.panic(BOB), 10)
        cancelled = time.perf_counter() - started
        started = time.perf_counter()
        [carol] = await asyncio.wait_for(accounts.list_accounts(CAROL), 10)
        read = time.perf_counter() - started

        assert placed < 2.0 and cancelled < 1.0 and read < 1.0, (placed, cancelled, read)
        assert panic.canceled == 3 and book.open_orders(bob_key) == []
        assert (await world.store.strategies.get(grid)).status == "paused"
        assert carol.balances is not None
        assert 429 not in {r.status for r in book.requests}
        budget = budgets.weight_budget("binance", urlsplit(fake.origins["binance"]).netloc)
        assert 0 < budget.owner_used(f"user:{ALICE}") <= budget.user_limit
        assert not any(task.done() for task in flood), "the flood waits for A's next share, it was not refused"
    finally:
        for task in flood:
            task.cancel()
        await asyncio.gather(*flood, return_exceptions=True)
        await world.close()
        await fake.close()


ALICE, BOB, CAROL = 1, 2, 3


def register_key(book, balances) -> tuple[str, str]:
    api_key, secret = secrets.token_hex(32), secrets.token_hex(32)
    book.add_key(api_key, secret, balances=balances)
    return api_key, secret

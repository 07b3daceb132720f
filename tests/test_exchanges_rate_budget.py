"""Shared rate budget: weight per (venue, host), waits past the margin, reads the server's weight header."""

from __future__ import annotations

import asyncio
import base64
import time
from urllib.parse import urlsplit

import ccxt.async_support as ccxt_async
import pytest

from bot.exchanges.clients import ClientPool, key_id
from bot.exchanges.gateway import ExchangeGateway
from bot.exchanges.rate_budget import KeyCallCounter, RateBudgets, WeightBudget, binance_weight
from bot.sandbox.binance import VENUE_KEY
from bot.sandbox.exchanges import make_books, start_fake_exchanges
from bot.secret import Credentials


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


async def test_kraken_key_counter_waits_when_the_key_is_over_its_points():
    clock = StepClock()
    counter = KeyCallCounter(max_points=3, decay_per_second=0.5, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        await counter.acquire("key", 1)
    await counter.acquire("key", 1)
    assert clock.slept == [pytest.approx(2.0)]
    await counter.acquire("other", 1)  # another key has its own counter
    assert len(clock.slept) == 1


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

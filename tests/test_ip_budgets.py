"""Binance's per-IP weight shared by the engine workers of one address (storage/ip_budgets.py, SharedIpBudget).

Two "workers" (each its own `RateBudgets` and ccxt pool, as two processes would have) read tickers from one fake
Binance that counts weight per IP and answers 429 past its limit. With their budgets leased from one shared count
in the database (both backends) they stay under the limit together; each alone would think it had the whole
minute (the last test shows what each would spend alone).
"""

from __future__ import annotations

import asyncio
import time

from bot.exchanges.clients import ClientPool
from bot.exchanges.rate_budget import RateBudgets, SharedIpBudget, WeightBudget
from bot.sandbox.exchanges import make_books, start_fake_exchanges
from storage.store import Store


class StepClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    async def next_minute(self, seconds: float) -> None:
        self.now = max(self.now, (self.now // 60 + 1) * 60)  # every waiter wakes in the same new minute
        await asyncio.sleep(0)


async def two_workers_read(database, *, shared: bool, tickers: int = 60) -> tuple[list[int], list[RateBudgets]]:
    """Two workers each read `tickers` tickers (weight 2 each) at a fake Binance allowing 100 weight a minute."""
    clock = StepClock(start=float(int(time.time()) // 60 * 60 + 30))
    books = make_books(("binance",), clock=lambda: int(clock() * 1000))
    fake = await start_fake_exchanges(books=books, weight_limits={"binance": 100})
    stores = [await Store.open(database) for _ in range(2)]
    budgets = [
        RateBudgets(
            limits={"binance": 100}, clock=clock, sleep=clock.next_minute,
            shared=SharedIpBudget(store.ip_budgets) if shared else None,
            lease_chunk=10,  # small chunks for a limit of 100 (the default suits Binance's 6,000)
        )
        for store in stores
    ]
    pools = [ClientPool(fake.origins, budgets=b) for b in budgets]
    try:
        masters = [await pool.master("binance") for pool in pools]  # exchangeInfo: weight 20 each
        in_flight = asyncio.Semaphore(20)  # many at once: the venue's weight header comes too late to help

        async def ticker(master):
            async with in_flight:
                return await master.fetch_ticker("BTC/USDT")

        await asyncio.gather(*(ticker(m) for m in masters for _ in range(tickers)))
    finally:
        for pool in pools:
            await pool.close()
        await fake.close()
        for store in stores:
            await store.close()
    return [r.status for r in books["binance"].requests], budgets


async def test_two_workers_behind_one_address_share_the_weight_and_the_venue_never_says_429(any_database):
    statuses, budgets = await two_workers_read(any_database, shared=True)
    assert len(statuses) == 2 + 2 * 60 and set(statuses) == {200}
    weight = [next(iter(b.budgets().values())) for b in budgets]
    assert all(w.waits for w in weight)  # 280 weight at 90 a minute: both waited for later minutes
    # Leased in chunks (of 10 here): a few round trips a minute, far fewer than requests.
    assert sum(w.leases for w in weight) < len(statuses) / 2


class WouldWait(Exception):
    pass


async def spend_until_full(budget: WeightBudget, weight: int = 3) -> int:
    """Charge `weight` until the budget would make the caller wait; return what was charged."""
    spent = 0
    try:
        while True:
            await budget.acquire(weight, trading=True)
            spent += weight
    except WouldWait:
        return spent


async def test_two_budgets_leasing_from_one_count_spend_one_limit_between_them(any_database):
    """The venue's weight header comes back only after a request: before it, two processes each spend their own
    whole limit. Leasing from one shared count, two budgets together spend the safe limit once (less at most
    one unspent chunk each), and either alone would still have spent it all."""
    store = await Store.open(any_database)

    async def full(seconds: float) -> None:
        raise WouldWait

    clock = lambda: 1_700_000_010.0  # noqa: E731 - one fixed moment in one minute
    try:
        shared = SharedIpBudget(store.ip_budgets)
        budgets = [
            WeightBudget(1000, margin=0.9, clock=clock, sleep=full, lease=shared.lease_for("binance h"), chunk=50)
            for _ in range(2)
        ]
        spent = await asyncio.gather(*(spend_until_full(b) for b in budgets))
        assert 900 - 2 * 50 <= sum(spent) <= 900
        assert sum(b.leases for b in budgets) <= 900 // 50 + 4  # chunks, not a round trip per request
        alone = [WeightBudget(1000, margin=0.9, clock=clock, sleep=full) for _ in range(2)]
        assert sum(await asyncio.gather(*(spend_until_full(b) for b in alone))) == 2 * 900 // 3 * 3
    finally:
        await store.close()


async def test_a_lease_counts_the_venues_own_figure_once_and_refuses_past_the_limit(any_database):
    store = await Store.open(any_database)
    try:
        lease = store.ip_budgets.lease
        assert await lease("e", "binance h", 7, 60, 0, 1000) == (True, 60)
        # The venue said 500 were used (our 60 among them): the count becomes 500, then this lease's 60.
        assert await lease("e", "binance h", 7, 60, 500, 1000) == (True, 560)
        assert await lease("e", "binance h", 7, 60, 100, 1000) == (True, 620)  # a lower figure changes nothing
        assert await lease("e", "binance h", 7, 400, 0, 1000) == (False, 620)  # 1,020 > 1,000: refused
        assert await lease("other", "binance h", 7, 60, 0, 1000) == (True, 60)  # another address: its own
        assert await lease("e", "binance h", 8, 60, 0, 1000) == (True, 60)  # a new minute
        assert await store.ip_budgets.forget_before(8) == 2
    finally:
        await store.close()

"""Account partitions leased through PostgreSQL advisory locks (storage/partitions.py).

Two or three lease holders in one test process, each on its own lock connection, against the session's real
PostgreSQL server: what they hold is disjoint, converges to a fair share, and a holder whose connection dies
(closed, or terminated by the server with `pg_terminate_backend`) loses everything at once while the others
take its partitions within seconds.
"""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg
import pytest

from storage.partitions import PARTITIONS, AllPartitions, PartitionLeases, fair_share, partition_of
from tests.databases import fresh_postgres_database

FAST = {"tick_seconds": 0.2, "alive_seconds": 2.0, "handover_seconds": 0.3}
_numbers = iter(range(1, 1_000_000))


class Db:
    def __init__(self, url: str) -> None:
        self.url = url


@pytest.fixture
async def pg_url(postgres_server) -> str:
    return await fresh_postgres_database(postgres_server, f"parts{os.getpid()}_{next(_numbers)}")


async def until(check, timeout: float = 10.0) -> float:
    """Wait until `check()` is true; return how long it took (fail after `timeout`)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def test_partition_of_and_fair_share():
    assert [partition_of(a) for a in (0, 1, 63, 64, 129)] == [0, 1, 63, 0, 1]
    assert [fair_share(n) for n in (0, 1, 2, 3, 64, 100)] == [64, 64, 32, 22, 1, 1]


async def test_all_partitions_owns_everything():
    ownership = AllPartitions()
    assert ownership.owns(1) and ownership.owns(10_000)
    assert ownership.held == frozenset(range(PARTITIONS))


async def test_one_holder_takes_every_partition_and_reports_it(pg_url):
    changes: list[tuple[set[int], set[int]]] = []
    leases = await PartitionLeases.start(Db(pg_url), **FAST)
    leases.subscribe(lambda gained, lost: changes.append((gained, lost)))
    try:
        await until(lambda: len(leases.held) == PARTITIONS)
        assert leases.owns(5) and leases.owns(5 + PARTITIONS)
        assert set().union(*(g for g, _ in changes)) == set(range(PARTITIONS))
        assert not any(lost for _, lost in changes)
    finally:
        await leases.close()
    assert leases.held == frozenset() and changes[-1][1]


async def test_two_holders_split_the_partitions_fairly_and_never_overlap(pg_url):
    first = await PartitionLeases.start(Db(pg_url), **FAST)
    await until(lambda: len(first.held) == PARTITIONS)
    overlaps: list[set[int]] = []
    second = await PartitionLeases.start(Db(pg_url), **FAST)
    sampler = asyncio.get_running_loop().create_task(_sample_overlap(first, second, overlaps))
    try:
        await until(lambda: len(first.held) == 32 and len(second.held) == 32)
        assert first.held.isdisjoint(second.held)
        assert first.held | second.held == frozenset(range(PARTITIONS))
        assert first.alive == second.alive == 2
        await asyncio.sleep(1.0)  # stable: nobody keeps trading partitions back and forth
        assert len(first.held) == len(second.held) == 32
    finally:
        sampler.cancel()
        await second.close()
        await first.close()
    assert overlaps == []


async def _sample_overlap(a: PartitionLeases, b: PartitionLeases, overlaps: list[set[int]]) -> None:
    while True:
        if both := set(a.held & b.held):
            overlaps.append(both)
        await asyncio.sleep(0.01)


async def test_a_terminated_connection_loses_everything_at_once_and_the_others_take_over(pg_url, postgres_server):
    holders = [await PartitionLeases.start(Db(pg_url), **FAST) for _ in range(3)]
    try:
        least = PARTITIONS - 2 * fair_share(3)
        sizes = lambda: [len(h.held) for h in holders]  # noqa: E731
        await until(lambda: sum(sizes()) == PARTITIONS and min(sizes()) >= least)
        victim, survivors = holders[0], holders[1:]
        lost_at: list[float] = []
        victim.subscribe(lambda gained, lost: lost and lost_at.append(time.monotonic()))
        victim._task.cancel()  # the victim stays down (as a killed worker would) until we restart its ticks
        admin = await asyncpg.connect(pg_url)
        try:
            killed = time.monotonic()
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", victim.backend_pid)
        finally:
            await admin.close()
        await until(lambda: not victim.held, timeout=2.0)  # the termination listener, not a later tick
        assert lost_at and lost_at[0] - killed < 1.0
        took = await until(
            lambda: sum(len(h.held) for h in survivors) == PARTITIONS and all(len(h.held) == 32 for h in survivors)
        )
        assert took < 10.0
        assert survivors[0].held.isdisjoint(survivors[1].held)
        # The victim reconnects and comes back for a fair share, never overlapping anyone.
        victim._task = asyncio.get_running_loop().create_task(victim._loop())
        await until(lambda: all(len(h.held) >= PARTITIONS - 2 * fair_share(3) for h in holders))
        assert sum(len(h.held) for h in holders) == PARTITIONS
    finally:
        for holder in holders:
            await holder.close()


async def test_a_closed_holder_hands_its_partitions_to_the_other(pg_url):
    first = await PartitionLeases.start(Db(pg_url), **FAST)
    second = await PartitionLeases.start(Db(pg_url), **FAST)
    try:
        await until(lambda: len(first.held) == len(second.held) == 32)
        await first.close()
        took = await until(lambda: len(second.held) == PARTITIONS)
        assert took < 10.0
    finally:
        await second.close()


async def test_a_lock_taken_elsewhere_is_never_held(pg_url):
    """Another session holding partition 7's lock (a stuck worker): nobody else ever runs partition 7."""
    other = await asyncpg.connect(pg_url)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1, 7)", 0x5354_5250)
        leases = await PartitionLeases.start(Db(pg_url), **FAST)
        try:
            await until(lambda: len(leases.held) == PARTITIONS - 1)
            assert 7 not in leases.held and not leases.owns(7 + PARTITIONS)
        finally:
            await leases.close()
    finally:
        await other.close()

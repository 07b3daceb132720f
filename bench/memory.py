"""Memory per connected account: RSS and tracemalloc at 100 and at 1,000 accounts, in one bot process.

Each account is real: a sandbox key registered on the fake Binance (another process), stored sealed through
the vault like /connect does, and one DCA strategy whose first run the engine makes — so the engine unseals
the key itself (and keeps it in memory), the venue's markets are loaded once and shared by the pooled ccxt
instances, an order goes to the fake and back, its fill and alert are recorded, and the strategy's next run
is a job in the running scheduler. With streams on (`--streams on`, the default, as STRATA_STREAMS) every
account is also subscribed to the venue's user-data stream (Binance: up to 1,000 per WebSocket connection) and
measured only once its subscription is live and its backfill done. Per account = (X at 1,000 − X at 100) / 900,
for X = RSS and X = memory traced by tracemalloc (started before anything is built), each after a full garbage
collection.

Ends with one JSON line: {"bench": "memory", "accounts": 1000, "kb_per_account_rss": …,
"kb_per_account_traced": …, "streams": true, …} — target (DESIGN.md section 6): ≤ 150 KB for both.
Run: `python bench/memory.py` (~1 min) or `python bench/memory.py --quick` (10 and 100 accounts).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
import tracemalloc
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    Plan,
    World,
    connect_accounts,
    create_strategies,
    machine,
    open_world,
    pin_to_two_cores,
    result_line,
    run_all,
    say,
    start_fakes,
    unrecorded_lifted_budgets,
    user_of,
)
from bot.engine.context import utc_now

VENUE = "binance"


def rss_kb() -> int:
    """This process's resident set size now (not the peak), in KB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # peak: only where /proc is missing


async def add_accounts(world: World, first: int, count: int) -> None:
    """Connect `count` accounts and make each one's first DCA buy through the engine."""
    account_ids = await connect_accounts(world, range(first, first + count), VENUE)
    plans = [
        Plan(account_id, user_of(first + n), "dca", "BTC/USDT", Decimal(100), {"every": "1d", "amount": "20"})
        for n, account_id in enumerate(account_ids)
    ]
    ids = await create_strategies(world, plans, now=utc_now())
    await run_all(ids, world.engine.run_strategy, label="first buys")
    row = await world.store.db.fetchone(
        "SELECT COUNT(DISTINCT account_id) AS n FROM orders WHERE status = 'closed' AND account_id >= ?",
        (account_ids[0],),
    )
    assert row["n"] == count, f"only {row['n']}/{count} accounts made their order round trip"
    assert len(world.engine.ctx._credentials) == first + count, "the engine must hold every account's key"
    await settle(world, first + count)
    if world.engine.streams is not None:
        await streamed(world, first + count)


async def streamed(world: World, accounts: int) -> None:
    """Wait until every account's stream subscription is live and the backfills it triggered are done."""
    streams = world.engine.streams
    assert streams is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        hub = streams.hubs.get(VENUE)
        if hub is not None and len(hub.live_accounts) >= accounts:
            await streams.settle()
            return
        await asyncio.sleep(0.05)
    live = len(streams.hubs[VENUE].live_accounts) if VENUE in streams.hubs else 0
    raise AssertionError(f"only {live}/{accounts} accounts streamed after 120 s")


async def settle(world: World, strategies: int) -> None:
    """Wait until the re-runs the fills triggered are over and every strategy's next run is a job again."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not world.engine._tasks and world.engine.scheduled_count() >= strategies:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the engine did not settle in 30 s")


def measure(label: str, accounts: int) -> tuple[int, int]:
    gc.collect()
    rss = rss_kb()
    traced = tracemalloc.get_traced_memory()[0] // 1024
    say(f"{label}: {accounts} connected accounts: RSS {rss / 1024:.1f} MB, traced {traced / 1024:.1f} MB")
    return rss, traced


async def run(low: int, high: int, data_dir: Path, urls: str, streams: bool) -> dict[str, object]:
    tracemalloc.start()
    world = await open_world(data_dir, urls, budgets=unrecorded_lifted_budgets(), streams=streams)
    try:
        await world.engine.start()
        await world.gateway.load_markets(VENUE)
        started = time.perf_counter()
        await add_accounts(world, 0, low)
        say(f"connected {low} accounts with one order round trip each in {time.perf_counter() - started:.1f}s")
        rss_low, traced_low = measure("A", low)
        started = time.perf_counter()
        await add_accounts(world, low, high - low)
        say(f"connected {high - low} more in {time.perf_counter() - started:.1f}s")
        rss_high, traced_high = measure("B", high)
        jobs = world.engine.scheduled_count()
        instances = len(world.gateway.pool.instances(VENUE))
        say(f"{jobs} strategies scheduled, {instances} ccxt instances for {VENUE} (master + pooled slots)")
        connections = live = 0
        if world.engine.streams is not None:
            hub = world.engine.streams.hubs[VENUE]
            connections, live = hub.connections, len(hub.live_accounts)
            say(f"streams on: {live} accounts subscribed on {connections} {VENUE} WebSocket connection(s)")
        else:
            say("streams off (STRATA_STREAMS=off): every fill polled")
    finally:
        await world.close()
        tracemalloc.stop()
    span = high - low
    per_account = round((rss_high - rss_low) / span, 1), round((traced_high - traced_low) / span, 1)
    say(f"per connected account{' (streamed)' if streams else ''}: {per_account[0]} KB RSS, "
        f"{per_account[1]} KB traced (target ≤ 150 KB)")
    return {
        "bench": "memory",
        "accounts": high,
        "kb_per_account_rss": per_account[0],
        "kb_per_account_traced": per_account[1],
        "streams": streams,
        "rss_mb": {str(low): round(rss_low / 1024, 1), str(high): round(rss_high / 1024, 1)},
        "traced_mb": {str(low): round(traced_low / 1024, 1), str(high): round(traced_high / 1024, 1)},
        "ccxt_instances": instances,
        "scheduled_jobs": jobs,
        "stream_connections": connections,
        "streamed_accounts": live,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 10 and 100 accounts")
    parser.add_argument("--low", type=int, help="first measurement (default 100, quick 10)")
    parser.add_argument("--high", type=int, help="second measurement (default 1000, quick 100)")
    parser.add_argument("--streams", choices=("on", "off"), default="on",
                        help="STRATA_STREAMS: subscribe every account to the venue's user-data stream (default on)")
    args = parser.parse_args(argv)
    low = args.low or (10 if args.quick else 100)
    high = args.high or (100 if args.quick else 1000)
    fakes = start_fakes(high)
    try:
        say(f"fakes in process {fakes.process.pid}; bench process {pin_to_two_cores()}")
        with tempfile.TemporaryDirectory(prefix="strata-bench-memory-") as tmp:
            result = asyncio.run(run(low, high, Path(tmp), fakes.exchange_urls, args.streams == "on"))
    finally:
        fakes.stop()
    result_line({**result, **machine()})


if __name__ == "__main__":
    main()

"""Fill → alert latency: 1,000 resting orders filled by the fake at random times, detected by fill polling.

Set-up (not measured): the fake venues run in another process with one sandbox key per account; each
account (stored like /connect does) gets `--per-account` grids whose ladder is one resting buy limit 10 %
under the price, placed by a first run of the engine: 100 accounts × 10 = 1,000 resting orders by default.

Measured: a fresh gateway and engine (the real rate budgets, `STRATA_FILL_POLL_SECONDS` = `--poll`) run as
in production — scheduler, grids re-running every minute, the fill poller. The bench fills every resting
order through the fake's control API at a uniformly random time within `--spread` seconds, noting the time
just BEFORE asking (so latency is never understated), and reads the fill alerts the engine enqueues in the
outbox (their `created_at`, written in the fill's own transaction). Latency = enqueue time − fill time;
the alert is not sent here (bench/alerts.py measures sending).

Ends with one JSON line: {"bench": "latency", "poll_s", "p50_s", "p95_s", "max_s", …} where `poll_s` is the
configured STRATA_FILL_POLL_SECONDS and `effective_poll_s` the longest interval the engine stretched it to
for the weight budget. Target (DESIGN.md section 6): p95 ≤ poll_s + 1.
Run: `python bench/latency.py` (~2 min) or `python bench/latency.py --quick` (CI size).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    Fakes,
    Plan,
    RecordingBudgets,
    connect_accounts,
    create_strategies,
    fresh_weight_window,
    grid_params,
    lifted_budgets,
    machine,
    open_world,
    pin_to_two_cores,
    prices,
    result_line,
    run_all,
    say,
    start_fakes,
    user_of,
)
from bot.engine.context import utc_now

SYMBOLS = {"binance": "BTC/USDT", "kraken": "BTC/USDT"}
STRATEGY_IN_ALERT = re.compile(r"#(\d+) ")


async def populate(data_dir: Path, fakes: Fakes, venue: str, accounts: int, per_account: int) -> int:
    world = await open_world(data_dir, fakes.exchange_urls, budgets=lifted_budgets())
    try:
        symbol = SYMBOLS[venue]
        account_ids = await connect_accounts(world, range(accounts), venue)
        price = (await prices(world, venue, [symbol]))[symbol]
        plans = [
            Plan(account_id, user_of(n), "grid", symbol, Decimal(100), grid_params(price))
            for n, account_id in enumerate(account_ids)
            for _ in range(per_account)
        ]
        ids = await create_strategies(world, plans, now=utc_now())
        seconds = await run_all(ids, world.engine.run_strategy, label="ladders")
        row = await world.store.db.fetchone("SELECT COUNT(*) AS n FROM orders WHERE status = 'open'")
        say(f"{len(ids)} grids on {accounts} {venue} accounts armed in {seconds:.1f}s: {row['n']} resting orders")
        assert row["n"] == len(ids), "every grid must rest exactly one buy"
        return row["n"]
    finally:
        await world.close()


async def measure(data_dir: Path, fakes: Fakes, venue: str, poll: float, spread: float,
                  seed: int) -> dict[str, object]:
    budgets = RecordingBudgets()
    world = await open_world(data_dir, fakes.exchange_urls, budgets=budgets, poll_seconds=poll, jitter_seconds=2.0)
    engine = world.engine
    try:
        strategy_of = {
            r["client_order_id"]: r["strategy_id"]
            for r in await world.store.db.fetchall("SELECT client_order_id, strategy_id FROM orders")
        }
        await engine.start()
        resting = [o for o in await fakes.open_orders(venue) if o["client_order_id"] in strategy_of]
        rng = random.Random(seed)
        plan = sorted((rng.uniform(0, spread), o) for o in resting)
        filled_at: dict[int, float] = {}
        longest_interval = engine.effective_poll_interval
        say(f"filling {len(plan)} resting orders at random times over {spread:.0f}s "
            f"(STRATA_FILL_POLL_SECONDS={poll:g})")

        async def fill_all() -> None:
            begin = time.time()
            for offset, order in plan:
                await asyncio.sleep(max(0.0, begin + offset - time.time()))
                remaining = Decimal(order["amount"]) - Decimal(order["filled"])
                at = time.time()
                await fakes.call("POST", f"/books/{venue}/fill", {"order_id": order["id"], "amount": str(remaining)})
                filled_at[strategy_of[order["client_order_id"]]] = at

        filler = asyncio.create_task(fill_all())
        alerts: dict[int, float] = {}
        deadline = time.time() + spread + 60 + 20 * poll
        last_report = time.time()
        while time.time() < deadline:
            await asyncio.sleep(0.2)
            longest_interval = max(longest_interval, engine.effective_poll_interval)
            for row in await world.store.db.fetchall(
                "SELECT text, created_at FROM outbox WHERE kind = 'fill' ORDER BY id"
            ):
                match = STRATEGY_IN_ALERT.search(row["text"])
                if match:
                    alerts.setdefault(int(match.group(1)), datetime.fromisoformat(row["created_at"]).timestamp())
            if time.time() - last_report >= 5:
                last_report = time.time()
                say(f"  {len(filled_at)}/{len(plan)} filled, {len(alerts)} alerts enqueued, poll interval "
                    f"{engine.effective_poll_interval:.1f}s")
            if filler.done() and len(alerts) >= len(plan):
                break
        await filler
        latencies = sorted(alerts[s] - filled_at[s] for s in filled_at if s in alerts)
        missing = len(filled_at) - len(latencies)
        weight = sum(c.weight for c in budgets.charges if c.venue == "binance")
        say(f"{len(latencies)} alerts, {missing} fills without an alert; longest poll interval "
            f"{longest_interval:.1f}s; Binance weight spent {weight}")
    finally:
        await world.close()
    if not latencies:
        raise AssertionError("no fill alert was enqueued")
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]
    return {
        "poll_s": poll,
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(p95, 2),
        "max_s": round(latencies[-1], 2),
        "orders": len(plan),
        "missing_alerts": missing,
        "effective_poll_s": round(longest_interval, 1),
        "min_s": round(latencies[0], 2),
        "binance_weight": weight,
        "measured_to": "alert enqueued in the outbox",
    }


async def run(args: argparse.Namespace, fakes: Fakes) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="strata-bench-latency-") as tmp:
        data_dir = Path(tmp)
        await populate(data_dir, fakes, args.venue, args.accounts, args.per_account)
        if args.venue == "binance":
            await fresh_weight_window(fakes, allowed=1000)
        figures = await measure(data_dir, fakes, args.venue, args.poll, args.spread, args.seed)
        await fakes.close_session()
    return {"bench": "latency", **figures, "venue": args.venue, "accounts": args.accounts, **machine()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 10 accounts × 2 orders, 2 s polling")
    parser.add_argument("--venue", choices=sorted(SYMBOLS), default="kraken")
    parser.add_argument("--accounts", type=int, help="accounts (default 100, quick 10)")
    parser.add_argument("--per-account", type=int, help="resting orders per account (default 10, quick 2)")
    parser.add_argument("--poll", type=float, help="STRATA_FILL_POLL_SECONDS (default 10, quick 2)")
    parser.add_argument("--spread", type=float, help="fills happen within this many seconds (default 60, quick 4)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    args.accounts = args.accounts or (10 if args.quick else 100)
    args.per_account = args.per_account or (2 if args.quick else 10)
    args.poll = args.poll or (2.0 if args.quick else 10.0)
    args.spread = args.spread or (4.0 if args.quick else 60.0)
    fakes = start_fakes(args.accounts)
    try:
        say(f"fakes in process {fakes.process.pid}; bench process {pin_to_two_cores()}")
        result = asyncio.run(run(args, fakes))
    finally:
        fakes.stop()
    result_line(result)


if __name__ == "__main__":
    main()

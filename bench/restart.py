"""Restart: 10,000 strategies on 1,000 accounts with 500 orders left `sent`/`unknown` by a crash.

Set-up (not measured): the fake venues run in another process with one sandbox key per account; each account
is stored like /connect does, gets one grid that runs once (a real resting order: the account's round trip)
and the rest of its 10 strategies, all with their next run an hour away. Then 500 order intents are written
the way the engine writes them (deterministic client order id, reservation) and left as a crash leaves
them: half reached the exchange (they rest on the fake under that client order id) and half never did;
half of each are `sent`, half `unknown`.

Measured: a fresh gateway and engine over the same databases (the real per-IP Binance budget) and the time
`engine.start()` takes — reconcile every unconfirmed order by client order id (adopt the ones found, send
the others with the same id) and schedule one job per active strategy. Then the fake is asked for every
open order: `duplicates` counts client order ids that appear more than once (an order placed twice);
`missing` the intents not on the fake exactly once; `unresolved` orders still unconfirmed in the database.

Ends with one JSON line: {"bench": "restart", "strategies", "intents", "seconds", "duplicates", …} —
targets (DESIGN.md section 6): seconds ≤ 5, duplicates = 0.
Run: `python bench/restart.py` (~1.5 min) or `python bench/restart.py --quick` (CI size).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    Fakes,
    Plan,
    RecordingBudgets,
    World,
    accounts_with_orders,
    connect_accounts,
    cpu_seconds,
    create_strategies,
    fresh_database,
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
from bot.engine.intents import client_order_id
from bot.sandbox.exchanges import sandbox_credentials
from bot.secret import Credentials
from storage.orders import SENT, UNCONFIRMED, UNKNOWN

VENUE = "binance"
SYMBOLS = ("BTC/USDT", "ETH/USDT")
#: What each crashed intent buys: a limit far under the price, so it rests (no fill, no fee lookup).
INTENT_QUOTE = Decimal(20)


async def populate(world: World, accounts: int, per_account: int, intents: int) -> tuple[int, list[str]]:
    """Accounts, strategies (one run each account) and crashed intents; returns (strategies, intent ids)."""
    started = time.perf_counter()
    account_ids = await connect_accounts(world, range(accounts), VENUE)
    price = await prices(world, VENUE, SYMBOLS)
    plans: list[Plan] = []
    for n, account_id in enumerate(account_ids):
        for k in range(per_account):
            symbol = SYMBOLS[k % len(SYMBOLS)]
            if k % 5 == 1:
                plans.append(Plan(account_id, user_of(n), "dca", symbol, Decimal(100), {"every": "1d", "amount": "20"}))
            else:
                plans.append(Plan(account_id, user_of(n), "grid", symbol, Decimal(100), grid_params(price[symbol])))
    ids = await create_strategies(world, plans, now=utc_now())
    say(f"{accounts} accounts and {len(ids)} strategies stored in {time.perf_counter() - started:.1f}s")

    first_of_account = ids[::per_account]
    seconds = await run_all(first_of_account, world.engine.run_strategy, label="round trips")
    with_orders = await accounts_with_orders(world)
    say(f"one grid per account ran in {seconds:.1f}s: {with_orders}/{accounts} accounts hold a resting order")
    assert with_orders == accounts, "every account must have made an order round trip"

    # Crashed intents: on strategies that never ran, one per account (then a second per account if needed).
    spare = [sid for i, sid in enumerate(ids) if i % per_account != 0]
    chosen = [spare[(k % accounts) * (per_account - 1) + k // accounts] for k in range(intents)]
    store, gateway = world.store, world.gateway
    cids: list[str] = []
    reached = 0
    for k, strategy_id in enumerate(chosen):
        strategy = await store.strategies.get(strategy_id)
        account = await store.accounts.get(strategy.account_id)
        price_limit = await gateway.price_to_precision(VENUE, strategy.symbol, price[strategy.symbol] / 2)
        amount = await gateway.amount_to_precision(VENUE, strategy.symbol, INTENT_QUOTE / price_limit * Decimal("1.1"))
        cid = client_order_id(VENUE, strategy, "bench:crash:0")
        async with store.db.transaction() as tx:
            order_id = await store.orders.insert_intent(
                tx, strategy_id=strategy.id, account_id=account.id, client_order_id=cid, tag="bench:crash:0",
                symbol=strategy.symbol, side="buy", type="limit", amount=amount, price=price_limit, cost=None,
                reserved=amount * price_limit * Decimal("1.002"),
            )
        if k % 2 == 0:  # it reached the exchange before the crash
            creds = Credentials(*sandbox_credentials(account_ids.index(account.id)))
            await gateway.create_order(VENUE, creds, strategy.symbol, "buy", "limit", amount=amount,
                                       price=price_limit, client_order_id=cid)
            reached += 1
        await store.orders.set_status(None, order_id, SENT if k % 4 < 2 else UNKNOWN)
        cids.append(cid)
    later = (utc_now() + timedelta(hours=1)).isoformat()
    await store.db.execute("UPDATE strategies SET next_run = ? WHERE status = 'active'", (later,))
    left = await store.orders.in_states(UNCONFIRMED)
    say(f"{len(left)} intents left by the crash ({reached} reached the fake); every next run is an hour away")
    return len(ids), cids


async def measure(data_dir: Path, fakes: Fakes, cids: list[str], database: str | None) -> dict[str, object]:
    budgets = RecordingBudgets()
    world = await open_world(data_dir, fakes.exchange_urls, budgets=budgets, database=database)
    try:
        active = await world.store.db.fetchone("SELECT COUNT(*) AS n FROM strategies WHERE status = 'active'")
        reconcile = world.engine.reconcile
        reconcile_seconds = 0.0

        async def timed_reconcile() -> int:
            nonlocal reconcile_seconds
            begin = time.perf_counter()
            try:
                return await reconcile()
            finally:
                reconcile_seconds = time.perf_counter() - begin

        world.engine.reconcile = timed_reconcile  # type: ignore[method-assign]
        cpu_bot, cpu_fakes = cpu_seconds(), cpu_seconds(fakes.process.pid)
        started = time.perf_counter()
        await world.engine.start()
        seconds = time.perf_counter() - started
        cpu_bot, cpu_fakes = cpu_seconds() - cpu_bot, cpu_seconds(fakes.process.pid) - cpu_fakes
        jobs = world.engine.scheduled_count()
        unresolved = len(await world.store.orders.in_states(UNCONFIRMED))
        statuses = Counter(
            r["status"] for r in await world.store.db.fetchall(
                f"SELECT status FROM orders WHERE client_order_id IN ({', '.join('?' for _ in cids)})",  # noqa: S608
                cids,
            )
        )
        weight = sum(c.weight for c in budgets.charges)
        private = Counter(f"{c.api} {c.path}" for c in budgets.charges if c.private)
        say(f"engine.start(): {len(cids)} intents reconciled and {jobs} strategies scheduled in {seconds:.2f}s "
            f"(reconcile {reconcile_seconds:.2f}s); CPU: bot {cpu_bot:.1f}s, fakes {cpu_fakes:.1f}s")
        say(f"intents now {dict(statuses)}; {unresolved} still unconfirmed; requests {dict(private)}, "
            f"Binance weight {weight}")
    finally:
        await world.close()
    on_fake = Counter(o["client_order_id"] for o in await fakes.open_orders(VENUE))
    duplicates = sum(n - 1 for n in on_fake.values() if n > 1)
    missing = sum(1 for cid in cids if on_fake[cid] != 1)
    say(f"on the fake: {sum(on_fake.values())} open orders, {duplicates} duplicated client order ids, "
        f"{missing} intents not there exactly once")
    return {
        "seconds": round(seconds, 2),
        "reconcile_seconds": round(reconcile_seconds, 2),
        "cpu_bot_s": round(cpu_bot, 1),
        "cpu_fakes_s": round(cpu_fakes, 1),
        "duplicates": duplicates,
        "missing": missing,
        "unresolved": unresolved,
        "jobs_scheduled": jobs,
        "active_strategies": active["n"],
        "binance_weight": weight,
        "requests": dict(private),
    }


async def run(args: argparse.Namespace, fakes: Fakes) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="strata-bench-restart-") as tmp:
        data_dir = Path(tmp)
        args.database = await fresh_database(args.database)
        world = await open_world(data_dir, fakes.exchange_urls, budgets=lifted_budgets(), database=args.database)
        try:
            strategies, cids = await populate(world, args.accounts, args.per_account, args.intents)
        finally:
            await world.close()
        await fresh_weight_window(fakes, allowed=2500)
        figures = await measure(data_dir, fakes, cids, args.database)
        await fakes.close_session()
    return {"bench": "restart", "strategies": strategies, "intents": len(cids), **figures,
            "accounts": args.accounts, "database": "postgresql" if args.database else "sqlite", **machine()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 50 accounts × 2 strategies, 20 intents")
    parser.add_argument("--accounts", type=int, help="connected accounts (default 1000, quick 50)")
    parser.add_argument("--per-account", type=int, help="strategies per account (default 10, quick 2)")
    parser.add_argument("--intents", type=int, help="orders left sent/unknown (default 500, quick 20)")
    parser.add_argument("--database", help="postgresql://… admin URL: run on a new database there (default SQLite)")
    args = parser.parse_args(argv)
    args.accounts = args.accounts or (50 if args.quick else 1000)
    args.per_account = args.per_account or (2 if args.quick else 10)
    args.intents = args.intents or (20 if args.quick else 500)
    if args.per_account < 2 or args.intents > args.accounts * (args.per_account - 1):
        parser.error("need at least 2 strategies per account and one spare strategy per intent")
    fakes = start_fakes(args.accounts)
    try:
        say(f"fakes in process {fakes.process.pid}; bench process {pin_to_two_cores()}")
        result = asyncio.run(run(args, fakes))
    finally:
        fakes.stop()
    result_line(result)


if __name__ == "__main__":
    main()

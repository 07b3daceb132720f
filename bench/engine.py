"""Engine scale: 1,000 connected accounts × 10 strategies, all due in the same round, against the fakes.

Set-up (not measured): the fake venues start in another process with one sandbox key per account; each
account is stored like /connect does (key sealed by the vault) with 2 DCA (BTC/USDT, ETH/USDT, a market buy
at once) and 8 grids (one resting buy limit each, 10 % under the price); every strategy runs once, so every
account has made real order round trips and holds resting orders.

Measured: a fresh gateway and engine (the real per-IP Binance budget, jitter 0) over the same databases, with
every strategy's next run set to now and one DCA in `--due-share` owing its next buy. `engine.start()`
reconciles, schedules 10,000 jobs and the scheduler fires them together; the engine unseals each account's key
itself. Figures:

- `evals_per_s`: strategy runs ÷ seconds from the first run's start to the last run's end;
- `md_requests_per_key`: ticker requests sent per (venue, symbol) ÷ the rounds (scheduler seconds, the
  runner's round id) in which strategies asked for that key: the cache's contract is one request per key
  per round however many strategies share it (10,000 due strategies take several seconds: several rounds);
- `private_requests_per_round`: signed requests during the round (balances and orders of the due DCAs, and
  the fill poller's order lookups);
- `binance_weight_per_min`: the most weight charged in one calendar minute (Binance's accounting) over the
  measured window (the round, then fill polling), by the bot's own budget (`binance_weight_any_60s`: any 60 s,
  straddling two minutes); `fake_weight_by_ip` is the fake's own per-IP count for its current minute;
- `effective_poll_s`: the fill poll interval after the engine stretched it for the weight budget.

Targets (DESIGN.md section 6): evals_per_s ≥ 1,000, md_requests_per_key = 1.0, binance_weight_per_min < 6,000.
Run: `python bench/engine.py` (~2 min) or `python bench/engine.py --quick` (CI size).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    Plan,
    RecordingBudgets,
    World,
    accounts_with_orders,
    connect_accounts,
    cpu_seconds,
    create_strategies,
    fresh_weight_window,
    grid_params,
    lifted_budgets,
    machine,
    open_world,
    order_round_trips,
    pin_to_two_cores,
    prices,
    result_line,
    run_all,
    say,
    start_fakes,
    user_of,
    weight_per_minute,
    weight_per_sliding_minute,
)
from bot import memory
from bot.engine.context import utc_now
from bot.engine.runner import RunResult
from storage.models import dumps

VENUE = "binance"
SYMBOLS = ("BTC/USDT", "ETH/USDT")
DCA_EVERY = timedelta(days=1)


def plans_for(account_ids: list[int], price: dict[str, Decimal], per_account: int) -> list[Plan]:
    """Per account: one DCA per symbol, then grids (alternating symbols) up to `per_account` strategies."""
    plans = []
    for n, account_id in enumerate(account_ids):
        user_id = user_of(n)
        for k in range(per_account):
            symbol = SYMBOLS[k % len(SYMBOLS)]
            if k < len(SYMBOLS):
                plans.append(Plan(account_id, user_id, "dca", symbol, Decimal(100), {"every": "1d", "amount": "20"}))
            else:
                plans.append(Plan(account_id, user_id, "grid", symbol, Decimal(100), grid_params(price[symbol])))
    return plans


async def populate(data_dir: Path, urls: str, accounts: int, per_account: int) -> tuple[int, int]:
    """Connect the accounts, create their strategies and run each once; return (strategies, orders)."""
    world = await open_world(data_dir, urls, budgets=lifted_budgets())
    try:
        started = time.perf_counter()
        account_ids = await connect_accounts(world, range(accounts), VENUE)
        say(f"connected {len(account_ids)} accounts (keys sealed by the vault) in "
            f"{time.perf_counter() - started:.1f}s")
        price = await prices(world, VENUE, SYMBOLS)
        say(f"prices on the fake: {', '.join(f'{s} {p}' for s, p in price.items())}")
        ids = await create_strategies(world, plans_for(account_ids, price, per_account), now=utc_now())
        seconds = await run_all(ids, world.engine.run_strategy, label="first runs")
        statuses = await order_round_trips(world)
        with_orders = await accounts_with_orders(world)
        say(f"first run of {len(ids)} strategies in {seconds:.1f}s: orders {statuses}, "
            f"{with_orders}/{accounts} accounts made order round trips")
        assert with_orders == accounts, "every account must have made an order round trip"
        return len(ids), sum(statuses.values())
    finally:
        await world.close()


async def make_due(data_dir: Path, urls: str, due_share: float) -> int:
    """Every active strategy due now; one DCA in 1/due_share owes its next buy. Returns how many owe."""
    world = await open_world(data_dir, urls)
    try:
        now = utc_now()
        store = world.store
        rows = await store.db.fetchall("SELECT id, kind, state FROM strategies WHERE status = 'active'")
        dca = [r for r in rows if r["kind"] == "dca"]
        step = max(1, round(1 / due_share)) if due_share > 0 else 0
        owing = dca[::step] if step else []
        async with store.db.transaction() as tx:
            await tx.execute("UPDATE strategies SET next_run = ?", (now.isoformat(),))
            for row in owing:
                state = json.loads(row["state"])
                start = datetime.fromisoformat(state["start"]) - DCA_EVERY
                state["start"] = start.isoformat()
                await tx.execute("UPDATE strategies SET state = ? WHERE id = ?", (dumps(state), row["id"]))
        return len(owing)
    finally:
        await world.close()


async def measure(data_dir: Path, urls: str, fakes, window: float) -> dict[str, object]:
    budgets = RecordingBudgets()
    world: World = await open_world(data_dir, urls, budgets=budgets)
    engine = world.engine
    runs: list[tuple[int, float, float]] = []
    first_run: dict[int, float] = {}
    expected = len([1 for r in await world.store.db.fetchall("SELECT 1 FROM strategies WHERE status='active'")])
    run = engine.runner.run
    all_ran = asyncio.Event()

    async def timed(strategy_id: int) -> RunResult:
        started = time.time()
        try:
            return await run(strategy_id)
        finally:
            runs.append((strategy_id, started, time.time()))
            if strategy_id not in first_run:
                first_run[strategy_id] = started
                if len(first_run) >= expected:
                    all_ran.set()

    engine.runner.run = timed  # type: ignore[method-assign]
    rounds_used: dict[tuple[str, str], set[object]] = defaultdict(set)
    fetch_ticker = world.gateway.fetch_ticker

    ticker_waits: list[float] = []

    async def counted_ticker(venue: str, symbol: str, round_id: object = None):  # the rounds each key served
        rounds_used[(venue, symbol)].add(round_id if round_id is not None else int(time.time()))
        started = time.perf_counter()
        try:
            return await fetch_ticker(venue, symbol, round_id)
        finally:
            ticker_waits.append(time.perf_counter() - started)

    world.gateway.fetch_ticker = counted_ticker  # type: ignore[method-assign]
    try:
        cpu_bot, cpu_fakes = cpu_seconds(), cpu_seconds(fakes.process.pid)
        t_start = time.time()
        await engine.start()
        t_started = time.time()
        say(f"engine.start(): reconciled and scheduled {expected} strategies in {t_started - t_start:.2f}s")
        last_report = time.time()
        dumped = False
        while not all_ran.is_set():
            try:
                await asyncio.wait_for(all_ran.wait(), timeout=1.0)
            except TimeoutError:
                pass
            if time.time() - last_report >= 1.0:
                last_report = time.time()
                say(f"  round: {len(first_run)}/{expected} strategies evaluated")
                if last_report - t_start > 30 and not dumped:  # a straggler: show where its run waits
                    dumped = True
                    for task in [t for t in asyncio.all_tasks() if t.get_name().startswith("strategy:")][:3]:
                        say(f"{task.get_name()} waits in: {' <- '.join(_awaiting(task))}")
        cpu_bot, cpu_fakes = cpu_seconds() - cpu_bot, cpu_seconds(fakes.process.pid) - cpu_fakes
        wall = time.time() - t_start
        first_of_round = [r for r in runs if first_run.get(r[0]) == r[1]]
        round_start = min(r[1] for r in first_of_round)
        round_end = max(r[2] for r in first_of_round)
        round_seconds = round_end - round_start
        evals_per_s = len(first_of_round) / round_seconds
        say(f"round: {len(first_of_round)} evaluations in {round_seconds:.2f}s = {evals_per_s:.0f}/s "
            f"(+{len(runs) - len(first_of_round)} re-runs after fills)")
        slowest = sorted(first_of_round, key=lambda r: r[1] - r[2])[:3]
        say(f"slowest runs: {', '.join(f'strategy {sid} {end - start:.2f}s' for sid, start, end in slowest)}; "
            f"slowest ticker answer {max(ticker_waits, default=0.0):.2f}s")
        say(f"CPU while the round ran ({wall:.1f}s): bot process {cpu_bot:.1f}s ({cpu_bot / wall:.0%} of a core), "
            f"fakes {cpu_fakes:.1f}s ({cpu_fakes / wall:.0%})")
        md = engine.gateway.market_data.requests_per_key
        per_key = {
            f"{venue}:{symbol}:ticker": md[(venue, symbol, "ticker")] / len(rounds)
            for (venue, symbol), rounds in sorted(rounds_used.items())
        }
        rounds_spanned = len(set().union(*rounds_used.values()))
        round_charges = budgets.between(round_start, round_end + 0.001)
        private_round = [c for c in round_charges if c.private]
        by_path = Counter(f"{c.api} {c.path}" for c in private_round)
        say(f"market data requests per key per round: {per_key} (the round spanned {rounds_spanned} seconds)")
        say(f"private requests during the round: {len(private_round)} {dict(by_path)}")
        remaining = round_start + window - time.time()
        if remaining > 0:
            say(f"fill polling for {remaining:.0f}s more (weight window {window:.0f}s)...")
            await asyncio.sleep(remaining)
        charges = budgets.between(round_start, round_start + window)
        weight = weight_per_minute(charges)
        sliding = weight_per_sliding_minute(charges)
        fake_after = await fakes.stats(VENUE)
        effective = engine.effective_poll_interval
        live = await world.store.db.fetchone(
            "SELECT COUNT(*) AS n FROM orders WHERE status IN ('open', 'unknown')"
        )
        say(f"binance weight per calendar minute (bot's budget): {weight} (any 60 s: {sliding}); fake's count: "
            f"{fake_after['weight_by_ip']}; budget waits: "
            f"{sum(b.waits for b in budgets.budgets().values())}")
        say(f"fill poll: {live['n']} live orders, interval {engine.poll_interval:.0f}s stretched to {effective:.1f}s")
        return {
            "evals_per_s": round(evals_per_s, 1),
            "md_requests_per_key": round(max(per_key.values()), 3),
            "private_requests_per_round": len(private_round),
            "binance_weight_per_min": weight,
            "effective_poll_s": round(effective, 1),
            "round_seconds": round(round_seconds, 2),
            "start_seconds": round(t_started - t_start, 2),
            "md_requests_by_key": per_key,
            "private_by_endpoint": dict(by_path),
            "live_orders": live["n"],
            "round_cpu_bot_s": round(cpu_bot, 1),
            "round_cpu_fakes_s": round(cpu_fakes, 1),
            "weight_window_s": window,
            "binance_weight_any_60s": sliding,
            "fake_weight_by_ip": fake_after["weight_by_ip"],
        }
    finally:
        await world.close()


def _awaiting(task: asyncio.Task) -> list[str]:
    """Where a task waits: its coroutine and every coroutine it awaits, innermost last (file:line function)."""
    chain, coro = [], task.get_coro()
    while coro is not None and getattr(coro, "cr_frame", None) is not None:
        frame = coro.cr_frame
        chain.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = coro.cr_await
    if coro is not None:
        chain.append(repr(coro)[:120])
    return chain


async def main_async(args: argparse.Namespace, fakes) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="strata-bench-engine-") as tmp:
        data_dir = Path(tmp)
        strategies, orders = await populate(data_dir, fakes.exchange_urls, args.accounts, args.per_account)
        owing = await make_due(data_dir, fakes.exchange_urls, args.due_share)
        await fresh_weight_window(fakes, allowed=3000)
        say(f"measured round: {strategies} strategies due now, {owing} DCA owing a buy")
        if args.profile:
            from pyinstrument import Profiler  # investigation only: `pip install -e .[bench]`

            with Profiler(async_mode=args.profile_async, interval=0.0005) as profiler:
                figures = await measure(data_dir, fakes.exchange_urls, fakes, args.window)
            Path(args.profile).write_text(profiler.output_text(unicode=False))  # noqa: ASYNC240 - after the run
            say(f"profile of the measured phase written to {args.profile}")
        else:
            figures = await measure(data_dir, fakes.exchange_urls, fakes, args.window)
        await fakes.close_session()
        return {"bench": "engine", "strategies": strategies, "accounts": args.accounts, **figures,
                "dca_buys_in_round": owing, "setup_orders": orders, **machine()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 50 accounts × 2 strategies, 5 s window")
    parser.add_argument("--accounts", type=int, help="connected accounts (default 1000, quick 50)")
    parser.add_argument("--due-share", type=float, default=0.05, help="share of DCAs owing a buy in the round")
    parser.add_argument("--per-account", type=int, help="strategies per account (default 10, quick 2)")
    parser.add_argument("--window", type=float, help="seconds of weight measurement (default 60, quick 5)")
    parser.add_argument("--profile", metavar="PATH", help="write a pyinstrument profile of the measured phase")
    parser.add_argument(
        "--profile-async", choices=("enabled", "disabled"), default="enabled",
        help="pyinstrument's async mode: 'enabled' charges awaits to the coroutine that waits (wall time), "
             "'disabled' shows what the event loop's thread really runs (CPU, incl. the loop's own overhead)",
    )
    parser.add_argument("--database", metavar="URL", help="engine workers on PostgreSQL (bench/workers.py): a "
                        "postgresql:// server URL whose user may create a database, or `auto`")
    parser.add_argument("--workers", default="1,2", help="with --database: worker counts to measure (1,2)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="with --database: measured rounds per worker count; the median is reported (3)")
    parser.add_argument("--real-weight", action="store_true",
                        help="with --database: Binance's real per-IP weight limit (default lifted: bench/workers.py)")
    args = parser.parse_args(argv)
    args.accounts = args.accounts or (50 if args.quick else 1000)
    args.per_account = args.per_account or (2 if args.quick else 10)
    args.window = args.window or (5.0 if args.quick else 60.0)
    if args.database:
        from bench.workers import main as workers_main

        workers_main(args)
        return
    memory.enable()  # the engine as `python -m bot run` or `worker` runs it (bot/memory.py)
    fakes = start_fakes(args.accounts)
    try:
        say(f"fakes in process {fakes.process.pid}; bench process {pin_to_two_cores()}")
        result = asyncio.run(main_async(args, fakes))
    finally:
        fakes.stop()
    result_line(result)


if __name__ == "__main__":
    main()

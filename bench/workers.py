"""Engine workers on PostgreSQL: strategy evaluations per second with 1 and with 2 worker processes.

The set-up of `bench/engine.py` (1,000 accounts × 10 strategies against the fakes, each strategy run once) on a
fresh PostgreSQL database; then, for each worker count N, every active strategy is made due now and N worker
processes (each: partition leases on its own lock connection, an engine owning its partitions, the per-IP
budget shared through the database) wait until the 64 partitions are split fairly, start together, and run
every strategy they own once. `evals_per_s` = all their first runs ÷ seconds from the first run's start (any
worker) to the last run's end (any worker). One unmeasured warm-up round comes first (the round after set-up has
extra work, below); then each worker count is measured `--repeat` times (3), in alternating order, and its median
is reported: on a small shared machine one round's figure varies by ±20 %. Target (DESIGN.md section 6): 2 workers
≥ 1.6 × 1 worker.

Binance's weight limit is lifted here (as the fakes' is) unless `--real-weight`: every worker of this bench goes
out through 127.0.0.1, so they share ONE per-IP budget, and with Binance's real 6,000/min the round is bound by
that budget (the owing DCAs' balance reads and the fill polls of 1,000 accounts), not by the workers: more
workers behind one address cannot make more requests. What this measures is the engine's own throughput.

Run: `python bench/engine.py --database postgresql://USER@HOST:PORT/DB --workers 1,2` (a database named
`strata_bench_<pid>` is created on that server and dropped after: the URL's user needs CREATEDB), or
`--database auto` for a throwaway server from this machine's PostgreSQL binaries (tests/postgres_server.py).
The workers are pinned with the bench to two cores; the fakes and the database server are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    LIFTED,
    RecordingBudgets,
    accounts_with_orders,
    connect_accounts,
    cpu_seconds,
    create_strategies,
    fresh_weight_window,
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
)
from bot import memory
from bot.engine.context import utc_now
from bot.exchanges.rate_budget import SharedIpBudget
from storage.models import dumps
from storage.partitions import PARTITIONS, PartitionLeases, fair_share
from storage.strategies import ACTIVE

LEASES = {"tick_seconds": 0.5, "alive_seconds": 3.0, "handover_seconds": 0.5}


# --------------------------------------------------------------------------------------------- parent side
async def populate(database: str, data_dir: Path, urls: str, accounts: int, per_account: int) -> int:
    from bench.engine import SYMBOLS, VENUE, plans_for

    world = await open_world(data_dir, urls, budgets=lifted_budgets(), database=database)
    try:
        account_ids = await connect_accounts(world, range(accounts), VENUE)
        price = await prices(world, VENUE, SYMBOLS)
        ids = await create_strategies(world, plans_for(account_ids, price, per_account), now=utc_now())
        seconds = await run_all(ids, world.engine.run_strategy, label="first runs")
        say(f"first run of {len(ids)} strategies in {seconds:.1f}s: orders {await order_round_trips(world)}, "
            f"{await accounts_with_orders(world)}/{accounts} accounts made order round trips")
        return len(ids)
    finally:
        await world.close()


async def make_due(database: str, data_dir: Path, urls: str, due_share: float) -> int:
    """As bench/engine.py: every active strategy due now, one DCA in 1/due_share owing its next buy."""
    from bench.engine import DCA_EVERY

    world = await open_world(data_dir, urls, database=database)
    try:
        now, store = utc_now(), world.store
        rows = await store.db.fetchall("SELECT id, kind, state FROM strategies WHERE status = 'active' ORDER BY id")
        dca = [r for r in rows if r["kind"] == "dca"]
        step = max(1, round(1 / due_share)) if due_share > 0 else 0
        owing = dca[::step] if step else []
        async with store.db.transaction() as tx:
            await tx.execute("UPDATE strategies SET next_run = ?", (now.isoformat(),))
            for row in owing:
                state = json.loads(row["state"])
                state["start"] = (datetime.fromisoformat(state["start"]) - DCA_EVERY).isoformat()
                await tx.execute("UPDATE strategies SET state = ? WHERE id = ?", (dumps(state), row["id"]))
        return len(owing)
    finally:
        await world.close()


async def _line(process: asyncio.subprocess.Process, prefix: str, seconds: float) -> str:
    assert process.stdout is not None
    while True:
        raw = await asyncio.wait_for(process.stdout.readline(), seconds)
        if not raw:
            raise RuntimeError(f"a worker ended before saying {prefix}")
        line = raw.decode().strip()
        if line.startswith(prefix):
            return line.removeprefix(prefix).strip()


def postgres_cpu_seconds() -> float:
    """CPU used so far by every PostgreSQL server process on this machine (its backends included)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() == "postgres":
                    total += cpu_seconds(int(proc.name))
    return total


async def measure(
    database: str, data_dir: Path, fakes: Any, workers: int, real_weight: bool
) -> dict[str, Any]:
    urls = fakes.exchange_urls
    """Start `workers` worker processes, wait for the fair split, let them run every due strategy once."""
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--child", database, str(data_dir), urls, str(workers),
            "real" if real_weight else "lifted",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(workers)
    ]
    try:
        held = [int(await _line(p, "READY", 120)) for p in processes]
        say(f"{workers} worker(s) ready, partitions held: {held}")
        cpu_db, cpu_fakes = postgres_cpu_seconds(), cpu_seconds(fakes.process.pid)
        for p in processes:
            p.stdin.write(b"GO\n")  # type: ignore[union-attr]
            await p.stdin.drain()  # type: ignore[union-attr]
        done = [json.loads(await _line(p, "DONE", 900)) for p in processes]
        cpu_db, cpu_fakes = postgres_cpu_seconds() - cpu_db, cpu_seconds(fakes.process.pid) - cpu_fakes
        for p in processes:
            p.stdin.write(b"STOP\n")  # type: ignore[union-attr]
            await p.stdin.drain()  # type: ignore[union-attr]
        for p in processes:
            await asyncio.wait_for(p.wait(), 60)
    finally:
        for p in processes:
            if p.returncode is None:
                p.kill()
                await p.wait()
    runs = sum(d["runs"] for d in done)
    seconds = max(d["last_end"] for d in done) - min(d["first_start"] for d in done)
    evals = runs / seconds
    say(f"{workers} worker(s): {runs} evaluations in {seconds:.2f}s = {evals:.0f}/s "
        f"(per worker: {[d['runs'] for d in done]}, {[round(d['seconds'], 2) for d in done]}s; "
        f"budget waits {[d['budget_waits'] for d in done]}, leases {[d['leases'] for d in done]})")
    cpu_workers = [round(d["cpu"], 1) for d in done]
    cpu_round = [round(d["cpu_round"], 2) for d in done]
    per_1000 = sum(d["cpu_round"] for d in done) / runs * 1000
    say(f"  CPU from GO to the last DONE: workers {cpu_workers}s, PostgreSQL {cpu_db:.1f}s, fakes {cpu_fakes:.1f}s "
        f"(the machine's {os.cpu_count()} cores offer {seconds * (os.cpu_count() or 1):.1f}s)")
    say(f"  workers' CPU from their first run to their last: {cpu_round}s = {per_1000:.2f}s per 1,000 evaluations")
    # `active`: the strategies still running (a DCA whose budget is spent finishes: later rounds have fewer).
    return {"workers": workers, "evals_per_s": round(evals, 1), "runs": runs, "active": sum(d["owned"] for d in done),
            "round_seconds": round(seconds, 2),
            "per_worker_runs": [d["runs"] for d in done], "cpu_workers_s": cpu_workers,
            "cpu_round_s": cpu_round, "worker_cpu_s_per_1000_evals": round(per_1000, 3),
            "cpu_postgres_s": round(cpu_db, 1), "cpu_fakes_s": round(cpu_fakes, 1)}


async def _fresh_database(url: str) -> tuple[str, Any]:
    """Create `strata_bench_<pid>` on the server of `url` (or a throwaway server for "auto"); return its URL
    and what to call to clean up."""
    import asyncpg

    server = folder = None
    if url == "auto":
        from tests.postgres_server import PostgresServer

        folder = Path(tempfile.mkdtemp(prefix="strata-bench-pg-"))
        server = PostgresServer.start(folder)
        url = server.admin_url
    name = f"strata_bench_{os.getpid()}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()

    async def cleanup() -> None:
        admin = await asyncpg.connect(url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        if server is not None:
            server.stop()
            shutil.rmtree(folder, ignore_errors=True)

    return url.rsplit("/", 1)[0] + "/" + name, cleanup


async def run_workers_bench(args: Any, fakes: Any) -> dict[str, Any]:
    counts = [int(n) for n in str(args.workers).split(",")]
    database, cleanup = await _fresh_database(args.database)
    try:
        with tempfile.TemporaryDirectory(prefix="strata-bench-workers-") as tmp:
            data_dir = Path(tmp)  # the key store (SQLite) the workers share; the main database is PostgreSQL
            strategies = await populate(database, data_dir, fakes.exchange_urls, args.accounts, args.per_account)

            async def round_with(workers: int, label: str) -> dict[str, Any]:
                owing = await make_due(database, data_dir, fakes.exchange_urls, args.due_share)
                await fresh_weight_window(fakes, allowed=3000)
                say(f"{label} round with {workers} worker(s): {strategies} strategies due now, {owing} DCA owing")
                return await measure(database, data_dir, fakes, workers, args.real_weight)

            # The round after set-up also records what the set-up's orders did meanwhile (about 2,000 strategies
            # write a new state once); every later round does the same work, so only those are compared.
            await round_with(max(counts), "warm-up (not counted)")
            samples: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
            for repetition in range(args.repeat):  # alternating order, so a drift of the machine favours none
                for workers in counts if repetition % 2 == 0 else counts[::-1]:
                    samples[workers].append(await round_with(workers, f"measured ({repetition + 1}/{args.repeat})"))
            await fakes.close_session()
    finally:
        await cleanup()
    figures = [_median_of(n, samples[n]) for n in counts]
    result: dict[str, Any] = {"bench": "engine-workers", "backend": "postgresql", "strategies": strategies,
                              "accounts": args.accounts, "binance_weight": "real" if args.real_weight else "lifted",
                              "repeats": args.repeat, "by_workers": figures}
    for figure in figures:
        say(f"{figure['workers']} worker(s): median {figure['evals_per_s']:.0f}/s of {figure['samples']}")
    by = {f["workers"]: f["evals_per_s"] for f in figures}
    if 1 in by and 2 in by:
        result["speedup_2_vs_1"] = round(by[2] / by[1], 2)
        say(f"2 workers vs 1: {result['speedup_2_vs_1']}× (medians; target ≥ 1.6×)")
    return {**result, **machine()}


def _median_of(workers: int, rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median evaluations/s (its CPU figures with it), and every round's figure."""
    ordered = sorted(rounds, key=lambda r: r["evals_per_s"])
    return {**ordered[(len(ordered) - 1) // 2], "samples": [r["evals_per_s"] for r in rounds]}


def main(args: Any) -> None:
    """Entry from bench/engine.py when `--database` is given."""
    fakes = start_fakes(args.accounts)
    try:
        say(f"fakes in process {fakes.process.pid}; bench process {pin_to_two_cores()}")
        result = asyncio.run(run_workers_bench(args, fakes))
    finally:
        fakes.stop()
    result_line(result)


# ---------------------------------------------------------------------------------------------- worker side
async def child(database: str, data_dir: Path, urls: str, workers: int, real_weight: bool) -> None:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    leases = await PartitionLeases.start(database, **LEASES)
    fair = (fair_share(workers), PARTITIONS - fair_share(workers) * (workers - 1))
    stable = 0
    while stable < 3:  # the split settled: everyone's share, for a few ticks
        await asyncio.sleep(LEASES["tick_seconds"])
        stable = stable + 1 if leases.alive == workers and len(leases.held) in fair else 0
    budgets = RecordingBudgets() if real_weight else RecordingBudgets(limits=LIFTED)
    world = await open_world(data_dir, urls, budgets=budgets, database=database, ownership=leases)
    budgets.shared = SharedIpBudget(world.store.ip_budgets)
    engine = world.engine
    owned = [s.id for s in await world.store.strategies.list_by_status((ACTIVE,)) if leases.owns(s.account_id)]
    expected = len(owned)
    print(f"READY {len(leases.held)}", flush=True)
    await stdin.readline()  # GO
    cpu = cpu_seconds()
    first: dict[int, tuple[float, float]] = {}
    all_ran = asyncio.Event()
    run = engine.runner.run
    cpu_round: list[float] = []  # this process's CPU at its first run's start and at its last run's end

    async def timed(strategy_id: int):
        started = time.time()
        if not cpu_round:
            cpu_round.append(cpu_seconds())
        try:
            return await run(strategy_id)
        finally:
            if strategy_id not in first:
                first[strategy_id] = (started, time.time())
                if len(first) >= expected:
                    cpu_round.append(cpu_seconds())
                    all_ran.set()

    engine.runner.run = timed  # type: ignore[method-assign]
    await engine.start()
    if expected:
        await all_ran.wait()
    starts = [s for s, _ in first.values()] or [time.time()]
    ends = [e for _, e in first.values()] or [time.time()]
    weight = list(budgets.budgets().values())
    done = {
        "runs": len(first), "owned": expected, "first_start": min(starts), "last_end": max(ends),
        "seconds": max(ends) - min(starts), "budget_waits": sum(b.waits for b in weight),
        "leases": sum(b.leases for b in weight), "cpu": cpu_seconds() - cpu,
        "cpu_round": cpu_round[-1] - cpu_round[0] if len(cpu_round) == 2 else 0.0,
    }
    print("DONE " + json.dumps(done), flush=True)
    await stdin.readline()  # STOP: hold the partitions until every worker is done
    with contextlib.suppress(Exception):
        await world.close()
    await leases.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        memory.enable()  # an engine worker, as `python -m bot worker` runs it
        database, data_dir, urls, workers, weight = sys.argv[2:7]
        asyncio.run(child(database, Path(data_dir), urls, int(workers), weight == "real"))

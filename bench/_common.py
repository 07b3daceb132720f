"""What every benchmark shares: the fake venues in another process, two-core pinning, and a real bot world.

The bot's side is what production runs — the main database and key store on disk, credentials sealed by the
vault and unsealed by the engine itself, one `ExchangeGateway` (shared ccxt instances per venue) and the
`Engine` — with Telegram left out (alerts stay in the outbox, where their enqueue time is read).

The fakes run in a child process started BEFORE this process pins itself, so they are not confined to the
bot's two cores (on a two-core machine they share them anyway; the benchmarks print which). The child is
this module (`python -m bench._common fakes …`): the launcher of `bot.sandbox.exchanges` plus
`--weight-limit`, because populating 1,000 accounts (every grid arming its ladder, every DCA its first buy)
spends far more than one minute of Binance weight; the measured phases run on a fresh gateway with the
real per-IP budget, which is what `binance_weight_per_min` reports.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file (`python bench/engine.py`): make the repository importable
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bot.config import load_settings  # noqa: E402
from bot.engine.scheduler import Engine  # noqa: E402
from bot.exchanges.errors import RetryPolicy  # noqa: E402
from bot.exchanges.gateway import ExchangeGateway  # noqa: E402
from bot.exchanges.rate_budget import RateBudgets, request_weight  # noqa: E402
from bot.sandbox.exchanges import sandbox_credentials  # noqa: E402
from bot.secret import Credentials  # noqa: E402
from bot.strategies import STRATEGIES  # noqa: E402
from bot.vault import Vault  # noqa: E402
from storage.store import Store  # noqa: E402

MASTER_KEY = bytes(range(32))
MASTER_KEY_B64 = base64.b64encode(MASTER_KEY).decode()
FIRST_USER = 5_000_000
#: Per-minute weight the fakes allow while the benchmarks populate accounts (see the module docstring).
SETUP_WEIGHT_LIMIT = 100_000_000


# ------------------------------------------------------------------------------------------------ machine
def pin_to_two_cores() -> str:
    """Pin this process to two cores (DESIGN.md section 6); return what was done, for the printout."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity on this platform)"
    cores = sorted(os.sched_getaffinity(0))[:2]
    os.sched_setaffinity(0, cores)
    return f"pinned to cores {cores} with sched_setaffinity (machine has {os.cpu_count()} cores)"


def machine() -> dict[str, Any]:
    """nproc, CPU model and Python version, for the README's table."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version()}


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) used so far by this process or by `pid` (Linux /proc; 0 elsewhere)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def say(text: str) -> None:
    print(text, flush=True)


# ------------------------------------------------------------------------------------------------ the fakes
@dataclass
class Fakes:
    """The fake venues running in a child process, with their control API."""

    process: subprocess.Popen[str]
    exchange_urls: str
    control: str
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)

    async def call(self, method: str, path: str, payload: Any = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.request(method, f"{self.control}{path}", json=payload) as answer:
            body = await answer.json()
            if answer.status != 200:
                raise RuntimeError(f"control {method} {path}: {answer.status} {body}")
            return body

    async def stats(self, venue: str) -> dict[str, Any]:
        return await self.call("GET", f"/books/{venue}/stats")

    async def open_orders(self, venue: str) -> list[dict[str, Any]]:
        return await self.call("GET", f"/books/{venue}/open_orders")

    async def stream_stats(self, venue: str) -> dict[str, Any] | None:
        """The fake's user-data stream counters (connection attempts, …), or None when it has no stream."""
        try:
            return await self.call("GET", f"/streams/{venue}/stats")
        except (RuntimeError, aiohttp.ContentTypeError):
            return None

    async def drop_streams(self, venue: str) -> int:
        """Close every user-data stream connection of the fake `venue`; return how many there were."""
        return (await self.call("POST", f"/streams/{venue}/drop"))["dropped"]

    async def close_session(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def stop(self) -> None:
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_fakes(keys: int, *, balance: str = "10000000", weight_limit: int = SETUP_WEIGHT_LIMIT) -> Fakes:
    """Start the fake venues in a child process with `keys` sandbox keys registered on every venue."""
    process = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "bench._common", "fakes", "--keys", str(keys), "--balance", balance,
         "--weight-limit", str(weight_limit)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("READY "):
        process.kill()
        raise RuntimeError(f"the fake venues did not start: {line!r}")
    fields = dict(part.split("=", 1) for part in line.removeprefix("READY ").split(" "))
    return Fakes(process, fields["STRATA_EXCHANGE_URLS"], fields["CONTROL"])


async def _serve_fakes(args: argparse.Namespace) -> None:
    from aiohttp import web

    from bot.sandbox.exchanges import make_books, make_control_app, register_sandbox_keys, start_fake_exchanges

    books = make_books()
    register_sandbox_keys(books, args.keys, {"USDT": args.balance, "USD": args.balance})
    for book in books.values():
        book.log_requests = False
    limits = {"binance": args.weight_limit, "binanceusdm": args.weight_limit}
    running = await start_fake_exchanges(books=books, weight_limits=limits)
    control = web.AppRunner(make_control_app(running), access_log=None, shutdown_timeout=0.1)
    await control.setup()
    await web.TCPSite(control, "127.0.0.1", 0).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    origin = f"http://127.0.0.1:{control.addresses[0][1]}"
    print(f"READY STRATA_EXCHANGE_URLS={running.exchange_urls} CONTROL={origin}", flush=True)
    try:
        await stop.wait()
    finally:
        await control.cleanup()
        await running.close()


# ------------------------------------------------------------------------------------------------ budgets
@dataclass(frozen=True)
class Charge:
    """One request as the rate budget saw it, before it was sent."""

    at: float  # time.time()
    venue: str
    api: str
    path: str
    weight: int  # Binance weight (0 for other venues)

    @property
    def private(self) -> bool:
        return "private" in self.api.lower() or self.api.startswith("sapi")


class RecordingBudgets(RateBudgets):
    """The real process-wide budget, also keeping every charge (when, which endpoint, what weight)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.charges: list[Charge] = []

    async def acquire(self, venue: str, api_name: str, api_url: str, cost: float | None,
                      kid: str | None = None, path: str = "", *, release_to_wait: bool = False) -> None:
        await super().acquire(venue, api_name, api_url, cost, kid, path, release_to_wait=release_to_wait)
        weight = request_weight(venue, api_name, path, cost)
        self.charges.append(Charge(time.time(), venue, api_name, path, weight))

    def between(self, start: float, end: float) -> list[Charge]:
        return [c for c in self.charges if start <= c.at < end]


def weight_per_minute(charges: Iterable[Charge], venue: str = "binance") -> int:
    """The most Binance weight charged in one calendar minute: Binance's (and the fake's) own accounting."""
    minutes: Counter[int] = Counter()
    for charge in charges:
        if charge.venue == venue:
            minutes[int(charge.at // 60)] += charge.weight
    return max(minutes.values(), default=0)


def weight_per_sliding_minute(charges: Iterable[Charge], venue: str = "binance") -> int:
    """The most Binance weight charged in any 60 seconds (straddling two minutes: not what Binance counts)."""
    times = sorted((c.at, c.weight) for c in charges if c.venue == venue and c.weight)
    best, total, left = 0, 0, 0
    for at, weight in times:
        total += weight
        while times[left][0] <= at - 60.0:
            total -= times[left][1]
            left += 1
        best = max(best, total)
    return best


LIFTED = {"binance": SETUP_WEIGHT_LIMIT, "binanceusdm": SETUP_WEIGHT_LIMIT}


def lifted_budgets() -> RecordingBudgets:
    """A budget that never waits: for populating accounts only (the fakes are started lifted too)."""
    return RecordingBudgets(limits=LIFTED)


def unrecorded_lifted_budgets() -> RateBudgets:
    """The same without the record of every request (which would grow with the accounts: memory bench)."""
    return RateBudgets(limits=LIFTED)


# ------------------------------------------------------------------------------------------------ the world
@dataclass
class World:
    """The bot's side: store, vault, gateway and engine over files in `data_dir`."""

    settings: Any
    store: Store
    vault: Vault
    gateway: ExchangeGateway
    engine: Engine
    budgets: RateBudgets

    async def close(self) -> None:
        await self.engine.shutdown()
        await self.gateway.close()
        await self.vault.close()
        await self.store.close()


class NullNotifier:
    """The engine wakes the notifier after committing alerts; here they stay in the outbox."""

    def wake(self) -> None:
        return None


async def open_world(
    data_dir: Path,
    exchange_urls: str,
    *,
    budgets: RateBudgets | None = None,
    poll_seconds: float = 10.0,
    jitter_seconds: float = 0.0,
    engine_class: type[Engine] = Engine,
    streams: bool | None = None,
    database: str | None = None,
    ownership: Any = None,
) -> World:
    """Open the databases in `data_dir` and build the gateway and the engine exactly as the bot does.

    `streams` sets STRATA_STREAMS (None: the bot's default, on); `database` is STRATA_DATABASE_URL (None: the
    SQLite file in `data_dir`); `ownership` the engine's partitions (engine workers: `storage.partitions`)."""
    env = {
        "STRATA_DATA_DIR": str(data_dir),
        "STRATA_EXCHANGE_URLS": exchange_urls,
        "STRATA_FILL_POLL_SECONDS": str(poll_seconds),
        "STRATA_MASTER_KEY": MASTER_KEY_B64,
    }
    if streams is not None:
        env["STRATA_STREAMS"] = "on" if streams else "off"
    if database:
        env["STRATA_DATABASE_URL"] = database
    settings = load_settings(env, dotenv=False)
    data_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything runs
    store = await Store.open(settings.database)
    vault = await Vault.open(settings.keystore, MASTER_KEY)
    budgets = budgets if budgets is not None else RecordingBudgets()
    gateway = ExchangeGateway.from_settings(
        settings, budgets=budgets, retry=RetryPolicy(attempts=3, base_delay=0.05, max_delay=0.5)
    )
    engine = engine_class(
        store, vault, gateway, NullNotifier(), settings, jitter_seconds=jitter_seconds,
        **({"ownership": ownership} if ownership is not None else {}),
    )
    return World(settings, store, vault, gateway, engine, budgets)


async def fresh_database(url: str | None) -> str | None:
    """For `--database postgresql://…` (an admin URL of a server the bench may create databases on): a new,
    empty database on that server for this run, so runs never mix; None stays None (SQLite)."""
    if not url:
        return None
    import secrets

    import asyncpg

    name = f"strata_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.rsplit("/", 1)[0] + "/" + name


def user_of(index: int) -> int:
    return FIRST_USER + index


async def connect_accounts(world: World, indexes: Iterable[int], venue: str = "binance") -> list[int]:
    """Store one connected account per sandbox key index, sealed through the vault as /connect does."""
    store, vault = world.store, world.vault
    account_ids = []
    for index in indexes:
        user_id = user_of(index)
        api_key, secret = sandbox_credentials(index)
        await store.users.upsert(user_id, user_id)
        async with store.db.transaction() as tx:
            account_id = await store.accounts.create(tx, user_id=user_id, venue=venue, label=venue)
            sealed = await vault.seal(
                user_id=user_id, account_id=account_id, venue=venue, credentials=Credentials(api_key, secret)
            )
            await store.accounts.store_credential(tx, sealed)
        account_ids.append(account_id)
    return account_ids


@dataclass(frozen=True)
class Plan:
    """One strategy to create: on which account, what kind, budget, market and parameters."""

    account_id: int
    user_id: int
    kind: str
    symbol: str
    budget: Decimal
    params: dict[str, str]


async def create_strategies(world: World, plans: Iterable[Plan], *, now: datetime) -> list[int]:
    """Create strategies as `StrategyService.confirm` does (canonical params, initial state, due now)."""
    ids: list[int] = []
    store = world.store
    batch: list[Plan] = []

    async def flush() -> None:
        async with store.db.transaction() as tx:
            for plan in batch:
                kind = STRATEGIES[plan.kind]
                parsed = kind.parse_params(plan.params)
                ids.append(await store.strategies.create(
                    tx, user_id=plan.user_id, account_id=plan.account_id, kind=plan.kind, symbol=plan.symbol,
                    quote=plan.symbol.split("/")[1].split(":")[0], budget=plan.budget,
                    params=kind.dump_params(parsed), state=kind.dump_state(kind.initial_state(parsed, now)),
                    next_run=now,
                ))
        batch.clear()

    for plan in plans:
        batch.append(plan)
        if len(batch) >= 500:
            await flush()
    if batch:
        await flush()
    return ids


async def run_all(ids: list[int], run: Callable[[int], Awaitable[Any]], *, concurrency: int = 64,
                  label: str = "runs") -> float:
    """Run `run(id)` for every id, `concurrency` at a time, printing progress; return the seconds taken."""
    semaphore = asyncio.Semaphore(concurrency)
    done = 0
    started = time.perf_counter()
    last = started

    async def one(item: int) -> None:
        nonlocal done, last
        async with semaphore:
            await run(item)
        done += 1
        now = time.perf_counter()
        if now - last >= 2.0:
            last = now
            say(f"  {label}: {done}/{len(ids)} in {now - started:.1f}s")

    await asyncio.gather(*(one(i) for i in ids))
    return time.perf_counter() - started


async def prices(world: World, venue: str, symbols: Iterable[str]) -> dict[str, Decimal]:
    """The current last price of each symbol on the fake (through the bot's own gateway)."""
    result = {}
    for symbol in symbols:
        ticker = await world.gateway.fetch_ticker(venue, symbol)
        assert ticker.last is not None, f"no price for {symbol} on {venue}"
        result[symbol] = ticker.last
    return result


def grid_params(price: Decimal) -> dict[str, str]:
    """A one-grid ladder (2 levels) whose buy rests 10 % under the price: one resting buy per grid, and no start
    purchase (a grid buys at start only the coins its levels above the price sell)."""
    low = (price * Decimal("0.9")).quantize(Decimal("0.01"))
    high = (price * Decimal("1.5")).quantize(Decimal("0.01"))
    return {"low": str(low), "high": str(high), "levels": "2"}


async def order_round_trips(world: World) -> dict[str, int]:
    """Orders per status in the database (proof that every account made a round trip)."""
    rows = await world.store.db.fetchall("SELECT status, COUNT(*) AS n FROM orders GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


async def accounts_with_orders(world: World) -> int:
    row = await world.store.db.fetchone(
        "SELECT COUNT(DISTINCT account_id) AS n FROM orders WHERE exchange_order_id IS NOT NULL"
    )
    return row["n"] if row else 0


async def fresh_weight_window(fakes: Fakes, venue: str = "binance", *, allowed: int = 1500) -> None:
    """Wait for the next minute if populating spent more than `allowed` of this minute's Binance weight.

    Binance (and the fake) counts weight per IP per calendar minute and reports it on every response; the
    bot's budget adopts that count, so a measurement started in the minute the set-up filled would only
    measure the budget waiting.
    """
    used = sum((await fakes.stats(venue))["weight_by_ip"].values())
    if used <= allowed:
        return
    wait = 60.0 - time.time() % 60.0 + 0.5
    say(f"set-up spent {used} Binance weight this minute: waiting {wait:.0f}s for a fresh minute")
    await asyncio.sleep(wait)


def result_line(result: dict[str, Any]) -> None:
    """Print the one JSON line every benchmark ends with."""
    print(json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench._common", description="benchmark helpers")
    sub = parser.add_subparsers(dest="command", required=True)
    fakes = sub.add_parser("fakes", help="serve the fake venues (binance, binanceusdm, kraken) on 127.0.0.1")
    fakes.add_argument("--keys", type=int, default=0)
    fakes.add_argument("--balance", default="10000000")
    fakes.add_argument("--weight-limit", type=int, default=SETUP_WEIGHT_LIMIT)
    args = parser.parse_args(argv)
    asyncio.run(_serve_fakes(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

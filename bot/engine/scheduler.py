"""The 24/7 engine: its own APScheduler, one job per due second, fill polling, start-up reconciliation.

The database is the source of truth. At start-up every unconfirmed order is reconciled with its exchange by
client order id, then every active strategy is scheduled at its stored next run (spread by a per-strategy
jitter so a restart does not run thousands of strategies in one second). Strategies due in the same second
share one APScheduler job `due:<epoch second>`, fired at the end of that second (never early, at most a second
late): a job per strategy run cost more than the run itself at 10,000 strategies (bench/engine.py). Job
defaults make late runs still run (`misfire_grace_time=None`) and coalesce (`coalesce=True`, `max_instances=1`);
what a run owes is decided by the strategy from its stored last slot, so a late, coalesced or missed run
catches up exactly once. A strategy that gets activity (a fill, an order's end) while it runs is run again
right after.

Fill polling runs as one task on the same loop: every `STRATA_FILL_POLL_SECONDS` it polls only the accounts
with live orders, their polls spread over the interval, and stretches the interval when the venue's request
budget is short (`effective_poll_interval`, shown by /status). With `STRATA_STREAMS` on, the venues' user-data
streams push fills (`bot.engine.streams`); an account whose stream is live is then polled only by a safety sweep
every `SWEEP_SECONDS`, and at the normal interval again as soon as its stream is down.

Control (/pause, /stop, /panic, /disconnect): the status changes inside the strategy's send gate, so no send
starts after it (`OrderDesk.send` re-reads the status inside that gate); a run still deciding is not waited for
(its intents meet the gate and end unsent); the sends already under way are waited for,
then every live order is cancelled. An order whose fate is not known yet is watched (`order_watches`): a task
keeps resolving it and queues one alert, with the watch's end, once it is cancelled, filled or surely absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.engine.actions import key_works_again, mark_unreadable, pause_strategy
from bot.engine.alerts import resolved_text
from bot.engine.context import CredentialsMissing, EngineContext, utc_now
from bot.engine.intents import CANCELLED, FILLED, NOT_CONFIRMED, OrderDesk, client_order_id
from bot.engine.key_health import JOB_ID as KEY_HEALTH_JOB
from bot.engine.key_health import KeyHealthMonitor
from bot.engine.pnl import compute, is_contract
from bot.engine.risk import Ledger, MarketRules, Refused, check_order
from bot.engine.runner import RunResult, StrategyRunner
from bot.engine.streams import SWEEP_SECONDS, FillStreams
from bot.exchanges.errors import ExchangeFailure
from bot.exchanges.key_check import KeyChecker, KeyRejected
from bot.exchanges.rate_budget import decision_read
from bot.exchanges.venues import adapter
from bot.memory import freeze_long_lived
from bot.strategies.base import DesiredOrder
from bot.vault import CredentialUnreadable
from storage.accounts import KEY_REJECTED, KEY_UNSAFE
from storage.models import Order
from storage.orders import INTENT, LIVE, OPEN, UNCONFIRMED, UNKNOWN
from storage.partitions import AllPartitions, Ownership, partition_of
from storage.strategies import ACTIVE, ENGINE, HOLDING, STOPPED

logger = logging.getLogger(__name__)

JOB_DEFAULTS = {"misfire_grace_time": None, "coalesce": True, "max_instances": 1}
#: How many runs of one due second start per event-loop iteration.
SLOT_BATCH = 500
#: Retry a run that failed on a transient exchange problem after this long.
RETRY_DELAY = timedelta(seconds=30)
#: Share of a venue's per-minute request budget the fill poller may plan to use: within what the engine's
#: background reads may spend (`bot.exchanges.rate_budget`: 90 % margin × 80 % reads × 50 % background = 36 %);
#: the rest is for trading and for what decisions wait on.
POLL_BUDGET_SHARE = 0.35
#: How long a control action waits for a send under way (a send is bounded by the client's timeout, 10 s);
#: one still under way after this is reported unconfirmed and watched.
SEND_WAIT_SECONDS = 30.0
#: How often watched orders are looked up again while a late request may still land (then: the fill-poll pace).
WATCH_SECONDS = 1.0
#: `place_now`'s answer for an order whose fate is not known yet.
UNCONFIRMED_ORDER = "could not be confirmed yet; I keep checking and will tell you how it ends"


class BelowMinimum(str):
    """`place_now`'s refusal of an amount below the market's minimum (or its step): dust, not an error."""


#: How long past the receive window /disconnect waits for its unconfirmed orders to be resolved.
SETTLE_MARGIN_SECONDS = 5.0

#: A stored ledger this close to the one recomputed from the fills is left alone (division rounding only).
LEDGER_TOLERANCE = Decimal("1e-8")
#: How often the key of an account the exchange rejected is tried again (the same checks as /connect).
KEY_RETRY_INTERVAL = timedelta(minutes=5)
KEY_RETRY_JOB = "accounts:key-retry"


@dataclass(frozen=True)
class Cancellation:
    """What cancelling a strategy's live orders did: counts by outcome, and the venue's errors."""

    canceled: int = 0  # were on the exchange, now cancelled
    filled: int = 0  # had filled completely before the cancel
    unconfirmed: int = 0  # fate not known yet: watched, the user is alerted once resolved
    errors: tuple[str, ...] = ()

    def __add__(self, other: Cancellation) -> Cancellation:
        return Cancellation(
            self.canceled + other.canceled, self.filled + other.filled, self.unconfirmed + other.unconfirmed,
            self.errors + other.errors,
        )


def job_id(strategy_id: int) -> str:
    """The name of a strategy's run task (its runs are grouped in `due:<second>` jobs, see `slot_job_id`)."""
    return f"strategy:{strategy_id}"


def slot_job_id(second: int) -> str:
    """The one APScheduler job that runs every strategy due in the second ending at epoch `second`."""
    return f"due:{second}"


class Engine:
    """Runs every active strategy on schedule, tracks fills, and offers the control actions services use."""

    def __init__(
        self,
        store: Any,
        vault: Any,
        gateway: Any,
        notifier: Any,
        settings: Any,
        *,
        clock: Callable[[], datetime] = utc_now,
        jitter_seconds: float = 2.0,
        poll_interval: float | None = None,
        stream_options: dict[str, Any] | None = None,
        ownership: Ownership | None = None,
    ) -> None:
        #: Which accounts this engine runs: all of them (`run`), or its worker's partitions (`storage.partitions`).
        self.ownership: Ownership = ownership if ownership is not None else AllPartitions()
        self.ctx = EngineContext(
            store=store, vault=vault, gateway=gateway, notifier=notifier, clock=clock, owns=self.ownership.owns
        )
        self.desk = OrderDesk(self.ctx, on_activity=self._on_activity)
        self.desk.is_running = lambda strategy_id: strategy_id in self._running
        self.runner = StrategyRunner(self.ctx, self.desk)
        #: Checks connected keys every few hours; `key_health.check_now(account_id)` checks one at once.
        self.key_health = KeyHealthMonitor(self.ctx)
        self.poll_interval = float(poll_interval or getattr(settings, "fill_poll_seconds", 10.0))
        self.effective_poll_interval = self.poll_interval
        self.jitter_seconds = jitter_seconds
        self.scheduler: AsyncIOScheduler | None = None
        #: Per scheduled strategy: when it is due (real clock) and the second whose job runs it; per such
        #: second, the strategies its job runs. A strategy is in at most one second.
        self._due: dict[int, tuple[datetime, int]] = {}
        self._slots: dict[int, set[int]] = {}
        self._running: set[int] = set()
        self._run_locks: dict[int, asyncio.Lock] = {}
        self._rerun: set[int] = set()
        self._poller: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        self._watch_wanted = False
        self._watch_quick_until = 0.0
        self._account_controls: dict[int, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task] = set()
        self.started = False
        #: The venues' user-data streams (None: STRATA_STREAMS=off, every fill is polled).
        self.streams: FillStreams | None = (
            FillStreams(self.ctx, self.desk, key_check=self.key_health.check_now, **(stream_options or {}))
            if getattr(settings, "streams", False) else None
        )
        #: How often a streamed account is still polled, and when each account was last polled.
        self.sweep_seconds = SWEEP_SECONDS
        self._last_polled: dict[int, float] = {}
        #: Start-up and every adoption of gained partitions reconcile one at a time (never one order twice).
        self._adopting = asyncio.Lock()
        self.ownership.subscribe(self._partitions_changed)

    @property
    def store(self) -> Any:
        return self.ctx.store

    @property
    def gateway(self) -> Any:
        return self.ctx.gateway

    # --- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Reconcile unconfirmed orders, rebuild the jobs from the database, start the fill poller."""
        self.scheduler = AsyncIOScheduler(job_defaults=JOB_DEFAULTS, event_loop=asyncio.get_running_loop())
        self.scheduler.start()
        self._due.clear()
        self._slots.clear()
        started = time.monotonic()
        async with self._adopting:
            await self.reconcile()
            await self._rebook_futures_ledgers()
            strategies = await self._owned_active_strategies()
            self.ctx.preload_live_orders(await self.store.orders.in_states(LIVE), [s.id for s in strategies])
            for strategy in strategies:
                self.schedule(strategy.id, strategy.next_run, spread=True)
        freeze_long_lived()
        self.scheduler.add_job(
            self._owned, "interval", args=[self.retry_rejected_keys], seconds=KEY_RETRY_INTERVAL.total_seconds(),
            id=KEY_RETRY_JOB, replace_existing=True, **JOB_DEFAULTS,
        )
        self.scheduler.add_job(
            self._owned, "interval", args=[self.key_health.tick],
            seconds=self.key_health.tick_interval.total_seconds(), id=KEY_HEALTH_JOB, replace_existing=True,
            **JOB_DEFAULTS,
        )
        self._poller = asyncio.get_running_loop().create_task(self._poll_loop(), name="strata-fill-poller")
        if self.streams is not None:
            self.streams.start()
        self.started = True
        if await self.store.order_watches.pending():
            self._ensure_watcher()
        logger.info(
            "engine started: %d strategies scheduled in %.2fs", len(strategies), time.monotonic() - started
        )

    async def _rebook_futures_ledgers(self) -> None:
        """Book every futures strategy's ledger from its fills as margin at 1x and the venue's P&L.

        Older versions booked a short's sale as money received, so its budget looked unused and the next
        position could take more than the budget; rebooking from the fills is idempotent (no-op once right).
        """
        futures = [
            s for s in await self.store.strategies.list_by_status(HOLDING)
            if is_contract(s.symbol) and self.ctx.owns(s.account_id)
        ]
        fills = await self.store.orders.fills_for_strategies([s.id for s in futures])  # one read per 500
        for strategy in futures:
            pnl = compute(fills[strategy.id], strategy.quote)
            if abs(pnl.invested - strategy.spent) + abs(pnl.returned - strategy.received) < LEDGER_TOLERANCE:
                continue
            async with self.store.db.transaction() as tx:
                await self.store.strategies.rebook_ledger(tx, strategy.id, spent=pnl.invested, received=pnl.returned)
            logger.warning("strategy %s: futures budget ledger rebooked from its fills", strategy.id)

    async def shutdown(self) -> None:
        """Stop scheduling and polling; in-flight order sends finish or are reconciled at the next start."""
        self.started = False
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.pause()  # no job starts from now on
        if self.streams is not None:
            await self.streams.close()
        for task in (self._poller, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._poller = self._watcher = None
        if self.scheduler is not None and self.scheduler.running:
            # APScheduler's shutdown cancels the jobs it has started and logs each as a crash: let those handed
            # out just before the pause take their first step (a strategy's job only hands its run to `_tasks`;
            # a periodic one stops quietly, `_owned`).
            await asyncio.sleep(0)
            self.scheduler.shutdown(wait=False)
        self._due.clear()
        self._slots.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def settle(self) -> None:
        """Wait until no strategy run is in progress (tests and benchmarks use it between steps)."""
        while self._tasks or self._running:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
            await asyncio.sleep(0)

    # --- partitions (engine workers) --------------------------------------------------------------------

    def _partitions_changed(self, gained: set[int], lost: set[int]) -> None:
        """The worker's partitions changed. Lost ones are already not run (every path checks `ctx.owns`
        before acting); their jobs are removed and their streams dropped here. Gained ones are adopted as at
        start-up: unconfirmed orders reconciled with the venue, strategies scheduled."""
        self.ctx.forget_cached_orders()  # another worker may have written their orders meanwhile
        if self.scheduler is None or not self.scheduler.running:
            return  # not started: `start` takes whatever is owned by then (a change during `start` waits for it)
        if lost:
            self._background(self._release(lost), "strata-release-partitions")
        if gained:
            self._background(self.adopt(gained), "strata-adopt-partitions")

    def _background(self, work: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _owned_active_strategies(self, partitions: set[int] | None = None) -> list[Any]:
        return [
            s for s in await self.store.strategies.list_by_status((ACTIVE,))
            if self.ctx.owns(s.account_id) and (partitions is None or partition_of(s.account_id) in partitions)
        ]

    async def adopt(self, partitions: set[int]) -> int:
        """Run the accounts of newly gained partitions, as crash recovery does at start-up; return how many
        strategies were scheduled."""
        async with self._adopting:
            await self.reconcile(partitions)
            strategies = await self._owned_active_strategies(partitions)
            for strategy in strategies:
                self.schedule(strategy.id, strategy.next_run, spread=True)
            if await self.store.order_watches.pending():
                self._ensure_watcher()
            if self.streams is not None:
                await self.streams.sync()
                await self.streams.foreign.recover()
        logger.info("adopted partitions %s: %d strategies scheduled", sorted(partitions), len(strategies))
        return len(strategies)

    async def _release(self, partitions: set[int]) -> None:
        """Remove the jobs of the accounts of lost partitions, and stop streaming them."""
        for strategy in await self.store.strategies.list_by_status((ACTIVE,)):
            if partition_of(strategy.account_id) in partitions and not self.ctx.owns(strategy.account_id):
                self.unschedule(strategy.id)
        if self.streams is not None:
            await self.streams.sync()

    # --- scheduling -------------------------------------------------------------------------------------

    def schedule(self, strategy_id: int, at: datetime | None, *, spread: bool = False) -> None:
        """(Re)place the strategy's one next run at `at` (None: remove it); `spread` adds its jitter."""
        if self.scheduler is None:
            return
        if at is None:
            self.unschedule(strategy_id)
            return
        now = self.ctx.clock()
        run_at = max(at, now)
        if spread:
            run_at += timedelta(seconds=self._jitter(strategy_id))
        # The job fires on the real clock; `ctx.clock` may be a test clock: keep the same distance from now.
        real = utc_now() + (run_at - now)
        second = math.ceil(real.timestamp())  # the end of its second: a run never starts before it is due
        previous = self._due.get(strategy_id)
        if previous is not None and previous[1] != second:
            self._leave_slot(strategy_id, previous[1])
        self._due[strategy_id] = (real, second)
        members = self._slots.get(second)
        if members is None:
            members = self._slots[second] = set()
            self.scheduler.add_job(
                self._run_slot, "date", run_date=datetime.fromtimestamp(second, UTC), args=[second],
                id=slot_job_id(second), replace_existing=True, **JOB_DEFAULTS,
            )
        members.add(strategy_id)

    def run_soon(self, strategy_id: int) -> None:
        """Run a strategy right away (or right after its current run)."""
        if strategy_id in self._running:
            self._rerun.add(strategy_id)
        else:
            self._spawn(strategy_id)

    def _spawn(self, strategy_id: int) -> None:
        task = asyncio.get_running_loop().create_task(self.run_strategy(strategy_id), name=job_id(strategy_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def unschedule(self, strategy_id: int) -> None:
        previous = self._due.pop(strategy_id, None)
        if previous is not None:
            self._leave_slot(strategy_id, previous[1])

    def _leave_slot(self, strategy_id: int, second: int) -> None:
        """Take the strategy out of a second's job; the job goes when no strategy is left in it."""
        members = self._slots.get(second)
        if members is None:
            return
        members.discard(strategy_id)
        if not members:
            del self._slots[second]
            if self.scheduler is not None:
                with contextlib.suppress(JobLookupError):
                    self.scheduler.remove_job(slot_job_id(second))

    def next_run_time(self, strategy_id: int) -> datetime | None:
        """When the strategy is due next (None: not scheduled); its second's job runs it within a second."""
        due = self._due.get(strategy_id)
        return due[0] if due is not None else None

    def scheduled_count(self) -> int:
        """How many strategies have a next run scheduled (benchmarks and /status figures)."""
        return len(self._due)

    def _jitter(self, strategy_id: int) -> float:
        # A fixed, evenly spread offset per strategy (golden-ratio sequence), not random: tests stay exact.
        return ((strategy_id * 0.6180339887) % 1.0) * self.jitter_seconds

    def _on_activity(self, strategy_id: int) -> None:
        if self.started:
            self.run_soon(strategy_id)

    async def _run_slot(self, second: int) -> None:
        """The job of one second: start every strategy due in it, each run its own task.

        The job ends at once (a run that reschedules into a new second never waits for this one), and the
        second is emptied before any run starts, so a run rescheduled into the same second gets a new job.
        """
        due_now = [
            strategy_id for strategy_id in sorted(self._slots.pop(second, ()))
            if (due := self._due.get(strategy_id)) is not None and due[1] == second
        ]
        for strategy_id in due_now:
            del self._due[strategy_id]
        # Started in batches, one per loop iteration: each batch's rows come in one query and its first runs
        # reach the venue (the round's ticker) at once, instead of 10,000 runs all waiting on the same reads.
        for start in range(0, len(due_now), SLOT_BATCH):
            if start:
                await asyncio.sleep(0)
            for strategy_id in due_now[start : start + SLOT_BATCH]:
                if strategy_id not in self._due:  # rescheduled meanwhile (resumed, retried): that run goes
                    self._spawn(strategy_id)

    async def _owned(self, work: Callable[[], Awaitable[Any]]) -> None:
        """A periodic job (key retries, key health) that stops quietly with the engine: APScheduler's shutdown
        cancels the jobs it is running and logs each as a crash, traceback and all; here that cancel ends the work
        and, the engine stopping, the job returns. Its failures still reach APScheduler's log."""
        task = asyncio.ensure_future(work())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if self.started:
                raise

    async def run_strategy(self, strategy_id: int) -> RunResult:
        """Run one strategy now, then schedule its next run (also after activity that arrived meanwhile)."""
        lock = self._run_locks.get(strategy_id)
        if lock is None:
            lock = self._run_locks[strategy_id] = asyncio.Lock()
        async with lock:  # one run at a time per strategy; a run asked for meanwhile follows this one
            self._running.add(strategy_id)
            self._rerun.discard(strategy_id)
            try:
                result = await self.runner.run(strategy_id)
            except CredentialsMissing:
                result = RunResult(None)
            except CredentialUnreadable:
                await self._unreadable_strategy_account(strategy_id)
                result = RunResult(None)
            except Exception:
                logger.exception("strategy %s: run crashed; retrying later", strategy_id)
                result = RunResult(None, retry_later=True)
            finally:
                self._running.discard(strategy_id)
        if strategy_id in self._rerun:
            self._rerun.discard(strategy_id)
            self._spawn(strategy_id)
        elif result.retry_later:
            self.schedule(strategy_id, self.ctx.clock() + RETRY_DELAY)
        elif result.next_run is not None:
            self.schedule(strategy_id, result.next_run, spread=True)
        else:
            self.unschedule(strategy_id)  # finished, paused, or waiting for fills only
        return result

    # --- reconciliation ---------------------------------------------------------------------------------

    async def reconcile(self, partitions: set[int] | None = None) -> int:
        """Resolve every unconfirmed order (intent/sent/unknown) of the accounts this engine runs (of those
        `partitions` only, if given) with its exchange, by client order id."""
        orders = [
            order for order in await self.store.orders.in_states(UNCONFIRMED)
            if self.ctx.owns(order.account_id)
            and (partitions is None or partition_of(order.account_id) in partitions)
        ]
        accounts: dict[int, Any] = {}
        semaphore = asyncio.Semaphore(32)

        async def one(order) -> None:
            account = accounts.get(order.account_id)
            if account is None:
                account = accounts[order.account_id] = await self.store.accounts.get(order.account_id)
            if account is None or account.status != "active":
                return
            # The strategy decides nothing until its order in doubt is known: these lookups go with the reads
            # decisions wait on, not behind the background ones (bench/restart.py: 2 s, not the next minute).
            async with semaphore:
                try:
                    with decision_read():
                        await self.desk.resolve(order, account, at_startup=True)
                except (ExchangeFailure, CredentialsMissing) as failure:
                    logger.warning("order %s not reconciled yet: %s", order.client_order_id, failure)
                except CredentialUnreadable:
                    # One damaged credential pauses its account; start-up goes on for everyone else.
                    await mark_unreadable(self.ctx, account.id)

        await asyncio.gather(*(one(order) for order in orders))
        if orders:
            logger.info("reconciled %d unconfirmed orders", len(orders))
        return len(orders)

    async def _unreadable_strategy_account(self, strategy_id: int) -> None:
        strategy = await self.store.strategies.get(strategy_id)
        if strategy is not None:
            await mark_unreadable(self.ctx, strategy.account_id)

    # --- rejected keys ----------------------------------------------------------------------------------

    async def retry_rejected_keys(self) -> int:
        """Try every rejected key again with the checks of /connect; return how many work again.

        A key still refused costs one signed call of the smallest weight (`KeyChecker.authenticates`), so
        retrying many dead keys never eats the per-IP budget the live accounts trade with. A key found able to
        withdraw (`key_unsafe`) is retried the same way, its first call being the key health check: the full
        checks run only once it cannot withdraw any more.

        A key that authenticates, still cannot withdraw and may trade again makes its account active (its
        strategies stay paused until the user resumes them; `key_works_again` tells the user). Any doubt — the
        exchange unreachable, a permission missing — leaves the account as it is until the next try.
        """
        checker = KeyChecker(self.gateway)
        revived = 0
        accounts = self.store.accounts
        for account in [*await accounts.with_status(KEY_REJECTED), *await accounts.with_status(KEY_UNSAFE)]:
            if not self.ctx.owns(account.id):
                continue
            try:
                creds = await self.ctx.credentials(account)
                if not await self._may_work_again(checker, account, creds):
                    self.ctx.forget_credentials(account.id)
                    continue
                await checker.check_key(account.venue, creds)
                await self._reads_its_orders(account, creds)
            except (KeyRejected, ExchangeFailure) as rejected:
                logger.info("account %s: key still refused (%s)", account.id, getattr(rejected, "reason", rejected))
                self.ctx.forget_credentials(account.id)
                continue
            except (CredentialUnreadable, CredentialsMissing):
                logger.warning("account %s: rejected key cannot be read to retry it", account.id)
                continue
            except Exception:  # one account's retry must not stop the others'
                logger.exception("account %s: key retry failed", account.id)
                self.ctx.forget_credentials(account.id)
                continue
            if await key_works_again(self.ctx, account.id, account.status):
                revived += 1
        return revived

    async def _may_work_again(self, checker: KeyChecker, account: Any, creds: Any) -> bool:
        """The cheap first call of a suspended key's retry: an unsafe key must no longer withdraw, a rejected one
        authenticate (False, or `ExchangeFailure`, leaves the account as it is)."""
        if account.status == KEY_UNSAFE:
            health = await checker.health(account.venue, creds, now=self.ctx.clock())
            return health is not None and not health.can_withdraw
        return await checker.authenticates(account.venue, creds)

    async def _reads_its_orders(self, account: Any, creds: Any) -> None:
        """Raise `ExchangeFailure` unless the key can list the account's open orders, as the fill poller will.

        Kraken grants "Query Funds" and "Query Open Orders & Trades" separately: a key that passes the checks of
        /connect may still be refused every poll, and reviving it would only reject it again at the next poll.
        """
        live = await self.store.orders.in_states((OPEN,), account_id=account.id)
        if live:
            symbol = live[0].symbol if adapter(account.venue).open_orders_per_symbol else None
            await self.gateway.fetch_open_orders(account.venue, creds, symbol)

    # --- fill polling -----------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                await self.poll_once(spread=True, streamed=False)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("fill poll failed")
            await asyncio.sleep(max(0.0, self.effective_poll_interval - (time.monotonic() - started)))

    async def poll_once(self, *, spread: bool = False, streamed: bool = True) -> int:
        """Poll the live orders of every account that has some; return how many orders were polled.

        `streamed=False` (the poll loop) leaves out the accounts whose stream is live, but for a safety sweep
        every `sweep_seconds`.
        """
        orders = await self.store.orders.in_states((OPEN, UNKNOWN, INTENT))
        by_account: dict[int, list] = {}
        for order in orders:
            if self.ctx.owns(order.account_id):
                by_account.setdefault(order.account_id, []).append(order)
        now = time.monotonic()
        if not streamed:
            by_account = {a: items for a, items in by_account.items() if not self._left_to_stream(a, items, now)}
        self._last_polled.update({account_id: now for account_id in by_account})
        orders = [o for items in by_account.values() for o in items]
        self.effective_poll_interval = await self._stretched_interval(by_account)
        if not by_account:
            return 0
        step = self.effective_poll_interval * 0.8 / len(by_account) if spread else 0.0

        async def account_poll(index: int, account_id: int, items: list) -> None:
            if step:
                await asyncio.sleep(index * step)
            account = await self.store.accounts.get(account_id)
            if account is None or account.status != "active" or not self.ctx.owns(account_id):
                return  # (given to another worker while this poll waited its turn)
            try:
                await self.desk.refresh_account(account, items)
            except (ExchangeFailure, CredentialsMissing) as failure:
                logger.warning("poll of account %s failed: %s", account_id, failure)
            except CredentialUnreadable:
                await mark_unreadable(self.ctx, account_id)

        await asyncio.gather(*(account_poll(i, a, items) for i, (a, items) in enumerate(by_account.items())))
        return len(orders)

    def _left_to_stream(self, account_id: int, orders: list[Order], now: float) -> bool:
        """Whether the poll loop leaves this account to its live stream now: no safety sweep is due and no
        order of it is unconfirmed (the poll is what resolves those: the stream only reports confirmed ones)."""
        if self.streams is None or not self.streams.streamed(account_id):
            return False
        if any(order.status != OPEN for order in orders):
            return False
        return now - self._last_polled.get(account_id, 0.0) < self.sweep_seconds

    def fill_mode(self, account: Any) -> str | None:
        """How the account's fills reach us: "streamed", "polled", or None for a Paper account."""
        if account is None or adapter(account.venue).simulated:
            return None
        return self.streams.mode(account.id) if self.streams is not None else "polled"

    async def _stretched_interval(self, by_account: dict[int, list]) -> float:
        """The poll interval, longer when one poll of every account would overspend a venue's per-IP budget.

        Only Binance counts weight per IP: a poll costs, per account, the openOrders weight per symbol (spot 6,
        80 for all symbols; USD-M 1, 40 for all), and polling may plan on `POLL_BUDGET_SHARE` of each venue's
        minute budget, the rest is for trading. Kraken's limits are per key, so its accounts never stretch it.
        """
        budgets = getattr(getattr(self.gateway, "pool", None), "budgets", None)
        if not by_account or budgets is None:
            return self.poll_interval
        weight: dict[str, int] = {}
        # One query for every account's row (the batched reader), not a round trip each: this runs every poll.
        accounts = await asyncio.gather(*(self.ctx.account(a, batched=True) for a in by_account))
        for account, orders in zip(accounts, by_account.values(), strict=True):
            if account is None or (weights := adapter(account.venue).open_orders_weights) is None:
                continue
            per_symbol, all_symbols = weights
            symbols = len({o.symbol for o in orders})
            weight[account.venue] = weight.get(account.venue, 0) + min(all_symbols, per_symbol * symbols)
        # Engine workers sharing one address's budget (`RateBudgets.shared`) each poll only their own accounts:
        # each plans on its part of the polling share.
        sharers = max(1, getattr(self.ownership, "alive", 1)) if getattr(budgets, "shared", None) else 1
        stretched = (
            used * 60.0 * sharers / (budgets.limit(venue) * POLL_BUDGET_SHARE) for venue, used in weight.items()
        )
        return max([self.poll_interval, *stretched])

    # --- control (used by the services) -----------------------------------------------------------------

    async def pause(self, strategy_id: int, reason: str, *, alert: bool = False, by: str = ENGINE) -> bool:
        """Pause an active strategy; once this returns no new send of it starts (its orders stay: see
        `cancel_orders`). `by`: who paused it (user, panic, engine)."""
        async with self.desk.gate(strategy_id):  # serialised with its sends' status checks
            changed = await pause_strategy(self.ctx, strategy_id, reason, alert=alert, by=by)
        self.unschedule(strategy_id)
        return changed

    async def stop(self, strategy_id: int, reason: str) -> bool:
        """Stop a strategy for good; once this returns no new send of it starts but /stop's own closing sale."""
        async with self.desk.gate(strategy_id), self.store.db.transaction() as tx:
            changed = await self.store.strategies.set_status(tx, strategy_id, STOPPED, reason=reason)
        self.unschedule(strategy_id)
        return changed

    async def resume(self, strategy_id: int) -> None:
        self.run_soon(strategy_id)

    def account_control(self, account_id: int) -> asyncio.Lock:
        """The lock that keeps /stop (with its sale) and /disconnect of one account from interleaving."""
        lock = self._account_controls.get(account_id)
        if lock is None:
            lock = self._account_controls[account_id] = asyncio.Lock()
        return lock

    async def cancel_orders(
        self, strategy_id: int, reason: str = "stopped", *, spare_closing: bool = False
    ) -> Cancellation:
        """Cancel every live order of a halted strategy, after the sends under way ended.

        An order whose fate cannot be known yet (its send still under way, its request possibly still on its
        way, or the exchange not answering) is watched: resolved in the background, the user alerted once.
        `spare_closing`: leave /stop's own closing orders (a re-run of a stop finishing its sale).
        """
        strategy = await self.store.strategies.get(strategy_id)
        if strategy is None:
            return Cancellation()
        account = await self.store.accounts.get(strategy.account_id)
        if account is None:
            return Cancellation()
        await self.desk.wait_sends(strategy_id, SEND_WAIT_SECONDS)
        result = Cancellation()
        live = await self.store.orders.in_states(LIVE, strategy_id=strategy_id)
        if spare_closing:
            live = [o for o in live if not o.tag.startswith("stop:")]
        try:
            ended = await self.desk.cancel_together(live, account)
        except (ExchangeFailure, CredentialsMissing, CredentialUnreadable) as failure:
            logger.info("strategy %s: cancelling together failed (%s); one by one", strategy_id, type(failure).__name__)
            ended = {}
        for order in live:
            try:
                outcome = ended.get(order.id) or await self.desk.cancel(order, account)
            except CredentialUnreadable:
                outcome = NOT_CONFIRMED
                result += Cancellation(
                    errors=(f"{order.symbol} {order.side}: the account's stored key cannot be read (see /accounts)",)
                )
            except (ExchangeFailure, CredentialsMissing) as failure:
                outcome = NOT_CONFIRMED
                message = getattr(failure, "user_message", None) or "the exchange did not answer"
                result += Cancellation(errors=(f"{order.symbol} {order.side}: {message}",))
            if outcome == NOT_CONFIRMED:
                await self.store.order_watches.add(order.id, reason)
                self._ensure_watcher()
            result += Cancellation(
                canceled=int(outcome == CANCELLED), filled=int(outcome == FILLED),
                unconfirmed=int(outcome == NOT_CONFIRMED),
            )
        return result

    async def settle_account_orders(self, account_id: int) -> bool:
        """Wait until the account has no live order, at most the venue's receive window (`unknown_grace`) and
        a few seconds: an unconfirmed order is resolved by then. False if some are still live (unreachable)."""
        deadline = time.monotonic() + self.desk.unknown_grace.total_seconds() + SETTLE_MARGIN_SECONDS
        while await self.store.orders.in_states(LIVE, account_id=account_id):
            account = await self.store.accounts.get(account_id)
            if time.monotonic() >= deadline or account is None or account.status != "active":
                return False  # (a key the exchange rejected cannot resolve anything: no use waiting)
            self._ensure_watcher()
            await asyncio.sleep(min(WATCH_SECONDS, self.poll_interval) / 2)
        return True

    # --- watched orders -------------------------------------------------------------------------------

    def _ensure_watcher(self) -> None:
        self._watch_wanted = True
        self._watch_quick_until = time.monotonic() + self.desk.unknown_grace.total_seconds() + SETTLE_MARGIN_SECONDS
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch_loop(), name="strata-order-watch")

    async def _watch_loop(self) -> None:
        """Resolve the watched orders until none is left (a new watch restarts it): every second while the
        venue's receive window may still let a late request in, then at the fill-poll pace (an outage)."""
        while True:
            self._watch_wanted = False
            pending = await self.store.order_watches.pending()
            if not pending and not self._watch_wanted:
                self._watcher = None
                return
            for order_id, reason in pending:
                try:
                    await self._resolve_watched(order_id, reason)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("watched order %s: resolving failed; trying again", order_id)
            quick = time.monotonic() < self._watch_quick_until
            await asyncio.sleep(min(WATCH_SECONDS, self.poll_interval) if quick else self.poll_interval)

    async def _resolve_watched(self, order_id: int, reason: str) -> None:
        order = await self.store.orders.get(order_id)
        if order is None:
            return  # deleted with its account: the watch went with it
        if not self.ctx.owns(order.account_id):
            return  # another worker runs the account: it resolves the watch
        if order.status in LIVE:
            account = await self.store.accounts.get(order.account_id)
            if account is None or account.status != "active" or self.desk.in_flight(order):
                return
            strategy = await self.store.strategies.get(order.strategy_id)
            if strategy is None or strategy.status == ACTIVE:
                return  # resumed meanwhile: the order is its again, the poller resolves it; alerted once ended
            try:
                await self.desk.cancel(order, account)
            except (ExchangeFailure, CredentialsMissing, CredentialUnreadable) as failure:
                logger.info("watched order %s not resolved yet: %s", order.client_order_id, type(failure).__name__)
                return
            order = await self.store.orders.get(order_id)
            if order is None or order.status in LIVE:
                return
        await self._alert_resolved(order)

    async def _alert_resolved(self, order: Order) -> None:
        """End the order's watch and queue its alert in one transaction (so it is sent exactly once)."""
        store = self.store
        strategy = await store.strategies.get(order.strategy_id)
        user = await store.users.get(strategy.user_id) if strategy is not None else None
        held_before = None  # futures: the position before this order's fills, so the alert names what they did
        if strategy is not None and is_contract(order.symbol):
            fills = (await store.orders.fills_for_strategies([strategy.id]))[strategy.id]
            before = compute([f for f in fills if f.fill.order_id != order.id], strategy.quote).assets
            asset = before.get(order.symbol.split("/")[0])
            held_before = asset.held if asset is not None else Decimal(0)
        async with store.db.transaction() as tx:
            reason = await store.order_watches.take(tx, order.id)
            if reason is None:
                return  # another resolver alerted already
            if strategy is not None and user is not None:
                await store.outbox.enqueue(
                    tx, user_id=user.id, chat_id=user.chat_id, kind="info",
                    text=resolved_text(strategy, order, reason, held_before),
                )
        logger.info("watched order %s resolved: %s", order.client_order_id, order.status)
        self.ctx.wake_notifier()

    async def place_now(self, strategy_id: int, desired: DesiredOrder) -> str | None:
        """Place one order for a strategy outside its decisions (/stop's sell) through an intent.

        Returns None when it was sent, or why it was not (too small to place, no price, exchange refusal), or
        `UNCONFIRMED_ORDER` when its fate is not known yet (it is watched: the user is alerted once it ends).
        """
        store = self.store
        strategy = await store.strategies.get(strategy_id)
        account = await store.accounts.get(strategy.account_id) if strategy is not None else None
        if strategy is None or account is None:
            return "the strategy or its account is gone"
        if account.status != "active":
            return "the account's API key does not work (see /accounts)"
        try:
            info = await self.gateway.market(account.venue, desired.symbol)
            ticker = await self.gateway.fetch_ticker(account.venue, desired.symbol)
        except ExchangeFailure as failure:
            return failure.user_message
        if ticker.last is None:
            return f"no price for {desired.symbol}"
        verdict = check_order(
            desired, MarketRules.from_info(info), last_price=ticker.last,
            ledger=Ledger(budget=Decimal("Infinity")), free_quote=None,
        )
        if isinstance(verdict, Refused):
            return BelowMinimum(verdict.reason) if verdict.kind == "minimum" else verdict.reason
        self.ctx.orders_changed(strategy_id)
        async with self.ctx.lock(strategy_id), store.db.transaction() as tx:
            order_id = await store.orders.insert_intent(
                tx, strategy_id=strategy.id, account_id=account.id,
                client_order_id=client_order_id(account.venue, strategy, desired.tag), tag=desired.tag,
                symbol=desired.symbol, side=desired.side, type=desired.type, amount=verdict.amount,
                price=verdict.price, cost=verdict.cost, reserved=verdict.reserve,
                reduce_only=desired.reduce_only,
            )
            self.ctx.orders_changed(strategy_id)
        order = await store.orders.get(order_id)
        await self.desk.send(order, account, closing=True)
        order = await store.orders.get(order_id)
        if order is not None and order.status == OPEN and order.type == "market":
            # A market order has traded by now, but Kraken's answer carries no fill: read it once, so what the
            # caller reports (the /stop summary) includes it.
            await self.desk.refresh(order, account)
            order = await store.orders.get(order_id)
        if order is not None and order.status == UNKNOWN:
            await self.store.order_watches.add(order.id, "stopped by you")
            self._ensure_watcher()
            return UNCONFIRMED_ORDER
        if order is not None and order.status in ("rejected", "canceled"):
            return order.error or f"the order is {order.status}"
        return None

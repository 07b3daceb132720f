"""Everything the handlers reach at run time, opened in order and closed in reverse.

Opening order matters for safety: the master key must open the key store (and a key store must exist when
the main database holds credentials) before anything else runs, so a wrong key stops start-up and changes
nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.config import ConfigError, Settings
from bot.control import CommandExecutor, EngineControl, LocalControl, RemoteControl
from bot.engine.scheduler import Engine
from bot.exchanges.gateway import ExchangeGateway
from bot.exchanges.rate_budget import SharedIpBudget
from bot.master_key import load_master_key
from bot.notifier import Notifier
from bot.services.access import AccessService
from bot.services.accounts import AccountService
from bot.services.backtests import BacktestService
from bot.services.charts import ChartService
from bot.services.drafts import Drafts
from bot.services.intake import IntakeBook
from bot.services.reports import ReportService
from bot.services.settings import SettingsService
from bot.services.strategies import StrategyService
from bot.summary import DailySummary
from bot.vault import Vault
from bot.vault import where as _where
from storage.files import ensure_private_dir
from storage.key_nonces import SharedKeyNonces
from storage.leader import ENGINE_LOCK, LeaderLock
from storage.partitions import AllPartitions, PartitionLeases
from storage.store import Store

logger = logging.getLogger(__name__)

#: A front that has not got the notifier's lock by then says it stands by (the lock is tried every 2 s).
STANDBY_NOTICE_S = 5.0
#: How often an engine checks it still holds its claim on a PostgreSQL database.
ENGINE_CHECK_S = 2.0


async def open_vault(settings: Settings, store: Store) -> Vault:
    """Open the key store with the configured master key, refusing a missing store when credentials exist."""
    master_key = load_master_key(settings)
    dek_ids = await store.accounts.all_dek_ids()
    vault = await Vault.open(settings.keystore, master_key, expect_existing=bool(dek_ids))
    # Data keys with no credential are never deleted automatically: a main database restored from an old
    # backup, or a mistyped STRATA_DATA_DIR, would otherwise make start-up destroy every key. They are
    # harmless (an interrupted /connect leaves one); say so, and leave cleaning to the operator.
    orphans = await vault.dek_ids() - dek_ids
    if orphans and not dek_ids:
        logger.warning(
            "The key store %s holds %d data key(s) but the main database %s has no credentials: "
            "is STRATA_DATA_DIR (or STRATA_DATABASE_URL) the right one?", _where(settings.keystore), len(orphans),
            _where(settings.database),
        )
    elif orphans:
        logger.info("%d data key(s) in the key store belong to no credential (an interrupted /connect)", len(orphans))
    return vault


async def check_startup(settings: Settings) -> None:
    """Open and close the databases and the vault once, so start-up errors surface before polling starts."""
    ensure_private_dir(settings.data_dir)
    store = await Store.open(settings.database, migrate_schema=False)
    try:
        vault = await open_vault(settings, store)
        await vault.close()
        await store.migrate()
    finally:
        await store.close()


async def open_stores_and_gateway(settings: Settings) -> tuple[Store, Vault, ExchangeGateway]:
    """What every role opens first, in this order: the main database (not migrated until the master key has
    opened the key store, so a wrong key changes nothing), the vault, the migration, the exchange gateway."""
    ensure_private_dir(settings.data_dir)
    store = await Store.open(settings.database, migrate_schema=False)
    vault = await open_vault(settings, store)
    await store.migrate()
    gateway = ExchangeGateway.from_settings(settings)
    gateway.attach_paper(store.paper)
    if store.db.backend == "postgresql":  # a front and workers may sign with one Kraken key at once
        gateway.pool.shared_nonces = SharedKeyNonces(store.db)
    return store, vault, gateway


class EngineClaim:
    """Which processes run on a PostgreSQL database, held for the process's life (`ENGINE_LOCK`): one
    `python -m bot run` alone (exclusive), or any number of fronts and workers (shared), never both, so no account
    is ever traded by two engines and no update answered by two bots. Checked every `ENGINE_CHECK_S`; `on_lost` is
    called if the lock went with its connection (the process then stops: started again, it claims afresh)."""

    def __init__(self, store: Store, *, role: str, on_lost: Callable[[], None]) -> None:
        self._shared = role != "run"
        self._lock = LeaderLock(store.db, ENGINE_LOCK, shared=self._shared)
        self._role = role
        self._on_lost = on_lost
        self._watch: asyncio.Task | None = None

    async def take(self) -> None:
        if not await self._lock.try_acquire():
            await self._lock.release()
            raise ConfigError(
                f"A `python -m bot run` is running on this database: stop it before starting a {self._role} (it "
                "runs every account and answers Telegram itself)." if self._shared else
                "Another Strata process runs on this database (a `python -m bot run`, or fronts and workers): run "
                "one `run` per database, or `front` and `worker` processes beside each other."
            )
        self._watch = asyncio.get_running_loop().create_task(self._check(), name="strata-engine-claim")

    async def _check(self) -> None:
        while True:
            await asyncio.sleep(ENGINE_CHECK_S)
            if not await self._lock.still_held():
                break
        logger.error("this %s lost its claim on the database (connection lost): stopping so that no account is "
                     "traded by two engines; start it again to claim afresh", self._role)
        self._on_lost()

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await self._lock.release()


class Runtime:
    """The services bundle shared by all handlers (one per process).

    `role` "run": the engine runs here and the services drive it directly (`LocalControl`). `role` "front": no
    engine in this process; control actions become commands for the workers (`RemoteControl`), and the
    notifier sends the alerts the workers queue in the outbox.
    """

    def __init__(self, settings: Settings, *, role: str = "run") -> None:
        if role not in ("run", "front"):
            raise ValueError(f"unknown role {role!r}")
        self.settings = settings
        self.role = role
        self.intakes = IntakeBook(on_expire=self._intake_expired)
        self.drafts = Drafts()
        self.bot = None
        self.store: Store | None = None
        self.vault: Vault | None = None
        self.gateway = None
        self.control: EngineControl | None = None
        self.accounts = None
        self.strategies = None
        self.reports = None
        self.charts = None
        self.engine = None
        self.notifier = None
        self.settings_service = None
        self.summary = None
        self.backtests = None
        self.access = None
        self._scheduler: AsyncIOScheduler | None = None  # the front's own (in `run` the engine's)
        #: Stops the Telegram application (set by bot/app.py): a front that lost its lock stops.
        self.stop_application: Callable[[], None] | None = None
        self.lost_lead = False
        self._engine_claim: EngineClaim | None = None

    async def start(self, bot) -> None:
        """Open everything in dependency order; the engine reconciles intents and reschedules from the DB."""
        self.bot = bot
        self.store, self.vault, self.gateway = await open_stores_and_gateway(self.settings)
        self.notifier = Notifier(self.store, bot)
        await self.notifier.start()
        if self.store.db.backend == "postgresql":
            self._engine_claim = EngineClaim(self.store, role=self.role, on_lost=self._lost_lead)
            await self._engine_claim.take()
        if self.role == "front" and self.store.db.backend == "postgresql":
            # The front calls the venues from its host too (key checks, /balance, charts): it leases from the
            # per-IP weight the workers of that address share, or together they would pass the venue's limit.
            self.gateway.pool.budgets.shared = SharedIpBudget(self.store.ip_budgets)
        if self.role == "front":
            await self._lead_or_stand_by()
        if self.role == "run":
            self.engine = Engine(self.store, self.vault, self.gateway, self.notifier, self.settings)
            self.control = LocalControl(self.engine)
        else:
            self.control = RemoteControl(self.store, self.vault, self.gateway, self.settings)
            await self.control.start()
        control = self.control
        self.strategies = StrategyService(self.store, control, max_strategies=self.settings.max_strategies_per_user)
        self.access = AccessService(self.store, self.settings, self.strategies)
        self.accounts = AccountService(
            self.store, self.vault, self.gateway, stop_account_strategies=self.strategies.stop_account_strategies,
            strategies_to_stop=self.strategies.account_strategies_to_stop,
            forget_credentials=control.forget_credentials, max_accounts=self.settings.max_accounts_per_user,
        )
        await self.accounts.backfill_fingerprints()
        # `control.clock`: tests (and the demo) replace the engine's clock; the views follow it.
        self.reports = ReportService(self.store, self.accounts, self.gateway, control.clock)
        self.charts = ChartService(self.store, self.strategies, self.gateway, control.clock)
        self.settings_service = SettingsService(self.store)
        self.backtests = BacktestService(self.gateway, self.settings.data_dir, control.clock,
                                         self.strategies.resolve_market)
        if self.engine is not None:
            await self.engine.start()
            scheduler = self.engine.scheduler
        else:
            scheduler = self._scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop())
            scheduler.start()
        # In the background: a slow exchange must not hold start-up (one call per legacy Binance account).
        scheduler.add_job(self.accounts.backfill_owners, id="owner-backfill", replace_existing=True)
        self.summary = DailySummary(self.store, self.reports, self.notifier, control.clock, charts=self.charts)
        self.summary.schedule(scheduler)

    async def _lead_or_stand_by(self) -> None:
        """A front answers users and sends alerts only while it holds the notifier's lock: a second front (by
        mistake, or a standby) waits here, before Telegram's updates are polled, until the first one stops; one
        that loses the lock stops (`stop_application`), so two fronts never answer the same update."""
        self.notifier.on_lost = self._lost_lead
        try:
            await asyncio.wait_for(self.notifier.leading.wait(), STANDBY_NOTICE_S)
        except TimeoutError:
            logger.info("another front is running on this database: standing by until it stops")
            await self.notifier.leading.wait()
            logger.info("the other front stopped: this one takes over")

    def _lost_lead(self) -> None:
        """The notifier's lock (a front) or the claim on the database (`EngineClaim`) went with its connection."""
        self.lost_lead = True
        if self.role == "front":
            logger.error("this front lost its lock on the database (connection lost): stopping so that only one "
                         "front answers users; start it again and it stands by or takes over")
        if self.stop_application is not None:
            self.stop_application()

    async def close(self) -> None:
        if self.summary is not None:
            await self.summary.close()
        if self._scheduler is not None and self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        if self.engine is not None:
            await self.engine.shutdown()
        if self._engine_claim is not None:
            await self._engine_claim.close()
        if isinstance(self.control, RemoteControl):
            await self.control.close()
        if self.notifier is not None:
            await self.notifier.stop()
        if self.gateway is not None:
            await self.gateway.close()
        if self.vault is not None:
            await self.vault.close()
        if self.store is not None:
            await self.store.close()

    async def _intake_expired(self, intake) -> None:
        from handlers.connect import expired

        if self.bot is not None:
            await expired(intake, self.bot)


class WorkerRuntime:
    """`python -m bot worker`: the engine (strategies, fills, streams, key health) and the executor of the
    front's commands, for the accounts this worker owns. No Telegram: alerts wait in the outbox for the front's
    notifier."""

    def __init__(self, settings: Settings, *, ownership=None) -> None:
        self.settings = settings
        #: Which accounts this worker runs: given, else leased partitions on PostgreSQL (every account on SQLite).
        self.ownership = ownership
        self._leases: PartitionLeases | None = None
        self.store: Store | None = None
        self.vault: Vault | None = None
        self.gateway = None
        self.engine: Engine | None = None
        self.control: LocalControl | None = None
        self.commands: CommandExecutor | None = None
        self._engine_claim: EngineClaim | None = None
        #: Set if the engine's claim on the database was lost: the worker stops (bot/cli.py).
        self.lost = asyncio.Event()

    async def start(self) -> None:
        self.store, self.vault, self.gateway = await open_stores_and_gateway(self.settings)
        if self.store.db.backend == "postgresql":
            self._engine_claim = EngineClaim(self.store, role="worker", on_lost=self.lost.set)
            await self._engine_claim.take()
        if self.ownership is None and self.store.db.backend == "postgresql":
            self.ownership = self._leases = await PartitionLeases.start(self.store.db)
            # The per-IP request weight is shared by the workers (and fronts) of this host, through the database.
            self.gateway.pool.budgets.shared = SharedIpBudget(self.store.ip_budgets)
        if self.ownership is None:
            self.ownership = AllPartitions()
        self.engine = Engine(self.store, self.vault, self.gateway, None, self.settings, ownership=self.ownership)
        self.control = LocalControl(self.engine)
        strategies = StrategyService(self.store, self.control, max_strategies=self.settings.max_strategies_per_user)
        self.commands = CommandExecutor(self.store, self.control, self.ownership, strategies=strategies)
        await self.engine.start()
        self.commands.start()

    async def close(self) -> None:
        if self.commands is not None:
            await self.commands.close()
        if self.engine is not None:
            await self.engine.shutdown()
        if self._leases is not None:
            await self._leases.close()  # the partitions go to the other workers at once
        if self._engine_claim is not None:
            await self._engine_claim.close()
        if self.gateway is not None:
            await self.gateway.close()
        if self.vault is not None:
            await self.vault.close()
        if self.store is not None:
            await self.store.close()

"""`python -m bot front` and `python -m bot worker` as an operator starts them on PostgreSQL: real processes, only
the contract's environment, the fake Telegram and fake exchanges. The front never runs the engine: every control
action goes to the worker as a command and the answer waits for the worker's outcome; alerts the worker queues
are sent by the front's notifier, once, even across a front restart. Also `migrate`, and the one-line refusals.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import sys
from decimal import Decimal
from pathlib import Path

from bot.vault import Vault
from storage.migrations import MIGRATIONS, schema_version
from storage.store import Store
from tests.chat_helpers import USER, register
from tests.databases import fresh_postgres_database
from tests.plugins.strata import MASTER_KEY
from tests.test_run_process import run_env, run_to_end

_names = iter(range(1, 1_000_000))


class Role:
    """A running `python -m bot <role>` whose output is drained (and kept) so a chatty log never blocks it."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._drain = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls, role: str, env: dict[str, str], cwd: Path) -> Role:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", role, cwd=cwd, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        return cls(proc)

    async def _read(self) -> None:
        async for line in self.proc.stdout:
            self.lines.append(line.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def wait_for_line(self, text: str, timeout: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while text not in self.output:
            assert self.proc.returncode is None, self.output
            assert asyncio.get_running_loop().time() < deadline, f"no {text!r} in:\n{self.output}"
            await asyncio.sleep(0.1)

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout=30)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        await self._drain
        return self.proc.returncode


class Chat:
    """The user's side of the fake Telegram."""

    def __init__(self, tg) -> None:
        self.tg = tg

    async def send(self, text: str) -> None:
        self.tg.user_sends(USER, text)

    async def reply(self, contains: str, timeout: float = 30.0):
        needle = contains.lower()
        return await self.tg.wait_for_message(
            USER, timeout=timeout, predicate=lambda record: needle in (record.text or "").lower()
        )

    async def press(self, message, button: str) -> None:
        self.tg.press_button(USER, message, button)

    async def connect(self, venue_button: str, api_key: str, secret: str) -> None:
        """/connect through the chat: the venue's button, the API key, then the secret."""
        await self.send("/connect")
        await self.press(await self.reply("Which exchange"), venue_button)
        await self.reply("send the")
        await self.send(api_key)
        await self.reply("Now send")
        await self.send(secret)
        await self.reply("Connected")


async def pg_env(postgres_server, fake_telegram, fake_exchanges, tmp_path: Path) -> dict[str, str]:
    prefix = f"r{os.getpid()}_{next(_names)}"
    main = await fresh_postgres_database(postgres_server, f"{prefix}_main", migrated=False)
    keys = await fresh_postgres_database(postgres_server, f"{prefix}_keys", migrated=False)
    return run_env(fake_telegram, fake_exchanges, tmp_path, STRATA_DATABASE_URL=main, STRATA_KEYSTORE_URL=keys,
                   STRATA_FILL_POLL_SECONDS="0.5")


async def test_migrate_prepares_a_fresh_postgres_database_and_key_store(
    postgres_server, fake_telegram, fake_exchanges, tmp_path
):
    env = await pg_env(postgres_server, fake_telegram, fake_exchanges, tmp_path)

    code, out, err = await run_to_end("migrate", env=env, cwd=tmp_path)

    assert code == 0, err
    store = await Store.open(env["STRATA_DATABASE_URL"], migrate_schema=False)
    try:
        assert await schema_version(store.db) == len(MIGRATIONS)
        assert await store.db.has_table("commands")
    finally:
        await store.close()
    assert out.strip() == f"Schema version {len(MIGRATIONS)}; the key store is ready."
    vault = await Vault.open(env["STRATA_KEYSTORE_URL"], base64.b64decode(MASTER_KEY), expect_existing=False)
    await vault.close()
    # Again: nothing left to do, same answer.
    code, out, _ = await run_to_end("migrate", env=env, cwd=tmp_path)
    assert code == 0 and str(len(MIGRATIONS)) in out
    assert not (tmp_path / "data" / "strata.db").exists()


async def test_front_and_worker_refuse_sqlite_in_one_line(fake_telegram, fake_exchanges, tmp_path):
    env = run_env(fake_telegram, fake_exchanges, tmp_path)
    for role in ("front", "worker"):
        code, out, err = await run_to_end(role, env=env, cwd=tmp_path)
        assert code == 2 and out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "STRATA_DATABASE_URL" in lines[0] and "postgresql" in lines[0], err
    assert not (tmp_path / "data" / "strata.db").exists()
    assert fake_telegram.sent == []


async def test_front_and_worker_on_postgres_connect_allocate_alert_pause_stop_and_restart_the_front(
    postgres_server, fake_telegram, fake_exchanges, tmp_path
):
    env = await pg_env(postgres_server, fake_telegram, fake_exchanges, tmp_path)
    assert (await run_to_end("migrate", env=env, cwd=tmp_path))[0] == 0
    worker = await Role.start("worker", env, tmp_path)
    front = await Role.start("front", env, tmp_path)
    store = await Store.open(env["STRATA_DATABASE_URL"], migrate_schema=False)
    chat = Chat(fake_telegram)
    try:
        await worker.wait_for_line("Strata worker up")
        await chat.send("/start")
        await chat.reply("Strata")
        # Several roles share a host: neither took the data folder's lock.
        assert not (tmp_path / "data" / "strata.lock").exists()

        # /connect: the front checks and seals the key (it holds the vault, not the engine). /allocate a DCA: the
        # worker runs it (first buy at once) and the front sends its fill alert.
        binance = fake_exchanges.books["binance"]
        api_key, secret, bought = await _binance_dca_bought(chat, fake_exchanges, amount=20)
        assert "Budget 100.00 USDT" in bought.text
        [dca] = await store.strategies.list_for_user(USER)
        assert len(binance.all_orders(api_key)) == 1

        # /pause and /resume: answered once the worker has done it.
        await chat.send(f"/pause {dca.id}")
        await chat.reply("paused")
        assert (await store.strategies.get(dca.id)).status == "paused"
        await chat.send(f"/resume {dca.id}")
        await chat.reply("running again")
        assert (await store.strategies.get(dca.id)).status == "active"
        # /edit: the worker makes the change under the strategy's lock; the answer shows what it made.
        await chat.send(f"/edit {dca.id} budget=150 name=core")
        await chat.press(await chat.reply("Change"), "Confirm change")
        await chat.reply("changed")
        edited = await store.strategies.get(dca.id)
        assert (edited.budget, edited.name) == (Decimal(150), "core")
        audited = [(e.action, e.outcome) for e in await store.audit.page(user_id=USER, limit=50)]
        assert audited.count(("edit", "ok")) == 1 and audited.count(("pause", "ok")) == 1, audited

        # The front goes away; the worker goes on and queues a fill alert meanwhile (a Kraken grid's buy fills).
        kraken = fake_exchanges.books["kraken"]
        kraken.set_price("BTC/USD", "65000")
        k_key, k_secret = register(fake_exchanges, "kraken", balances={"USD": Decimal(5000)})
        await chat.connect("Kraken", k_key, k_secret)
        await chat.send("/allocate kraken grid 500 BTC/USD low=60000 high=70000 levels=5")
        await chat.press(await chat.reply("Allocation summary"), "Confirm allocation")
        await chat.reply("is running")
        await _wait_until(lambda: any(o.side == "buy" and o.price == 62500 for o in kraken.open_orders(k_key)))
        assert await front.stop() == 0, front.output
        kraken.set_price("BTC/USD", "62000")
        await _wait_until_async(lambda: _fill_alert_queued(store, "at 62,500.0 USD"))
        front = await Role.start("front", env, tmp_path)
        await chat.reply("at 62,500.0 USD", timeout=30)

        # /stop and sell: the worker sells and the summary shows what the venue recorded.
        await chat.send(f"/stop {dca.id}")
        await chat.press(await chat.reply("Keep what it bought"), "Stop and sell")
        summary = await chat.reply("stopped; its budget is released", timeout=30)
        assert "Sold" in summary.text and "at market" in summary.text, summary.text
        assert (await store.strategies.get(dca.id)).status == "stopped"
        assert binance.open_orders(api_key) == []
        sells = [t for t in binance.trades(api_key, "BTC/USDT") if t.side == "sell"]
        assert len(sells) == 1

        # /disconnect: the worker stops the grid and cancels its resting orders before the front shreds the key.
        assert kraken.open_orders(k_key)
        await chat.send("/disconnect kraken")
        await chat.press(await chat.reply("Disconnect"), "Confirm disconnect")
        await chat.reply("destroyed", timeout=60)
        assert kraken.open_orders(k_key) == []
        assert [a.label for a in await store.accounts.list_for_user(USER)] == ["binance"]
        await asyncio.sleep(2)  # time for a doubled alert to show
    finally:
        await store.close()
        front_code = await front.stop()
        worker_code = await worker.stop()
    assert front_code == 0, front.output
    assert worker_code == 0, worker.output
    texts = [m.text or "" for m in fake_telegram.sent if m.chat_id == USER]
    assert len([t for t in texts if "at 62,500.0 USD" in t and "Bought" in t]) == 1, texts
    assert len([t for t in texts if "Bought" in t and "BTC/USDT" in t]) == 1, texts
    for output in (front.output, worker.output):
        assert "Traceback" not in output
        assert secret not in output and k_secret not in output
        assert fake_telegram.token.split(":")[1] not in output


async def test_the_fronts_binance_requests_count_in_the_weight_the_workers_share(
    postgres_server, fake_telegram, fake_exchanges, tmp_path
):
    """The front also calls Binance from the host (the key check of /connect, /balance, /allocate's checks,
    charts): its weight must come out of the count the workers of that address lease from, or together they
    pass the venue's per-IP limit."""
    async with _front_and_workers(postgres_server, fake_telegram, fake_exchanges, tmp_path, workers=0) as (
        front, _workers, store, chat
    ):
        api_key, secret = register(fake_exchanges, "binance", balances={"USDT": Decimal(1000)})
        await chat.connect("Binance Spot", api_key, secret)
        await chat.send("/balance")
        await chat.reply("USDT")
        leased = await store.db.fetchall("SELECT budget, used FROM ip_budgets")
        assert await front.stop() == 0, front.output
    sent = [r for r in fake_exchanges.books["binance"].requests if r.path.startswith("/api/")]
    assert sent, "the front made no Binance request"
    assert any("binance" in row["budget"] and row["used"] > 0 for row in leased), leased


async def _binance_dca_bought(chat: Chat, fake_exchanges, *, amount: int):
    """Connect a Binance Spot key through the chat and allocate a DCA of 100 USDT; return the key, the secret
    and its first buy's alert."""
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    api_key, secret = register(fake_exchanges, "binance", balances={"USDT": Decimal(1000)})
    await chat.connect("Binance Spot", api_key, secret)
    await chat.send(f"/allocate binance dca 100 BTC/USDT every=1d amount={amount}")
    await chat.press(await chat.reply("Allocation summary"), "Confirm allocation")
    await chat.reply("is running")
    return api_key, secret, await chat.reply("Bought", timeout=30)


async def _nothing_pending(store: Store) -> bool:
    return (await store.outbox.counts()).get("pending", 0) == 0


async def _fill_alert_queued(store: Store, text: str) -> bool:
    """The alert is in the outbox, not sent yet (no front is running)."""
    return any(a.status == "pending" and text in a.text for a in await store.outbox.list_for_chat(USER))


async def _wait_until(predicate, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def _wait_until_async(predicate, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


def test_compose_and_dockerfile_start_only_real_roles_from_the_packaged_code():
    """Docker is not testable on every machine (README): at least the files name what exists."""
    import re

    from bot.cli import build_parser

    repo = Path(__file__).resolve().parents[1]
    roles = set(build_parser()._subparsers._group_actions[0].choices)
    compose = (repo / "compose.yaml").read_text()
    commands = re.findall(r'command: \["([a-z-]+)"\]', compose)
    assert sorted(commands) == ["front", "migrate", "worker", "worker"] and set(commands) <= roles
    dockerfile = (repo / "Dockerfile").read_text()
    for package in ("bot", "handlers", "storage"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert ".env" in (repo / ".dockerignore").read_text().split()


async def test_a_worker_killed_with_an_order_in_flight_is_replaced_by_the_other_one_order_one_alert(
    postgres_server, fake_telegram, fake_exchanges, tmp_path
):
    """`python -m bot front` and two `python -m bot worker` on one PostgreSQL database. The worker running the
    user's account is SIGKILLed while the DCA's first buy is on the venue but its answer has not come back. The
    other worker takes the dead one's partitions within 10 s, finds the order by its client order id and records
    it: exactly one order on the exchange, one fill alert in the chat (sent by the front)."""
    from storage.partitions import PARTITIONS

    async with _front_and_workers(postgres_server, fake_telegram, fake_exchanges, tmp_path, workers=2) as (
        _front, workers, store, chat
    ):
        binance = fake_exchanges.books["binance"]
        binance.set_price("BTC/USDT", "50000")
        api_key, secret = register(fake_exchanges, "binance", balances={"USDT": Decimal(1000)})
        await chat.connect("Binance Spot", api_key, secret)
        [account] = await store.accounts.list_for_user(USER)

        binance.inject("hold", path="/api/v3/order", method="POST", seconds=8.0)  # the answer comes too late
        await chat.send("/allocate binance dca 100 BTC/USDT every=1d amount=20")
        await chat.press(await chat.reply("Allocation summary"), "Confirm allocation")
        await _wait_until(lambda: len(binance.all_orders(api_key)) == 1)

        owner, survivor = await _owner_and_other(store, workers, account.id)
        owner.proc.send_signal(signal.SIGKILL)
        killed = asyncio.get_running_loop().time()
        await owner.proc.wait()

        bought = await chat.reply("Bought", timeout=20)
        took = asyncio.get_running_loop().time() - killed
        assert took < 10.0, f"the fill alert came {took:.1f} s after the kill"
        assert "Budget 100.00 USDT" in bought.text
        await asyncio.sleep(2.0)  # nothing more comes
        assert len(binance.all_orders(api_key)) == 1
        orders = await store.orders.in_states(("intent", "sent", "open", "closed", "canceled", "rejected", "unknown"))
        assert [o.status for o in orders] == ["closed"]
        assert len(await store.orders.fills_for_strategy(orders[0].strategy_id)) == 1
        fills = [m for m in fake_telegram.sent if m.chat_id == USER and "Bought" in (m.text or "")]
        assert len(fills) == 1
        held = await store.db.fetchall("SELECT held FROM engine_workers")
        assert sorted(r["held"] for r in held)[-1] == PARTITIONS  # the survivor runs everything now
        assert survivor.proc.returncode is None


async def test_a_stop_and_sell_whose_worker_dies_mid_sale_is_finished_by_the_other_and_answered(
    postgres_server, fake_telegram, fake_exchanges, tmp_path
):
    """The user's "Stop and sell" is a command the owning worker runs; that worker is SIGKILLed while the sale
    is on the venue and its answer not back. The other worker takes the partitions, sees the command's worker
    gone and runs it again at once (not after minutes): the sale is found, never placed twice, and the user
    gets the stop's summary within the front's wait, not "check /status in a minute"."""
    async with _front_and_workers(postgres_server, fake_telegram, fake_exchanges, tmp_path, workers=2) as (
        _front, workers, store, chat
    ):
        api_key, _secret, _bought = await _binance_dca_bought(chat, fake_exchanges, amount=20)
        binance = fake_exchanges.books["binance"]
        [account] = await store.accounts.list_for_user(USER)
        [dca] = await store.strategies.list_for_user(USER)

        binance.inject("hold", path="/api/v3/order", method="POST", seconds=8.0)  # the sale's answer is late
        await chat.send(f"/stop {dca.id}")
        await chat.press(await chat.reply("Keep what it bought"), "Stop and sell")
        await _wait_until(lambda: any(o.side == "sell" for o in binance.all_orders(api_key)))
        owner, survivor = await _owner_and_other(store, workers, account.id)
        owner.proc.send_signal(signal.SIGKILL)
        await owner.proc.wait()

        summary = await chat.reply("stopped; its budget is released", timeout=25)  # the front waits 30 s
        assert "Sold" in summary.text and "at market" in summary.text, summary.text
        await asyncio.sleep(2.0)  # nothing more comes
        sells = [t for t in binance.trades(api_key, "BTC/USDT") if t.side == "sell"]
        assert len(sells) == 1 and len([o for o in binance.all_orders(api_key) if o.side == "sell"]) == 1
        assert f"{sells[0].amount.normalize():f}" in summary.text, summary.text
        assert (await store.strategies.get(dca.id)).status == "stopped"
        texts = [m.text or "" for m in fake_telegram.sent if m.chat_id == USER]
        assert not any("has not finished" in t for t in texts), texts
        assert survivor.proc.returncode is None
        assert "run again" in survivor.output


@contextlib.asynccontextmanager
async def _front_and_workers(postgres_server, fake_telegram, fake_exchanges, tmp_path: Path, *, workers: int):
    """A migrated PostgreSQL database, `workers` workers holding an even share of the partitions each and a front
    the user has said /start to; yields (front, workers, store, chat) and stops them all (a killed worker's
    output drained)."""
    env = await pg_env(postgres_server, fake_telegram, fake_exchanges, tmp_path)
    assert (await run_to_end("migrate", env=env, cwd=tmp_path))[0] == 0
    started = [await Role.start("worker", env, tmp_path) for _ in range(workers)]
    front = await Role.start("front", env, tmp_path)
    store = await Store.open(env["STRATA_DATABASE_URL"], migrate_schema=False)
    chat = Chat(fake_telegram)
    try:
        if started:
            await _split_evenly(started, store)
        await chat.send("/start")
        await chat.reply("Strata")
        yield front, started, store, chat
    finally:
        await store.close()
        await front.stop()
        for worker in started:
            if worker.proc.returncode is None:
                await worker.stop()
            else:
                await worker._drain


async def _split_evenly(workers: list[Role], store: Store) -> None:
    """Wait until the workers are up and hold half the partitions each."""
    from storage.partitions import PARTITIONS

    for worker in workers:
        await worker.wait_for_line("Strata worker up")

    async def split() -> bool:
        rows = await store.db.fetchall("SELECT held FROM engine_workers ORDER BY worker_id")
        return [r["held"] for r in rows] == [PARTITIONS // 2] * len(workers)

    await _wait_until_async(split, timeout=30)


async def _owner_and_other(store: Store, workers: list[Role], account_id: int) -> tuple[Role, Role]:
    """The worker whose partition lock covers the account, and the other one."""
    from storage.partitions import PARTITION_LOCK, partition_of

    (owner_id,) = (await store.db.fetchone(
        "SELECT w.worker_id FROM engine_workers w JOIN pg_locks l ON l.pid = w.backend "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = ? AND l.objid = ?",
        (PARTITION_LOCK, partition_of(account_id)),
    ))
    owner_pid = int(owner_id.split(":")[1])
    [owner] = [w for w in workers if w.proc.pid == owner_pid]
    [other] = [w for w in workers if w is not owner]
    return owner, other


async def test_two_fronts_by_mistake_answer_each_update_and_send_each_alert_once_and_the_second_takes_over(
    postgres_server, fake_telegram, fake_exchanges, tmp_path
):
    """Two `python -m bot front` on one database (an operator started a second by mistake) and a worker. Only the
    front holding the notifier's lock polls Telegram and sends: the other says it stands by. Every command is
    answered once and every alert sent once; SIGKILL the first front and the second takes over, answering and
    sending, still once each."""
    env = await pg_env(postgres_server, fake_telegram, fake_exchanges, tmp_path)
    assert (await run_to_end("migrate", env=env, cwd=tmp_path))[0] == 0
    worker = await Role.start("worker", env, tmp_path)
    first = await Role.start("front", env, tmp_path)
    second = None
    store = await Store.open(env["STRATA_DATABASE_URL"], migrate_schema=False)
    chat = Chat(fake_telegram)
    try:
        await worker.wait_for_line("Strata worker up")
        await first.wait_for_line("Strata is up")
        second = await Role.start("front", env, tmp_path)
        await second.wait_for_line("standing by")
        assert "Strata is up" not in second.output
        third = await Role.start("front", env, tmp_path)  # a standby stopped while standing by stops cleanly
        await third.wait_for_line("standing by")
        assert await third.stop() == 0, third.output
        assert "Traceback" not in third.output

        await chat.send("/start")
        await chat.reply("Strata")
        await _binance_dca_bought(chat, fake_exchanges, amount=10)
        # Killed once it has recorded the alert as sent. (Killed in the instant between Telegram's answer and that
        # record, a front cannot know the alert went out: the next one sends it again, Telegram having no way to
        # ask. At least once, never lost.)
        await _wait_until_async(lambda: _nothing_pending(store))

        first.proc.send_signal(signal.SIGKILL)
        await first.proc.wait()
        await second.wait_for_line("takes over", timeout=20)
        await second.wait_for_line("Strata is up", timeout=20)
        await chat.send("/accounts")
        await chat.reply("Your accounts", timeout=20)
        await chat.send("/allocate binance dca 50 ETH/USDT every=1d amount=10")
        await chat.press(await chat.reply("Allocation summary"), "Confirm allocation")
        await chat.reply("Bought 0.0", timeout=30)  # queued by the worker, sent by the second front
        await asyncio.sleep(2)  # time for a doubled answer or alert to show
    finally:
        await store.close()
        if first.proc.returncode is None:
            await first.stop()
        else:
            await first._drain
        second_code = await second.stop() if second is not None else 0
        worker_code = await worker.stop()
    assert second_code == 0, second.output
    assert worker_code == 0, worker.output
    answers = [m for m in fake_telegram.outbox if m.chat_id == USER]  # messages and their edits
    for needle, count in (("Connected", 1), ("Your accounts", 1), ("is running", 2)):  # answered by one front
        assert len({m.message_id for m in answers if needle in (m.text or "")}) == count, needle
    buys = [m.text or "" for m in fake_telegram.sent if m.chat_id == USER and "Bought" in (m.text or "")]
    assert len(buys) == len(set(buys)) == 2, buys
    assert "Traceback" not in second.output + first.output


async def test_a_run_and_workers_never_trade_on_one_database_together(
    postgres_server, fake_telegram, fake_exchanges, tmp_path
):
    """`python -m bot run` runs every account and answers Telegram itself: beside engine workers or a front, or a
    second `run`, on the same PostgreSQL database, accounts would be traded twice or updates answered twice.
    Whichever comes second refuses in one line and does nothing; once the first stops, the other starts."""
    env = await pg_env(postgres_server, fake_telegram, fake_exchanges, tmp_path)
    assert (await run_to_end("migrate", env=env, cwd=tmp_path))[0] == 0
    worker = await Role.start("worker", env, tmp_path)
    try:
        await worker.wait_for_line("Strata worker up")
        other_folder = tmp_path / "elsewhere"  # another host's `run`: its own data folder, the same database
        other_folder.mkdir()
        code, out, err = await run_to_end("run", env={**env, "STRATA_DATA_DIR": str(other_folder / "data")},
                                          cwd=other_folder)
        assert code == 2, (out, err)
        assert err.strip().splitlines()[-1].startswith("strata: Another Strata process runs on this database"), err
        assert "Traceback" not in out + err
    finally:
        assert await worker.stop() == 0, worker.output

    run = await Role.start("run", env, tmp_path)
    try:
        await run.wait_for_line("Strata is up")
        for role in ("worker", "front"):
            code, out, err = await run_to_end(role, env=env, cwd=tmp_path)
            assert code == 2, (out, err)
            assert err.strip().splitlines()[-1] == (
                f"strata: A `python -m bot run` is running on this database: stop it before starting a {role} (it "
                "runs every account and answers Telegram itself)."
            ), err
            assert "Strata worker up" not in out + err and "Strata is up" not in out + err
    finally:
        assert await run.stop() == 0, run.output

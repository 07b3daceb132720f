"""`python -m bot wind-down` as the host runs it: a real process on the data folder a real bot used, the fake
Telegram and fake Binance Spot and Kraken on 127.0.0.1. Three users, two venues: no open order left, holdings
sold, an empty key store, a message to each user; a running bot makes it refuse and change nothing; an order it
could not cancel makes it exit non-zero and keep that key, and a second run finishes the job."""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import sys
import time
from decimal import Decimal
from pathlib import Path

from bot.vault import Vault
from storage.store import Store
from tests.chat_helpers import connect_with_key
from tests.plugins.strata import MASTER_KEY, strata_env
from tests.test_chat_strategies import allocate_one_line, open_orders, wait_for_open_orders
from tests.test_run_process import start_bot, stop_bot

REPO = Path(__file__).resolve().parents[1]
ALICE, BOB, CAROL = 1001, 2002, 3003
HOST_MESSAGE = "Strata Club closes on Friday: thank you all!"


async def wind_down(fake_telegram, fake_exchanges, data_dir: Path, *args: str) -> tuple[int, str, str, float]:
    """Run the command in its own process (the fakes answer from this test's loop meanwhile)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(data_dir.parent), "PYTHONPATH": str(REPO),
           **strata_env(fake_telegram, fake_exchanges, data_dir)}
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "wind-down", *args, cwd=data_dir.parent, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, out.decode(), err.decode(), time.monotonic() - started


async def three_users_on_two_venues(make_strata, fake_exchanges) -> dict[int, dict[str, str]]:
    """Alice: a bought DCA on Binance and a resting grid on Kraken; Bob: a bought DCA on Kraken; Carol: a resting
    grid on Binance. Returns each user's API key per venue."""
    binance, kraken = fake_exchanges.books["binance"], fake_exchanges.books["kraken"]
    binance.set_price("BTC/USDT", "50000")
    binance.set_price("ETH/USDT", "2500")
    kraken.set_price("BTC/USD", "65000")
    keys: dict[int, dict[str, str]] = {ALICE: {}, BOB: {}, CAROL: {}}
    async with make_strata() as s:
        for user in keys:
            await s.send(user, "/start")
            await s.next_reply(user, contains="Strata")
        _, keys[ALICE]["binance"] = await connect_with_key(s, fake_exchanges, "binance", user=ALICE,
                                                           balances={"USDT": Decimal(1000)})
        await allocate_one_line(s, "/allocate binance dca 100 BTC/USDT every=1d amount=20", user=ALICE)
        await s.next_reply(ALICE, contains="Bought", timeout=15)
        _, keys[ALICE]["kraken"] = await connect_with_key(s, fake_exchanges, "kraken", user=ALICE,
                                                          balances={"USD": Decimal(5000)})
        await allocate_one_line(s, "/allocate kraken grid 500 BTC/USD low=60000 high=70000 levels=5", user=ALICE)
        await wait_for_open_orders(fake_exchanges, "kraken", keys[ALICE]["kraken"])
        await s.runtime.engine.settle()  # the whole ladder placed
        _, keys[BOB]["kraken"] = await connect_with_key(s, fake_exchanges, "kraken", user=BOB,
                                                        balances={"USD": Decimal(1000)})
        await allocate_one_line(s, "/allocate kraken dca 100 BTC/USD every=1d amount=20", user=BOB)
        await s.next_reply(BOB, contains="Bought", timeout=15)
        _, keys[CAROL]["binance"] = await connect_with_key(s, fake_exchanges, "binance", user=CAROL,
                                                           balances={"USDT": Decimal(1000)})
        await allocate_one_line(s, "/allocate binance grid 300 ETH/USDT low=2000 high=3000 levels=4", user=CAROL)
        await wait_for_open_orders(fake_exchanges, "binance", keys[CAROL]["binance"])
        await s.runtime.engine.settle()
    return keys


async def key_store_and_accounts(data_dir: Path) -> tuple[set[str], list]:
    vault = await Vault.open(data_dir / "keystore.db", base64.b64decode(MASTER_KEY), expect_existing=True)
    store = await Store.open(data_dir / "strata.db", migrate_schema=False)
    try:
        accounts = [a for user in (ALICE, BOB, CAROL) for a in await store.accounts.list_for_user(user)]
        return await vault.dek_ids(), accounts
    finally:
        await vault.close()
        await store.close()


async def test_wind_down_sell_closes_three_users_on_two_venues(make_strata, fake_telegram, fake_exchanges, tmp_path):
    keys = await three_users_on_two_venues(make_strata, fake_exchanges)
    data_dir = tmp_path / "data"
    assert open_orders(fake_exchanges, "kraken", keys[ALICE]["kraken"])
    assert fake_exchanges.books["kraken"].key(keys[BOB]["kraken"]).total("BTC") > 0

    code, out, err, took = await wind_down(fake_telegram, fake_exchanges, data_dir, "--sell", "--message", HOST_MESSAGE)

    assert code == 0, err + out
    print(f"wind-down --sell of 3 users, 4 accounts: {took:.1f} s")
    for user, venues in keys.items():
        for venue, api_key in venues.items():
            assert open_orders(fake_exchanges, venue, api_key) == [], (user, venue)
            wallet = fake_exchanges.books[venue].key(api_key)
            assert wallet.total("BTC") == 0 and wallet.total("ETH") < Decimal("0.0001"), (user, venue)
    dek_ids, accounts = await key_store_and_accounts(data_dir)
    assert dek_ids == set()
    assert len(accounts) == 4 and {a.status for a in accounts} == {"key_removed"}
    for user in keys:
        notice = await fake_telegram.wait_for_message(user, timeout=10, predicate=lambda r: "closes" in (r.text or ""))
        assert HOST_MESSAGE in notice.text
        report = await fake_telegram.wait_for_message(user, timeout=10, predicate=lambda r: "closed" in (r.text or ""))
        assert "Your API keys were deleted" in report.text
        assert f"user {user}: stopped {2 if user == ALICE else 1} strateg" in out
    bob = await fake_telegram.wait_for_message(BOB, after=0, predicate=lambda r: "service is closed" in (r.text or ""))
    sells = [t for t in fake_exchanges.books["kraken"].trades(keys[BOB]["kraken"], "BTC/USD") if t.side == "sell"]
    assert f"Sold {sum(t.amount for t in sells):.8f}".rstrip("0") in bob.plain_text
    assert "Key store emptied" in out and "still queued" not in out
    store = await Store.open(data_dir / "strata.db", migrate_schema=False)
    try:
        for user in keys:
            [entry] = [e for e in await store.audit.page(user_id=user) if e.action == "wind-down"]
            assert entry.actor_id is None and entry.outcome == "ok" and "sell" in entry.detail
        assert {s.status for user in keys for s in await store.strategies.list_for_user(user)} == {"stopped"}
    finally:
        await store.close()


async def test_wind_down_refuses_while_the_bot_runs_and_changes_nothing(
    make_strata, fake_telegram, fake_exchanges, tmp_path
):
    keys = await three_users_on_two_venues(make_strata, fake_exchanges)
    data_dir = tmp_path / "data"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(REPO),
           **strata_env(fake_telegram, fake_exchanges, data_dir)}
    bot = await start_bot(fake_telegram, env, tmp_path, user_id=4004)  # a newcomer: the others have unread alerts
    try:
        before = (data_dir / "keystore.db").read_bytes()
        resting = open_orders(fake_exchanges, "kraken", keys[ALICE]["kraken"])
        sent = len(fake_telegram.outbox)

        code, out, err, _ = await wind_down(fake_telegram, fake_exchanges, data_dir, "--sell")

        assert code != 0
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "stop it first" in lines[0] and "Traceback" not in err, err
        assert out == ""
        assert (data_dir / "keystore.db").read_bytes() == before
        assert open_orders(fake_exchanges, "kraken", keys[ALICE]["kraken"]) == resting
        assert len(fake_telegram.outbox) == sent
    finally:
        output = await stop_bot(bot)
    assert bot.returncode == 0, output


async def test_wind_down_keeps_a_key_whose_orders_it_could_not_cancel_and_a_second_run_finishes(
    make_strata, fake_telegram, fake_exchanges, tmp_path
):
    keys = await three_users_on_two_venues(make_strata, fake_exchanges)
    data_dir = tmp_path / "data"
    kraken = fake_exchanges.books["kraken"]
    kraken.inject("server_error", count=1000, path="CancelOrder")

    code, out, err, took = await wind_down(fake_telegram, fake_exchanges, data_dir)

    print(f"wind-down with Kraken refusing every cancel: {took:.1f} s")
    assert code == 1, err + out
    assert "could not be cancelled" in err and "NOT CANCELLED" in out
    assert open_orders(fake_exchanges, "kraken", keys[ALICE]["kraken"])  # still resting: its key is kept
    assert open_orders(fake_exchanges, "binance", keys[CAROL]["binance"]) == []
    dek_ids, accounts = await key_store_and_accounts(data_dir)
    kept = [a for a in accounts if a.status != "key_removed"]
    assert [(a.user_id, a.venue) for a in kept] == [(ALICE, "kraken")] and len(dek_ids) == 1
    alice = await fake_telegram.wait_for_message(ALICE, after=0, predicate=lambda r: "could not be" in (r.text or ""))
    assert "cancel them on the exchange" in alice.text
    assert fake_exchanges.books["binance"].key(keys[ALICE]["binance"]).total("BTC") > 0  # no --sell: kept

    kraken.faults.clear()
    told = len([r for r in fake_telegram.outbox if r.chat_id == CAROL])
    code, out, err, took = await wind_down(fake_telegram, fake_exchanges, data_dir)

    print(f"wind-down again once Kraken cancels: {took:.1f} s")
    assert code == 0, err + out
    assert open_orders(fake_exchanges, "kraken", keys[ALICE]["kraken"]) == []
    dek_ids, accounts = await key_store_and_accounts(data_dir)
    assert dek_ids == set() and {a.status for a in accounts} == {"key_removed"}
    assert f"user {CAROL}: already closed" in out
    assert len([r for r in fake_telegram.outbox if r.chat_id == CAROL]) == told  # not told twice


async def test_wind_down_with_an_unreadable_key_reports_its_orders_and_still_destroys_every_key(
    make_strata, fake_telegram, fake_exchanges, tmp_path
):
    keys = await three_users_on_two_venues(make_strata, fake_exchanges)
    data_dir = tmp_path / "data"
    resting = open_orders(fake_exchanges, "binance", keys[CAROL]["binance"])
    with sqlite3.connect(data_dir / "strata.db") as db:  # while no bot runs: one flipped byte in Carol's key
        [(account_id, ciphertext)] = db.execute(
            "SELECT c.account_id, c.ciphertext FROM credentials c JOIN accounts a ON a.id = c.account_id "
            "WHERE a.user_id = ?", (CAROL,)
        ).fetchall()
        db.execute("UPDATE credentials SET ciphertext = ? WHERE account_id = ?",
                   (bytes([ciphertext[0] ^ 1]) + ciphertext[1:], account_id))

    code, out, err, _ = await wind_down(fake_telegram, fake_exchanges, data_dir, "--sell")

    assert code == 1, err + out
    assert "Traceback" not in err
    assert f"user {CAROL}:" in out and f"NOT CANCELLED ({len(resting)})" in out, out
    assert open_orders(fake_exchanges, "binance", keys[CAROL]["binance"]) == resting
    carol = await fake_telegram.wait_for_message(CAROL, after=0, predicate=lambda r: "could not be" in (r.text or ""))
    assert "cancel them on the exchange" in carol.text
    dek_ids, accounts = await key_store_and_accounts(data_dir)
    assert dek_ids == set() and {a.status for a in accounts} == {"key_removed"}  # a key that cannot act: destroyed
    assert open_orders(fake_exchanges, "kraken", keys[ALICE]["kraken"]) == []  # everyone else is closed
    assert fake_exchanges.books["kraken"].key(keys[BOB]["kraken"]).total("BTC") == 0

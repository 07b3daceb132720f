"""Crash safety in a real process: the engine is SIGKILLed at a named point of the order path, then restarted.

The fake Binance runs in this (parent) process; the engine runs in a child process on database files in
tmp_path, killed by the engine's test hook (`STRATA_CRASH_AT`). A second child on the same files must end
with exactly one order on the exchange and exactly one fill alert, whatever the point of the crash.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from storage.store import Store
from tests.crash_child import API_KEY, SECRET

ROOT = Path(__file__).resolve().parent.parent


async def run_child(data_dir: Path, urls: str, mode: str, crash_at: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "STRATA_CRASH_AT"}
    if crash_at is not None:
        env["STRATA_CRASH_AT"] = crash_at
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.crash_child", str(data_dir), urls, mode,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    except TimeoutError:
        process.kill()
        raise
    if process.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"child {mode} failed ({process.returncode}): {stderr.decode()[-2000:]}")
    return process.returncode


@pytest.mark.parametrize("crash_at", ["after_intent", "after_send", "after_fill"])
async def test_a_killed_engine_restarted_on_the_same_files_ends_with_one_order_and_one_alert(
    fake_exchanges, tmp_path, crash_at
):
    book = fake_exchanges.books["binance"]
    book.add_key(API_KEY, SECRET, balances={"USDT": "1000"})

    first = await run_child(tmp_path, fake_exchanges.exchange_urls, "start", crash_at)
    assert first == -signal.SIGKILL, "the crash hook did not fire"
    orders_at_crash = len(book.all_orders(API_KEY))
    assert orders_at_crash == (0 if crash_at == "after_intent" else 1)

    assert await run_child(tmp_path, fake_exchanges.exchange_urls, "resume", None) == 0

    assert len(book.all_orders(API_KEY)) == 1
    store = await Store.open(tmp_path / "strata.db")
    try:
        alerts = await store.db.fetchall("SELECT * FROM outbox WHERE kind = 'fill'")
        fills = await store.db.fetchall("SELECT * FROM fills")
        orders = await store.db.fetchall("SELECT * FROM orders")
    finally:
        await store.close()
    assert len(alerts) == 1
    assert len(fills) == 1
    assert [o["status"] for o in orders] == ["closed"]
    assert orders[0]["exchange_order_id"] == str(book.all_orders(API_KEY)[0].id)

"""Crash safety in a real process: the engine is SIGKILLed at a named point of the order path, then restarted.

The fake Binance runs in this (parent) process; the engine runs in a child process on database files in
tmp_path, killed by the engine's test hook (`STRATA_CRASH_AT`). A second child on the same files must end
with exactly one order on the exchange and exactly one fill alert, whatever the point of the crash. The three
crash points run side by side (one key and one folder each) to keep the file fast.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from storage.store import Store
from tests.crash_child import SECRET
from tests.databases import database_for

ROOT = Path(__file__).resolve().parent.parent
POINTS = ("after_intent", "after_send", "after_fill")


async def run_child(data_dir: Path, urls: str, mode: str, api_key: str, crash_at: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "STRATA_CRASH_AT"}
    if crash_at is not None:
        env["STRATA_CRASH_AT"] = crash_at
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.crash_child", str(data_dir), urls, mode, api_key,
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


async def crash_and_restart(fake_exchanges, data_dir: Path, crash_at: str) -> dict:
    api_key = f"key-{crash_at}"
    book = fake_exchanges.books["binance"]
    book.add_key(api_key, SECRET, balances={"USDT": "1000"})
    urls = fake_exchanges.exchange_urls
    killed = await run_child(data_dir, urls, "start", api_key, crash_at)
    at_crash = len(book.all_orders(api_key))
    resumed = await run_child(data_dir, urls, "resume", api_key, None)
    store = await Store.open(await database_for(data_dir) or data_dir / "strata.db")
    try:
        alerts = await store.db.fetchall("SELECT * FROM outbox WHERE kind = 'fill'")
        fills = await store.db.fetchall("SELECT * FROM fills")
        orders = await store.db.fetchall("SELECT * FROM orders")
    finally:
        await store.close()
    exchange_orders = book.all_orders(api_key)
    return {
        "killed": killed == -signal.SIGKILL,
        "orders_at_crash": at_crash,
        "resumed_cleanly": resumed == 0,
        "exchange_orders": len(exchange_orders),
        "fill_alerts": len(alerts),
        "fills": len(fills),
        "order_rows": [o["status"] for o in orders],
        "same_order": [o["exchange_order_id"] for o in orders] == [str(o.id) for o in exchange_orders],
    }


async def test_a_killed_engine_restarted_on_the_same_files_ends_with_one_order_and_one_alert(
    fake_exchanges, tmp_path
):
    results = await asyncio.gather(*(crash_and_restart(fake_exchanges, tmp_path / p, p) for p in POINTS))
    outcome = dict(zip(POINTS, results, strict=True))
    for point, result in outcome.items():
        expected = {
            "killed": True,
            "orders_at_crash": 0 if point == "after_intent" else 1,
            "resumed_cleanly": True,
            "exchange_orders": 1,
            "fill_alerts": 1,
            "fills": 1,
            "order_rows": ["closed"],
            "same_order": True,
        }
        assert result == expected, point

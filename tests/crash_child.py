"""Crash-test child process: run the real engine on given database files against already running fake venues.

    python -m tests.crash_child DATA_DIR EXCHANGE_URLS start API_KEY   # connect, allocate a DCA, run until killed
    python -m tests.crash_child DATA_DIR EXCHANGE_URLS resume API_KEY  # restart on the same files, settle, exit 0

The parent test sets `STRATA_CRASH_AT` for the `start` run only, so the engine's test hook SIGKILLs this
process at that point; `start` exiting by itself (code 3) means the crash point was never reached.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from storage.orders import LIVE
from tests.engine_world import open_world

USER_ID = 42
SECRET = "crash-secret"


async def start(data_dir: Path, urls: str, api_key: str) -> int:
    world = await open_world(data_dir, urls)
    try:
        await world.connect(USER_ID, "binance", api_key, SECRET)
        await world.allocate(USER_ID, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")
        await asyncio.sleep(10)  # the crash hook kills us long before this ends
        return 3
    finally:
        await world.close()


async def resume(data_dir: Path, urls: str, api_key: str) -> int:
    world = await open_world(data_dir, urls)
    try:
        for _ in range(100):
            live = await world.store.orders.in_states(LIVE)
            if not live:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # a few poll rounds and runs: nothing more may happen
        return 0 if not await world.store.orders.in_states(LIVE) else 4
    finally:
        await world.close()


def main(argv: list[str]) -> int:
    data_dir, urls, mode, api_key = Path(argv[0]), argv[1], argv[2], argv[3]
    runner = {"start": start, "resume": resume}[mode]
    return asyncio.run(runner(data_dir, urls, api_key))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

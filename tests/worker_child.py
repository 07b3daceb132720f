"""An engine worker as its own process, for the partition fault tests: partition leases + a real engine on one
PostgreSQL database, driven by lines on stdin, reporting on stdout.

    python -m tests.worker_child POSTGRES_URL DATA_DIR EXCHANGE_URLS

Prints `HELD <n>` whenever the partitions it runs change. Commands: `CONNECT <user> <key> <secret>` (answers
`ACCOUNT <id> <1 if this worker runs it else 0>`), `ALLOCATE <user>` (a DCA on the user's Binance account,
bought at once; answers `STRATEGY <id>`), `STOP` (closes cleanly, exit 0). The tests SIGKILL it instead.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from storage.partitions import PartitionLeases
from tests.engine_world import open_world

LEASES = {"tick_seconds": 0.2, "alive_seconds": 2.0, "handover_seconds": 1.0}


async def main(url: str, data_dir: Path, urls: str) -> int:
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    leases = await PartitionLeases.start(url, **LEASES)
    world = await open_world(data_dir, urls, ownership=leases, database=url)
    leases.subscribe(lambda gained, lost: print(f"HELD {len(leases.held)}", flush=True))
    print(f"HELD {len(leases.held)}", flush=True)
    try:
        while line := (await stdin.readline()).decode().split():
            command, *args = line
            if command == "CONNECT":
                account_id = await world.connect(int(args[0]), "binance", args[1], args[2])
                print(f"ACCOUNT {account_id} {int(leases.owns(account_id))}", flush=True)
            elif command == "ALLOCATE":
                strategy_id = await world.allocate(int(args[0]), "binance", "dca", "100", "BTC/USDT",
                                                   every="1d", amount="20")
                print(f"STRATEGY {strategy_id}", flush=True)
            elif command == "STOP":
                break
    finally:
        await world.close()
        await leases.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3])))

"""Kraken nonces when a front and a worker sign with one key at once, on PostgreSQL (issue 22).

Kraken checks a key's nonces in the order its calls arrive: each must be greater than the last. One process
serialises a key's calls in memory; a front (/balance, /allocate's balance check) and the worker that trades
the account are two processes. Each is a `ClientPool` here, with nothing in common but the database (the
pools' in-memory nonce counters and key locks are their own, as in two processes); both sign for the same key at
the same moment through the real ccxt signing against the fake Kraken, which refuses a nonce that is not
greater than the key's last.
"""

from __future__ import annotations

import asyncio
import base64
import os
from decimal import Decimal

from bot.exchanges.clients import ClientPool
from bot.exchanges.gateway import ExchangeGateway
from bot.secret import Credentials
from storage.db import connect
from storage.key_nonces import SharedKeyNonces
from tests.databases import fresh_postgres_database

KEY = Credentials("n" * 56, base64.b64encode(bytes(range(7, 71))).decode())
CALLS_EACH = 8


async def test_a_front_and_a_worker_signing_with_one_kraken_key_never_send_a_stale_nonce(
    postgres_server, fake_exchanges
):
    url = await fresh_postgres_database(postgres_server, f"nonces_{os.getpid()}")
    book = fake_exchanges.books["kraken"]
    book.add_key(KEY.api_key.reveal(), KEY.secret.reveal(), balances={"USD": "250"})
    dbs = [await connect(url), await connect(url)]
    shared = [SharedKeyNonces(db) for db in dbs]
    pools = [ClientPool(fake_exchanges.origins, size=2, shared_nonces=s) for s in shared]
    front, worker = (ExchangeGateway(pool) for pool in pools)
    try:
        balances = await asyncio.gather(
            *(gateway.fetch_balance("kraken", KEY) for _ in range(CALLS_EACH) for gateway in (front, worker))
        )
    finally:
        for pool in pools:
            await pool.close()
        for s in shared:
            await s.close()
        for db in dbs:
            await db.close()
    assert all(b["USD"].total == Decimal(250) for b in balances)
    sent = [r for r in book.requests if r.path.endswith("/BalanceEx")]
    nonces = [int(r.params["nonce"]) for r in sent]  # in the order the venue received them
    assert len(sent) == 2 * CALLS_EACH, "a call was refused and sent again"
    assert nonces == sorted(set(nonces)), nonces

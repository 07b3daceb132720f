"""Shared by the stream tests of every venue: waiting, and a grid resting one buy on a streamed account."""

from __future__ import annotations

import asyncio
import time

from bot.exchanges.streams import Backoff
from tests.engine_world import open_world


async def wait_for(predicate, timeout: float = 10.0, step: float = 0.01):
    deadline = time.monotonic() + timeout
    while not (result := await predicate()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(step)
    return result


async def _true(value):
    return value


async def streamed_grid_world(
    fake_exchanges, tmp_path, *, user: int, venue: str, key: str, secret: str, symbol: str, budget: str,
    balances: dict[str, str], poll_seconds: float = 3600.0, world_options=None, **stream_options,
):
    """A 2-level grid resting one buy at 50,000 (price 50,500) on `venue`, its account subscribed and its first
    backfill done, so what follows is the stream's. Returns (book, world, strategy_id, order, account_id)."""
    book = fake_exchanges.books[venue]
    book.add_key(key, secret, balances=balances)
    book.set_price(symbol, "50500")
    options = {"heartbeat": 0.5, "backoff": Backoff(base=0.05, cap=0.5), **stream_options}
    world = await open_world(
        tmp_path, fake_exchanges.exchange_urls, poll_seconds=poll_seconds, streams=True, stream_options=options,
        **(world_options or {}),
    )
    await world.connect(user, venue, key, secret)
    strategy_id = await world.allocate(user, venue, "grid", budget, symbol, low="50000", high="60000", levels="2")
    await world.engine.settle()
    [order] = book.open_orders(key)
    account_id = (await world.store.accounts.list_for_user(user))[0].id
    await wait_for(lambda: _true(world.engine.streams.streamed(account_id) and world.engine.streams.backfills))
    await world.engine.streams.settle()
    return book, world, strategy_id, order, account_id

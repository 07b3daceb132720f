"""/panic on Kraken reads the final state of all the orders it cancelled in one closed-orders listing.

Kraken counts a key's private reads (+1 per call, +2 for history, decaying 0.33 per second): confirming each
cancelled order with its own lookups (open orders, then closed orders) cost two reads per order, so /panic on a
single 5-level grid took 40–60 s of waiting for the counter. Cancelling them all first, then reading their
final states in one ClosedOrders call, costs one read whatever the number of orders."""

from __future__ import annotations

from tests.engine_world import open_world
from tests.test_engine_dca import wait_for

USER = 12
KEY, SECRET = "panic-key", "c2VjcmV0LXNlY3JldC1zZWNyZXQ="
READS = ("/0/private/OpenOrders", "/0/private/ClosedOrders", "/0/private/QueryOrders")


async def test_panic_on_kraken_confirms_every_cancelled_order_in_one_read(fake_exchanges, tmp_path):
    book = fake_exchanges.books["kraken"]
    book.add_key(KEY, SECRET, balances={"USD": "1000"})
    book.set_price("BTC/USD", "105717.2")
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(USER, "kraken", KEY, SECRET)
        await world.allocate(USER, "kraken", "grid", "500", "BTC/USD", low="100000", high="110000", levels="5")
        await world.engine.settle()

        async def ladder_resting() -> bool:  # three buys below the price, and the sell of the coins bought at start
            return len(book.open_orders(KEY)) == 4

        await wait_for(ladder_resting)
        resting = book.open_orders(KEY)
        before = len(book.requests)

        result = await world.service.panic(USER)

        assert result.canceled == len(resting) and result.unconfirmed == 0
        assert book.open_orders(KEY) == []
        reads = [r.path for r in book.requests[before:] if r.path in READS]
        assert reads == ["/0/private/ClosedOrders"], reads
        assert {o["status"] for o in await world.orders() if o["type"] == "limit"} == {"canceled"}
    finally:
        await world.close()

"""Fills recorded from the venue's trades, end to end on the fake Binance Spot with the real ccxt client.

Each fill is recorded once however the reports of one order race (a poll and a /panic cancel), a fee the
venue lists only after the order's status is recorded when it becomes visible, and a fee paid in BNB is valued
in the quote at the fill and charged to the budget. Figures are checked against the fake venue's own trades.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

from storage.orders import NewFill
from tests.engine_world import open_world
from tests.test_engine_dca import wait_for

USER = 21


async def _one_buy_grid(fake_exchanges, tmp_path, key: str, poll_seconds: float = 0.2, **key_options):
    """A Binance grid whose one level buys 0.002 BTC at 50000 (100 USDT, 100.10 with its fee)."""
    book = fake_exchanges.books["binance"]
    book.add_key(key, "secret", **key_options)
    book.set_price("BTC/USDT", "50500")
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, poll_seconds=poll_seconds)
    await world.connect(USER, "binance", key, "secret")
    strategy_id = await world.allocate(
        USER, "binance", "grid", "100.1", "BTC/USDT", low="50000", high="60000", levels="2"
    )
    await world.engine.settle()
    [order] = book.open_orders(key)
    assert (order.side, order.amount, order.price) == ("buy", Decimal("0.002"), Decimal(50000))
    return book, world, strategy_id, order


def _paid(trades) -> Decimal:
    """What the venue took from the quote balance for these buy trades (fees in quote included)."""
    return sum((t.cost + (t.fee if t.fee_currency == "USDT" else 0) for t in trades), Decimal(0))


async def test_a_poll_and_a_cancel_racing_on_one_order_record_each_fill_once(fake_exchanges, tmp_path):
    book, world, strategy_id, order = await _one_buy_grid(fake_exchanges, tmp_path, "race-key")
    try:
        book.fill_partially(order.id, "0.001")
        # The poll's trade lookup is slow; meanwhile the rest fills and /panic cancels (and reads) the order.
        book.hang_seconds = 0.6
        book.inject("timeout", path="/myTrades")
        poll = asyncio.create_task(world.engine.poll_once())
        await asyncio.sleep(0.2)
        book.fill_partially(order.id, "0.001")
        await world.service.panic(USER)
        await poll
        for _ in range(2):
            await world.engine.poll_once()

        trades = book.trades("race-key")
        assert len(trades) == 2 and _paid(trades) == Decimal("100.10")
        fills = await world.store.orders.fills_for_strategy(strategy_id)
        assert sorted(f.fill.trade_key for f in fills) == sorted(f"t:{t.id}" for t in trades)
        assert sum(f.fill.amount for f in fills) == Decimal("0.002")
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.spent == Decimal("100.10") and strategy.fees == Decimal("0.10")
        [row] = await world.orders()
        assert row["status"] == "closed" and Decimal(row["filled"]) == Decimal("0.002")
        alerts = await world.alerts("fill")
        assert 1 <= len(alerts) <= len(trades)  # never an alert for a doubled fill
        assert "partial fill" not in alerts[-1]["text"]  # the last one says the order is done
    finally:
        await world.close()


async def test_a_fee_listed_only_after_the_order_closed_is_recorded_on_the_next_poll(fake_exchanges, tmp_path):
    book, world, strategy_id, order = await _one_buy_grid(fake_exchanges, tmp_path, "lag-key")
    try:
        book.lag_trades(requests=1)  # the next myTrades does not list the fill the order already counts
        book.set_price("BTC/USDT", "49900")
        assert book.find_order(order.id).status == "closed"
        await world.engine.poll_once()
        await world.engine.poll_once()
        await world.engine.settle()

        [trade] = book.trades("lag-key")
        [fill] = await world.store.orders.fills_for_strategy(strategy_id)
        assert (fill.fill.trade_key, fill.fill.fee, fill.fill.fee_currency) == (f"t:{trade.id}", trade.fee, "USDT")
        strategy = await world.store.strategies.get(strategy_id)
        assert trade.fee == Decimal("0.1") and strategy.spent == _paid([trade]) == Decimal("100.1")
        assert strategy.fees == Decimal("0.1")
        [alert] = await world.alerts("fill")
        assert "fee 0.10 USDT" in alert["text"]

        async def sell_armed() -> bool:  # the grid saw the buy close once, with its fee
            return any(o.side == "sell" for o in book.open_orders("lag-key"))

        await wait_for(sell_armed)
    finally:
        await world.close()


async def test_a_fee_paid_in_bnb_is_valued_in_quote_and_counted_in_the_ledger(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    book.add_key("bnb-key", "secret", balances={"USDT": "1000", "BNB": "1"}, fee_mode="bnb")
    book.set_price("BTC/USDT", "50000")
    book.set_price("BNB/USDT", "600")
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(USER, "binance", "bnb-key", "secret")
        strategy_id = await world.allocate(USER, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")

        async def filled() -> bool:
            return len(await world.alerts("fill")) == 1

        await wait_for(filled)
        [trade] = book.trades("bnb-key")
        assert trade.fee_currency == "BNB" and trade.fee > 0
        assert book.keys["bnb-key"].balances["BNB"] == 1 - trade.fee
        [fill] = await world.store.orders.fills_for_strategy(strategy_id)
        assert (fill.fill.fee, fill.fill.fee_currency) == (trade.fee, "BNB")
        assert fill.fee_quote == trade.fee * 600
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.fees == fill.fee_quote
        assert strategy.spent == trade.cost + trade.fee * 600
        # The order's answer listed its trade: no trade history request was needed.
        assert book.request_counts[("GET", "/api/v3/myTrades")] == 0
    finally:
        await world.close()


async def test_two_reports_of_one_kraken_order_applied_at_once_record_its_filled_amount_once(fake_exchanges, tmp_path):
    """Kraken's fills are keyed by the cumulative filled amount: a stale report (half filled) and a fresh one
    (all filled) applied together must not record the half on top of the whole."""
    book = fake_exchanges.books["kraken"]
    book.add_key("kraken-race", "c2VjcmV0LXNlY3JldC1zZWNyZXQ=", balances={"USD": "1000"})
    book.set_price("BTC/USD", "105717.2")
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(USER, "kraken", "kraken-race", "c2VjcmV0LXNlY3JldC1zZWNyZXQ=")
        strategy_id = await world.allocate(
            USER, "kraken", "grid", "100", "BTC/USD", low="100000", high="110000", levels="2"
        )
        await world.engine.settle()
        [venue_order] = book.open_orders("kraken-race")
        [row] = await world.store.orders.in_states(("open",))
        account = await world.store.accounts.get(row.account_id)
        desk = world.engine.desk
        half = (venue_order.amount / 2).quantize(Decimal("1e-8"))
        book.fill_partially(venue_order.id, half)
        stale = await desk.lookup(row, account)
        book.fill_partially(venue_order.id, venue_order.amount - half)
        fresh = await desk.lookup(row, account)
        await asyncio.gather(desk.apply(row.id, account, stale), desk.apply(row.id, account, fresh))

        fills = await world.store.orders.fills_for_strategy(strategy_id)
        assert sum(f.fill.amount for f in fills) == venue_order.amount
        trades = book.trades("kraken-race")
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.spent == sum((t.cost + t.fee for t in trades), Decimal(0))
    finally:
        await world.close()


async def test_an_order_filled_by_more_trades_than_one_history_page_still_closes_with_every_fill(
    fake_exchanges, tmp_path
):
    """Binance lists at most 500 trades per myTrades request (the most recent ones without `fromId`): an order
    filled by 600 small trades must still be recorded in full, closed, and its reservation released."""
    book = fake_exchanges.books["binance"]
    book.add_key("page-key", "secret", balances={"USDT": "2000"})
    book.set_price("BTC/USDT", "50500")
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(USER, "binance", "page-key", "secret")
        strategy_id = await world.allocate(
            USER, "binance", "grid", "1001", "BTC/USDT", low="50000", high="60000", levels="2"
        )
        await world.engine.settle()
        [order] = book.open_orders("page-key")
        assert (order.side, order.amount) == ("buy", Decimal("0.02"))
        for _ in range(599):
            book.fill_partially(order.id, "0.00001")
        book.fill_partially(order.id, order.remaining)
        for _ in range(3):
            await world.engine.poll_once()

        trades = book.trades("page-key")
        assert len(trades) == 600
        fills = await world.store.orders.fills_for_strategy(strategy_id)
        assert sorted(f.fill.trade_key for f in fills) == sorted(f"t:{t.id}" for t in trades)
        [row] = [r for r in await world.orders() if r["side"] == "buy"]
        assert row["status"] == "closed" and Decimal(row["filled"]) == Decimal("0.02")
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.spent == _paid(trades)
    finally:
        await world.close()


async def test_a_grid_round_trip_paid_in_bnb_reports_the_profit_the_ledger_shows(fake_exchanges, tmp_path):
    """Fees paid in BNB are charged to the budget: the round trip's profit (alert, fill) must count them too,
    or every round trip of a BNB-paying account is reported higher than what the budget gained."""
    book, world, strategy_id, _order = await _one_buy_grid(
        fake_exchanges, tmp_path, "bnb-grid", balances={"USDT": "1000", "BNB": "1"}, fee_mode="bnb"
    )
    try:
        book.set_price("BNB/USDT", "600")
        book.set_price("BTC/USDT", "49900")  # the buy at 50000 fills

        async def sell_armed() -> bool:
            return any(o.side == "sell" for o in book.open_orders("bnb-grid"))

        await wait_for(sell_armed)
        book.set_price("BTC/USDT", "60100")  # the sell at 60000 fills

        async def round_trip() -> bool:
            return any(f.profit is not None for f in await world.store.orders.fills_for_strategy(strategy_id))

        await wait_for(round_trip)
        trades = book.trades("bnb-grid")
        assert [t.fee_currency for t in trades] == ["BNB", "BNB"]
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.fees == sum((t.fee * 600 for t in trades), Decimal(0))
        [profit] = [f.profit for f in await world.store.orders.fills_for_strategy(strategy_id) if f.profit is not None]
        assert profit == strategy.received - strategy.spent
        alert = (await world.alerts("fill"))[-1]["text"]
        assert f"{profit:.2f}" in alert
    finally:
        await world.close()


async def test_a_binance_order_recorded_by_cumulative_totals_before_an_upgrade_keeps_its_later_fees(
    fake_exchanges, tmp_path
):
    """A database written before fills were keyed by trade holds a half-filled Binance order under a `c:` key;
    the order stays on cumulative keys, but Binance's order carries no fee: the rest's fee must come from its
    trades, as before the upgrade, not be recorded as 0."""
    # Polls only when the test asks (the half must be recorded as the old version did, not by a poll).
    book, world, strategy_id, order = await _one_buy_grid(fake_exchanges, tmp_path, "upgrade-key", poll_seconds=600)
    try:
        first = book.fill_partially(order.id, "0.001")
        [row] = await world.store.orders.in_states(("open",))
        # What the previous version recorded for that half: keyed by the cumulative filled amount.
        await world.engine.desk.record(row.id, status="open", fills=[NewFill(
            trade_key="c:0.001", side="buy", amount=first.amount, price=first.price, cost=first.cost,
            fee=first.fee, fee_currency="USDT", fee_quote=first.fee, at=datetime.now(UTC),
        )])
        book.fill_partially(order.id, "0.001")
        for _ in range(2):
            await world.engine.poll_once()

        trades = book.trades("upgrade-key")
        fills = await world.store.orders.fills_for_strategy(strategy_id)
        assert sum(f.fill.amount for f in fills) == Decimal("0.002")
        assert sum(f.fill.fee for f in fills) == sum(t.fee for t in trades) == Decimal("0.10")
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.spent == _paid(trades) == Decimal("100.10") and strategy.fees == Decimal("0.10")
    finally:
        await world.close()


async def test_stop_and_sell_right_after_a_fill_whose_trade_lags_sells_what_was_bought(fake_exchanges, tmp_path):
    """/stop with sell: the grid's buy half-filled just before; the cancel's read of its trades lags once. The
    stop must still see that fill: sell the 0.001 BTC bought (and say so), not leave it unsold and unreported."""
    book, world, strategy_id, order = await _one_buy_grid(fake_exchanges, tmp_path, "stop-lag", poll_seconds=600)
    try:
        book.lag_trades(requests=1)  # the next myTrades does not show the fill made now
        book.fill_partially(order.id, "0.001")
        summary = await world.service.stop(USER, strategy_id, sell=True)

        assert summary.sold == {"BTC": Decimal("0.001")} and not summary.kept, summary
        assert book.keys["stop-lag"].total("BTC") == 0
        rows = await world.orders()
        assert [r["status"] for r in rows] == ["canceled", "closed"]
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.spent == _paid([t for t in book.trades("stop-lag") if t.side == "buy"])
    finally:
        await world.close()


async def test_a_stale_report_applied_after_the_order_ended_does_not_reopen_it(fake_exchanges, tmp_path):
    """A poll read the order open and half filled; before it applies that, the cancel (or a fresher poll)
    records the order's end. The stale report must not move the ended order back to open (it would count as
    live again: reserved, listed, polled and ended a second time)."""
    book, world, strategy_id, order = await _one_buy_grid(fake_exchanges, tmp_path, "stale-key", poll_seconds=600)
    try:
        [row] = await world.store.orders.in_states(("open",))
        account = await world.store.accounts.get(row.account_id)
        desk = world.engine.desk
        book.fill_partially(order.id, "0.001")
        stale = await desk.lookup(row, account)
        book.fill_partially(order.id, "0.001")
        fresh = await desk.lookup(row, account)
        assert (stale.status, fresh.status) == ("open", "closed")
        await desk.apply(row.id, account, fresh)
        await desk.apply(row.id, account, stale)

        [row] = [r for r in await world.orders() if r["id"] == row.id]
        assert row["status"] == "closed" and Decimal(row["filled"]) == Decimal("0.002")
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.spent == _paid(book.trades("stale-key"))
    finally:
        await world.close()


async def test_stop_and_sell_after_a_buy_paid_in_base_reports_what_the_venue_sold(fake_exchanges, tmp_path):
    """Binance without BNB takes a buy's fee in BTC: the strategy holds 0.0003996 BTC, of which the venue's step
    (0.00001) lets it sell 0.00039. /stop's summary must say what was sold and what is kept, as the wallet does."""
    book = fake_exchanges.books["binance"]
    book.add_key("base-fee", "secret", balances={"USDT": "1000"}, fee_mode="received")
    book.set_price("BTC/USDT", "50000")
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(USER, "binance", "base-fee", "secret")
        strategy_id = await world.allocate(USER, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")

        async def bought() -> bool:
            return len(await world.alerts("fill")) == 1

        await wait_for(bought)
        summary = await world.service.stop(USER, strategy_id, sell=True)

        sells = [t for t in book.trades("base-fee") if t.side == "sell"]
        assert sum(t.amount for t in sells) == Decimal("0.00039")
        assert summary.sold == {"BTC": Decimal("0.00039")}, summary
        wallet = book.keys["base-fee"].total("BTC")
        assert wallet == Decimal("0.0000096") and summary.kept == {"BTC": wallet}, summary
    finally:
        await world.close()

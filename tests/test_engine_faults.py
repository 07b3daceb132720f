"""Exchange errors mapped to actions, end to end on the fake Binance Spot with the real ccxt client.

Revoked key → the account's strategies pause and ONE alert; rate limit → back off, no pause; insufficient
funds → that strategy pauses with an alert; a timeout while sending → `unknown`, resolved by client order id
without a second order.
"""

from __future__ import annotations

from datetime import timedelta

from bot.engine.actions import reject_key
from storage.strategies import ACTIVE, PAUSED
from tests.engine_world import ShiftedClock, open_world
from tests.test_engine_dca import wait_for


async def _bought_once(world, book, api_key: str, strategy_id: int) -> None:
    async def bought() -> bool:
        return len([o for o in book.all_orders(api_key) if o.status == "closed"]) >= 1 and bool(
            await world.store.orders.fills_for_strategy(strategy_id)
        )

    await wait_for(bought)
    await world.engine.settle()


async def test_a_revoked_key_pauses_all_the_accounts_strategies_and_alerts_once(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    book.add_key("revoked", "secret", balances={"USDT": "1000"})
    clock = ShiftedClock()
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, clock=clock)
    try:
        account_id = await world.connect(5, "binance", "revoked", "secret")
        first = await world.allocate(5, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")
        await _bought_once(world, book, "revoked", first)
        second = await world.allocate(5, "binance", "dca", "100", "ETH/USDT", every="1d", amount="20")
        await _bought_once(world, book, "revoked", second)

        book.revoke_key("revoked")
        clock.offset = timedelta(days=1, seconds=1)
        for strategy_id in (first, second, first, second):
            await world.engine.run_strategy(strategy_id)
        await world.engine.poll_once()

        account = await world.store.accounts.get(account_id)
        assert account.status == "key_rejected"
        statuses = [(await world.store.strategies.get(s)).status for s in (first, second)]
        assert statuses == [PAUSED, PAUSED]
        errors = await world.alerts("error")
        assert len(errors) == 1
        assert "rejected" in errors[0]["text"] and "/connect" in errors[0]["text"]
        assert len(book.all_orders(book.keys["revoked"])) == 2  # nothing more was placed
    finally:
        await world.close()


async def test_a_rate_limit_backs_off_and_retries_later_without_pausing(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    book.add_key("limited", "secret", balances={"USDT": "1000"})
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(6, "binance", "limited", "secret")
        book.inject("rate_limit", count=20, path="/api/v3/account")  # every balance read: 429 / -1003
        preview_error = None
        try:
            await world.allocate(6, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")
        except Exception as exc:  # the allocation itself reads the balance: it is refused, not crashed
            preview_error = exc
        assert preview_error is not None and "balance" in str(preview_error)
        book.faults.clear()
        strategy_id = await world.allocate(6, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")
        await world.engine.settle()
        await _bought_once(world, book, "limited", strategy_id)
        # Now the slot-1 run meets a rate limit on every attempt: it must back off, not pause.
        book.inject("rate_limit", count=20, path="/api/v3/account")
        world.engine.ctx.clock = lambda: ShiftedClock()() + timedelta(days=1, seconds=1)
        result = await world.engine.run_strategy(strategy_id)
        assert result.retry_later
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.status == ACTIVE
        assert await world.alerts("pause") == [] and await world.alerts("error") == []
        next_run = world.engine.next_run_time(strategy_id)
        assert next_run is not None  # retried later
        book.faults.clear()
        await world.engine.run_strategy(strategy_id)
        assert len(book.all_orders("limited")) == 2
    finally:
        await world.close()


async def test_insufficient_funds_pauses_that_strategy_with_a_clear_alert(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    book.add_key("poor", "secret", balances={"USDT": "100"})
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(8, "binance", "poor", "secret")
        strategy_id = await world.allocate(8, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")
        await _bought_once(world, book, "poor", strategy_id)
        # The money leaves the account behind the bot's back: the next buy cannot be paid.
        book.keys["poor"].balances["USDT"] = book.keys["poor"].balances["USDT"] - 75
        world.engine.ctx.clock = lambda: ShiftedClock()() + timedelta(days=1, seconds=1)
        await world.engine.run_strategy(strategy_id)
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.status == PAUSED
        pauses = await world.alerts("pause")
        assert len(pauses) == 1
        assert "not enough free USDT" in pauses[0]["text"]
        assert len(book.all_orders("poor")) == 1
    finally:
        await world.close()


async def test_the_exchange_refusing_for_funds_pauses_the_strategy(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    book.add_key("race", "secret", balances={"USDT": "1000"})
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(9, "binance", "race", "secret")
        preview = await world.service.allocate(9, "binance", "dca", "100", "BTC/USDT", {"every": "1d", "amount": "20"})
        # Between the balance check and the order, the funds go: the venue answers -2010 insufficient balance.
        book.keys["race"].balances["USDT"] = book.keys["race"].balances["USDT"] - 995
        original = world.gateway.fetch_balance

        async def stale_balance(venue, creds):  # the balance read before the withdrawal
            lines = await original(venue, creds)
            return {**lines, "USDT": type(lines["USDT"])(free=lines["USDT"].free + 995, used=lines["USDT"].used,
                                                      total=lines["USDT"].total + 995)}

        world.gateway.fetch_balance = stale_balance
        strategy_id = (await world.service.confirm(preview)).strategy_id
        await world.engine.settle()
        strategy = await world.store.strategies.get(strategy_id)
        assert strategy.status == PAUSED
        assert "Not enough free balance" in (await world.alerts("pause"))[0]["text"]
        rows = await world.orders()
        assert [r["status"] for r in rows] == ["rejected"]
        assert book.all_orders("race") == []
        assert strategy.state["buys"] == 0  # a buy the exchange refused was not bought
    finally:
        await world.close()


async def test_a_send_timeout_leaves_the_order_unknown_then_it_is_found_by_client_id_not_sent_twice(
    fake_exchanges, tmp_path
):
    book = fake_exchanges.books["binance"]
    book.add_key("slow", "secret", balances={"USDT": "1000"})
    book.hang_seconds = 1.2
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, timeout_ms=600)
    try:
        await world.connect(10, "binance", "slow", "secret")
        preview = await world.service.allocate(10, "binance", "dca", "100", "BTC/USDT", {"every": "1d", "amount": "20"})
        book.inject("timeout", count=1, path="/api/v3/order")  # the POST hangs past the client's timeout
        strategy_id = (await world.service.confirm(preview)).strategy_id
        await world.engine.settle()
        rows = await world.orders()
        assert [r["status"] for r in rows] == ["unknown"]

        async def resolved() -> bool:
            return [r["status"] for r in await world.orders()] == ["closed"]

        await wait_for(resolved, timeout=8)
        assert len(book.all_orders("slow")) == 1
        assert len(await world.alerts("fill")) == 1
        assert len(await world.store.orders.fills_for_strategy(strategy_id)) == 1
    finally:
        await world.close()


async def test_a_server_error_on_send_is_looked_up_then_sent_again_exactly_once(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    book.add_key("flaky", "secret", balances={"USDT": "1000"})
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        await world.connect(12, "binance", "flaky", "secret")
        preview = await world.service.allocate(12, "binance", "dca", "100", "BTC/USDT", {"every": "1d", "amount": "20"})
        book.inject("server_error", count=1, path="/api/v3/order")  # the POST answers 503: placed or not?
        await world.service.confirm(preview)
        await world.engine.settle()
        assert [r["status"] for r in await world.orders()] == ["unknown"]
        assert book.all_orders("flaky") == []

        async def placed() -> bool:
            return [r["status"] for r in await world.orders()] == ["closed"]

        await wait_for(placed, timeout=8)
        for _ in range(3):
            await world.engine.poll_once()
        assert len(book.all_orders("flaky")) == 1
        assert len(await world.alerts("fill")) == 1
    finally:
        await world.close()


async def test_a_credential_tampered_while_running_pauses_its_account_once_and_spares_the_others(
    fake_exchanges, tmp_path
):
    book = fake_exchanges.books["binance"]
    book.add_key("tampered", "secret", balances={"USDT": "1000"})
    book.add_key("healthy", "secret2", balances={"USDT": "1000"})
    clock = ShiftedClock()
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, clock=clock)
    try:
        victim = await world.connect(21, "binance", "tampered", "secret")
        await world.connect(22, "binance", "healthy", "secret2")
        first = await world.allocate(21, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")
        other = await world.allocate(22, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")
        await _bought_once(world, book, "tampered", first)
        await _bought_once(world, book, "healthy", other)
        sealed = await world.store.accounts.credential(victim)
        async with world.store.db.transaction() as tx:  # the row is changed behind the bot's back
            await tx.execute(
                "UPDATE credentials SET ciphertext = ? WHERE account_id = ?",
                (bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:], victim),
            )
        world.engine.ctx.forget_credentials(victim)  # as after a restart: the key is read again
        clock.offset = timedelta(days=1, seconds=1)
        for strategy_id in (first, other, first):
            await world.engine.run_strategy(strategy_id)
        await world.engine.poll_once()

        assert (await world.store.accounts.get(victim)).status == "key_unreadable"
        assert (await world.store.strategies.get(first)).status == PAUSED
        assert (await world.store.strategies.get(other)).status == ACTIVE
        errors = await world.alerts("error")
        assert len(errors) == 1 and "cannot be read" in errors[0]["text"]
        assert len(book.all_orders("tampered")) == 1 and len(book.all_orders("healthy")) == 2
    finally:
        await world.close()


async def test_a_rejected_key_that_can_now_withdraw_is_not_taken_back(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    revived, secret = "R" * 64, "s" * 64  # the retry runs /connect's checks, format included
    book.add_key(revived, secret, balances={"USDT": "1000"})
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        account_id = await world.connect(23, "binance", revived, secret)
        book.revoke_key(revived)
        assert await reject_key(world.engine.ctx, account_id, "revoked")
        book.keys[revived].revoked = False
        book.keys[revived].can_withdraw = True  # "fixed" by enabling withdrawals: never accepted
        assert await world.engine.retry_rejected_keys() == 0
        assert (await world.store.accounts.get(account_id)).status == "key_rejected"
        book.keys[revived].can_withdraw = False
        assert await world.engine.retry_rejected_keys() == 1
        assert (await world.store.accounts.get(account_id)).status == "active"
        assert len(await world.alerts("info")) == 1
    finally:
        await world.close()

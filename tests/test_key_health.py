"""Key health after /connect (issue 21, item 3), through the real bot, the fake Telegram and the fake exchanges.

A connected key whose owner turns withdrawals on, whose trading permission is about to expire or is gone, or
that the venue refuses, is found by the periodic check (`engine.key_health.tick`) or at once
(`engine.key_health.check_now`), and handled once: strategies paused and one alert, warnings once each, even
across later checks and restarts. A healthy key costs one sapi call of weight 1, charged to the shared budget,
and says nothing; a check that gets no answer changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bot.engine.key_health import RETRY_AFTER, KeyHealthMonitor, Verdict
from storage.accounts import KEY_REJECTED, KEY_UNSAFE
from tests.chat_helpers import USER, connect_with_key, list_accounts
from tests.engine_world import open_world
from tests.test_chat_strategies import allocate_one_line, open_orders, wait_for_open_orders
from tests.test_chat_streams import wait_until

GRID = "/allocate binance grid 500 BTC/USDT low=60000 high=70000 levels=5"
SAPI = "/sapi/v1/account/apiRestrictions"
DAY_MS = 86_400_000


async def _alerts(s, needle: str) -> list[str]:
    rows = await s.runtime.store.db.fetchall("SELECT text FROM outbox ORDER BY id")
    return [r["text"] for r in rows if needle.lower() in r["text"].lower()]


async def _grid(s, fake_exchanges, **flags):
    """A connected Binance Spot account with a grid resting on the exchange."""
    fake_exchanges.books["binance"].set_price("BTC/USDT", "65000")
    account, api_key = await connect_with_key(
        s, fake_exchanges, "binance", balances={"USDT": Decimal(5000)}, **flags
    )
    await allocate_one_line(s, GRID)
    await wait_for_open_orders(fake_exchanges, "binance", api_key)
    await wait_until(lambda: len(open_orders(fake_exchanges, "binance", api_key)) == 4)  # 2 buys, 2 sells placed
    resting = open_orders(fake_exchanges, "binance", api_key)
    strategy = (await s.runtime.store.strategies.list_for_user(USER))[-1]
    return account, strategy, api_key, resting


def _sapi_calls(fake_exchanges, api_key: str, venue: str = "binance") -> int:
    return sum(1 for r in fake_exchanges.books[venue].requests if r.path == SAPI and r.api_key == api_key)


def _shift(engine, delta: timedelta) -> None:
    engine.ctx.clock = lambda: datetime.now(UTC) + delta


async def test_withdrawals_turned_on_pause_the_account_and_alert_once_across_checks_and_restarts(
    make_strata, fake_exchanges
):
    async with make_strata() as s:
        # Binance allows withdrawals only on an IP-restricted key: the user restricted it, then ticked withdrawals.
        account, strategy, api_key, resting = await _grid(s, fake_exchanges, ip_restrict=True)
        book = fake_exchanges.books["binance"]
        book.edit_key(api_key, can_withdraw=True)
        engine = s.runtime.engine
        assert await engine.key_health.check_now(account.id) == Verdict.CAN_WITHDRAW
        alert = await s.next_reply(USER, contains="can now withdraw", timeout=10)
        assert f"/connect replace {account.label}" in alert.text and "/resume" in alert.text
        assert "Grid" in alert.plain_text  # the paused strategies are named
        assert (await s.runtime.store.accounts.get(account.id)).status == KEY_UNSAFE
        assert (await s.runtime.store.strategies.get(strategy.id)).status == "paused"
        # Decision: its orders stay open (funds locked in them cannot be withdrawn); they stay followed.
        assert all(book.find_order(o.id).status == "open" for o in resting)
        # Later checks, periodic or on demand, say nothing more.
        _shift(engine, timedelta(hours=7))
        assert await engine.key_health.tick() == 0
        assert await engine.key_health.check_now(account.id) == Verdict.SKIPPED
        await s.send(USER, f"/resume {strategy.id}")
        refused = await s.next_reply(USER, contains="can withdraw")
        assert "turn its withdrawals off" in refused.text
        _, listing = await list_accounts(s)
        assert "key can withdraw" in listing.text
    async with make_strata() as s:  # a restart
        engine = s.runtime.engine
        _shift(engine, timedelta(hours=13))
        await engine.key_health.tick()
        assert await engine.key_health.check_now(account.id) == Verdict.SKIPPED
        assert len(await _alerts(s, "can now withdraw")) == 1
        # Withdrawals off again: the slow retry finds it safe, says so once, and /resume works.
        book.edit_key(api_key, can_withdraw=False)
        assert await engine.retry_rejected_keys() == 1
        told = await s.next_reply(USER, contains="can no longer withdraw", timeout=10)
        assert f"/resume {strategy.id}" in told.text
        assert await engine.retry_rejected_keys() == 0
        await s.send(USER, f"/resume {strategy.id}")
        await s.next_reply(USER, contains="running again")
        assert len(await _alerts(s, "can now withdraw")) == 1


async def test_a_key_still_able_to_withdraw_is_retried_by_one_sapi_call_and_stays_out(strata, fake_exchanges):
    account, api_key = await connect_with_key(strata, fake_exchanges, "binance", ip_restrict=True)
    fake_exchanges.books["binance"].edit_key(api_key, can_withdraw=True)
    engine = strata.runtime.engine
    assert await engine.key_health.check_now(account.id) == Verdict.CAN_WITHDRAW
    requests = fake_exchanges.books["binance"].requests
    before = len(requests)
    assert await engine.retry_rejected_keys() == 0
    assert [r.path for r in requests[before:] if r.api_key == api_key] == [SAPI]
    assert (await strata.runtime.store.accounts.get(account.id)).status == KEY_UNSAFE


async def test_trading_expiry_is_warned_a_week_ahead_then_a_day_ahead_once_each_even_after_a_restart(
    make_strata, fake_exchanges
):
    expires_ms = int(time.time() * 1000) + 6 * DAY_MS + 3_600_000  # six days and an hour from now
    async with make_strata() as s:
        account, api_key = await connect_with_key(
            s, fake_exchanges, "binance", trading_authority_expiration_ms=expires_ms
        )
        engine = s.runtime.engine
        assert await engine.key_health.tick() == 1
        week = await s.next_reply(USER, contains="ends within a week", timeout=10)
        assert "IP address" in week.text and f"/connect replace {account.label}" in week.text
        when = datetime.fromtimestamp(expires_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
        assert when in week.text
        _shift(engine, timedelta(hours=1))
        assert await engine.key_health.check_now(account.id) == Verdict.HEALTHY
        _shift(engine, timedelta(days=5))  # 1 h before the last day: still only the week's warning
        assert await engine.key_health.check_now(account.id) == Verdict.HEALTHY
        assert len(await _alerts(s, "ends within")) == 1
    async with make_strata() as s:
        engine = s.runtime.engine
        _shift(engine, timedelta(days=5, hours=2))  # inside the last day
        assert await engine.key_health.check_now(account.id) == Verdict.HEALTHY
        await s.next_reply(USER, contains="ends within a day", timeout=10)
        _shift(engine, timedelta(days=5, hours=3))
        assert await engine.key_health.check_now(account.id) == Verdict.HEALTHY
    async with make_strata() as s:
        engine = s.runtime.engine
        _shift(engine, timedelta(days=5, hours=4))
        assert await engine.key_health.check_now(account.id) == Verdict.HEALTHY
        assert len(await _alerts(s, "ends within a week")) == 1
        assert len(await _alerts(s, "ends within a day")) == 1
        # The time passes: the permission is gone → the rejected-key path (paused, alerted, retried slowly).
        _shift(engine, timedelta(days=6, hours=2))
        assert await engine.key_health.check_now(account.id) == Verdict.NO_TRADING
        await s.next_reply(USER, contains="may no longer trade", timeout=10)
        assert (await s.runtime.store.accounts.get(account.id)).status == KEY_REJECTED
        assert _sapi_calls(fake_exchanges, api_key) >= 6


async def test_trading_permission_turned_off_pauses_the_strategies_like_a_rejected_key(strata, fake_exchanges):
    account, strategy, api_key, _ = await _grid(strata, fake_exchanges)
    fake_exchanges.books["binance"].edit_key(api_key, can_trade=False)
    assert await strata.runtime.engine.key_health.check_now(account.id) == Verdict.NO_TRADING
    alert = await strata.next_reply(USER, contains="was rejected", timeout=10)
    assert "may no longer trade" in alert.text and f"/connect replace {account.label}" in alert.text
    assert (await strata.runtime.store.strategies.get(strategy.id)).status == "paused"


async def test_a_key_refused_by_the_check_is_handled_as_a_rejected_rest_call(strata, fake_exchanges):
    account, strategy, api_key, _ = await _grid(strata, fake_exchanges)
    fake_exchanges.books["binance"].revoke_key(api_key)
    assert await strata.runtime.engine.key_health.check_now(account.id) == Verdict.REJECTED
    await strata.next_reply(USER, contains="was rejected", timeout=10)
    assert (await strata.runtime.store.accounts.get(account.id)).status == KEY_REJECTED
    assert (await strata.runtime.store.strategies.get(strategy.id)).status == "paused"
    assert len(await _alerts(strata, "was rejected")) == 1


async def test_a_healthy_key_costs_one_sapi_call_charged_to_the_shared_budget_and_says_nothing(
    strata, fake_exchanges
):
    account, api_key = await connect_with_key(strata, fake_exchanges, "binance")
    engine = strata.runtime.engine
    budgets = strata.runtime.gateway.pool.budgets
    charged = sum(b.requests for b in budgets.side_budgets().values())
    outbox = len(await strata.runtime.store.db.fetchall("SELECT id FROM outbox"))
    calls = _sapi_calls(fake_exchanges, api_key)
    assert await engine.key_health.tick() == 1
    assert _sapi_calls(fake_exchanges, api_key) == calls + 1
    assert sum(b.requests for b in budgets.side_budgets().values()) == charged + 1
    assert max(b.used_per_minute() for b in budgets.side_budgets().values()) >= 1
    assert await engine.key_health.tick() == 0  # not due again for 6 hours
    assert len(await strata.runtime.store.db.fetchall("SELECT id FROM outbox")) == outbox
    assert (await strata.runtime.store.accounts.get(account.id)).status == "active"


async def test_a_check_without_an_answer_changes_nothing_and_is_tried_again_later(strata, fake_exchanges):
    account, strategy, api_key, _ = await _grid(strata, fake_exchanges)
    book = fake_exchanges.books["binance"]
    book.edit_key(api_key, ip_restrict=True)
    book.edit_key(api_key, can_withdraw=True)
    engine = strata.runtime.engine
    outbox = len(await strata.runtime.store.db.fetchall("SELECT id FROM outbox"))
    for fault in ("server_error", "rate_limit"):
        book.inject(fault, path=SAPI)
        assert await engine.key_health.check_now(account.id) == Verdict.NO_ANSWER
    assert (await strata.runtime.store.accounts.get(account.id)).status == "active"
    assert (await strata.runtime.store.strategies.get(strategy.id)).status == "active"
    assert len(await strata.runtime.store.db.fetchall("SELECT id FROM outbox")) == outbox
    row = await strata.runtime.store.key_health.get(account.id)
    assert row.checked_ms is None  # never answered
    assert row.due_ms >= int((datetime.now(UTC) + RETRY_AFTER - timedelta(seconds=5)).timestamp() * 1000)
    _shift(engine, RETRY_AFTER + timedelta(seconds=1))
    assert await engine.key_health.tick() == 1  # due again: now it answers
    await strata.next_reply(USER, contains="can now withdraw", timeout=10)


async def test_kraken_withdrawals_turned_on_are_found_by_the_withdraw_methods_proof(strata, fake_exchanges):
    account, api_key = await connect_with_key(strata, fake_exchanges, "kraken")
    engine = strata.runtime.engine
    assert await engine.key_health.check_now(account.id) == Verdict.HEALTHY
    fake_exchanges.books["kraken"].edit_key(api_key, can_withdraw=True)
    _shift(engine, timedelta(minutes=2))
    assert await engine.key_health.check_now(account.id) == Verdict.CAN_WITHDRAW
    await strata.next_reply(USER, contains="can now withdraw", timeout=10)
    withdraw_methods = [r for r in fake_exchanges.books["kraken"].requests if r.path.endswith("/WithdrawMethods")]
    assert len(withdraw_methods) == 3  # /connect's proof, then one per check


async def test_paper_accounts_are_never_checked_and_checks_are_spread_over_the_period(tmp_path, fake_exchanges):
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        book = fake_exchanges.books["binance"]
        accounts = []
        for n in range(10):
            book.add_key(f"k{n}", f"s{n}")
            accounts.append(await world.connect(USER, "binance", f"k{n}", f"s{n}", label=f"b{n}"))
        async with world.store.db.transaction() as tx:
            paper = await world.store.accounts.create(tx, user_id=USER, venue="paper:binance", label="paper")
        assert await world.engine.key_health.check_now(paper) == Verdict.SKIPPED
        # Every 10 accounts in 5 ticks of a 5-minute period: two a tick, each once, never a burst.
        monitor = KeyHealthMonitor(world.engine.ctx, period=timedelta(minutes=5), tick=timedelta(minutes=1))
        per_tick = [await monitor.tick() for _ in range(6)]
        assert per_tick == [2, 2, 2, 2, 2, 0]
        checked = [r.api_key for r in book.requests if r.path == SAPI]
        assert sorted(checked) == sorted(f"k{n}" for n in range(10))
        assert await world.store.key_health.get(paper) is None
    finally:
        await world.close()


async def test_check_now_asked_many_times_at_once_checks_once(tmp_path, fake_exchanges):
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        fake_exchanges.books["binance"].add_key("burst", "s")
        account_id = await world.connect(USER, "binance", "burst", "s")
        verdicts = await asyncio.gather(*(world.engine.key_health.check_now(account_id) for _ in range(20)))
        assert sorted(verdicts).count(Verdict.HEALTHY) == 1 and verdicts.count(Verdict.SKIPPED) == 19
        assert _sapi_calls(fake_exchanges, "burst") == 1
    finally:
        await world.close()


async def test_check_now_calls_at_once_check_once_even_when_the_database_answers_slowly(tmp_path, fake_exchanges):
    """The race the PostgreSQL pass found under load: a call that read "never checked" and then waited on a slow
    database must not check again after another call already checked and finished. Here the database answers
    late on purpose (every read of the last check takes 0.3 s more), which made the race happen every time."""
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        fake_exchanges.books["binance"].add_key("slow-db", "s")
        account_id = await world.connect(USER, "binance", "slow-db", "s")
        store = world.engine.ctx.store
        read_last_check = store.key_health.get

        async def slow_read(account: int):
            row = await read_last_check(account)
            await asyncio.sleep(0.3)
            return row

        store.key_health.get = slow_read
        verdicts = await asyncio.gather(*(world.engine.key_health.check_now(account_id) for _ in range(8)))
        assert verdicts.count(Verdict.HEALTHY) == 1 and verdicts.count(Verdict.SKIPPED) == 7, verdicts
        assert _sapi_calls(fake_exchanges, "slow-db") == 1
    finally:
        await world.close()


async def test_a_key_check_in_flight_at_shutdown_stops_with_the_engine_quietly(tmp_path, fake_exchanges, caplog):
    """The periodic check is a job of the engine's: shutdown ends it (it never outlives the engine's database and
    clients) without an error or a traceback in the log."""
    from bot.engine.key_health import JOB_ID

    book = fake_exchanges.books["binance"]
    book.add_key("slow-check", "s")
    book.inject("hold", path=SAPI, seconds=5)  # the venue takes its time to answer
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    closed = False
    try:
        await world.connect(USER, "binance", "slow-check", "s")
        world.engine.scheduler.get_job(JOB_ID).modify(next_run_time=datetime.now(UTC))
        deadline = time.monotonic() + 5
        while _sapi_calls(fake_exchanges, "slow-check") == 0:  # the tick's check is waiting for its answer
            assert time.monotonic() < deadline, "the key health job did not run"
            await asyncio.sleep(0.02)
        await world.close()
        closed = True
        await asyncio.sleep(0.2)
        ticking = [t for t in asyncio.all_tasks() if "tick" in repr(t.get_coro()) and not t.done()]
        assert ticking == []
        assert [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")] == []
        assert not any(r.exc_info for r in caplog.records)
    finally:
        if not closed:
            await world.close()


async def test_disconnect_of_an_account_whose_key_can_withdraw_cancels_its_orders_like_any_other(
    make_strata, fake_exchanges
):
    """The key still works (it can even withdraw): /disconnect stops the strategies, cancels their orders with it
    and destroys it, as for any account; the reply says so, not that the key was rejected or is unreadable."""
    async with make_strata() as s:
        account, strategy, api_key, resting = await _grid(s, fake_exchanges, ip_restrict=True)
        book = fake_exchanges.books["binance"]
        book.edit_key(api_key, can_withdraw=True)
        assert await s.runtime.engine.key_health.check_now(account.id) == Verdict.CAN_WITHDRAW
        await s.next_reply(USER, contains="can now withdraw", timeout=10)
        assert len(book.open_orders(api_key)) == len(resting)  # paused, its orders left open
        streams = fake_exchanges.binance_streams
        await wait_until(lambda: not streams.subscribed(api_key))  # and no longer subscribed to its stream

        await s.send(USER, f"/disconnect {account.label}")
        confirm = await s.next_reply(USER, contains="Disconnect")
        text = confirm.plain_text
        assert "rejected" not in text and "cannot be read" not in text, text
        assert "their open orders are cancelled" in text and "can withdraw" in text, text
        await s.press(USER, confirm, "Confirm disconnect")
        await s.next_reply(USER, contains="destroyed", timeout=20)
        summary = await s.next_reply(USER, contains="stopped; its budget is released", timeout=10)
        assert f"Cancelled {len(resting)} open order(s)" in summary.plain_text and f"#{strategy.id}" in summary.text
        assert book.open_orders(api_key) == []
        assert await s.runtime.store.accounts.list_for_user(USER) == []

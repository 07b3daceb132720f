"""One user's input can never take the bot down: bounded numbers, strictly parsed ids, every reply within
Telegram's 4,096 characters — the real bot (PTB's HTTP stack) against the fake Telegram and fake venues."""

from __future__ import annotations

import asyncio
import time

from bot.secret import Credentials
from tests.chat_helpers import OTHER, USER, connect_with_key, register
from tests.test_chat_strategies import allocate_one_line

TELEGRAM_TEXT_LIMIT = 4096
SORRY = "something went wrong"


async def timed_reply(s, text: str, user: int = USER):
    started = time.perf_counter()
    await s.send(user, text)
    answer = await s.next_reply(user, timeout=10)
    return answer, time.perf_counter() - started


async def test_a_huge_number_gets_a_short_answer_at_once_and_creates_nothing(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_with_key(strata, fake_exchanges, "binance")
    cases = [
        ("/allocate binance dca 100 BTC/USDT amount=1e100000000", "amount"),
        ("/allocate binance dca 1e100000000 BTC/USDT amount=10", "budget"),
        ("/allocate binance dca 0E-100000000 BTC/USDT amount=10", "budget"),
        ("/allocate binance grid 500 BTC/USDT low=1e-100000000 high=70000", "low"),
        ("/allocate binance rebalance 500 USDT weights=BTC:1e100000000,ETH:50", "weights"),
        ("/allocate binance dca 100 BTC/USDT amount=1.000000000000000000000000000001", "digits"),
        ("/allocate binance dca 100 " + "B" * 3900 + "/USDT", "not a market"),
        ("/allocate binance dca 100 BTC/USDT every=" + "9" * 3900, "every"),
    ]
    for text, expected in cases:
        answer, elapsed = await timed_reply(strata, text)
        assert expected in answer.text, (text[:80], answer.text[:200])
        assert len(answer.text) < 300, answer.text[:200]
        assert elapsed < 3.0, (text[:80], elapsed)
    assert await strata.runtime.store.strategies.list_for_user(USER) == []
    assert not [r for r in strata.tg.rejected if r.chat_id == USER]


async def test_the_guided_budget_is_bounded_too(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_with_key(strata, fake_exchanges, "binance")
    await strata.send(USER, "/allocate")
    await strata.press(USER, await strata.next_reply(USER, contains="Which account"), 0)
    await strata.press(USER, await strata.next_reply(USER, contains="Which strategy"), "DCA")
    markets = await strata.next_reply(USER, contains="Which market")
    await strata.send(USER, "BTC/USDT " * 400)  # typed instead of tapped
    refused = await strata.next_reply(USER, contains="not a market")
    assert len(refused.text) < 200
    await strata.press(USER, markets, "BTC/USDT")
    await strata.next_reply(USER, contains="What budget")
    started = time.perf_counter()
    await strata.send(USER, "1e100000000")
    answer = await strata.next_reply(USER, contains="What budget")  # refused at its own step, asked again
    assert time.perf_counter() - started < 3.0
    assert "between" in answer.text and len(answer.text) < 400


async def test_ids_are_parsed_strictly_from_commands_and_buttons(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_with_key(strata, fake_exchanges, "binance")
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1d amount=10")
    await strata.next_reply(USER, contains="Bought", timeout=15)  # its first buy's alert, out of the way
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)
    for verb in ("pause", "resume", "stop"):
        for forged in ("²", "12345678901234567890", "١٢", "-1", "0"):
            await strata.send(USER, f"/{verb} {forged}")
            answer = await strata.next_reply(USER)
            assert "Usage" in answer.text, (verb, forged, answer.text)
    forged_buttons = {
        "set:alerts:²:off": "expired", "set:alerts:12345678901234567890:off": "expired",
        "set:alerts:9223372036854775807:on": "No such strategy", "set:hour:²": "expired",
        "set:hour:12345678901234567890": "expired", "set:hour:٣": "expired",
        "ctl:pause:²": "Nothing was changed", "ctl:stopkeep:12345678901234567890": "Nothing was changed",
        "disc:yes:²": "not (or no longer) connected",
    }
    for data, expected in forged_buttons.items():
        await strata.send(USER, "/settings")  # a fresh message each time: an unchanged edit is refused
        menu = await strata.next_reply(USER, contains="Settings")
        strata.tg.press_callback_data(USER, menu.message_id, data)
        answer = await strata.next_reply(USER)
        assert expected in answer.text, (data, answer.text)
    await asyncio.sleep(0.2)
    assert not [m for m in strata.tg.sent if m.chat_id == USER and SORRY in (m.text or "")]
    assert (await strata.runtime.store.strategies.get(strategy.id)).status == "active"
    assert (await strata.runtime.store.strategies.get(strategy.id)).alerts == "on"


# --- every reply within Telegram's limits, with 30 strategies -----------------------------------------------


async def add_strategies(s, count: int, user: int = USER) -> list[int]:
    """Allocate `count` DCA strategies through the real service (what Confirm calls), pausing every third."""
    ids = []
    for index in range(count):
        preview = await s.runtime.strategies.allocate(user, "binance", "dca", "50", "BTC/USDT",
                                                      {"every": "1w", "amount": "10"})
        ids.append((await s.runtime.strategies.confirm(preview)).strategy_id)
        if index % 3 == 2:
            await s.runtime.strategies.pause(user, ids[-1])
    return ids


def assert_fits(record) -> None:
    assert len(record.plain_text) <= TELEGRAM_TEXT_LIMIT
    assert len(record.buttons) <= 100


async def test_thirty_strategies_status_pages_settings_and_pickers_all_fit(make_strata, fake_exchanges):
    async with make_strata(STRATA_MAX_STRATEGIES_PER_USER="30") as strata:
        await _thirty_strategies(strata, fake_exchanges)


async def _thirty_strategies(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    await connect_with_key(strata, fake_exchanges, "binance", balances={"USDT": 100_000})
    ids = await add_strategies(strata, 30)

    await strata.send(USER, "/status")
    page = await strata.next_reply(USER, contains="Your strategies")
    seen = set()
    for number in range(1, 7):
        assert_fits(page)
        assert f"page {number} of 6 (30 strategies)" in page.plain_text
        seen |= {i for i in ids if f"#{i} DCA" in page.plain_text}
        if number < 6:
            await strata.press(USER, page, f"page {number + 1} ▶")
            page = await strata.next_reply(USER, contains=f"page {number + 1} of 6")
    assert seen == set(ids)
    await strata.press(USER, page, "◀ page 5")
    assert_fits(await strata.next_reply(USER, contains="page 5 of 6"))

    await strata.send(USER, "/settings")
    menu = await strata.next_reply(USER, contains="Settings")
    assert_fits(menu)
    assert "page 1 of 4" in menu.plain_text
    await strata.press(USER, menu, "page 2 ▶")
    menu = await strata.next_reply(USER, contains="page 2 of 4")
    await strata.press(USER, menu, f"#{ids[12]} silent")
    menu = await strata.next_reply(USER, contains="silent")
    assert "page 2 of 4" in menu.plain_text and assert_fits(menu) is None
    assert (await strata.runtime.store.strategies.get(ids[12])).alerts == "silent"

    for command, expected in (("/pause", "pause?"), ("/resume", "resume?"), ("/stop", "stop?")):
        await strata.send(USER, command)
        picker = await strata.next_reply(USER, contains=expected)
        assert_fits(picker)
    await strata.press(USER, picker, "page 2 ▶")
    picker = await strata.next_reply(USER, contains="page 2 of 3")
    await strata.press(USER, picker, f"#{ids[10]} DCA BTC/USDT")
    await strata.next_reply(USER, contains="Keep what it bought")

    for command, expected in (("/strategies", "Strategies"), ("/accounts", "Your accounts"), ("/help", "/status")):
        await strata.send(USER, command)
        assert_fits(await strata.next_reply(USER, contains=expected))
    await asyncio.sleep(0.2)
    assert not [r for r in strata.tg.rejected if r.chat_id == USER], strata.tg.rejected
    assert not [m for m in strata.tg.sent if m.chat_id == USER and SORRY in (m.text or "")]


async def test_forty_accounts_are_listed_a_page_at_a_time_each_page_one_message(make_strata, fake_exchanges):
    async with make_strata(STRATA_MAX_ACCOUNTS_PER_USER="40") as strata:
        await _forty_accounts(strata, fake_exchanges)


async def _forty_accounts(strata, fake_exchanges):
    """40 accounts make /accounts longer than one message: it is paged (◀ ▶), each page fitting and parsing."""
    for _ in range(40):
        api_key, secret = register(fake_exchanges, "binance", balances={
            "USDT": 1000, "BTC": "0.5", "ETH": 2, "BNB": 3, "SOL": 4, "XRP": 5})
        await strata.runtime.accounts.connect(USER, USER, "binance", Credentials(api_key, secret))
    await strata.send(USER, "/accounts")
    page = await strata.next_reply(USER, contains="— updated", timeout=30)
    labels = ""
    for n in range(1, 9):
        assert f"(page {n} of 8)" in page.plain_text
        assert_fits(page)
        labels += page.plain_text
        if n < 8:
            await strata.press(USER, page, f"page {n + 1} ▶")
            page = await strata.next_reply(USER, contains=f"(page {n + 1} of 8) — updated", timeout=30)
    assert all(f"binance-{n}" in labels for n in range(2, 41))
    assert not [r for r in strata.tg.rejected if r.chat_id == USER]


# --- per-user limits -----------------------------------------------------------------------------------------


async def test_accounts_and_strategies_per_user_are_limited_and_others_are_not_affected(make_strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50000")
    async with make_strata(STRATA_MAX_ACCOUNTS_PER_USER="1", STRATA_MAX_STRATEGIES_PER_USER="2") as s:
        await connect_with_key(s, fake_exchanges, "binance")
        await s.send(USER, "/connect")
        refused = await s.next_reply(USER, contains="most this bot allows")
        assert "/disconnect one first" in refused.text
        # The same refusal if the check is raced (a /connect begun before the first account was stored).
        api_key, secret = register(fake_exchanges, "binance")
        refused = await _connect_raw(s, api_key, secret)
        assert "most this bot allows" in refused
        assert len(await s.runtime.store.accounts.list_for_user(USER)) == 1

        for _ in range(2):
            await allocate_one_line(s, "/allocate binance dca 100 BTC/USDT every=1d amount=10")
        await s.send(USER, "/allocate binance dca 100 BTC/USDT every=1d amount=10")
        assert "2 strategies running or paused" in (await s.next_reply(USER, contains="most this bot")).text
        [first, _] = await s.runtime.store.strategies.list_for_user(USER)
        await s.runtime.strategies.stop(USER, first.id, sell=False)  # a stopped strategy frees its place
        await allocate_one_line(s, "/allocate binance dca 100 BTC/USDT every=1d amount=10")

        await connect_with_key(s, fake_exchanges, "binance", user=OTHER)  # another user is not affected
        await allocate_one_line(s, "/allocate binance dca 100 BTC/USDT every=1d amount=10", user=OTHER)


async def _connect_raw(s, api_key: str, secret: str) -> str:
    try:
        await s.runtime.accounts.connect(USER, USER, "binance", Credentials(api_key, secret))
    except Exception as exc:  # the service's UserError, shown as is
        return str(exc)
    return "connected"

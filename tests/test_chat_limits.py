"""One user's input can never take the bot down: bounded numbers, strictly parsed ids, every reply within
Telegram's 4,096 characters — the real bot (PTB's HTTP stack) against the fake Telegram and fake venues."""

from __future__ import annotations

import asyncio
import time

from tests.chat_helpers import USER, connect_with_key
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
    await strata.press(USER, await strata.next_reply(USER, contains="Which market"), "BTC/USDT")
    await strata.next_reply(USER, contains="What budget")
    await strata.send(USER, "1e100000000")
    await strata.next_reply(USER, contains="Parameters of")
    started = time.perf_counter()
    await strata.send(USER, "every=1d")
    answer = await strata.next_reply(USER, contains="budget")
    assert time.perf_counter() - started < 3.0
    assert "between" in answer.text and len(answer.text) < 300


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

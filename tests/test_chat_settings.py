"""/settings end to end: silent fill alerts carry disable_notification, off sends none, pauses always go out;
the daily summary's time zone by button or `/settings tz <name>` (tests/test_summary.py: when it is sent)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.timezones import COMMON_ZONES
from tests.chat_helpers import USER, connect_with_key
from tests.test_chat_strategies import allocate_one_line


async def set_mode(s, strategy_id: int, mode: str) -> None:
    await s.send(USER, "/settings")
    menu = await s.next_reply(USER, contains="Settings")
    await s.press(USER, menu, f"#{strategy_id} {mode}")
    await s.next_reply(USER, contains=f"#{strategy_id}")


def fills(s) -> list:
    return [m for m in s.tg.sent if m.chat_id == USER and "Bought" in (m.text or "")]


async def test_silent_alerts_are_sent_without_sound_and_off_sends_none_but_pauses_still_go_out(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    await connect_with_key(strata, fake_exchanges, "binance")
    await allocate_one_line(strata, "/allocate binance dca 100 BTC/USDT every=1m amount=10")
    await strata.next_reply(USER, contains="Bought", timeout=15)
    [strategy] = await strata.runtime.store.strategies.list_for_user(USER)

    await set_mode(strata, strategy.id, "silent")
    assert (await strata.runtime.store.strategies.get(strategy.id)).alerts == "silent"
    before = len(fills(strata))
    await _run_next_slot(strata, strategy.id, minutes=1)
    silent = await strata.next_reply(USER, contains="Bought", timeout=15)
    assert silent.disable_notification is True
    assert len(fills(strata)) == before + 1

    await set_mode(strata, strategy.id, "off")
    await _run_next_slot(strata, strategy.id, minutes=2)
    book.inject("revoked", count=50)  # the next private call fails with -2015: the account pauses, loudly
    await _run_next_slot(strata, strategy.id, minutes=3)
    pause = await strata.next_reply(USER, contains="rejected", timeout=20)
    assert pause.disable_notification is False
    assert len(fills(strata)) == before + 1, "no fill alert while alerts are off"
    orders = await strata.runtime.store.orders.fills_for_strategy(strategy.id)
    assert len(orders) == 3, "the silent and the unannounced buys both happened"


async def _run_next_slot(s, strategy_id: int, *, minutes: int) -> None:
    """Move the engine's clock `minutes` ahead (DCA every=1m owes a slot each minute) and run the strategy."""
    offset = timedelta(minutes=minutes, seconds=1)
    s.runtime.engine.ctx.clock = lambda: datetime.now(UTC) + offset
    await s.runtime.engine.run_strategy(strategy_id)


async def test_time_zone_by_button_and_by_one_line_form_and_a_bad_zone_gets_a_friendly_answer(strata):
    await strata.send(USER, "/settings")
    menu = await strata.next_reply(USER, contains="Settings")
    assert "Daily summary" in menu.plain_text and "off (would be at 08:00 UTC)" in menu.plain_text
    await strata.press(USER, menu, "Time zone: UTC")
    zones = await strata.next_reply(USER, contains="Time zone")
    labels = zones.button_texts
    assert [label.removeprefix("• ") for label in labels[:-1]] == list(COMMON_ZONES) and labels[0] == "• UTC"
    await strata.press(USER, zones, "America/New_York")
    menu = await strata.next_reply(USER, contains="Settings")
    assert "08:00 America/New_York" in menu.plain_text
    await strata.press(USER, menu, "Summary +1 h")
    menu = await strata.next_reply(USER, contains="09:00 America/New_York")
    await strata.press(USER, menu, "Daily summary: turn on")
    await strata.next_reply(USER, contains="on at 09:00 America/New_York")
    settings = (await strata.runtime.store.users.get(USER)).settings
    assert (settings["tz"], settings["summary_hour"], settings["summary"]) == ("America/New_York", 9, 1)

    await strata.send(USER, "/settings tz europe/PARIS")
    assert "on at 09:00 Europe/Paris" in (await strata.next_reply(USER, contains="Settings")).plain_text
    for bad in ("Mars/Olympus", "Europe", "../../etc/passwd", "x" * 300):
        await strata.send(USER, f"/settings tz {bad}")
        answer = await strata.next_reply(USER)
        assert "not a time zone I know" in answer.plain_text and "Europe/Berlin" in answer.plain_text, bad
    await strata.send(USER, "/settings hour 25")
    assert "0–23" in (await strata.next_reply(USER)).plain_text
    await strata.send(USER, "/settings tz")
    assert "/settings tz" in (await strata.next_reply(USER, contains="Usage")).plain_text
    assert (await strata.runtime.store.users.get(USER)).settings["tz"] == "Europe/Paris", "bad input lost nothing"
    assert "Traceback" not in strata.log.getvalue()

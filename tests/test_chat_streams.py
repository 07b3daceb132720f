"""Streamed fills through the whole bot (issue 21, item 1): real PTB against the fake Telegram Bot API, the real
engine with its WebSocket listener and real ccxt against the fake Binance on 127.0.0.1.

The fill alert reaches Telegram within a second with the poller effectively off; /status says per strategy
whether its fills are streamed or polled, and says polled while the stream is down; a Paper account is never
subscribed; neither the key, the secret nor a subscription's signature reaches the log.
"""

from __future__ import annotations

import asyncio
import time

from bot.exchanges.streams import Backoff
from tests.chat_helpers import USER, connect_with_key
from tests.test_chat_strategies import allocate_one_line


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def status_text(s) -> str:
    await s.send(USER, "/status")
    return (await s.next_reply(USER, contains="Your strategies")).plain_text


async def test_streamed_fill_alert_within_a_second_and_status_says_streamed_or_polled(make_strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    streams = fake_exchanges.binance_streams
    book.set_price("BTC/USDT", "50500")
    async with make_strata(STRATA_FILL_POLL_SECONDS="3600") as s:
        account, api_key = await connect_with_key(s, fake_exchanges, "binance")
        await allocate_one_line(s, "/allocate binance grid 100.1 BTC/USDT low=50000 high=60000 levels=2")
        await wait_until(lambda: s.runtime.engine.streams.streamed(account.id))
        assert streams.subscribed(api_key)
        text = await status_text(s)
        assert "fills: streamed" in text  # and the footer says what is true (not "checked every 3600 s")
        assert "Fills are streamed by the exchange as they happen (with a safety check every 5 min)." in text

        await asyncio.sleep(1.1)  # the chat's one message per second has passed: the alert goes out at once
        started = time.monotonic()
        book.set_price("BTC/USDT", "49900")
        alert = await s.next_reply(USER, contains="Bought", timeout=5)
        latency = time.monotonic() - started
        print(f"fill -> Telegram alert: {latency * 1000:.0f} ms")
        assert latency < 1.0 and "Bought 0.002" in alert.plain_text

        s.runtime.engine.streams.hubs["binance"].backoff = Backoff(base=0.05, cap=0.2)  # quick retries here
        streams.refuse(10_000)  # down until we let it reconnect
        await streams.drop()
        await wait_until(lambda: not s.runtime.engine.streams.streamed(account.id))
        text = await status_text(s)
        assert "fills: polled" in text and "Fills are checked every 3600 s." in text
        streams.refuse(0)
        await wait_until(lambda: s.runtime.engine.streams.streamed(account.id), timeout=10)
        assert "fills: streamed" in await status_text(s)

        log = s.log.getvalue()
        secret = next(k.secret for k in book.keys.values() if k.api_key == api_key)
        assert api_key not in log and secret not in log and "signature" not in log


async def test_a_paper_account_is_never_subscribed(strata, fake_exchanges):
    fake_exchanges.books["binance"].set_price("BTC/USDT", "50500")
    await strata.send(USER, "/connect paper binance 5000")
    await strata.next_reply(USER, contains="opened")
    await allocate_one_line(strata, "/allocate paper grid 100.1 BTC/USDT low=50000 high=60000 levels=2")
    await strata.runtime.engine.streams.sync()  # what the engine's sync loop does every few seconds
    await asyncio.sleep(0.5)
    assert fake_exchanges.binance_streams.subscriptions == 0 and not fake_exchanges.binance_streams.attempts
    assert "fills:" not in await status_text(strata)


def test_the_status_footer_says_how_the_listed_strategies_fills_arrive():
    from types import SimpleNamespace

    from handlers.render import fills_footer

    def listed(*modes):
        return [SimpleNamespace(fills=mode, fill_sweep_seconds=300.0) for mode in modes]

    assert fills_footer(listed("streamed", None), 2.0) == (
        "Fills are streamed by the exchange as they happen (with a safety check every 5 min)."
    )
    assert fills_footer(listed("polled", "streamed"), 2.0) == (
        "Fills are streamed as they happen where marked “streamed” (with a safety check every 5 min) and checked "
        "every 2 s where “polled”."
    )
    assert fills_footer(listed("polled"), 2.0) == fills_footer(listed(None), 2.0) == "Fills are checked every 2 s."

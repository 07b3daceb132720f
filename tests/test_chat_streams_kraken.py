"""Kraken fills streamed through the whole bot (issue 21, item 1): real PTB against the fake Telegram Bot API, the
real engine with its WebSocket v2 listener and real ccxt against the fake Kraken on 127.0.0.1.

The fill alert reaches Telegram within a second with the poller effectively off, and /status says the
strategy's fills are streamed; neither the key, the secret nor the WebSocket token reaches the log.
"""

from __future__ import annotations

import asyncio
import time

from tests.chat_helpers import USER, connect_with_key
from tests.test_chat_strategies import allocate_one_line
from tests.test_chat_streams import status_text, wait_until


async def test_a_kraken_fill_alert_within_a_second_and_status_says_streamed(make_strata, fake_exchanges):
    book = fake_exchanges.books["kraken"]
    streams = fake_exchanges.kraken_streams
    book.set_price("BTC/USD", "50500")
    async with make_strata(STRATA_FILL_POLL_SECONDS="3600") as s:
        account, api_key = await connect_with_key(s, fake_exchanges, "kraken")
        await allocate_one_line(s, "/allocate kraken grid 100.5 BTC/USD low=50000 high=60000 levels=2")
        await wait_until(lambda: s.runtime.engine.streams.streamed(account.id))
        assert streams.subscribed(api_key)
        assert "fills: streamed" in await status_text(s)

        await asyncio.sleep(1.1)  # the chat's one message per second has passed: the alert goes out at once
        started = time.monotonic()
        book.set_price("BTC/USD", "49900")
        alert = await s.next_reply(USER, contains="Bought", timeout=5)
        latency = time.monotonic() - started
        print(f"kraken fill -> Telegram alert: {latency * 1000:.0f} ms")
        assert latency < 1.0 and "Bought 0.002" in alert.plain_text

        log = s.log.getvalue()
        secret = next(k.secret for k in book.keys.values() if k.api_key == api_key)
        assert api_key not in log and secret not in log
        assert not any(token in log for token in streams.tokens)

"""Streamed Binance USD-M fills through the whole bot (issue 21, item 1): real PTB against the fake Telegram Bot
API, the real engine with its listenKey stream listener and real ccxt against the fake Binance USD-M on 127.0.0.1.

The futures fill alert reaches Telegram within a second with the poller effectively off; /status says the
strategy's fills are streamed, polled while the stream is down, streamed again once it is back; neither the key,
the secret nor a listenKey reaches the log.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

from bot.exchanges.streams import Backoff
from tests.chat_helpers import USER, connect_with_key
from tests.test_chat_strategies import allocate_one_line
from tests.test_chat_streams import status_text, wait_until

FUT = "BTC/USDT:USDT"


async def test_streamed_futures_fill_alert_within_a_second_and_status_says_streamed(make_strata, fake_exchanges):
    book = fake_exchanges.books["binanceusdm"]
    streams = fake_exchanges.binanceusdm_streams
    book.set_price(FUT, "50500")
    async with make_strata(STRATA_FILL_POLL_SECONDS="3600") as s:
        account, api_key = await connect_with_key(s, fake_exchanges, "binanceusdm", balances={"USDT": Decimal(1000)})
        await allocate_one_line(s, "/allocate binanceusdm grid 100.1 BTC/USDT low=50000 high=60000 levels=2")
        await wait_until(lambda: s.runtime.engine.streams.streamed(account.id))
        assert streams.subscribed(api_key)
        assert "fills: streamed" in await status_text(s)

        await asyncio.sleep(1.1)  # the chat's one message per second has passed: the alert goes out at once
        started = time.monotonic()
        book.set_price(FUT, "49900")
        alert = await s.next_reply(USER, contains="long", timeout=5)
        latency = time.monotonic() - started
        print(f"futures fill -> Telegram alert: {latency * 1000:.0f} ms")
        assert latency < 1.0 and "0.002" in alert.plain_text

        s.runtime.engine.streams.hubs["binanceusdm"].backoff = Backoff(base=0.05, cap=0.2)  # quick retries here
        streams.refuse(10_000)  # down until we let it reconnect
        await streams.drop()
        await wait_until(lambda: not s.runtime.engine.streams.streamed(account.id))
        assert "fills: polled" in await status_text(s)
        streams.refuse(0)
        await wait_until(lambda: s.runtime.engine.streams.streamed(account.id), timeout=10)
        assert "fills: streamed" in await status_text(s)

        log = s.log.getvalue()
        secret = book.keys[api_key].secret
        listen_key = streams.listen_key(api_key)
        assert listen_key and listen_key not in log
        assert api_key not in log and secret not in log

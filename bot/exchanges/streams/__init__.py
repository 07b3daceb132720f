"""The venues' user-data streams: fills pushed within a second instead of polled (issue 21).

`base.UserStreamHub` is venue-neutral (connections multiplexing accounts, heartbeat, rollover, reconnects with
backoff within the venue's connection limit); one module per venue holds its messages (`binance`: Binance Spot's
WebSocket API). A venue's adapter names its protocol in `user_stream` and its URL in `stream_url`; `protocol`
builds it. The engine side (which accounts, what a fill does) is `bot.engine.streams`.
"""

from __future__ import annotations

from bot.exchanges.streams.base import AttemptWindow, Backoff, StreamProtocol, UserStreamHub
from bot.exchanges.streams.binance import BinanceSpotStream
from bot.exchanges.streams.kraken import KrakenExecutionsStream

#: Protocol name (an adapter's `user_stream`) → its class.
PROTOCOLS: dict[str, type] = {"binance-ws-api": BinanceSpotStream}
PROTOCOLS["kraken-ws-v2"] = KrakenExecutionsStream


def protocol(name: str) -> StreamProtocol:
    return PROTOCOLS[name]()


__all__ = ["PROTOCOLS", "AttemptWindow", "Backoff", "StreamProtocol", "UserStreamHub", "protocol"]

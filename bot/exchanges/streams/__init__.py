"""The venues' user-data streams: fills pushed within a second instead of polled (issue 21).

`base.UserStreamHub` is venue-neutral (connections multiplexing accounts, heartbeat, rollover, reconnects with
backoff within the venue's connection limit); one module per venue holds its messages (`binance`: Binance Spot's
WebSocket API; `binanceusdm`: USD-M's listenKeys on its `/private` stream; `kraken`: v2 `executions`, one account
per connection). A venue's adapter names its protocol
in `user_stream` and its URL in `stream_url`; `protocol` builds it. The engine side (which accounts, what a fill
does) is `bot.engine.streams`.
"""

from __future__ import annotations

from bot.exchanges.streams.base import (
    AttemptWindow,
    Backoff,
    RestCredential,
    StreamProtocol,
    SubscribeRefused,
    UserStreamHub,
)
from bot.exchanges.streams.binance import BinanceSpotStream
from bot.exchanges.streams.binanceusdm import BinanceUsdmStream
from bot.exchanges.streams.kraken import KrakenExecutionsStream

#: Protocol name (an adapter's `user_stream`) → its class.
PROTOCOLS: dict[str, type] = {
    "binance-ws-api": BinanceSpotStream, "binanceusdm-listenkey": BinanceUsdmStream,
    "kraken-ws-v2": KrakenExecutionsStream,
}


def protocol(name: str) -> StreamProtocol:
    """The protocol `name` (its REST needs, if any, go through the hub's `rest`)."""
    return PROTOCOLS[name]()


__all__ = [
    "PROTOCOLS", "AttemptWindow", "Backoff", "RestCredential", "StreamProtocol", "SubscribeRefused",
    "UserStreamHub", "protocol",
]

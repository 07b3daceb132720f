"""Pytest fixtures for the fake exchanges: the venues in-process and real ccxt clients pointed at them.

async def test_balance(fake_exchanges, exchange_client):
    fake_exchanges.books["binance"].add_key("k", "s", balances={"USDT": "100"})
    client = exchange_client("binance", "k", "s")
    balance = await client.fetch_balance()
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import ccxt.async_support as ccxt
import pytest

from bot.sandbox.exchanges import FakeExchanges, start_fake_exchanges

#: ccxt options that keep load_markets to the one exchangeInfo/markets call per venue.
CCXT_OPTIONS: dict[str, dict[str, Any]] = {
    "binance": {"fetchMarkets": {"types": ["spot"]}, "fetchMargins": False, "fetchCurrencies": False},
    "binanceusdm": {"fetchCurrencies": False},
    "kraken": {},
}


def point_at(exchange: ccxt.Exchange, origin: str) -> ccxt.Exchange:
    """Give every URL in `exchange.urls['api']` the fake's origin, keeping its path (as STRATA_EXCHANGE_URLS)."""
    for name, url in list(exchange.urls["api"].items()):
        if isinstance(url, str):
            exchange.urls["api"][name] = origin + urlsplit(url).path
    return exchange


def make_client(
    fake: FakeExchanges, venue: str, api_key: str | None = None, secret: str | None = None, **config: Any
) -> ccxt.Exchange:
    """A real ccxt async client for `venue`, rate limiter off, pointed at the running fake."""
    options = {**CCXT_OPTIONS.get(venue, {}), **config.pop("options", {})}
    settings: dict[str, Any] = {"enableRateLimit": False, "options": options, **config}
    if api_key is not None:
        settings["apiKey"] = api_key
    if secret is not None:
        settings["secret"] = secret
    return point_at(getattr(ccxt, venue)(settings), fake.origins[venue])


@pytest.fixture
async def fake_exchanges() -> AsyncIterator[FakeExchanges]:
    """binance, binanceusdm (and kraken when `bot.sandbox.kraken` exists) on random 127.0.0.1 ports.

    `.books[venue]` scripts keys, prices and faults; `.origins[venue]` and `.exchange_urls` locate them.
    """
    running = await start_fake_exchanges()
    try:
        yield running
    finally:
        await running.close()


@pytest.fixture
async def exchange_client(fake_exchanges: FakeExchanges) -> AsyncIterator[Callable[..., ccxt.Exchange]]:
    """Factory `exchange_client(venue, api_key=None, secret=None, **ccxt_config)`; clients closed after the test."""
    clients: list[ccxt.Exchange] = []

    def factory(venue: str, api_key: str | None = None, secret: str | None = None, **config: Any) -> ccxt.Exchange:
        client = make_client(fake_exchanges, venue, api_key, secret, **config)
        clients.append(client)
        return client

    try:
        yield factory
    finally:
        # ccxt's close() sleeps 250 ms each (timeout_on_exit): close them together
        await asyncio.gather(*(client.close() for client in clients))

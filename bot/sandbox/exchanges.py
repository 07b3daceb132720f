"""Start the fake venues (binance, binanceusdm and, when present, kraken) on 127.0.0.1.

In-process for tests and the demo (`start_fake_exchanges`), or as a separate process for the benchmarks:

    python -m bot.sandbox.exchanges --port-base 9100

prints one line `READY STRATA_EXCHANGE_URLS=binance=http://127.0.0.1:9100,…` once every server listens, then
serves until interrupted. Each venue gets its own origin; `exchange_urls` is the value for the
`STRATA_EXCHANGE_URLS` variable (venue id = origin). Servers run with `access_log=None`: the fakes must not
write request lines to logs that tests search for secrets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

from aiohttp import web

from bot.sandbox.binance import BinanceVenue, make_binance_book
from bot.sandbox.exchange_book import ExchangeBook

#: Venues in start order; kraken only when `bot.sandbox.kraken` can be imported.
VENUES = ("binance", "binanceusdm", "kraken")


def _kraken_module() -> ModuleType | None:
    try:
        return importlib.import_module("bot.sandbox.kraken")
    except ImportError:
        return None


def make_books(venues: tuple[str, ...] = VENUES, *, clock: Callable[[], int] | None = None) -> dict[str, ExchangeBook]:
    """Fresh books with the recorded markets and price feeds, one per available venue."""
    books: dict[str, ExchangeBook] = {}
    for venue in venues:
        if venue == "binance":
            books[venue] = make_binance_book("spot", clock=clock)
        elif venue == "binanceusdm":
            books[venue] = make_binance_book("usdm", clock=clock)
        elif venue == "kraken":
            kraken = _kraken_module()
            if kraken is not None:
                books[venue] = kraken.make_kraken_book(clock=clock)
        else:
            raise ValueError(f"unknown venue {venue!r}")
    return books


def make_app(venue: str, book: ExchangeBook, *, weight_limit: int | None = None) -> web.Application:
    """The aiohttp application serving `venue` over `book`."""
    if venue in ("binance", "binanceusdm"):
        return BinanceVenue(book, weight_limit=weight_limit).app
    if venue == "kraken":
        kraken = _kraken_module()
        if kraken is None:
            raise ValueError("bot.sandbox.kraken is not available")
        return kraken.make_kraken_app(book)
    raise ValueError(f"unknown venue {venue!r}")


@dataclass
class FakeExchanges:
    """Running fake venues: their books (to script markets and keys), apps and origins."""

    books: dict[str, ExchangeBook]
    apps: dict[str, web.Application]
    origins: dict[str, str]
    _runners: list[web.AppRunner] = field(default_factory=list, repr=False)

    @property
    def exchange_urls(self) -> str:
        """The `STRATA_EXCHANGE_URLS` value: `binance=http://127.0.0.1:p,…`."""
        return ",".join(f"{venue}={origin}" for venue, origin in self.origins.items())

    def add_key(self, api_key: str, secret: str, *, venues: tuple[str, ...] | None = None, **flags: object) -> None:
        """Register one key on several venues at once (a Binance key works for spot and futures alike)."""
        for venue in venues or tuple(self.books):
            self.books[venue].add_key(api_key, secret, **flags)  # type: ignore[arg-type]

    async def close(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()


async def start_fake_exchanges(
    *,
    host: str = "127.0.0.1",
    port_base: int | None = None,
    books: dict[str, ExchangeBook] | None = None,
    weight_limits: dict[str, int] | None = None,
) -> FakeExchanges:
    """Serve each book's venue on its own port (random ports unless `port_base`, then base, base+1, …)."""
    books = make_books() if books is None else books
    weight_limits = weight_limits or {}
    apps: dict[str, web.Application] = {}
    origins: dict[str, str] = {}
    running = FakeExchanges(books, apps, origins)
    try:
        for index, (venue, book) in enumerate(books.items()):
            apps[venue] = make_app(venue, book, weight_limit=weight_limits.get(venue))
            runner = web.AppRunner(apps[venue], access_log=None, shutdown_timeout=0.1)
            await runner.setup()
            running._runners.append(runner)
            site = web.TCPSite(runner, host, 0 if port_base is None else port_base + index)
            await site.start()
            port = runner.addresses[0][1]
            origins[venue] = f"http://{host}:{port}"
    except BaseException:
        await running.close()
        raise
    return running


async def _serve(port_base: int | None, host: str) -> None:
    running = await start_fake_exchanges(host=host, port_base=port_base)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(f"READY STRATA_EXCHANGE_URLS={running.exchange_urls}", flush=True)
    try:
        await stop.wait()
    finally:
        await running.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.sandbox.exchanges", description=__doc__.splitlines()[0])
    parser.add_argument("--port-base", type=int, default=None, help="first port (venues take consecutive ports)")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.port_base, args.host))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Start the fake venues (binance, binanceusdm and, when present, kraken) on 127.0.0.1.

In-process for tests and the demo (`start_fake_exchanges`), or as a separate process for the benchmarks:

    python -m bot.sandbox.exchanges --port-base 9100 --keys 1000

prints one line `READY STRATA_EXCHANGE_URLS=binance=http://127.0.0.1:9100,… CONTROL=http://127.0.0.1:N` once
every server listens, then serves until interrupted. Each venue gets its own origin; `exchange_urls` is the value
for the `STRATA_EXCHANGE_URLS` variable (venue id = origin). `--keys N` registers `sandbox_credentials(i)` for
i < N on every venue. The CONTROL origin scripts the books from another process (see `make_control_app`).
Servers run with `access_log=None`: the fakes must not write request lines to logs that tests search for secrets.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import importlib
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from types import ModuleType
from typing import Any

from aiohttp import web

from bot.sandbox.binance import VENUE_KEY, BinanceVenue, make_binance_book
from bot.sandbox.exchange_book import BookError, ExchangeBook

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

    @property
    def kraken_streams(self) -> Any:
        """The fake Kraken's WebSocket v2 `executions` channel (`bot.sandbox.kraken_ws.ExecutionStreams`)."""
        return _kraken_module().kraken_streams(self.apps["kraken"])

    def add_key(self, api_key: str, secret: str, *, venues: tuple[str, ...] | None = None, **flags: object) -> None:
        """Register one key on several venues at once (a Binance key works for spot and futures alike)."""
        for venue in venues or tuple(self.books):
            self.books[venue].add_key(api_key, secret, **flags)  # type: ignore[arg-type]

    @property
    def binance_streams(self) -> Any:
        """The fake Binance Spot's WebSocket API user-data streams (`bot.sandbox.binance_ws.UserDataStreams`)."""
        return self.apps["binance"][VENUE_KEY].streams

    def user_streams(self, venue: str) -> Any:
        """The fake user-data stream server of `venue`, or None when the fake has none.

        What the control app (benchmarks) uses of it: `drop()` (async, closes every connection), `attempts`
        (monotonic time of every connection attempt), `sessions` (open connections), `subscriptions` (count)
        and `events_sent`. A venue's fake stream is found as its app's served object's `streams` attribute.
        """
        app = self.apps.get(venue)
        if venue == "kraken" and app is not None:  # its served object has a key of its own module
            return self.kraken_streams
        served = app.get(VENUE_KEY) if app is not None else None
        return getattr(served, "streams", None)

    @property
    def binanceusdm_streams(self) -> Any:
        """The fake Binance USD-M's listenKeys and `/private` stream (`bot.sandbox.binance_usdm_ws`)."""
        return self.apps["binanceusdm"][VENUE_KEY].streams

    async def run_price_feed(self, interval_seconds: float) -> None:
        """Advance every book's candles each `interval_seconds` (resting orders fill as prices cross).

        Runs until cancelled; the offline demo starts it as a task so prices move on their own.
        """
        while True:
            await asyncio.sleep(interval_seconds)
            for book in self.books.values():
                book.advance()

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


def sandbox_credentials(index: int) -> tuple[str, str]:
    """The deterministic (api_key, secret) of sandbox key `index`, valid on every venue.

    The secret is base64 of 64 bytes: Kraken needs base64, Binance signs with the text as it is.
    """
    digest = hashlib.sha512(f"strata-sandbox-{index}".encode()).digest()
    return f"sandbox-key-{index:06d}", base64.b64encode(digest).decode()


def register_sandbox_keys(books: dict[str, ExchangeBook], count: int, balances: dict[str, str]) -> None:
    """Register `sandbox_credentials(i)` for i < count on every book."""
    for index in range(count):
        api_key, secret = sandbox_credentials(index)
        for book in books.values():
            book.add_key(api_key, secret, balances=dict(balances))


# ---------------------------------------------------------------------------------------------- control app
def make_control_app(running: FakeExchanges) -> web.Application:
    """JSON endpoints to script the books of a fake running in another process (benchmarks, demo).

    POST /books/{venue}/keys      {"api_key", "secret", "balances"?, flags…}
    POST /books/{venue}/price     {"symbol", "price"}            → {"fills": n}
    POST /books/{venue}/advance   {"symbol"?, "steps"?}          → {"moved": bool}
    POST /books/{venue}/faults    {"kind", "count"?, "path"?}
    POST /books/{venue}/fill      {"order_id", "amount", "price"?}
    GET  /books/{venue}/open_orders                              → [{id, api_key, symbol, side, price, …}]
    GET  /books/{venue}/stats     → {"requests": {"GET /path": n}, "weight_by_ip": {ip: used this minute},
                                     "weight_by_path": {"GET /path": weight since start} (Binance)}
    POST /streams/{venue}/drop    → {"dropped": connections closed}
    GET  /streams/{venue}/stats   → {"attempts": [monotonic s], "now": monotonic s, "connections",
                                     "subscriptions", "events_sent"}
    """
    routes = web.RouteTableDef()

    def book_of(request: web.Request) -> ExchangeBook:
        venue = request.match_info["venue"]
        if venue not in running.books:
            raise web.HTTPNotFound(text=f"no venue {venue}")
        return running.books[venue]

    async def body(request: web.Request) -> dict[str, Any]:
        data = await request.json()
        if not isinstance(data, dict):
            raise web.HTTPBadRequest(text="a JSON object is expected")
        return data

    @routes.post("/books/{venue}/keys")
    async def add_key(request: web.Request) -> web.Response:
        data = await body(request)
        book_of(request).add_key(data.pop("api_key"), data.pop("secret"), **data)
        return web.json_response({"ok": True})

    @routes.post("/books/{venue}/price")
    async def set_price(request: web.Request) -> web.Response:
        data = await body(request)
        fills = book_of(request).set_price(data["symbol"], str(data["price"]))
        return web.json_response({"fills": len(fills)})

    @routes.post("/books/{venue}/advance")
    async def advance(request: web.Request) -> web.Response:
        data = await body(request)
        moved = book_of(request).advance(data.get("symbol"), int(data.get("steps", 1)))
        return web.json_response({"moved": moved})

    @routes.post("/books/{venue}/faults")
    async def inject(request: web.Request) -> web.Response:
        data = await body(request)
        book_of(request).inject(data["kind"], count=int(data.get("count", 1)), path=data.get("path"))
        return web.json_response({"ok": True})

    @routes.post("/books/{venue}/fill")
    async def fill(request: web.Request) -> web.Response:
        data = await body(request)
        price = data.get("price")
        trade = book_of(request).fill_partially(
            int(data["order_id"]), str(data["amount"]), None if price is None else str(price)
        )
        return web.json_response({"trade_id": trade.id})

    @routes.get("/books/{venue}/open_orders")
    async def open_orders(request: web.Request) -> web.Response:
        book = book_of(request)
        orders = [o for key in book.keys for o in book.open_orders(key)]
        return web.json_response(
            [
                {
                    "id": o.id,
                    "api_key": o.api_key,
                    "symbol": o.symbol,
                    "side": o.side,
                    "price": _text(o.price),
                    "amount": _text(o.amount),
                    "filled": _text(o.filled),
                    "client_order_id": o.client_order_id,
                }
                for o in orders
            ]
        )

    @routes.get("/books/{venue}/stats")
    async def stats(request: web.Request) -> web.Response:
        book = book_of(request)
        app = running.apps[request.match_info["venue"]]
        weights: dict[str, int] = {}
        venue = app.get(VENUE_KEY)
        if venue is not None:
            minute = book.now_ms() // 60_000
            weights = {ip: used for (ip, m), used in venue.weights.used.items() if m == minute}
        counts = {f"{method} {path}": n for (method, path), n in book.request_counts.items()}
        by_path = {f"{method} {path}": w for (method, path), w in getattr(venue, "weight_by_path", {}).items()}
        return web.json_response({"requests": counts, "weight_by_ip": weights, "weight_by_path": by_path})

    def streams_of(request: web.Request) -> Any:
        streams = running.user_streams(request.match_info["venue"])
        if streams is None:
            raise web.HTTPNotFound(text=f"no user-data stream fake for {request.match_info['venue']}")
        return streams

    @routes.post("/streams/{venue}/drop")
    async def drop_streams(request: web.Request) -> web.Response:
        streams = streams_of(request)
        dropped = len(streams.sessions)
        await streams.drop()
        return web.json_response({"dropped": dropped})

    @routes.get("/streams/{venue}/stats")
    async def stream_stats(request: web.Request) -> web.Response:
        streams = streams_of(request)
        return web.json_response({
            "attempts": list(streams.attempts),
            "now": time.monotonic(),
            "connections": len(streams.sessions),
            "subscriptions": streams.subscriptions,
            "events_sent": streams.events_sent,
        })

    @web.middleware
    async def book_errors(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except BookError as err:
            return web.json_response({"error": err.kind, "message": err.message}, status=400)
        except (KeyError, ValueError, TypeError) as err:
            return web.json_response({"error": "bad_request", "message": str(err)}, status=400)

    app = web.Application(middlewares=[book_errors])
    app.add_routes(routes)
    return app


def _text(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:f}"


async def _serve(args: argparse.Namespace) -> None:
    books = make_books()
    register_sandbox_keys(books, args.keys, {"USDT": args.balance})
    for book in books.values():
        book.log_requests = args.log_requests
    running = await start_fake_exchanges(host=args.host, port_base=args.port_base, books=books)
    control = web.AppRunner(make_control_app(running), access_log=None, shutdown_timeout=0.1)
    await control.setup()
    control_port = 0 if args.port_base is None else args.port_base + len(books)
    await web.TCPSite(control, args.host, control_port).start()
    control_origin = f"http://{args.host}:{control.addresses[0][1]}"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    feed = asyncio.create_task(running.run_price_feed(args.advance_seconds)) if args.advance_seconds else None
    print(f"READY STRATA_EXCHANGE_URLS={running.exchange_urls} CONTROL={control_origin}", flush=True)
    try:
        await stop.wait()
    finally:
        if feed is not None:
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed
        await control.cleanup()
        await running.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.sandbox.exchanges", description=__doc__.splitlines()[0])
    parser.add_argument("--port-base", type=int, default=None, help="first port (venues, then control, consecutive)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--keys", type=int, default=0, help="register sandbox_credentials(0..N-1) on every venue")
    parser.add_argument("--balance", default="1000000", help="USDT balance of each registered key")
    parser.add_argument("--log-requests", action="store_true", help="keep every request in memory (tests only)")
    parser.add_argument(
        "--advance-seconds", type=float, default=0, help="open the next recorded candle every S seconds (0: never)"
    )
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A pool of ccxt async instances shared by every account of a venue, with credentials bound per call.

A bare ccxt binance instance costs ~245 KB and its markets several MB, so the process keeps, per venue, one
*master* instance (loads the markets once, serves public calls, never holds a key) and a small set of
*slots* (N instances sharing the master's markets by reference through `set_markets_from_exchange`). A
private call takes a slot's lock, writes the caller's key into the instance, runs, and wipes the key and
ccxt's `last_request_*` copies of the signed request before releasing the lock: ccxt can await inside a
call before it signs, and a key swapped on a shared instance during that await would sign another user's
order. Several slots keep one slow call from serialising every account.

Rate limiting: ccxt's own limiter is per instance (`enableRateLimit`), which is the wrong scope (Binance
counts weight per IP, Kraken per key) and would make N slots spend N times the budget. It is switched off;
instead each instance's `fetch2` — the single place every REST request passes, once per HTTP request, even
for methods that make several — first waits on our shared `RateBudgets` with ccxt's own cost for that
endpoint, and every response's headers are shown to the budget (`X-MBX-USED-WEIGHT-1M`).

What differs by venue (ccxt class and options, testnet, per-key nonces) is its adapter's (`bot.exchanges.venues`).
Kraken nonces are per key and must strictly increase: one key's private calls are serialised by a per-key
lock, and the nonce comes from a per-key source shared by all slots instead of ccxt's per-instance counter.
With a front and workers on PostgreSQL, several processes sign with one key: `shared_nonces`
(`storage.key_nonces`) makes them take turns and carries the last nonce from one process to the next.

Configuration: `STRATA_EXCHANGE_URLS` moves the origin of every URL in `urls['api']` (path kept);
`STRATA_SANDBOX=1` switches binance/binanceusdm to ccxt's testnet URLs (Kraken has no testnet: refused),
except for a venue the URL override names, where the override wins.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import ssl
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import ccxt.async_support as ccxt_async
import certifi

from bot.exchanges.rate_budget import RateBudgets
from bot.exchanges.venues import VenueAdapter, connectable, find
from bot.memory import freeze_long_lived
from bot.secret import Credentials

if TYPE_CHECKING:
    from storage.key_nonces import SharedKeyNonces

DEFAULT_POOL_SIZE = 4
DEFAULT_TIMEOUT_MS = 10_000


class ExchangeSetupError(Exception):
    """The pool cannot build a client for this venue as configured (unknown venue, Kraken in sandbox)."""


def key_id(creds: Credentials) -> str:
    """Return a short stable id for an API key, so per-key state never keeps the key text as a dict key."""
    return hashlib.sha256(creds.api_key.reveal().encode()).hexdigest()[:16]


def override_api_urls(urls: Any, origin: str) -> Any:
    """Return `urls` (ccxt's `urls['api']`: a str or nested dicts of str) with every origin replaced.

    The path, query and fragment of each URL are kept: `https://api.binance.com/api/v3` with origin
    `http://127.0.0.1:9001` becomes `http://127.0.0.1:9001/api/v3`.
    """
    if isinstance(urls, str):
        new = urlsplit(origin)
        old = urlsplit(urls)
        return urlunsplit((new.scheme, new.netloc, old.path, old.query, old.fragment))
    if isinstance(urls, Mapping):
        return {key: override_api_urls(value, origin) for key, value in urls.items()}
    return urls


class KeyNonces:
    """A strictly increasing millisecond nonce per key, shared by every instance of a venue.

    ccxt's `incrementing_nonce` keeps its last value per *instance*; with several instances signing for
    one key, two calls in the same millisecond on different instances would reuse a nonce. This source
    is per key, and `bump` moves a key's nonce forward after the venue said it was too low.
    """

    def __init__(self, clock_ms: Callable[[], int] | None = None) -> None:
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._last: dict[str, int] = {}

    def next(self, kid: str) -> int:
        value = max(self._clock_ms(), self._last.get(kid, 0) + 1)
        self._last[kid] = value
        return value

    def last(self, kid: str) -> int:
        """The last nonce handed out for this key (0: none yet)."""
        return self._last.get(kid, 0)

    def lift(self, kid: str, floor: int) -> None:
        """Never hand out a nonce at or below `floor` again (another process used it: `storage.key_nonces`)."""
        self._last[kid] = max(self._last.get(kid, 0), floor)

    def bump(self, kid: str, ms: int = 1_000) -> None:
        """Jump this key's nonce ahead (resync after `EAPI:Invalid nonce`)."""
        self._last[kid] = max(self._last.get(kid, 0), self._clock_ms()) + ms


def _pooled_class(base: type) -> type:
    """Subclass a ccxt exchange so every request is budgeted and every response's headers are observed."""

    class Pooled(base):  # type: ignore[misc, valid-type]
        strata_budgets: RateBudgets | None = None
        #: Strata's venue id (an adapter may reuse another venue's ccxt class: `self.id` is ccxt's).
        strata_venue: str = base.__name__
        strata_key_id: str | None = None
        strata_nonce: Callable[[], int] | None = None
        strata_release_to_wait: bool = False

        async def fetch2(self, path, api="public", method="GET", params=None, config=None):
            params = {} if params is None else params
            config = {} if config is None else config
            if self.strata_budgets is not None:
                cost = self.calculate_rate_limiter_cost(api, method, path, params, config)
                name = _api_name(api)
                await self.strata_budgets.acquire(
                    self.strata_venue, name, _api_url(self, name), cost, self.strata_key_id, path,
                    release_to_wait=self.strata_release_to_wait,
                )
            return await super().fetch2(path, api, method, params, config)

        def on_rest_response(self, code, reason, url, method, headers, body, request_headers, request_body):
            if self.strata_budgets is not None and headers:
                self.strata_budgets.observe(self.strata_venue, url, code, headers)
            return super().on_rest_response(
                code, reason, url, method, headers, body, request_headers, request_body
            )

        def nonce(self):
            if self.strata_nonce is not None:
                return self.strata_nonce()
            return super().nonce()

    Pooled.__name__ = Pooled.__qualname__ = f"Pooled_{base.__name__}"
    return Pooled


def _api_name(api: Any) -> str:
    return str(api[0] if isinstance(api, list | tuple) and api else api)


def _api_url(exchange: Any, name: str) -> str:
    urls = exchange.urls.get("api")
    url = urls.get(name) if isinstance(urls, dict) else urls
    return url if isinstance(url, str) else ""


@dataclass
class _Slot:
    exchange: Any
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class _Venue:
    master: Any
    slots: list[_Slot] = field(default_factory=list)
    markets_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    next_slot: Any = field(default_factory=itertools.count)


class ClientPool:
    """Shared ccxt instances per venue; the only place an API key is written into a ccxt instance."""

    def __init__(
        self,
        exchange_urls: Mapping[str, str] | None = None,
        *,
        sandbox: bool = False,
        size: int = DEFAULT_POOL_SIZE,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        budgets: RateBudgets | None = None,
        nonces: KeyNonces | None = None,
        shared_nonces: SharedKeyNonces | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self._urls = dict(exchange_urls or {})
        self._sandbox = sandbox
        self._size = size
        self._timeout_ms = timeout_ms
        self.budgets = budgets if budgets is not None else RateBudgets()
        self.nonces = nonces if nonces is not None else KeyNonces()
        #: On PostgreSQL: per-key nonces shared by every process (`storage.key_nonces`); closed with the pool.
        self.shared_nonces = shared_nonces
        self._venues: dict[str, _Venue] = {}
        self._session: aiohttp.ClientSession | None = None
        self._stream_session: aiohttp.ClientSession | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._key_locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> ClientPool:
        """Build a pool from `bot.config.Settings` (`exchange_urls`, `sandbox`)."""
        return cls(settings.exchange_urls, sandbox=settings.sandbox, **kwargs)

    def is_testnet(self, venue: str) -> bool:
        """Whether this venue runs on ccxt's testnet URLs (no `sapi`: the withdraw check cannot run)."""
        known = find(venue)
        return self._sandbox and known is not None and known.testnet and venue not in self._urls

    def check_venue(self, venue: str) -> VenueAdapter:
        """The venue's adapter; `ExchangeSetupError` if it cannot be used with the current configuration."""
        known = find(venue)
        if known is None:
            raise ExchangeSetupError(
                f"unknown exchange venue {venue!r}; expected one of {', '.join(connectable())}"
            )
        if self._sandbox and not known.testnet and venue not in self._urls:
            raise ExchangeSetupError(
                f"{venue} has no testnet: it cannot be used while STRATA_SANDBOX=1 "
                f"(turn STRATA_SANDBOX off, or point STRATA_EXCHANGE_URLS at a test server for {venue})"
            )
        return known

    def new_exchange(self, venue: str) -> Any:
        """Construct one configured instance (URLs, sandbox, options, shared session, our budget)."""
        known = self.check_venue(venue)
        if self._closed:
            raise ExchangeSetupError("the exchange client pool is closed")
        config: dict[str, Any] = {
            "enableRateLimit": False,
            "timeout": self._timeout_ms,
            "options": {key: value for key, value in known.ccxt_options.items()},
        }
        if self._session is not None:
            config["session"] = self._session
            # ccxt's open() builds its own certifi SSLContext per instance unless given one: share ours.
            config["ssl_context"] = self._ssl_context
        exchange = _pooled_class(getattr(ccxt_async, known.ccxt_id))(config)
        exchange.strata_venue = venue
        exchange.timeout_on_exit = 0  # the pool waits once for the shared session, not per instance
        if venue in self._urls:
            exchange.urls["api"] = override_api_urls(exchange.urls["api"], self._urls[venue])
        elif self._sandbox:
            exchange.set_sandbox_mode(True)
        exchange.strata_budgets = self.budgets
        return exchange

    def stream_url(self, venue: str) -> str | None:
        """The venue's user-data stream URL: its override's origin as ws:// (wss:// for https://), path kept;
        the testnet's under STRATA_SANDBOX; None when the venue has no stream."""
        known = self.check_venue(venue)
        if known.stream_url is None:
            return None
        if venue in self._urls:
            origin = urlsplit(self._urls[venue])
            scheme = "wss" if origin.scheme == "https" else "ws"
            return override_api_urls(known.stream_url, f"{scheme}://{origin.netloc}")
        return known.stream_testnet_url if self._sandbox else known.stream_url

    def stream_session(self) -> aiohttp.ClientSession:
        """A session of its own for the stream connections (the pool's TLS context): each one holds its TCP
        connection for hours, so sharing the REST session's pool (100) would leave no room for REST calls once
        100 are open (Kraken: one connection per account). Their number is bounded by the hubs instead (accounts
        per connection, the venue's connection-attempt window)."""
        if self._closed:
            raise ExchangeSetupError("the exchange client pool is closed")
        self._ensure_session()
        if self._stream_session is None:
            self._stream_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl_context, limit=0, enable_cleanup_closed=True)
            )
        return self._stream_session

    def _ensure_session(self) -> None:
        if self._session is None:
            # One connection pool and one TLS context (ccxt's: certifi's CA bundle) for every instance.
            self._ssl_context = ssl.create_default_context(cafile=certifi.where())
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl_context, limit=100, enable_cleanup_closed=True)
            )

    def _venue(self, venue: str) -> _Venue:
        state = self._venues.get(venue)
        if state is None:
            self.check_venue(venue)
            self._ensure_session()
            state = _Venue(master=self.new_exchange(venue))
            self._venues[venue] = state
        return state

    async def master(self, venue: str) -> Any:
        """The venue's shared keyless instance, markets loaded; use it for public calls only."""
        state = self._venue(venue)
        await self._load_markets(state)
        return state.master

    async def load_markets(self, venue: str, *, reload: bool = False) -> dict[str, Any]:
        """Load (or reload) the venue's markets once and share them with every slot."""
        state = self._venue(venue)
        await self._load_markets(state, reload=reload)
        return state.master.markets

    async def _load_markets(self, state: _Venue, *, reload: bool = False) -> None:
        if state.master.markets and not reload:
            return
        async with state.markets_lock:
            if state.master.markets and not reload:
                return
            await state.master.load_markets(reload)
            for slot in state.slots:
                slot.exchange.set_markets_from_exchange(state.master)
            freeze_long_lived()  # the markets live as long as the pool

    def _pick_slot(self, state: _Venue) -> _Slot:
        for slot in state.slots:
            if not slot.lock.locked():
                return slot
        if len(state.slots) < self._size:
            exchange = self.new_exchange(state.master.strata_venue)
            exchange.set_markets_from_exchange(state.master)
            exchange.options["timeDifference"] = state.master.options.get("timeDifference", 0)
            slot = _Slot(exchange)
            state.slots.append(slot)
            return slot
        return state.slots[next(state.next_slot) % len(state.slots)]

    @asynccontextmanager
    async def bound(self, venue: str, creds: Credentials, *, release_to_wait: bool = False) -> AsyncIterator[Any]:
        """Yield an instance signing with `creds` for the duration of the block, and only then.

        `release_to_wait`: a read that finds no room in the rate budget raises `BudgetWait` out of the block
        (the caller waits with the slot free, then tries again) instead of waiting with the slot held.
        """
        state = self._venue(venue)
        await self._load_markets(state)
        kid = key_id(creds)
        per_key_nonce = self.check_venue(venue).nonce_per_key
        async with AsyncExitStack() as stack:
            if per_key_nonce:
                await stack.enter_async_context(self._key_turn(venue, kid))
            slot = self._pick_slot(state)
            await stack.enter_async_context(slot.lock)
            exchange = slot.exchange
            exchange.apiKey = creds.api_key.reveal()
            exchange.secret = creds.secret.reveal()
            exchange.strata_key_id = kid
            exchange.strata_release_to_wait = release_to_wait
            if per_key_nonce:
                exchange.options["lastNonce"] = 0
                exchange.strata_nonce = lambda: self.nonces.next(kid)
            try:
                yield exchange
            finally:
                _unbind(exchange)

    @asynccontextmanager
    async def _key_turn(self, venue: str, kid: str) -> AsyncIterator[None]:
        """One key's signed calls one at a time: in this process (a lock) and, with `shared_nonces`, in every
        process signing with it, each turn's nonces above the last one anyone used."""
        async with self._key_lock(venue, kid):
            if self.shared_nonces is None:
                yield
                return
            async with self.shared_nonces.turn(kid) as turn:
                self.nonces.lift(kid, turn.last)
                try:
                    yield
                finally:
                    turn.last = self.nonces.last(kid)

    def _key_lock(self, venue: str, kid: str) -> asyncio.Lock:
        lock = self._key_locks.get((venue, kid))
        if lock is None:
            lock = asyncio.Lock()
            self._key_locks[(venue, kid)] = lock
        return lock

    def instances(self, venue: str) -> list[Any]:
        """Every live instance of a venue (master first); for time resync and for tests."""
        state = self._venues.get(venue)
        if state is None:
            return []
        return [state.master, *(slot.exchange for slot in state.slots)]

    async def resync_time(self, venue: str) -> None:
        """Re-measure the venue's clock offset (Binance -1021) and apply it to every instance."""
        state = self._venue(venue)
        if self.check_venue(venue).nonce_per_key:  # signs with a nonce, not a timestamp: no clock to measure
            return
        offset = await state.master.load_time_difference()
        for exchange in self.instances(venue):
            exchange.options["timeDifference"] = offset

    async def close(self) -> None:
        """Close every instance and the shared HTTP session; the pool cannot be used afterwards."""
        self._closed = True
        instances = [exchange for venue in list(self._venues) for exchange in self.instances(venue)]
        self._venues.clear()
        await asyncio.gather(*(exchange.close() for exchange in instances), return_exceptions=True)
        if self.shared_nonces is not None:
            await self.shared_nonces.close()
        if self._stream_session is not None:
            stream_session, self._stream_session = self._stream_session, None
            await stream_session.close()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
            if any(url.startswith("https:") for ex in instances for url in _leaves(ex.urls.get("api"))):
                # Let TLS connections finish closing (aiohttp's advice; ccxt waits this long per instance).
                await asyncio.sleep(0.25)


def _leaves(urls: Any) -> list[str]:
    if isinstance(urls, str):
        return [urls]
    if isinstance(urls, Mapping):
        return [leaf for value in urls.values() for leaf in _leaves(value)]
    return []


def _unbind(exchange: Any) -> None:
    """Wipe the key and ccxt's copies of the last signed request and private response from an instance."""
    exchange.apiKey = ""
    exchange.secret = ""
    exchange.strata_key_id = None
    exchange.strata_nonce = None
    exchange.strata_release_to_wait = False
    exchange.last_request_headers = None
    exchange.last_request_body = None
    exchange.last_request_url = None
    exchange.last_json_response = None
    exchange.last_http_response = None
    if "hasAlreadyAuthenticatedSuccessfully" in exchange.options:
        # Binance turns a later -2015 into DDoSProtection once *any* key succeeded on this instance.
        exchange.options["hasAlreadyAuthenticatedSuccessfully"] = False

"""One venue's user-data stream hub: a few WebSocket connections multiplexing many accounts.

The hub knows nothing of a venue's messages: a `StreamProtocol` (one small module per venue, named by the
venue's adapter) builds its subscribe/unsubscribe requests and reads what arrives. The hub keeps the accounts it
is asked to follow (`follow`) subscribed, `protocol.max_subscriptions` per connection, and reports:

- `on_order(account_id, order)`: an order update (a fill, a cancel) of a followed account, in arrival order per
  account (the engine routes it to the same idempotent fill path as polling);
- `on_live(account_id)`: the account's subscription is confirmed on a (new) connection. Whatever happened
  while it was not (a gap) is not in the stream: the engine backfills it from REST then;
- `on_down(account_ids)`: their streams ended unexpectedly (a lost connection, the venue ending a subscription)
  or the venue refused an account's key: the engine checks those keys (issue 21, item 3).

Connections are kept alive by WebSocket pings (`heartbeat`: a connection whose peer stops answering, a stall,
is closed and replaced), are replaced before the venue's lifetime ends (Binance: 24 h) by opening the new one
first, so there is no gap, and are reopened after a drop with exponential backoff and jitter, every attempt
counted against the venue's per-IP connection limit (`AttemptWindow`). An account whose subscription the venue
refuses (a rejected key) is tried again only after `refused_retry` seconds; polling covers it meanwhile.

A venue whose subscription needs something from a signed REST call first names it in `rest_credential`
(`RestCredential`): the hub fetches it through `rest` (the gateway's private path: the key's budget, nonce and
retries) right before each subscribe, so every (re)subscription gets a fresh one, and hands it to `subscribe`.
Binance USD-M's is the account's listenKey (`POST /fapi/v1/listenKey`, renewed by `PUT` every 30 min in the
protocol's `keepalive`), subscribed on the `/private` stream URL (several listenKeys per connection); Kraken's
is a `GetWebSocketsToken` token, one account per connection (`max_subscriptions=1`) on v2 `executions`. A
refusal of that call is a refused subscription (a rejected key: `on_down`, retried after `refused_retry`). Every
protocol maps its events to the same `bot.exchanges.models.Order` with its trade.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import json
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from bot.exchanges.failures import Action, ExchangeFailure
from bot.exchanges.models import Order
from bot.secret import Credentials, Secret

logger = logging.getLogger(__name__)

#: How long a subscribe or unsubscribe request may wait for its answer.
REQUEST_TIMEOUT = 10.0
#: Subscribe/unsubscribe requests one connection has waiting for their answers at most.
IN_FLIGHT = 20


@dataclass(frozen=True)
class Reply:
    """The answer to one of our requests: the subscription handle, or the venue's refusal."""

    request_id: str
    handle: Any = None
    error: str | None = None
    #: The venue refused the key (revoked, wrong signature): not retried soon.
    key_rejected: bool = False


@dataclass(frozen=True)
class Update:
    """An event of one subscription: an order update, or the subscription's end (`ended`)."""

    handle: Any
    order: Order | None = None
    ended: bool = False


#: One signed REST call of a key on the gateway's private path (its weight budget or call counter, nonce, retries,
#: error translation): `await rest(creds, lambda exchange: exchange.fapiPrivatePostListenKey())`.
RestCall = Callable[[Credentials, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]


class SubscribeRefused(Exception):
    """A subscription's REST step failed (`key_rejected`: the venue refused the key)."""

    def __init__(self, error: str, *, key_rejected: bool = False) -> None:
        super().__init__(error)
        self.error, self.key_rejected = error, key_rejected


@dataclass(frozen=True)
class RestCredential:
    """What a venue's subscription needs from one signed REST call first (USD-M: the account's listenKey; Kraken:
    a WebSocket token, to be used within 15 minutes): fetched just before each subscribe, never stored."""

    #: What the venue calls it (in refusals).
    name: str
    #: The call, on the venue's ccxt client.
    call: Callable[[Any], Awaitable[Any]]
    #: The credential in the call's answer (None when missing).
    read: Callable[[Any], Any]

    async def fetch(self, rest: RestCall, creds: Credentials) -> Secret:
        """The credential, wrapped so no repr or log shows it; `SubscribeRefused` when the call fails or answers
        none."""
        try:
            answer = await rest(creds, self.call)
        except ExchangeFailure as failure:
            raise SubscribeRefused(str(failure)[:200], key_rejected=failure.action is Action.AUTH) from None
        value = self.read(answer)
        if not value:
            raise SubscribeRefused(f"the venue answered without a {self.name}")
        return Secret(str(value))


class StreamProtocol(Protocol):
    """A venue's user-data stream messages (see `binance.BinanceSpotStream`)."""

    #: Subscriptions one connection may carry.
    max_subscriptions: int
    #: Seconds a connection may live at most (the hub replaces it a little earlier).
    lifetime: float
    #: Connection attempts allowed per `attempt_window` seconds from one IP.
    attempt_limit: int
    attempt_window: float

    #: What each subscription needs from a signed REST call first (None: the subscribe is signed with the key).
    rest_credential: RestCredential | None

    def subscribe(
        self, request_id: str, creds: Credentials, credential: Secret | None
    ) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        """The subscribe request of one account (never logged: it carries the API key or its `credential`, the
        fresh `rest_credential`). A protocol that paces its requests returns an awaitable."""
        ...

    def unsubscribe(self, request_id: str, handle: Any) -> dict[str, Any] | Awaitable[dict[str, Any]]: ...

    def read(self, message: Any) -> Reply | Update | list[Update] | None:
        """What one received message means (None: nothing for us; a list: several events in one message)."""
        ...

    # Optional: `async def keepalive(self, rest: RestCall, handles: set) -> set`, called on every resync of a
    # connection with its subscriptions' handles; renews what is due and returns the handles it could not keep.


class AttemptWindow:
    """At most `limit` connection attempts in any `window` seconds (Binance: 300 per 5 minutes per IP)."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self._clock = limit, window, clock
        self._times: deque[float] = deque()
        self.total = 0

    def delay(self) -> float:
        """Seconds to wait before the next attempt is allowed (0: now)."""
        now = self._clock()
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        return 0.0 if len(self._times) < self.limit else self._times[0] + self.window - now

    async def acquire(self) -> None:
        wait = self.delay()
        while wait > 0:  # a time window, not an event: sleep until a slot frees
            await asyncio.sleep(wait)
            wait = self.delay()
        self._times.append(self._clock())
        self.total += 1


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits between half and all of min(cap, base·2ⁿ⁻¹)."""

    base: float = 0.5
    cap: float = 60.0

    def delay(self, failures: int) -> float:
        ceiling = min(self.cap, self.base * 2 ** max(0, failures - 1))
        return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not security


@dataclass(eq=False)
class _Connection:
    ws: aiohttp.ClientWebSocketResponse
    opened: float
    handles: dict[Any, int] = field(default_factory=dict)  # subscription handle → account id
    accounts: dict[int, Any] = field(default_factory=dict)  # account id → subscription handle
    pending: dict[str, asyncio.Future] = field(default_factory=dict)
    subscribing: dict[str, int] = field(default_factory=dict)  # subscribe request id → account id
    reader: asyncio.Task | None = None
    #: Set when a subscription ended, so its slot re-subscribes at once rather than at the next resync.
    wake: asyncio.Event | None = None


class _Slot:
    """One logical connection carrying up to `max_subscriptions` accounts, reopened and rolled over as needed."""

    def __init__(self, hub: UserStreamHub, number: int) -> None:
        self.hub = hub
        self.number = number
        self.accounts: set[int] = set()
        self.conn: _Connection | None = None
        #: A connection being opened (start, reconnect, rollover): subscribing its accounts, already delivering.
        self.opening: _Connection | None = None
        self.changed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"stream:{hub.venue}:{number}")

    @property
    def live(self) -> set[int]:
        """Accounts confirmed on an open connection of the slot, including the one being opened: each is live as
        soon as its subscription is confirmed (1,000 subscribes on one connection take minutes)."""
        live: set[int] = set()
        for conn in (self.conn, self.opening):
            if conn is not None and not conn.ws.closed:
                live.update(conn.accounts)
        return live

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                conn = await self.hub._open()
            except asyncio.CancelledError:
                raise
            except Exception as failure:  # refused, unreachable, timed out
                failures += 1
                delay = self.hub.backoff.delay(failures)
                logger.warning(
                    "%s stream %d: connection failed (%s); retrying in %.1fs",
                    self.hub.venue, self.number, type(failure).__name__, delay,
                )
                await asyncio.sleep(delay)
                continue
            conn.wake = self.changed
            self.opening = conn
            try:
                await self._sync(conn)  # a rollover subscribes the new connection before the old one goes: no gap
            except BaseException:
                await self._close(conn)  # stopped while opening it: it goes too
                raise
            finally:
                self.opening = None
            old, self.conn = self.conn, conn
            if old is not None:
                await self._close(old)
            failures = 0
            ended = await self._serve(conn)
            if ended == "rollover":
                continue  # opens the replacement while this one still delivers
            self.conn = None
            await self._close(conn)
            if self.hub.closing:
                return
            failures += 1
            delay = self.hub.backoff.delay(failures)
            logger.warning("%s stream %d: connection lost; reconnecting in %.1fs", self.hub.venue, self.number, delay)
            self.hub.notify_down(set(conn.accounts))
            await asyncio.sleep(delay)

    async def _serve(self, conn: _Connection) -> str:
        """Keep the connection's subscriptions in line with `accounts` until it ends ("lost") or is due for
        replacement ("rollover")."""
        deadline = conn.opened + self.hub.lifetime
        while True:
            if conn.reader is None or conn.reader.done() or conn.ws.closed:
                return "lost"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "rollover"
            self.changed.clear()
            waiter = asyncio.ensure_future(self.changed.wait())
            await asyncio.wait({conn.reader, waiter}, timeout=min(remaining, self.hub.resync_seconds),
                               return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if not conn.ws.closed:
                await self.hub._keepalive(conn)
                await self._sync(conn)

    async def _sync(self, conn: _Connection) -> None:
        """Subscribe the wanted accounts missing on this connection, unsubscribe those no longer wanted; up to
        `IN_FLIGHT` requests at a time, so re-subscribing 1,000 accounts after a drop takes a few round trips."""
        now = time.monotonic()
        missing = [a for a in sorted(self.accounts - set(conn.accounts)) if self.hub.refused_until.get(a, 0.0) <= now]
        gone = sorted(set(conn.accounts) - self.accounts)
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def one(request: Callable[[_Connection, int], Awaitable[None]], account_id: int) -> None:
            async with gate:
                if not conn.ws.closed:
                    await request(conn, account_id)

        await asyncio.gather(
            *(one(self.hub._subscribe, a) for a in missing), *(one(self.hub._unsubscribe, a) for a in gone)
        )

    async def _close(self, conn: _Connection) -> None:
        with contextlib.suppress(Exception):
            await conn.ws.close()
        if conn.reader is not None:
            conn.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await conn.reader
        for future in conn.pending.values():
            if not future.done():
                future.cancel()

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if self.conn is not None:
            await self._close(self.conn)
            self.conn = None


class UserStreamHub:
    """The user-data streams of one venue for every account the engine follows there."""

    def __init__(
        self,
        venue: str,
        url: str,
        protocol: StreamProtocol,
        session: aiohttp.ClientSession,
        *,
        credentials: Callable[[int], Awaitable[Credentials]],
        rest: RestCall | None = None,
        on_order: Callable[[int, Order], Awaitable[None]],
        on_live: Callable[[int], Awaitable[None]],
        on_down: Callable[[set[int]], None] | None = None,
        heartbeat: float = 20.0,
        lifetime: float | None = None,
        backoff: Backoff | None = None,
        refused_retry: float = 300.0,
        attempts: AttemptWindow | None = None,
        resync_seconds: float = 5.0,
    ) -> None:
        self.venue, self.url, self.protocol, self.session = venue, url, protocol, session
        self.credentials, self.on_order, self.on_live, self.on_down = credentials, on_order, on_live, on_down
        #: The signed REST calls the protocol needs (`rest_credential`, `keepalive`).
        self.rest = rest
        self.heartbeat = heartbeat
        #: Replace a connection this long after it opened: the venue's lifetime less a margin.
        self.lifetime = lifetime if lifetime is not None else protocol.lifetime * 0.98
        self.backoff = backoff or Backoff()
        self.refused_retry = refused_retry
        self.attempts = attempts or AttemptWindow(protocol.attempt_limit, protocol.attempt_window)
        #: How often a connection re-checks its subscriptions even when nothing asked it to.
        self.resync_seconds = resync_seconds
        self.refused_until: dict[int, float] = {}
        self.closing = False
        self._slots: list[_Slot] = []
        self._ids = itertools.count(1)
        self._slot_numbers = itertools.count()
        self._account_locks: dict[int, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task] = set()

    # --- what the engine asks ----------------------------------------------------------------------------

    def follow(self, account_ids: set[int]) -> None:
        """Follow exactly these accounts: new ones are subscribed, the others unsubscribed (soon, not awaited)."""
        for slot in list(self._slots):
            gone = slot.accounts - account_ids
            if gone:
                slot.accounts -= gone
                slot.changed.set()
            if not slot.accounts:  # nobody left on it: close the connection rather than keep it idle
                self._slots.remove(slot)
                self._spawn(slot.stop())
        placed = set().union(*(slot.accounts for slot in self._slots)) if self._slots else set()
        for account_id in sorted(account_ids - placed):
            slot = next((s for s in self._slots if len(s.accounts) < self.protocol.max_subscriptions), None)
            if slot is None:
                slot = _Slot(self, next(self._slot_numbers))
                self._slots.append(slot)
            slot.accounts.add(account_id)
            slot.changed.set()
        for account_id in list(self.refused_until):
            if account_id not in account_ids:
                del self.refused_until[account_id]

    def is_live(self, account_id: int) -> bool:
        """Whether the account's subscription is confirmed on an open connection."""
        return any(account_id in slot.live for slot in self._slots)

    @property
    def live_accounts(self) -> set[int]:
        return set().union(*(slot.live for slot in self._slots)) if self._slots else set()

    @property
    def connections(self) -> int:
        return sum(1 for slot in self._slots if slot.conn is not None and not slot.conn.ws.closed)

    async def settle(self) -> None:
        """Wait until the updates and backfills handed out so far are handled (tests, benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        self.closing = True
        for slot in self._slots:
            await slot.stop()
        self._slots.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def notify_down(self, account_ids: set[int]) -> None:
        if account_ids and self.on_down is not None:
            self.on_down(account_ids)

    # --- connections ---------------------------------------------------------------------------------------

    async def _open(self) -> _Connection:
        await self.attempts.acquire()
        ws = await self.session.ws_connect(
            self.url, heartbeat=self.heartbeat, autoping=True, timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
        )
        conn = _Connection(ws, time.monotonic())
        conn.reader = asyncio.get_running_loop().create_task(self._read(conn), name=f"stream-read:{self.venue}")
        logger.info("%s stream connected (%d attempts so far)", self.venue, self.attempts.total)
        return conn

    async def _read(self, conn: _Connection) -> None:
        try:
            await self._read_messages(conn)
        finally:
            for future in conn.pending.values():  # the connection ended: no answer will come
                if not future.done():
                    future.cancel()

    async def _meanings(self, conn: _Connection) -> AsyncIterator[Reply | Update | None]:
        """What each received message means, one reply or event at a time (a message may carry several)."""
        async for message in conn.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                meaning = self.protocol.read(json.loads(message.data))
            except (ValueError, KeyError, TypeError, ArithmeticError):
                logger.warning("%s stream: unreadable message skipped", self.venue)
                continue
            for one in meaning if isinstance(meaning, list) else (meaning,):
                yield one

    async def _read_messages(self, conn: _Connection) -> None:
        async for meaning in self._meanings(conn):  # in arrival order: an answer before the events behind it
            if isinstance(meaning, Reply):
                account_id = conn.subscribing.pop(meaning.request_id, None)
                if account_id is not None and meaning.error is None:
                    # Mapped before the next message is read: an event right behind the answer is not lost.
                    conn.handles[meaning.handle] = account_id
                    conn.accounts[account_id] = meaning.handle
                future = conn.pending.pop(meaning.request_id, None)
                if future is not None and not future.done():
                    future.set_result(meaning)
            elif isinstance(meaning, Update):
                account_id = conn.handles.get(meaning.handle)
                if account_id is None:
                    continue
                if meaning.ended:
                    conn.handles.pop(meaning.handle, None)
                    conn.accounts.pop(account_id, None)
                    self.notify_down({account_id})
                    if conn.wake is not None:
                        conn.wake.set()
                elif meaning.order is not None:
                    self._dispatch(account_id, functools.partial(self.on_order, account_id, meaning.order))

    def _dispatch(self, account_id: int, work: Callable[[], Awaitable[None]]) -> None:
        """Run an account's work in its own task, one at a time per account and in arrival order."""
        lock = self._account_locks.setdefault(account_id, asyncio.Lock())

        async def run() -> None:
            async with lock:
                await self._logged(account_id, work)

        self._spawn(run())

    async def _logged(self, account_id: int, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` (made only now: a task cancelled before it starts, at close, leaves no coroutine unawaited)."""
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s stream: handling an update of account %s failed", self.venue, account_id)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _request(self, conn: _Connection, request_id: str, message: dict[str, Any]) -> Reply | None:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        conn.pending[request_id] = future
        try:
            await conn.ws.send_str(json.dumps(message))
            return await asyncio.wait_for(future, REQUEST_TIMEOUT)
        except (TimeoutError, ConnectionError, aiohttp.ClientError, asyncio.CancelledError) as failure:
            task = asyncio.current_task()
            if isinstance(failure, asyncio.CancelledError) and task is not None and task.cancelling():
                raise  # we are being stopped (not just our answer's future, cancelled by the connection's end)
            return None
        finally:
            conn.pending.pop(request_id, None)

    async def _subscribe(self, conn: _Connection, account_id: int) -> None:
        try:
            creds = await self.credentials(account_id)
        except Exception as failure:  # no key, unreadable key: polling covers the account
            logger.warning("%s stream: account %s not subscribed (%s)", self.venue, account_id, type(failure).__name__)
            self.refused_until[account_id] = time.monotonic() + self.refused_retry
            return
        request_id = str(next(self._ids))
        try:
            credential = await self._rest_credential(creds)
            message = self.protocol.subscribe(request_id, creds, credential)
            if inspect.isawaitable(message):
                message = await message
        except SubscribeRefused as refused:
            self._refused(account_id, refused.error, key_rejected=refused.key_rejected)
            return
        conn.subscribing[request_id] = account_id
        reply = await self._request(conn, request_id, message)
        conn.subscribing.pop(request_id, None)
        if reply is None:
            return  # no answer: the connection is in trouble; the next sync or connection retries
        if reply.error is not None:
            self._refused(account_id, reply.error, key_rejected=reply.key_rejected)
            return
        logger.debug("%s stream: account %s subscribed", self.venue, account_id)
        # The backfill runs beside the account's updates, not ahead of them: it waits for the shared request
        # budget (after a drop, every account backfills at once), and the stream's fills must not queue behind
        # it. Both record through the same idempotent path, so a fill seen by both is recorded once.
        self._spawn(self._logged(account_id, functools.partial(self.on_live, account_id)))

    async def _rest_credential(self, creds: Credentials) -> Secret | None:
        """A fresh `rest_credential` for one subscribe, where the protocol needs one."""
        needed = getattr(self.protocol, "rest_credential", None)
        if needed is None:
            return None
        if self.rest is None:
            raise SubscribeRefused(f"no REST path to fetch the {needed.name}")
        return await needed.fetch(self.rest, creds)

    def _refused(self, account_id: int, error: str, *, key_rejected: bool) -> None:
        logger.warning("%s stream: subscription of account %s refused: %s", self.venue, account_id, error)
        self.refused_until[account_id] = time.monotonic() + (self.refused_retry if key_rejected else 5.0)
        if key_rejected:
            self.notify_down({account_id})

    async def _keepalive(self, conn: _Connection) -> None:
        """Let the protocol renew what its subscriptions need (USD-M: each listenKey every 30 min); those it
        could not renew are dropped here and subscribed again by the sync that follows."""
        keepalive = getattr(self.protocol, "keepalive", None)
        if keepalive is None or not conn.handles or self.rest is None:
            return
        for handle in await keepalive(self.rest, set(conn.handles)):
            account_id = conn.handles.pop(handle, None)
            if account_id is not None:
                conn.accounts.pop(account_id, None)

    async def _unsubscribe(self, conn: _Connection, account_id: int) -> None:
        handle = conn.accounts.pop(account_id, None)
        conn.handles.pop(handle, None)
        request_id = str(next(self._ids))
        message = self.protocol.unsubscribe(request_id, handle)
        if inspect.isawaitable(message):  # paced by the protocol (a venue's per-connection message rate)
            message = await message
        await self._request(conn, request_id, message)
        logger.debug("%s stream: account %s unsubscribed", self.venue, account_id)

"""What every fake user-data stream server shares: its connections, their faults and their two loops.

A venue's fake (`binance_ws.py`, `binance_usdm_ws.py`, `kraken_ws.py`) subclasses `StreamServer` with what it
alone knows: how a request is answered (`_request`), what a connection says first (`greeting`) and how a fill
becomes an event (`_on_order`, registered on the book). The faults tests and benchmarks use are the same on
every venue: `refuse` the next connection attempts, `drop` every connection, `stall` them, a `lifetime`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from bot.sandbox.exchange_book import ExchangeBook, Order, Trade


@dataclass(eq=False)
class StreamSession:
    ws: web.WebSocketResponse
    opened: float
    #: The venue's subscription handle → the subscribed exchange account (`KeyAccount.home`).
    subscriptions: dict[Any, str] = field(default_factory=dict)
    stalled_until: float = 0.0
    #: The venue's message sequence number on this connection (Kraken numbers its channel messages).
    sequence: int = 0
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    @property
    def stalled(self) -> bool:
        return time.monotonic() < self.stalled_until


class StreamServer:
    """One fake venue's WebSocket user-data endpoint (serve `handle` on its route)."""

    def __init__(self, book: ExchangeBook) -> None:
        self.book = book
        self.sessions: set[StreamSession] = set()
        self.attempts: list[float] = []  # monotonic time of every connection attempt
        #: Seconds a connection lives before the venue closes it (Binance: 24 h); None: forever.
        self.lifetime: float | None = None
        self.events_sent = 0
        self._refuse = 0
        self.book.order_listeners.append(self._on_order)

    # ---------------------------------------------------------------- what a venue defines
    async def _request(self, session: StreamSession, text: str) -> None:
        raise NotImplementedError

    def _on_order(self, order: Order, trade: Trade | None) -> None:
        raise NotImplementedError

    def greeting(self) -> dict[str, Any] | None:
        """The message a new connection gets first, if the venue sends one."""
        return None

    # ---------------------------------------------------------------- faults and counts
    def refuse(self, attempts: int) -> None:
        """Refuse the next `attempts` connection attempts (HTTP 503 before the upgrade)."""
        self._refuse = attempts

    async def drop(self) -> None:
        """Close every connection now, as a venue restart or a network cut does."""
        for session in list(self.sessions):
            await session.ws.close(code=1001, message=b"dropped")

    def stall(self, seconds: float) -> None:
        """Every open connection stops reading, sending and answering pings for `seconds`."""
        until = time.monotonic() + seconds
        for session in self.sessions:
            session.stalled_until = until

    @property
    def subscriptions(self) -> int:
        return sum(len(s.subscriptions) for s in self.sessions)

    def subscribed(self, api_key: str) -> bool:
        account = self.book.key(api_key)
        home = account.home if account is not None else api_key
        return any(home in s.subscriptions.values() for s in self.sessions)

    # ---------------------------------------------------------------- the connection
    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.attempts.append(time.monotonic())
        if self._refuse > 0:
            self._refuse -= 1
            return web.Response(status=503, text="Service Unavailable.")
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        session = StreamSession(ws, time.monotonic())
        self.sessions.add(session)
        greeting = self.greeting()
        if greeting is not None:
            session.queue.put_nowait(greeting)
        sender = asyncio.get_running_loop().create_task(self._send_loop(session))
        try:
            await self._read_loop(session)
        finally:
            self.sessions.discard(session)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            await ws.close()
        return ws

    async def _read_loop(self, session: StreamSession) -> None:
        ws = session.ws
        while not ws.closed:
            if session.stalled:
                await asyncio.sleep(session.stalled_until - time.monotonic())
                continue
            timeout = None
            if self.lifetime is not None:
                timeout = session.opened + self.lifetime - time.monotonic()
                if timeout <= 0:
                    return  # the venue ends the connection at its lifetime
            try:
                msg = await asyncio.wait_for(ws.receive(), timeout=min(timeout or 0.2, 0.2))
            except TimeoutError:
                continue
            if msg.type == WSMsgType.PING:
                if not session.stalled:
                    await ws.pong(msg.data)
            elif msg.type == WSMsgType.TEXT:
                if not session.stalled:
                    await self._request(session, msg.data)
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return

    async def _send_loop(self, session: StreamSession) -> None:
        while True:
            message = await session.queue.get()
            if session.stalled:  # what the stall held back goes out once it ends (if the peer is still there)
                await asyncio.sleep(session.stalled_until - time.monotonic())
            if session.ws.closed:
                return
            await session.ws.send_str(json.dumps(message))

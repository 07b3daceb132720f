"""One shared request budget per (venue, origin host) for the whole process, whatever the number of accounts.

Binance counts request *weight per IP* (6,000/min on spot, 2,400/min on USD-M futures), not per key: a
thousand accounts polling through one process share one budget. Each request is charged before it is sent
with ccxt's own cost for that endpoint (`exchange.api` definitions, converted to Binance weight), and the
server's own count (`X-MBX-USED-WEIGHT-1M`, seen on every response) corrects ours upward. When the next
request would pass a safety margin (90 % by default) of the limit, callers wait (asynchronously) for the next
minute window. `used_per_minute()` and `headroom()` let the fill poller stretch its interval in time.

Kraken (documented simplification): private calls use a per-key call counter with Kraken's published decay
(the Starter tier: +1 per call — +2 for history endpoints, 0 for trading — max 15, −0.33/s), and public
calls one small per-host token bucket (about 1 call/s with a burst). Kraken's separate per-pair trading
rate counter is not modelled: the engine places few orders per pair.

Binance `sapi` endpoints (key permissions, weight 1) are not charged to that budget: each IP-limited `sapi`
endpoint has its own 12,000 per minute (`X-SAPI-USED-IP-WEIGHT-1M`), kept here as one side budget per origin
host (`side_budget`: shared by spot and USD-M, which both call api.binance.com; one budget for all our `sapi`
endpoints is stricter than Binance's one per endpoint, and Strata calls only `apiRestrictions`).

Fair shares (one user must not make everyone's orders wait for the next minute):
- **Trading first.** Orders and cancels (`trading_call()`, set by the gateway), and the user-data streams'
  upkeep (USD-M listenKeys: `bot.engine.streams`), may use the whole safe limit;
  reads stop `trade_reserve` (20 %) short of it, so a flood of reads always leaves room for trading. While a
  trading call waits (the server said the IP is busy), reads wait behind it.
- **Per-user reads.** Reads made for a user (`charged_to("user:<id>")`, set by the services around e.g.
  `/accounts`) may use at most `user_share` (25 %) of the read budget per minute each, and all users' reads
  together `users_share` (50 %): the engine's own reads (fill polling, reconciliation) keep the rest.
- **What a decision waits on before the engine's background reads.** The engine's background reads (fill
  polls, stream backfills, reconciliation: private, no owner) stop `foreground_reserve` (50 %) short of the read
  budget; the reads a strategy's decision waits on may use all of it: public market data (tickers, candles) and
  the balance a strategy reads before it places an order (`decision_read()`). While such a read waits for room,
  background reads wait behind it, so at a new minute it goes first. A start-up backfills every account at once
  (1,000 Binance accounts: 12,000 weight, two minutes of budget), and without that room the strategies due at
  that moment waited a minute behind them (bench/engine.py's buying DCAs stalled, ticker or balance).
- **Shared by the workers of one address** (engine workers, issue 22): a budget given a `lease` (see
  `RateBudgets(shared=…)`, backed by `storage.ip_budgets`) charges its requests against weight leased in
  chunks (`LEASE_CHUNK`) from a count all those workers share, so together they stay within the one limit the
  venue enforces per IP. Its view of what is used (`_used`) is then everyone's leases, and what it leased but did
  not spend yet (`_allowance`) is its own. Without one (`python -m bot run`) nothing changes and nothing waits
  on a database.
- **No waiting while holding a client.** A read made on a pooled private client (`release_to_wait`) that
  finds no room raises `BudgetWait` instead of sleeping with the client (and its slot) held; the gateway
  releases the client, waits for room, and tries again. A trading call never gives its client up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

from bot.exchanges.venues import WeightRule, find

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

#: Defaults for `RateBudgets`: the share of the safe limit only trading calls may use, and the shares of the
#: read budget one user's reads, and all users' reads together, may use per minute.
TRADE_RESERVE = 0.2
FOREGROUND_RESERVE = 0.5
USER_SHARE = 0.25
USERS_SHARE = 0.5
#: A read that would fit while a trading call is still waiting looks again this soon, after the trade went.
_TRADES_FIRST_SECONDS = 0.05
#: Weight a worker leases at once from a shared per-IP budget (one database round trip per chunk): about 1 % of
#: Binance spot's minute, so a handful of workers waste little when a minute ends with their chunks unspent.
LEASE_CHUNK = 60

#: How long requests wait when the shared count cannot be reached (then it is asked again).
LEASE_RETRY_SECONDS = 1.0

#: `lease(minute, need, floor, limit) -> (granted, total leased by everyone)` (`storage.ip_budgets`).
Lease = Callable[[int, int, int, int], Awaitable[tuple[bool, int]]]

logger = logging.getLogger(__name__)

_trading: ContextVar[bool] = ContextVar("strata_trading_call", default=False)
_owner: ContextVar[str | None] = ContextVar("strata_budget_owner", default=None)
_decision: ContextVar[bool] = ContextVar("strata_decision_read", default=False)


@contextmanager
def trading_call() -> Iterator[None]:
    """Requests made inside are orders or cancels: they may use the trading reserve and go first."""
    token = _trading.set(True)
    try:
        yield
    finally:
        _trading.reset(token)


@contextmanager
def decision_read() -> Iterator[None]:
    """Reads made inside are what a strategy's decision waits on (its balance before an order): they go with
    market data, ahead of the engine's background reads."""
    token = _decision.set(True)
    try:
        yield
    finally:
        _decision.reset(token)


@contextmanager
def charged_to(owner: str) -> Iterator[None]:
    """Reads made inside (and in tasks started inside) count against `owner`'s fair share."""
    token = _owner.set(owner)
    try:
        yield
    finally:
        _owner.reset(token)


class BudgetWait(Exception):
    """A read on a pooled client found no room: release the client, `await wait()`, then try again."""

    def __init__(self, wait: Callable[[], Awaitable[None]]) -> None:
        super().__init__("no room in the rate budget yet")
        self.wait = wait


class WeightBudget:
    """Binance-style weight in calendar-minute windows, charged before sending, corrected by the server."""

    def __init__(
        self,
        limit_per_minute: int,
        *,
        margin: float = 0.9,
        trade_reserve: float = 0.0,
        foreground_reserve: float = 0.0,
        user_share: float = 1.0,
        users_share: float = 1.0,
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        lease: Lease | None = None,
        chunk: int = LEASE_CHUNK,
    ) -> None:
        if not 0 < margin <= 1:
            raise ValueError("margin must be in (0, 1]")
        if not 0 <= trade_reserve < 1 or not 0 <= foreground_reserve < 1:
            raise ValueError("trade_reserve and foreground_reserve must be in [0, 1)")
        if not 0 < user_share <= 1 or not 0 < users_share <= 1:
            raise ValueError("the shares must be in (0, 1]")
        self.limit_per_minute = limit_per_minute
        self.safe_limit = max(1, int(limit_per_minute * margin))
        #: What reads may use: the safe limit minus the reserve kept for orders and cancels.
        self.read_limit = max(1, int(self.safe_limit * (1 - trade_reserve)))
        #: What the engine's background reads (polls, backfills) may use: the rest is kept for what decisions
        #: wait on (market data, a balance before an order).
        self.engine_read_limit = max(1, int(self.read_limit * (1 - foreground_reserve)))
        self.user_limit = max(1, int(self.read_limit * user_share))
        self.users_limit = max(1, int(self.read_limit * users_share))
        self._clock = clock
        self._sleep = sleep
        self._window = self._window_now()
        self._used = 0
        self._previous_used = 0
        self._by_owner: dict[str, int] = {}  # this window's read weight per owner
        self._blocked_until = 0.0
        self._trades_waiting = 0
        self._foreground_waiting = 0
        self.waits = 0
        self.requests = 0
        self._lease = lease
        self._chunk = chunk
        self._allowance = 0  # shared: weight leased this window and not spent yet
        self._seen_used = 0  # shared: the venue's own count for this window, told to the others at the next lease
        self._lease_lock = asyncio.Lock()
        self.leases = 0

    def _window_now(self) -> int:
        return int(self._clock() // 60)

    def _roll(self) -> None:
        window = self._window_now()
        if window != self._window:
            self._previous_used = self._used if window == self._window + 1 else 0
            self._window = window
            self._used = 0
            self._allowance = self._seen_used = 0
            self._by_owner.clear()

    def _delay(self, weight: int, trading: bool, owner: str | None, foreground: bool = False) -> float | None:
        """None if the request may go now, else how long to wait before looking again."""
        self._roll()
        now = self._clock()
        if now < self._blocked_until:
            return self._blocked_until - now
        next_window = max(0.001, 60.0 - now % 60.0)
        used = self._used - self._allowance  # (what this process leased and has not spent is its own to spend)
        # A request heavier than its whole allowance still goes out when nothing of it was used yet.
        if trading:
            return None if used == 0 or used + weight <= self.safe_limit else next_window
        background = owner is None and not foreground
        limit = self.engine_read_limit if background else self.read_limit
        fits = used == 0 or used + weight <= limit
        if owner is not None:
            mine = self._by_owner.get(owner, 0)
            users = sum(self._by_owner.values())
            fits = fits and (mine == 0 or mine + weight <= self.user_limit)
            fits = fits and (users == 0 or users + weight <= self.users_limit)
        if not fits:
            return next_window
        return _TRADES_FIRST_SECONDS if self._trades_waiting or (background and self._foreground_waiting) else None

    async def acquire(
        self, weight: int, *, trading: bool = False, owner: str | None = None, release_to_wait: bool = False,
        foreground: bool = False,
    ) -> None:
        """Charge `weight`, first waiting while it does not fit its class's share or the server asked to wait.

        A read with `release_to_wait` raises `BudgetWait` instead of waiting; `foreground`: market data or a read a
        decision waits on (see the module docstring).
        """
        queued = None
        try:
            while True:
                delay = self._delay(weight, trading, owner, foreground)
                if delay is None:
                    if self._lease is None or await self._leased(weight):
                        break
                    continue  # the other workers leased the rest of the minute: `_delay` now says how long
                self.waits += 1
                if release_to_wait and not trading:
                    raise BudgetWait(lambda: self.wait_for_room(weight, owner, foreground))
                if queued is None and (trading or foreground):
                    queued = self._queue(trading)
                await self._sleep(delay)
        finally:
            if queued is not None:
                self._unqueue(queued)
        if self._lease is not None:
            self._allowance -= weight
        else:
            self._used += weight
        if owner is not None and not trading:
            self._by_owner[owner] = self._by_owner.get(owner, 0) + weight
        self.requests += 1

    async def _leased(self, weight: int) -> bool:
        """Make sure this process's allowance covers `weight`, leasing a chunk from the shared count if not.

        A lease refused (the others took the rest of the minute) raises our view of the used weight to the shared
        total, so the caller waits for the next window.
        """
        async with self._lease_lock:  # one lease at a time: the requests waiting behind it share its chunk
            if self._allowance >= weight:
                return True
            return await self._lease_chunk(weight)

    async def _lease_chunk(self, weight: int) -> bool:
        window = self._window
        need = max(self._chunk, weight - self._allowance)
        limit = self.safe_limit  # the shared count caps the total; the shares of reads are checked locally
        try:
            granted, total = await self._lease(window, need, self._seen_used, limit)  # type: ignore[misc]
        except Exception as exc:  # the shared count unreachable: spend nothing we cannot account for
            logger.warning("shared request budget unreachable (%s); waiting", type(exc).__name__)
            self.block_for(LEASE_RETRY_SECONDS)
            return False
        self.leases += 1
        self._roll()
        if self._window != window:
            return False  # the minute ended while we asked: look again in the new one
        self._used = max(self._used, total)
        if granted:
            self._allowance += need
            return self._allowance >= weight
        self._used = max(self._used, self.safe_limit)  # full for everyone: wait for the next minute
        return False

    async def wait_for_room(self, weight: int, owner: str | None = None, foreground: bool = False) -> None:
        """Wait until a read of `weight` for `owner` would fit (without charging it)."""
        queued = self._queue(False) if foreground else None
        try:
            while (delay := self._delay(weight, False, owner, foreground)) is not None:
                await self._sleep(delay)
        finally:
            if queued is not None:
                self._unqueue(queued)

    def _queue(self, trading: bool) -> bool:
        """Count a trading call or a foreground read as waiting (what waits behind it: see `_delay`)."""
        if trading:
            self._trades_waiting += 1
        else:
            self._foreground_waiting += 1
        return trading

    def _unqueue(self, trading: bool) -> None:
        if trading:
            self._trades_waiting -= 1
        else:
            self._foreground_waiting -= 1

    def observe_used(self, used: int) -> None:
        """Take the server's count for the current minute when it is higher than ours."""
        self._roll()
        self._used = max(self._used, used)
        self._seen_used = max(self._seen_used, used)

    def block_for(self, seconds: float) -> None:
        """Hold every caller for `seconds` (a 429/418 with `Retry-After`)."""
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    def used_per_minute(self) -> int:
        """Weight being spent per minute: this minute so far, or the last full minute if that was more."""
        self._roll()
        return max(self._used, self._previous_used)

    def headroom(self) -> int:
        """Weight that can still be spent in the current minute without waiting (by trading calls)."""
        self._roll()
        return max(0, self.safe_limit - self._used)

    def owner_used(self, owner: str) -> int:
        """Read weight charged to `owner` in the current minute."""
        self._roll()
        return self._by_owner.get(owner, 0)


class KeyCallCounter:
    """Kraken's per-key call counter: each call adds points, points decay continuously, wait above the max."""

    def __init__(
        self,
        max_points: float = 15.0,
        decay_per_second: float = 0.33,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.max_points = max_points
        self.decay_per_second = decay_per_second
        self._clock = clock
        self._sleep = sleep
        self._levels: dict[str, tuple[float, float]] = {}  # key id -> (level, at)
        self.waits = 0

    def level(self, kid: str) -> float:
        level, at = self._levels.get(kid, (0.0, self._clock()))
        return max(0.0, level - (self._clock() - at) * self.decay_per_second)

    async def acquire(self, kid: str, points: float, *, release_to_wait: bool = False) -> None:
        if len(self._levels) > 1_000:
            self.forget_idle()
        while (delay := self._delay(kid, points)) is not None:
            self.waits += 1
            if release_to_wait:
                raise BudgetWait(lambda: self.wait_for_room(kid, points))
            await self._sleep(delay)
        self._levels[kid] = (self.level(kid) + max(points, 0.0), self._clock())

    def _delay(self, kid: str, points: float) -> float | None:
        level = self.level(kid)
        if points <= 0 or level + points <= self.max_points or level == 0:
            return None
        return (level + points - self.max_points) / self.decay_per_second

    async def wait_for_room(self, kid: str, points: float) -> None:
        while (delay := self._delay(kid, points)) is not None:
            await self._sleep(delay)

    def forget_idle(self) -> None:
        """Drop keys whose counter decayed to zero, so the table does not grow with every key ever seen."""
        for kid in [k for k in self._levels if self.level(k) == 0]:
            del self._levels[kid]


class TokenBucket:
    """A plain token bucket (Kraken public calls, per host)."""

    def __init__(
        self,
        rate_per_second: float,
        burst: float,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.rate = rate_per_second
        self.burst = burst
        self._tokens = burst
        self._at = clock()
        self._clock = clock
        self._sleep = sleep

    async def acquire(self, tokens: float = 1.0) -> None:
        while True:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= tokens:
                self._tokens -= tokens
                return
            await self._sleep((tokens - self._tokens) / self.rate)


def _weight_rule(venue: str) -> WeightRule | None:
    known = find(venue)
    return known.weight if known is not None else None


def binance_weight(venue: str, cost: float) -> int:
    """Convert a ccxt cost for an endpoint of a weight-per-IP venue into venue request weight (at least 1)."""
    rule = _weight_rule(venue)
    if rule is None:
        raise KeyError(f"{venue} does not count request weight")
    return max(1, math.ceil(cost * rule.weight_per_cost - 1e-9))


def request_weight(venue: str, api_name: str, path: str, cost: float | None) -> int:
    """The weight one request is charged on a weight-per-IP venue (0: not weight-based, or not charged)."""
    rule = _weight_rule(venue)
    if rule is None:
        return 0
    return rule.weight(api_name, path, 1.0 if cost is None else float(cost)) or 0


class SharedIpBudget:
    """The per-IP weight of the workers going out through one address, leased from a count they share.

    `repository` is `storage.ip_budgets.IpBudgetRepository` (any object with its `lease`/`forget_before`);
    `egress` names the address: workers with the same name share one budget per (venue, origin host).
    """

    def __init__(self, repository: Any, egress: str = "default") -> None:
        self.repository = repository
        self.egress = egress
        self._forgot_before = 0

    def lease_for(self, budget: str) -> Lease:
        async def lease(minute: int, need: int, floor: int, limit: int) -> tuple[bool, int]:
            if minute > self._forgot_before:  # once a minute: drop the ended minutes' rows
                self._forgot_before = minute
                await self.repository.forget_before(minute - 1)
            return await self.repository.lease(self.egress, budget, minute, need, floor, limit)

        return lease


class RateBudgets:
    """The process-wide registry of budgets; every pooled ccxt instance charges and informs it.

    `shared`: the engine workers' per-IP budget (`SharedIpBudget`); None (one process): all in memory.
    """

    def __init__(
        self,
        *,
        margin: float = 0.9,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        kraken_public_rate: float = 1.0,
        kraken_public_burst: float = 15.0,
        limits: Mapping[str, int] | None = None,
        trade_reserve: float = TRADE_RESERVE,
        foreground_reserve: float = FOREGROUND_RESERVE,
        user_share: float = USER_SHARE,
        users_share: float = USERS_SHARE,
        shared: SharedIpBudget | None = None,
        lease_chunk: int = LEASE_CHUNK,
    ) -> None:
        self._margin = margin
        self.shared = shared
        self._lease_chunk = lease_chunk
        self._shares = {"trade_reserve": trade_reserve, "foreground_reserve": foreground_reserve,
                        "user_share": user_share, "users_share": users_share}
        #: Weight limits per minute lowered for some venues (to leave room for others); the rest use their
        #: adapter's `WeightRule` (see `limit`).
        self.limits: dict[str, int] = dict(limits or {})
        self._clock = clock
        self._sleep = sleep
        self._weights: dict[tuple[str, str], WeightBudget] = {}
        self._side: dict[str, WeightBudget] = {}
        self._public_buckets: dict[tuple[str, str], TokenBucket] = {}
        self._kraken_public_rate = kraken_public_rate
        self._kraken_public_burst = kraken_public_burst
        self._monotonic = monotonic
        #: The per-key call counter of every counter-per-key venue (Kraken's Starter tier by default).
        self.key_counter = KeyCallCounter(clock=monotonic, sleep=sleep)
        self.kraken_keys = self.key_counter  # the name the budget tests know it by

    def limit(self, venue: str) -> int:
        """A weight-per-IP venue's limit per minute: as lowered in `limits`, else its adapter's."""
        if venue in self.limits:
            return self.limits[venue]
        rule = _weight_rule(venue)
        if rule is None:
            raise KeyError(f"{venue} does not count request weight")
        return rule.limit_per_minute

    def weight_budget(self, venue: str, host: str) -> WeightBudget:
        """The weight budget of one (venue, origin host); created on first use."""
        budget = self._weights.get((venue, host))
        if budget is None:
            budget = WeightBudget(
                self.limit(venue), margin=self._margin, clock=self._clock, sleep=self._sleep, **self._shares,
                lease=self.shared.lease_for(f"{venue} {host}") if self.shared is not None else None,
                chunk=self._lease_chunk,
            )
            self._weights[(venue, host)] = budget
        return budget

    def side_budget(self, host: str, limit_per_minute: int) -> WeightBudget:
        """The side budget (Binance `sapi`) of one origin host; created on first use."""
        budget = self._side.get(host)
        if budget is None:
            budget = self._side[host] = WeightBudget(
                limit_per_minute, margin=self._margin, clock=self._clock, sleep=self._sleep,
                lease=self.shared.lease_for(f"sapi {host}") if self.shared is not None else None,
                chunk=self._lease_chunk,
            )
        return budget

    def side_budgets(self) -> dict[str, WeightBudget]:
        """Every side budget in use (Binance `sapi`), keyed by origin host."""
        return dict(self._side)

    def budgets(self) -> dict[tuple[str, str], WeightBudget]:
        """Every weight budget in use, keyed by (venue, host)."""
        return dict(self._weights)

    def used_per_minute(self, venue: str) -> int:
        """The highest per-minute weight being spent on any host of this venue (0 when unused)."""
        return max((b.used_per_minute() for (v, _), b in self._weights.items() if v == venue), default=0)

    def headroom(self, venue: str) -> int | None:
        """The smallest remaining weight this minute on any host of this venue; None when not weight-based."""
        if _weight_rule(venue) is None:
            return None
        values = [b.headroom() for (v, _), b in self._weights.items() if v == venue]
        return min(values) if values else max(1, int(self.limit(venue) * self._margin))

    async def acquire(
        self,
        venue: str,
        api_name: str,
        api_url: str,
        cost: float | None,
        kid: str | None = None,
        path: str = "",
        *,
        release_to_wait: bool = False,
    ) -> None:
        """Wait until one request fits its budget, then charge it.

        `api_name` is ccxt's api group ("public", "private", "sapi", "fapiPrivate"…), `api_url` its base URL,
        `cost` ccxt's cost for the endpoint, `kid` the signing key's id for per-key venues, `path` the
        endpoint (for its `WeightRule.overrides`). Whether it is a trading call and whom a read is for come from
        `trading_call()` and `charged_to()`; `release_to_wait` turns a read's wait into `BudgetWait`.
        """
        cost = 1.0 if cost is None else float(cost)
        parts = urlsplit(api_url)
        known = find(venue)
        if known is None:
            return
        if known.weight is not None:
            weight = known.weight.weight(api_name, path, cost)
            if weight is None:
                side = known.weight.side_weight(api_name, cost)
                if side is not None and known.weight.side_limit_per_minute is not None:
                    await self.side_budget(parts.netloc, known.weight.side_limit_per_minute).acquire(
                        side, owner=_owner.get(), release_to_wait=release_to_wait
                    )
                return
            await self.weight_budget(venue, parts.netloc).acquire(
                weight, trading=_trading.get(), owner=_owner.get(), release_to_wait=release_to_wait,
                foreground="public" in api_name.lower() or _decision.get(),
            )
        elif known.key_counter is not None:
            rule = known.key_counter
            if api_name == rule.private_api:
                await self.key_counter.acquire(
                    kid or "", cost / rule.cost_per_point, release_to_wait=release_to_wait
                )
                return
            if api_name != rule.public_api:
                return
            bucket = self._public_buckets.get((venue, parts.netloc))
            if bucket is None:
                bucket = TokenBucket(
                    self._kraken_public_rate,
                    self._kraken_public_burst,
                    clock=self._monotonic,
                    sleep=self._sleep,
                )
                self._public_buckets[(venue, parts.netloc)] = bucket
            await bucket.acquire()

    def observe(self, venue: str, url: str, status: int | None, headers: Mapping[str, str]) -> None:
        """Read the server's weight count (and any Retry-After on 418/429) from a response."""
        rule = _weight_rule(venue)
        if rule is None:
            return
        host = urlsplit(url).netloc
        lowered = {str(k).lower(): v for k, v in headers.items()}
        used = lowered.get(rule.used_weight_header) if rule.used_weight_header else None
        budget = None
        if used is not None:
            try:
                value = int(str(used).split(",")[0].strip())
            except ValueError:
                value = None
            if value is not None:
                budget = self.weight_budget(venue, host)
                budget.observe_used(value)
        side = lowered.get(rule.side_used_weight_header) if rule.side_used_weight_header else None
        if side is not None and rule.side_limit_per_minute is not None:
            with contextlib.suppress(ValueError):
                self.side_budget(host, rule.side_limit_per_minute).observe_used(int(str(side).split(",")[0].strip()))
        if status in (418, 429):
            retry_after = lowered.get("retry-after")
            try:
                seconds = float(retry_after) if retry_after is not None else 0.0
            except ValueError:
                seconds = 0.0
            if seconds > 0:
                (budget or self.weight_budget(venue, host)).block_for(min(seconds, 300.0))

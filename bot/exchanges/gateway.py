"""The exchange port: the one object the engine and the services call for anything on a venue.

Credentials travel with each private call and are bound to a pooled ccxt instance only for its duration
(`ClientPool.bound`). Every call is translated into our error types (`errors.py`) and retried by one
policy: network/5xx/timeouts and rate limits with bounded backoff, a clock/nonce rejection once after a
resync. Orders are the exception: a create_order that timed out may have reached the venue, so it is NOT
retried blindly; its failure is marked `outcome_unknown` and the caller reconciles by client order id.

Market data goes through `MarketDataCache` (one request per key per candle / round); markets are loaded
once per venue and shared by every pooled instance.

A simulated venue (Paper) reads its source venue's markets and prices through the same paths and cache, and
its private calls go to a `PaperExchange` (`bot.exchanges.paper`) instead of a key-bound ccxt instance: the
same ccxt methods and shapes, no request at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any, TypeVar

import ccxt

from bot.exchanges.clients import ClientPool, key_id
from bot.exchanges.errors import (
    MSG_OUTCOME_UNKNOWN,
    Action,
    ExchangeFailure,
    InvalidOrderFailure,
    RetryPolicy,
    TransientFailure,
    call_with_retry,
    is_duplicate_client_id,
)
from bot.exchanges.market_data import Candles, MarketDataCache, Ticker, to_decimal
from bot.exchanges.models import (
    BalanceLine,
    MarketInfo,
    Order,
    Position,
    Trade,
    balances_from_ccxt,
    market_from_ccxt,
    order_from_ccxt,
    position_from_ccxt,
    trade_from_ccxt,
)
from bot.exchanges.paper import PaperDesk
from bot.exchanges.rate_budget import BudgetWait, trading_call
from bot.exchanges.venues import adapter, find
from bot.secret import Credentials

T = TypeVar("T")

_SAFE_TO_RETRY_ORDER = frozenset({Action.BACKOFF})


class ExchangeGateway:
    """Venue-neutral async API over the shared ccxt pool."""

    def __init__(
        self,
        pool: ClientPool,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] | None = None,
        ticker_ttl: float = 1.0,
    ) -> None:
        self.pool = pool
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        cache_kwargs: dict[str, Any] = {"ticker_ttl": ticker_ttl}
        if clock is not None:
            cache_kwargs["clock"] = clock
        self.market_data = MarketDataCache(self._fetch_ohlcv_rows, self._fetch_ticker_raw, **cache_kwargs)
        self._markets_loaded: set[str] = set()
        #: (venue, symbol) → (the markets dict it was read from, its MarketInfo); a reload makes a new dict.
        self._market_info: dict[tuple[str, str], tuple[Any, MarketInfo]] = {}
        #: Paper accounts' books and matching; set by `attach_paper` once the main database is open.
        self.paper: PaperDesk | None = None

    def attach_paper(self, books: Any) -> None:
        """Serve Paper accounts from `books` (`storage.paper.PaperRepository`), priced by this gateway's cache."""
        self.paper = PaperDesk(
            books, ticker=lambda venue, symbol: self.market_data.ticker(venue, symbol, None), markets=self._master
        )

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> ExchangeGateway:
        pool_kwargs = {k: kwargs.pop(k) for k in ("size", "timeout_ms", "budgets") if k in kwargs}
        return cls(ClientPool.from_settings(settings, **pool_kwargs), **kwargs)

    async def close(self) -> None:
        await self.pool.close()

    def is_testnet(self, venue: str) -> bool:
        return self.pool.is_testnet(venue)

    # --- plumbing -------------------------------------------------------------------------------------------

    @staticmethod
    def _source(venue: str) -> str:
        """The venue whose public data `venue` uses: itself, or a Paper venue's price source."""
        known = find(venue)
        return known.market_venue if known is not None else venue

    async def _public(self, venue: str, op: Callable[[Any], Awaitable[T]]) -> T:
        venue = self._source(venue)

        async def attempt() -> T:
            return await op(await self.pool.master(venue))

        return await call_with_retry(
            attempt, venue, policy=self._retry, resync=self._resync_for(venue, None), sleep=self._sleep
        )

    async def _private(
        self,
        venue: str,
        creds: Credentials,
        op: Callable[[Any], Awaitable[T]],
        *,
        retry_on: frozenset[Action] = frozenset({Action.RETRY, Action.BACKOFF}),
    ) -> T:
        if adapter(venue).simulated:
            if self.paper is None:
                raise RuntimeError("Paper accounts need ExchangeGateway.attach_paper at start-up")
            paper = self.paper.exchange(adapter(venue), creds)
            return await call_with_retry(lambda: op(paper), venue, policy=self._retry, retry_on=retry_on,
                                         sleep=self._sleep)

        async def attempt() -> T:
            while True:
                try:
                    async with self.pool.bound(venue, creds, release_to_wait=True) as exchange:
                        return await op(exchange)
                except BudgetWait as no_room:  # a read waits for its share with the pooled client free
                    await no_room.wait()

        return await call_with_retry(
            attempt,
            venue,
            policy=self._retry,
            retry_on=retry_on,
            resync=self._resync_for(venue, creds),
            secrets=[creds],
            sleep=self._sleep,
        )

    async def private_call(self, venue: str, creds: Credentials, op: Callable[[Any], Awaitable[T]]) -> T:
        """One signed call of a venue-specific endpoint (a user-data stream's listenKey or token) on the private path:
        the same pooled client, weight budget, retries and error translation as every other private call."""
        return await self._private(venue, creds, op)

    def _resync_for(
        self, venue: str, creds: Credentials | None
    ) -> Callable[[ExchangeFailure], Awaitable[None]]:
        async def resync(_failure: ExchangeFailure) -> None:
            if adapter(venue).nonce_per_key:
                if creds is not None:
                    self.pool.nonces.bump(key_id(creds))
            else:
                await self.pool.resync_time(venue)

        return resync

    # --- markets and precision ------------------------------------------------------------------------------

    async def load_markets(self, venue: str, *, reload: bool = False) -> None:
        """Load the venue's markets once (shared by every instance); `reload` refreshes them."""

        async def op(_master: Any) -> None:
            await self.pool.load_markets(self._source(venue), reload=reload)

        await self._public(venue, op)

    async def _master(self, venue: str) -> Any:
        # Once loaded, markets stay shared in the pool: later calls skip the retry wrapper. Every strategy
        # run asks for its market, and bench/engine.py measured that wrapper at ~15 % of the loop's CPU.
        venue = self._source(venue)
        if venue not in self._markets_loaded:
            await self.load_markets(venue)
            self._markets_loaded.add(venue)
        return await self.pool.master(venue)

    async def market(self, venue: str, symbol: str) -> MarketInfo:
        """Precision steps, limits (min amount, min cost) and fees of one market."""
        master = await self._master(venue)
        cached = self._market_info.get((venue, symbol))
        if cached is not None and cached[0] is master.markets:
            return cached[1]
        try:
            data = master.market(symbol)
        except ccxt.BaseError:
            raise InvalidOrderFailure(
                venue,
                f"unknown market {symbol}",
                code="symbol",
                user_message=f"{symbol} is not traded on this exchange.",
            ) from None
        info = market_from_ccxt(venue, data, master.precisionMode)
        self._market_info[(venue, symbol)] = (master.markets, info)
        return info

    async def symbols(self, venue: str) -> list[str]:
        return list((await self._master(venue)).symbols or [])

    async def market_aliases(self, venue: str) -> list[tuple[str, str]]:
        """The venue's own names of its markets as (upper-case name, ccxt symbol) pairs: ids (`BTCUSDT`,
        `XXBTZUSD`; a spot and a futures market may share one) and Kraken's `altname` / `wsname` (`XBTUSD`)."""
        pairs: list[tuple[str, str]] = []
        for symbol, market in ((await self._master(venue)).markets or {}).items():
            info = market.get("info") or {}
            for alias in (market.get("id"), info.get("altname"), info.get("wsname")):
                if isinstance(alias, str) and alias:
                    pairs.append((alias.upper(), symbol))
        return pairs

    async def amount_to_precision(self, venue: str, symbol: str, amount: Decimal) -> Decimal:
        """Amount truncated to the market's step (ccxt's rule); raises InvalidOrderFailure if it becomes 0."""
        return await self._precision(venue, symbol, "amount_to_precision", amount)

    async def price_to_precision(self, venue: str, symbol: str, price: Decimal) -> Decimal:
        """Price rounded to the market's tick (ccxt's rule)."""
        return await self._precision(venue, symbol, "price_to_precision", price)

    async def cost_to_precision(self, venue: str, symbol: str, cost: Decimal) -> Decimal:
        """Quote cost to the market's cost precision (ccxt's rule)."""
        return await self._precision(venue, symbol, "cost_to_precision", cost)

    async def _precision(self, venue: str, symbol: str, method: str, value: Decimal) -> Decimal:
        master = await self._master(venue)
        try:
            text = getattr(master, method)(symbol, _num(value))
        except ccxt.BaseError as exc:
            raise InvalidOrderFailure(venue, f"{method}({symbol}, {value}): {type(exc).__name__}") from None
        return Decimal(text)

    # --- market data ----------------------------------------------------------------------------------------

    async def _fetch_ticker_raw(self, venue: str, symbol: str) -> dict[str, Any]:
        return await self._public(venue, lambda ex: ex.fetch_ticker(symbol))

    async def _fetch_ohlcv_rows(self, venue: str, symbol: str, timeframe: str, limit: int) -> list[list[Any]]:
        return await self._public(venue, lambda ex: ex.fetch_ohlcv(symbol, timeframe, None, limit))

    async def fetch_ticker(self, venue: str, symbol: str, round_id: int | None = None) -> Ticker:
        """Ticker through the cache: one request per (venue, symbol) per round (or per second)."""
        return await self.market_data.ticker(self._source(venue), symbol, round_id)

    async def fetch_ohlcv(self, venue: str, symbol: str, timeframe: str, limit: int = 100) -> Candles:
        """Closed candles and the open one, through the cache (valid until the open candle closes)."""
        return await self.market_data.ohlcv(self._source(venue), symbol, timeframe, limit)

    async def fetch_ohlcv_page(
        self, venue: str, symbol: str, timeframe: str, since_ms: int, limit: int
    ) -> list[list[Any]]:
        """One page of candles from `since_ms` on, uncached (backtests page through a range and keep it on disk).

        A public call through the shared keyless client, so the venue's request budget counts it like any other.
        """
        return await self._public(venue, lambda ex: ex.fetch_ohlcv(symbol, timeframe, since_ms, limit))

    # --- account --------------------------------------------------------------------------------------------

    async def fetch_balance(self, venue: str, creds: Credentials) -> dict[str, BalanceLine]:
        """Free/used/total per asset (futures: wallet assets) for this key's account."""
        data = await self._private(venue, creds, lambda ex: ex.fetch_balance())
        return balances_from_ccxt(data)

    # --- orders ---------------------------------------------------------------------------------------------

    async def create_order(
        self,
        venue: str,
        creds: Credentials,
        symbol: str,
        side: str,
        type: str,
        amount: Decimal | None = None,
        price: Decimal | None = None,
        cost: Decimal | None = None,
        client_order_id: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> Order:
        """Place an order. A market buy may give `cost` (quote) instead of `amount`.

        Spot venues send the cost natively (Binance `quoteOrderQty`, Kraken `viqc`); USD-M futures have no
        cost orders, so amount = cost / price (the given price, else the ticker's ask) truncated to the step.
        Only rate-limit and clock/nonce rejections are retried (the venue did not act on them); a timeout
        or 5xx raises a `TransientFailure` with `outcome_unknown=True`: reconcile by client order id.
        Idempotent per client order id: if the venue says the id is already in use, the existing order
        is returned instead of an error.
        """
        extra: dict[str, Any] = dict(params or {})
        if client_order_id is not None:
            extra["clientOrderId"] = client_order_id
        if cost is not None:
            if type != "market" or side != "buy":
                raise ValueError("cost is only for market buys")
            if adapter(venue).futures:  # no cost orders: size the amount by the price
                reference = price
                if reference is None:
                    ticker = await self._fetch_ticker_raw(venue, symbol)
                    reference = to_decimal(ticker.get("ask") or ticker.get("last"))
                if not reference:
                    raise InvalidOrderFailure(venue, f"no price to size a {symbol} buy of {cost}")
                amount = await self.amount_to_precision(venue, symbol, cost / reference)
                price = None
            else:
                extra["cost"] = _num(cost)
                if adapter(venue).cost_buy_needs_amount:
                    amount = cost  # ccxt formats Kraken's `volume` from the amount before replacing it by the cost
        elif amount is None:
            raise ValueError("amount (or cost for a market buy) is required")
        ccxt_amount = _num(amount) if amount is not None else None
        ccxt_price = _num(price) if price is not None and type != "market" else None

        async def op(ex: Any) -> dict[str, Any]:
            with trading_call():  # ahead of reads on the shared budget
                return await ex.create_order(symbol, type, side, ccxt_amount, ccxt_price, dict(extra))

        try:
            data = await self._private(venue, creds, op, retry_on=_SAFE_TO_RETRY_ORDER)
        except InvalidOrderFailure as failure:
            if client_order_id is None or not is_duplicate_client_id(failure):
                raise
            existing = await self.fetch_order_by_client_id(venue, creds, symbol, client_order_id)
            if existing is None:
                raise
            return existing
        except TransientFailure as failure:
            raise TransientFailure(
                venue,
                failure.detail,
                code=failure.code,
                user_message=MSG_OUTCOME_UNKNOWN,
                outcome_unknown=True,
            ) from None
        order = order_from_ccxt(venue, data)
        if order.client_order_id is None and client_order_id is not None:
            order = _with_client_id(order, client_order_id)
        return order

    async def fetch_order_by_client_id(
        self, venue: str, creds: Credentials, symbol: str, client_order_id: str
    ) -> Order | None:
        """The order with this client id, or None if the venue has none (open or closed): how to look it up is
        the venue adapter's (`find_order_by_client_id`)."""

        async def private(op: Callable[[Any], Awaitable[T]]) -> T:
            return await self._private(venue, creds, op)

        data = await adapter(venue).find_order_by_client_id(private, symbol, client_order_id)
        return order_from_ccxt(venue, data) if data is not None else None

    async def fetch_closed_orders(self, venue: str, creds: Credentials, symbol: str | None = None) -> list[Order]:
        """The key's recently closed or canceled orders (Kraken: its 50 latest, all symbols, in one call)."""
        rows = await self._private(venue, creds, lambda ex: ex.fetch_closed_orders(symbol))
        return [order_from_ccxt(venue, row) for row in rows]

    async def fetch_open_orders(
        self, venue: str, creds: Credentials, symbol: str | None = None
    ) -> list[Order]:
        """Open orders of this key (one symbol, or all: heavier on Binance, weight 80 instead of 6)."""
        rows = await self._private(venue, creds, lambda ex: ex.fetch_open_orders(symbol))
        return [order_from_ccxt(venue, row) for row in rows]

    async def cancel_order(
        self,
        venue: str,
        creds: Credentials,
        symbol: str,
        *,
        order_id: str | None = None,
        client_order_id: str | None = None,
    ) -> Order:
        """Cancel by venue order id or by client order id; an unknown order raises OrderNotFoundFailure."""
        if (order_id is None) == (client_order_id is None):
            raise ValueError("give exactly one of order_id and client_order_id")
        params: dict[str, Any] = {}
        if client_order_id is not None:
            params = {adapter(venue).client_id_param: client_order_id}

        async def op(ex: Any) -> dict[str, Any]:
            with trading_call():
                return await ex.cancel_order(order_id, symbol, dict(params))

        data = await self._private(venue, creds, op)
        order = order_from_ccxt(venue, data)
        # Binance answers a cancel with the cancel request's own id in clientOrderId; ours is the original.
        original = (data.get("info") or {}).get("origClientOrderId") or client_order_id
        if original is not None and order.client_order_id != original:
            order = _with_client_id(order, original)
        return order

    async def fetch_my_trades(
        self,
        venue: str,
        creds: Credentials,
        symbol: str | None = None,
        since_ms: int | None = None,
        limit: int | None = None,
        *,
        order_id: str | None = None,
        from_id: str | None = None,
    ) -> list[Trade]:
        """This key's fills, oldest first; with `order_id` (Binance venues) only that order's, however old;
        with `from_id` (Binance) only trades from that trade id on, oldest first (paging)."""
        params = adapter(venue).trade_query_params(order_id, from_id)
        rows = await self._private(venue, creds, lambda ex: ex.fetch_my_trades(symbol, since_ms, limit, params))
        return [trade_from_ccxt(venue, row) for row in rows]

    # --- futures --------------------------------------------------------------------------------------------

    def _require_futures(self, venue: str) -> None:
        if not adapter(venue).futures:
            raise ValueError(f"{venue} is not a futures venue")

    async def fetch_position_mode(self, venue: str, creds: Credentials) -> bool:
        """True when the futures account is in hedge mode (dual side), False in one-way mode."""
        self._require_futures(venue)
        data = await self._private(venue, creds, lambda ex: ex.fetch_position_mode())
        return bool(data.get("hedged"))

    async def set_leverage(self, venue: str, creds: Credentials, symbol: str, leverage: int) -> None:
        self._require_futures(venue)

        async def op(ex: Any) -> None:
            with trading_call():  # the engine sets it right before an order: it goes with the order
                await ex.set_leverage(int(leverage), symbol)

        await self._private(venue, creds, op)

    async def set_margin_mode(self, venue: str, creds: Credentials, symbol: str, mode: str) -> None:
        """Set "cross" or "isolated"; already being in that mode is success."""
        self._require_futures(venue)
        if mode not in ("cross", "isolated"):
            raise ValueError("margin mode is 'cross' or 'isolated'")

        async def op(ex: Any) -> None:
            try:
                await ex.set_margin_mode(mode, symbol)
            except ccxt.MarginModeAlreadySet:
                return None

        await self._private(venue, creds, op)

    async def fetch_mark_price(self, venue: str, symbol: str) -> Decimal | None:
        """A futures market's mark price (Binance's premium index): what the venue values positions at."""
        self._require_futures(venue)
        data = await self._public(venue, lambda ex: ex.fetch_mark_price(symbol))
        mark = to_decimal(data.get("markPrice"))
        return mark if mark is not None and mark > 0 else None

    async def fetch_positions(
        self, venue: str, creds: Credentials, symbols: Sequence[str] | None = None
    ) -> list[Position]:
        """Open futures positions (zero-size rows dropped)."""
        self._require_futures(venue)
        wanted = list(symbols) if symbols else None
        rows = await self._private(venue, creds, lambda ex: ex.fetch_positions(wanted))
        positions = [position_from_ccxt(venue, row) for row in rows]
        return [p for p in positions if p.contracts != 0]


def _num(value: Decimal | int | float | str) -> str:
    """Numbers go to ccxt as plain strings (ccxt's precision code accepts them; no float rounding)."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral() else format(value, "f")
    return str(value)


def _with_client_id(order: Order, client_order_id: str) -> Order:
    return replace(order, client_order_id=client_order_id)

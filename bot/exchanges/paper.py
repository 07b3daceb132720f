"""The Paper exchange: fills a Paper account's orders on its source venue's live public prices.

The gateway hands a `PaperExchange` to a Paper account's private calls where a real account gets a pooled ccxt
instance bound to its key, and `PaperExchange` answers the same ccxt methods with the same unified shapes
(`create_order`, `cancel_order`, `fetch_order`, `fetch_open_orders`, `fetch_closed_orders`, `fetch_my_trades`,
`fetch_balance`). So the engine, its fill poller, its crash recovery, /stop and /panic treat a Paper account
exactly like a real one, and nothing in them knows Paper exists. No signed request is ever sent.

The rules, as on the source venue (spot):
- market orders fill at once, buys at the ask and sells at the bid, with the source's taker fee;
- a limit order that crosses the book when placed fills at once at the ask/bid, as a taker; otherwise it rests,
  holding back its funds (quote for a buy, base for a sell), and fills at its own price with the maker fee as
  soon as the ask falls to a buy's price or the bid rises to a sell's; resting orders are matched whenever the
  account is read (the engine's fill poll reads it every few seconds while orders rest);
- amounts are cut to the market's step and prices to its tick (the source's own ccxt precision rules), the
  market's minimum amount and cost are enforced, and an order the free balance cannot pay is refused;
- fees are charged in the quote currency.
Prices come from the gateway's market-data cache, shared with every live strategy: a Paper account costs no
request of its own. The book lives in the main database (`storage/paper.py`), so it survives restarts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import replace
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import ccxt

from bot.exchanges.failures import (
    ExchangeFailure,
    FundsFailure,
    InvalidOrderFailure,
    OrderNotFoundFailure,
    TransientFailure,
)
from bot.exchanges.market_data import Ticker
from bot.exchanges.venues.base import VenueAdapter
from bot.secret import Credentials
from storage.models import PaperOrder, PaperTrade
from storage.paper import PaperRepository

logger = logging.getLogger(__name__)

ZERO = Decimal(0)
#: Fees and costs are kept to 1e-8 of the quote, as the venues book them.
_QUANTUM = Decimal("1e-8")
#: How many ended orders `fetch_closed_orders` lists (Kraken's ClosedOrders lists 50).
CLOSED_LISTED = 50


class PaperCredentials(Credentials):
    """What stands for a key on a Paper account: which account's book to use. Nothing secret in it."""

    __slots__ = ("account_id",)

    def __init__(self, account_id: int) -> None:
        super().__init__(f"paper-account-{account_id}", "")
        self.account_id = account_id

    def __repr__(self) -> str:
        return f"PaperCredentials(account_id={self.account_id})"

    __str__ = __repr__


class PaperDesk:
    """Shared by every Paper account of the process: the books, the prices, one lock per account."""

    def __init__(
        self,
        books: PaperRepository,
        *,
        ticker: Callable[[str, str], Awaitable[Ticker]],
        markets: Callable[[str], Awaitable[Any]],
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.books = books
        #: (source venue, symbol) → its ticker, through the shared market-data cache.
        self._ticker = ticker
        #: source venue → its keyless ccxt instance with markets loaded (precision and limits).
        self._markets = markets
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    def exchange(self, venue: VenueAdapter, creds: Credentials) -> PaperExchange:
        if not isinstance(creds, PaperCredentials):
            raise ValueError("a Paper account's calls need its PaperCredentials")
        return PaperExchange(self, venue, creds.account_id)

    def lock(self, account_id: int) -> asyncio.Lock:
        lock = self._locks.get(account_id)
        if lock is None:
            lock = self._locks[account_id] = asyncio.Lock()
        return lock

    def now_ms(self) -> int:
        return self._clock_ms()

    async def ticker(self, source: str, symbol: str) -> Ticker:
        return await self._ticker(source, symbol)

    async def master(self, source: str) -> Any:
        return await self._markets(source)


class PaperExchange:
    """ccxt's private methods for one Paper account (see the module docstring for the rules)."""

    def __init__(self, desk: PaperDesk, venue: VenueAdapter, account_id: int) -> None:
        self._desk = desk
        self._venue = venue
        self._source = venue.market_venue
        self._account_id = account_id
        self._books = desk.books

    # --- ccxt's private API -----------------------------------------------------------------------------

    async def fetch_balance(self, params: dict | None = None) -> dict[str, Any]:
        async with self._desk.lock(self._account_id):
            await self._match()
            balances = await self._books.balances(self._account_id)
        result: dict[str, Any] = {"info": {}}
        for asset, (free, used) in balances.items():
            result[asset] = {"free": _s(free), "used": _s(used), "total": _s(free + used)}
        return result

    async def create_order(
        self, symbol: str, type: str, side: str, amount: Any, price: Any = None, params: dict | None = None
    ) -> dict[str, Any]:
        params = dict(params or {})
        client_id = params.get("clientOrderId")
        async with self._desk.lock(self._account_id):
            if client_id is not None:
                existing = await self._books.orders(self._account_id, client_order_id=client_id)
                if existing:  # the same order sent again (a retry after a lost answer): it exists
                    return _ccxt_order(existing[0])
            order, balances, trades = await self._place(symbol, type, side, amount, price, params, client_id)
            await self._books.save(self._account_id, balances, [order], trades)
        return _ccxt_order(order)

    async def cancel_order(self, id: str | None, symbol: str | None = None, params: dict | None = None) -> dict:
        async with self._desk.lock(self._account_id):
            await self._match()
            order = await self._find(id, (params or {}).get("clientOrderId"))
            if order.status != "open":
                raise OrderNotFoundFailure(self._venue.id, f"order {order.id} is {order.status}", code="not_open")
            balances = await self._books.balances(self._account_id)
            changes = _release(balances, order)
            ended = replace(order, status="canceled", reserved=ZERO, updated_ms=self._desk.now_ms())
            await self._books.save(self._account_id, changes, [ended])
        return _ccxt_order(ended)

    async def fetch_order(self, id: str | None, symbol: str | None = None, params: dict | None = None) -> dict:
        async with self._desk.lock(self._account_id):
            await self._match()
            return _ccxt_order(await self._find(id, (params or {}).get("clientOrderId")))

    async def fetch_open_orders(self, symbol=None, since=None, limit=None, params=None) -> list[dict[str, Any]]:
        async with self._desk.lock(self._account_id):
            await self._match()
            orders = await self._books.orders(self._account_id, statuses=("open",))
        return [_ccxt_order(o) for o in orders if symbol is None or o.symbol == symbol]

    async def fetch_closed_orders(self, symbol=None, since=None, limit=None, params=None) -> list[dict[str, Any]]:
        async with self._desk.lock(self._account_id):
            await self._match()
            orders = await self._books.orders(
                self._account_id, statuses=("closed", "canceled"), newest=limit or CLOSED_LISTED
            )
        client_id = (params or {}).get("clientOrderId")
        return [
            _ccxt_order(o) for o in orders
            if (symbol is None or o.symbol == symbol) and (client_id is None or o.client_order_id == client_id)
        ]

    async def fetch_my_trades(self, symbol=None, since=None, limit=None, params=None) -> list[dict[str, Any]]:
        async with self._desk.lock(self._account_id):
            await self._match()
            trades = await self._books.trades(self._account_id, since_ms=since)
        order_id = (params or {}).get("orderId")
        rows = [
            _ccxt_trade(t) for t in trades
            if (symbol is None or t.symbol == symbol) and (order_id is None or t.order_id == order_id)
        ]
        return rows[-limit:] if limit else rows

    # --- the rules ------------------------------------------------------------------------------------------

    async def _find(self, order_id: str | None, client_id: str | None) -> PaperOrder:
        found = await self._books.orders(self._account_id, order_id=order_id, client_order_id=client_id)
        if not found:
            raise OrderNotFoundFailure(self._venue.id, "unknown order", code="unknown_order")
        return found[0]

    async def _place(
        self, symbol: str, type: str, side: str, amount: Any, price: Any, params: dict, client_id: str | None
    ) -> tuple[PaperOrder, dict[str, tuple[Decimal, Decimal]], list[PaperTrade]]:
        if type not in ("market", "limit") or side not in ("buy", "sell"):
            raise InvalidOrderFailure(self._venue.id, f"{type} {side} orders are not supported", code="order_type")
        master = await self._desk.master(self._source)
        try:
            market = master.market(symbol)
        except ccxt.BaseError:
            raise InvalidOrderFailure(
                self._venue.id, f"unknown market {symbol}", code="symbol",
                user_message=f"{symbol} is not traded on this exchange.",
            ) from None
        ticker = await self._desk.ticker(self._source, symbol)
        bid, ask = _bid_ask(ticker)
        if bid is None or ask is None:
            raise TransientFailure(self._venue.id, f"no price for {symbol}", code="no_price")
        limit_price = None
        if type == "limit":
            if price is None:
                raise InvalidOrderFailure(self._venue.id, "a limit order needs a price", code="price")
            limit_price = self._precise(master, "price_to_precision", symbol, price)
        cost_wanted = params.get("cost")
        if type == "market" and side == "buy" and cost_wanted is not None:
            amount = Decimal(str(cost_wanted)) / ask
        if amount is None:
            raise InvalidOrderFailure(self._venue.id, "an order needs an amount", code="amount")
        qty = self._precise(master, "amount_to_precision", symbol, amount)
        taker_now = (
            type == "market" or (side == "buy" and limit_price >= ask) or (side == "sell" and limit_price <= bid)
        )
        fill_price = (ask if side == "buy" else bid) if taker_now else limit_price
        self._check_minimums(market, symbol, qty, qty * fill_price)
        base, quote = market["base"], market["quote"]
        now = self._desk.now_ms()
        order = PaperOrder(
            account_id=self._account_id, id=_new_id(now), client_order_id=client_id, symbol=symbol, side=side,
            type=type, amount=qty, price=limit_price, status="open", filled=ZERO, cost=ZERO, average=None,
            fee=ZERO, fee_currency=quote, reserved_asset=None, reserved=ZERO, created_ms=now, updated_ms=now,
        )
        balances = await self._books.balances(self._account_id)
        if taker_now:
            fee_rate = self._venue.entry_taker_fee
            changes = _debit_for(self._venue.id, balances, order, base, quote, fill_price, fee_rate)
            filled, trade = _filled(order, fill_price, fee_rate, maker=False, at_ms=now)
            return filled, changes, [trade]
        maker_rate = self._maker_rate(market)
        # A buy holds exactly what its fill will be charged (value and fee, each kept to 1e-8 as `_filled` books
        # them), so a fill never needs more than was held.
        held_asset, held = (quote, _cost_and_fee(qty, limit_price, maker_rate)) if side == "buy" else (base, qty)
        free, used = balances.get(held_asset, (ZERO, ZERO))
        if free < held:
            raise _no_funds(self._venue.id, held_asset, held, free)
        return replace(order, reserved_asset=held_asset, reserved=held), {held_asset: (free - held, used + held)}, []

    async def _match(self) -> None:
        """Fill every resting order the current prices cross (call with the account's lock held)."""
        resting = await self._books.orders(self._account_id, statuses=("open",))
        if not resting:
            return
        balances = await self._books.balances(self._account_id)
        master = await self._desk.master(self._source)
        ended: list[PaperOrder] = []
        trades: list[PaperTrade] = []
        changed: dict[str, tuple[Decimal, Decimal]] = {}
        for order in resting:
            try:
                bid, ask = _bid_ask(await self._desk.ticker(self._source, order.symbol))
            except ExchangeFailure as failure:  # no price now: the order keeps resting until there is one
                logger.info("paper: no price for %s (%s)", order.symbol, failure.action)
                continue
            crossed = (order.side == "buy" and ask is not None and ask <= order.price) or (
                order.side == "sell" and bid is not None and bid >= order.price
            )
            if not crossed:
                continue
            market = master.market(order.symbol)
            maker_rate = self._maker_rate(market)
            now = self._desk.now_ms()
            released = _release(balances, order)
            balances.update(released)
            changed.update(released)
            base, quote = market["base"], market["quote"]
            debit = _debit_for(self._venue.id, balances, order, base, quote, order.price, maker_rate)
            balances.update(debit)
            changed.update(debit)
            done, trade = _filled(replace(order, reserved=ZERO), order.price, maker_rate, maker=True, at_ms=now)
            ended.append(done)
            trades.append(trade)
        if ended:
            await self._books.save(self._account_id, changed, ended, trades)

    def _maker_rate(self, market: dict[str, Any]) -> Decimal:
        """The venue's entry-tier maker fee where its market data understates it (Kraken), else the market's."""
        if self._venue.entry_maker_fee is not None:
            return self._venue.entry_maker_fee
        return _rate(market.get("maker"), self._venue.entry_taker_fee)

    def _precise(self, master: Any, method: str, symbol: str, value: Any) -> Decimal:
        try:
            result = Decimal(getattr(master, method)(symbol, _s(Decimal(str(value)))))
        except (ccxt.BaseError, ArithmeticError, ValueError):
            raise InvalidOrderFailure(
                self._venue.id, f"{method}({symbol}, {value}) failed", code="precision",
                user_message="The order is smaller than the market's smallest step.",
            ) from None
        if result <= 0:
            raise InvalidOrderFailure(
                self._venue.id, f"{symbol} amount rounds to zero", code="precision",
                user_message="The order is smaller than the market's smallest step.",
            )
        return result

    def _check_minimums(self, market: dict[str, Any], symbol: str, qty: Decimal, cost: Decimal) -> None:
        limits = market.get("limits") or {}
        min_amount = (limits.get("amount") or {}).get("min")
        min_cost = (limits.get("cost") or {}).get("min")
        if min_amount is not None and qty < Decimal(str(min_amount)):
            raise InvalidOrderFailure(
                self._venue.id, f"amount {qty} under the minimum {min_amount}", code="min_amount",
                user_message=f"The order is under {symbol}'s minimum amount ({min_amount}).",
            )
        if min_cost is not None and cost < Decimal(str(min_cost)):
            raise InvalidOrderFailure(
                self._venue.id, f"cost {cost} under the minimum {min_cost}", code="min_cost",
                user_message=f"The order is under {symbol}'s minimum value ({min_cost} {market['quote']}).",
            )


def _bid_ask(ticker: Ticker) -> tuple[Decimal | None, Decimal | None]:
    """The top of the book, or the last price on both sides when the venue omits it."""
    return ticker.bid or ticker.last, ticker.ask or ticker.last


def _rate(value: Any, fallback: Decimal) -> Decimal:
    return Decimal(str(value)) if value is not None else fallback


def _q(value: Decimal) -> Decimal:
    return value.quantize(_QUANTUM, rounding=ROUND_HALF_UP)


def _s(value: Decimal) -> str:
    return format(value, "f")


_order_numbers = itertools.count()


def _new_id(now_ms: int) -> str:
    """Ids sort in the order they were made (the book orders by time, then id), and never collide."""
    return f"P{now_ms}{next(_order_numbers) % 1_000_000:06d}{secrets.token_hex(2)}"


def _no_funds(venue: str, asset: str, needed: Decimal, free: Decimal) -> FundsFailure:
    return FundsFailure(
        venue, f"insufficient {asset}: {needed} needed, {free} free", code="insufficient_funds",
        user_message=f"Not enough {asset} on the Paper account for this order.",
    )


def _cost_and_fee(amount: Decimal, price: Decimal, fee_rate: Decimal) -> Decimal:
    cost = _q(amount * price)
    return cost + _q(cost * fee_rate)


def _release(balances: dict[str, tuple[Decimal, Decimal]], order: PaperOrder) -> dict[str, tuple[Decimal, Decimal]]:
    """Give back what a resting order held (it fills or ends)."""
    if not order.reserved or order.reserved_asset is None:
        return {}
    free, used = balances.get(order.reserved_asset, (ZERO, ZERO))
    return {order.reserved_asset: (free + order.reserved, used - order.reserved)}


def _debit_for(
    venue: str,
    balances: dict[str, tuple[Decimal, Decimal]],
    order: PaperOrder,
    base: str,
    quote: str,
    price: Decimal,
    fee_rate: Decimal,
) -> dict[str, tuple[Decimal, Decimal]]:
    """The balances after `order` fills wholly at `price` (fee in quote); FundsFailure if they cannot pay."""
    cost = _q(order.amount * price)
    fee = _q(cost * fee_rate)
    base_free, base_used = balances.get(base, (ZERO, ZERO))
    quote_free, quote_used = balances.get(quote, (ZERO, ZERO))
    if order.side == "buy":
        if quote_free < cost + fee:
            raise _no_funds(venue, quote, cost + fee, quote_free)
        return {quote: (quote_free - cost - fee, quote_used), base: (base_free + order.amount, base_used)}
    if base_free < order.amount:
        raise _no_funds(venue, base, order.amount, base_free)
    return {base: (base_free - order.amount, base_used), quote: (quote_free + cost - fee, quote_used)}


def _filled(
    order: PaperOrder, price: Decimal, fee_rate: Decimal, *, maker: bool, at_ms: int
) -> tuple[PaperOrder, PaperTrade]:
    cost = _q(order.amount * price)
    fee = _q(cost * fee_rate)
    done = replace(
        order, status="closed", filled=order.amount, cost=cost, average=price, fee=fee, updated_ms=at_ms,
    )
    trade = PaperTrade(
        account_id=order.account_id, id=f"T{order.id}", order_id=order.id, symbol=order.symbol, side=order.side,
        price=price, amount=order.amount, cost=cost, fee=fee, fee_currency=order.fee_currency or "", maker=maker,
        at_ms=at_ms,
    )
    return done, trade


def _ccxt_order(order: PaperOrder) -> dict[str, Any]:
    """The order in ccxt's unified shape (what `order_from_ccxt` reads)."""
    return {
        "id": order.id,
        "clientOrderId": order.client_order_id,
        "symbol": order.symbol,
        "side": order.side,
        "type": order.type,
        "status": order.status,
        "amount": _s(order.amount),
        "filled": _s(order.filled),
        "remaining": _s(order.amount - order.filled) if order.status == "open" else "0",
        "price": _s(order.price) if order.price is not None else (_s(order.average) if order.average else None),
        "average": _s(order.average) if order.average is not None else None,
        "cost": _s(order.cost),
        "fee": {"cost": _s(order.fee), "currency": order.fee_currency},
        "timestamp": order.created_ms,
        "lastTradeTimestamp": order.updated_ms if order.filled else None,
        "trades": [],
        "info": {"paper": True},
    }


def _ccxt_trade(trade: PaperTrade) -> dict[str, Any]:
    return {
        "id": trade.id,
        "order": trade.order_id,
        "symbol": trade.symbol,
        "side": trade.side,
        "price": _s(trade.price),
        "amount": _s(trade.amount),
        "cost": _s(trade.cost),
        "fee": {"cost": _s(trade.fee), "currency": trade.fee_currency},
        "takerOrMaker": "maker" if trade.maker else "taker",
        "timestamp": trade.at_ms,
        "info": {"paper": True},
    }

"""Venue-neutral state of a fake exchange: keys, balances, a price feed, a small matching engine, faults.

The fake venue servers (`bot.sandbox.binance`, `bot.sandbox.kraken`) are thin HTTP skins over one
`ExchangeBook` each: they authenticate a request, translate its parameters into calls on the book, and
render the book's objects (or its `BookError`) in the venue's own JSON shapes and error codes. Keeping the
trading rules here means every venue fake fills, charges fees and refuses orders the same way, and tests can
script the market (``set_price``, ``advance``, ``fill_partially``) without any HTTP.

All amounts are `Decimal`; no float ever enters the book. Nothing here awaits, so every call is atomic on
the event loop.

Public API (stable; the Kraken fake builds on it):

- `MarketSpec` — one market's unified symbol, venue symbol, assets, precision, limits, fees, raw venue record.
- `ExchangeBook(venue, markets, *, futures=False, clock=None)`
  - keys: `add_key`, `revoke_key`, `key`, `authenticate`
  - market data: `market`, `market_by_venue_symbol`, `set_price`, `price`, `ticker`, `load_candles` (the
    symbol's one replayed series), `load_history` (longer candles before it), `advance`, `replay_from`,
    `candles`, `set_liquidity`
  - trading: `place_order`, `cancel_order`, `get_order`, `find_order`, `open_orders`, `closed_orders`,
    `trades`, `fill_partially`
  - futures: `set_leverage`, `set_margin_type`, `set_dual_side`, `positions`, `available_margin`, `mark_price`,
    `set_mark` (the mark follows the last price until set apart)
  - fees: `KeyAccount.fee_mode` ("quote", "received", "bnb"); trade history lag: `lag_trades`, `visible_trades`
  - faults: `inject`, `take_fault`, `take_hold`, `hang_seconds`; request log: `record_request`, `requests`,
    `request_counts`, `log_requests`
- `BookError(kind, message, field=None)` with `kind` one of the `ERROR_KINDS`.
- helpers: `D` (exact Decimal from str/int/float text), `timeframe_ms`, `period_start`; records `Order`,
  `Trade`, `Position`, `KeyAccount`, `Ticker`, `Candle`, `RequestRecord`.

The clock (`clock=`, milliseconds) is the venue's server time: venue apps check request timestamps against it
and candle timestamps are rebased to it.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

Number = Decimal | int | str

#: The kinds of `BookError`; each venue app maps them to its own codes and messages.
ERROR_KINDS = frozenset(
    {
        "unknown_key",  # the API key was never registered
        "revoked",  # the key was revoked (or a "revoked" fault was injected)
        "permission",  # the key may not do this (trade, futures)
        "unknown_symbol",
        "bad_request",  # malformed or missing parameters
        "precision",  # amount not a multiple of the step, or price not of the tick
        "min_amount",  # amount below the market's minimum
        "min_notional",  # cost below the market's minimum notional
        "insufficient_funds",  # spot: free balance too small
        "margin_insufficient",  # futures: available margin too small
        "duplicate_client_id",  # an open order already has this client order id
        "order_not_found",
        "order_not_open",  # cancel of a filled or already canceled order
        "reduce_only",  # a reduce-only order would increase the position
        "no_price",  # no price for the symbol yet: market orders cannot fill
        "post_only",  # a post-only (maker) order would have filled at once as taker
    }
)

#: Where a spot fill's fee is taken (`KeyAccount.fee_mode`).
FEE_MODES = frozenset({"quote", "received", "bnb"})
#: Binance's discount on fees paid in BNB.
BNB_FEE_DISCOUNT = Decimal("0.25")

#: Fault kinds the venue apps consume per request (`inject`, `take_fault`). "timeout" hangs a request BEFORE the
#: venue acts on it; "hold" (`take_hold`) lets the venue act at once and delays only its answer, like a response
#: lost in a slow network: the order is on the book while the client still waits.
FAULT_KINDS = frozenset({"server_error", "timeout", "rate_limit", "invalid_nonce", "revoked", "ban", "hold"})

_TIMEFRAME_MS = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
}


_MONDAY_OFFSET_MS = 4 * 86_400_000


def period_start(timestamp_ms: int, step_ms: int) -> int:
    """Open time of the candle holding `timestamp_ms`; weekly candles open on Monday 00:00 UTC like the venues'."""
    offset = _MONDAY_OFFSET_MS if step_ms == _TIMEFRAME_MS["1w"] else 0
    return timestamp_ms - (timestamp_ms - offset) % step_ms


def timeframe_ms(timeframe: str) -> int:
    """Return the length of a ccxt-style timeframe ("1m" … "1w") in milliseconds."""
    try:
        return _TIMEFRAME_MS[timeframe]
    except KeyError:
        raise BookError("bad_request", f"unsupported timeframe {timeframe!r}") from None


def D(value: Number | float | None) -> Decimal:
    """Convert to Decimal through `str`, so a float literal keeps its printed value, never binary noise."""
    if value is None:
        raise BookError("bad_request", "a number is required")
    if isinstance(value, Decimal):
        return value
    try:
        return Decimal(str(value))
    except ArithmeticError:
        raise BookError("bad_request", f"not a number: {value!r}") from None


class BookError(Exception):
    """A refusal by the fake exchange; `kind` is venue-neutral, the venue app picks the wire error."""

    def __init__(self, kind: str, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        #: For precision errors: "price" or "amount", so venues can name the filter that failed.
        self.field = field


@dataclass(frozen=True)
class MarketSpec:
    """One market as the venue defines it, built from its real recorded market listing."""

    symbol: str  # unified, "BTC/USDT" (futures: "BTC/USDT:USDT")
    venue_symbol: str  # "BTCUSDT", "XBTUSDT"
    base: str
    quote: str
    tick_size: Decimal
    amount_step: Decimal
    min_amount: Decimal = Decimal(0)
    min_cost: Decimal = Decimal(0)
    maker_fee: Decimal = Decimal("0.001")
    taker_fee: Decimal = Decimal("0.001")
    max_amount: Decimal | None = None
    #: Decimal places fees are rounded to (half up), as venues report commissions; None keeps them exact.
    fee_decimals: int | None = None
    #: The venue's own record for this market (exchangeInfo symbol, AssetPairs entry) for the app to serve.
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass
class Position:
    """A futures position; `amount` is signed (long > 0, short < 0) in base units."""

    symbol: str
    position_side: str = "BOTH"  # "BOTH" in one-way mode, "LONG"/"SHORT" in hedge mode
    amount: Decimal = Decimal(0)
    entry_price: Decimal = Decimal(0)
    realized_pnl: Decimal = Decimal(0)
    updated_ms: int = 0


@dataclass
class KeyAccount:
    """One API key and the account behind it (balances, orders' owner, futures settings, permissions)."""

    api_key: str
    secret: str
    can_withdraw: bool = False
    can_trade: bool = True
    can_read: bool = True
    #: Kraken's "Query Open Orders & Trades" / "Query Closed Orders & Trades" permissions, separate from
    #: "Query Funds" there (a key may read its balance and not its orders); Binance has no such split.
    can_query_orders: bool = True
    futures: bool = True
    ip_restrict: bool = False
    revoked: bool = False
    created_ms: int = 0
    trading_authority_expiration_ms: int | None = None
    balances: dict[str, Decimal] = field(default_factory=dict)  # total per asset (futures: wallet)
    locked: dict[str, Decimal] = field(default_factory=dict)  # reserved by open spot orders
    dual_side: bool = False  # futures hedge mode
    leverage: dict[str, int] = field(default_factory=dict)
    margin_type: dict[str, str] = field(default_factory=dict)  # "cross" | "isolated"
    positions: dict[tuple[str, str], Position] = field(default_factory=dict)
    #: Free-form per-venue state (e.g. Kraken's last nonce) so venue apps need no side tables.
    extra: dict[str, Any] = field(default_factory=dict)
    #: Which asset a spot fill's fee is taken in: "quote" (every fee in the quote: Kraken, and this fake's
    #: long-standing default), "received" (Binance without BNB: the asset received — base on a buy, quote on a
    #: sell) or "bnb" (Binance with "pay fees with BNB": BNB at the BNB/quote price, 25% off; quote if unpriced).
    fee_mode: str = "quote"
    #: The first key of the exchange account this key belongs to (itself unless added with `same_account_as`):
    #: every key of one account sees the same balances, orders and trades, as on the real venues.
    owner_key: str | None = None

    @property
    def home(self) -> str:
        return self.owner_key or self.api_key

    def total(self, asset: str) -> Decimal:
        return self.balances.get(asset, Decimal(0))

    def free(self, asset: str) -> Decimal:
        return self.total(asset) - self.locked.get(asset, Decimal(0))


@dataclass
class Order:
    """An order as the book sees it; `status` is "open", "closed" (fully filled) or "canceled"."""

    id: int
    api_key: str
    symbol: str
    side: str  # "buy" | "sell"
    type: str  # "market" | "limit"
    amount: Decimal
    price: Decimal | None
    client_order_id: str | None
    created_ms: int
    updated_ms: int
    status: str = "open"
    filled: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)  # cumulative quote value of fills
    fee: Decimal = Decimal(0)  # cumulative fee, in quote
    quote_cost: Decimal | None = None  # market buy by cost: the quote amount asked for
    reduce_only: bool = False
    position_side: str = "BOTH"
    reserved: Decimal = Decimal(0)  # spot: still-locked amount (quote for buys, base for sells)
    reserved_asset: str = ""
    margin: Decimal = Decimal(0)  # futures: initial margin still held for the unfilled part
    extra: dict[str, Any] = field(default_factory=dict)  # venue-specific fields (userref, timeInForce…)

    @property
    def remaining(self) -> Decimal:
        return self.amount - self.filled

    @property
    def average(self) -> Decimal | None:
        return self.cost / self.filled if self.filled else None


@dataclass(frozen=True)
class Trade:
    """One fill of one order."""

    id: int
    order_id: int
    api_key: str
    symbol: str
    side: str
    price: Decimal
    amount: Decimal
    cost: Decimal
    fee: Decimal
    fee_currency: str
    maker: bool
    time_ms: int
    realized_pnl: Decimal = Decimal(0)
    position_side: str = "BOTH"


@dataclass(frozen=True)
class Ticker:
    """Current price and the statistics of the open candle (24h on a daily feed)."""

    symbol: str
    last: Decimal
    bid: Decimal
    ask: Decimal
    open: Decimal
    high: Decimal
    low: Decimal
    base_volume: Decimal
    quote_volume: Decimal
    timestamp_ms: int


@dataclass(frozen=True)
class Candle:
    """One OHLCV row; `timestamp_ms` is the candle's open time."""

    timestamp_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


@dataclass
class Fault:
    """A pending injected failure; consumed by the next `count` requests whose path contains `path` (and whose
    HTTP method is `method`, if given); a "hold" delays the answer by `seconds` (default: `hang_seconds`)."""

    kind: str
    count: int = 1
    path: str | None = None
    method: str | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class RequestRecord:
    """What a venue app received: tests assert on signatures, keys and that calls happened (or not)."""

    method: str
    path: str
    api_key: str | None
    signature_valid: bool | None  # None: unsigned (public) request
    time_ms: int
    params: dict[str, str] = field(default_factory=dict)
    status: int | None = None


@dataclass
class _Feed:
    """Real candles for one (symbol, timeframe) and the cursor of the currently open one."""

    rows: list[Candle]
    cursor: int
    rebase: bool
    # the open candle's live high/low/close, moved by set_price
    live_high: Decimal
    live_low: Decimal


class _Unset:
    """The default of an optional argument whose None means something (no expiration time)."""


_UNSET = _Unset()


class ExchangeBook:
    """The whole state of one fake venue (spot or futures), driven by venue apps and by tests."""

    def __init__(
        self,
        venue: str,
        markets: Iterable[MarketSpec],
        *,
        futures: bool = False,
        clock: Callable[[], int] | None = None,
        default_leverage: int = 20,
    ) -> None:
        self.venue = venue
        self.futures = futures
        self.markets: dict[str, MarketSpec] = {m.symbol: m for m in markets}
        self._by_venue_symbol = {m.venue_symbol: m for m in self.markets.values()}
        self._clock = clock or (lambda: int(time.time() * 1000))
        self.default_leverage = default_leverage
        self.keys: dict[str, KeyAccount] = {}
        self._orders: dict[int, Order] = {}
        self._orders_by_key: dict[str, list[Order]] = {}
        self._open_by_symbol: dict[str, dict[int, Order]] = {}
        self._trades: list[Trade] = []
        self._trades_by_key: dict[str, list[Trade]] = {}
        self._prices: dict[str, Decimal] = {}
        self._marks: dict[str, Decimal] = {}  # futures marks set apart from the last price (set_mark)
        self._liquidity: dict[str, Decimal | None] = {}
        self._feeds: dict[tuple[str, str], _Feed] = {}  # one per symbol: the series `advance` walks
        self._history: dict[tuple[str, str], list[Candle]] = {}  # longer candles recorded before the feed
        self._next_order_id = 1000001
        self._next_trade_id = 5000001
        #: `lag_trades`: (trade history requests still lagging, first trade id they do not show yet).
        self._trade_lag: tuple[int, int] | None = None
        self.faults: list[Fault] = []
        #: How long a "timeout" fault hangs a request; set it above the client's timeout, small in tests.
        self.hang_seconds: float = 5.0
        self.requests: list[RequestRecord] = []
        #: Keep every request in `requests` (tests); a long benchmark turns this off and reads the counts.
        self.log_requests = True
        #: Requests per (method, path), kept even when `log_requests` is off.
        self.request_counts: Counter[tuple[str, str]] = Counter()

    # ------------------------------------------------------------------ time, keys
    def now_ms(self) -> int:
        return self._clock()

    def add_key(
        self,
        api_key: str,
        secret: str,
        *,
        can_withdraw: bool = False,
        can_trade: bool = True,
        can_read: bool = True,
        futures: bool = True,
        ip_restrict: bool = False,
        balances: dict[str, Number] | None = None,
        trading_authority_expiration_ms: int | None = None,
        dual_side: bool = False,
        fee_mode: str = "quote",
        same_account_as: str | None = None,
    ) -> KeyAccount:
        """Register a key with its permissions and starting balances (default 1000 USDT).

        `same_account_as`: a second key of the account behind that key (the user created a new API key on
        the same exchange account): it shares its balances, positions, orders and trades; `balances` is ignored.
        """
        if same_account_as is not None:
            first = self.keys[same_account_as]
            account = KeyAccount(
                api_key=api_key, secret=secret, can_withdraw=can_withdraw, can_trade=can_trade, can_read=can_read,
                futures=futures, ip_restrict=ip_restrict, created_ms=self.now_ms(),
                trading_authority_expiration_ms=trading_authority_expiration_ms, balances=first.balances,
                locked=first.locked, dual_side=first.dual_side, leverage=first.leverage,
                margin_type=first.margin_type, positions=first.positions, owner_key=first.home,
                fee_mode=first.fee_mode,
            )
            self.keys[api_key] = account
            return account
        if balances is None:
            balances = {"USDT": Decimal(1000)}
        if fee_mode not in FEE_MODES:
            raise ValueError(f"unknown fee mode {fee_mode!r}; one of {sorted(FEE_MODES)}")
        account = KeyAccount(
            fee_mode=fee_mode,
            api_key=api_key,
            secret=secret,
            can_withdraw=can_withdraw,
            can_trade=can_trade,
            can_read=can_read,
            futures=futures,
            ip_restrict=ip_restrict,
            created_ms=self.now_ms(),
            trading_authority_expiration_ms=trading_authority_expiration_ms,
            balances={asset: D(v) for asset, v in balances.items()},
            dual_side=dual_side,
        )
        self.keys[api_key] = account
        return account

    def edit_key(
        self,
        api_key: str,
        *,
        can_withdraw: bool | None = None,
        can_trade: bool | None = None,
        futures: bool | None = None,
        ip_restrict: bool | None = None,
        trading_authority_expiration_ms: int | _Unset | None = _UNSET,
    ) -> KeyAccount:
        """Change a key's restrictions after it was connected, as its owner does on the venue's API page.

        Binance refuses withdrawals on a key without an IP restriction (so turning them on needs one), and an
        unrestricted key's trading permission comes with an expiration time (None removes it).
        """
        account = self.keys[api_key]
        restrict = account.ip_restrict if ip_restrict is None else ip_restrict
        withdraws = account.can_withdraw if can_withdraw is None else can_withdraw
        if withdraws and not restrict and self.venue.startswith("binance"):
            raise ValueError("Binance allows withdrawals only on a key restricted to trusted IPs")
        for name, value in (
            ("can_withdraw", can_withdraw), ("can_trade", can_trade), ("futures", futures), ("ip_restrict", ip_restrict)
        ):
            if value is not None:
                setattr(account, name, value)
        if not isinstance(trading_authority_expiration_ms, _Unset):
            account.trading_authority_expiration_ms = trading_authority_expiration_ms
        return account

    def revoke_key(self, api_key: str) -> None:
        """Make every later request with this key fail as an invalid key."""
        self.keys[api_key].revoked = True

    def key(self, api_key: str | None) -> KeyAccount | None:
        """The account of a key, revoked or not, or None: for signature checks before authorisation."""
        return self.keys.get(api_key) if api_key else None

    def authenticate(self, api_key: str | None, *, require_futures: bool | None = None) -> KeyAccount:
        """Return the key's account or raise `BookError` unknown_key / revoked / permission.

        On a futures book the key must carry the futures permission unless `require_futures=False`
        (Binance's sapi endpoints answer any key).
        """
        account = self.key(api_key)
        if account is None:
            raise BookError("unknown_key", "API key not found")
        if account.revoked:
            raise BookError("revoked", "API key revoked")
        if (self.futures if require_futures is None else require_futures) and not account.futures:
            raise BookError("permission", "key has no futures permission")
        return account

    # ------------------------------------------------------------------ market data
    def market(self, symbol: str) -> MarketSpec:
        try:
            return self.markets[symbol]
        except KeyError:
            raise BookError("unknown_symbol", f"unknown symbol {symbol!r}") from None

    def market_by_venue_symbol(self, venue_symbol: str) -> MarketSpec:
        try:
            return self._by_venue_symbol[venue_symbol]
        except KeyError:
            raise BookError("unknown_symbol", f"unknown symbol {venue_symbol!r}") from None

    def price(self, symbol: str) -> Decimal | None:
        """The last price, or None if neither `set_price` nor `load_candles` gave one."""
        return self._prices.get(symbol)

    def mark_price(self, symbol: str) -> Decimal | None:
        """A futures market's mark price: the last price unless `set_mark` set it apart (Binance values positions,
        unrealised P&L and margin at the mark, not the last trade)."""
        return self._marks.get(symbol) or self._prices.get(symbol)

    def set_mark(self, symbol: str, price: Number | None) -> None:
        """Set the mark price apart from the last price (None: follow it again); the next `set_price` resets it."""
        self.market(symbol)
        if price is None:
            self._marks.pop(symbol, None)
        else:
            self._marks[symbol] = D(price)

    def set_liquidity(self, symbol: str, amount: Number | None) -> None:
        """Cap the base amount that resting orders can fill per price update (None: unlimited)."""
        self._liquidity[symbol] = None if amount is None else D(amount)

    def set_price(self, symbol: str, price: Number) -> list[Trade]:
        """Move the last price; resting limit orders the price reaches fill (as makers, at their price).

        Orders fill in time priority; with `set_liquidity` the total filled per call is capped, which
        leaves later orders (or the rest of one order) open: a partial fill.
        """
        market = self.market(symbol)
        price = D(price)
        if price <= 0:
            raise BookError("bad_request", "price must be positive")
        self._prices[symbol] = price
        self._marks.pop(symbol, None)
        for feed in self._feeds_of(symbol):
            feed.live_high = max(feed.live_high, price)
            feed.live_low = min(feed.live_low, price)
        budget = self._liquidity.get(symbol)
        fills: list[Trade] = []
        for order in sorted(self._open_for(symbol), key=lambda o: o.id):
            crosses = (order.side == "buy" and price <= order.price) or (order.side == "sell" and price >= order.price)
            if not crosses or order.type != "limit":
                continue
            amount = order.remaining if budget is None else min(order.remaining, budget)
            if amount <= 0:
                break
            fills.append(self._fill(order, amount, order.price, maker=True, market=market))
            if budget is not None:
                budget -= amount
        return fills

    def fill_partially(self, order_id: int, amount: Number, price: Number | None = None) -> Trade:
        """Fill part of a resting order now (as a maker, at its limit price unless `price` is given)."""
        order = self.find_order(order_id)
        if order.status != "open":
            raise BookError("order_not_open", f"order {order_id} is {order.status}")
        amount = D(amount)
        if amount <= 0 or amount > order.remaining:
            raise BookError("bad_request", f"cannot fill {amount} of remaining {order.remaining}")
        fill_price = D(price) if price is not None else order.price or self._require_price(order.symbol)
        return self._fill(order, amount, fill_price, maker=True, market=self.market(order.symbol))

    def load_candles(
        self,
        symbol: str,
        timeframe: str,
        rows: Sequence[Sequence[Number | float] | Candle],
        *,
        start: int | None = None,
        rebase: bool = True,
    ) -> None:
        """Feed real candles `[[ts_ms, o, h, l, c, v], …]` (or `Candle`s); the row at `start` becomes the open one.

        This series becomes the symbol's only one (any earlier feed and history are dropped): `advance` walks
        it and the price is its open candle's close. With `rebase` the timestamps are shifted so the open
        candle is the one containing the clock's "now" (values stay real, only time moves), which keeps
        caches keyed on candle close times honest; `rebase=False` serves the recorded timestamps.
        """
        self.market(symbol)
        step = timeframe_ms(timeframe)
        candles = self._parse(rows)
        if any(b.timestamp_ms - a.timestamp_ms != step for a, b in itertools.pairwise(candles)):
            candles = self._regular(candles, step)
        cursor = len(candles) // 2 if start is None else max(0, min(start, len(candles) - 1))
        row = candles[cursor]
        for key in [k for k in (*self._feeds, *self._history) if k[0] == symbol]:
            self._feeds.pop(key, None)
            self._history.pop(key, None)
        self._feeds[(symbol, timeframe)] = _Feed(candles, cursor, rebase, row.high, row.low)
        self._prices[symbol] = row.close

    def load_history(self, symbol: str, timeframe: str, rows: Sequence[Sequence[Number | float] | Candle]) -> None:
        """Add longer candles recorded before the symbol's feed (load that first), served ahead of it.

        A request for `timeframe` (or a multiple of it) gets these rows up to where the feed begins, then the
        feed's own candles aggregated: an hourly trend sees weeks of hours while the feed replays minutes.
        """
        feed_timeframe = self._feed_timeframe(symbol)
        if feed_timeframe is None or timeframe_ms(timeframe) <= timeframe_ms(feed_timeframe):
            raise BookError("bad_request", f"history of {symbol} must be longer than its feed's candles")
        step = timeframe_ms(timeframe)
        self._history[(symbol, timeframe)] = self._regular(self._parse(rows), step)

    def replay_from(self, symbol: str, index: int) -> None:
        """Move the symbol's feed back (or on) to row `index`, which becomes the open candle: a replay again."""
        for (sym, _tf), feed in self._feeds.items():
            if sym == symbol:
                feed.cursor = max(0, min(index, len(feed.rows) - 1))
                row = feed.rows[feed.cursor]
                feed.live_high, feed.live_low = row.high, row.low
                self.set_price(sym, row.close)

    def advance(self, symbol: str | None = None, steps: int = 1) -> bool:
        """Close the open candle and open the next (for one symbol, or all fed symbols).

        The price moves to the new candle's close and resting orders it crosses fill. Returns False
        when a feed had no more rows (its last candle stays open).
        """
        moved = True
        for (sym, _tf), feed in list(self._feeds.items()):
            if symbol is not None and sym != symbol:
                continue
            for _ in range(steps):
                if feed.cursor + 1 >= len(feed.rows):
                    moved = False
                    break
                feed.cursor += 1
                row = feed.rows[feed.cursor]
                feed.live_high, feed.live_low = row.high, row.low
                self.set_price(sym, row.close)
        return moved

    def candles(self, symbol: str, timeframe: str, since: int | None = None, limit: int | None = None) -> list[Candle]:
        """Closed candles plus the open one, oldest first, like an exchange's klines endpoint.

        A timeframe that was not loaded is aggregated from a loaded shorter one that divides it; with
        no data at all the answer is empty (the fake never invents prices).
        """
        self.market(symbol)
        rows = self._served_rows(symbol, timeframe)
        if since is not None:
            rows = [r for r in rows if r.timestamp_ms >= since]
            if limit is not None:
                rows = rows[:limit]
        elif limit is not None:
            rows = rows[-limit:] if limit > 0 else []
        return rows

    def ticker(self, symbol: str) -> Ticker:
        """The last price with the statistics of the open day (of the open candle when the feed is longer)."""
        last = self._require_price(symbol)
        now = self.now_ms()
        feed_timeframe = self._feed_timeframe(symbol)
        if feed_timeframe is not None:
            day = self._served_rows(symbol, "1d") or self._served_rows(symbol, feed_timeframe)
            candle = day[-1]
            volume = candle.volume
            return Ticker(symbol, last, last, last, candle.open, candle.high, candle.low, volume, volume * last, now)
        return Ticker(symbol, last, last, last, last, last, last, Decimal(0), Decimal(0), now)

    # ------------------------------------------------------------------ trading
    def place_order(
        self,
        key: KeyAccount | str,
        symbol: str,
        side: str,
        type: str,
        amount: Number | None = None,
        price: Number | None = None,
        quote_cost: Number | None = None,
        client_order_id: str | None = None,
        *,
        reduce_only: bool = False,
        post_only: bool = False,
        position_side: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Order:
        """Validate and accept an order; a market order (or a marketable limit) fills at once as taker.

        Raises `BookError` for: permission, unknown_symbol, bad_request, precision, min_amount,
        min_notional, insufficient_funds (spot), margin_insufficient (futures), duplicate_client_id,
        reduce_only, no_price, post_only (a post-only order that would take).
        """
        account = self._account(key)
        if not account.can_trade:
            raise BookError("permission", "key cannot trade")
        market = self.market(symbol)
        side, type = side.lower(), type.lower()
        if side not in ("buy", "sell") or type not in ("market", "limit"):
            raise BookError("bad_request", f"unsupported order {side} {type}")
        if client_order_id is not None and any(
            o.client_order_id == client_order_id and o.status == "open"
            for o in self._orders_by_key.get(account.home, ())
        ):
            raise BookError("duplicate_client_id", f"client order id {client_order_id} is in use")
        position_side = self._position_side(account, side, position_side)

        limit_price = None
        if type == "limit":
            if price is None:
                raise BookError("bad_request", "a limit order needs a price")
            limit_price = D(price)
            if limit_price <= 0 or limit_price % market.tick_size:
                raise BookError(
                    "precision", f"price {limit_price} is not a multiple of {market.tick_size}", field="price"
                )
        last = self._prices.get(symbol)
        if type == "market" and last is None:
            raise BookError("no_price", f"no price for {symbol}")

        cost_asked = None
        if quote_cost is not None and amount is None:
            if type != "market" or side != "buy" or self.futures:
                raise BookError("bad_request", "quote cost is only for spot market buys")
            cost_asked = D(quote_cost)
            if cost_asked <= 0:
                raise BookError("bad_request", "quote cost must be positive")
            qty = (cost_asked / last).quantize(market.amount_step, rounding=ROUND_DOWN)
        else:
            if amount is None:
                raise BookError("bad_request", "an amount is required")
            qty = D(amount)
            if qty <= 0 or qty % market.amount_step:
                raise BookError("precision", f"amount {qty} is not a multiple of {market.amount_step}", field="amount")
        if qty < market.min_amount or qty <= 0:
            raise BookError("min_amount", f"amount {qty} is below the minimum {market.min_amount}")
        if market.max_amount is not None and qty > market.max_amount:
            raise BookError("precision", f"amount {qty} is above the maximum {market.max_amount}", field="amount")

        marketable = type == "market" or (
            last is not None and ((side == "buy" and limit_price >= last) or (side == "sell" and limit_price <= last))
        )
        if post_only and marketable:
            raise BookError("post_only", "order would immediately match and take")
        exec_price = last if marketable else limit_price
        notional = qty * exec_price
        if notional < market.min_cost and not reduce_only:
            raise BookError("min_notional", f"notional {notional} is below the minimum {market.min_cost}")

        now = self.now_ms()
        order = Order(
            id=self._next_order_id,
            api_key=account.api_key,
            symbol=symbol,
            side=side,
            type=type,
            amount=qty,
            price=limit_price,
            client_order_id=client_order_id,
            created_ms=now,
            updated_ms=now,
            quote_cost=cost_asked,
            reduce_only=reduce_only,
            position_side=position_side,
            extra=dict(extra or {}),
        )
        fee_rate = market.taker_fee if marketable else max(market.maker_fee, market.taker_fee)
        if self.futures:
            self._reserve_margin(account, market, order, exec_price, fee_rate)
        else:
            self._reserve_spot(account, market, order, exec_price, fee_rate)
        self._next_order_id += 1
        self._orders[order.id] = order
        self._orders_by_key.setdefault(account.home, []).append(order)
        self._open_by_symbol.setdefault(symbol, {})[order.id] = order
        if marketable:
            self._fill(order, qty, exec_price, maker=False, market=market)
        return order

    def cancel_order(
        self,
        key: KeyAccount | str,
        symbol: str | None = None,
        order_id: int | None = None,
        client_order_id: str | None = None,
    ) -> Order:
        """Cancel an open order (by id or client id) and release what it reserved."""
        order = self.get_order(key, symbol, order_id, client_order_id)
        if order.status != "open":
            raise BookError("order_not_open", f"order {order.id} is {order.status}")
        account = self.keys[order.api_key]
        self._release(account, order)
        order.status = "canceled"
        self._open_by_symbol[order.symbol].pop(order.id, None)
        order.updated_ms = self.now_ms()
        return order

    def get_order(
        self,
        key: KeyAccount | str,
        symbol: str | None = None,
        order_id: int | None = None,
        client_order_id: str | None = None,
    ) -> Order:
        """One of the key's orders by id or by client order id (the latest with that id)."""
        account = self._account(key)
        candidates = self._orders_by_key.get(account.home, [])
        if symbol is not None:
            candidates = [o for o in candidates if o.symbol == symbol]
        if order_id is not None:
            candidates = [o for o in candidates if o.id == int(order_id)]
        elif client_order_id is not None:
            candidates = [o for o in candidates if o.client_order_id == client_order_id]
        else:
            raise BookError("bad_request", "an order id or client order id is required")
        if not candidates:
            raise BookError("order_not_found", "order does not exist")
        return max(candidates, key=lambda o: o.id)

    def find_order(self, order_id: int) -> Order:
        """Any order by id, whoever owns it (for tests and scripted fills)."""
        try:
            return self._orders[int(order_id)]
        except KeyError:
            raise BookError("order_not_found", f"order {order_id} does not exist") from None

    def open_orders(self, key: KeyAccount | str, symbol: str | None = None) -> list[Order]:
        account = self._account(key)
        return [
            o
            for o in self._orders_by_key.get(account.home, ())
            if o.status == "open" and (symbol is None or o.symbol == symbol)
        ]

    def closed_orders(self, key: KeyAccount | str, symbol: str | None = None) -> list[Order]:
        """Filled and canceled orders, oldest first."""
        account = self._account(key)
        return [
            o
            for o in self._orders_by_key.get(account.home, ())
            if o.status != "open" and (symbol is None or o.symbol == symbol)
        ]

    def all_orders(self, key: KeyAccount | str, symbol: str | None = None) -> list[Order]:
        account = self._account(key)
        return [o for o in self._orders_by_key.get(account.home, ()) if symbol is None or o.symbol == symbol]

    def trades(self, key: KeyAccount | str, symbol: str | None = None, since: int | None = None) -> list[Trade]:
        """The key's fills, oldest first."""
        account = self._account(key)
        return [
            t
            for t in self._trades_by_key.get(account.home, ())
            if (symbol is None or t.symbol == symbol) and (since is None or t.time_ms >= since)
        ]

    def lag_trades(self, requests: int = 1) -> None:
        """Make the trade history lag the orders: the next `requests` trade-history requests (myTrades,
        userTrades, TradesHistory) do not show the trades made from now on, while the orders already count
        them as filled (as a venue whose trade history is served by a slower replica)."""
        self._trade_lag = (requests, self._next_trade_id)

    def visible_trades(self, trades: list[Trade]) -> list[Trade]:
        """What one trade-history request shows of `trades` (consumes one request of `lag_trades`)."""
        if self._trade_lag is None:
            return trades
        left, first_hidden = self._trade_lag
        self._trade_lag = (left - 1, first_hidden) if left > 1 else None
        return [t for t in trades if t.id < first_hidden]

    # ------------------------------------------------------------------ futures settings
    def set_leverage(self, key: KeyAccount | str, symbol: str, leverage: int) -> int:
        account = self._account(key)
        self.market(symbol)
        if not 1 <= int(leverage) <= 125:
            raise BookError("bad_request", f"leverage {leverage} is not valid")
        account.leverage[symbol] = int(leverage)
        return account.leverage[symbol]

    def leverage_of(self, account: KeyAccount, symbol: str) -> int:
        return account.leverage.get(symbol, self.default_leverage)

    def set_margin_type(self, key: KeyAccount | str, symbol: str, margin_type: str) -> str:
        """Set "cross" or "isolated"; like Binance, refuse a change while the symbol has a position."""
        account = self._account(key)
        self.market(symbol)
        margin_type = margin_type.lower()
        if margin_type == "crossed":
            margin_type = "cross"
        if margin_type not in ("cross", "isolated"):
            raise BookError("bad_request", f"margin type {margin_type!r} is not valid")
        if any(p.amount for (sym, _), p in account.positions.items() if sym == symbol) and (
            self.margin_type_of(account, symbol) != margin_type
        ):
            raise BookError("bad_request", "cannot change the margin type with an open position")
        account.margin_type[symbol] = margin_type
        return margin_type

    def margin_type_of(self, account: KeyAccount, symbol: str) -> str:
        return account.margin_type.get(symbol, "cross")

    def set_dual_side(self, key: KeyAccount | str, dual_side: bool) -> None:
        """Switch hedge mode; like Binance, refuse while positions or open orders exist."""
        account = self._account(key)
        if any(p.amount for p in account.positions.values()) or self.open_orders(account):
            raise BookError("bad_request", "cannot change position mode with open positions or orders")
        account.dual_side = bool(dual_side)

    def positions(self, key: KeyAccount | str) -> list[Position]:
        """A position per (market, side) of the key's mode, flat ones included (as Binance lists them)."""
        account = self._account(key)
        sides = ("LONG", "SHORT") if account.dual_side else ("BOTH",)
        return [self._position(account, sym, ps) for sym in self.markets for ps in sides]

    def unrealized_pnl(self, position: Position) -> Decimal:
        mark = self.mark_price(position.symbol)
        if mark is None or not position.amount:
            return Decimal(0)
        return (mark - position.entry_price) * position.amount

    def used_margin(self, account: KeyAccount) -> Decimal:
        """Initial margin of positions at the mark price plus that held by open orders."""
        total = Decimal(0)
        for position in account.positions.values():
            mark = self.mark_price(position.symbol) or position.entry_price
            total += abs(position.amount) * mark / self.leverage_of(account, position.symbol)
        return total + sum((o.margin for o in self.open_orders(account)), Decimal(0))

    def available_margin(self, account: KeyAccount, asset: str = "USDT") -> Decimal:
        """Wallet + unrealized PnL − used margin: what new orders may use."""
        upnl = sum((self.unrealized_pnl(p) for p in account.positions.values()), Decimal(0))
        return account.total(asset) + upnl - self.used_margin(account)

    # ------------------------------------------------------------------ faults and the request log
    def inject(
        self,
        kind: str,
        *,
        count: int = 1,
        path: str | None = None,
        method: str | None = None,
        seconds: float | None = None,
    ) -> None:
        """Make the next `count` requests (whose path contains `path` and whose method is `method`, if given)
        fail with `kind`; `seconds` is how long a "hold" delays the answer."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(FAULT_KINDS)}")
        self.faults.append(Fault(kind, count, path, method.upper() if method else None, seconds))

    def take_fault(self, path: str, method: str | None = None) -> str | None:
        """Consume and return the first pending fault (other than a hold) matching this request, if any."""
        fault = self._take(path, method, hold=False)
        return fault.kind if fault is not None else None

    def take_hold(self, path: str, method: str | None = None) -> float | None:
        """Consume a pending "hold" for this request: the seconds its answer waits after the book acted on it."""
        fault = self._take(path, method, hold=True)
        if fault is None:
            return None
        return fault.seconds if fault.seconds is not None else self.hang_seconds

    def _take(self, path: str, method: str | None, *, hold: bool) -> Fault | None:
        for fault in self.faults:
            if (fault.kind == "hold") != hold:
                continue
            if fault.path is not None and fault.path not in path:
                continue
            if fault.method is not None and method is not None and fault.method != method.upper():
                continue
            fault.count -= 1
            if fault.count <= 0:
                self.faults.remove(fault)
            return fault
        return None

    def record_request(
        self,
        method: str,
        path: str,
        api_key: str | None,
        signature_valid: bool | None,
        params: dict[str, str] | None = None,
        status: int | None = None,
    ) -> RequestRecord:
        """Append what a venue app received (and answered) to `requests`."""
        record = RequestRecord(method, path, api_key, signature_valid, self.now_ms(), dict(params or {}), status)
        self.request_counts[(method, path)] += 1
        if self.log_requests:
            self.requests.append(record)
        return record

    # ------------------------------------------------------------------ internals
    def _account(self, key: KeyAccount | str) -> KeyAccount:
        return key if isinstance(key, KeyAccount) else self.authenticate(key)

    def _require_price(self, symbol: str) -> Decimal:
        price = self._prices.get(symbol)
        if price is None:
            raise BookError("no_price", f"no price for {symbol}")
        return price

    def _open_for(self, symbol: str) -> list[Order]:
        return list(self._open_by_symbol.get(symbol, {}).values())

    def _position_side(self, account: KeyAccount, side: str, asked: str | None) -> str:
        if not self.futures:
            return "BOTH"
        asked = (asked or "BOTH").upper()
        if account.dual_side and asked not in ("LONG", "SHORT"):
            raise BookError("bad_request", "hedge mode needs positionSide LONG or SHORT")
        if not account.dual_side and asked != "BOTH":
            raise BookError("bad_request", "positionSide must be BOTH in one-way mode")
        return asked

    def _position(self, account: KeyAccount, symbol: str, position_side: str) -> Position:
        key = (symbol, position_side)
        if key not in account.positions:
            account.positions[key] = Position(symbol, position_side)
        return account.positions[key]

    def _reserve_spot(
        self, account: KeyAccount, market: MarketSpec, order: Order, price: Decimal, fee_rate: Decimal
    ) -> None:
        if order.side == "buy":
            asset, need = market.quote, order.amount * price * (1 + fee_rate)
        else:
            asset, need = market.base, order.amount
        if account.free(asset) < need:
            raise BookError("insufficient_funds", f"{asset} free {account.free(asset)} < {need}")
        account.locked[asset] = account.locked.get(asset, Decimal(0)) + need
        order.reserved, order.reserved_asset = need, asset

    def _reserve_margin(
        self, account: KeyAccount, market: MarketSpec, order: Order, price: Decimal, fee_rate: Decimal
    ) -> None:
        position = self._position(account, order.symbol, order.position_side)
        delta = order.amount if order.side == "buy" else -order.amount
        if order.position_side == "LONG" and position.amount + delta < 0:
            raise BookError("reduce_only", "a LONG position cannot go below zero")
        if order.position_side == "SHORT" and position.amount + delta > 0:
            raise BookError("reduce_only", "a SHORT position cannot go above zero")
        reducing = position.amount and (position.amount > 0) != (delta > 0)
        if order.reduce_only and (not reducing or abs(delta) > abs(position.amount)):
            raise BookError("reduce_only", "reduce-only order would increase the position")
        opening = order.amount if not reducing else max(Decimal(0), abs(delta) - abs(position.amount))
        margin = opening * price / self.leverage_of(account, order.symbol)
        fee = order.amount * price * fee_rate
        if self.available_margin(account, market.quote) < margin + fee:
            raise BookError("margin_insufficient", "margin is insufficient")
        order.margin = margin

    def _release(self, account: KeyAccount, order: Order) -> None:
        if order.reserved:
            account.locked[order.reserved_asset] -= order.reserved
            order.reserved = Decimal(0)
        order.margin = Decimal(0)

    def _fill(self, order: Order, amount: Decimal, price: Decimal, *, maker: bool, market: MarketSpec) -> Trade:
        account = self.keys[order.api_key]
        cost = amount * price
        rate = market.maker_fee if maker else market.taker_fee
        fee, fee_currency = self._fee(account, market, order.side, amount, cost, rate)
        realized = Decimal(0)
        if self.futures:
            realized = self._apply_position(account, order, amount, price)
            account.balances[market.quote] = account.total(market.quote) + realized - fee
            if order.margin:
                share = order.margin * amount / order.remaining
                order.margin -= share
        else:
            self._apply_spot(account, market, order, amount, cost, fee, fee_currency)
        now = self.now_ms()
        trade = Trade(
            id=self._next_trade_id,
            order_id=order.id,
            api_key=order.api_key,
            symbol=order.symbol,
            side=order.side,
            price=price,
            amount=amount,
            cost=cost,
            fee=fee,
            fee_currency=fee_currency,
            maker=maker,
            time_ms=now,
            realized_pnl=realized,
            position_side=order.position_side,
        )
        self._next_trade_id += 1
        self._trades.append(trade)
        self._trades_by_key.setdefault(self.keys[order.api_key].home, []).append(trade)
        order.filled += amount
        order.cost += cost
        if fee_currency == market.quote:
            order.fee += fee
        order.updated_ms = now
        if order.remaining <= 0:
            order.status = "closed"
            self._open_by_symbol[order.symbol].pop(order.id, None)
            self._release(account, order)
        return trade

    def _fee(
        self, account: KeyAccount, market: MarketSpec, side: str, amount: Decimal, cost: Decimal, rate: Decimal
    ) -> tuple[Decimal, str]:
        """A fill's fee and the asset it is taken in, by the key's `fee_mode` (futures: always the quote)."""
        fee, currency = cost * rate, market.quote
        if not self.futures and account.fee_mode == "received" and side == "buy":
            fee, currency = amount * rate, market.base
        elif not self.futures and account.fee_mode == "bnb":
            bnb_price = self._prices.get(f"BNB/{market.quote}")
            if bnb_price:
                fee, currency = cost * rate * (1 - BNB_FEE_DISCOUNT) / bnb_price, "BNB"
        if market.fee_decimals is not None:
            fee = fee.quantize(Decimal(1).scaleb(-market.fee_decimals), rounding=ROUND_HALF_UP)
        return fee, currency

    def _apply_spot(
        self,
        account: KeyAccount,
        market: MarketSpec,
        order: Order,
        amount: Decimal,
        cost: Decimal,
        fee: Decimal,
        fee_currency: str,
    ) -> None:
        bal = account.balances
        quote_fee = fee if fee_currency == market.quote else Decimal(0)
        if order.side == "buy":
            spent = cost + quote_fee
            used = min(spent, order.reserved)
            account.locked[market.quote] -= used
            order.reserved -= used
            bal[market.quote] = account.total(market.quote) - spent
            bal[market.base] = account.total(market.base) + amount
        else:
            account.locked[market.base] -= amount
            order.reserved -= amount
            bal[market.base] = account.total(market.base) - amount
            bal[market.quote] = account.total(market.quote) + cost - quote_fee
        if fee_currency != market.quote:
            bal[fee_currency] = account.total(fee_currency) - fee

    def _apply_position(self, account: KeyAccount, order: Order, amount: Decimal, price: Decimal) -> Decimal:
        """Move the position by a fill; return the realized PnL of the part that reduced it."""
        position = self._position(account, order.symbol, order.position_side)
        delta = amount if order.side == "buy" else -amount
        realized = Decimal(0)
        old = position.amount
        if old and (old > 0) != (delta > 0):
            closing = min(abs(delta), abs(old))
            direction = 1 if old > 0 else -1
            realized = (price - position.entry_price) * closing * direction
            position.realized_pnl += realized
        new = old + delta
        if new == 0:
            position.entry_price = Decimal(0)
        elif old == 0 or (old > 0) != (new > 0):
            position.entry_price = price
        elif (old > 0) == (delta > 0):
            position.entry_price = (position.entry_price * abs(old) + price * amount) / abs(new)
        position.amount = new
        position.updated_ms = self.now_ms()
        return realized

    def _feeds_of(self, symbol: str) -> list[_Feed]:
        return [feed for (sym, _), feed in self._feeds.items() if sym == symbol]

    def _feed_timeframe(self, symbol: str) -> str | None:
        return next((tf for (sym, tf) in self._feeds if sym == symbol), None)

    def _served_rows(self, symbol: str, timeframe: str) -> list[Candle]:
        """The symbol's candles of `timeframe`: the feed's own, or aggregated from it behind recorded history.

        Longer candles are built on the recorded time grid (so they equal the venue's own, as the data README
        checks), then shifted as a whole so the open one is the current period: values stay real.
        """
        feed_timeframe = self._feed_timeframe(symbol)
        if feed_timeframe is None:
            return []
        feed = self._feeds[(symbol, feed_timeframe)]
        if timeframe == feed_timeframe:
            return self._visible(symbol, feed_timeframe, feed)
        step, feed_step = timeframe_ms(timeframe), timeframe_ms(feed_timeframe)
        if step < feed_step or step % feed_step:
            return []  # nothing shorter than the data is invented
        rows = self._aggregate(self._live_rows(symbol, feed), step)
        history = self._history_rows(symbol, step)
        if history:
            rows = [r for r in history if r.timestamp_ms < rows[0].timestamp_ms] + rows
        if feed.rebase:
            shift = period_start(self.now_ms(), step) - rows[-1].timestamp_ms
            rows = [Candle(r.timestamp_ms + shift, r.open, r.high, r.low, r.close, r.volume) for r in rows]
        return rows

    def _history_rows(self, symbol: str, step: int) -> list[Candle]:
        """The longest recorded history whose candles make up `step`, aggregated to it."""
        usable = [
            (timeframe_ms(tf), rows)
            for (sym, tf), rows in self._history.items()
            if sym == symbol and timeframe_ms(tf) <= step and step % timeframe_ms(tf) == 0
        ]
        if not usable:
            return []
        history_step, rows = max(usable, key=lambda item: item[0])
        return rows if history_step == step else self._aggregate(rows, step)

    def _live_rows(self, symbol: str, feed: _Feed) -> list[Candle]:
        """The feed's rows up to the open candle, at their recorded times, the open one moved by `set_price`."""
        rows = feed.rows[: feed.cursor + 1]
        last = rows[-1]
        price = self._prices.get(symbol, last.close)
        live = Candle(
            last.timestamp_ms, last.open, max(feed.live_high, price), min(feed.live_low, price), price, last.volume
        )
        return [*rows[:-1], live]

    def _visible(self, symbol: str, timeframe: str, feed: _Feed) -> list[Candle]:
        rows = self._live_rows(symbol, feed)
        if feed.rebase:
            shift = period_start(self.now_ms(), timeframe_ms(timeframe)) - rows[-1].timestamp_ms
            if shift:
                rows = [Candle(r.timestamp_ms + shift, r.open, r.high, r.low, r.close, r.volume) for r in rows]
        return rows

    @staticmethod
    def _parse(rows: Sequence[Sequence[Number | float] | Candle]) -> list[Candle]:
        candles = [
            r if isinstance(r, Candle) else Candle(int(r[0]), D(r[1]), D(r[2]), D(r[3]), D(r[4]), D(r[5])) for r in rows
        ]
        if not candles:
            raise BookError("bad_request", "no candles")
        return candles

    @staticmethod
    def _aggregate(rows: list[Candle], step: int) -> list[Candle]:
        out: list[Candle] = []
        for row in rows:
            start = period_start(row.timestamp_ms, step)
            if out and out[-1].timestamp_ms == start:
                prev = out[-1]
                out[-1] = Candle(
                    start,
                    prev.open,
                    max(prev.high, row.high),
                    min(prev.low, row.low),
                    row.close,
                    prev.volume + row.volume,
                )
            else:
                out.append(Candle(start, row.open, row.high, row.low, row.close, row.volume))
        return out

    @staticmethod
    def _regular(candles: list[Candle], step: int) -> list[Candle]:
        """Keep only rows on the timeframe's grid, sorted and deduplicated (recorded data is sometimes not)."""
        seen: dict[int, Candle] = {}
        for c in candles:
            if c.timestamp_ms % step == 0:
                seen[c.timestamp_ms] = c
        return [seen[t] for t in sorted(seen)]

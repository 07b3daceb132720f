"""Plain, frozen results of the exchange layer: Decimals everywhere, no ccxt dicts leak past the gateway.

Converters take ccxt's unified structures (order, trade, balance, market, position) and keep only what the
engine and services use, so the rest of the bot never depends on ccxt's shapes or on floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bot.exchanges.market_data import to_decimal

ZERO = Decimal(0)


@dataclass(frozen=True)
class BalanceLine:
    free: Decimal
    used: Decimal
    total: Decimal


@dataclass(frozen=True)
class MarketInfo:
    """What the risk gate needs about one market: steps, limits and fees."""

    venue: str
    symbol: str
    venue_symbol: str
    base: str
    quote: str
    type: str  # "spot" | "swap"
    contract: bool
    amount_step: Decimal | None
    price_tick: Decimal | None
    min_amount: Decimal | None
    max_amount: Decimal | None
    min_cost: Decimal | None
    maker_fee: Decimal | None
    taker_fee: Decimal | None
    contract_size: Decimal | None
    active: bool


@dataclass(frozen=True)
class Order:
    venue: str
    id: str | None
    client_order_id: str | None
    symbol: str
    side: str | None
    type: str | None
    status: str | None  # "open" | "closed" | "canceled" | "expired" | "rejected"
    amount: Decimal | None
    filled: Decimal | None
    remaining: Decimal | None
    price: Decimal | None
    average: Decimal | None
    cost: Decimal | None
    fee_cost: Decimal | None
    fee_currency: str | None
    timestamp_ms: int | None
    #: The order's trades when the answer lists them (Binance spot's FULL order response: its `fills`).
    trades: tuple[Trade, ...] = ()
    #: The venue's own name of the market when only that is known (a stream's `BTCUSDT`; `symbol` is then "").
    market_id: str | None = None

    @property
    def is_open(self) -> bool:
        return self.status == "open"


@dataclass(frozen=True)
class Trade:
    venue: str
    id: str | None
    order_id: str | None
    symbol: str
    side: str | None
    price: Decimal | None
    amount: Decimal | None
    cost: Decimal | None
    fee_cost: Decimal | None
    fee_currency: str | None
    maker: bool | None
    timestamp_ms: int | None


@dataclass(frozen=True)
class Position:
    venue: str
    symbol: str
    side: str | None  # "long" | "short"
    contracts: Decimal
    entry_price: Decimal | None
    leverage: Decimal | None
    margin_mode: str | None
    unrealized_pnl: Decimal | None
    hedged: bool | None
    mark_price: Decimal | None = None


def _ts(value: Any) -> int | None:
    return int(value) if value is not None else None


def _fee(data: dict[str, Any]) -> tuple[Decimal | None, str | None]:
    fee = data.get("fee")
    if isinstance(fee, dict) and fee.get("cost") is not None:
        return to_decimal(fee.get("cost")), fee.get("currency")
    fees = data.get("fees") or []
    costs = [f for f in fees if isinstance(f, dict) and f.get("cost") is not None]
    if costs:
        currency = costs[0].get("currency")
        total = sum((to_decimal(f["cost"]) or ZERO for f in costs if f.get("currency") == currency), ZERO)
        return total, currency
    return None, None


def order_from_ccxt(venue: str, data: dict[str, Any]) -> Order:
    fee_cost, fee_currency = _fee(data)
    return Order(
        venue=venue,
        id=str(data["id"]) if data.get("id") is not None else None,
        client_order_id=data.get("clientOrderId"),
        symbol=data.get("symbol") or "",
        side=data.get("side"),
        type=data.get("type"),
        status=data.get("status"),
        amount=to_decimal(data.get("amount")),
        filled=to_decimal(data.get("filled")),
        remaining=to_decimal(data.get("remaining")),
        price=to_decimal(data.get("price")),
        average=to_decimal(data.get("average")),
        cost=to_decimal(data.get("cost")),
        fee_cost=fee_cost,
        fee_currency=fee_currency,
        timestamp_ms=_ts(data.get("timestamp")),
        trades=tuple(trade_from_ccxt(venue, t) for t in data.get("trades") or () if isinstance(t, dict)),
    )


def trade_from_ccxt(venue: str, data: dict[str, Any]) -> Trade:
    fee_cost, fee_currency = _fee(data)
    maker = data.get("takerOrMaker")
    return Trade(
        venue=venue,
        id=str(data["id"]) if data.get("id") is not None else None,
        order_id=str(data["order"]) if data.get("order") is not None else None,
        symbol=data.get("symbol") or "",
        side=data.get("side"),
        price=to_decimal(data.get("price")),
        amount=to_decimal(data.get("amount")),
        cost=to_decimal(data.get("cost")),
        fee_cost=fee_cost,
        fee_currency=fee_currency,
        maker=None if maker is None else maker == "maker",
        timestamp_ms=_ts(data.get("timestamp")),
    )


_BALANCE_META = frozenset({"info", "free", "used", "total", "timestamp", "datetime", "debt"})


def balances_from_ccxt(data: dict[str, Any]) -> dict[str, BalanceLine]:
    """Per-asset free/used/total from a ccxt balance; assets with nothing at all are dropped."""
    result: dict[str, BalanceLine] = {}
    for asset, line in data.items():
        if asset in _BALANCE_META or not isinstance(line, dict):
            continue
        free, used, total = (to_decimal(line.get(k)) for k in ("free", "used", "total"))
        if total is None and free is not None:
            total = free + (used or ZERO)
        if not any((free, used, total)):
            continue
        result[asset] = BalanceLine(free or ZERO, used or ZERO, total or ZERO)
    return result


def _step(value: Any, precision_mode: int) -> Decimal | None:
    if value is None:
        return None
    # ccxt TICK_SIZE mode (4) stores the step itself; DECIMAL_PLACES (2) stores a number of digits.
    if precision_mode == 4:
        return to_decimal(value)
    return Decimal(1).scaleb(-int(value))


def market_from_ccxt(venue: str, data: dict[str, Any], precision_mode: int) -> MarketInfo:
    limits = data.get("limits") or {}
    precision = data.get("precision") or {}
    return MarketInfo(
        venue=venue,
        symbol=data["symbol"],
        venue_symbol=str(data.get("id")),
        base=data.get("base") or "",
        quote=data.get("quote") or "",
        type=data.get("type") or "spot",
        contract=bool(data.get("contract")),
        amount_step=_step(precision.get("amount"), precision_mode),
        price_tick=_step(precision.get("price"), precision_mode),
        min_amount=to_decimal((limits.get("amount") or {}).get("min")),
        max_amount=to_decimal((limits.get("amount") or {}).get("max")),
        min_cost=to_decimal((limits.get("cost") or {}).get("min")),
        maker_fee=to_decimal(data.get("maker")),
        taker_fee=to_decimal(data.get("taker")),
        contract_size=to_decimal(data.get("contractSize")),
        active=data.get("active") is not False,
    )


def position_from_ccxt(venue: str, data: dict[str, Any]) -> Position:
    return Position(
        venue=venue,
        symbol=data.get("symbol") or "",
        side=data.get("side"),
        contracts=to_decimal(data.get("contracts")) or ZERO,
        entry_price=to_decimal(data.get("entryPrice")),
        leverage=to_decimal(data.get("leverage")),
        margin_mode=data.get("marginMode"),
        unrealized_pnl=to_decimal(data.get("unrealizedPnl")),
        hedged=data.get("hedged"),
        mark_price=to_decimal(data.get("markPrice")),
    )

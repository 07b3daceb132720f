"""Plain dataclasses the repositories return; money fields are Decimal, times are aware UTC datetimes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def from_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def dec(value: str | None) -> Decimal | None:
    return Decimal(value) if value is not None else None


@dataclass(frozen=True)
class User:
    id: int
    chat_id: int
    active: bool
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Account:
    id: int
    user_id: int
    venue: str
    label: str
    status: str
    testnet: bool
    permissions: tuple[str, ...]
    created_at: datetime
    #: Keyed fingerprint of the exchange account behind the key (Binance uid); None when not known.
    owner_ref: str | None = None


@dataclass(frozen=True)
class SealedCredential:
    """Ciphertext of an API key pair; the data key that opens it lives in the separate key store."""

    account_id: int
    dek_id: str
    nonce: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return (
            f"SealedCredential(account_id={self.account_id}, dek_id={self.dek_id!r}, "
            f"ciphertext=<{len(self.ciphertext)} bytes>)"
        )


@dataclass(frozen=True)
class Strategy:
    id: int
    user_id: int
    account_id: int
    kind: str
    symbol: str
    quote: str
    budget: Decimal
    params: dict[str, Any]
    state: dict[str, Any]
    status: str
    pause_reason: str | None
    spent: Decimal
    received: Decimal
    fees: Decimal
    last_slot: datetime | None
    next_run: datetime | None
    alerts: str
    created_at: datetime
    name: str | None = None  # the user's optional name for it (name= at /allocate)
    paused_by: str | None = None  # a paused strategy's pauser: user | panic | engine (storage.strategies)
    venue: str | None = None  # its account's venue (read with it; not a column of its own)


@dataclass(frozen=True)
class Order:
    id: int
    strategy_id: int
    account_id: int
    client_order_id: str
    tag: str
    symbol: str
    side: str
    type: str
    amount: Decimal | None
    price: Decimal | None
    cost: Decimal | None
    reserved: Decimal
    status: str
    exchange_order_id: str | None
    filled: Decimal
    filled_cost: Decimal
    fee: Decimal
    error: str | None
    created_at: datetime
    reduce_only: bool = False  # futures: may only reduce the position (sent as reduceOnly; reserves nothing)


@dataclass(frozen=True)
class Fill:
    id: int
    order_id: int
    strategy_id: int
    trade_key: str
    side: str
    amount: Decimal
    price: Decimal
    cost: Decimal
    fee: Decimal
    fee_currency: str | None
    at: datetime


@dataclass(frozen=True)
class Alert:
    id: int
    user_id: int
    chat_id: int
    kind: str
    text: str
    silent: bool
    status: str
    attempts: int
    created_at: datetime | None = None
    sent_at: datetime | None = None
    error: str | None = None  # the last failure, kept on undeliverable alerts
    has_photo: bool = False  # sent as a photo with `text` as its caption (`OutboxRepository.photo` reads it)
    buttons: tuple[tuple[tuple[str, str], ...], ...] = ()  # inline keyboard rows of (label, callback data)


def dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class StoredAsset:
    """One asset of an account's last fetched balance, valued in the account's quote when a price was known."""

    asset: str
    amount: Decimal
    value: Decimal | None


@dataclass(frozen=True)
class StoredPosition:
    """One open futures position as the venue last reported it (size unsigned; `side` long or short)."""

    symbol: str
    side: str
    size: Decimal
    entry: Decimal | None
    mark: Decimal | None
    unrealised: Decimal | None
    leverage: Decimal | None = None
    step: Decimal | None = None  # the market's amount step and price tick, to show figures as the venue does
    tick: Decimal | None = None

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[-1].split(":")[0]


@dataclass(frozen=True)
class BalanceSnapshot:
    """The balances (and futures positions) last fetched for an account, and when."""

    account_id: int
    assets: tuple[StoredAsset, ...]
    positions: tuple[StoredPosition, ...] | None  # None: not read with these balances (a spot account, /connect)
    fetched_at: datetime


@dataclass(frozen=True)
class PaperOrder:
    """An order of a Paper account, kept by Strata (`bot.exchanges.paper` fills it on public prices)."""

    account_id: int
    id: str
    client_order_id: str | None
    symbol: str
    side: str  # "buy" | "sell"
    type: str  # "market" | "limit"
    amount: Decimal
    price: Decimal | None
    status: str  # "open" | "closed" | "canceled"
    filled: Decimal
    cost: Decimal
    average: Decimal | None
    fee: Decimal
    fee_currency: str | None
    #: What a resting order holds back from `free` (quote for a buy, base for a sell) until it fills or ends.
    reserved_asset: str | None
    reserved: Decimal
    created_ms: int
    updated_ms: int


@dataclass(frozen=True)
class PaperTrade:
    """One fill of a Paper order."""

    account_id: int
    id: str
    order_id: str
    symbol: str
    side: str
    price: Decimal
    amount: Decimal
    cost: Decimal
    fee: Decimal
    fee_currency: str
    maker: bool
    at_ms: int

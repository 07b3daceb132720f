"""What Strata knows of one venue, in one object: a capability table plus a few overridable methods.

Each venue module (`binance.py`, `binanceusdm.py`, `kraken.py`) builds one `VenueAdapter` (or a subclass
overriding the methods where the venue differs) and the registry (`bot.exchanges.venues`) hands it to whoever
asks. The engine, the services, the handlers and the rest of the exchange layer ask the adapter instead of
comparing venue ids, so adding a venue is one new module, its registration and its fake.

This package imports nothing above the exchange layer's leaf modules (`failures`, `keys`): everything that
needs a venue's knowledge imports it, never the other way round.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from bot.exchanges.failures import Action, ExchangeFailure, OrderNotFoundFailure
from bot.exchanges.keys import MSG_UNVERIFIABLE, KeyCheck, KeyHealth, KeyRejected

#: Runs one signed call with the key being checked on a pooled client, exactly once, and raises our
#: `ExchangeFailure` (never ccxt's) when it fails: `await once(lambda ex: ex.fetch_balance())`.
OnceCall = Callable[[Callable[[Any], Awaitable[Any]]], Awaitable[Any]]
#: Runs one signed call with retries (the gateway's private path); same contract as `OnceCall`.
PrivateCall = OnceCall


@dataclass(frozen=True)
class WeightRule:
    """Request weight per IP (Binance): every account of the process shares one per-minute budget."""

    limit_per_minute: int
    #: Venue weight per unit of ccxt's endpoint cost (ccxt scales its cost tables to its own assumed limit).
    weight_per_cost: float
    #: Endpoints whose ccxt cost understates the venue's documented weight: (ccxt api group, path) → weight.
    overrides: Mapping[tuple[str, str], int] = field(default_factory=dict)
    #: ccxt api groups with limits of their own, much larger, never charged (Binance `sapi`: key permissions).
    uncharged_api_prefixes: tuple[str, ...] = ()
    #: The response header carrying the server's own count for the current minute (lower-case).
    used_weight_header: str | None = None
    #: The per-IP limit of the uncharged groups themselves (Binance `sapi`: 12,000 per minute per endpoint),
    #: charged to a budget of their own; None leaves them uncounted.
    side_limit_per_minute: int | None = None
    #: Venue weight per unit of ccxt's cost in those groups (ccxt's `sapi` costs are a tenth of the weight).
    side_weight_per_cost: float = 1.0
    #: The response header carrying the server's count of those groups (lower-case).
    side_used_weight_header: str | None = None

    def weight(self, api_name: str, path: str, cost: float) -> int | None:
        """The weight of one request (at least 1), or None for an uncharged api group."""
        if self.uncharged_api_prefixes and api_name.startswith(self.uncharged_api_prefixes):
            return None
        return self.overrides.get((api_name, path)) or max(1, math.ceil(cost * self.weight_per_cost - 1e-9))

    def side_weight(self, api_name: str, cost: float) -> int | None:
        """The weight of one request of an uncharged group on its own budget, or None when it has none."""
        if self.side_limit_per_minute is None or not api_name.startswith(self.uncharged_api_prefixes):
            return None
        return max(1, math.ceil(cost * self.side_weight_per_cost - 1e-9))


@dataclass(frozen=True)
class KeyCounterRule:
    """A call counter per key (Kraken): private calls add points that decay; public calls share a per-host
    token bucket. Only these two ccxt api groups are charged."""

    #: ccxt's private cost units per counter point (Kraken: Balance costs 3 → +1, TradesHistory 6 → +2).
    cost_per_point: float
    private_api: str = "private"
    public_api: str = "public"


@dataclass(frozen=True, kw_only=True)
class VenueAdapter:
    """One venue's capabilities and rules. Subclasses override the methods where a venue differs."""

    # --- who it is ------------------------------------------------------------------------------------------
    #: Strata's venue id (stored with every account; ccxt's id for the real venues).
    id: str
    #: The human name on buttons and in messages.
    name: str
    #: How to create a key on the venue, shown by /connect (HTML).
    key_guide: str
    #: What the venue calls the two halves of a key: the API key and its secret ("private key" on Kraken).
    key_names: tuple[str, str] = ("API key", "secret key")
    #: Offered by /connect as an exchange to send a key for (Paper accounts have their own button).
    connectable: bool = True
    #: Simulated (Paper): no key, balances kept by Strata, orders filled on `price_source`'s public prices.
    simulated: bool = False
    #: The venue whose public prices, markets and candles this venue uses (itself when None).
    price_source: str | None = None
    #: The base of its account labels (`paper`, `paper-2`…); the venue id when None.
    label_base: str | None = None

    # --- what it can do -------------------------------------------------------------------------------------
    #: A derivatives venue: holds positions, not coins; orders sized in base (no cost orders).
    futures: bool = False
    #: Whether a strategy can sell what it does not hold (open a short).
    can_short: bool = False
    order_types: tuple[str, ...] = ("market", "limit")
    #: The taker fee of the entry tier, as the venue publishes it: the risk gate reserves at least this much.
    entry_taker_fee: Decimal
    #: The maker fee of the entry tier, when the venue's market data says otherwise (Paper charges it).
    entry_maker_fee: Decimal | None = None
    #: Strategy kinds the venue cannot run → the reason /allocate gives.
    unsupported: Mapping[str, str] = field(default_factory=dict)

    # --- how ccxt talks to it -------------------------------------------------------------------------------
    ccxt_id: str
    #: ccxt constructor options: only the market types we trade, no key-dependent calls in load_markets.
    ccxt_options: Mapping[str, Any] = field(default_factory=dict)
    #: ccxt's testnet exists for it (`set_sandbox_mode(True)`; usable with STRATA_SANDBOX=1).
    testnet: bool = False
    #: Signs with a per-key nonce (Kraken), not a timestamp: one key's private calls are serialised and share
    #: one nonce source, and a RESYNC bumps the key's nonce instead of re-measuring the venue's clock.
    nonce_per_key: bool = False

    # --- whose account a key opens --------------------------------------------------------------------------
    #: Venues of one family share exchange accounts (a Binance uid is the same on spot and USD-M).
    owner_family: str
    #: The family's name in messages about "the same exchange account".
    owner_name: str
    #: Whether the venue names the account behind a key (Binance's uid); if not, orders prove the owner.
    names_owner: bool = False

    # --- request budget -------------------------------------------------------------------------------------
    #: Weight per IP (Binance), or None.
    weight: WeightRule | None = None
    #: Counter per key (Kraken), or None.
    key_counter: KeyCounterRule | None = None
    #: The weight of listing open orders: (one symbol, all symbols at once); None when not weight-based.
    open_orders_weights: tuple[int, int] | None = None

    # --- orders and fills -----------------------------------------------------------------------------------
    #: Listing open orders is cheaper one symbol at a time (Binance); otherwise one call lists all (Kraken).
    open_orders_per_symbol: bool = True
    #: Orders gone from the open list are looked up in one closed-orders listing (a per-key counter makes
    #: two lookups per order too dear), not one by one by client order id.
    closed_orders_in_one_call: bool = False
    #: Fills are recorded trade by trade, keyed by trade id (the venue's orders carry no fee of their own);
    #: otherwise from the order's cumulative totals.
    fills_by_trade: bool = False
    #: A market buy by cost also needs the cost as its amount (ccxt formats Kraken's `volume` first).
    cost_buy_needs_amount: bool = False
    #: The parameter naming our client order id when an order is fetched or cancelled by it.
    client_id_param: str = "clientOrderId"

    # --- user-data stream ------------------------------------------------------------------------------------
    #: The protocol of the venue's user-data stream (a name in `bot.exchanges.streams.PROTOCOLS`), or None:
    #: fills are polled only.
    user_stream: str | None = None
    #: The stream's WebSocket URL (its origin follows `STRATA_EXCHANGE_URLS`, ws:// for http://), and on the testnet.
    stream_url: str | None = None
    stream_testnet_url: str | None = None

    # --- what the chat offers -------------------------------------------------------------------------------
    #: Quote assets a rebalance budget can be held in (buttons).
    rebalance_quotes: tuple[str, ...] = ("USDT",)
    #: Markets offered as buttons by the guided /allocate.
    default_markets: tuple[str, ...] = ("BTC/USDT",)
    #: The currency an account's assets are valued in.
    valuation_quote: str = "USDT"

    # --- keys -----------------------------------------------------------------------------------------------
    #: What the user is told when the venue rejects a key.
    invalid_key_message: str = "The exchange rejected this key. Check it and send it again."

    @property
    def market_venue(self) -> str:
        """The venue whose public market data (markets, tickers, candles) this venue trades on."""
        return self.price_source or self.id

    @property
    def label(self) -> str:
        """The base of this venue's account labels."""
        return self.label_base or self.id

    # --- overridable rules ----------------------------------------------------------------------------------

    def is_valid_client_order_id(self, value: str) -> bool:
        """Whether the venue accepts `value` as a client order id."""
        raise NotImplementedError

    def market_symbol(self, symbol: str) -> str:
        """The ccxt symbol of a market as users write it (`BTC/USDT`)."""
        return symbol

    def reduce_only_params(self, reduce_only: bool) -> dict[str, object] | None:
        """Order parameters of a closing order the risk gate let through as reduce-only."""
        return None

    def trade_query_params(self, order_id: str | None, from_id: str | None) -> dict[str, str]:
        """Parameters of a trade listing narrowed to one order, or paged from one trade id (if supported)."""
        return {}

    async def find_order_by_client_id(self, private: PrivateCall, symbol: str, client_order_id: str) -> Any:
        """The venue's raw (ccxt) order with this client id, open or closed, or None if it has none."""
        try:
            return await private(lambda ex: ex.fetch_order(None, symbol, {self.client_id_param: client_order_id}))
        except OrderNotFoundFailure:
            return None

    # errors (see `bot.exchanges.errors.diagnose` for the order in which these are asked)

    def venue_code(self, message: str) -> str | None:
        """The venue's own error code quoted in a ccxt message, if any."""
        return None

    def code_action(self, code: str, message: str) -> Action | None:
        """The action for one of the venue's error codes."""
        return None

    def message_action(self, lowered: str) -> Action | None:
        """The action for a known message text ccxt raised without the code (lower-cased message)."""
        return None

    def code_reason(self, code: str) -> str | None:
        """A safe short reason when the code says it all (Kraken's codes are texts)."""
        return None

    def is_duplicate_client_id(self, code: str | None, detail: str) -> bool:
        """Whether a refusal says the client order id is already in use (so the order exists)."""
        return False

    # keys (see `bot.exchanges.key_check`: format first, then a balance call, then these)

    def check_api_key(self, key: str) -> None:
        """Raise `KeyRejected` for an API key text that can never be valid here (no network call)."""
        raise KeyRejected("unsupported", f"{self.id} is not an exchange Strata can connect to.")

    def check_secret(self, secret: str) -> None:
        """Raise `KeyRejected` for a secret text that can never be valid here (no network call)."""

    async def explain_balance_rejection(self, once: OnceCall, failure: ExchangeFailure, *, testnet: bool) -> None:
        """Raise a more precise `KeyRejected` for a key the balance call refused, when the venue can tell."""

    async def check_permissions(self, once: OnceCall, balances: dict[str, Decimal], *, testnet: bool) -> KeyCheck:
        """Prove the key cannot withdraw (fail closed: raise `KeyRejected` on any doubt)."""
        raise KeyRejected("unverifiable", MSG_UNVERIFIABLE)

    async def read_owner_id(self, once: OnceCall, balance_info: Any) -> str | None:
        """The exchange account behind the key (None when the venue names none, or on any failure)."""
        return None

    async def authenticates(self, once: OnceCall, *, testnet: bool) -> bool:
        """Whether a rejected key is accepted again, by the venue's cheapest signed call (False on any failure).

        True without a call where there is no cheap one (the caller then runs the full key check)."""
        return True

    async def check_health(self, once: OnceCall, *, testnet: bool, now: datetime) -> KeyHealth | None:
        """What a connected key may do now, by the venue's cheapest signed call; None when the venue offers no
        such call (nothing is checked). A rejected key or an unreachable venue raises `ExchangeFailure`, which
        the caller handles as it would on any signed call."""
        return None

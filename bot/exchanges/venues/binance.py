"""Binance Spot (`binance`): weight per IP, HMAC keys checked through `apiRestrictions`, a uid per account.

The `BinanceFamily` adapter is shared with Binance USD-M futures (`binanceusdm.py`), which overrides what
differs: one exchange account (uid) opens both, with the same error codes, client order id rule and key
permission listing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bot.exchanges.failures import Action, ExchangeFailure, UnknownFailure
from bot.exchanges.keys import (
    MSG_UNAVAILABLE,
    MSG_UNVERIFIABLE,
    MSG_WITHDRAW,
    KeyCheck,
    KeyHealth,
    KeyRejected,
)
from bot.exchanges.venues.base import OnceCall, VenueAdapter, WeightRule

# --- error codes -------------------------------------------------------------------------------------------

BINANCE_CODES: dict[str, Action] = {
    # authentication / permission
    "-1002": Action.AUTH,  # You are not authorized to execute this request.
    "-1022": Action.AUTH,  # Signature for this request is not valid.
    "-2014": Action.AUTH,  # API-key format invalid.
    "-2015": Action.AUTH,  # Invalid API-key, IP, or permissions for action.
    "-2008": Action.AUTH,  # Invalid Api-Key ID.
    "-4056": Action.AUTH,  # futures: HMAC/API key not valid
    # clock
    "-1021": Action.RESYNC,  # Timestamp for this request is outside of the recvWindow.
    # rate limits
    "-1003": Action.BACKOFF,  # Too much request weight used / IP banned until …
    "-1015": Action.BACKOFF,  # Too many new orders.
    # transient
    "-1000": Action.RETRY,  # An unknown error occurred while processing the request.
    "-1001": Action.RETRY,  # Internal error; unable to process your request.
    "-1006": Action.RETRY,  # Unexpected response from the message bus.
    "-1007": Action.RETRY,  # Timeout waiting for response from backend server.
    "-1008": Action.RETRY,  # Server is currently overloaded.
    # funds
    "-2018": Action.FUNDS,  # Balance is insufficient.
    "-2019": Action.FUNDS,  # Margin is insufficient.
    # invalid orders / parameters
    "-1013": Action.INVALID_ORDER,  # Filter failure: NOTIONAL / LOT_SIZE / Invalid quantity.
    "-1100": Action.INVALID_ORDER,
    "-1101": Action.INVALID_ORDER,
    "-1102": Action.INVALID_ORDER,
    "-1104": Action.INVALID_ORDER,
    "-1106": Action.INVALID_ORDER,
    "-1111": Action.INVALID_ORDER,  # Precision is over the maximum defined for this asset.
    "-1116": Action.INVALID_ORDER,
    "-1117": Action.INVALID_ORDER,
    "-1121": Action.INVALID_ORDER,  # Invalid symbol.
    "-2022": Action.INVALID_ORDER,  # ReduceOnly Order is rejected.
    "-4003": Action.INVALID_ORDER,
    "-4061": Action.INVALID_ORDER,  # position side does not match the account's mode
    "-4164": Action.INVALID_ORDER,  # futures: notional below the minimum
    "-4116": Action.INVALID_ORDER,  # futures: ClientOrderId is duplicated.
    # unknown orders
    "-2011": Action.NOT_FOUND,  # Unknown order sent.
    "-2013": Action.NOT_FOUND,  # Order does not exist.
}

#: Messages ccxt raises WITHOUT the code (it matched the message text first), most specific first.
BINANCE_MESSAGES: tuple[tuple[str, Action], ...] = (
    ("insufficient balance", Action.FUNDS),
    ("balance is insufficient", Action.FUNDS),
    ("margin is insufficient", Action.FUNDS),
    ("invalid api-key", Action.AUTH),
    ("api-key format invalid", Action.AUTH),
    ("api key does not exist", Action.AUTH),
    ("signature for this request is not valid", Action.AUTH),
    ("not authorized to execute", Action.AUTH),
    ("rest api trading is not enabled", Action.AUTH),
    ("this account may not place or cancel orders", Action.AUTH),
    ("you don't have permission", Action.AUTH),
    ("timestamp for this request", Action.RESYNC),
    ("too much request weight", Action.BACKOFF),
    ("too many requests", Action.BACKOFF),
    ("way too much request weight", Action.BACKOFF),
    ("unknown order sent", Action.NOT_FOUND),
    ("order does not exist", Action.NOT_FOUND),
    ("filter failure", Action.INVALID_ORDER),
)

_CODE = re.compile(r'"code"\s*:\s*"?(-\d+)')
#: `newClientOrderId` (spot and USD-M).
_CLIENT_ORDER_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_ALNUM = re.compile(r"^[A-Za-z0-9]+$")

KEY_REJECTED = (
    "Binance rejected this key (invalid key or secret, the key was deleted, or your IP whitelist "
    "does not include this server). Check the key in API Management and send it again."
)
MSG_TESTNET = (
    "Testnet account: the exchange's testnet cannot show key permissions, so the "
    "withdrawal check did not run. Never use a real-money key here."
)


#: Binance's per-IP weight limit of each IP-limited `sapi` endpoint, per minute.
SAPI_IP_LIMIT = 12_000


def weight_rule(
    limit_per_minute: int, weight_per_cost: float, overrides: Mapping[tuple[str, str], int] | None = None
) -> WeightRule:
    """Binance's weight per IP, the server's own count in `X-MBX-USED-WEIGHT-1M`. `sapi` (key permissions) is
    not charged there: each IP-limited `sapi` endpoint has its own 12,000 per minute (counted in
    `X-SAPI-USED-IP-WEIGHT-1M`), a side budget here (ccxt's `sapi` costs are a tenth of the weight)."""
    return WeightRule(
        limit_per_minute=limit_per_minute,
        weight_per_cost=weight_per_cost,
        overrides=dict(overrides or {}),
        uncharged_api_prefixes=("sapi",),
        used_weight_header="x-mbx-used-weight-1m",
        side_limit_per_minute=SAPI_IP_LIMIT,
        side_weight_per_cost=10.0,
        side_used_weight_header="x-sapi-used-ip-weight-1m",
    )


def _check_key_part(name: str, value: str) -> None:
    # Real Binance HMAC keys and secrets are 64 letters and digits; allow some slack, no other characters.
    if not _ALNUM.match(value) or not 32 <= len(value) <= 128:
        raise KeyRejected(
            "malformed",
            f"That {name} does not look like a Binance one (64 letters and digits). "
            "Copy it again from the API Management page.",
        )


@dataclass(frozen=True, kw_only=True)
class BinanceFamily(VenueAdapter):
    """Binance's rules, shared by spot and USD-M futures; a venue names the key permission it trades with."""

    # One exchange account (uid) behind spot and USD-M; both on ccxt's testnet; fees only with the trades.
    testnet: bool = True
    owner_family: str = "binance"
    owner_name: str = "Binance"
    names_owner: bool = True
    fills_by_trade: bool = True
    client_id_param: str = "origClientOrderId"
    default_markets: tuple[str, ...] = ("BTC/USDT", "ETH/USDT")
    invalid_key_message: str = KEY_REJECTED
    #: The `apiRestrictions` flag the key needs to trade here, and the refusal when it is off.
    trading_permission: str
    trading_refusal: tuple[str, str]
    #: The `apiRestrictions` field saying when Binance takes this venue's trading away from an unrestricted
    #: key (spot and margin only), or None.
    trading_expiry_field: str | None = None

    def is_valid_client_order_id(self, value: str) -> bool:
        return bool(_CLIENT_ORDER_ID.match(value))

    def trade_query_params(self, order_id: str | None, from_id: str | None) -> dict[str, str]:
        params: dict[str, str] = {}
        params.update({"orderId": order_id} if order_id is not None else {})
        params.update({"fromId": from_id} if from_id is not None else {})
        return params

    # errors

    def venue_code(self, message: str) -> str | None:
        match = _CODE.search(message)
        return match.group(1) if match else None

    def code_action(self, code: str, message: str) -> Action | None:
        if code == "-2010":  # NEW_ORDER_REJECTED: the reason is in the text
            lowered = message.lower()
            return Action.FUNDS if "insufficient" in lowered else Action.INVALID_ORDER
        return BINANCE_CODES.get(code)

    def message_action(self, lowered: str) -> Action | None:
        return next((act for text, act in BINANCE_MESSAGES if text in lowered), None)

    def is_duplicate_client_id(self, code: str | None, detail: str) -> bool:
        if code == "-4116":
            return True
        return code == "-2010" and "duplicate" in detail.lower()

    # keys

    def check_api_key(self, key: str) -> None:
        _check_key_part("API key", key)

    def check_secret(self, secret: str) -> None:
        _check_key_part("secret", secret)

    async def check_permissions(self, once: OnceCall, balances: dict[str, Decimal], *, testnet: bool) -> KeyCheck:
        """`GET /sapi/v1/account/apiRestrictions`: withdrawals off, this venue's trading on; on the testnet
        (no `sapi`) the account is marked testnet with a visible note."""
        if testnet:
            return KeyCheck(balances, permissions=["read"], warnings=[MSG_TESTNET], testnet=True)
        try:
            restrictions = await once(lambda ex: ex.sapi_get_account_apirestrictions())
        except ExchangeFailure as failure:
            if failure.action in (Action.RETRY, Action.BACKOFF):
                raise KeyRejected("unavailable", MSG_UNAVAILABLE) from None
            if failure.action is Action.AUTH:
                raise KeyRejected("invalid_key", self.invalid_key_message) from None
            raise KeyRejected("unverifiable", MSG_UNVERIFIABLE) from None
        if not isinstance(restrictions, dict) or "enableWithdrawals" not in restrictions:
            raise KeyRejected("unverifiable", MSG_UNVERIFIABLE)
        if restrictions.get("enableWithdrawals") is not False:
            raise KeyRejected("withdraw_enabled", MSG_WITHDRAW)
        permissions = ["read"] if restrictions.get("enableReading") else []
        if restrictions.get("enableSpotAndMarginTrading"):
            permissions.append("spot_trading")
        if restrictions.get("enableFutures"):
            permissions.append("futures_trading")
        if not restrictions.get(self.trading_permission):
            raise KeyRejected(*self.trading_refusal)
        warnings = []
        if not restrictions.get("ipRestrict"):
            warning = (
                "This key is not restricted to an IP address. Binance disables trading on unrestricted keys "
                "after a while; restrict it to this server's IP in API Management."
            )
            expires = restrictions.get("tradingAuthorityExpirationTime")
            if expires:
                when = datetime.fromtimestamp(int(expires) / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
                warning += f" Trading on this key is allowed until {when}."
            warnings.append(warning)
        return KeyCheck(balances, permissions=permissions, warnings=warnings, testnet=False)

    async def read_owner_id(self, once: OnceCall, balance_info: Any) -> str | None:
        """The uid of the key's account: in spot's account answer (the balance call's), else asked of that
        spot endpoint (`GET /api/v3/account`, weight 20). Never refuses a key: None on any failure."""
        info = balance_info
        if not isinstance(info, dict) or "uid" not in info:
            try:
                info = await once(lambda ex: ex.private_get_account())
            except ExchangeFailure:
                return None
        uid = info.get("uid") if isinstance(info, dict) else None
        return str(uid) if uid not in (None, "") else None

    async def authenticates(self, once: OnceCall, *, testnet: bool) -> bool:
        """`apiRestrictions` (weight 1 on the sapi budget, not the one trading uses); the testnet has none."""
        if testnet:
            return True
        try:
            await once(lambda ex: ex.sapi_get_account_apirestrictions())
        except ExchangeFailure:
            return False
        return True

    async def check_health(self, once: OnceCall, *, testnet: bool, now: datetime) -> KeyHealth | None:
        """`GET /sapi/v1/account/apiRestrictions` (weight 1 on the sapi budget): withdrawals, this venue's trading
        permission, and when Binance takes trading away from a key without IP restriction (a passed time counts as
        gone). The testnet has no sapi: nothing to check there. An answer without `enableWithdrawals` proves
        nothing: it is treated as a failed call (`UnknownFailure`), never as a healthy key."""
        if testnet:
            return None
        restrictions = await once(lambda ex: ex.sapi_get_account_apirestrictions())
        if not isinstance(restrictions, dict) or not isinstance(restrictions.get("enableWithdrawals"), bool):
            raise UnknownFailure(self.id, "apiRestrictions answered without enableWithdrawals")
        expires = None
        # Only unrestricted keys lose trading at that time: an IP restriction (the fix we advise) lifts it.
        raw = restrictions.get(self.trading_expiry_field) if self.trading_expiry_field else None
        if raw and restrictions.get("ipRestrict") is not True:
            try:
                expires = datetime.fromtimestamp(int(raw) / 1000, tz=UTC)
            except (TypeError, ValueError, OverflowError, OSError):
                expires = None
        can_trade = restrictions.get(self.trading_permission) is True and (expires is None or expires > now)
        return KeyHealth(
            can_withdraw=restrictions["enableWithdrawals"], can_trade=can_trade, trading_expires_at=expires
        )


#: ccxt's binance cost table is scaled so 1,200 cost/min fills the limit it assumes: spot endpoints cost
#: 0.2 per unit of weight (6,000/min on the venue).
ADAPTER = BinanceFamily(
    id="binance",
    name="Binance Spot",
    key_guide=(
        "On binance.com open Account → API Management → Create API → <b>System generated</b> (HMAC).\n"
        "Tick <b>Enable Spot &amp; Margin Trading</b>; leave <b>Enable Withdrawals</b> OFF.\n"
        "Restrict access to trusted IPs (your server's address): Binance disables trading on unrestricted keys "
        "after a while."
    ),
    # VIP 0, no BNB discount.
    entry_taker_fee=Decimal("0.001"),
    ccxt_id="binance",
    ccxt_options={
        "fetchMarkets": {"types": ["spot"]},
        "fetchMargins": False,
        "fetchCurrencies": False,
        # Open orders of all symbols (for /panic) is a deliberate, budgeted call: no ccxt warning exception.
        "warnOnFetchOpenOrdersWithoutSymbol": False,
    },
    weight=weight_rule(limit_per_minute=6_000, weight_per_cost=5.0),
    # GET /api/v3/openOrders: one symbol, all symbols.
    open_orders_weights=(6, 80),
    trading_permission="enableSpotAndMarginTrading",
    trading_expiry_field="tradingAuthorityExpirationTime",
    trading_refusal=(
        "trading_disabled",
        "This key cannot trade. Edit it on Binance, tick 'Enable Spot & Margin Trading', then send it again.",
    ),
)

"""Kraken (`kraken`): a call counter per key, nonces per key, error codes that are texts, no testnet.

Kraken names no account behind a key (so a replacement key proves its owner by the account's orders), lists
no key permissions (only a refused `WithdrawMethods` proves a key cannot withdraw), and answers a closed-orders
listing for all symbols in one call, which the fill poller uses instead of a lookup per order.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from bot.exchanges.failures import Action, ExchangeFailure
from bot.exchanges.keys import MSG_UNVERIFIABLE, MSG_WITHDRAW, KeyCheck, KeyHealth, KeyRejected
from bot.exchanges.venues.base import KeyCounterRule, OnceCall, PrivateCall, VenueAdapter

#: Kraken error strings: exact first, then by prefix (`EGeneral:Invalid arguments:volume`).
KRAKEN_ERRORS: dict[str, Action] = {
    "EAPI:Invalid key": Action.AUTH,
    "EAPI:Invalid signature": Action.AUTH,
    "EAPI:Feature disabled": Action.AUTH,
    "EGeneral:Permission denied": Action.AUTH,
    "ESession:Invalid session": Action.AUTH,
    "ETrade:User Locked": Action.AUTH,
    "EAPI:Invalid nonce": Action.RESYNC,
    "EAPI:Rate limit exceeded": Action.BACKOFF,
    "EOrder:Rate limit exceeded": Action.BACKOFF,
    "EGeneral:Temporary lockout": Action.BACKOFF,
    "EGeneral:Too many requests": Action.BACKOFF,
    "EService:Unavailable": Action.RETRY,
    "EService:Busy": Action.RETRY,
    "EService:Deadline elapsed": Action.RETRY,
    "EGeneral:Internal error": Action.RETRY,
    "EDatabase:Internal error": Action.RETRY,
    "EOrder:Insufficient funds": Action.FUNDS,
    "EOrder:Insufficient margin": Action.FUNDS,
    "EOrder:Unknown order": Action.NOT_FOUND,
    "EOrder:Order minimum not met": Action.INVALID_ORDER,
    "EOrder:Cost minimum not met": Action.INVALID_ORDER,
    "EOrder:Tick size check failed": Action.INVALID_ORDER,
    "EOrder:Invalid order": Action.INVALID_ORDER,
    "EOrder:Invalid price": Action.INVALID_ORDER,
    "EOrder:Orders limit exceeded": Action.INVALID_ORDER,
    "EOrder:Positions limit exceeded": Action.INVALID_ORDER,
    "EGeneral:Invalid arguments": Action.INVALID_ORDER,
    "EQuery:Unknown asset pair": Action.INVALID_ORDER,
    "EQuery:Invalid asset pair": Action.INVALID_ORDER,
}

_ERROR = re.compile(r"\b(E[A-Z][A-Za-z]*:[A-Za-z][^\"',\]\[]*)")
#: `cl_ord_id`: a long UUID (36 chars with dashes), a short UUID (32 hex chars) or free text of at most 18.
_LONG_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SHORT_UUID = re.compile(r"^[0-9a-fA-F]{32}$")
_FREE_TEXT = re.compile(r"^[\x21-\x7e]{1,18}$")
_BASE64_CHARS = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


@dataclass(frozen=True, kw_only=True)
class Kraken(VenueAdapter):
    def is_valid_client_order_id(self, value: str) -> bool:
        return bool(_LONG_UUID.match(value) or _SHORT_UUID.match(value) or _FREE_TEXT.match(value))

    async def find_order_by_client_id(self, private: PrivateCall, symbol: str, client_order_id: str) -> Any:
        # ccxt 4.5.90's kraken fetch_order(None, …, {"clientOrderId": …}) sends txid=None and raises
        # TypeError: search open, then closed orders, filtered by cl_ord_id on the venue and here.
        for method in ("fetch_open_orders", "fetch_closed_orders"):

            async def op(ex: Any, method: str = method) -> list[dict[str, Any]]:
                return await getattr(ex, method)(symbol, None, None, {"clientOrderId": client_order_id})

            for data in await private(op):
                if data.get("clientOrderId") == client_order_id or (data.get("info") or {}).get(
                    "cl_ord_id"
                ) == client_order_id:
                    return data
        return None

    # errors

    def venue_code(self, message: str) -> str | None:
        match = _ERROR.search(message)
        return match.group(1).strip() if match else None

    def code_action(self, code: str, message: str) -> Action | None:
        """Exact first, then by prefix (`EGeneral:Invalid arguments:volume`)."""
        if code in KRAKEN_ERRORS:
            return KRAKEN_ERRORS[code]
        for known, action in KRAKEN_ERRORS.items():
            if code.startswith(known):
                return action
        return None

    def code_reason(self, code: str) -> str | None:
        return code

    def is_duplicate_client_id(self, code: str | None, detail: str) -> bool:
        return (code or "").startswith("EGeneral:Invalid arguments:cl_ord_id")

    # keys

    def check_api_key(self, key: str) -> None:
        if not _BASE64_CHARS.match(key) or not 40 <= len(key) <= 80:
            raise KeyRejected(
                "malformed", "That API key does not look like a Kraken one (56 characters). Copy it again."
            )

    def check_secret(self, secret: str) -> None:
        try:
            raw = base64.b64decode(secret, validate=True)
        except (binascii.Error, ValueError):
            raise KeyRejected(
                "malformed",
                "That private key is not valid for Kraken (it must be base64 text, 88 characters). "
                "Copy the 'Private Key' shown when you created the key.",
            ) from None
        if not 32 <= len(raw) <= 128:
            raise KeyRejected(
                "malformed", "That private key is too short or too long for Kraken (88 characters expected)."
            )

    async def check_permissions(self, once: OnceCall, balances: dict[str, Decimal], *, testnet: bool) -> KeyCheck:
        """The legacy `POST /0/private/WithdrawMethods`: ONLY `EGeneral:Permission denied` proves the key cannot
        withdraw; success → refuse; any other outcome → "could not verify". The Funding (Beta) endpoints are
        never used: their read permissions differ."""
        try:
            await once(lambda ex: ex.private_post_withdrawmethods())
        except ExchangeFailure as failure:
            if failure.code == "EGeneral:Permission denied":
                return KeyCheck(
                    balances,
                    permissions=["query_funds"],
                    warnings=[
                        "Kraken cannot list a key's permissions: we checked that it cannot withdraw. "
                        "Make sure it has 'Create & modify orders' so strategies can trade."
                    ],
                )
            raise KeyRejected("unverifiable", MSG_UNVERIFIABLE) from None
        raise KeyRejected("withdraw_enabled", MSG_WITHDRAW)

    async def check_health(self, once: OnceCall, *, testnet: bool, now: datetime) -> KeyHealth | None:
        """The /connect proof again (`WithdrawMethods`, one point on the key's own call counter, which decays
        in about 3 s): `EGeneral:Permission denied` → it still cannot withdraw; an answer → it can now. Kraken
        lists no trading permission (a key that lost it is rejected by its next order). Any other refusal is
        raised as it came (an invalid key: rejected; a busy venue: try later)."""
        try:
            await once(lambda ex: ex.private_post_withdrawmethods())
        except ExchangeFailure as failure:
            if failure.code == "EGeneral:Permission denied":
                return KeyHealth(can_withdraw=False)
            raise
        return KeyHealth(can_withdraw=True)


ADAPTER = Kraken(
    id="kraken",
    name="Kraken",
    key_guide=(
        "On kraken.com open Settings → API → Create API key.\n"
        "Allow <b>Query Funds</b>, <b>Query Open/Closed Orders &amp; Trades</b>, <b>Create &amp; Modify Orders</b>, "
        "<b>Cancel/Close Orders</b>; leave <b>Withdraw Funds</b> OFF.\n"
        "Kraken shows an API key and a <b>private key</b>: you will send both."
    ),
    key_names=("API key", "private key"),
    # Kraken Pro under 10,000 USD of 30-day volume (maker 0.25 %). Kraken's AssetPairs, and so ccxt, still say
    # 0.26 %: the risk gate reserves the larger.
    entry_taker_fee=Decimal("0.004"),
    # Kraken Pro's entry maker tier; AssetPairs' fee schedule (and so ccxt's market) says 0.16 %.
    entry_maker_fee=Decimal("0.0025"),
    ccxt_id="kraken",
    ccxt_options={},
    testnet=False,
    nonce_per_key=True,
    owner_family="kraken",
    owner_name="Kraken",
    names_owner=False,
    # The Starter tier's counter (+1 per call, +2 for history, 0 for trading; max 15, −0.33/s): see rate_budget.
    key_counter=KeyCounterRule(cost_per_point=3.0),
    open_orders_per_symbol=False,
    closed_orders_in_one_call=True,
    fills_by_trade=False,
    cost_buy_needs_amount=True,
    client_id_param="clientOrderId",
    user_stream="kraken-ws-v2",
    stream_url="wss://ws-auth.kraken.com/v2",
    rebalance_quotes=("USD",),
    default_markets=("BTC/USD", "ETH/USD"),
    valuation_quote="USD",
    invalid_key_message=(
        "Kraken rejected this key. Check that you copied both the API key and the private key, that the "
        "key is still active, and that it has the 'Query Funds' permission."
    ),
)

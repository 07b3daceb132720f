"""Validate an API key before it is stored: it must authenticate and be PROVEN unable to withdraw.

Fail closed: whatever cannot be verified is refused (`KeyRejected`), and the caller stores nothing.

1. `check_format` runs before any network call and rejects only what can never be valid: PEM / Ed25519 /
   RSA private-key text ("create a system-generated (HMAC) key"), a Kraken secret that is not base64,
   Binance keys that are not alphanumeric of a plausible length (real ones: 64 characters each; Kraken:
   a 56-character key and a base64 secret of 64 bytes, 88 characters).
2. A balance call proves the key authenticates (and gives the balances to show).
3. Permissions. Binance (spot and futures): `GET /sapi/v1/account/apiRestrictions` — `enableWithdrawals`
   → refuse; futures needs `enableFutures`; a key without IP restriction gets a warning (Binance drops
   trading from unrestricted keys after a while). On the testnet (`STRATA_SANDBOX=1`) there is no `sapi`:
   the account is marked testnet with a visible note. Kraken has no permission listing: the legacy
   `POST /0/private/WithdrawMethods` is called and ONLY `EGeneral:Permission denied` proves the key cannot
   withdraw; success → refuse; any other outcome → "could not verify permissions, try again". The Funding
   (Beta) endpoints are never used: their read permissions differ.
4. The exchange account behind the key, when the venue names it: Binance's `uid`, from the spot account
   (`GET /api/v3/account`, read by spot's balance call; for USD-M the same key asks that spot endpoint, since
   the futures account endpoints carry no uid). A key replacing an account's key must show the same uid.
   Kraken names no account: `owner_id` stays None. Reading the uid never refuses a key (None on any failure).

Each check makes exactly one attempt per call (no retries: the user is waiting and can try again).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from bot.exchanges.clients import ExchangeSetupError
from bot.exchanges.errors import Action, ExchangeFailure, translate
from bot.exchanges.gateway import ExchangeGateway
from bot.exchanges.models import balances_from_ccxt
from bot.secret import Credentials, Secret

T = TypeVar("T")

REASONS = frozenset(
    {
        "malformed",
        "hmac_only",
        "invalid_key",
        "withdraw_enabled",
        "futures_disabled",
        "trading_disabled",
        "ip_not_whitelisted",
        "nonce",
        "unverifiable",
        "unavailable",
        "unsupported",
    }
)

MSG_UNAVAILABLE = "The exchange could not be reached. Nothing was stored; please try again later."
MSG_UNVERIFIABLE = (
    "We could not verify this key's permissions, so nothing was stored. Please try again in a minute."
)
MSG_HMAC_ONLY = (
    "This looks like a private key file (Ed25519/RSA). Strata only works with system-generated (HMAC) keys: "
    "create one on the exchange and send its API key and secret."
)
MSG_FUTURES_DISABLED = (
    "This key cannot trade futures. Edit it on Binance, tick 'Enable Futures', then send it again."
)
MSG_WITHDRAW = (
    "This key is allowed to withdraw funds, so it was not stored. Create a key with withdrawals disabled "
    "(trading and reading only) and try again. We suggest deleting the key you sent."
)


class KeyRejected(Exception):
    """The key cannot be stored; `user_message` is friendly and safe to show, `reason` is for code."""

    def __init__(self, reason: str, user_message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown key rejection reason {reason!r}")
        super().__init__(f"{reason}: {user_message}")
        self.reason = reason
        self.user_message = user_message

    def __repr__(self) -> str:
        return f"KeyRejected({self.reason!r})"


@dataclass(frozen=True)
class KeyCheck:
    """A key that authenticated and cannot withdraw: what to show the user when storing it."""

    balances: dict[str, Decimal]
    permissions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    testnet: bool = False
    #: The exchange account the key belongs to (Binance uid), when it could be read.
    owner_id: str | None = None


_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*KEY-----|PRIVATE KEY|ssh-ed25519|ssh-rsa", re.IGNORECASE)
_ALNUM = re.compile(r"^[A-Za-z0-9]+$")
_BASE64_CHARS = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


def _text(value: str | Secret) -> str:
    return value.reveal() if isinstance(value, Secret) else value


def check_api_key_format(venue: str, api_key: str | Secret) -> None:
    """Reject, without any network call, an API key that can never be valid on `venue` (asked before the secret)."""
    key = _text(api_key).strip()
    if _PEM.search(key):
        raise KeyRejected("hmac_only", MSG_HMAC_ONLY)
    if not key:
        raise KeyRejected("malformed", "Both the API key and the secret are needed.")
    if venue in ("binance", "binanceusdm"):
        _check_binance_part("API key", key)
    elif venue == "kraken":
        if not _BASE64_CHARS.match(key) or not 40 <= len(key) <= 80:
            raise KeyRejected(
                "malformed", "That API key does not look like a Kraken one (56 characters). Copy it again."
            )
    else:
        raise KeyRejected("unsupported", f"{venue} is not an exchange Strata can connect to.")


def check_format(venue: str, api_key: str | Secret, secret: str | Secret) -> None:
    """Reject, without any network call, a key pair that can never be valid on `venue`."""
    key, sec = _text(api_key).strip(), _text(secret).strip()
    if _PEM.search(sec):
        raise KeyRejected("hmac_only", MSG_HMAC_ONLY)
    check_api_key_format(venue, key)
    if not sec:
        raise KeyRejected("malformed", "Both the API key and the secret are needed.")
    if key == sec:
        raise KeyRejected("malformed", "The API key and the secret are the same text: send both, key first.")
    if venue in ("binance", "binanceusdm"):
        _check_binance_part("secret", sec)
    else:  # kraken (check_api_key_format refused every other venue)
        try:
            raw = base64.b64decode(sec, validate=True)
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


def _check_binance_part(name: str, value: str) -> None:
    # Real Binance HMAC keys and secrets are 64 letters and digits; allow some slack, no other characters.
    if not _ALNUM.match(value) or not 32 <= len(value) <= 128:
        raise KeyRejected(
            "malformed",
            f"That {name} does not look like a Binance one (64 letters and digits). "
            "Copy it again from the API Management page.",
        )


class KeyChecker:
    """Runs `check_key` through the gateway's shared pool (one attempt per call, never retried)."""

    def __init__(self, gateway: ExchangeGateway) -> None:
        self._gateway = gateway
        self._pool = gateway.pool

    async def check_key(self, venue: str, creds: Credentials) -> KeyCheck:
        """Validate `creds` on `venue`; return what to show, or raise `KeyRejected` (store nothing)."""
        check_format(venue, creds.api_key, creds.secret)
        try:
            self._pool.check_venue(venue)
        except ExchangeSetupError as exc:
            raise KeyRejected("unsupported", str(exc)) from None
        balances, info = await self._balances(venue, creds)
        if venue == "kraken":
            return await self._kraken_permissions(creds, balances)
        check = await self._binance_permissions(venue, creds, balances)
        return replace(check, owner_id=await self._binance_uid(venue, creds, info))

    async def binance_uid(self, venue: str, creds: Credentials) -> str | None:
        """The Binance uid behind a stored key (one weight-20 spot account call); None on any failure."""
        return await self._binance_uid(venue, creds, None)

    async def _binance_uid(self, venue: str, creds: Credentials, balance_info: Any) -> str | None:
        """The Binance uid of the key's account: in spot's account answer, else asked of that spot endpoint."""
        info = balance_info
        if venue != "binance" or not isinstance(info, dict) or "uid" not in info:
            try:
                info = await self._once(venue, creds, lambda ex: ex.private_get_account())
            except ExchangeFailure:
                return None
        uid = info.get("uid") if isinstance(info, dict) else None
        return str(uid) if uid not in (None, "") else None

    async def authenticates(self, venue: str, creds: Credentials) -> bool:
        """Whether a key is accepted again, by the cheapest signed call (a rejected key's slow retry).

        Binance: `apiRestrictions` (weight 1 on the sapi budget, not the spot/futures one trading uses), then
        only a key that passes it gets the full `check_key`. Kraken counts calls per key, not per IP, and the
        testnet has no sapi: there the caller runs `check_key` directly. False on any failure (try later).
        """
        if venue == "kraken" or self._pool.is_testnet(venue):
            return True
        try:
            await self._once(venue, creds, lambda ex: ex.sapi_get_account_apirestrictions())
        except ExchangeFailure:
            return False
        return True

    async def _once(self, venue: str, creds: Credentials, op: Callable[[Any], Awaitable[T]]) -> T:
        try:
            async with self._pool.bound(venue, creds) as exchange:
                return await op(exchange)
        except Exception as exc:
            failure = translate(exc, venue, secrets=[creds])
        raise failure

    async def _balances(self, venue: str, creds: Credentials) -> tuple[dict[str, Decimal], Any]:
        """The key's non-zero balances, and the venue's raw answer (spot Binance's carries the uid)."""
        try:
            data = await self._once(venue, creds, lambda ex: ex.fetch_balance())
        except ExchangeFailure as failure:
            if venue == "binanceusdm" and failure.action is Action.AUTH and not self._pool.is_testnet(venue):
                # A valid key without futures permission gets the same -2015 as a wrong key: ask sapi.
                await self._explain_futures_rejection(creds)
            raise _balance_rejection(venue, failure) from None
        totals = {asset: line.total for asset, line in balances_from_ccxt(data).items() if line.total}
        return totals, data.get("info") if isinstance(data, dict) else None

    async def _explain_futures_rejection(self, creds: Credentials) -> None:
        try:
            restrictions = await self._once(
                "binanceusdm", creds, lambda ex: ex.sapi_get_account_apirestrictions()
            )
        except ExchangeFailure:
            return
        if isinstance(restrictions, dict) and restrictions.get("enableFutures") is False:
            raise KeyRejected("futures_disabled", MSG_FUTURES_DISABLED)

    async def _binance_permissions(
        self, venue: str, creds: Credentials, balances: dict[str, Decimal]
    ) -> KeyCheck:
        if self._pool.is_testnet(venue):
            return KeyCheck(
                balances,
                permissions=["read"],
                warnings=[
                    "Testnet account: the exchange's testnet cannot show key permissions, so the "
                    "withdrawal check did not run. Never use a real-money key here."
                ],
                testnet=True,
            )
        try:
            restrictions = await self._once(venue, creds, lambda ex: ex.sapi_get_account_apirestrictions())
        except ExchangeFailure as failure:
            if failure.action in (Action.RETRY, Action.BACKOFF):
                raise KeyRejected("unavailable", MSG_UNAVAILABLE) from None
            if failure.action is Action.AUTH:
                raise KeyRejected("invalid_key", _invalid_key_message(venue)) from None
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
        if venue == "binanceusdm" and not restrictions.get("enableFutures"):
            raise KeyRejected("futures_disabled", MSG_FUTURES_DISABLED)
        if venue == "binance" and not restrictions.get("enableSpotAndMarginTrading"):
            raise KeyRejected(
                "trading_disabled",
                "This key cannot trade. Edit it on Binance, tick 'Enable Spot & Margin Trading', "
                "then send it again.",
            )
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

    async def _kraken_permissions(self, creds: Credentials, balances: dict[str, Decimal]) -> KeyCheck:
        try:
            await self._once("kraken", creds, lambda ex: ex.private_post_withdrawmethods())
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


def _invalid_key_message(venue: str) -> str:
    if venue == "kraken":
        return (
            "Kraken rejected this key. Check that you copied both the API key and the private key, that the "
            "key is still active, and that it has the 'Query Funds' permission."
        )
    return (
        "Binance rejected this key (invalid key or secret, the key was deleted, or your IP whitelist "
        "does not include this server). Check the key in API Management and send it again."
    )


def _balance_rejection(venue: str, failure: ExchangeFailure) -> KeyRejected:
    if failure.action in (Action.RETRY, Action.BACKOFF):
        return KeyRejected("unavailable", MSG_UNAVAILABLE)
    if failure.action is Action.RESYNC:
        return KeyRejected(
            "nonce",
            "The exchange refused the request's nonce or timestamp. If this key is used by another program, "
            "create a separate key for Strata; otherwise try again in a minute.",
        )
    if failure.action is Action.AUTH:
        # Binance answers -2015 alike for a wrong key, a deleted key and an IP not on the whitelist.
        return KeyRejected("invalid_key", _invalid_key_message(venue))
    return KeyRejected("unverifiable", MSG_UNVERIFIABLE)

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

The venue-specific parts (the key text's shape, the permissions call, the account behind the key) are each
venue adapter's (`bot.exchanges.venues`): this module runs them in this order.

Each check makes exactly one attempt per call (no retries: the user is waiting and can try again).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from bot.exchanges.clients import ExchangeSetupError
from bot.exchanges.errors import Action, ExchangeFailure, translate
from bot.exchanges.gateway import ExchangeGateway
from bot.exchanges.keys import (
    MSG_HMAC_ONLY,
    MSG_UNAVAILABLE,
    MSG_UNVERIFIABLE,
    MSG_WITHDRAW,
    REASONS,
    KeyCheck,
    KeyHealth,
    KeyRejected,
)
from bot.exchanges.models import balances_from_ccxt
from bot.exchanges.venues import VenueAdapter, find
from bot.secret import Credentials, Secret

__all__ = [
    "MSG_HMAC_ONLY",
    "MSG_UNAVAILABLE",
    "MSG_UNVERIFIABLE",
    "MSG_WITHDRAW",
    "REASONS",
    "KeyCheck",
    "KeyChecker",
    "KeyRejected",
    "check_api_key_format",
    "check_format",
]

T = TypeVar("T")

_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*KEY-----|PRIVATE KEY|ssh-ed25519|ssh-rsa", re.IGNORECASE)


def _text(value: str | Secret) -> str:
    return value.reveal() if isinstance(value, Secret) else value


def _adapter(venue: str) -> VenueAdapter:
    known = find(venue)
    if known is None or not known.connectable:
        raise KeyRejected("unsupported", f"{venue} is not an exchange Strata can connect to.")
    return known


def check_api_key_format(venue: str, api_key: str | Secret) -> None:
    """Reject, without any network call, an API key that can never be valid on `venue` (asked before the secret)."""
    key = _text(api_key).strip()
    if _PEM.search(key):
        raise KeyRejected("hmac_only", MSG_HMAC_ONLY)
    if not key:
        raise KeyRejected("malformed", "Both the API key and the secret are needed.")
    _adapter(venue).check_api_key(key)


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
    _adapter(venue).check_secret(sec)


class KeyChecker:
    """Runs `check_key` through the gateway's shared pool (one attempt per call, never retried)."""

    def __init__(self, gateway: ExchangeGateway) -> None:
        self._gateway = gateway
        self._pool = gateway.pool

    async def check_key(self, venue: str, creds: Credentials) -> KeyCheck:
        """Validate `creds` on `venue`; return what to show, or raise `KeyRejected` (store nothing)."""
        check_format(venue, creds.api_key, creds.secret)
        try:
            known = self._pool.check_venue(venue)
        except ExchangeSetupError as exc:
            raise KeyRejected("unsupported", str(exc)) from None
        balances, info = await self._balances(venue, creds)
        once = self._bound_once(venue, creds)
        check = await known.check_permissions(once, balances, testnet=self._pool.is_testnet(venue))
        return replace(check, owner_id=await known.read_owner_id(once, info))

    async def owner_id(self, venue: str, creds: Credentials) -> str | None:
        """The exchange account behind a stored key (Binance: one weight-20 spot account call); None when the
        venue names none, and on any failure."""
        return await self._pool.check_venue(venue).read_owner_id(self._bound_once(venue, creds), None)

    async def authenticates(self, venue: str, creds: Credentials) -> bool:
        """Whether a key is accepted again, by the cheapest signed call (a rejected key's slow retry).

        Binance: `apiRestrictions` (weight 1 on the sapi budget, not the spot/futures one trading uses), then
        only a key that passes it gets the full `check_key`. Kraken counts calls per key, not per IP, and the
        testnet has no sapi: there the caller runs `check_key` directly. False on any failure (try later).
        """
        known = self._pool.check_venue(venue)
        return await known.authenticates(self._bound_once(venue, creds), testnet=self._pool.is_testnet(venue))

    async def health(self, venue: str, creds: Credentials, *, now: datetime) -> KeyHealth | None:
        """What a connected key may do now (`VenueAdapter.check_health`, one cheap signed call, never retried);
        None when the venue has nothing cheap to check. Raises `ExchangeFailure` as any signed call does."""
        known = self._pool.check_venue(venue)
        return await known.check_health(self._bound_once(venue, creds), testnet=self._pool.is_testnet(venue), now=now)

    def _bound_once(self, venue: str, creds: Credentials) -> Callable[[Callable[[Any], Awaitable[T]]], Awaitable[T]]:
        async def once(op: Callable[[Any], Awaitable[T]]) -> T:
            return await self._once(venue, creds, op)

        return once

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
            # e.g. a valid Binance key without futures permission gets the same -2015 as a wrong key.
            await self._pool.check_venue(venue).explain_balance_rejection(
                self._bound_once(venue, creds), failure, testnet=self._pool.is_testnet(venue)
            )
            raise _balance_rejection(venue, failure) from None
        totals = {asset: line.total for asset, line in balances_from_ccxt(data).items() if line.total}
        return totals, data.get("info") if isinstance(data, dict) else None


def _invalid_key_message(venue: str) -> str:
    known = find(venue)
    return known.invalid_key_message if known is not None else "The exchange rejected this key."


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

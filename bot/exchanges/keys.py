"""What a key check concludes: a key to store (`KeyCheck`) or a refusal (`KeyRejected`), and the shared texts.

A leaf module: the venue adapters (`bot.exchanges.venues`) raise and build these, `key_check` runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

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



@dataclass(frozen=True)
class KeyHealth:
    """What a connected key may do now, as the venue reports it (the periodic key-health check).

    A key that can withdraw is dangerous (Strata never stores one, and a key whose withdrawals were turned on
    after /connect is taken out of trading); one that lost this venue's trading permission cannot run its
    strategies; `trading_expires_at` is when the venue will take trading away (Binance, unrestricted keys).
    """

    can_withdraw: bool
    can_trade: bool = True
    trading_expires_at: datetime | None = None

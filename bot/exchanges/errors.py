"""Exchange errors translated into our own types, each with the action the caller must take.

The decision reads the venue's own error code in the message FIRST (Binance `{"code":-2015,…}`, Kraken
`EAPI:Invalid key`), then the HTTP status ccxt quotes (418/429), then the venue's known message texts, and
only then ccxt's exception class, most specific first. ccxt's class tree misleads: `DDoSProtection`,
`InvalidNonce` and `RateLimitExceeded` are `NetworkError`s; Binance -2015 becomes `DDoSProtection` once any
key succeeded on the instance; on a moved fapi URL -2019 is a bare `ExchangeError`; -1013 NOTIONAL is
`BadRequest`; Kraken `EAPI:Invalid signature` is a bare `ExchangeError`; a malformed Kraken secret raises
`binascii.Error`, which is not a ccxt error at all. "except NetworkError: retry" would retry a revoked key
forever. The venues' own tables (codes, texts) live in their adapters (`bot.exchanges.venues`); this module
keeps the order in which they are asked, and the failure types (`failures`) are re-exported from here.

Messages never carry a key, a secret, a signature or a signed URL: ccxt quotes the full request URL (with
`signature=` in the query) in some messages, so query strings are cut and known secrets masked, and the
original exception is not chained (tracebacks print `__cause__`).
"""

from __future__ import annotations

import asyncio
import binascii
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import ccxt

from bot.exchanges.failures import (
    AUTH_REJECTED,
    FAILURE_TYPES,
    MSG_OUTCOME_UNKNOWN,
    Action,
    AuthFailure,
    ExchangeFailure,
    FundsFailure,
    InvalidOrderFailure,
    OrderNotFoundFailure,
    RateLimited,
    ResyncNeeded,
    TransientFailure,
    UnknownFailure,
)
from bot.exchanges.venues import find
from bot.secret import Credentials, Secret

__all__ = [
    "AUTH_REJECTED",
    "FAILURE_TYPES",
    "MSG_OUTCOME_UNKNOWN",
    "Action",
    "AuthFailure",
    "Diagnosis",
    "ExchangeFailure",
    "FundsFailure",
    "InvalidOrderFailure",
    "OrderNotFoundFailure",
    "RateLimited",
    "ResyncNeeded",
    "RetryPolicy",
    "TransientFailure",
    "UnknownFailure",
    "call_with_retry",
    "diagnose",
    "is_duplicate_client_id",
    "sanitize",
    "translate",
    "venue_code",
]

T = TypeVar("T")


# Most specific ccxt classes first: several are subclasses of the ones below them.
_CLASS_ACTIONS: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], Action], ...] = (
    (binascii.Error, Action.AUTH),  # malformed (non-base64) Kraken secret, raised inside sign()
    (ccxt.InsufficientFunds, Action.FUNDS),
    (ccxt.OrderNotFound, Action.NOT_FOUND),
    (ccxt.InvalidNonce, Action.RESYNC),
    ((ccxt.RateLimitExceeded, ccxt.DDoSProtection), Action.BACKOFF),
    ((ccxt.AccountSuspended, ccxt.PermissionDenied, ccxt.AuthenticationError), Action.AUTH),
    ((ccxt.InvalidOrder, ccxt.BadSymbol, ccxt.BadRequest), Action.INVALID_ORDER),
    ((ccxt.OnMaintenance, ccxt.ExchangeNotAvailable, ccxt.RequestTimeout, ccxt.NetworkError), Action.RETRY),
    ((TimeoutError, asyncio.TimeoutError, aiohttp.ClientError, ConnectionError), Action.RETRY),
)

#: The `msg` of a JSON error body ccxt quotes (Binance's `{"code":-2015,"msg":…}`).
_JSON_MSG = re.compile(r'"msg"\s*:\s*"((?:[^"\\]|\\.)*)"')
# "binance 429 Too Many Requests …" (handle_errors) or "kraken GET http://… 503 Service Unavailable …"
_HTTP_STATUS = re.compile(r"^\S+ (?:(?:GET|POST|DELETE|PUT|PATCH) \S+ )?([1-5]\d\d)\b")
_QUERY = re.compile(r"(https?://[^\s?#\"']+)\?[^\s\"']*")
_SIGNATURE = re.compile(
    r"(signature|api-sign|apikey|api-key|x-mbx-apikey)([=:]\s*)[^\s&\"',}]+", re.IGNORECASE
)


@dataclass(frozen=True)
class Diagnosis:
    """The decision for one error: the action, the venue code it was read from (if any), a safe reason."""

    action: Action
    code: str | None
    reason: str


def sanitize(text: str, secrets: Iterable[str | Secret | Credentials] = ()) -> str:
    """Remove query strings, signatures and any known key/secret text from a message."""
    text = _QUERY.sub(r"\1", text)
    text = _SIGNATURE.sub(r"\1\2***", text)
    for item in secrets:
        for value in _secret_values(item):
            if value and len(value) >= 6:
                text = text.replace(value, "***")
    return text


def _secret_values(item: str | Secret | Credentials) -> list[str]:
    if isinstance(item, Credentials):
        return [item.api_key.reveal(), item.secret.reveal()]
    if isinstance(item, Secret):
        return [item.reveal()]
    return [item]


def venue_code(venue: str, message: str) -> str | None:
    """The venue's own error code quoted in a ccxt message: "-2015" or "EAPI:Invalid key"."""
    known = find(venue)
    return known.venue_code(message) if known is not None else None


def diagnose(exc: BaseException, venue: str) -> Diagnosis:
    """Decide the action for an exception raised by a ccxt call on `venue` (code, status, text, class).

    The venue's adapter reads its own code and its known message texts (`code_action`, `message_action`).
    """
    known = find(venue)
    message = str(exc)
    code = venue_code(venue, message)
    reason = _reason(venue, message, code)
    action: Action | None = None
    if code is not None and known is not None:
        action = known.code_action(code, message)
    if action is None:
        status = _HTTP_STATUS.match(message)
        if status and status.group(1) in ("418", "429"):
            action, code = Action.BACKOFF, code or status.group(1)
    if action is None and known is not None:
        action = known.message_action(message.lower())
    if action is None:
        action = next((act for classes, act in _CLASS_ACTIONS if isinstance(exc, classes)), Action.UNKNOWN)
    return Diagnosis(action, code, reason)


def _reason(venue: str, message: str, code: str | None) -> str:
    """A short, safe description: the venue's own message when we can find it."""
    known = find(venue)
    said = known.code_reason(code) if known is not None and code else None
    if said:
        return said
    match = _JSON_MSG.search(message)
    if match:
        return match.group(1)
    # ccxt starts its messages with its own exchange id.
    text = message.removeprefix(f"{known.ccxt_id if known is not None else venue} ").strip()
    return text[:300] if text else "no details"


def is_duplicate_client_id(failure: ExchangeFailure) -> bool:
    """Whether the venue refused an order because its client order id is already in use (it exists)."""
    known = find(failure.venue)
    return known is not None and known.is_duplicate_client_id(failure.code, failure.detail)


def translate(
    exc: BaseException,
    venue: str,
    *,
    secrets: Iterable[str | Secret | Credentials] = (),
    outcome_unknown: bool = False,
) -> ExchangeFailure:
    """Build our exception for `exc`; its texts are sanitized and it does not reference `exc`."""
    if isinstance(exc, ExchangeFailure):
        return exc
    secrets = list(secrets)
    found = diagnose(exc, venue)
    if isinstance(exc, binascii.Error):
        detail = "the stored API secret is not valid base64"
    else:
        detail = sanitize(found.reason, secrets)
        if found.action is Action.UNKNOWN or found.reason == "no details":
            detail = f"{type(exc).__name__}: {detail}"
    user_message = None
    if found.action is Action.INVALID_ORDER:
        why = sanitize(found.reason, secrets)[:160]
        user_message = f"The exchange refused the order ({why}). The strategy is paused."
    if outcome_unknown and found.action is Action.RETRY:
        user_message = MSG_OUTCOME_UNKNOWN
    return FAILURE_TYPES[found.action](
        venue, detail, code=found.code, user_message=user_message, outcome_unknown=outcome_unknown
    )


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: attempt n (0-based) waits min(max_delay, base * 2**n); BACKOFF × 4."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    backoff_factor: float = 4.0

    def delay(self, attempt: int, action: Action) -> float:
        factor = self.backoff_factor if action is Action.BACKOFF else 1.0
        return min(self.max_delay, self.base_delay * factor * 2**attempt)


async def call_with_retry(
    call: Callable[[], Awaitable[T]],
    venue: str,
    *,
    policy: RetryPolicy | None = None,
    retry_on: frozenset[Action] = frozenset({Action.RETRY, Action.BACKOFF}),
    resync: Callable[[ExchangeFailure], Awaitable[None]] | None = None,
    secrets: Iterable[str | Secret | Credentials] = (),
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run `call`, retrying RETRY/BACKOFF failures with backoff and RESYNC once after `resync`.

    Anything else, or the last failure, is raised as an `ExchangeFailure` (never the raw ccxt error).
    """
    policy = policy or RetryPolicy()
    secrets = list(secrets)
    resynced = False
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            failure = translate(exc, venue, secrets=secrets)
        if failure.action is Action.RESYNC and resync is not None and not resynced:
            resynced = True
            await resync(failure)
            continue
        if failure.action in retry_on and attempt < policy.attempts - 1:
            await sleep(policy.delay(attempt, failure.action))
            attempt += 1
            continue
        raise failure

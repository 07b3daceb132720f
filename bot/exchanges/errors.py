"""Exchange errors translated into our own types, each with the action the caller must take.

The decision reads the venue's own error code in the message FIRST (Binance `{"code":-2015,…}`, Kraken
`EAPI:Invalid key`), then the HTTP status ccxt quotes (418/429), then the venue's known message texts, and
only then ccxt's exception class, most specific first. ccxt's class tree misleads: `DDoSProtection`,
`InvalidNonce` and `RateLimitExceeded` are `NetworkError`s; Binance -2015 becomes `DDoSProtection` once any
key succeeded on the instance; on a moved fapi URL -2019 is a bare `ExchangeError`; -1013 NOTIONAL is
`BadRequest`; Kraken `EAPI:Invalid signature` is a bare `ExchangeError`; a malformed Kraken secret raises
`binascii.Error`, which is not a ccxt error at all. "except NetworkError: retry" would retry a revoked key
forever.

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
from enum import StrEnum
from typing import TypeVar

import aiohttp
import ccxt

from bot.secret import Credentials, Secret

T = TypeVar("T")


class Action(StrEnum):
    """What the caller does about a failure."""

    RETRY = "retry"  # network, 5xx, timeout: retry with backoff
    BACKOFF = "backoff"  # rate limited: wait on the shared budget, then retry
    RESYNC = "resync"  # clock (-1021) or nonce: resync and retry once
    AUTH = "auth"  # key revoked/invalid/not permitted: pause the account, alert once
    FUNDS = "funds"  # insufficient balance or margin: pause the strategy, alert
    INVALID_ORDER = "invalid_order"  # order refused by the venue's rules: pause the strategy, alert
    NOT_FOUND = "not_found"  # the order is unknown to the venue
    UNKNOWN = "unknown"


#: What an AUTH failure means (the alert about a rejected key adds the fix, naming the account's label).
AUTH_REJECTED = (
    "The exchange rejected this account's API key (revoked, expired, IP whitelist, or a missing permission)."
)

_USER_MESSAGES = {
    Action.RETRY: "The exchange did not answer in time or had an internal error; we will try again shortly.",
    Action.BACKOFF: "The exchange asked us to slow down; we will try again after a pause.",
    Action.RESYNC: "The exchange refused the request's timing (clock or nonce); please try again.",
    Action.AUTH: (
        f"{AUTH_REJECTED} Check the key on the exchange, or give the account a new key with "
        "/connect replace followed by its label (see /accounts); its strategies are kept."
    ),
    Action.FUNDS: "Not enough free balance on the exchange for this order. The strategy is paused.",
    Action.INVALID_ORDER: "The exchange refused the order. The strategy is paused.",
    Action.NOT_FOUND: "The exchange does not know this order.",
    Action.UNKNOWN: "The exchange returned an unexpected error.",
}


MSG_OUTCOME_UNKNOWN = "The exchange did not confirm the order in time; we are checking whether it was placed."


class ExchangeFailure(Exception):
    """A failed exchange call, already diagnosed; `str()` and `repr()` are safe to log and show."""

    action: Action = Action.UNKNOWN

    def __init__(
        self,
        venue: str,
        detail: str,
        *,
        code: str | None = None,
        user_message: str | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        self.venue = venue
        self.code = code
        self.detail = detail
        #: True when the request may have reached the venue (a create_order timeout): reconcile by client id.
        self.outcome_unknown = outcome_unknown
        self.user_message = user_message or _USER_MESSAGES[self.action]
        super().__init__(f"{venue} {self.action.value}" + (f" [{code}]" if code else "") + f": {detail}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self!s})"


class TransientFailure(ExchangeFailure):
    action = Action.RETRY


class RateLimited(ExchangeFailure):
    action = Action.BACKOFF


class ResyncNeeded(ExchangeFailure):
    action = Action.RESYNC


class AuthFailure(ExchangeFailure):
    action = Action.AUTH


class FundsFailure(ExchangeFailure):
    action = Action.FUNDS


class InvalidOrderFailure(ExchangeFailure):
    action = Action.INVALID_ORDER


class OrderNotFoundFailure(ExchangeFailure):
    action = Action.NOT_FOUND


class UnknownFailure(ExchangeFailure):
    action = Action.UNKNOWN


FAILURE_TYPES: dict[Action, type[ExchangeFailure]] = {
    cls.action: cls
    for cls in (
        TransientFailure,
        RateLimited,
        ResyncNeeded,
        AuthFailure,
        FundsFailure,
        InvalidOrderFailure,
        OrderNotFoundFailure,
        UnknownFailure,
    )
}

# --- venue codes -------------------------------------------------------------------------------------------

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

_BINANCE_CODE = re.compile(r'"code"\s*:\s*"?(-\d+)')
_BINANCE_MSG = re.compile(r'"msg"\s*:\s*"((?:[^"\\]|\\.)*)"')
_KRAKEN_ERROR = re.compile(r"\b(E[A-Z][A-Za-z]*:[A-Za-z][^\"',\]\[]*)")
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
    if venue in ("binance", "binanceusdm"):
        match = _BINANCE_CODE.search(message)
        return match.group(1) if match else None
    if venue == "kraken":
        match = _KRAKEN_ERROR.search(message)
        return match.group(1).strip() if match else None
    return None


def _kraken_action(code: str) -> Action | None:
    if code in KRAKEN_ERRORS:
        return KRAKEN_ERRORS[code]
    for known, action in KRAKEN_ERRORS.items():
        if code.startswith(known):
            return action
    return None


def _binance_code_action(code: str, message: str) -> Action | None:
    if code == "-2010":  # NEW_ORDER_REJECTED: the reason is in the text
        lowered = message.lower()
        return Action.FUNDS if "insufficient" in lowered else Action.INVALID_ORDER
    return BINANCE_CODES.get(code)


def diagnose(exc: BaseException, venue: str) -> Diagnosis:
    """Decide the action for an exception raised by a ccxt call on `venue` (code, status, text, class)."""
    message = str(exc)
    code = venue_code(venue, message)
    reason = _reason(venue, message, code)
    action: Action | None = None
    if code is not None:
        if venue == "kraken":
            action = _kraken_action(code)
        else:
            action = _binance_code_action(code, message)
    if action is None:
        status = _HTTP_STATUS.match(message)
        if status and status.group(1) in ("418", "429"):
            action, code = Action.BACKOFF, code or status.group(1)
    if action is None and venue in ("binance", "binanceusdm"):
        lowered = message.lower()
        action = next((act for text, act in BINANCE_MESSAGES if text in lowered), None)
    if action is None:
        action = next((act for classes, act in _CLASS_ACTIONS if isinstance(exc, classes)), Action.UNKNOWN)
    return Diagnosis(action, code, reason)


def _reason(venue: str, message: str, code: str | None) -> str:
    """A short, safe description: the venue's own message when we can find it."""
    if venue == "kraken" and code:
        return code
    match = _BINANCE_MSG.search(message)
    if match:
        return match.group(1)
    text = message.removeprefix(f"{venue} ").strip()
    return text[:300] if text else "no details"


def is_duplicate_client_id(failure: ExchangeFailure) -> bool:
    """Whether the venue refused an order because its client order id is already in use (it exists)."""
    if failure.venue == "kraken":
        return (failure.code or "").startswith("EGeneral:Invalid arguments:cl_ord_id")
    if failure.code == "-4116":
        return True
    return failure.code == "-2010" and "duplicate" in failure.detail.lower()


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

"""Error mapping: real ccxt exceptions, raised by ccxt's own response handlers from real venue answers.

Each case feeds a venue's real error body through ccxt 4.5.90's `handle_errors` / `handle_http_status_code`
(the code path a live HTTP answer takes), so the exception class is whatever ccxt really raises — including
its traps (DDoSProtection for -2015, ExchangeError for -2019 on a moved URL, BadRequest for NOTIONAL).
"""

from __future__ import annotations

import binascii
import json

import ccxt
import ccxt.async_support as ccxt_async
import pytest

from bot.exchanges.errors import (
    Action,
    AuthFailure,
    ExchangeFailure,
    RetryPolicy,
    call_with_retry,
    diagnose,
    sanitize,
    translate,
)
from bot.secret import Credentials

BINANCE_SPOT = "https://api.binance.com/api/v3/order"
MOVED_FAPI = "http://127.0.0.1:9001/fapi/v1/order"


async def ccxt_error(
    venue: str, status: int, body: str, url: str, *, method: str = "POST", authenticated_before: bool = False
) -> Exception:
    """Return the exception ccxt raises for this HTTP answer (its own handlers, as after a real request)."""
    exchange = getattr(ccxt_async, venue)({"enableRateLimit": False})
    exchange.timeout_on_exit = 0  # no session was opened: nothing to wait for on close
    if authenticated_before:
        exchange.options["hasAlreadyAuthenticatedSuccessfully"] = True
    try:
        response = json.loads(body) if body.startswith(("{", "[")) else None
        reason = {
            200: "OK",
            400: "Bad Request",
            401: "Unauthorized",
            418: "I'm a teapot",
            429: "Too Many Requests",
            503: "Service Unavailable",
            504: "Gateway Timeout",
        }[status]
        exchange.handle_errors(status, reason, url, method, {}, body, response, {}, "")
        exchange.handle_http_status_code(status, reason, url, method, body)
    except Exception as exc:
        return exc
    finally:
        await exchange.close()
    raise AssertionError("ccxt raised nothing for this answer")


def binance_body(code: int, msg: str) -> str:
    return json.dumps({"code": code, "msg": msg})


def kraken_body(error: str) -> str:
    return json.dumps({"error": [error]})


BINANCE_CASES = [
    # (status, code, msg, url, expected action, ccxt class it really arrives as)
    (
        401,
        -2015,
        "Invalid API-key, IP, or permissions for action.",
        BINANCE_SPOT,
        Action.AUTH,
        ccxt.AuthenticationError,
    ),
    (401, -2014, "API-key format invalid.", BINANCE_SPOT, Action.AUTH, ccxt.AuthenticationError),
    (
        400,
        -1022,
        "Signature for this request is not valid.",
        BINANCE_SPOT,
        Action.AUTH,
        ccxt.AuthenticationError,
    ),
    (
        400,
        -1021,
        "Timestamp for this request is outside of the recvWindow.",
        BINANCE_SPOT,
        Action.RESYNC,
        ccxt.InvalidNonce,
    ),
    (
        429,
        -1003,
        "Too many requests; current limit of IP(1.2.3.4) request weight per minute is 6000.",
        BINANCE_SPOT,
        Action.BACKOFF,
        ccxt.DDoSProtection,
    ),
    (
        418,
        -1003,
        "Way too many requests; IP(1.2.3.4) banned until 1700000000000.",
        BINANCE_SPOT,
        Action.BACKOFF,
        ccxt.DDoSProtection,
    ),
    (
        400,
        -2010,
        "Account has insufficient balance for requested action.",
        BINANCE_SPOT,
        Action.FUNDS,
        ccxt.InsufficientFunds,
    ),
    (400, -1013, "Filter failure: NOTIONAL", BINANCE_SPOT, Action.INVALID_ORDER, ccxt.BadRequest),
    (
        400,
        -1111,
        "Precision is over the maximum defined for this asset.",
        BINANCE_SPOT,
        Action.INVALID_ORDER,
        ccxt.BadRequest,
    ),
    (400, -2011, "Unknown order sent.", BINANCE_SPOT, Action.NOT_FOUND, ccxt.OrderNotFound),
    (400, -2013, "Order does not exist.", BINANCE_SPOT, Action.NOT_FOUND, ccxt.OrderNotFound),
    # On a moved fapi URL ccxt no longer recognises the market type: -2019 is a bare ExchangeError.
    (400, -2019, "Margin is insufficient.", MOVED_FAPI, Action.FUNDS, ccxt.ExchangeError),
    (
        400,
        -4164,
        "Order's notional must be no smaller than 100 (unless you choose reduce only).",
        MOVED_FAPI,
        Action.INVALID_ORDER,
        ccxt.ExchangeError,
    ),
]


@pytest.mark.parametrize(("status", "code", "msg", "url", "action", "ccxt_class"), BINANCE_CASES)
async def test_binance_errors_map_from_the_venue_code(status, code, msg, url, action, ccxt_class):
    venue = "binanceusdm" if "fapi" in url else "binance"
    exc = await ccxt_error(venue, status, binance_body(code, msg), url)
    assert isinstance(exc, ccxt_class)
    failure = translate(exc, venue)
    assert failure.action is action
    assert isinstance(failure, ExchangeFailure)


async def test_binance_revoked_key_arriving_as_ddos_protection_is_auth_not_backoff():
    # Once any key succeeded on a (shared) instance, ccxt raises -2015 as DDoSProtection, a NetworkError.
    exc = await ccxt_error(
        "binance",
        401,
        binance_body(-2015, "Invalid API-key, IP, or permissions for action."),
        BINANCE_SPOT,
        authenticated_before=True,
    )
    assert isinstance(exc, ccxt.DDoSProtection) and isinstance(exc, ccxt.NetworkError)
    found = diagnose(exc, "binance")
    assert (found.action, found.code) == (Action.AUTH, "-2015")


async def test_binance_server_error_is_retry():
    exc = await ccxt_error("binance", 503, "Service Unavailable.", BINANCE_SPOT, method="GET")
    assert isinstance(exc, ccxt.ExchangeNotAvailable)
    assert translate(exc, "binance").action is Action.RETRY


KRAKEN_CASES = [
    ("EAPI:Invalid key", Action.AUTH, ccxt.AuthenticationError),
    ("EAPI:Invalid signature", Action.AUTH, ccxt.ExchangeError),  # a bare ExchangeError in ccxt
    ("EGeneral:Permission denied", Action.AUTH, ccxt.PermissionDenied),
    ("EAPI:Invalid nonce", Action.RESYNC, ccxt.InvalidNonce),
    ("EAPI:Rate limit exceeded", Action.BACKOFF, ccxt.DDoSProtection),
    ("EGeneral:Too many requests", Action.BACKOFF, ccxt.DDoSProtection),
    ("EService:Unavailable", Action.RETRY, ccxt.ExchangeNotAvailable),
    ("EOrder:Insufficient funds", Action.FUNDS, ccxt.InsufficientFunds),
    ("EOrder:Order minimum not met", Action.INVALID_ORDER, ccxt.InvalidOrder),
    ("EOrder:Cost minimum not met", Action.INVALID_ORDER, ccxt.ExchangeError),
    ("EGeneral:Invalid arguments:volume", Action.INVALID_ORDER, ccxt.InvalidOrder),
    ("EOrder:Unknown order", Action.NOT_FOUND, ccxt.InvalidOrder),
]


@pytest.mark.parametrize(("error", "action", "ccxt_class"), KRAKEN_CASES)
async def test_kraken_errors_map_from_the_venue_error_string(error, action, ccxt_class):
    exc = await ccxt_error("kraken", 200, kraken_body(error), "https://api.kraken.com/0/private/AddOrder")
    assert isinstance(exc, ccxt_class)
    found = diagnose(exc, "kraken")
    assert found.action is action
    assert found.code == error


@pytest.mark.parametrize(
    ("exc", "action"),
    [
        (ccxt.InsufficientFunds("binance something"), Action.FUNDS),
        (ccxt.OrderNotFound("kraken gone"), Action.NOT_FOUND),
        (ccxt.InvalidNonce("kraken nonce"), Action.RESYNC),
        (ccxt.RateLimitExceeded("kraken slow down"), Action.BACKOFF),
        (ccxt.DDoSProtection("binance 429 Too Many Requests"), Action.BACKOFF),
        (ccxt.PermissionDenied("kraken no"), Action.AUTH),
        (ccxt.AuthenticationError("binance who"), Action.AUTH),
        (ccxt.BadRequest("binance bad"), Action.INVALID_ORDER),
        (ccxt.InvalidOrder("binance invalid"), Action.INVALID_ORDER),
        (ccxt.RequestTimeout("binance GET https://x/api/v3/account"), Action.RETRY),
        (ccxt.ExchangeNotAvailable("binance down"), Action.RETRY),
        (ccxt.NetworkError("binance net"), Action.RETRY),
        (TimeoutError(), Action.RETRY),
        (ccxt.NotSupported("binance nope"), Action.UNKNOWN),
        (ccxt.ExchangeError("binance ???"), Action.UNKNOWN),
    ],
)
def test_without_a_venue_code_the_most_specific_ccxt_class_decides(exc, action):
    venue = str(exc).split(" ")[0] if str(exc) else "binance"
    assert diagnose(exc, venue).action is action


async def test_malformed_kraken_secret_raises_binascii_error_which_maps_to_auth():
    exchange = ccxt_async.kraken({"apiKey": "K" * 56, "secret": "not base64 at all!"})
    exchange.timeout_on_exit = 0
    try:
        with pytest.raises(binascii.Error) as info:
            exchange.sign("Balance", ["private"], "POST", {})
    finally:
        await exchange.close()
    assert not isinstance(info.value, ccxt.BaseError)  # escapes `except ccxt.BaseError`
    failure = translate(info.value, "kraken")
    assert isinstance(failure, AuthFailure)


async def test_messages_never_carry_a_signed_url_key_or_secret():
    creds = Credentials("A" * 64, "S" * 64)
    signed = f"https://api.binance.com/api/v3/account?timestamp=1&recvWindow=10000&signature={'f' * 64}"
    exc = await ccxt_error("binance", 504, "gateway timeout for " + "A" * 64, signed, method="GET")
    failure = translate(exc, "binance", secrets=[creds])
    for text in (str(failure), repr(failure), failure.detail, failure.user_message):
        assert "signature" not in text
        assert "f" * 64 not in text
        assert "A" * 64 not in text
        assert "?" not in text
    assert failure.__cause__ is None and failure.__context__ is None


def test_sanitize_cuts_query_strings_and_masks_known_secrets():
    creds = Credentials("mykey1234567", "mysecret98765")
    text = "binance GET http://h/api/v3/order?symbol=X&signature=abc 400 mykey1234567 mysecret98765"
    assert sanitize(text, [creds]) == "binance GET http://h/api/v3/order 400 *** ***"


async def test_retry_helper_retries_network_failures_with_bounded_exponential_backoff():
    sleeps: list[float] = []
    calls = 0

    async def flaky():
        nonlocal calls
        calls += 1
        if calls < 4:
            raise ccxt.RequestTimeout("binance GET http://h/api/v3/ticker/24hr?symbol=BTCUSDT")
        return "ok"

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    policy = RetryPolicy(attempts=5, base_delay=1.0, max_delay=3.0)
    assert await call_with_retry(flaky, "binance", policy=policy, sleep=sleep) == "ok"
    assert sleeps == [1.0, 2.0, 3.0]


async def test_retry_helper_gives_up_after_its_attempts_with_our_exception():
    async def down():
        raise ccxt.ExchangeNotAvailable("binance GET http://h/api/v3/account?signature=deadbeef 503")

    async def sleep(seconds: float) -> None:
        return None

    with pytest.raises(ExchangeFailure) as info:
        await call_with_retry(down, "binance", policy=RetryPolicy(attempts=3), sleep=sleep)
    assert info.value.action is Action.RETRY
    assert "deadbeef" not in str(info.value)
    assert info.value.__context__ is None


async def test_retry_helper_never_retries_a_revoked_key_even_when_ccxt_calls_it_ddos():
    calls = 0

    async def revoked():
        nonlocal calls
        calls += 1
        raise ccxt.DDoSProtection(
            'binance {"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}'
        )

    async def sleep(seconds: float) -> None:
        raise AssertionError("must not back off")

    with pytest.raises(AuthFailure):
        await call_with_retry(revoked, "binance", sleep=sleep)
    assert calls == 1


async def test_retry_helper_resyncs_once_then_retries_once():
    calls, resyncs = 0, 0

    async def stale():
        nonlocal calls
        calls += 1
        raise ccxt.InvalidNonce('kraken {"error":["EAPI:Invalid nonce"]}')

    async def resync(failure: ExchangeFailure) -> None:
        nonlocal resyncs
        resyncs += 1

    with pytest.raises(ExchangeFailure) as info:
        await call_with_retry(stale, "kraken", resync=resync)
    assert info.value.action is Action.RESYNC
    assert (calls, resyncs) == (2, 1)

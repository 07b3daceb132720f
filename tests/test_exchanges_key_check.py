"""Key validation for /connect: format first, then authenticate, then PROVE the key cannot withdraw."""

from __future__ import annotations

import base64
from decimal import Decimal

import pytest

from bot.exchanges.clients import ClientPool
from bot.exchanges.gateway import ExchangeGateway
from bot.exchanges.key_check import KeyChecker, KeyRejected, check_format
from bot.secret import Credentials

BINANCE_KEY, BINANCE_SECRET = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A", "N" * 64
KRAKEN_KEY = "Kx0N9ZpR7fhT2yQ8mW3vB5cL1dG6sJ4aE0uI9oP2kH7nM3rX8wY5tZ1q"  # 56 characters
KRAKEN_SECRET = base64.b64encode(bytes(range(100, 164))).decode()  # 64 bytes, 88 characters
PEM = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGZ3\n-----END PRIVATE KEY-----"


def test_real_key_formats_pass_the_format_check():
    assert len(KRAKEN_KEY) == 56 and len(KRAKEN_SECRET) == 88
    check_format("binance", BINANCE_KEY, BINANCE_SECRET)
    check_format("binanceusdm", BINANCE_KEY, BINANCE_SECRET)
    check_format("kraken", KRAKEN_KEY, KRAKEN_SECRET)


@pytest.mark.parametrize("venue", ["binance", "binanceusdm", "kraken"])
def test_a_private_key_file_is_refused_as_not_hmac(venue: str):
    with pytest.raises(KeyRejected) as info:
        check_format(venue, BINANCE_KEY if venue != "kraken" else KRAKEN_KEY, PEM)
    assert info.value.reason == "hmac_only"
    assert "HMAC" in info.value.user_message


@pytest.mark.parametrize(
    ("venue", "key", "secret"),
    [
        ("kraken", KRAKEN_KEY, "this is not base64!"),
        ("kraken", KRAKEN_KEY, KRAKEN_SECRET[:-3] + "*=="),
        ("kraken", "short", KRAKEN_SECRET),
        ("binance", BINANCE_KEY, "has-dashes-" + "x" * 60),
        ("binance", "tooshort", BINANCE_SECRET),
        ("binance", BINANCE_KEY, BINANCE_KEY),
        ("binanceusdm", BINANCE_KEY, ""),
    ],
)
def test_what_can_never_be_valid_is_refused_as_malformed(venue: str, key: str, secret: str):
    with pytest.raises(KeyRejected) as info:
        check_format(venue, key, secret)
    assert info.value.reason == "malformed"
    assert secret not in str(info.value) or not secret


# ------------------------------------------------------------------------------------------ against the fakes
@pytest.fixture
async def checker(fake_exchanges):
    pool = ClientPool(fake_exchanges.origins, timeout_ms=5_000)
    yield KeyChecker(ExchangeGateway(pool))
    await pool.close()


@pytest.fixture
async def impatient_checker(fake_exchanges):
    """A checker whose requests time out after 0.6 s, against fakes that hang 1 s on a timeout fault."""
    pool = ClientPool(fake_exchanges.origins, timeout_ms=600)
    for book in fake_exchanges.books.values():
        book.hang_seconds = 1.0
    yield KeyChecker(ExchangeGateway(pool))
    await pool.close()


def binance_key(fake, *venues: str, **flags) -> Credentials:
    for venue in venues or ("binance", "binanceusdm"):
        fake.books[venue].add_key(BINANCE_KEY, BINANCE_SECRET, balances={"USDT": "250", "BTC": "0"}, **flags)
    return Credentials(BINANCE_KEY, BINANCE_SECRET)


def kraken_key(fake, **flags) -> Credentials:
    fake.books["kraken"].add_key(KRAKEN_KEY, KRAKEN_SECRET, balances={"USDT": "75.5"}, **flags)
    return Credentials(KRAKEN_KEY, KRAKEN_SECRET)


def assert_no_secret(exc: BaseException, creds: Credentials) -> None:
    for text in (str(exc), repr(exc), getattr(exc, "user_message", "")):
        assert creds.secret.reveal() not in text and creds.api_key.reveal() not in text


@pytest.mark.parametrize("venue", ["binance", "binanceusdm"])
async def test_binance_trading_key_without_withdrawals_is_accepted_with_an_ip_warning(
    fake_exchanges, checker, venue
):
    creds = binance_key(fake_exchanges, trading_authority_expiration_ms=1_893_456_000_000)
    check = await checker.check_key(venue, creds)
    assert check.balances == {"USDT": Decimal(250)}
    assert "read" in check.permissions and not check.testnet
    assert len(check.warnings) == 1 and "IP" in check.warnings[0] and "2030-01-01" in check.warnings[0]
    assert any(r.path == "/sapi/v1/account/apiRestrictions" for r in fake_exchanges.books[venue].requests)


async def test_an_ip_restricted_binance_key_gets_no_warning(fake_exchanges, checker):
    check = await checker.check_key("binance", binance_key(fake_exchanges, ip_restrict=True))
    assert check.warnings == []


@pytest.mark.parametrize("venue", ["binance", "binanceusdm"])
async def test_binance_withdraw_enabled_key_is_refused(fake_exchanges, checker, venue):
    creds = binance_key(fake_exchanges, can_withdraw=True)
    with pytest.raises(KeyRejected) as info:
        await checker.check_key(venue, creds)
    assert info.value.reason == "withdraw_enabled"
    assert_no_secret(info.value, creds)


async def test_binance_futures_account_needs_a_futures_enabled_key(fake_exchanges, checker):
    creds = binance_key(fake_exchanges, futures=False)
    with pytest.raises(KeyRejected) as info:
        await checker.check_key("binanceusdm", creds)
    assert info.value.reason == "futures_disabled"


@pytest.mark.parametrize("venue", ["binance", "kraken"])
async def test_a_wrong_secret_is_an_invalid_key(fake_exchanges, checker, venue):
    if venue == "kraken":
        kraken_key(fake_exchanges)
        creds = Credentials(KRAKEN_KEY, base64.b64encode(bytes(64)).decode())
    else:
        binance_key(fake_exchanges, "binance")
        creds = Credentials(BINANCE_KEY, "W" * 64)
    with pytest.raises(KeyRejected) as info:
        await checker.check_key(venue, creds)
    assert info.value.reason == "invalid_key"
    assert_no_secret(info.value, creds)


@pytest.mark.parametrize("venue", ["binance", "kraken"])
async def test_an_unknown_key_is_an_invalid_key(fake_exchanges, checker, venue):
    creds = (
        Credentials(BINANCE_KEY, BINANCE_SECRET)
        if venue == "binance"
        else Credentials(KRAKEN_KEY, KRAKEN_SECRET)
    )
    with pytest.raises(KeyRejected) as info:
        await checker.check_key(venue, creds)
    assert info.value.reason == "invalid_key"


@pytest.mark.parametrize(
    ("venue", "creds"),
    [
        ("kraken", Credentials(KRAKEN_KEY, "not-base64-at-all!")),
        ("binance", Credentials(BINANCE_KEY, PEM)),
    ],
)
async def test_a_malformed_key_is_refused_before_any_request(fake_exchanges, checker, venue, creds):
    with pytest.raises(KeyRejected) as info:
        await checker.check_key(venue, creds)
    assert info.value.reason in ("malformed", "hmac_only")
    assert fake_exchanges.books[venue].requests == []


@pytest.mark.parametrize(
    ("venue", "path"), [("binance", "/api/v3/account"), ("kraken", "/0/private/BalanceEx")]
)
async def test_a_timeout_means_unavailable_and_nothing_verified(
    fake_exchanges, impatient_checker, venue, path
):
    creds = binance_key(fake_exchanges, "binance") if venue == "binance" else kraken_key(fake_exchanges)
    fake_exchanges.books[venue].inject("timeout", path=path)
    with pytest.raises(KeyRejected) as info:
        await impatient_checker.check_key(venue, creds)
    assert info.value.reason == "unavailable"
    assert "try again" in info.value.user_message


async def test_kraken_key_that_cannot_withdraw_is_accepted(fake_exchanges, checker):
    check = await checker.check_key("kraken", kraken_key(fake_exchanges))
    assert check.balances == {"USDT": Decimal("75.5")}
    assert check.permissions == ["query_funds"] and not check.testnet
    assert any(r.path == "/0/private/WithdrawMethods" for r in fake_exchanges.books["kraken"].requests)


async def test_kraken_key_that_can_withdraw_is_refused(fake_exchanges, checker):
    creds = kraken_key(fake_exchanges, can_withdraw=True)
    with pytest.raises(KeyRejected) as info:
        await checker.check_key("kraken", creds)
    assert info.value.reason == "withdraw_enabled"
    assert_no_secret(info.value, creds)


@pytest.mark.parametrize("fault", ["timeout", "rate_limit", "invalid_nonce", "server_error"])
async def test_kraken_withdraw_probe_answers_other_than_permission_denied_are_unverifiable(
    fake_exchanges, impatient_checker, fault
):
    creds = kraken_key(fake_exchanges)
    fake_exchanges.books["kraken"].inject(fault, path="/0/private/WithdrawMethods")
    with pytest.raises(KeyRejected) as info:
        await impatient_checker.check_key("kraken", creds)
    assert info.value.reason == "unverifiable"
    assert "try again" in info.value.user_message


async def test_kraken_is_refused_in_sandbox_mode_without_a_request():
    checker = KeyChecker(ExchangeGateway(ClientPool({}, sandbox=True)))
    with pytest.raises(KeyRejected) as info:
        await checker.check_key("kraken", Credentials(KRAKEN_KEY, KRAKEN_SECRET))
    assert info.value.reason == "unsupported"


async def test_a_binance_key_that_cannot_trade_is_refused_with_the_box_to_tick(fake_exchanges, checker):
    with pytest.raises(KeyRejected) as info:
        await checker.check_key("binance", binance_key(fake_exchanges, "binance", can_trade=False))
    assert info.value.reason == "trading_disabled"
    assert "Enable Spot & Margin Trading" in info.value.user_message


@pytest.mark.parametrize("venue", ["binance", "binanceusdm"])
async def test_a_binance_key_names_its_account_uid_also_for_usd_m(fake_exchanges, checker, venue):
    creds = binance_key(fake_exchanges, venue)
    book = fake_exchanges.books[venue]
    second = "Q" * 64
    book.add_key(second, "R" * 64, same_account_as=BINANCE_KEY)  # another key of the same Binance account
    first = await checker.check_key(venue, creds)
    again = await checker.check_key(venue, Credentials(second, "R" * 64))
    assert first.owner_id is not None and first.owner_id == again.owner_id
    assert any(r.path == "/api/v3/account" for r in book.requests)  # USD-M asks the spot account endpoint


async def test_a_kraken_key_names_no_account(fake_exchanges, checker):
    assert (await checker.check_key("kraken", kraken_key(fake_exchanges))).owner_id is None

"""The one formatter every message uses (issue 18, item 2): table tests of its rules."""

from decimal import Decimal as D

import pytest

from bot.formatting import amount, money, percent, places_of, price


@pytest.mark.parametrize(
    ("value", "currency", "signed", "expected"),
    [
        (D("1234.5"), "USDT", False, "1,234.50 USDT"),
        (D("0.01995195"), "USDT", False, "0.02 USDT"),
        (D("9940.1229843"), "USDT", False, "9,940.12 USDT"),
        (D("0.0042"), "USDT", False, "0.0042 USDT"),
        (D("0.0000123456"), "BNB", False, "0.000012 BNB"),
        (D("0"), "USD", False, "0.00 USD"),
        (D("-0.001"), "USD", False, "-0.001 USD"),
        (D("3.112535"), "USDT", True, "+3.11 USDT"),
        (D("-3.107"), "USDT", True, "-3.11 USDT"),
        (D("0"), "USDT", True, "0.00 USDT"),
        (D("-0.0000"), "USDT", True, "0.00 USDT"),
        (D("1000000"), "USD", False, "1,000,000.00 USD"),
        (None, "USD", False, "?"),
    ],
)
def test_money_is_to_the_cent_with_separators_and_named_currency(value, currency, signed, expected):
    assert money(value, currency, signed=signed) == expected


@pytest.mark.parametrize(
    ("value", "step", "expected"),
    [
        (D("0.0015"), D("0.00001"), "0.00150 BTC"),
        (D("0.0015"), None, "0.0015 BTC"),
        (D("1234.5"), D("1"), "1,234 BTC"),
        (D("0.12345678912"), None, "0.12345678 BTC"),
        (D("2"), None, "2 BTC"),
        (None, D("0.1"), "?"),
    ],
)
def test_amounts_go_to_the_markets_step(value, step, expected):
    assert amount(value, "BTC", step) == expected


@pytest.mark.parametrize(
    ("value", "step", "expected"),
    [
        (D("0.0015"), D("0.00001"), "0.00150 BTC"),  # on the step: to the step
        (D("0.0000094"), D("0.00001"), "0.0000094 BTC"),  # dust below the step is not shown as zero
        (D("0.00039960"), D("0.00001"), "0.0003996 BTC"),  # a buy less its fee in BTC
        (D("0.123456789"), D("0.001"), "0.12345678 BTC"),
    ],
)
def test_a_holding_off_the_step_keeps_its_digits(value, step, expected):
    assert amount(value, "BTC", step, held=True) == expected


@pytest.mark.parametrize(
    ("value", "tick", "expected"),
    [
        (D("67123.456"), D("0.01"), "67,123.46 USDT"),
        (D("67123.4"), D("0.1"), "67,123.4 USDT"),
        (D("67123.4"), None, "67,123.40 USDT"),
        (D("0.000012345"), None, "0.00001235 USDT"),
        (D("0.5"), D("0.0001"), "0.5000 USDT"),
    ],
)
def test_prices_go_to_the_markets_tick(value, tick, expected):
    assert price(value, "USDT", tick) == expected


def test_percent_carries_its_sign_and_two_decimals():
    assert percent(D("1.254")) == "+1.25%"
    assert percent(D("-0.4")) == "-0.40%"
    assert percent(D("0.001")) == "0.00%"
    assert percent(None) == "?"


def test_places_of_a_step():
    assert places_of(D("0.001")) == 3
    assert places_of(D("1")) == 0
    assert places_of(D("1E+1")) == 0
    assert places_of(D("0.5")) == 1
    assert places_of(None) is None

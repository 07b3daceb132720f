"""Parameter parsing: durations, weights, budgets and each strategy's specs, with user-facing errors."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from bot.strategies import STRATEGIES, get_strategy
from bot.strategies.params import (
    ParamError,
    format_duration,
    format_value,
    parse_budget,
    parse_decimal,
    parse_duration,
    parse_weights,
    shown,
    split_assignments,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1m", timedelta(minutes=1)),
        ("15m", timedelta(minutes=15)),
        ("4h", timedelta(hours=4)),
        ("1d", timedelta(days=1)),
        ("2w", timedelta(weeks=2)),
        ("90m", timedelta(minutes=90)),
    ],
)
def test_durations_parse_to_timedeltas(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["0m", "0d", "5x", "", "m", "-1h", "1.5h", "1M", "1 d", "1d2h", "10s"])
def test_bad_durations_are_refused_with_a_hint(text):
    with pytest.raises(ParamError, match="at least 1m"):
        parse_duration(text, "every")


@pytest.mark.parametrize(
    ("value", "text"),
    [(timedelta(minutes=90), "90m"), (timedelta(hours=4), "4h"), (timedelta(days=7), "1w"),
     (timedelta(days=2), "2d")],
)
def test_durations_format_in_the_largest_exact_unit(value, text):
    assert format_duration(value) == text
    assert parse_duration(format_duration(value)) == value


def test_weights_parse_to_percent_per_asset():
    assert parse_weights("btc:50, ETH:30,usdt:20") == {"BTC": 50, "ETH": 30, "USDT": 20}
    assert parse_weights("BTC:33.5,ETH:66.5") == {"BTC": Decimal("33.5"), "ETH": Decimal("66.5")}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("BTC:50,ETH:40", "must sum to 100; these sum to 90"),
        ("BTC:60,ETH:60", "sum to 120"),
        ("BTC:50,BTC:50", "BTC is listed twice"),
        ("BTC:100,ETH:0", "weight of ETH must be greater than 0"),
        ("BTC:150,ETH:-50", "weight of ETH must be greater than 0"),
        ("BTC50,ETH:50", "should look like ASSET:PERCENT"),
        ("BTC:abc,ETH:50", "'abc' is not a number"),
        ("B-TC:50,ETH:50", "not an asset code"),
    ],
)
def test_bad_weights_are_refused_with_the_reason(text, message):
    with pytest.raises(ParamError, match=message):
        parse_weights(text)


@pytest.mark.parametrize("text", ["0", "-10", "-0.01", "abc", "NaN", "Infinity", "1,5"])
def test_a_budget_must_be_a_positive_finite_number(text):
    with pytest.raises(ParamError, match="budget"):
        parse_budget(text)


def test_a_budget_keeps_its_exact_decimal_value():
    assert parse_budget("100.10") == Decimal("100.10")


def test_assignments_split_into_names_and_values():
    assert split_assignments(["every=1d", "Amount=10"]) == {"every": "1d", "amount": "10"}
    with pytest.raises(ParamError, match="should look like name=value"):
        split_assignments(["every"])
    with pytest.raises(ParamError, match="every is given twice"):
        split_assignments(["every=1d", "every=2d"])


def test_unknown_strategy_names_the_choices():
    with pytest.raises(ParamError, match="choose one of: dca, grid, rebalance, trend"):
        get_strategy("martingale")
    assert get_strategy("DCA").title == "DCA"


@pytest.mark.parametrize(
    ("strategy", "raw", "expected"),
    [
        ("dca", {}, {"every": timedelta(days=1), "amount": None}),
        ("dca", {"every": "4h", "amount": "10"}, {"every": timedelta(hours=4), "amount": Decimal(10)}),
        ("grid", {"low": "60000", "high": "70000"}, {"low": 60000, "high": 70000, "levels": 5, "spacing": "arith"}),
        ("grid", {"low": "1", "high": "2", "levels": "3", "spacing": "GEO"},
         {"low": 1, "high": 2, "levels": 3, "spacing": "geo"}),
        ("rebalance", {"weights": "BTC:50,ETH:50"},
         {"weights": {"BTC": 50, "ETH": 50}, "band": 5, "every": timedelta(hours=1)}),
        ("trend", {}, {"timeframe": "1h", "fast": 9, "slow": 21, "entry": "cross"}),
        ("trend", {"timeframe": "15m", "fast": "5", "slow": "50", "entry": "now"},
         {"timeframe": "15m", "fast": 5, "slow": 50, "entry": "now"}),
    ],
)
def test_parameters_parse_with_defaults_filled_in(strategy, raw, expected):
    assert get_strategy(strategy).parse_params(raw) == expected


@pytest.mark.parametrize(
    ("strategy", "raw", "message"),
    [
        ("dca", {"amount": "-5"}, "amount must be greater than 0"),
        ("dca", {"amount": "0"}, "amount must be greater than 0"),
        ("dca", {"every": "0m"}, "every: '0m' is not a duration|too short"),
        ("dca", {"every": "5x"}, "every: '5x' is not a duration"),
        ("dca", {"every": "60w"}, "every must be at most 52w"),
        ("dca", {"evrey": "1d"}, "dca has no parameter 'evrey'; its parameters are: every, amount"),
        ("dca", {"amount": ""}, "a value is needed after 'amount='"),
        ("grid", {"low": "70000", "high": "60000"}, r"low \(70000\) must be below high \(60000\)"),
        ("grid", {"low": "60000", "high": "60000"}, "must be below high"),
        ("grid", {"low": "-1", "high": "60000"}, "low must be greater than 0"),
        ("grid", {"high": "60000"}, "grid needs low="),
        ("grid", {"low": "1", "high": "2", "levels": "1"}, "levels must be at least 2"),
        ("grid", {"low": "1", "high": "2", "levels": "2.5"}, "not a whole number"),
        ("grid", {"low": "1", "high": "2", "levels": "1000"}, "levels must be at most 100"),
        ("grid", {"low": "1", "high": "2", "spacing": "log"}, "spacing: 'log' is not an option; choose arith or geo"),
        ("grid", {"low": "1", "high": "2", "spacing": ""}, "a value is needed after 'spacing='"),
        ("rebalance", {}, "rebalance needs weights="),
        ("rebalance", {"weights": "BTC:50,ETH:40"}, "must sum to 100"),
        ("rebalance", {"weights": "BTC:50,ETH:50", "band": "0"}, "band must be greater than 0"),
        ("rebalance", {"weights": "BTC:50,ETH:50", "band": "-5"}, "band must be greater than 0"),
        ("trend", {"fast": "21", "slow": "21"}, r"fast \(21\) must be smaller than slow \(21\)"),
        ("trend", {"fast": "30"}, r"fast \(30\) must be smaller than slow \(21\)"),
        ("trend", {"timeframe": "2h"}, "choose one of 1m, 5m, 15m, 30m, 1h, 4h, 1d"),
        ("trend", {"fast": "0"}, "fast must be at least 1"),
    ],
)
def test_bad_parameters_give_a_clear_message(strategy, raw, message):
    with pytest.raises(ParamError, match=message):
        get_strategy(strategy).parse_params(raw)


def test_dca_amount_above_the_budget_is_refused_at_allocation():
    dca = get_strategy("dca")
    params = dca.parse_params({"amount": "150"})
    with pytest.raises(ParamError, match=r"amount \(150\) is larger than the budget \(100\)"):
        dca.check_allocation("BTC/USDT", Decimal(100), params)
    dca.check_allocation("BTC/USDT", Decimal(150), params)


def test_rebalance_takes_the_quote_asset_not_a_pair():
    rebalance = get_strategy("rebalance")
    params = rebalance.parse_params({"weights": "BTC:50,ETH:50"})
    with pytest.raises(ParamError, match="quote asset as its symbol"):
        rebalance.check_allocation("BTC/USDT", Decimal(500), params)
    with pytest.raises(ParamError, match="at least one asset other than USDT"):
        rebalance.check_allocation("USDT", Decimal(500), rebalance.parse_params({"weights": "USDT:100"}))
    assert rebalance.symbols("USDT", params) == ("BTC/USDT", "ETH/USDT")


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_parameter_is_described_with_its_default(name):
    strategy = STRATEGIES[name]
    assert strategy.description and strategy.title
    for spec in strategy.param_specs:
        assert spec.description
        assert spec.describe_default()


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("dca", {"every": "90m", "amount": "12.50"}),
        ("grid", {"low": "60000.5", "high": "7E+4", "levels": "7"}),
        ("rebalance", {"weights": "BTC:40,ETH:40,USDT:20", "band": "2.5", "every": "1w"}),
        ("trend", {"timeframe": "4h", "fast": "3", "slow": "8"}),
    ],
)
def test_parameters_survive_storage_as_text(name, raw):
    strategy = STRATEGIES[name]
    params = strategy.parse_params(raw)
    stored = strategy.dump_params(params)
    assert all(isinstance(v, str) for v in stored.values())
    assert strategy.parse_params(stored) == params


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_each_strategy_example_parses(name):
    strategy = STRATEGIES[name]
    words = strategy.example.split()
    assert words[:3] == ["/allocate", words[1], name]
    strategy.parse_params(split_assignments(words[5:]))


# --- bounded input: a number typed by a user can never make a reply (or memory) grow with its exponent -----


@pytest.mark.parametrize(
    "text", ["1e100000000", "1e-100000000", "-1e100000000", "1e13", "1.5e13", "1e-13"]
)
def test_numbers_beyond_the_magnitude_bound_are_refused_quickly_with_a_short_message(text):
    with pytest.raises(ParamError) as refused:
        parse_decimal(text, "amount")
    assert len(refused.value.message) < 200
    assert "between" in refused.value.message or "greater than" in refused.value.message


def test_zero_with_a_huge_exponent_is_plain_zero():
    assert parse_decimal("0E-100000000", "band") == 0
    assert format_value("decimal", parse_decimal("0E-100000000")) == "0"


@pytest.mark.parametrize("text", ["1.000000000000000000001", "123456789012345678901"])
def test_numbers_with_more_than_twenty_significant_digits_are_refused(text):
    with pytest.raises(ParamError, match="at most 20 significant digits"):
        parse_decimal(text, "amount")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("9999999999999", Decimal("9999999999999")), ("0.000000000001", Decimal("1e-12")),
     ("12345678.123456789012", Decimal("12345678.123456789012")), ("100.000000", Decimal(100)), ("7E+4", 70000)],
)
def test_numbers_within_the_bounds_keep_their_exact_value(text, expected):
    assert parse_decimal(text) == expected


def test_long_user_text_is_never_echoed_whole():
    junk = "x" * 5000
    for call in (
        lambda: parse_decimal(junk, "amount"),
        lambda: parse_budget(junk),
        lambda: get_strategy("dca").parse_params({"every": junk}),
        lambda: get_strategy("trend").parse_params({"timeframe": junk, "fast": junk}),
        lambda: parse_weights(f"{junk}:50,ETH:{junk}"),
        lambda: split_assignments([junk]),
        lambda: get_strategy("dca").parse_params({junk: "1"}),
        lambda: get_strategy(junk),
    ):
        with pytest.raises(ParamError) as refused:
            call()
        assert len(refused.value.message) < 300, refused.value.message[:100]


def test_shown_truncates_with_an_ellipsis():
    assert shown("short") == "short"
    assert shown("y" * 100, 10) == "y" * 9 + "…"
